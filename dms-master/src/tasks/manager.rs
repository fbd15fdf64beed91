//! `TaskManager`: the queue and the runner of background tasks.
//!
//! One task runs at a time, oldest first. Within a task, up to `tasks.concurrency` series are
//! processed at once (the provider's rate limiter still spaces the requests). Each series is:
//! fetched → compared with what is stored (identical bars are dropped) → validated and
//! journaled → checkpointed. Series that failed with a retryable error get a second pass
//! after `tasks.second_pass_delay`. A cancel takes effect at once: in-flight fetches are
//! dropped, nothing half-fetched is journaled (a series is journaled in one append), and the
//! task ends `cancelled`. A shutdown leaves the running task `running` so the next start
//! resumes it from its checkpoints.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dms_common::journal::{Journal, Origin, Seq};
use dms_common::store::SharedStore;
use dms_common::{SeriesBars, SeriesKey, TimeRange, Timestamp};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::store::{Checkpoint, TaskStore, TaskStoreError};
use super::{FailedSeries, Task, TaskCounters, TaskKind, TaskParams, TaskStatus};
use crate::alerts::{Alert, Alerts};
use crate::catalog::Catalog;
use crate::config::TasksConfig;
use crate::gaps;
use crate::ingest::Ingestor;
use crate::reconcile::Reconciler;
use crate::source::{Source, SourceError};
use crate::universe::{Universe, UniverseEntry};
use crate::validate::Validator;

/// What the runner needs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub tasks: TaskStore,
    pub universe: Arc<Universe>,
    pub ingestor: Ingestor,
    pub journal: Journal,
    pub store: SharedStore,
    pub catalog: Catalog,
    /// The last journal seq the store applied.
    pub applied: watch::Receiver<Seq>,
    pub config: TasksConfig,
    /// Where task failures and poor provider success rates are reported.
    pub alerts: Alerts,
}

/// The task queue.
#[derive(Debug)]
pub struct TaskManager {
    ctx: TaskContext,
    wake: Notify,
    /// Held by whatever imports or updates: one at a time, tasks and the start-up import alike.
    gate: tokio::sync::Mutex<()>,
    running: Mutex<Option<(String, CancellationToken)>>,
}

/// How one series ended.
enum SeriesOutcome {
    Done(SeriesCounts),
    Skipped,
    Failed(SourceError),
}

#[derive(Debug, Default)]
struct SeriesCounts {
    written: u64,
    unchanged: u64,
    rejected: u64,
    requests: u64,
    retries: u64,
    provider_nulls: u64,
    new_actions: u64,
    gaps: u64,
    invalid: u64,
}

impl SeriesCounts {
    fn add(&mut self, c: &SeriesCounts) {
        self.written += c.written;
        self.unchanged += c.unchanged;
        self.rejected += c.rejected;
        self.requests += c.requests;
        self.retries += c.retries;
        self.provider_nulls += c.provider_nulls;
        self.new_actions += c.new_actions;
        self.gaps += c.gaps;
        self.invalid += c.invalid;
    }

    fn add_to(&self, t: &mut TaskCounters) {
        t.bars_written += self.written;
        t.bars_unchanged += self.unchanged;
        t.bars_rejected += self.rejected;
        t.requests += self.requests;
        t.retries += self.retries;
        t.failed_requests += self.retries;
        t.provider_null_bars += self.provider_nulls;
        t.new_actions += self.new_actions;
        t.gaps_found += self.gaps;
        t.invalid_stored_bars += self.invalid;
    }
}

/// Why a task run stopped before finishing.
enum Stop {
    Cancelled,
    Shutdown,
    /// The task's selection no longer resolves.
    Invalid(String),
}

impl TaskManager {
    pub fn new(ctx: TaskContext) -> Arc<TaskManager> {
        Arc::new(TaskManager {
            ctx,
            wake: Notify::new(),
            gate: tokio::sync::Mutex::new(()),
            running: Mutex::new(None),
        })
    }

