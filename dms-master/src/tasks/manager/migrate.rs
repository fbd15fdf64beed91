//! The migrate and check tasks: every series of the store copied into a target store, resuming
//! past the series already copied, then the two stores compared (a check does only this).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dms_common::SeriesKey;
use tokio_util::sync::CancellationToken;

use super::{Run, Stop, TaskManager};
use crate::tasks::store::Checkpoint;
use crate::tasks::{Task, TaskCounters, TaskKind};

impl TaskManager {
    /// Copies every series of the store into the task's target store (a migration), resuming
    /// past the series already copied, then compares the two stores (a check does only this).
    /// A migration whose check finds differences fails; a check reports them and completes.
    pub(super) async fn migrate_or_check(
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
            let mut batches = crate::data::migrate::read_ahead(self.ctx.store.clone(), keys);
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
        let report = match crate::data::consistency::compare(&*self.ctx.store, &*target, 1000).await
        {
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

    /// The series (symbol, interval) an earlier run of task `id` checkpointed as done.
    pub(super) async fn done_series(&self, id: &str) -> HashSet<(String, String)> {
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
}
