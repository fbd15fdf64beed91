//! `NodeRegistry`: the replicas the master knows, their live state and their sync history.
//!
//! A node is registered at its first `Hello` and kept in the state file (`replica_nodes`) until
//! an operator forgets it. Each subscribe session is a row of `replica_sessions`: when it began
//! and ended, the seq range sent and acknowledged, batches, bars and bytes, repairs the replica
//! reported, and why it ended. The live part (state, lag, the open session's counters, the
//! channel to ask the replica for a verify) is kept in memory, published by the session that
//! owns it; a session only ever touches the live entry while it is the node's current session.
//! A new session of a node ends the one before it (a replica that reconnected before the
//! master noticed its old link died), and forgetting a node ends its session.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dms_common::pb;
use dms_common::state::{StateError, StateTables};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS replica_nodes (
    node_id         TEXT PRIMARY KEY,
    http_address    TEXT,
    first_seen_ms   INTEGER NOT NULL,
    last_contact_ms INTEGER NOT NULL,
    state           TEXT NOT NULL,
    last_error      TEXT
);
CREATE TABLE IF NOT EXISTS replica_sessions (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id          TEXT NOT NULL,
    connected_ms     INTEGER NOT NULL,
    disconnected_ms  INTEGER,
    start_seq        INTEGER NOT NULL,
    last_sent_seq    INTEGER NOT NULL,
    last_acked_seq   INTEGER NOT NULL,
    batches          INTEGER NOT NULL DEFAULT 0,
    bars             INTEGER NOT NULL DEFAULT 0,
    bytes            INTEGER NOT NULL DEFAULT 0,
    repair_reason    TEXT,
    repair_json      TEXT,
    end_reason       TEXT
);
CREATE INDEX IF NOT EXISTS replica_sessions_by_node ON replica_sessions (node_id, id);
CREATE TABLE IF NOT EXISTS replication_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// How a replica stands, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Subscribed, and behind the journal head.
    CatchingUp,
    /// Subscribed, with everything acknowledged.
    InSync,
    /// Told to repair; not subscribed until it has.
    Repairing,
    /// No open session.
    Disconnected,
}

impl NodeState {
    fn as_str(self) -> &'static str {
        match self {
            NodeState::CatchingUp => "catching_up",
            NodeState::InSync => "in_sync",
            NodeState::Repairing => "repairing",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// The counters of one session.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionStats {
    pub id: i64,
    pub connected_ms: i64,
    pub disconnected_ms: Option<i64>,
    pub start_seq: u64,
    pub last_sent_seq: u64,
    pub last_acked_seq: u64,
    pub batches: u64,
    pub bars: u64,
    pub bytes: u64,
    /// Why the master told the replica to repair in this session.
    pub repair_reason: Option<String>,
    /// The repair the replica reported at the start of this session.
    pub repair: Option<serde_json::Value>,
    pub end_reason: Option<String>,
}

/// A request to a connected replica for its digests.
#[derive(Debug)]
pub struct VerifyCall {
    pub request: pb::VerifyRequest,
    pub reply: oneshot::Sender<pb::VerifyReport>,
}

/// A replica as the master knows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub http_address: Option<String>,
    pub state: NodeState,
    pub first_seen_ms: i64,
    pub last_contact_ms: i64,
    pub last_error: Option<String>,
    /// The replica's journal cursor (last acknowledged seq), if registered.
    pub cursor: Option<u64>,
    /// Journal entries after the cursor.
    pub lag_seq: u64,
    /// Age of the oldest change the replica has not acknowledged, in seconds.
    pub lag_seconds: f64,
    pub needs_repair: bool,
    pub repair_reason: Option<String>,
    /// The open session, if connected.
    pub session: Option<SessionStats>,
}

#[derive(Debug)]
struct Live {
    state: NodeState,
    session: Option<SessionStats>,
    /// Since when the node has been behind the journal head (Unix ms), if it is.
    behind_since_ms: Option<i64>,
    verify: Option<mpsc::Sender<VerifyCall>>,
    /// Ends the open session.
    cancel: Option<CancellationToken>,
}

