//! `DeadLetters`: journal entries the primary store refused for good, set aside with the reason
//! so that the store applier goes on with the entries after them.
//!
//! A store error is either transient (the store is down, busy, out of disk: the applier retries
//! and the data waits in the journal) or permanent for an entry (a type conflict, a constraint,
//! a value the backend cannot hold: retrying cannot help). A permanent error on a batch makes the
//! applier try its entries one by one; each entry that still fails is kept here, whole (the
//! encoded `dms.v1.ChangeBatch`), because retention later removes it from the journal. An
//! operator lists them (`GET /api/data/dead-letters`), journals one again once the cause is
//! fixed (`POST /api/data/dead-letters/{seq}/retry`), or drops it
//! (`DELETE /api/data/dead-letters/{seq}`).

use std::path::Path;

use dms_common::journal::{ChangeBatch, NewChange, decode_streamed, encode_batch};
use dms_common::state::{StateError, StateTables};
use rusqlite::{OptionalExtension, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS store_dead_letters (
    seq          INTEGER PRIMARY KEY,
    symbol       TEXT NOT NULL,
    interval     TEXT NOT NULL,
    bars         INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    failed_at_ms INTEGER NOT NULL,
    payload      BLOB NOT NULL
);
";

/// A dead letter as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    /// The journal seq of the entry.
    pub seq: u64,
    pub symbol: String,
    pub interval: String,
    /// Bars it carries (0 for a delete).
    pub bars: u64,
    /// The store's error.
    pub reason: String,
    pub failed_at_ms: i64,
}

/// The dead-letter table in the state file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    tables: StateTables,
}

impl DeadLetters {
    /// Opens the table in the state file at `path`.
    pub fn open(path: &Path) -> Result<DeadLetters, StateError> {
        Ok(DeadLetters {
            tables: StateTables::open(path, "store dead letters", SCHEMA)?,
        })
    }

    /// Sets `entry` aside with `reason`.
    pub async fn record(&self, entry: &ChangeBatch, reason: &str) -> Result<(), StateError> {
        let payload = encode_batch(entry);
        let (seq, symbol, interval) = (
            entry.seq.0 as i64,
            entry.series.symbol.to_string(),
            entry.series.interval.to_string(),
        );
        let bars = entry.bar_count() as i64;
        let reason = reason.to_owned();
        let now = chrono::Utc::now().timestamp_millis();
        self.tables
            .with(move |conn| {
                conn.execute(
                    "INSERT INTO store_dead_letters (seq, symbol, interval, bars, reason, failed_at_ms, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason,
                        failed_at_ms = excluded.failed_at_ms",
                    params![seq, symbol, interval, bars, reason, now, payload],
                )
                .map(|_| ())
            })
            .await
    }

