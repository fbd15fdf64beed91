//! The watcher: every `alerts.check_interval` it checks the state conditions and raises or
//! resolves their alerts.
//!
//! - `replica_lag:<node>`: a registered replica whose oldest unacknowledged journal entry is
//!   older than `rules.replica_lag` (connected or not: a replica that is down falls behind).
//! - `store_error`: the store does not answer its check (as `/readyz` reports), journal appends
//!   fail, or the store applier retried failing writes since the last check.

use dms_common::journal::Journal;
use dms_common::store::SharedStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, Alerts};
use crate::pipeline::applier::StatusCell;
use crate::replication::lag::replica_lags;
use crate::replication::nodes::NodeRegistry;

/// What the watcher looks at.
#[derive(Debug, Clone)]
pub struct Watched {
    pub journal: Journal,
    pub nodes: NodeRegistry,
    pub store: SharedStore,
    pub applier: StatusCell,
}

/// Starts the watcher; it stops when `stop` fires.
pub fn spawn(alerts: Alerts, watched: Watched, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut retries_seen = watched.applier.get().retries;
        loop {
            let every = alerts.config().check_interval.0;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            // A check waiting on a store that does not answer must not hold up shutdown.
            let checks = async {
                check_replicas(&alerts, &watched).await;
                check_store(&alerts, &watched, &mut retries_seen).await;
            };
            tokio::select! {
                _ = checks => {}
                _ = stop.cancelled() => return,
            }
        }
    })
}

async fn check_replicas(alerts: &Alerts, w: &Watched) {
    let threshold = alerts.config().replica_lag_threshold();
    let lags = replica_lags(&w.journal, &w.nodes).await;
    for r in &lags {
        let key = format!("replica_lag:{}", r.node);
        match threshold {
            Some(t) if r.lag.seconds > t.as_secs_f64() => alerts.raise(Alert::replica_lag(
                &r.node,
                r.lag.seconds,
                r.lag.entries,
                t.as_secs_f64(),
            )),
            _ => alerts.resolve(&key),
        }
    }
    // A replica that was forgotten is no longer behind.
    for key in alerts.active_keys() {
        if let Some(node) = key.strip_prefix("replica_lag:")
            && !lags.iter().any(|r| r.node == node)
        {
            alerts.resolve(&key);
        }
    }
}

async fn check_store(alerts: &Alerts, w: &Watched, retries_seen: &mut u64) {
    let mut problems = Vec::new();
    if let Err(e) = w.store.check().await {
        problems.push(format!("the store does not answer: {e}"));
    }
    if let Some(e) = w.journal.append_error() {
        problems.push(format!("journal appends fail: {e}"));
    }
    let applier = w.applier.get();
    if applier.retries > *retries_seen
        && let Some(e) = &applier.last_error
    {
        problems.push(format!(
            "store writes failing ({} retries since the last check; the data waits in the journal): {e}",
            applier.retries - *retries_seen
        ));
    }
    *retries_seen = applier.retries;
    if problems.is_empty() {
        alerts.resolve("store_error");
    } else {
        alerts.raise(Alert::store_error(problems.join("\n")));
    }
}
