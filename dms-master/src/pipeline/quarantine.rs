//! `Quarantine`: bars that failed validation, kept in the local state file with the reason, so
//! an operator can see what a source sent and why it was not stored.

use std::path::Path;

use dms_common::SeriesKey;
use dms_common::journal::Origin;
use rusqlite::params;

use crate::pipeline::validate::Rejection;
use dms_common::state::{StateError, StateTables};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS quarantine (
    id            INTEGER PRIMARY KEY,
    symbol        TEXT NOT NULL,
    interval      TEXT NOT NULL,
    ts            INTEGER NOT NULL,
    bar_json      TEXT NOT NULL,
    reason        TEXT NOT NULL,
    source        TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_by_series ON quarantine (symbol, interval, ts);
";

/// A quarantined bar as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QuarantinedBar {
    pub id: i64,
    pub symbol: String,
    pub interval: String,
    pub bar: serde_json::Value,
    pub reason: String,
    pub source: String,
    pub task_id: String,
    pub created_at_ms: i64,
}

/// Why the quarantine could not be read or written.
pub type QuarantineError = StateError;

/// The quarantine table in the state file.
#[derive(Debug, Clone)]
pub struct Quarantine {
    tables: StateTables,
}

impl Quarantine {
    /// Opens the quarantine in the state file at `path`.
    pub fn open(path: &Path) -> Result<Quarantine, QuarantineError> {
        Ok(Quarantine {
            tables: StateTables::open(path, "quarantine", SCHEMA)?,
        })
    }

    /// Records rejected bars of a series.
    pub async fn record(
        &self,
        key: &SeriesKey,
        rejected: &[Rejection],
        origin: &Origin,
    ) -> Result<(), QuarantineError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let (symbol, interval) = (key.symbol.to_string(), key.interval.to_string());
        let rows: Vec<(i64, String, String)> = rejected
            .iter()
            .map(|r| (r.bar.ts.0, r.bar.to_json().to_string(), r.reason.clone()))
            .collect();
        let origin = origin.clone();
        let now = chrono::Utc::now().timestamp_millis();
        self.tables
            .with(move |conn| {
                let tx = conn.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT INTO quarantine
                         (symbol, interval, ts, bar_json, reason, source, task_id, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?;
                    for (ts, json, reason) in &rows {
                        stmt.execute(params![
                            symbol,
                            interval,
                            ts,
                            json,
                            reason,
                            origin.source,
                            origin.task_id,
                            now
                        ])?;
                    }
                }
                tx.commit()
            })
            .await
    }

    /// The most recent quarantined bars, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<QuarantinedBar>, QuarantineError> {
        self.tables
            .with(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, symbol, interval, bar_json, reason, source, task_id, created_at_ms
                     FROM quarantine ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit as i64], |r| {
                    let json: String = r.get(3)?;
                    Ok(QuarantinedBar {
                        id: r.get(0)?,
                        symbol: r.get(1)?,
                        interval: r.get(2)?,
                        bar: serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
                        reason: r.get(4)?,
                        source: r.get(5)?,
                        task_id: r.get(6)?,
                        created_at_ms: r.get(7)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// How many bars are quarantined.
    pub async fn count(&self) -> Result<u64, QuarantineError> {
        self.tables
            .with(|conn| {
                conn.query_row("SELECT count(*) FROM quarantine", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
            })
            .await
    }
}