    /// Waits until no task (or other import) runs, and keeps others out while held.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.gate.lock().await
    }

    /// The task store.
    pub fn tasks(&self) -> &TaskStore {
        &self.ctx.tasks
    }

    /// The series universe.
    pub fn universe(&self) -> &Universe {
        &self.ctx.universe
    }

    /// Queues a task after checking that its selection resolves.
    pub async fn submit(
        &self,
        kind: TaskKind,
        name: String,
        params: TaskParams,
    ) -> Result<Task, SubmitError> {
        if kind == TaskKind::FullImport {
            let now = Timestamp::now();
            let start = params.start.unwrap_or(Timestamp(
                now.0 - self.ctx.config.default_history.0.as_secs() as i64,
            ));
            if let Some(end) = params.end
                && end <= start
            {
                return Err(SubmitError::Invalid(format!(
                    "field `end_date`: {} is not after the import's start {} (give start_date, or see tasks.default_history)",
                    end.to_datetime().format("%Y-%m-%d"),
                    start.to_datetime().format("%Y-%m-%d")
                )));
            }
        }
        let selected = self
            .ctx
            .universe
            .select(&params)
            .map_err(SubmitError::Invalid)?;
        if selected.is_empty() {
            return Err(SubmitError::Invalid(
                "the request selects no series (check symbols, interval, source, skip and limit)"
                    .into(),
            ));
        }
        let task = self.ctx.tasks.create(kind, name, params).await?;
        self.wake.notify_one();
        Ok(task)
    }

    /// Asks a task to stop; returns it, or None if there is no such task.
    pub async fn cancel(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        let task = self.ctx.tasks.request_cancel(id).await?;
        if let Some((running, token)) = &*self.running.lock().unwrap_or_else(|p| p.into_inner())
            && running == id
        {
            token.cancel();
        }
        Ok(task)
    }

    /// Runs tasks until `shutdown` fires. Tasks left `running` by a previous process resume.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.ctx.tasks.requeue_interrupted().await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(tasks = ?ids, "resuming interrupted tasks")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot requeue interrupted tasks"),
        }
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let next = match self.ctx.tasks.next_pending().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the task queue");
                    None
                }
            };
            let Some(task) = next else {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            };
            let cancel = CancellationToken::new();
            if task.cancel_requested {
                cancel.cancel();
            }
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((task.id.clone(), cancel.clone()));
            let gate = tokio::select! {
                g = self.gate.lock() => g,
                _ = shutdown.cancelled() => return,
            };
            // Every log line of the task (provider retries included) carries its id.
            let span = tracing::info_span!("task", task = %task.id, kind = task.kind.as_str());
            self.run_task(task, &cancel, &shutdown)
                .instrument(span)
                .await;
            drop(gate);
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    async fn run_task(&self, task: Task, cancel: &CancellationToken, shutdown: &CancellationToken) {
        let id = task.id.clone();
        match self.ctx.tasks.start(&id).await {
            Ok(true) => {}
            Ok(false) => {
                // Cancelled between being queued and started (or before a crash).
                let _ = self
                    .ctx
                    .tasks
                    .finish(
                        &id,
                        TaskStatus::Cancelled,
                        "cancelled before it started".into(),
                        None,
                        &task.counters,
                    )
                    .await;
                return;
            }
            Err(e) => {
                tracing::error!(task = %id, error = %e, "cannot start task");
                return;
            }
        }
        tracing::info!(task = %id, kind = task.kind.as_str(), "task started");
        let started = Instant::now();
        // A task resumed after a restart began in an earlier life of the process.
        let first_started_ms = task
            .started_at_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let result = self.execute(&task, cancel, shutdown).await;
        let store = &self.ctx.tasks;
        let kind = task.kind.as_str();
        let outcome = match result {
            Ok(counters) => {
                let failed = counters.series_failed;
                let wall = (chrono::Utc::now().timestamp_millis() - first_started_ms).max(0) as f64
                    / 1000.0;
                let this_run = started.elapsed().as_secs_f64();
                let resumed = if wall > this_run + 1.0 {
                    format!(" ({this_run:.1} s since it resumed after a restart)")
                } else {
                    String::new()
                };
                let message = format!(
                    "{} of {} series done, {} failed, {} bars written, {} unchanged, {} rejected in {wall:.1} s{resumed}{}",
                    counters.series_done,
                    counters.series_total,
                    failed,
                    counters.bars_written,
                    counters.bars_unchanged,
                    counters.bars_rejected,
                    rates_note(&counters),
                );
                let all_failed =
                    failed > 0 && counters.series_done == 0 && counters.series_skipped == 0;
                let (status, error) = if all_failed {
                    (TaskStatus::Failed, Some("every series failed".to_owned()))
                } else {
                    (TaskStatus::Completed, None)
                };
                tracing::info!(task = %id, status = %status, "{message}");
                crate::metrics::task_finished(kind, status.as_str(), started.elapsed());
                if let Some(e) = &error {
                    self.ctx.alerts.raise(Alert::task_failed(&id, kind, e));
                }
                self.judge_provider(&task, &counters);
                store.finish(&id, status, message, error, &counters).await
            }
            Err((Stop::Cancelled, counters)) => {
                tracing::info!(task = %id, "task cancelled");
                crate::metrics::task_finished(kind, "cancelled", started.elapsed());
                store
                    .finish(
                        &id,
                        TaskStatus::Cancelled,
                        "cancelled".into(),
                        None,
                        &counters,
                    )
                    .await
            }
            Err((Stop::Invalid(reason), counters)) => {
                tracing::error!(task = %id, %reason, "task cannot run");
                crate::metrics::task_finished(kind, "failed", started.elapsed());
                self.ctx.alerts.raise(Alert::task_failed(
                    &id,
                    kind,
                    &format!("cannot run: {reason}"),
                ));
                store
                    .finish(
                        &id,
                        TaskStatus::Failed,
                        "cannot run".into(),
                        Some(reason),
                        &counters,
                    )
                    .await
            }
            Err((Stop::Shutdown, counters)) => {
                tracing::info!(task = %id, "task interrupted by shutdown; it resumes at the next start");
                crate::metrics::task_finished(kind, "interrupted", started.elapsed());
                store
                    .progress(
                        &id,
                        progress_of(&counters),
                        "interrupted by shutdown; resumes at the next start".into(),
                        &counters,
                    )
                    .await
            }
        };
        if let Err(e) = outcome {
            tracing::error!(task = %id, error = %e, "cannot record the task's end");
        }
    }

    /// Reports a finished fetching task's provider success rate to the alerts.
    fn judge_provider(&self, task: &Task, counters: &TaskCounters) {
        if task.kind == TaskKind::Validate {
            return;
        }
        let sources: std::collections::BTreeSet<String> = match &task.params.source {
            Some(s) => [s.clone()].into(),
            None => self
                .ctx
                .universe
                .select(&task.params)
                .map(|entries| entries.iter().map(|e| e.source.name().to_owned()).collect())
                .unwrap_or_default(),
        };
        let source = match sources.len() {
            1 => sources.into_iter().next().unwrap_or_default(),
            _ => "all".to_owned(),
        };
        self.ctx.alerts.provider_run(
            &source,
            &task.id,
            counters.requests,
            counters.failed_requests,
        );
    }

    /// Runs every series of the task; returns the final counters or why it stopped.
    async fn execute(
        &self,
        task: &Task,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let mut counters = task.counters.clone();
        let entries = match self.ctx.universe.select(&task.params) {
            Ok(e) => e,
            // The config changed since the task was queued (a source or symbol is gone).
            Err(e) => return Err((Stop::Invalid(e), counters)),
        };
        counters.series_total = entries.len() as u64;
        let checkpoints = self
            .ctx
            .tasks
            .checkpoints(&task.id)
            .await
            .unwrap_or_default();
        let finished: HashSet<(String, String)> = checkpoints
            .iter()
            .filter(|(_, _, state, _)| state == "done" || state == "failed")
            .map(|(s, i, _, _)| (s.clone(), i.clone()))
            .collect();
        let todo: Vec<UniverseEntry> = entries
            .into_iter()
            .filter(|e| !finished.contains(&(e.key.symbol.to_string(), e.key.interval.to_string())))
            .collect();
        if !finished.is_empty() {
            tracing::info!(task = %task.id, done_before = finished.len(), left = todo.len(), "resuming from checkpoints");
        }
        let mut retry = Vec::new();
        self.pass(
            task,
            todo,
            &mut counters,
            &mut retry,
            false,
            cancel,
            shutdown,
        )
        .await?;
        if !retry.is_empty() {
            let delay = self.ctx.config.second_pass_delay.0;
            tracing::info!(task = %task.id, series = retry.len(), ?delay, "second pass over failed series");
            self.report(
                task,
                &counters,
                format!(
                    "second pass over {} failed series in {delay:?}",
                    retry.len()
                ),
            )
            .await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err((Stop::Cancelled, counters)),
                _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters)),
            }
            let mut still = Vec::new();
            self.pass(
                task,
                retry,
                &mut counters,
                &mut still,
                true,
                cancel,
                shutdown,
            )
            .await?;
        }
        Ok(counters)
    }

    /// One pass over `entries`; series that fail retryably go to `retry` (first pass only).
    #[allow(clippy::too_many_arguments)]
    async fn pass(
        &self,
        task: &Task,
        entries: Vec<UniverseEntry>,
        counters: &mut TaskCounters,
        retry: &mut Vec<UniverseEntry>,
        last_pass: bool,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<(), (Stop, TaskCounters)> {
        let concurrency = self.ctx.config.concurrency.max(1);
        let limited = rate_limited_sources(task, &entries);
        let mut results = futures::stream::iter(entries.into_iter().map(|entry| async move {
            let outcome = self.process(task, &entry).await;
            (entry, outcome)
        }))
        .buffer_unordered(concurrency);
        let mut last_report = Instant::now();
        loop {
            let next = tokio::select! {
                n = results.next() => n,
                _ = cancel.cancelled() => return Err((Stop::Cancelled, counters.clone())),
                _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters.clone())),
            };
            let Some((entry, outcome)) = next else { break };
            let checkpoint = match outcome {
                SeriesOutcome::Done(c) => {
                    counters.series_done += 1;
                    c.add_to(counters);
                    Some(Checkpoint::Done)
                }
                SeriesOutcome::Skipped => {
                    counters.series_skipped += 1;
                    Some(Checkpoint::Done)
                }
                SeriesOutcome::Failed(e) => {
                    let stats = e.stats();
                    counters.requests += stats.requests;
                    counters.retries += stats.retries;
                    counters.failed_requests += stats.retries + u64::from(stats.requests > 0);
                    let reason = e.to_string();
                    if e.is_retryable() && !last_pass {
                        retry.push(entry.clone());
                        Some(Checkpoint::Failed {
                            reason,
                            retryable: true,
                        })
                    } else {
                        counters.series_failed += 1;
                        if counters.failed.len() < 100 {
                            counters.failed.push(FailedSeries {
                                series: entry.key.to_string(),
                                reason: reason.clone(),
                            });
                        }
                        tracing::warn!(task = %task.id, series = %entry.key, %reason, "series failed");
                        Some(Checkpoint::Failed {
                            reason,
                            retryable: false,
                        })
                    }
                }
            };
            for source in &limited {
                if let Some(rate) = source.request_rate() {
                    counters
                        .request_rates
                        .insert(source.name().to_owned(), rate.requests_per_second);
                }
            }
            if let Some(c) = checkpoint
                && let Err(e) = self
                    .ctx
                    .tasks
                    .checkpoint(&task.id, &entry.key, c, counters)
                    .await
            {
                tracing::error!(task = %task.id, error = %e, "cannot record a checkpoint");
            }
            if last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                let message = format!(
                    "{} of {} series done, {} failed, {} bars written{}",
                    counters.series_done + counters.series_skipped,
                    counters.series_total,
                    counters.series_failed,
                    counters.bars_written,
                    rates_note(counters),
                );
                self.report(task, counters, message).await;
            }
        }
        Ok(())
    }

    async fn report(&self, task: &Task, counters: &TaskCounters, message: String) {
        if let Err(e) = self
            .ctx
            .tasks
            .progress(&task.id, progress_of(counters), message, counters)
            .await
        {
            tracing::error!(task = %task.id, error = %e, "cannot record progress");
        }
    }

    /// One series of a task.
    async fn process(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
        match task.kind {
            TaskKind::Validate => return self.validate_stored(entry).await,
            TaskKind::Backfill => return self.backfill(task, entry).await,
            _ => {}
        }
        let now = Timestamp::now();
        let horizon = Timestamp(entry.key.interval.next(now).0 + 1);
        let latest = match self.ctx.store.latest(&entry.key).await {
            Ok(l) => l,
            Err(e) => return store_failure(&entry.key, &e),
        };
        let default_start = Timestamp(now.0 - self.ctx.config.default_history.0.as_secs() as i64);
        let range = match task.kind {
            TaskKind::FullImport => TimeRange::new(
                task.params.start.unwrap_or(default_start),
                task.params.end.unwrap_or(horizon),
            ),
            _ => match latest {
                None if task.params.only_existing => return SeriesOutcome::Skipped,
                None => TimeRange::new(default_start, horizon),
                Some(last) => {
                    let back = match task.params.days {
                        Some(days) => i64::from(days) * 86_400,
                        // Enough calendar time for `refetch_bars` bars, weekends included.
                        None => {
                            i64::from(self.ctx.config.refetch_bars)
                                * entry.key.interval.nominal_secs()
                                * 7
                                / 5
                        }
                    };
                    let mut start = Timestamp(last.ts.0 - back);
                    if let Ok(Some(p)) = self.ctx.catalog.provisional_from(&entry.key).await {
                        start = start.min(p);
                    }
                    TimeRange::new(start, horizon)
                }
            },
        };
        self.fetch_and_ingest(task, entry, range, latest.is_some())
            .await
    }

    async fn fetch_and_ingest(
        &self,
        task: &Task,
        entry: &UniverseEntry,
        range: TimeRange,
        had_data: bool,
    ) -> SeriesOutcome {
        let source = &entry.source;
        let mut fetched = match source.fetch(&entry.key, range).await {
            Ok(f) => f,
            Err(e) => {
                let _ = self
                    .ctx
                    .catalog
                    .record_fetch(&entry.key, source.name(), Err(e.to_string()))
                    .await;
                return SeriesOutcome::Failed(e);
            }
        };
        let mut counts = SeriesCounts::default();
        // Actions count as seen for this series only once its bars are journaled, so a failed
        // re-fetch is tried again, and each interval of a symbol re-fetches on its own.
        let seen_actions = fetched.actions.clone();
        let new_actions = match self
            .ctx
            .catalog
            .unseen_actions(&entry.key, &fetched.actions)
            .await
        {
            Ok(n) => n,
            Err(e) => return SeriesOutcome::Failed(internal(&entry.key, e)),
        };
        counts.new_actions = new_actions.len() as u64;
        if !new_actions.is_empty() && had_data {
            // Adjusted values before the action changed: fetch the whole history again.
            for a in &new_actions {
                tracing::info!(series = %entry.key, action = %a, "new corporate action; fetching the whole history again");
            }
            let default_start =
                Timestamp(Timestamp::now().0 - self.ctx.config.default_history.0.as_secs() as i64);
            let first = self
                .ctx
                .store
                .read_paged(&entry.key, TimeRange::all(), 1)
                .try_next()
                .await
                .ok()
                .flatten()
                .and_then(|p| p.first().map(|b| b.ts))
                .unwrap_or(default_start);
            let full = TimeRange::new(first.min(range.start), range.end);
            match source.fetch(&entry.key, full).await {
                Ok(f) => {
                    counts.requests += fetched.stats.requests;
                    counts.retries += fetched.stats.retries;
                    counts.provider_nulls += fetched.stats.provider_nulls;
                    fetched = f;
                }
                Err(e) => return SeriesOutcome::Failed(e),
            }
        }
        counts.requests += fetched.stats.requests;
        counts.retries += fetched.stats.retries;
        counts.provider_nulls += fetched.stats.provider_nulls;
        let fetched_count = fetched.bars.len() as u64;
        let reconciler = Reconciler {
            ingestor: self.ctx.ingestor.clone(),
            store: self.ctx.store.clone(),
            applied: self.ctx.applied.clone(),
        };
        let changed = reconciler.changed(&entry.key, &fetched.bars).await;
        counts.unchanged = fetched_count - changed.len() as u64;
        if !changed.is_empty() {
            let origin = Origin {
                task_id: task.id.clone(),
                source: source.name().to_owned(),
            };
            match self
                .ctx
                .ingestor
                .ingest(vec![SeriesBars::new(entry.key.clone(), changed)], &origin)
                .await
            {
                Ok(report) => {
                    counts.written = report.accepted;
                    counts.rejected = report.rejected;
                }
                Err(e) => return SeriesOutcome::Failed(internal(&entry.key, e)),
            }
        }
        if let Err(e) = self
            .ctx
            .catalog
            .mark_actions_seen(&entry.key, &seen_actions)
            .await
        {
            return SeriesOutcome::Failed(internal(&entry.key, e));
        }
        if let Err(e) = self
            .ctx
            .catalog
            .record_fetch(&entry.key, source.name(), Ok(fetched.provisional_from))
            .await
        {
            tracing::error!(series = %entry.key, error = %e, "cannot update the catalog");
        }
        SeriesOutcome::Done(counts)
    }

    /// The fetched bars that differ from (or are missing in) the store.
    async fn backfill(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
        let report = match gaps::find_gaps(
            &*self.ctx.store,
            &entry.key,
            &entry.calendar,
            entry.source.history_limit(entry.key.interval),
            Timestamp::now(),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return store_failure(&entry.key, &e),
        };
        let mut total = SeriesCounts {
            gaps: report.gaps.len() as u64,
            ..Default::default()
        };
        for gap in &report.gaps {
            match self.fetch_and_ingest(task, entry, gap.range(), true).await {
                SeriesOutcome::Done(c) => total.add(&c),
                other => return other,
            }
        }
        SeriesOutcome::Done(total)
    }

    async fn validate_stored(&self, entry: &UniverseEntry) -> SeriesOutcome {
        let mut counts = SeriesCounts::default();
        let mut pages = self.ctx.store.read(&entry.key, TimeRange::all());
        loop {
            match pages.try_next().await {
                Ok(Some(page)) => {
                    let v = Validator.validate(entry.key.interval, page, Timestamp::now());
                    counts.invalid += v.rejected.len() as u64;
                    for r in v.rejected.iter().take(5) {
                        tracing::warn!(series = %entry.key, ts = %r.bar.ts, reason = %r.reason, "stored bar breaks a quality rule");
                    }
                }
                Ok(None) => break,
                Err(e) => return store_failure(&entry.key, &e),
            }
        }
        SeriesOutcome::Done(counts)
    }
}

