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
//! tries the write again with a growing delay ([`durable::WRITE_RETRY_MAX`] at most) while the task is
//! shown `paused` with the reason; it goes on by itself once the disk takes writes again.
//!
//! # Layout
//!
//! - this module: [`TaskManager`], the queue and the runner (one task at a time, its end
//!   recorded by `end`); `context`: what it works with; `submit`: queuing a checked request.
//! - `series`: tasks over the kept series, up to `tasks.concurrency` at once, each checkpointed,
//!   with a second pass; per series `update` (a range handed to `pipeline::update`),
//!   `backfill` (the gaps) or `validate` (the stored bars).
//! - `import`: a CSV source, a SQL table, a file; `backups`: write, verify, restore, check
//!   against a backup; `migrate`: copy to a target store and compare.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::store::{TaskStore, TaskStoreError, Unsaved};
use super::{Task, TaskCounters, TaskKind, TaskStatus};
use crate::pipeline::durable::{self, WriteWatch};
use crate::pipeline::reconcile::Reconciler;
use crate::pipeline::update::Updater;
use crate::sources::sql::SqlTable;
use crate::universe::Universe;

mod backfill;
mod backups;
mod context;
mod end;
mod import;
mod migrate;
mod series;
mod submit;
mod update;
mod validate;

pub use context::{TaskContext, TaskFiles};
pub use submit::SubmitError;

/// The task queue.
#[derive(Debug)]
pub struct TaskManager {
    ctx: TaskContext,
    /// The update pipeline, for the update, range-import and backfill tasks.
    updater: Updater,
    wake: Notify,
    /// Held by whatever imports or updates: one at a time, tasks and the start-up import alike.
    gate: tokio::sync::Mutex<()>,
    running: Mutex<Option<(String, CancellationToken)>>,
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
        let updater = Updater {
            store: ctx.store.clone(),
            catalog: ctx.catalog.clone(),
            ingestor: ctx.ingestor.clone(),
            reconciler: Reconciler {
                ingestor: ctx.ingestor.clone(),
                store: ctx.store.clone(),
                applied: ctx.applied.clone(),
            },
            default_history: ctx.config.default_history.0,
            actions_check_interval: ctx.config.actions_check_interval.0,
        };
        Arc::new(TaskManager {
            updater,
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
        self.end(&task, &run, first_started_ms, result).await;
    }

    /// Runs `write` until it succeeds, showing the task `paused` with the reason meanwhile.
    /// Ends only by succeeding (the caller's `select!` drops it on cancel or shutdown).
    async fn until_written<T, E: std::fmt::Display, Fut>(
        &self,
        task: &Task,
        what: &str,
        write: impl FnMut() -> Fut,
    ) -> T
    where
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        durable::until_written(&self.writes(task), what, write).await
    }

    /// Runs the task by its kind; returns the final counters or why it stopped.
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
        self.run_series(task, run, counters, (cancel, shutdown))
            .await
    }

    /// Compares delivered bars with the store, for what the ingestor journals.
    pub fn reconciler(&self) -> Reconciler {
        self.updater.reconciler.clone()
    }

    /// Where backups are written.
    pub fn backup_dir(&self) -> &std::path::Path {
        &self.ctx.files.backup_dir
    }

    /// The SQL-table source named `name`.
    pub fn sql_source(&self, name: &str) -> Option<&SqlTable> {
        self.ctx.tables.get(name)
    }

    /// Records the task's progress (a failure to is logged: the next report tries again).
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

impl TaskManager {
    /// `task` as the watch of its writes.
    fn writes<'a>(&'a self, task: &'a Task) -> TaskWrites<'a> {
        TaskWrites {
            tasks: &self.ctx.tasks,
            id: &task.id,
        }
    }
}

/// The running task as the [`WriteWatch`] of its writes: shown `paused` with the reason while
/// they fail.
struct TaskWrites<'a> {
    tasks: &'a TaskStore,
    id: &'a str,
}

impl WriteWatch for TaskWrites<'_> {
    fn paused(&self, reason: &str, first: bool) {
        if first {
            tracing::error!(task = %self.id, %reason, "task paused until writes succeed");
        }
        self.tasks.keep_unsaved(
            self.id,
            Unsaved {
                status: TaskStatus::Paused,
                message: format!("paused: {reason}; it goes on by itself once writes succeed"),
                error: Some(reason.to_owned()),
                counters: None,
                completed_at_ms: None,
            },
        );
    }

    fn resumed(&self, what: &str) {
        tracing::info!(task = %self.id, "{what}: writes succeed again; the task goes on");
        self.tasks.saved(self.id);
    }
}