/// The registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeRegistry {
    tables: StateTables,
    live: Arc<Mutex<HashMap<String, Live>>>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl NodeRegistry {
    /// Opens the registry tables in the state file.
    pub fn open(path: &Path) -> Result<NodeRegistry, StateError> {
        Ok(NodeRegistry {
            tables: StateTables::open(path, "replica nodes", SCHEMA)?,
            live: Arc::default(),
        })
    }

    /// Registers (or refreshes) a node and opens a session for it, ending the node's previous
    /// session if one is still open; returns the new session's stats (with its id).
    pub async fn session_started(
        &self,
        node_id: &str,
        http_address: &str,
        start_seq: u64,
        repair: Option<serde_json::Value>,
        verify: mpsc::Sender<VerifyCall>,
        cancel: CancellationToken,
    ) -> Result<SessionStats, StateError> {
        let (id, addr, now) = (node_id.to_owned(), http_address.to_owned(), now_ms());
        let repair_json = repair.as_ref().map(|r| r.to_string());
        let session_id = self
            .tables
            .with(move |conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO replica_nodes (node_id, http_address, first_seen_ms, last_contact_ms, state)
                     VALUES (?1, ?2, ?3, ?3, 'catching_up')
                     ON CONFLICT (node_id) DO UPDATE SET http_address = excluded.http_address,
                        last_contact_ms = excluded.last_contact_ms, state = 'catching_up'",
                    params![id, (!addr.is_empty()).then_some(addr.as_str()), now],
                )?;
                tx.execute(
                    "INSERT INTO replica_sessions (node_id, connected_ms, start_seq, last_sent_seq,
                        last_acked_seq, repair_json) VALUES (?1, ?2, ?3, ?3, ?3, ?4)",
                    params![id, now, start_seq as i64, repair_json],
                )?;
                let sid = tx.last_insert_rowid();
                tx.commit()?;
                Ok(sid)
            })
            .await?;
        let stats = SessionStats {
            id: session_id,
            connected_ms: now,
            start_seq,
            last_sent_seq: start_seq,
            last_acked_seq: start_seq,
            repair,
            ..SessionStats::default()
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let previous = live.insert(
            node_id.to_owned(),
            Live {
                state: NodeState::CatchingUp,
                session: Some(stats.clone()),
                behind_since_ms: None,
                verify: Some(verify),
                cancel: Some(cancel),
            },
        );
        if let Some(c) = previous.and_then(|p| p.cancel) {
            c.cancel();
        }
        Ok(stats)
    }

    /// Publishes the counters and state of session `stats.id` of `node_id`, if it is still the
    /// node's current session.
    pub fn publish(
        &self,
        node_id: &str,
        stats: &SessionStats,
        state: NodeState,
        behind_since_ms: Option<i64>,
    ) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = live.get_mut(node_id)
            && l.session.as_ref().is_some_and(|s| s.id == stats.id)
        {
            l.state = state;
            l.behind_since_ms = behind_since_ms;
            l.session = Some(stats.clone());
        }
    }

    /// Closes session `stats.id` of `node_id` with `end_reason` (and the node's state after it,
    /// unless a newer session took over).
    pub async fn session_ended(
        &self,
        node_id: &str,
        stats: SessionStats,
        end_reason: &str,
        state: NodeState,
        repair_reason: Option<String>,
        error: Option<String>,
    ) {
        let current = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            match live.get_mut(node_id) {
                Some(l) if l.session.as_ref().is_some_and(|s| s.id == stats.id) => {
                    l.state = state;
                    l.verify = None;
                    l.cancel = None;
                    l.behind_since_ms = None;
                    l.session = None;
                    true
                }
                _ => false,
            }
        };
        let session = Some(stats);
        let (id, end, now) = (node_id.to_owned(), end_reason.to_owned(), now_ms());
        let state = if current { Some(state.as_str()) } else { None };
        let result = self
            .tables
            .with(move |conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "UPDATE replica_nodes SET last_contact_ms = ?2, state = coalesce(?3, state),
                        last_error = coalesce(?4, last_error) WHERE node_id = ?1",
                    params![id, now, state, error],
                )?;
                if let Some(s) = session {
                    tx.execute(
                        "UPDATE replica_sessions SET disconnected_ms = ?2, last_sent_seq = ?3,
                            last_acked_seq = ?4, batches = ?5, bars = ?6, bytes = ?7,
                            repair_reason = ?8, end_reason = ?9 WHERE id = ?1",
                        params![
                            s.id,
                            now,
                            s.last_sent_seq as i64,
                            s.last_acked_seq as i64,
                            s.batches as i64,
                            s.bars as i64,
                            s.bytes as i64,
                            repair_reason,
                            end
                        ],
                    )?;
                }
                tx.commit()
            })
            .await;
        if let Err(e) = result {
            tracing::error!(node = node_id, error = %e, "cannot record the end of a replica session");
        }
    }

    /// Every known node with its persisted row, overlaid with the live state.
    pub async fn list(&self) -> Result<Vec<NodeInfo>, StateError> {
        let rows = self
            .tables
            .with(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT node_id, http_address, first_seen_ms, last_contact_ms, state, last_error
                     FROM replica_nodes ORDER BY node_id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        Ok(rows
            .into_iter()
            .map(|(node_id, http_address, first, last, state, last_error)| {
                let l = live.get(&node_id);
                let state = l.map(|l| l.state).unwrap_or(match state.as_str() {
                    "repairing" => NodeState::Repairing,
                    _ => NodeState::Disconnected,
                });
                let lag_seconds = l
                    .and_then(|l| l.behind_since_ms)
                    .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
                NodeInfo {
                    node_id,
                    http_address,
                    state,
                    first_seen_ms: first,
                    last_contact_ms: if l.is_some_and(|l| l.session.is_some()) {
                        now
                    } else {
                        last
                    },
                    last_error,
                    cursor: None,
                    lag_seq: 0,
                    lag_seconds,
                    needs_repair: false,
                    repair_reason: None,
                    session: l.and_then(|l| l.session.clone()),
                }
            })
            .collect())
    }

    /// The last `limit` sessions of `node_id`, newest first (the open one included).
    pub async fn history(
        &self,
        node_id: &str,
        limit: usize,
    ) -> Result<Option<Vec<SessionStats>>, StateError> {
        let id = node_id.to_owned();
        let rows = self
            .tables
            .with(move |conn| {
                let known: Option<i64> = conn
                    .query_row(
                        "SELECT 1 FROM replica_nodes WHERE node_id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?;
                if known.is_none() {
                    return Ok(None);
                }
                let mut stmt = conn.prepare(
                    "SELECT id, connected_ms, disconnected_ms, start_seq, last_sent_seq,
                        last_acked_seq, batches, bars, bytes, repair_reason, repair_json, end_reason
                     FROM replica_sessions WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![id, limit as i64], |r| {
                    Ok(SessionStats {
                        id: r.get(0)?,
                        connected_ms: r.get(1)?,
                        disconnected_ms: r.get(2)?,
                        start_seq: r.get::<_, i64>(3)? as u64,
                        last_sent_seq: r.get::<_, i64>(4)? as u64,
                        last_acked_seq: r.get::<_, i64>(5)? as u64,
                        batches: r.get::<_, i64>(6)? as u64,
                        bars: r.get::<_, i64>(7)? as u64,
                        bytes: r.get::<_, i64>(8)? as u64,
                        repair_reason: r.get(9)?,
                        repair: r
                            .get::<_, Option<String>>(10)?
                            .and_then(|j| serde_json::from_str(&j).ok()),
                        end_reason: r.get(11)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
            })
            .await?;
        // The open session's counters are live.
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let open = live.get(node_id).and_then(|l| l.session.clone());
        Ok(rows.map(|mut rows| {
            if let Some(open) = open
                && let Some(r) = rows.iter_mut().find(|r| r.id == open.id)
            {
                *r = open;
            }
            rows
        }))
    }

    /// Forgets a node: its row and its history, and ends its open session. Returns whether it
    /// was known.
    pub async fn forget(&self, node_id: &str) -> Result<bool, StateError> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id);
        if let Some(c) = live.and_then(|l| l.cancel) {
            c.cancel();
        }
        let id = node_id.to_owned();
        self.tables
            .with(move |conn| {
                let tx = conn.transaction()?;
                let n = tx.execute("DELETE FROM replica_nodes WHERE node_id = ?1", params![id])?;
                tx.execute(
                    "DELETE FROM replica_sessions WHERE node_id = ?1",
                    params![id],
                )?;
                tx.commit()?;
                Ok(n > 0)
            })
            .await
    }

    /// Whether the journal of `history` holds every change the store holds (recorded once per
    /// history by [`NodeRegistry::record_journal_coverage`]).
    pub async fn journal_covers_store(&self, history: &str) -> Result<Option<bool>, StateError> {
        let key = format!("journal_covers_store:{history}");
        self.tables
            .with(move |conn| {
                conn.query_row(
                    "SELECT value FROM replication_meta WHERE key = ?1",
                    params![key],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map(|v| v.map(|v| v == "true"))
            })
            .await
    }

    /// Records, the first time a history is seen, whether its journal holds every change of
    /// the store: true for a journal that began with an empty store (or one that predates this
    /// record), false for a fresh journal over a store that already held bars (a master
    /// started on a replica's store). A new replica may stream such a journal from its start
    /// only when it covers the store; otherwise it repairs from the store's digests.
    pub async fn record_journal_coverage(
        &self,
        history: &str,
        fresh_journal: bool,
        store_empty: bool,
    ) -> Result<bool, StateError> {
        if let Some(known) = self.journal_covers_store(history).await? {
            return Ok(known);
        }
        let covers = !fresh_journal || store_empty;
        let key = format!("journal_covers_store:{history}");
        self.tables
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO replication_meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO NOTHING",
                    params![key, covers.to_string()],
                )
            })
            .await?;
        Ok(covers)
    }

    /// The channel to ask a connected node for its digests.
    pub fn verify_channel(&self, node_id: &str) -> Option<mpsc::Sender<VerifyCall>> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(node_id).and_then(|l| l.verify.clone())
    }
}

/// The journal cursor name of a replica.
pub fn cursor_name(node_id: &str) -> String {
    format!("replica:{node_id}")
}

/// Checks a node id: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("node id {id:?} must be 1 to 64 characters long"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "node id {id:?} contains {c:?}; use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}
