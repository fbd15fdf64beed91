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
//!
//! A write to the local state file that fails (the journal append of a series' bars, a
//! checkpoint, the catalog) is not the series' fault: the series keeps what it fetched and
//! tries the write again with a growing delay ([`WRITE_RETRY_MAX`] at most) while the task is
//! shown `paused` with the reason; it goes on by itself once the disk takes writes again.

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

use super::store::{Checkpoint, TaskStore, TaskStoreError, Unsaved};
use super::{FailedSeries, Task, TaskCounters, TaskKind, TaskParams, TaskStatus};
use crate::alerts::{Alert, Alerts};
use crate::catalog::Catalog;
use crate::config::TasksConfig;
use crate::gaps;
use crate::import::{self, ImportSummary};
use crate::ingest::Ingestor;
use crate::reconcile::Reconciler;
use crate::source::csv::CsvSource;
use crate::source::sql::SqlTable;
use crate::source::{Source, SourceError};
use crate::table_import::{self, RowImportSummary};
use crate::universe::{Universe, UniverseEntry};
use crate::validate::Validator;

mod backups;
use dms_common::store::config::StoreConfig;

/// The first wait before a failed state write is tried again; it doubles up to
/// [`WRITE_RETRY_MAX`].
const WRITE_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two tries of a state write that keeps failing.
pub const WRITE_RETRY_MAX: Duration = Duration::from_secs(10);

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
    /// The CSV sources, for source imports.
    pub csv_sources: Vec<CsvSource>,
    /// The SQL-table sources, for source imports.
    pub sql_sources: Vec<SqlTable>,
    /// What each source import did, for the status page (newest last).
    pub imports: Arc<Mutex<Vec<ImportSummary>>>,
    /// The files tasks write and read beside the state file.
    pub files: TaskFiles,
    /// The stores and replicas migrations and checks may name.
    pub targets: crate::targets::Targets,
}

/// The files tasks write and read besides the store: file import quarantines, backups.
#[derive(Debug, Clone)]
pub struct TaskFiles {
    /// Where file imports write the rows that are not bars (`<task>.csv`).
    pub import_quarantine_dir: std::path::PathBuf,
    /// Backups: the settings, their directory, and what a backup copies besides the series.
    pub backup: crate::backup::BackupConfig,
    pub backup_dir: std::path::PathBuf,
    pub state_path: std::path::PathBuf,
    /// The SQLite store's file (copied whole into backups).
    pub sqlite_store: Option<std::path::PathBuf>,
    /// Directories besides `backup_dir` a backup may be named in by absolute path
    /// (`file_import.allowed_dirs`).
    pub allowed_dirs: Vec<std::path::PathBuf>,
}

impl TaskFiles {
    /// The same, with `dirs` as the directories outside `backup_dir` backups may be read from.
    pub fn with_allowed_dirs(mut self, dirs: &[std::path::PathBuf]) -> TaskFiles {
        self.allowed_dirs = dirs.to_vec();
        self
    }

