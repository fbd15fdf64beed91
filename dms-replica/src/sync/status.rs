//! The replica's view of its link to the master, as `/api/replica/status` shows it.
//!
//! [`LinkState`] says where the link stands, [`ReplicaStatus`] holds every figure shown, and
//! [`StatusCell`] shares them between the replication loop, which writes, and the HTTP API,
//! which reads.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::state::RepairRecord;

/// The link to the master as the replica sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Connecting,
    Repairing,
    CatchingUp,
    InSync,
    Disconnected,
}

/// What `/api/replica/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaStatus {
    pub node_id: String,
    pub master: String,
    pub state: LinkState,
    pub history_id: String,
    pub cursor: u64,
    /// The master's journal head, as last heard.
    pub master_head: u64,
    pub lag_seq: u64,
    /// How old the newest applied change was when the replica was last behind (0 in sync).
    pub lag_seconds: f64,
    pub needs_repair: bool,
    pub repair_reason: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub last_contact_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_repair: Option<RepairRecord>,
    pub sessions: u64,
    pub batches_applied: u64,
    pub bars_applied: u64,
}

/// The shared, readable status.
#[derive(Debug, Clone, Default)]
pub struct StatusCell(Arc<Mutex<ReplicaStatus>>);

impl StatusCell {
    /// A snapshot.
    pub fn get(&self) -> ReplicaStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
