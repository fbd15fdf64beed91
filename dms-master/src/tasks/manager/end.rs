//! A task's end: its status and message from how it ran, the alerts it raises, and the end
//! written to the task store (kept in memory and written again while that fails).

use super::{Run, Stop, TaskManager, progress_of, rates_note};
use crate::alerts::Alert;
use crate::pipeline::durable::{self, WriteWatch};
use crate::tasks::store::Unsaved;
use crate::tasks::{Task, TaskCounters, TaskKind, TaskStatus};

impl TaskManager {
    /// Records how the task ended: `result` of its run begun at `first_started_ms` (an
    /// earlier run of the master's, for a resumed task).
    pub(super) async fn end(
        &self,
        task: &Task,
        run: &Run,
        first_started_ms: i64,
        result: Result<TaskCounters, (Stop, TaskCounters)>,
    ) {
        let id = task.id.clone();
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
                self.judge_provider(task, &counters);
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
            durable::until_written(&Unheard, "the task's end", || {
                store.finish(&id, status, message.clone(), error.clone(), &counters)
            })
            .await;
            tracing::info!(task = %id, "the task's end is saved");
        });
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
                .select(&task.params.selection())
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
}

/// The writes of a task's end after the first failure, which the task store already shows
/// from memory: nobody else to tell.
struct Unheard;

impl WriteWatch for Unheard {
    fn paused(&self, _reason: &str, _first: bool) {}
    fn resumed(&self, _what: &str) {}
}
