//! The backfill task: each gap of a series fetched; sessions the provider answered with no bar
//! remembered (provider-missing) and not asked for again until `tasks.provider_missing_retry`.

use dms_common::Timestamp;

use super::TaskManager;
use crate::pipeline::update::{SeriesCounts, SeriesError, SeriesOutcome};
use crate::tasks::Task;
use crate::universe::UniverseEntry;
use crate::universe::gaps;

impl TaskManager {
    /// Fetches each gap of the series. Sessions the provider answered with no bar are
    /// remembered and not asked for again until `tasks.provider_missing_retry` has passed.
    pub(super) async fn backfill(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
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
                Err(e) => return SeriesOutcome::Failed(SeriesError::catalog(key, e)),
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
            Err(e) => return SeriesOutcome::Failed(SeriesError::store(key, e)),
        };
        let mut total = SeriesCounts {
            gaps: report.gaps.len() as u64,
            ..Default::default()
        };
        for gap in &report.gaps {
            let mut answered = Vec::new();
            match self
                .fetch_range(task, entry, gap.range(), true, Some(&mut answered))
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
}
