//! The update and range-import tasks: which range of a series to fetch (from the last stored
//! bar, `tasks.refetch_bars` back, or the task's dates), handed to the update pipeline.

use dms_common::journal::Origin;
use dms_common::{TimeRange, Timestamp};

use super::TaskManager;
use crate::pipeline::update::{SeriesError, SeriesOutcome, UpdateRequest};
use crate::tasks::{Task, TaskKind};
use crate::universe::UniverseEntry;

impl TaskManager {
    /// Brings one series of an update or a range import up to date.
    pub(super) async fn update(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
        let now = Timestamp::now();
        let horizon = Timestamp(entry.key.interval.next(now).0 + 1);
        let latest = match self.ctx.store.latest(&entry.key).await {
            Ok(l) => l,
            Err(e) => return SeriesOutcome::Failed(SeriesError::store(&entry.key, e)),
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
        self.fetch_range(task, entry, range, latest.is_some(), None)
            .await
    }

    /// Fetches `range` of the series and journals what differs from the store; the times of
    /// the bars the provider answered with go to `answered` when given.
    pub(super) async fn fetch_range(
        &self,
        task: &Task,
        entry: &UniverseEntry,
        range: TimeRange,
        had_data: bool,
        answered: Option<&mut Vec<Timestamp>>,
    ) -> SeriesOutcome {
        let origin = Origin {
            task_id: task.id.clone(),
            source: entry.source.name().to_owned(),
        };
        let request = UpdateRequest {
            key: &entry.key,
            source: &entry.source,
            range,
            had_data,
            check_history_actions: task.kind == TaskKind::IncrementalUpdate,
            origin: &origin,
        };
        self.updater
            .update(request, &self.writes(task), answered)
            .await
    }
}
