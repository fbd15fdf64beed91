//! The scheduler: jobs from the `schedules:` config that the master runs by itself at the times
//! their cron expressions give, in their own IANA time zones.
//!
//! A job ([`ScheduleConfig`]) names a kind (`update`, `import`, `backfill`, `validate`: a task
//! queued through the [`TaskManager`](crate::tasks::manager::TaskManager); `verify_replicas`:
//! the replicas' digests compared with the master's) and what it works on (watchlists,
//! symbols, a source, an interval, a window of days, or which replicas). Each job has a loop
//! that sleeps on a [`Clock`] until its next fire; a fire goes through the checks in [`run`]
//! (overlap with the job's still-running task, non-trading days, series already complete)
//! and is recorded as a [`RunRecord`] with its outcome in the state file, counted in the
//! `dms_schedule_runs_total{schedule, outcome}` metric and sent to [`Scheduler::subscribe`]rs;
//! a `missed` run also raises a `missed_run` alert.
//!
//! Missed fires: the last fire each job handled is kept in the state file. A job that finds a
//! fire due more than a minute late (the master was down) runs it once (`catch_up: true`, the
//! default), however many fires were missed, or records it as `missed`.
//!
//! At run time jobs are listed with their last run and next fire times, paused, resumed and
//! triggered ([`Scheduler`], REST in [`api`]); the pause state survives restarts and config
//! reloads ([`Scheduler::reload`]: jobs added, removed and changed; a job keeps its pause state
//! and history by name).
//!
//! Key types: [`Scheduler`], [`ScheduleConfig`], [`ScheduleView`], [`RunRecord`] with
//! [`RunOutcome`], [`Clock`] ([`SystemClock`], [`ManualClock`] for tests), [`cron::CronSchedule`]
//! (fire times, DST-correct), [`store::ScheduleStore`] (the state file's tables).
//!
//! # Layout
//!
//! - this module: [`Scheduler`], a loop per job; [`config`]: a job; [`cron`]: cron
//!   expressions; [`clock`]: the clock the loops sleep on (real or test).
//! - [`run`]: a fire's checks and outcome; [`complete`]: whether the series are complete
//!   already; [`store`]: the run records; [`api`]: the REST view.

pub mod api;
pub mod clock;
pub mod complete;
pub mod config;
pub mod cron;
pub mod run;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, FixedOffset, Utc};
use dms_common::state::StateError;
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use api::router;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{NodeSelection, ScheduleConfig, ScheduleKind};
pub use run::{RunContext, RunOutcome, RunRecord, RunTrigger};

use cron::{CronSchedule, Due};
use store::{JobRow, ScheduleStore};

/// Next fire times shown per schedule.
pub const NEXT_FIRES: usize = 5;
/// Runs [`Scheduler::get`] shows.
pub const RECENT_RUNS: usize = 20;
/// A fire found due later than this after its time fell while the master was down (or
/// stalled): the catch-up rules apply to it.
const LATE_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// Why a scheduler call failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No schedule has this name.
    #[error("no schedule named {0:?}")]
    NotFound(String),
    /// A schedule given to [`Scheduler::reload`] is not valid.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// A schedule as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub kind: ScheduleKind,
    /// Paused (at run time, or `enabled: false` in the config): it does not fire.
    pub paused: bool,
    pub catch_up: bool,
    pub skip_non_trading_days: bool,
    /// What it works on: watchlists, symbols, source, interval, days, only_existing, nodes.
    pub params: serde_json::Value,
    /// The next fire times (RFC 3339 in the schedule's time zone); empty while paused.
    pub next_fires: Vec<DateTime<FixedOffset>>,
    /// The newest run.
    pub last_run: Option<RunRecord>,
    /// The newest runs, newest first ([`Scheduler::get`] only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<RunRecord>,
}