/// The rate-limited sources `entries` fetch from (none for a task that fetches nothing).
fn rate_limited_sources(task: &Task, entries: &[UniverseEntry]) -> Vec<Arc<dyn Source>> {
    if task.kind == TaskKind::Validate {
        return Vec::new();
    }
    let mut out: Vec<Arc<dyn Source>> = Vec::new();
    for e in entries {
        if !out.iter().any(|s| s.name() == e.source.name()) && e.source.request_rate().is_some() {
            out.push(e.source.clone());
        }
    }
    out
}

/// `"; yahoo at 12.4 requests/s"` for each rate-limited source, for progress messages.
fn rates_note(c: &TaskCounters) -> String {
    c.request_rates
        .iter()
        .map(|(source, rate)| format!("; {source} at {rate:.1} requests/s"))
        .collect()
}

fn progress_of(c: &TaskCounters) -> f64 {
    if c.series_total == 0 {
        return 0.0;
    }
    let finished = c.series_done + c.series_skipped + c.series_failed;
    (100.0 * finished as f64 / c.series_total as f64).min(99.9)
}

fn store_failure(key: &SeriesKey, e: &dms_common::store::StoreError) -> SeriesOutcome {
    SeriesOutcome::Failed(SourceError::Local {
        series: key.to_string(),
        message: format!("store: {e}"),
    })
}

fn internal(key: &SeriesKey, e: impl std::fmt::Display) -> SourceError {
    SourceError::Local {
        series: key.to_string(),
        message: e.to_string(),
    }
}

/// Why a task was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request names something that does not exist or selects nothing.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] TaskStoreError),
}
