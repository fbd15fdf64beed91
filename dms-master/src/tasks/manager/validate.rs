//! The validate task: every stored bar of a series read page by page and held to the quality
//! rules; breaks are counted and the first few logged.

use dms_common::{TimeRange, Timestamp};
use futures::TryStreamExt;

use super::TaskManager;
use crate::pipeline::update::{SeriesCounts, SeriesError, SeriesOutcome};
use crate::pipeline::validate::Validator;
use crate::universe::UniverseEntry;

impl TaskManager {
    pub(super) async fn validate_stored(&self, entry: &UniverseEntry) -> SeriesOutcome {
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
                Err(e) => return SeriesOutcome::Failed(SeriesError::store(&entry.key, e)),
            }
        }
        SeriesOutcome::Done(counts)
    }
}