/// The running scheduler. Cheap to clone; its job loops stop with the token given to
/// [`Scheduler::start`].
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    ctx: RunContext,
    store: ScheduleStore,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// The persisted state of every schedule ever seen, by name.
    rows: Mutex<HashMap<String, JobRow>>,
    events: broadcast::Sender<RunRecord>,
    /// The receiver made with `events`, for the first [`Scheduler::subscribe`].
    first_subscriber: Mutex<Option<broadcast::Receiver<RunRecord>>>,
    stop: CancellationToken,
}

/// One configured job. The state and the run lock are shared with the job that replaces it
/// on a reload, so a changed job keeps its pause state and overlap check.
#[derive(Debug)]
struct Job {
    config: ScheduleConfig,
    cron: CronSchedule,
    state: Arc<Mutex<JobRow>>,
    /// Held while a run is being decided and started: a second fire meanwhile overlaps.
    running: Arc<tokio::sync::Mutex<()>>,
    /// Serializes writes of `state` to the state file.
    saving: Arc<tokio::sync::Mutex<()>>,
    wake: Notify,
    stop: CancellationToken,
}

impl Job {
    fn row(&self) -> JobRow {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update<T>(&self, f: impl FnOnce(&mut JobRow) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn paused(&self) -> bool {
        self.row().paused.unwrap_or(!self.config.enabled)
    }

    fn last_fire(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.row().last_fire_ms).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

impl Scheduler {
    /// Opens the scheduler's tables in the state file at `state_path` and starts a loop per
    /// job of `schedules`. Jobs stop when `stop` fires.
    pub async fn start(
        ctx: RunContext,
        schedules: Vec<ScheduleConfig>,
        state_path: &Path,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
    ) -> Result<Scheduler, ScheduleError> {
        let store = ScheduleStore::open(state_path)?;
        let rows = store.rows().await?;
        // Made before any job runs, so the first subscriber sees every run.
        let events = broadcast::channel(256);
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                clock,
                ctx,
                store,
                jobs: Mutex::default(),
                rows: Mutex::new(rows),
                events: events.0,
                first_subscriber: Mutex::new(Some(events.1)),
                stop,
            }),
        };
        scheduler.reload(schedules)?;
        // Before any fire: a job seen for the first time counts its missed fires from now.
        for job in scheduler.jobs() {
            scheduler.inner.save(&job).await?;
        }
        Ok(scheduler)
    }

    /// Every schedule, by name, with its last run.
    pub async fn list(&self) -> Vec<ScheduleView> {
        let mut out = Vec::new();
        for job in self.jobs() {
            out.push(self.inner.view(&job, 1).await);
        }
        out
    }

    /// One schedule with its newest runs.
    pub async fn get(&self, name: &str) -> Option<ScheduleView> {
        let job = self.job(name).ok()?;
        Some(self.inner.view(&job, RECENT_RUNS).await)
    }

    /// Runs a schedule now, whether paused or not (the calendar and completeness checks are
    /// skipped: the operator asked; the overlap check is not).
    pub async fn trigger(&self, name: &str) -> Result<RunRecord, ScheduleError> {
        let job = self.job(name)?;
        let now = self.inner.clock.now();
        let run = self.inner.fire(&job, now, RunTrigger::Manual, None).await;
        self.inner.save(&job).await?;
        Ok(run)
    }

    /// Pauses a schedule: it does not fire until resumed (across restarts too).
    pub async fn pause(&self, name: &str) -> Result<ScheduleView, ScheduleError> {
        let job = self.job(name)?;
        job.update(|r| r.paused = Some(true));
        self.inner.save(&job).await?;
        job.wake.notify_one();
        tracing::info!(schedule = name, "schedule paused");
        Ok(self.inner.view(&job, 1).await)
    }

    /// Resumes a paused schedule from now on: the fires it slept through are not caught up.
    pub async fn resume(&self, name: &str) -> Result<ScheduleView, ScheduleError> {
        let job = self.job(name)?;
        let now = self.inner.clock.now();
        if job.paused() {
            job.update(|r| {
                r.paused = Some(false);
                r.last_fire_ms = r.last_fire_ms.max(now.timestamp_millis());
            });
        }
        self.inner.save(&job).await?;
        job.wake.notify_one();
        tracing::info!(schedule = name, "schedule resumed");
        Ok(self.inner.view(&job, 1).await)
    }

