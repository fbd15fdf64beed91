//! `Reconciler`: compares the bars a source delivered with what the store holds, so that only
//! new or changed bars reach the journal. An update right after an import, or a restart that
//! reads the same CSV files again, journals nothing (and sends nothing to replicas).

use std::collections::HashMap;
use std::time::Duration;

use dms_common::journal::Seq;
use dms_common::store::SharedStore;
use dms_common::{Bar, SeriesKey, TimeRange, Timestamp};
use futures::TryStreamExt;
use tokio::sync::watch;

use crate::pipeline::ingest::Ingestor;

/// Compares delivered bars with the store.
#[derive(Debug, Clone)]
pub struct Reconciler {
    /// The ingestor that journals what this comparison lets through: it knows the last entry
    /// of each series, which the store must have applied before it is compared.
    pub ingestor: Ingestor,
    pub store: SharedStore,
    /// The last journal seq the store applied.
    pub applied: watch::Receiver<Seq>,
}

impl Reconciler {
    /// The bars of `bars` (sorted by ts) that the store does not hold with the same values.
    /// If the store cannot be read, every bar (journaling one twice changes nothing).
    pub async fn changed(&self, key: &SeriesKey, bars: &[Bar]) -> Vec<Bar> {
        self.keep(key, bars, |stored, b| {
            stored.is_none_or(|s| !s.same_values(b))
        })
        .await
    }

    /// The bars of `bars` (sorted by ts) at times the store holds no bar for (an import that
    /// keeps stored bars). If the store cannot be read, every bar.
    pub async fn missing(&self, key: &SeriesKey, bars: &[Bar]) -> Vec<Bar> {
        self.keep(key, bars, |stored, _| stored.is_none()).await
    }

    /// The bars `keep` lets through, given the stored bar at each one's time.
    async fn keep(
        &self,
        key: &SeriesKey,
        bars: &[Bar],
        keep: impl Fn(Option<&Bar>, &Bar) -> bool,
    ) -> Vec<Bar> {
        match self.stored(key, bars).await {
            Some(stored) => bars
                .iter()
                .filter(|b| keep(stored.get(&b.ts.0), b))
                .copied()
                .collect(),
            None => bars.to_vec(),
        }
    }

    /// The bars of `bars` that [`Reconciler::stored`] says differ from (or are missing in)
    /// `stored`; every bar when the store could not be read.
    pub fn changed_from(stored: Option<&HashMap<i64, Bar>>, bars: &[Bar]) -> Vec<Bar> {
        match stored {
            Some(stored) => bars
                .iter()
                .filter(|b| stored.get(&b.ts.0).is_none_or(|s| !s.same_values(b)))
                .copied()
                .collect(),
            None => bars.to_vec(),
        }
    }

    /// The stored bars of `key` over the span of `bars`, by time, once the store applied the
    /// series' last journaled entry; None when the store cannot be read.
    pub async fn stored(&self, key: &SeriesKey, bars: &[Bar]) -> Option<HashMap<i64, Bar>> {
        let (Some(first), Some(last)) = (
            bars.iter().map(|b| b.ts).min(),
            bars.iter().map(|b| b.ts).max(),
        ) else {
            return Some(HashMap::new());
        };
        // Compare against a store that has applied this series' last entry (waiting for the
        // whole journal would hold every series up behind the others). It normally has within
        // milliseconds; with the store down, compare with what it holds: bars journaled but not
        // applied yet are journaled again, which upserts make harmless.
        if let Some(last) = self.ingestor.last_journaled(key) {
            let mut applied = self.applied.clone();
            let _ =
                tokio::time::timeout(Duration::from_millis(500), applied.wait_for(|s| *s >= last))
                    .await;
        }
        let range = TimeRange::new(first, Timestamp(last.0 + 1));
        let mut stored: HashMap<i64, Bar> = HashMap::new();
        let mut pages = self.store.read(key, range);
        loop {
            match pages.try_next().await {
                Ok(Some(page)) => stored.extend(page.into_iter().map(|b| (b.ts.0, b))),
                Ok(None) => return Some(stored),
                Err(_) => return None,
            }
        }
    }
}
