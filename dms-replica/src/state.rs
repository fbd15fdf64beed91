//! `ReplicaState`: what the replica remembers in its state file, apart from the bars.
//!
//! - The position: the master's history id and the last journal seq the store holds durably
//!   (the cursor). It is written after the store has applied a batch and before the batch is
//!   acknowledged, so after a crash the replica resumes at or before what it acknowledged and
//!   re-applies at most a batch (idempotently).
//! - Whether it must repair, and why (set when the master says so, or when the store is found
//!   not to match the cursor); cleared only when a repair completes, so an interrupted repair
//!   runs again.
//! - The history of repairs, with what each compared and pulled.

use std::path::Path;

use dms_common::pb;
use dms_common::state::{StateError, StateTables};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS replica_position (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    history_id    TEXT NOT NULL,
    cursor        INTEGER NOT NULL,
    needs_repair  INTEGER NOT NULL,
    repair_reason TEXT,
    updated_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS replica_repairs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    reason           TEXT NOT NULL,
    started_ms       INTEGER NOT NULL,
    finished_ms      INTEGER NOT NULL,
    series_compared  INTEGER NOT NULL,
    series_differing INTEGER NOT NULL,
    buckets_compared INTEGER NOT NULL,
    buckets_pulled   INTEGER NOT NULL,
    bars_pulled      INTEGER NOT NULL,
    series_removed   INTEGER NOT NULL,
    reported         INTEGER NOT NULL DEFAULT 0
);
";

/// Where the replica stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The master history the cursor belongs to; empty before the first sync.
    pub history_id: String,
    pub cursor: u64,
    pub needs_repair: bool,
    pub repair_reason: Option<String>,
}

/// One finished repair.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairRecord {
    pub reason: String,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub series_compared: u64,
    pub series_differing: u64,
    pub buckets_compared: u64,
    pub buckets_pulled: u64,
    pub bars_pulled: u64,
    pub series_removed: u64,
}

impl RepairRecord {
    /// The form the master records in the node's sync history.
    pub fn to_pb(&self) -> pb::RepairSummary {
        pb::RepairSummary {
            reason: self.reason.clone(),
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            series_compared: self.series_compared,
            series_differing: self.series_differing,
            buckets_compared: self.buckets_compared,
            buckets_pulled: self.buckets_pulled,
            bars_pulled: self.bars_pulled,
            series_removed: self.series_removed,
        }
    }
}

/// The state tables. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    tables: StateTables,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl ReplicaState {
    /// Opens (creating if needed) the state file at `path`.
    pub fn open(path: &Path) -> Result<ReplicaState, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        Ok(ReplicaState {
            tables: StateTables::open(path, "replica state", SCHEMA)?,
        })
    }

    /// The stored position (all defaults before the first sync).
    pub async fn position(&self) -> Result<Position, StateError> {
        self.tables
            .with(|conn| {
                conn.query_row(
                    "SELECT history_id, cursor, needs_repair, repair_reason
                     FROM replica_position WHERE id = 1",
                    [],
                    |r| {
                        Ok(Position {
                            history_id: r.get(0)?,
                            cursor: r.get::<_, i64>(1)? as u64,
                            needs_repair: r.get::<_, i64>(2)? != 0,
                            repair_reason: r.get(3)?,
                        })
                    },
                )
                .optional()
                .map(Option::unwrap_or_default)
            })
            .await
    }

    /// Stores a position; durable when it returns.
    pub async fn set_position(&self, p: &Position) -> Result<(), StateError> {
        let p = p.clone();
        self.tables
            .with(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO replica_position (id, history_id, cursor, needs_repair, repair_reason, updated_ms)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET history_id = excluded.history_id,
                        cursor = excluded.cursor, needs_repair = excluded.needs_repair,
                        repair_reason = excluded.repair_reason, updated_ms = excluded.updated_ms",
                )?
                .execute(params![
                    p.history_id,
                    p.cursor as i64,
                    p.needs_repair as i64,
                    p.repair_reason,
                    now_ms()
                ])
                .map(|_| ())
            })
            .await
    }

    /// Records a finished repair.
    pub async fn record_repair(&self, r: &RepairRecord) -> Result<(), StateError> {
        let r = r.clone();
        self.tables
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO replica_repairs (reason, started_ms, finished_ms, series_compared,
                        series_differing, buckets_compared, buckets_pulled, bars_pulled, series_removed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        r.reason,
                        r.started_ms,
                        r.finished_ms,
                        r.series_compared as i64,
                        r.series_differing as i64,
                        r.buckets_compared as i64,
                        r.buckets_pulled as i64,
                        r.bars_pulled as i64,
                        r.series_removed as i64
                    ],
                )
                .map(|_| ())
            })
            .await
    }

    /// The last `limit` repairs, newest first.
    pub async fn repairs(&self, limit: usize) -> Result<Vec<RepairRecord>, StateError> {
        self.tables
            .with(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT reason, started_ms, finished_ms, series_compared, series_differing,
                        buckets_compared, buckets_pulled, bars_pulled, series_removed
                     FROM replica_repairs ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit as i64], |r| {
                    Ok(RepairRecord {
                        reason: r.get(0)?,
                        started_ms: r.get(1)?,
                        finished_ms: r.get(2)?,
                        series_compared: r.get::<_, i64>(3)? as u64,
                        series_differing: r.get::<_, i64>(4)? as u64,
                        buckets_compared: r.get::<_, i64>(5)? as u64,
                        buckets_pulled: r.get::<_, i64>(6)? as u64,
                        bars_pulled: r.get::<_, i64>(7)? as u64,
                        series_removed: r.get::<_, i64>(8)? as u64,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// The newest repair the master has not been told of yet (it records it in this node's
    /// sync history when the next session starts).
    pub async fn unreported_repair(&self) -> Result<Option<RepairRecord>, StateError> {
        let unreported = self
            .tables
            .with(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM replica_repairs WHERE reported = 0",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .await?;
        if unreported == 0 {
            return Ok(None);
        }
        Ok(self.repairs(1).await?.into_iter().next())
    }

    /// Marks every repair as told to the master (after a session began with the report).
    pub async fn mark_repairs_reported(&self) -> Result<(), StateError> {
        self.tables
            .with(|conn| {
                conn.execute(
                    "UPDATE replica_repairs SET reported = 1 WHERE reported = 0",
                    [],
                )
                .map(|_| ())
            })
            .await
    }
}