    /// Replaces the jobs with `schedules` (a config re-read on SIGHUP): new ones start, removed
    /// ones stop, changed ones restart from now with their pause state and history kept by
    /// name. Nothing changes when one of them is invalid. Must be called inside the runtime.
    pub fn reload(&self, schedules: Vec<ScheduleConfig>) -> Result<(), ScheduleError> {
        let mut parsed = Vec::with_capacity(schedules.len());
        let mut seen = std::collections::HashSet::new();
        for (i, s) in schedules.into_iter().enumerate() {
            let invalid = |field: &str, message: String| ScheduleError::Invalid {
                key: format!("schedules[{i}].{field}"),
                message,
            };
            if !seen.insert(s.name.clone()) {
                return Err(invalid(
                    "name",
                    format!("{:?} is used by another schedule", s.name),
                ));
            }
            let cron = CronSchedule::new(&s.cron, &s.timezone).map_err(|e| {
                let field = if e.contains("time zone") {
                    "timezone"
                } else {
                    "cron"
                };
                invalid(field, e)
            })?;
            parsed.push((s, cron));
        }
        let inner = &self.inner;
        let now_ms = inner.clock.now().timestamp_millis();
        let mut jobs = inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = BTreeMap::new();
        for (config, cron) in parsed {
            let name = config.name.clone();
            let (state, running, saving) = match jobs.remove(&name) {
                Some(old) if old.config == config => {
                    next.insert(name, old);
                    continue;
                }
                Some(old) => {
                    old.stop.cancel();
                    tracing::info!(schedule = %name, "schedule changed; it fires from now on");
                    if old.config.cron != config.cron || old.config.timezone != config.timezone {
                        old.update(|r| r.last_fire_ms = r.last_fire_ms.max(now_ms));
                    }
                    (old.state.clone(), old.running.clone(), old.saving.clone())
                }
                None => {
                    let rows = inner.rows.lock().unwrap_or_else(|p| p.into_inner());
                    let row = rows.get(&name).cloned().unwrap_or(JobRow {
                        paused: None,
                        enabled_seen: config.enabled,
                        last_fire_ms: now_ms,
                        last_task_id: None,
                    });
                    tracing::info!(schedule = %name, cron = %config.cron, timezone = %config.timezone, kind = %config.kind, "schedule loaded");
                    (Arc::new(Mutex::new(row)), Arc::default(), Arc::default())
                }
            };
            {
                let mut row = state.lock().unwrap_or_else(|p| p.into_inner());
                // A changed `enabled` in the config wins over an earlier pause or resume.
                if row.enabled_seen != config.enabled {
                    row.paused = None;
                    row.enabled_seen = config.enabled;
                }
            }
            let job = Arc::new(Job {
                config,
                cron,
                state,
                running,
                saving,
                wake: Notify::new(),
                stop: inner.stop.child_token(),
            });
            tokio::spawn(job_loop(inner.clone(), job.clone()));
            next.insert(name, job);
        }
        for (name, old) in jobs.iter() {
            tracing::info!(schedule = %name, "schedule removed");
            old.stop.cancel();
        }
        *jobs = next;
        Ok(())
    }

    /// Every run recorded from now on; the first call gets every run since
    /// [`Scheduler::start`] (runs at start, such as catch-ups, included).
    pub fn subscribe(&self) -> broadcast::Receiver<RunRecord> {
        let first = self
            .inner
            .first_subscriber
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        first.unwrap_or_else(|| self.inner.events.subscribe())
    }

    fn jobs(&self) -> Vec<Arc<Job>> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.values().cloned().collect()
    }

    fn job(&self, name: &str) -> Result<Arc<Job>, ScheduleError> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(name)
            .cloned()
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))
    }
}

