//! The master's HTTP API on port 11183: liveness (`/healthz`), readiness (`/readyz`: the store
//! and the journal answer) and the REST API under `/api/data/` with the `{success, data}`
//! envelope.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dms_common::journal::Journal;
use dms_common::store::SharedStore;
use serde_json::{Value, json};

use crate::applier::StatusCell;
use crate::import::ImportSummary;
use crate::quarantine::Quarantine;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: SharedStore,
    pub journal: Journal,
    pub quarantine: Quarantine,
    pub applier: StatusCell,
    pub imports: Arc<Mutex<Vec<ImportSummary>>>,
}

/// The router with every endpoint.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/data/status", get(status))
        .fallback(not_found)
        .with_state(state)
}

/// An error response in the API envelope.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": message.into()})),
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {}", uri.path()),
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let store = s.store.check().await.map_err(|e| e.to_string());
    let journal = s.journal.check().await.map_err(|e| e.to_string());
    let ready = store.is_ok() && journal.is_ok();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => Value::from("ok"),
        Err(e) => Value::from(e.as_str()),
    };
    let body = json!({
        "ready": ready,
        "checks": {"store": show(&store), "journal": show(&journal)},
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status(State(s): State<ApiState>) -> Response {
    let overview = match s.store.overview().await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let symbols: std::collections::BTreeSet<&str> =
        overview.iter().map(|o| o.key.symbol.as_str()).collect();
    let total: u64 = overview.iter().map(|o| o.count).sum();
    let date = |t: dms_common::Timestamp| t.to_datetime().format("%Y-%m-%d").to_string();
    let earliest = overview.iter().map(|o| o.first).min().map(date);
    let latest = overview.iter().map(|o| o.last).max().map(date);
    let applier = s.applier.get();
    let journal_head = s.journal.head();
    let quarantined = s.quarantine.count().await.unwrap_or(0);
    let imports = s.imports.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!({
        "success": true,
        "data": {
            "total_stocks": symbols.len(),
            "total_series": overview.len(),
            "total_records": total,
            "earliest_date": earliest,
            "latest_date": latest,
            "record_count_millions": (total as f64 / 1e4).round() / 100.0,
            "store": s.store.backend(),
            "journal": {
                "head": journal_head,
                "store_applied": applier.applied_seq,
                "store_lag": journal_head.0.saturating_sub(applier.applied_seq.0),
                "store_retries": applier.retries,
                "store_last_error": applier.last_error,
            },
            "quarantined_bars": quarantined,
            "imports": imports,
        }
    }))
    .into_response()
}