    /// The dead letters, oldest first, at most `limit`.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StateError> {
        self.tables
            .with(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT seq, symbol, interval, bars, reason, failed_at_ms
                     FROM store_dead_letters ORDER BY seq LIMIT ?1",
                )?;
                let rows = stmt.query_map(params![limit as i64], |r| {
                    Ok(DeadLetter {
                        seq: r.get::<_, i64>(0)? as u64,
                        symbol: r.get(1)?,
                        interval: r.get(2)?,
                        bars: r.get::<_, i64>(3)? as u64,
                        reason: r.get(4)?,
                        failed_at_ms: r.get(5)?,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    /// How many there are, and how many bars they hold.
    pub async fn count(&self) -> Result<(u64, u64), StateError> {
        self.tables
            .with(|conn| {
                conn.query_row(
                    "SELECT count(*), coalesce(sum(bars), 0) FROM store_dead_letters",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
                )
            })
            .await
    }

    /// Removes dead letter `seq` and returns its change, to be journaled again; `None` if there
    /// is none (or its payload no longer decodes, which is reported as an error).
    pub async fn take(&self, seq: u64) -> Result<Option<NewChange>, StateError> {
        let payload: Option<Vec<u8>> = self
            .tables
            .with(move |conn| {
                conn.query_row(
                    "SELECT payload FROM store_dead_letters WHERE seq = ?1",
                    params![seq as i64],
                    |r| r.get(0),
                )
                .optional()
            })
            .await?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let batch = decode_streamed(&payload).map_err(|e| {
            StateError::new(
                "store dead letters",
                format!("entry {seq} no longer decodes: {e}"),
            )
        })?;
        self.drop_one(seq).await?;
        Ok(Some(NewChange {
            series: batch.series,
            change: batch.change,
            origin: batch.origin,
        }))
    }

    /// Drops dead letter `seq`; returns whether there was one.
    pub async fn drop_one(&self, seq: u64) -> Result<bool, StateError> {
        self.tables
            .with(move |conn| {
                conn.execute(
                    "DELETE FROM store_dead_letters WHERE seq = ?1",
                    params![seq as i64],
                )
                .map(|n| n > 0)
            })
            .await
    }
}

/// The REST view: `GET /api/data/dead-letters?limit=`, `POST /api/data/dead-letters/{seq}/retry`
/// (journals the entry again as a new entry; the store applies it like any other),
/// `DELETE /api/data/dead-letters/{seq}`.
pub fn router(
    dead: DeadLetters,
    journal: dms_common::journal::Journal,
    backpressure: crate::pipeline::ingest::Backpressure,
) -> axum::Router {
    use axum::extract::{Path, Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{delete, get, post};
    use axum::{Json, Router};
    use serde_json::json;

    type Api = (
        DeadLetters,
        dms_common::journal::Journal,
        crate::pipeline::ingest::Backpressure,
    );

    fn error(status: StatusCode, message: impl Into<String>) -> Response {
        (
            status,
            Json(json!({"success": false, "error": message.into()})),
        )
            .into_response()
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ListQuery {
        limit: Option<String>,
    }

    async fn list(State((dead, _, _)): State<Api>, Query(q): Query<ListQuery>) -> Response {
        let limit = match q.limit.as_deref().map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n @ 1..=10_000)) => n,
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "parameter `limit` must be a whole number from 1 to 10000",
                );
            }
        };
        match (dead.list(limit).await, dead.count().await) {
            (Ok(rows), Ok((count, bars))) => Json(json!({
                "success": true, "count": count, "bars": bars, "data": rows,
            }))
            .into_response(),
            (Err(e), _) | (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    async fn retry(State((dead, journal, bp)): State<Api>, Path(seq): Path<u64>) -> Response {
        // A write from outside a task does not wait for the store: it is refused while the
        // store is too far behind.
        match bp.over_limit(&journal).await {
            Ok(Some(reason)) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not journaled: {reason}; try again once it caught up"),
                );
            }
            Ok(None) => {}
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("journal: {e}")),
        }
        let change = match dead.take(seq).await {
            Ok(Some(c)) => c,
            Ok(None) => return error(StatusCode::NOT_FOUND, format!("no dead letter {seq}")),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        match journal.append(change).await {
            Ok(new_seq) => Json(json!({
                "success": true,
                "message": format!("entry {seq} journaled again as {new_seq}"),
                "seq": new_seq.0,
            }))
            .into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("journal: {e}")),
        }
    }

    async fn drop(State((dead, _, _)): State<Api>, Path(seq): Path<u64>) -> Response {
        match dead.drop_one(seq).await {
            Ok(true) => {
                Json(json!({"success": true, "message": format!("dead letter {seq} dropped")}))
                    .into_response()
            }
            Ok(false) => error(StatusCode::NOT_FOUND, format!("no dead letter {seq}")),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }

    Router::new()
        .route("/api/data/dead-letters", get(list))
        .route("/api/data/dead-letters/{seq}/retry", post(retry))
        .route("/api/data/dead-letters/{seq}", delete(drop))
        .with_state((dead, journal, backpressure))
}