/// One job's life: sleep until the next fire (or a pause, resume or stop), handle what fell
/// due, repeat.
async fn job_loop(inner: Arc<Inner>, job: Arc<Job>) {
    if let Err(e) = inner.save(&job).await {
        tracing::error!(schedule = %job.config.name, error = %e, "cannot record the schedule's state");
    }
    loop {
        if job.stop.is_cancelled() {
            return;
        }
        if job.paused() {
            tokio::select! {
                _ = job.wake.notified() => continue,
                _ = job.stop.cancelled() => return,
            }
        }
        let now = inner.clock.now();
        if let Some(due) = job.cron.due(job.last_fire(), now) {
            inner.handle_due(&job, due, now).await;
            continue;
        }
        let Some(next) = job.cron.next_after(job.last_fire().max(now)) else {
            tracing::warn!(schedule = %job.config.name, "the cron expression never fires again");
            tokio::select! {
                _ = job.wake.notified() => continue,
                _ = job.stop.cancelled() => return,
            }
        };
        tokio::select! {
            _ = inner.clock.sleep_until(next) => {}
            _ = job.wake.notified() => {}
            _ = job.stop.cancelled() => return,
        }
    }
}

impl Inner {
    /// Handles the fires in `due` found at `now`: an on-time fire runs; a late one (the
    /// master was down) runs once as a catch-up or is recorded `missed`.
    async fn handle_due(&self, job: &Job, due: Due, now: DateTime<Utc>) {
        let late = now - due.latest > LATE_AFTER;
        let missed_before = due.count.saturating_sub(1);
        if !late {
            if missed_before > 0 && !job.config.catch_up {
                let note = format!("{missed_before} fire(s) from this one on were missed");
                self.record_missed(job, due.first, now, note).await;
            }
            self.fire(job, due.latest, RunTrigger::Schedule, None).await;
        } else if job.config.catch_up {
            let note = format!("catch-up of {} missed fire(s)", due.count);
            self.fire(job, due.latest, RunTrigger::CatchUp, Some(note))
                .await;
        } else {
            let note = format!(
                "the master was not running; {} fire(s) missed (catch_up is off)",
                due.count
            );
            self.record_missed(job, due.latest, now, note).await;
        }
        job.update(|r| r.last_fire_ms = r.last_fire_ms.max(due.latest.timestamp_millis()));
        if let Err(e) = self.save(job).await {
            tracing::error!(schedule = %job.config.name, error = %e, "cannot record the schedule's state");
        }
    }

    async fn record_missed(
        &self,
        job: &Job,
        scheduled_for: DateTime<Utc>,
        now: DateTime<Utc>,
        message: String,
    ) {
        let tz = job.cron.timezone();
        let run = RunRecord::new(&job.config, tz, scheduled_for, now, RunTrigger::Schedule).ended(
            RunOutcome::Missed,
            None,
            message,
        );
        self.record(run).await;
    }

    /// One run of `job` for `scheduled_for`.
    async fn fire(
        &self,
        job: &Job,
        scheduled_for: DateTime<Utc>,
        trigger: RunTrigger,
        note: Option<String>,
    ) -> RunRecord {
        let now = self.clock.now();
        let tz = job.cron.timezone();
        let base = RunRecord::new(&job.config, tz, scheduled_for, now, trigger);
        let with_note = |m: String| match &note {
            Some(n) => format!("{n}: {m}"),
            None => m,
        };
        let Ok(_running) = job.running.try_lock() else {
            let message = with_note("a run of this schedule is still in progress".into());
            return self
                .record(base.ended(RunOutcome::SkippedOverlap, None, message))
                .await;
        };
        let previous = job.row().last_task_id;
        if let Some((id, status)) = self.ctx.unfinished_task(previous.as_deref()).await {
            let message = with_note(format!("task {id} of the previous run is still {status}"));
            return self
                .record(base.ended(RunOutcome::SkippedOverlap, Some(id), message))
                .await;
        }
        let run = match job.config.kind {
            ScheduleKind::VerifyReplicas => {
                let (outcome, message) = self.ctx.verify(&job.config.nodes).await;
                base.ended(outcome, None, with_note(message))
            }
            _ => {
                let (outcome, task_id, message) = self
                    .ctx
                    .run_task(&job.config, tz, scheduled_for, trigger, now)
                    .await;
                if let Some(id) = &task_id {
                    job.update(|r| r.last_task_id = Some(id.clone()));
                }
                base.ended(outcome, task_id, with_note(message))
            }
        };
        self.record(run).await
    }

