//! `Quarantine`: bars that failed validation, kept in the local state file with the reason, so
//! an operator can see what a source sent and why it was not stored.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use dms_common::journal::{Origin, open_state_connection};
use dms_common::{Bar, SeriesKey};
use rusqlite::{Connection, params};

use crate::validate::Rejection;

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
#[derive(Debug, thiserror::Error)]
#[error("quarantine in {path}: {source}")]
pub struct QuarantineError {
    path: PathBuf,
    #[source]
    source: rusqlite::Error,
}

/// The quarantine table in the state file.
#[derive(Debug, Clone)]
pub struct Quarantine {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl Quarantine {
    /// Opens the quarantine in the state file at `path`.
    pub fn open(path: &Path) -> Result<Quarantine, QuarantineError> {
        let err = |source| QuarantineError {
            path: path.to_path_buf(),
            source,
        };
        let conn = open_state_connection(path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Quarantine {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn err(&self, source: rusqlite::Error) -> QuarantineError {
        QuarantineError {
            path: self.path.clone(),
            source,
        }
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
        let this = self.clone();
        let key = key.clone();
        let rows: Vec<(i64, String, String)> = rejected
            .iter()
            .map(|r| (r.bar.ts.0, bar_json(&r.bar), r.reason.clone()))
            .collect();
        let origin = origin.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction().map_err(|e| this.err(e))?;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO quarantine
                         (symbol, interval, ts, bar_json, reason, source, task_id, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(|e| this.err(e))?;
                let now = chrono::Utc::now().timestamp_millis();
                for (ts, json, reason) in &rows {
                    stmt.execute(params![
                        key.symbol.as_str(),
                        key.interval.as_str(),
                        ts,
                        json,
                        reason,
                        origin.source,
                        origin.task_id,
                        now
                    ])
                    .map_err(|e| this.err(e))?;
                }
            }
            tx.commit().map_err(|e| this.err(e))
        })
        .await
        .unwrap_or_else(|e| panic!("quarantine task panicked: {e}"))
    }

    /// The most recent quarantined bars, newest first.
    pub async fn recent(&self, limit: usize) -> Result<Vec<QuarantinedBar>, QuarantineError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, symbol, interval, bar_json, reason, source, task_id, created_at_ms
                     FROM quarantine ORDER BY id DESC LIMIT ?1",
                )
                .map_err(|e| this.err(e))?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
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
                })
                .map_err(|e| this.err(e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| this.err(e))
        })
        .await
        .unwrap_or_else(|e| panic!("quarantine task panicked: {e}"))
    }

    /// How many bars are quarantined.
    pub async fn count(&self) -> Result<u64, QuarantineError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.query_row("SELECT count(*) FROM quarantine", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| this.err(e))
        })
        .await
        .unwrap_or_else(|e| panic!("quarantine task panicked: {e}"))
    }
}

/// A bar as JSON; non-finite numbers (which JSON cannot hold) are kept as strings.
fn bar_json(b: &Bar) -> String {
    fn num(v: f64) -> serde_json::Value {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
    }
    let mut m = serde_json::Map::new();
    m.insert("ts".into(), b.ts.to_rfc3339().into());
    for (k, v) in [
        ("open", Some(b.open)),
        ("high", Some(b.high)),
        ("low", Some(b.low)),
        ("close", Some(b.close)),
        ("volume", Some(b.volume)),
        ("adj_close", b.adj_close),
        ("turnover", b.turnover),
        ("open_interest", b.open_interest),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), num(v));
        }
    }
    serde_json::Value::Object(m).to_string()
}
