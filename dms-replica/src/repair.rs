//! Digest repair: make the replica's store equal to the master's, moving only what differs.
//!
//! Top down, as in Merkle anti-entropy: the master's `ListSeries` gives every series with its
//! digest; a series whose digest equals the local one costs nothing more. For the others the
//! bucket digests are compared (`Digests`, many series per call), and each run of adjacent
//! differing buckets is pulled (`PullRange`) and written with
//! [`BarStore::replace_range`](dms_common::store::BarStore::replace_range): the range is made
//! exactly what the master holds, so stale bars and stale optional fields go. Series the master
//! does not have are removed.
//!
//! Pulled data comes from the master's store at or after the point the repair began, so a
//! replica that resumes the stream from the master's applied seq read before the repair
//! (`resume_after`) ends up exactly at the master's state: later changes are re-applied in
//! order on top, idempotently.

use std::collections::HashMap;

use dms_common::SeriesKey;
use dms_common::pb;
use dms_common::store::digest::{DIGEST_VERSION, differing_buckets};
use dms_common::store::{BucketDigest, Digest, DigestBucketing, SeriesOverview, SharedStore};
use dms_common::{Bar, TimeRange, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::client::MasterClient;
use crate::state::RepairRecord;

/// Counts a finished repair in the metrics (`trigger`: `required` or `anti_entropy`).
pub fn counted(trigger: &'static str, record: &RepairRecord) {
    metrics::counter!("dms_replica_repairs_total", "trigger" => trigger).increment(1);
    metrics::counter!("dms_replica_repair_buckets_pulled_total").increment(record.buckets_pulled);
}

/// Series per `Digests` call.
const DIGEST_CHUNK: usize = 200;
/// Most bars pulled into one `replace_range` (adjacent buckets are merged up to this).
const MAX_PULL_BARS: u64 = 200_000;

/// Why a repair stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("the master refused a repair call: {0}")]
    Master(#[from] tonic::Status),
    #[error("the replica's store failed: {0}")]
    Store(#[from] dms_common::store::StoreError),
    #[error("the master sent a bad message: {0}")]
    Protocol(String),
    #[error("stopped by shutdown")]
    Stopped,
    #[error("{range} holds more than {max_bars} bars; pull a shorter range")]
    TooLarge { range: String, max_bars: usize },
}

/// What a repair did and where the master stood when it began.
#[derive(Debug, Clone)]
pub struct RepairOutcome {
    pub record: RepairRecord,
    pub master_history: String,
    /// The master's store held every journal entry up to this seq when the listing was read.
    pub master_store_applied: u64,
}

/// Repairs `store` against the master; `reason` is recorded with it.
pub async fn repair(
    client: &mut MasterClient,
    store: &SharedStore,
    reason: &str,
    stop: &CancellationToken,
) -> Result<RepairOutcome, RepairError> {
    let mut record = RepairRecord {
        reason: reason.to_owned(),
        started_ms: chrono::Utc::now().timestamp_millis(),
        ..RepairRecord::default()
    };
    let list = client
        .list_series(pb::ListSeriesRequest {})
        .await?
        .into_inner();
    if list.digest_version != u32::from(DIGEST_VERSION) {
        return Err(RepairError::Protocol(format!(
            "the master computes digest version {}, this replica {DIGEST_VERSION}",
            list.digest_version
        )));
    }
    let master: HashMap<SeriesKey, SeriesOverview> = list
        .series
        .iter()
        .map(|s| SeriesOverview::try_from(s).map(|o| (o.key.clone(), o)))
        .collect::<Result<_, _>>()
        .map_err(|e| RepairError::Protocol(e.to_string()))?;
    let local: HashMap<SeriesKey, Digest> = store
        .overview()
        .await?
        .into_iter()
        .map(|o| (o.key, o.digest))
        .collect();
    record.series_compared = master.len().max(local.len()) as u64;

    for key in local.keys().filter(|k| !master.contains_key(*k)) {
        store.delete(key, TimeRange::all()).await?;
        record.series_removed += 1;
    }
    let mut differing: Vec<&SeriesOverview> = master
        .values()
        .filter(|o| local.get(&o.key) != Some(&o.digest))
        .collect();
    differing.sort_by(|a, b| a.key.cmp(&b.key));
    record.series_differing = differing.len() as u64 + record.series_removed;
    tracing::info!(
        reason,
        series = master.len(),
        differing = differing.len(),
        removed = record.series_removed,
        "repair: series compared"
    );
    for chunk in differing.chunks(DIGEST_CHUNK) {
        if stop.is_cancelled() {
            return Err(RepairError::Stopped);
        }
        let response = client
            .digests(pb::DigestsRequest {
                series: chunk.iter().map(|o| pb::SeriesKey::from(&o.key)).collect(),
                range: None,
            })
            .await?
            .into_inner();
        for theirs in &response.series {
            let key = theirs
                .series
                .as_ref()
                .ok_or_else(|| RepairError::Protocol("digests without a series".into()))
                .and_then(|k| {
                    SeriesKey::try_from(k).map_err(|e| RepairError::Protocol(e.to_string()))
                })?;
            let theirs: Vec<BucketDigest> = theirs.buckets.iter().map(BucketDigest::from).collect();
            let ours = store.bucket_digests(&key, TimeRange::all()).await?;
            let all = dms_common::store::digest::compare_buckets(&ours, &theirs);
            record.buckets_compared += all.len() as u64;
            let starts = differing_buckets(&ours, &theirs);
            let counts: HashMap<Timestamp, u64> =
                theirs.iter().map(|b| (b.start, b.digest.count)).collect();
            for range in merge_runs(&key, &starts, &counts) {
                if stop.is_cancelled() {
                    return Err(RepairError::Stopped);
                }
                let bars = pull(client, &key, range, MAX_PULL_BARS as usize * 2).await?;
                record.bars_pulled += bars.len() as u64;
                store.replace_range(&key, range, bars).await?;
            }
            record.buckets_pulled += starts.len() as u64;
        }
    }
    record.finished_ms = chrono::Utc::now().timestamp_millis();
    tracing::info!(
        reason,
        buckets_compared = record.buckets_compared,
        buckets_pulled = record.buckets_pulled,
        bars_pulled = record.bars_pulled,
        ms = record.finished_ms - record.started_ms,
        "repair finished"
    );
    Ok(RepairOutcome {
        record,
        master_history: list.history_id,
        master_store_applied: list.store_applied,
    })
}

/// Joins adjacent differing buckets into ranges of at most [`MAX_PULL_BARS`] bars (by the
/// master's counts).
fn merge_runs(
    key: &SeriesKey,
    starts: &[Timestamp],
    counts: &HashMap<Timestamp, u64>,
) -> Vec<TimeRange> {
    let bucketing = DigestBucketing::for_interval(key.interval);
    let mut out: Vec<(TimeRange, u64)> = Vec::new();
    for &s in starts {
        let r = bucketing.range_of(s);
        let n = counts.get(&s).copied().unwrap_or(0);
        match out.last_mut() {
            Some((last, bars)) if last.end == r.start && *bars + n <= MAX_PULL_BARS => {
                last.end = r.end;
                *bars += n;
            }
            _ => out.push((r, n)),
        }
    }
    out.into_iter().map(|(r, _)| r).collect()
}

/// Every bar the master holds for `key` in `range`; more than `max_bars` is an error (the
/// caller asked for too large a range to hold in memory at once).
pub async fn pull(
    client: &mut MasterClient,
    key: &SeriesKey,
    range: TimeRange,
    max_bars: usize,
) -> Result<Vec<Bar>, RepairError> {
    let mut stream = client
        .pull_range(pb::PullRangeRequest {
            series: Some(key.into()),
            range: Some(range.into()),
            page_size: 0,
        })
        .await?
        .into_inner();
    let mut bars = Vec::new();
    while let Some(page) = stream.message().await? {
        bars.extend(page.bars.iter().map(Bar::from));
        if bars.len() > max_bars {
            return Err(RepairError::TooLarge {
                range: format!("{key} in {range}"),
                max_bars,
            });
        }
    }
    if let Some(b) = bars.iter().find(|b| !range.contains(b.ts)) {
        return Err(RepairError::Protocol(format!(
            "PullRange for {key} in {range} returned a bar at {}",
            b.ts
        )));
    }
    Ok(bars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dms_common::{Interval, Symbol};

    #[test]
    fn adjacent_buckets_merge_up_to_the_pull_limit() {
        let key = SeriesKey::new(Symbol::new("X").unwrap(), Interval::D1);
        let w = DigestBucketing::for_interval(Interval::D1).width_secs;
        let starts = [0, 1, 2, 5, 6].map(|i| Timestamp(i * w));
        let counts: HashMap<Timestamp, u64> = starts.iter().map(|s| (*s, 60)).collect();
        let runs = merge_runs(&key, &starts, &counts);
        assert_eq!(
            runs,
            [
                TimeRange::new(Timestamp(0), Timestamp(3 * w)),
                TimeRange::new(Timestamp(5 * w), Timestamp(7 * w)),
            ]
        );
        let big: HashMap<Timestamp, u64> = starts.iter().map(|s| (*s, MAX_PULL_BARS)).collect();
        assert_eq!(merge_runs(&key, &starts, &big).len(), 5);
    }
}
