//! How far each replica is behind: its cursor's distance from the journal's head, in entries
//! and in the age of the oldest entry it has not acknowledged.

use dms_common::journal::Journal;

use crate::metrics::{Lag, lag_of};
use crate::replication::nodes::{NodeRegistry, NodeState, cursor_name};

/// A replica's lag as the master sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaLag {
    pub node: String,
    pub connected: bool,
    pub lag: Lag,
}

/// Every registered replica's lag (from its journal cursor; a replica without one, e.g. told
/// to repair before it registered, is left out).
pub async fn replica_lags(journal: &Journal, nodes: &NodeRegistry) -> Vec<ReplicaLag> {
    let list = match nodes.list().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the replicas for their lag");
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for n in list {
        let Ok(Some(cursor)) = journal.cursor(&cursor_name(&n.node_id)).await else {
            continue;
        };
        out.push(ReplicaLag {
            connected: !matches!(n.state, NodeState::Disconnected),
            lag: lag_of(journal, cursor.seq).await,
            node: n.node_id,
        });
    }
    out
}
