//! `verify_node`: proves a replica holds the same bars as the master, or names the buckets
//! where it does not.
//!
//! The master asks the connected replica (over its subscribe stream) for the digest of every
//! series, compares them with its own store's, and for the series that differ asks for their
//! bucket digests and compares bucket by bucket. Both sides answer from digests they keep
//! current as they write, so a verify reads a few rows per series and no bars. It first waits
//! (a bounded time) until the replica has acknowledged everything the master's store holds, so
//! that changes in flight do not show as differences; if writes keep coming, the report says
//! at which cursor the replica was compared.

use std::collections::HashMap;
use std::time::Duration;

use dms_common::journal::{Journal, Seq};
use dms_common::store::digest::compare_buckets;
use dms_common::store::{BucketDigest, Digest, SeriesOverview, SharedStore};
use dms_common::{SeriesKey, pb};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::nodes::{NodeRegistry, VerifyCall, cursor_name};

/// Why a verify could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("node {0:?} is not known")]
    UnknownNode(String),
    #[error("node {0:?} is not connected; a verify needs its subscribe stream")]
    NotConnected(String),
    #[error("node {0:?} did not answer the verify request within {1:?}")]
    NoAnswer(String, Duration),
    #[error("{0}")]
    Master(String),
}

/// One bucket that differs.
#[derive(Debug, Clone, Serialize)]
pub struct DivergedBucket {
    pub symbol: String,
    pub interval: String,
    /// Bucket start, Unix seconds.
    pub start: i64,
    pub master_count: u64,
    pub replica_count: u64,
}

/// What a verify found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub node_id: String,
    /// The replica's cursor when it computed its digests, and the master's store position.
    pub replica_cursor: u64,
    pub master_store_applied: u64,
    /// Whether the replica had acknowledged everything the master's store held.
    pub caught_up: bool,
    pub series_total: usize,
    pub series_equal: usize,
    pub series_diverged: usize,
    pub buckets_compared: u64,
    pub buckets_equal: u64,
    pub buckets_diverged: u64,
    pub bars_master: u64,
    pub bars_replica: u64,
    /// The first differing buckets (at most 1,000).
    pub diverged: Vec<DivergedBucket>,
    pub equal: bool,
    pub elapsed_ms: u64,
}

const MAX_LISTED: usize = 1_000;