    /// Counts, logs, stores and publishes a run.
    async fn record(&self, run: RunRecord) -> RunRecord {
        metrics::counter!(
            "dms_schedule_runs_total",
            "schedule" => run.schedule.clone(),
            "outcome" => run.outcome.as_str()
        )
        .increment(1);
        match run.outcome {
            RunOutcome::Missed | RunOutcome::Failed | RunOutcome::Diverged => tracing::warn!(
                schedule = %run.schedule, scheduled_for = %run.scheduled_for, outcome = %run.outcome,
                task = run.task_id.as_deref(), message = %run.message, "scheduled run"
            ),
            _ => tracing::info!(
                schedule = %run.schedule, scheduled_for = %run.scheduled_for, outcome = %run.outcome,
                task = run.task_id.as_deref(), message = %run.message, "scheduled run"
            ),
        }
        if let Err(e) = self.store.record_run(&run).await {
            tracing::error!(schedule = %run.schedule, error = %e, "cannot record the run");
        }
        if run.outcome == RunOutcome::Missed {
            self.ctx.alerts.raise(crate::alerts::Alert::missed_run(
                &run.schedule,
                format!("fire time {}: {}", run.scheduled_for, run.message),
            ));
        }
        let _ = self.events.send(run.clone());
        run
    }

    /// Writes the job's state to the state file.
    async fn save(&self, job: &Job) -> Result<(), StateError> {
        let _saving = job.saving.lock().await;
        let row = job.row();
        self.rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.config.name.clone(), row.clone());
        self.store.save(&job.config.name, &row).await
    }

    async fn view(&self, job: &Job, runs: usize) -> ScheduleView {
        let tz = job.cron.timezone();
        let paused = job.paused();
        let next_fires = if paused {
            Vec::new()
        } else {
            let from = self.clock.now().max(job.last_fire());
            job.cron
                .next_fires(from, NEXT_FIRES)
                .into_iter()
                .map(|t| t.fixed_offset())
                .collect()
        };
        let mut recent = match self.store.runs(&job.config.name, runs, tz).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(schedule = %job.config.name, error = %e, "cannot read the run history");
                Vec::new()
            }
        };
        for run in &mut recent {
            if let Some(id) = &run.task_id
                && let Ok(Some(task)) = self.ctx.tasks.tasks().get(id).await
            {
                run.task_status = Some(task.status);
            }
        }
        let c = &job.config;
        let mut params = serde_json::to_value(c).unwrap_or_default();
        if let Some(map) = params.as_object_mut() {
            for key in [
                "name",
                "cron",
                "timezone",
                "kind",
                "enabled",
                "catch_up",
                "skip_non_trading_days",
            ] {
                map.remove(key);
            }
            if c.kind == ScheduleKind::VerifyReplicas {
                map.remove("only_existing");
                map.insert("nodes".into(), serde_json::json!(c.nodes));
            }
        }
        ScheduleView {
            name: c.name.clone(),
            cron: c.cron.clone(),
            timezone: c.timezone.clone(),
            kind: c.kind,
            paused,
            catch_up: c.catch_up,
            skip_non_trading_days: c.skip_non_trading_days,
            params,
            next_fires,
            last_run: recent.first().cloned(),
            recent_runs: if runs > 1 { recent } else { Vec::new() },
        }
    }
}