    /// The files of a master with these settings.
    pub fn new(
        state: &crate::config::StateConfig,
        backup: &crate::backup::BackupConfig,
        store: &StoreConfig,
    ) -> TaskFiles {
        TaskFiles {
            import_quarantine_dir: state.import_quarantine_dir(),
            backup: backup.clone(),
            backup_dir: backup.dir(&state.dir()),
            state_path: state.path.clone(),
            sqlite_store: match store {
                StoreConfig::Sqlite(s) => Some(s.path.clone()),
                _ => None,
            },
            allowed_dirs: Vec::new(),
        }
    }
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
    provider_missing: u64,
    new_actions: u64,
    unreported_actions: u64,
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
        self.provider_missing += c.provider_missing;
        self.new_actions += c.new_actions;
        self.unreported_actions += c.unreported_actions;
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
        t.provider_missing += self.provider_missing;
        t.new_actions += self.new_actions;
        t.unreported_actions += self.unreported_actions;
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
    /// The task failed as a whole (a source import could not go on).
    Failed(String),
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
        let mut params = params;
        let max = self.ctx.config.max_pending;
        if self
            .ctx
            .tasks
            .list(Some(TaskStatus::Pending), max)
            .await?
            .len()
            >= max
        {
            return Err(SubmitError::Busy(format!(
                "{max} tasks are already waiting to run (tasks.max_pending): try again once some have run"
            )));
        }
        if let Some(target) = &params.target {
            let name = target.as_str().unwrap_or_default();
            self.ctx
                .targets
                .store(name)
                .map_err(|e| SubmitError::Invalid(format!("field `target`: {e}")))?;
        }
        if let Some(name) = &params.replica {
            self.ctx
                .targets
                .replica(name)
                .map_err(|e| SubmitError::Invalid(format!("field `replica`: {e}")))?;
        }
        if let Some(name) = &params.backup {
            let files = &self.ctx.files;
            let dir = crate::backup::resolve(&files.backup_dir, name, &files.allowed_dirs)
                .map_err(|e| SubmitError::Invalid(format!("field `backup`: {e}")))?;
            params.backup = Some(dir.display().to_string());
        }
        let source = params.source.as_deref().unwrap_or_default();
        let is_table = self.sql_source(source).is_some();
        if kind == TaskKind::FullImport && is_table {
            // A SQL table is imported whole: the import of that source is a source import.
            let only_source = TaskParams {
                source: params.source.clone(),
                ..TaskParams::default()
            };
            if params != only_source {
                return Err(SubmitError::Invalid(format!(
                    "source {source:?} is a SQL table, imported whole: give only `source`"
                )));
            }
            return Box::pin(self.submit(TaskKind::SourceImport, name, params)).await;
        }
        if matches!(
            kind,
            TaskKind::Migrate
                | TaskKind::Check
                | TaskKind::FileImport
                | TaskKind::Backup
                | TaskKind::VerifyBackup
                | TaskKind::Restore
        ) {
            // They work on what the store (or the file) holds, not on the kept series.
            let task = self.ctx.tasks.create(kind, name, params).await?;
            self.wake.notify_one();
            return Ok(task);
        }
        if kind == TaskKind::SourceImport {
            if !is_table && !self.ctx.csv_sources.iter().any(|c| c.name() == source) {
                return Err(SubmitError::Invalid(format!(
                    "field `source`: {source:?} is not a CSV or SQL source; a source import reads the files or the table of one"
                )));
            }
            let task = self.ctx.tasks.create(kind, name, params).await?;
            self.wake.notify_one();
            return Ok(task);
        }
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
        let run = Run::new(&task);
        // A task resumed after a restart began in an earlier run of the process.
        let first_started_ms = task
            .started_at_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let result = self.execute(&task, &run, cancel, shutdown).await;
        let kind = task.kind.as_str();
        let (status, message, error, mut counters) = match result {
            Ok(counters) => {
                let failed = counters.series_failed;
                let wall = (chrono::Utc::now().timestamp_millis() - first_started_ms).max(0) as f64
                    / 1000.0;
                let worked = run.worked();
                let resumed = if counters.runs > 1 {
                    format!(
                        " ({worked:.1} s of work over {} runs of the master)",
                        counters.runs
                    )
                } else {
                    String::new()
                };
                let message = match &counters.outcome {
                    Some(outcome) => format!("{outcome} in {wall:.1} s{resumed}"),
                    None => format!(
                        "{} of {} series done, {} failed, {} bars written, {} unchanged, {} rejected in {wall:.1} s{resumed}{}",
                        counters.series_done,
                        counters.series_total,
                        failed,
                        counters.bars_written,
                        counters.bars_unchanged,
                        counters.bars_rejected,
                        rates_note(&counters),
                    ),
                };
                let (status, error) = match failed {
                    0 => (TaskStatus::Completed, None),
                    _ if counters.series_done == 0 && counters.series_skipped == 0 => {
                        (TaskStatus::Failed, Some("every series failed".to_owned()))
                    }
                    n => (
                        TaskStatus::Partial,
                        Some(format!(
                            "{n} of {} series failed after their second pass (see counters.failed)",
                            counters.series_total
                        )),
                    ),
                };
                tracing::info!(task = %id, status = %status, "{message}");
                if status == TaskStatus::Failed
                    && let Some(e) = &error
                {
                    self.ctx.alerts.raise(Alert::task_failed(&id, kind, e));
                }
                self.judge_provider(&task, &counters);
                (status, message, error, counters)
            }
            Err((Stop::Cancelled, counters)) => {
                tracing::info!(task = %id, "task cancelled");
                (TaskStatus::Cancelled, "cancelled".into(), None, counters)
            }
            Err((Stop::Invalid(reason), counters)) => {
                tracing::error!(task = %id, %reason, "task cannot run");
                self.ctx.alerts.raise(Alert::task_failed(
                    &id,
                    kind,
                    &format!("cannot run: {reason}"),
                ));
                (
                    TaskStatus::Failed,
                    "cannot run".into(),
                    Some(reason),
                    counters,
                )
            }
            Err((Stop::Failed(reason), counters)) => {
                tracing::error!(task = %id, %reason, "task failed");
                self.ctx
                    .alerts
                    .raise(Alert::task_failed(&id, kind, &reason));
                (TaskStatus::Failed, "failed".into(), Some(reason), counters)
            }
            Err((Stop::Shutdown, mut counters)) => {
                tracing::info!(task = %id, "task interrupted by shutdown; it resumes at the next start");
                crate::metrics::task_finished(kind, "interrupted", run.life.elapsed());
                run.stamp(&mut counters);
                if let Err(e) = self
                    .ctx
                    .tasks
                    .progress(
                        &id,
                        progress_of(&counters),
                        "interrupted by shutdown; resumes at the next start".into(),
                        &counters,
                    )
                    .await
                {
                    tracing::error!(task = %id, error = %e, "cannot record the task's interruption");
                }
                return;
            }
        };
        crate::metrics::task_finished(kind, status.as_str(), run.life.elapsed());
        run.stamp(&mut counters);
        self.record_end(&id, status, message, error, counters).await;
    }

    /// Writes a task's end; while that fails, the end is shown from memory and written again
    /// in the background until it is saved.
    async fn record_end(
        &self,
        id: &str,
        status: TaskStatus,
        message: String,
        error: Option<String>,
        counters: TaskCounters,
    ) {
        let store = self.ctx.tasks.clone();
        let Err(e) = store
            .finish(id, status, message.clone(), error.clone(), &counters)
            .await
        else {
            return;
        };
        tracing::error!(task = %id, error = %e, "cannot record the task's end; it is kept in memory and written again until that succeeds");
        store.keep_unsaved(
            id,
            Unsaved {
                status,
                message: format!("{message} (not saved yet: {e})"),
                error: error.clone(),
                counters: Some(counters.clone()),
                completed_at_ms: Some(chrono::Utc::now().timestamp_millis()),
            },
        );
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut delay = WRITE_RETRY_FIRST;
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(WRITE_RETRY_MAX);
                if store
                    .finish(&id, status, message.clone(), error.clone(), &counters)
                    .await
                    .is_ok()
                {
                    tracing::info!(task = %id, "the task's end is saved");
                    return;
                }
            }
        });
    }

    /// Runs `write` until it succeeds, showing the task `paused` with the reason meanwhile.
    /// Ends only by succeeding (the caller's `select!` drops it on cancel or shutdown).
    async fn until_written<T, E: std::fmt::Display, Fut>(
        &self,
        task: &Task,
        what: &str,
        mut write: impl FnMut() -> Fut,
    ) -> T
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut delay = WRITE_RETRY_FIRST;
        let mut paused = false;
        loop {
            match write().await {
                Ok(v) => {
                    if paused {
                        tracing::info!(task = %task.id, "{what}: writes succeed again; the task goes on");
                        self.ctx.tasks.saved(&task.id);
                    }
                    return v;
                }
                Err(e) => {
                    let reason = format!("cannot write {what}: {e}");
                    if !paused {
                        tracing::error!(task = %task.id, %reason, "task paused until writes succeed");
                        paused = true;
                    }
                    self.ctx.tasks.keep_unsaved(
                        &task.id,
                        Unsaved {
                            status: TaskStatus::Paused,
                            message: format!(
                                "paused: {reason}; it goes on by itself once writes succeed"
                            ),
                            error: Some(reason),
                            counters: None,
                            completed_at_ms: None,
                        },
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(WRITE_RETRY_MAX);
                }
            }
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
        run: &Run,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let mut counters = task.counters.clone();
        counters.runs += 1;
        if task.kind == TaskKind::SourceImport {
            return self
                .import_source(task, run, counters, cancel, shutdown)
                .await;
        }
        if matches!(task.kind, TaskKind::Migrate | TaskKind::Check) {
            return self
                .migrate_or_check(task, run, counters, (cancel, shutdown))
                .await;
        }
        if task.kind == TaskKind::FileImport {
            return self
                .import_file(task, run, counters, (cancel, shutdown))
                .await;
        }
        match task.kind {
            TaskKind::Backup => return self.backup(task, run, counters, (cancel, shutdown)).await,
            TaskKind::VerifyBackup => return self.verify_backup(task, run, counters).await,
            TaskKind::Restore => {
                return self.restore(task, run, counters, (cancel, shutdown)).await;
            }
            _ => {}
        }
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
        counters.series_resumed = finished.len() as u64;
        if !finished.is_empty() {
            tracing::info!(task = %task.id, done_before = finished.len(), left = todo.len(), "resuming from checkpoints");
        }
        let mut retry = Vec::new();
        self.pass(
            task,
            run,
            todo,
            &mut counters,
            &mut retry,
            false,
            (cancel, shutdown),
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
                run,
                retry,
                &mut counters,
                &mut still,
                true,
                (cancel, shutdown),
            )
            .await?;
        }
        Ok(counters)
    }

    /// Copies every series of the store into the task's target store (a migration), resuming
    /// past the series already copied, then compares the two stores (a check does only this).
    /// A migration whose check finds differences fails; a check reports them and completes.
    async fn migrate_or_check(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        if let Some(backup) = &task.params.backup {
            return self.check_backup(backup, counters).await;
        }
        if let Some(name) = &task.params.replica {
            return self.check_replica(name, counters).await;
        }
        let name = task
            .params
            .target
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let config = match self.ctx.targets.store(name) {
            Ok(c) => c.clone(),
            Err(e) => return Err((Stop::Invalid(e), counters)),
        };
        let target = match dms_common::store::open_store(&config).await {
            Ok(t) => t,
            Err(e) => {
                return Err((
                    Stop::Failed(format!("the target store cannot be opened: {e}")),
                    counters,
                ));
            }
        };
        let stopped = |counters: &TaskCounters| {
            if cancel.is_cancelled() {
                Some(Err((Stop::Cancelled, counters.clone())))
            } else if shutdown.is_cancelled() {
                Some(Err((Stop::Shutdown, counters.clone())))
            } else {
                None
            }
        };
        if task.kind == TaskKind::Migrate {
            let series = match self.ctx.store.overview().await {
                Ok(o) => o,
                Err(e) => {
                    return Err((
                        Stop::Failed(format!("the store cannot be read: {e}")),
                        counters,
                    ));
                }
            };
            counters.series_total = series.len() as u64;
            let done = self.done_series(&task.id).await;
            counters.series_resumed = done.len() as u64;
            // The source is read ahead while the target writes: pages of several series go
            // to the target in one call (one transaction where it has them); a series is
            // checkpointed once its last page is written.
            let keys: Vec<SeriesKey> = series
                .into_iter()
                .map(|o| o.key)
                .filter(|k| !done.contains(&(k.symbol.to_string(), k.interval.to_string())))
                .collect();
            let mut batches = crate::migrate::read_ahead(self.ctx.store.clone(), keys);
            let mut last_report = Instant::now();
            loop {
                if let Some(stop) = stopped(&counters) {
                    return stop;
                }
                let batch = match batches.next().await {
                    None => break,
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return Err((Stop::Failed(e), counters)),
                };
                if !batch.series.is_empty()
                    && let Err(e) = target.upsert(&batch.series).await
                {
                    let first = &batch.series[0].key;
                    return Err((
                        Stop::Failed(format!(
                            "the target store refused the bars (of {first} and on): {e}"
                        )),
                        counters,
                    ));
                }
                counters.bars_written += batch.bars;
                for key in batch.finished {
                    counters.series_done += 1;
                    run.stamp(&mut counters);
                    let tasks = &self.ctx.tasks;
                    let snapshot = counters.clone();
                    self.until_written(task, "the task's checkpoint", || {
                        tasks.checkpoint(&task.id, &key, Checkpoint::Done, &snapshot)
                    })
                    .await;
                }
                if last_report.elapsed() > Duration::from_millis(250) {
                    last_report = Instant::now();
                    run.stamp(&mut counters);
                    let message = format!(
                        "copying: {} of {} series, {} bars",
                        counters.series_done, counters.series_total, counters.bars_written
                    );
                    self.report(task, &counters, message).await;
                }
            }
            self.report(task, &counters, "checking: comparing the two stores".into())
                .await;
        }
        let report = match crate::consistency::compare(&*self.ctx.store, &*target, 1000).await {
            Ok(r) => r,
            Err(e) => {
                return Err((
                    Stop::Failed(format!("the check cannot read a store: {e}")),
                    counters,
                ));
            }
        };
        let equal = report.equal();
        let summary = format!(
            "{} series compared, {} equal; {} bars missing from the target, {} extra, {} changed",
            report.series_compared,
            report.series_equal,
            report.bars_missing,
            report.bars_extra,
            report.bars_changed
        );
        tracing::info!(task = %task.id, equal, "{summary}");
        if task.kind == TaskKind::Check && counters.series_total == 0 {
            counters.series_total = report.series_compared;
            counters.series_done = report.series_compared;
        }
        counters.check = Some(report);
        if task.kind == TaskKind::Migrate && !equal {
            return Err((
                Stop::Failed(format!("the copy does not match: {summary}")),
                counters,
            ));
        }
        Ok(counters)
    }

    /// Compares delivered bars with the store, for what the ingestor journals.
    pub fn reconciler(&self) -> Reconciler {
        Reconciler {
            ingestor: self.ctx.ingestor.clone(),
            store: self.ctx.store.clone(),
            applied: self.ctx.applied.clone(),
        }
    }

    /// The series (symbol, interval) an earlier run of task `id` checkpointed as done.
    async fn done_series(&self, id: &str) -> HashSet<(String, String)> {
        self.ctx
            .tasks
            .checkpoints(id)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, _, state, _)| state == "done")
            .map(|(s, i, _, _)| (s, i))
            .collect()
    }

    /// Where backups are written.
    pub fn backup_dir(&self) -> &std::path::Path {
        &self.ctx.files.backup_dir
    }

    /// The SQL-table source named `name`.
    pub fn sql_source(&self, name: &str) -> Option<&SqlTable> {
        self.ctx.sql_sources.iter().find(|t| t.name() == name)
    }

    /// Reads the whole table of a SQL source, page by page, from after the last key a
    /// previous run journaled. Cancel and shutdown take effect between pages.
    async fn import_table(
        &self,
        task: &Task,
        run: &Run,
        table: &SqlTable,
        counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        tracing::info!(source = table.name(), resume_after = ?counters.resume_after, "table import begins");
        let reconciler = self.reconciler();
        let start = row_summary(&counters);
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(start.clone());
        let import = table_import::import_table(
            table,
            &self.ctx.ingestor,
            &reconciler,
            start,
            &task.id,
            &stop,
            |s| {
                seen.send_replace(s.clone());
            },
        );
        let driven = Driven::new(import, summaries, stop.clone());
        self.drive_rows(task, run, counters, driven, (cancel, shutdown))
            .await
    }

    /// Reports a row import's progress (a SQL table's, a file's) until it ends; every
    /// report saves the rows done, from which a restart reads on.
    async fn drive_rows(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        mut driven: Driven<'_, RowImportSummary>,
        stops: (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let (summary, why) = loop {
            let s = match driven.next(stops).await {
                Next::Progress(s) => s,
                Next::Done(s, why) => break (s, why),
            };
            table_counters(&s, &mut counters);
            run.stamp(&mut counters);
            let total = if s.rows_total > 0 {
                format!(" of {}", s.rows_total)
            } else {
                String::new()
            };
            let message = format!(
                "page {}: {}{total} rows read, {} bars written, {} unchanged, {} rows skipped",
                s.pages, s.rows_read, s.bars_accepted, s.bars_unchanged, s.rows_skipped
            );
            self.report(task, &counters, message).await;
        };
        table_counters(&summary, &mut counters);
        import_outcome(&summary.state, summary.error, why, counters)
    }

    /// Reads the task's file, skipping the rows an earlier run journaled. Cancel and shutdown
    /// take effect between batches. An uploaded file is deleted when the import ends (not
    /// when the master stops: the import resumes at the next start).
    async fn import_file(
        &self,
        task: &Task,
        run: &Run,
        counters: TaskCounters,
        stops: (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let Some(spec) = task.params.file.clone() else {
            return Err((
                Stop::Invalid("the task names no file to import".into()),
                counters,
            ));
        };
        tracing::info!(file = %spec.file_name, format = %spec.format, rows_done = counters.rows_read, "file import begins");
        let quarantine = crate::file_import::run::quarantine_path(
            &self.ctx.files.import_quarantine_dir,
            &task.id,
        );
        // Named in the counters once it exists (the first bad row creates it).
        let file = quarantine.display().to_string();
        let named = move |mut c: TaskCounters| {
            c.quarantine_file = (c.rows_skipped > 0).then(|| file.clone());
            c
        };
        let counters = named(counters);
        let reconciler = self.reconciler();
        let start = row_summary(&counters);
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(start.clone());
        let import = crate::file_import::run::import_file(
            &spec,
            &self.ctx.ingestor,
            &reconciler,
            start,
            &task.id,
            &quarantine,
            &stop,
            |s| {
                seen.send_replace(s.clone());
            },
        );
        let driven = Driven::new(import, summaries, stop.clone());
        let outcome = match self.drive_rows(task, run, counters, driven, stops).await {
            Ok(c) => Ok(named(c)),
            Err((stop, c)) => Err((stop, named(c))),
        };
        let ended = !matches!(outcome, Err((Stop::Shutdown, _)));
        if spec.uploaded
            && ended
            && let Err(e) = std::fs::remove_file(&spec.path)
        {
            tracing::warn!(file = %spec.path.display(), error = %e, "the uploaded file cannot be removed");
        }
        outcome
    }

    /// Reads every file of the task's CSV source (or the table of its SQL source). Cancel and
    /// shutdown take effect between files; an interrupted file import runs again from the
    /// first file at the next start (files whose bars are stored unchanged journal nothing).
    async fn import_source(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let name = task.params.source.clone().unwrap_or_default();
        if let Some(table) = self.sql_source(&name) {
            return self
                .import_table(task, run, table, counters, (cancel, shutdown))
                .await;
        }
        let Some(csv) = self.ctx.csv_sources.iter().find(|c| c.name() == name) else {
            return Err((
                Stop::Invalid(format!(
                    "source {name:?} is no longer a configured CSV or SQL source"
                )),
                counters,
            ));
        };
        tracing::info!(source = %name, "source import begins");
        let imports = self.ctx.imports.clone();
        let slot = {
            let mut all = imports.lock().unwrap_or_else(|p| p.into_inner());
            all.push(ImportSummary {
                source: name.clone(),
                state: "running".into(),
                ..ImportSummary::default()
            });
            all.len() - 1
        };
        let reconciler = self.reconciler();
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(ImportSummary::default());
        let import = import::import_csv(csv, &self.ctx.ingestor, &reconciler, &stop, |s| {
            imports.lock().unwrap_or_else(|p| p.into_inner())[slot] = s.clone();
            seen.send_replace(s.clone());
        });
        let mut last_report = Instant::now();
        let mut driven = Driven::new(import, summaries, stop.clone());
        let (summary, why) = loop {
            let s = match driven.next((cancel, shutdown)).await {
                Next::Progress(s) => s,
                Next::Done(s, why) => break (s, why),
            };
            import_counters(&s, &mut counters);
            if last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                run.stamp(&mut counters);
                let message = format!(
                    "{} of {} files read, {} bars written, {} unchanged",
                    s.files, s.files_total, s.bars_accepted, s.bars_unchanged
                );
                self.report(task, &counters, message).await;
            }
        };
        import_counters(&summary, &mut counters);
        tracing::info!(
            source = %summary.source,
            state = %summary.state,
            series = summary.series,
            bars = summary.bars_accepted,
            rejected = summary.bars_rejected,
            rows_skipped = summary.rows_skipped,
            failed_files = summary.failed_files.len(),
            "source import finished"
        );
        import_outcome(&summary.state, summary.error, why, counters)
    }

    /// One pass over `entries`; series that fail retryably go to `retry` (first pass only).
    #[allow(clippy::too_many_arguments)]
    async fn pass(
        &self,
        task: &Task,
        run: &Run,
        entries: Vec<UniverseEntry>,
        counters: &mut TaskCounters,
        retry: &mut Vec<UniverseEntry>,
        last_pass: bool,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
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
            if let Some(c) = checkpoint {
                run.stamp(counters);
                let tasks = &self.ctx.tasks;
                let snapshot = counters.clone();
                let save = self.until_written(task, "the task's checkpoint", || {
                    tasks.checkpoint(&task.id, &entry.key, c.clone(), &snapshot)
                });
                tokio::select! {
                    _ = save => {}
                    _ = cancel.cancelled() => return Err((Stop::Cancelled, counters.clone())),
                    _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters.clone())),
                }
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
                run.stamp(counters);
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
        self.fetch_and_ingest(task, entry, range, latest.is_some(), None)
            .await
    }

    /// Fetches `range` of the series and journals what differs from the store; the times of
    /// the bars the provider answered with go to `answered` when given.
    async fn fetch_and_ingest(
        &self,
        task: &Task,
        entry: &UniverseEntry,
        range: TimeRange,
        had_data: bool,
        answered: Option<&mut Vec<Timestamp>>,
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
        let first_stored = match had_data {
            true => self
                .ctx
                .store
                .read_paged(&entry.key, TimeRange::all(), 1)
                .try_next()
                .await
                .ok()
                .flatten()
                .and_then(|p| p.first().map(|b| b.ts)),
            false => None,
        };
        // A fetch from the first stored bar on saw every action of the stored history.
        let mut history_checked = first_stored.is_none_or(|first| range.start <= first);
        if let Some(first) = first_stored
            && task.kind == TaskKind::IncrementalUpdate
            && !history_checked
            && self.actions_check_due(&entry.key).await
        {
            match source.actions(&entry.key.symbol, first).await {
                Ok(Some((actions, stats))) => {
                    counts.requests += stats.requests;
                    counts.retries += stats.retries;
                    for a in actions {
                        if !fetched.actions.contains(&a) {
                            fetched.actions.push(a);
                        }
                    }
                    history_checked = true;
                }
                Ok(None) => {}
                Err(e) => {
                    let stats = e.stats();
                    counts.requests += stats.requests;
                    counts.retries += stats.retries;
                    tracing::warn!(series = %entry.key, error = %e, "cannot learn the corporate actions of the whole history; the next update tries again");
                }
            }
        }
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
        let mut refetch = !new_actions.is_empty() && had_data;
        for a in &new_actions {
            if had_data {
                tracing::info!(series = %entry.key, action = %a, "new corporate action; fetching the whole history again");
            }
        }
        let reconciler = self.reconciler();
        // The stored bars over the fetched span, read once: for the ratio check and, unless
        // the whole history is fetched again, for the comparison below.
        let mut stored = match had_data {
            true => reconciler.stored(&entry.key, &fetched.bars).await,
            false => Some(Default::default()),
        };
        if had_data
            && !refetch
            && let Some(ratio) = stored.as_ref().and_then(|s| common_ratio(s, &fetched.bars))
        {
            tracing::warn!(
                series = %entry.key,
                ratio,
                "every re-fetched bar differs from the stored one by one common ratio, with no corporate action reported: treated as an unreported one; fetching the whole history again"
            );
            counts.unreported_actions += 1;
            refetch = true;
        }
        if refetch {
            // Adjusted values before the action changed: fetch the whole history again.
            let default_start =
                Timestamp(Timestamp::now().0 - self.ctx.config.default_history.0.as_secs() as i64);
            let first = first_stored.unwrap_or(default_start);
            let full = TimeRange::new(first.min(range.start), range.end);
            history_checked = true;
            match source.fetch(&entry.key, full).await {
                Ok(f) => {
                    counts.requests += fetched.stats.requests;
                    counts.retries += fetched.stats.retries;
                    counts.provider_nulls += fetched.stats.provider_nulls;
                    fetched = f;
                    stored = reconciler.stored(&entry.key, &fetched.bars).await;
                }
                Err(e) => return SeriesOutcome::Failed(e),
            }
        }
        counts.requests += fetched.stats.requests;
        counts.retries += fetched.stats.retries;
        counts.provider_nulls += fetched.stats.provider_nulls;
        if let Some(answered) = answered {
            answered.extend(fetched.bars.iter().map(|b| b.ts));
        }
        let fetched_count = fetched.bars.len() as u64;
        let changed = Reconciler::changed_from(stored.as_ref(), &fetched.bars);
        counts.unchanged = fetched_count - changed.len() as u64;
        if !changed.is_empty() {
            let origin = Origin {
                task_id: task.id.clone(),
                source: source.name().to_owned(),
            };
            let ingestor = &self.ctx.ingestor;
            let report = self
                .until_written(task, "the series' bars to the journal", || {
                    ingestor.ingest(
                        vec![SeriesBars::new(entry.key.clone(), changed.clone())],
                        &origin,
                    )
                })
                .await;
            counts.written = report.accepted;
            counts.rejected = report.rejected;
        }
        let catalog = &self.ctx.catalog;
        self.until_written(task, "the catalog", || async {
            catalog.mark_actions_seen(&entry.key, &seen_actions).await?;
            match history_checked {
                true => catalog.record_actions_checked(&entry.key).await,
                false => Ok(()),
            }
        })
        .await;
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

    /// Whether the corporate actions over the series' whole history are to be asked for again
    /// (`tasks.actions_check_interval` has passed since that was last done).
    async fn actions_check_due(&self, key: &SeriesKey) -> bool {
        let every = self.ctx.config.actions_check_interval.0.as_millis() as i64;
        match self.ctx.catalog.actions_checked_at(key).await {
            Ok(Some(at)) => chrono::Utc::now().timestamp_millis() - at >= every,
            Ok(None) | Err(_) => true,
        }
    }

    /// Fetches each gap of the series. Sessions the provider answered with no bar are
    /// remembered and not asked for again until `tasks.provider_missing_retry` has passed.
    async fn backfill(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
        let key = &entry.key;
        let retry_ms = self.ctx.config.provider_missing_retry.0.as_millis() as i64;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let recent: std::collections::BTreeSet<Timestamp> =
            match self.ctx.catalog.provider_missing(key).await {
                Ok(known) => known
                    .into_iter()
                    .filter(|(_, answered)| now_ms - answered < retry_ms)
                    .map(|(t, _)| t)
                    .collect(),
                Err(e) => return SeriesOutcome::Failed(internal(key, e)),
            };
        let report = match gaps::find_gaps(
            &*self.ctx.store,
            key,
            &entry.calendar,
            entry.source.history_limit(key.interval),
            Timestamp::now(),
            &recent,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return store_failure(key, &e),
        };
        let mut total = SeriesCounts {
            gaps: report.gaps.len() as u64,
            ..Default::default()
        };
        for gap in &report.gaps {
            let mut answered = Vec::new();
            match self
                .fetch_and_ingest(task, entry, gap.range(), true, Some(&mut answered))
                .await
            {
                SeriesOutcome::Done(c) => total.add(&c),
                other => return other,
            }
            let answered: std::collections::BTreeSet<Timestamp> = answered.into_iter().collect();
            let expected = entry.calendar.expected_bars(key.interval, gap.range());
            let (got, none): (Vec<Timestamp>, Vec<Timestamp>) =
                expected.into_iter().partition(|t| answered.contains(t));
            if !none.is_empty() {
                tracing::info!(
                    series = %key,
                    sessions = none.len(),
                    first = %none[0],
                    "the provider has no bar for these expected sessions; remembered as provider-missing"
                );
                total.provider_missing += none.len() as u64;
            }
            let catalog = &self.ctx.catalog;
            self.until_written(task, "the provider-missing sessions", || {
                catalog.record_provider_answer(key, &none, &got)
            })
            .await;
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

/// The ratio stored / fetched when every fetched bar that is also stored (at least two)
/// differs from it by one common ratio in open, high, low and close: the mark of a split or an
/// adjustment the provider applied without reporting it. `stored` is by time.
fn common_ratio(
    stored: &std::collections::HashMap<i64, dms_common::Bar>,
    fetched: &[dms_common::Bar],
) -> Option<f64> {
    let mut ratio: Option<f64> = None;
    let mut pairs = 0;
    for f in fetched {
        let Some(s) = stored.get(&f.ts.0) else {
            continue;
        };
        pairs += 1;
        for (a, b) in [
            (s.open, f.open),
            (s.high, f.high),
            (s.low, f.low),
            (s.close, f.close),
        ] {
            if !(a > 0.0 && b > 0.0) {
                return None;
            }
            let r = a / b;
            match ratio {
                None => ratio = Some(r),
                Some(q) if ((r - q) / q).abs() <= 1e-4 => {}
                Some(_) => return None,
            }
        }
    }
    let r = ratio?;
    (pairs >= 2 && (r - 1.0).abs() > 1e-3).then_some(r)
}

/// An import that reports its summaries on a watch channel, asked to stop (through `stop`)
/// on cancel or shutdown.
struct Driven<'a, S> {
    import: std::pin::Pin<Box<dyn std::future::Future<Output = S> + Send + 'a>>,
    summaries: watch::Receiver<S>,
    stop: CancellationToken,
    why: Option<Stop>,
}

/// What a driven import did next.
enum Next<S> {
    /// A new summary.
    Progress(S),
    /// Its last summary, and why it was asked to stop, if it was.
    Done(S, Option<Stop>),
}

impl<'a, S: Clone> Driven<'a, S> {
    fn new(
        import: impl std::future::Future<Output = S> + Send + 'a,
        summaries: watch::Receiver<S>,
        stop: CancellationToken,
    ) -> Self {
        Driven {
            import: Box::pin(import),
            summaries,
            stop,
            why: None,
        }
    }

    async fn next(
        &mut self,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Next<S> {
        loop {
            tokio::select! {
                s = &mut self.import => return Next::Done(s, self.why.take()),
                Ok(()) = self.summaries.changed() => {
                    return Next::Progress(self.summaries.borrow_and_update().clone());
                }
                _ = cancel.cancelled(), if self.why.is_none() => {
                    self.why = Some(Stop::Cancelled);
                    self.stop.cancel();
                }
                _ = shutdown.cancelled(), if self.why.is_none() => {
                    self.why = Some(Stop::Shutdown);
                    self.stop.cancel();
                }
            }
        }
    }
}

/// How an import that ended in `state` ends its task (in the shape every runner returns).
#[allow(clippy::result_large_err)]
fn import_outcome(
    state: &str,
    error: Option<String>,
    why: Option<Stop>,
    counters: TaskCounters,
) -> Result<TaskCounters, (Stop, TaskCounters)> {
    match (state, why) {
        ("cancelled", Some(stop)) => Err((stop, counters)),
        ("failed", _) => Err((
            Stop::Failed(error.unwrap_or_else(|| "the import failed".into())),
            counters,
        )),
        _ => Ok(counters),
    }
}

/// Where a row import (a table's, a file's) starts from: what earlier runs did.
fn row_summary(c: &TaskCounters) -> RowImportSummary {
    RowImportSummary {
        rows_read: c.rows_read,
        pages: c.pages,
        bars_accepted: c.bars_written,
        bars_unchanged: c.bars_unchanged,
        bars_rejected: c.bars_rejected,
        rows_skipped: c.rows_skipped,
        row_problems: c.row_problems.clone(),
        resume_after: c.resume_after.clone(),
        ..RowImportSummary::default()
    }
}

/// A table import's counters from what it reports.
fn table_counters(s: &RowImportSummary, c: &mut TaskCounters) {
    c.rows_total = s.rows_total;
    c.rows_read = s.rows_read;
    c.pages = s.pages;
    c.bars_written = s.bars_accepted;
    c.bars_unchanged = s.bars_unchanged;
    c.bars_rejected = s.bars_rejected;
    c.rows_skipped = s.rows_skipped;
    c.row_problems.clone_from(&s.row_problems);
    c.resume_after.clone_from(&s.resume_after);
}

/// A source import's counters from what it reports: each file is a series.
fn import_counters(s: &ImportSummary, c: &mut TaskCounters) {
    c.series_total = s.files_total;
    c.series_done = s.series;
    c.series_failed = s.failed_files.len() as u64;
    c.failed = s
        .failed_files
        .iter()
        .take(100)
        .map(|f| FailedSeries {
            series: s.source.clone(),
            reason: f.clone(),
        })
        .collect();
    c.bars_written = s.bars_accepted;
    c.bars_unchanged = s.bars_unchanged;
    c.bars_rejected = s.bars_rejected;
    c.rows_skipped = s.rows_skipped;
}

/// One run of a task in this process: when it began and the work time of earlier runs.
struct Run {
    life: Instant,
    earlier_work: f64,
}

impl Run {
    fn new(task: &Task) -> Run {
        Run {
            life: Instant::now(),
            earlier_work: task.counters.worked_secs,
        }
    }

    /// Seconds worked over every run, this one until now.
    fn worked(&self) -> f64 {
        self.earlier_work + self.life.elapsed().as_secs_f64()
    }

    /// Sets the counters' work time to now.
    fn stamp(&self, counters: &mut TaskCounters) {
        counters.worked_secs = (self.worked() * 1000.0).round() / 1000.0;
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
    if c.rows_total > 0 {
        return (100.0 * c.rows_read as f64 / c.rows_total as f64).min(99.9);
    }
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
    /// Too many tasks are waiting (`tasks.max_pending`): try again later.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] TaskStoreError),
}