/// Verifies node `node_id` against `store`.
pub async fn verify_node(
    nodes: &NodeRegistry,
    journal: &Journal,
    store: &SharedStore,
    store_applied: &watch::Receiver<Seq>,
    node_id: &str,
    catch_up_wait: Duration,
) -> Result<VerifyReport, VerifyError> {
    let started = std::time::Instant::now();
    if !nodes
        .list()
        .await
        .map_err(|e| VerifyError::Master(e.to_string()))?
        .iter()
        .any(|n| n.node_id == node_id)
    {
        return Err(VerifyError::UnknownNode(node_id.to_owned()));
    }
    let caught_up = wait_caught_up(journal, store_applied, node_id, catch_up_wait).await;
    let master_store_applied = store_applied.borrow().0;
    let answer_wait = Duration::from_secs(60);
    let report = ask(nodes, node_id, Vec::new(), answer_wait).await?;
    let master = store
        .overview()
        .await
        .map_err(|e| VerifyError::Master(e.to_string()))?;
    let replica: HashMap<SeriesKey, Digest> = report
        .series
        .iter()
        .filter_map(|s| SeriesOverview::try_from(s).ok())
        .map(|o| (o.key, o.digest))
        .collect();
    let master_map: HashMap<SeriesKey, Digest> =
        master.iter().map(|o| (o.key.clone(), o.digest)).collect();
    let mut differing: Vec<SeriesKey> = master
        .iter()
        .filter(|o| replica.get(&o.key) != Some(&o.digest))
        .map(|o| o.key.clone())
        .collect();
    differing.extend(
        replica
            .keys()
            .filter(|k| !master_map.contains_key(*k))
            .cloned(),
    );
    let mut out = VerifyReport {
        node_id: node_id.to_owned(),
        replica_cursor: report.cursor,
        master_store_applied,
        caught_up,
        series_total: master_map
            .keys()
            .chain(replica.keys())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        series_equal: 0,
        series_diverged: differing.len(),
        buckets_compared: 0,
        buckets_equal: 0,
        buckets_diverged: 0,
        bars_master: master.iter().map(|o| o.count).sum(),
        bars_replica: replica.values().map(|d| d.count).sum(),
        diverged: Vec::new(),
        equal: differing.is_empty(),
        elapsed_ms: 0,
    };
    out.series_equal = out.series_total - out.series_diverged;
    // Equal series: every bucket is equal; count them from the master's own digests.
    for o in &master {
        if !differing.contains(&o.key) {
            let n = store
                .bucket_digests(&o.key, dms_common::TimeRange::all())
                .await
                .map_err(|e| VerifyError::Master(e.to_string()))?
                .len() as u64;
            out.buckets_compared += n;
            out.buckets_equal += n;
        }
    }
    if !differing.is_empty() {
        let detail = ask(nodes, node_id, differing.clone(), answer_wait).await?;
        let theirs: HashMap<SeriesKey, Vec<BucketDigest>> = detail
            .buckets
            .iter()
            .filter_map(|s| {
                let key = SeriesKey::try_from(s.series.as_ref()?).ok()?;
                Some((key, s.buckets.iter().map(BucketDigest::from).collect()))
            })
            .collect();
        for key in &differing {
            let ours = store
                .bucket_digests(key, dms_common::TimeRange::all())
                .await
                .map_err(|e| VerifyError::Master(e.to_string()))?;
            let empty = Vec::new();
            let theirs = theirs.get(key).unwrap_or(&empty);
            for (start, (m, r)) in compare_buckets(&ours, theirs) {
                let start = start.0;
                out.buckets_compared += 1;
                if m == r {
                    out.buckets_equal += 1;
                } else {
                    out.buckets_diverged += 1;
                    if out.diverged.len() < MAX_LISTED {
                        out.diverged.push(DivergedBucket {
                            symbol: key.symbol.as_str().to_owned(),
                            interval: key.interval.as_str().to_owned(),
                            start,
                            master_count: m.count,
                            replica_count: r.count,
                        });
                    }
                }
            }
        }
    }
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

async fn wait_caught_up(
    journal: &Journal,
    store_applied: &watch::Receiver<Seq>,
    node_id: &str,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let name = cursor_name(node_id);
    loop {
        let applied = *store_applied.borrow();
        let cursor = journal.cursor(&name).await.ok().flatten().map(|c| c.seq);
        if cursor.is_some_and(|c| c >= applied) && applied >= journal.head() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ask(
    nodes: &NodeRegistry,
    node_id: &str,
    bucket_series: Vec<SeriesKey>,
    wait: Duration,
) -> Result<pb::VerifyReport, VerifyError> {
    let channel = nodes
        .verify_channel(node_id)
        .ok_or_else(|| VerifyError::NotConnected(node_id.to_owned()))?;
    let (reply, answer) = oneshot::channel();
    let call = VerifyCall {
        request: pb::VerifyRequest {
            request_id: 0,
            bucket_series: bucket_series.iter().map(pb::SeriesKey::from).collect(),
        },
        reply,
    };
    match channel.send_timeout(call, wait).await {
        Ok(()) => {}
        Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
            return Err(VerifyError::NoAnswer(node_id.to_owned(), wait));
        }
        Err(mpsc::error::SendTimeoutError::Closed(_)) => {
            return Err(VerifyError::NotConnected(node_id.to_owned()));
        }
    }
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(VerifyError::NotConnected(node_id.to_owned())),
        Err(_) => Err(VerifyError::NoAnswer(node_id.to_owned(), wait)),
    }
}
