//! The replica's HTTP API: health, its replication status, pulls and anti-entropy on demand,
//! and the same read API as the master so that backtests can read from a replica.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /healthz` | `{"status":"ok"}` while the process runs |
//! | `GET /readyz` | 200 when connected to the master and no further behind than `ready_max_lag`, else 503 |
//! | `GET /metrics` | Prometheus figures (see [`crate::metrics`]) |
//! | `GET /api/replica/status` | master, history id, cursor, lag, state, last error, last repair |
//! | `GET /api/replica/repairs?limit=` | the repairs this replica ran, newest first |
//! | `POST /api/replica/pull` | `{"symbol", "interval", "start", "end"}`: pulls that range from the master now |
//! | `POST /api/replica/anti-entropy` | compares digests with the master and repairs what differs, now |
//! | `GET /api/data/status`, `/api/data/series`, `/api/data/bars` | as on the master |

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dms_common::read_api::{self, SeriesQuery};
use dms_common::store::ReplaceStats;
use dms_common::{TimeRange, pb};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::repair;
use crate::state::RepairRecord;
use crate::sync::{LinkState, Replicator};

/// The router; the caller puts it behind the request rules
/// ([`dms_common::http_rules::HttpRules::apply`]: tokens for reads and writes when `auth` is
/// configured, Host, Origin, content types).
pub fn router(r: Replicator) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/replica/status", get(status))
        .route("/api/replica/repairs", get(repairs))
        .route("/api/replica/pull", post(pull))
        .route("/api/replica/anti-entropy", post(anti_entropy))
        .route("/api/data/status", get(data_status))
        .route("/api/data/series", get(series))
        .route("/api/data/bars", get(bars))
        .fallback(not_found)
        .with_state(r.clone())
        .merge(crate::metrics::router(r))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": message.into()})),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(r): State<Replicator>) -> Response {
    let s = r.status.get();
    let connected = matches!(s.state, LinkState::CatchingUp | LinkState::InSync);
    let max_lag = r.config.ready_max_lag.0.as_secs_f64();
    let store = r.store.check().await.map_err(|e| e.to_string());
    let ready = connected && s.lag_seconds <= max_lag && store.is_ok();
    let body = json!({
        "ready": ready,
        "checks": {
            "master": if connected { Value::from("connected") } else { Value::from(format!("{:?}", s.state).to_lowercase()) },
            "lag_seconds": s.lag_seconds,
            "store": match &store { Ok(()) => Value::from("ok"), Err(e) => Value::from(e.as_str()) },
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn status(State(r): State<Replicator>) -> Response {
    let mut s = r.status.get();
    s.node_id.clone_from(&r.config.node_id);
    s.master.clone_from(&r.config.master.url);
    Json(json!({"success": true, "data": s})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitQuery {
    limit: Option<String>,
}

async fn repairs(State(r): State<Replicator>, Query(q): Query<LimitQuery>) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n @ 1..=1000)) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter `limit` must be a whole number from 1 to 1000",
            );
        }
    };
    match r.state.repairs(limit).await {
        Ok(rows) => {
            Json(json!({"success": true, "count": rows.len(), "data": rows})).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Most bars one `POST /api/replica/pull` may move.
const MAX_PULL_BARS: usize = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    symbol: String,
    interval: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

async fn pull(State(r): State<Replicator>, body: Bytes) -> Response {
    let req: PullRequest = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")),
    };
    let q = SeriesQuery {
        symbol: Some(req.symbol),
        interval: req.interval,
        start: req.start,
        end: req.end,
        ..SeriesQuery::default()
    };
    let bars_req = match q.bars_request() {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (key, range) = (bars_req.key, bars_req.range);
    let started = chrono::Utc::now().timestamp_millis();
    let mut client = match crate::client::connect(&r.config.master, r.token.as_ref()).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    // Nothing is applied from the stream while the pull runs, and the master's store must hold
    // at least what this replica does: a pulled range never overwrites newer data.
    let _applying = r.apply_lock.lock().await;
    let cursor = match r.state.position().await {
        Ok(p) if p.needs_repair => {
            return error(
                StatusCode::CONFLICT,
                "the replica is repairing; pull once it is in sync again",
            );
        }
        Ok(p) => p.cursor,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match client.list_series(pb::ListSeriesRequest {}).await {
        Ok(l) if l.get_ref().store_applied < cursor => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "the master's store has applied up to {}, behind this replica's {cursor}; try again shortly",
                    l.get_ref().store_applied
                ),
            );
        }
        Ok(_) => {}
        Err(s) => return error(StatusCode::BAD_GATEWAY, s.message().to_owned()),
    }
    let bars = match repair::pull(&mut client, &key, range, MAX_PULL_BARS).await {
        Ok(b) => b,
        Err(e @ repair::RepairError::TooLarge { .. }) => {
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let n = bars.len() as u64;
    let stats: ReplaceStats = match r.store.replace_range(&key, range, bars).await {
        Ok(s) => s,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let record = RepairRecord {
        reason: format!("pull of {key} in {range} requested over HTTP"),
        started_ms: started,
        finished_ms: chrono::Utc::now().timestamp_millis(),
        series_compared: 1,
        bars_pulled: n,
        ..RepairRecord::default()
    };
    if let Err(e) = r.state.record_repair(&record).await {
        tracing::error!(error = %e, "cannot record a pull");
    }
    Json(json!({
        "success": true,
        "data": {"symbol": key.symbol, "interval": key.interval, "range": range_json(range),
                 "bars_pulled": n, "inserted": stats.written.inserted,
                 "updated": stats.written.updated, "unchanged": stats.written.unchanged,
                 "removed": stats.removed},
    }))
    .into_response()
}

fn range_json(r: TimeRange) -> Value {
    json!({"start": r.start.to_rfc3339(), "end": r.end.to_rfc3339()})
}

async fn anti_entropy(State(r): State<Replicator>) -> Response {
    r.anti_entropy_now.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"success": true, "message": "anti-entropy starts now; see /api/replica/repairs"})),
    )
        .into_response()
}

async fn data_status(State(r): State<Replicator>) -> Response {
    match r.store.overview().await {
        Ok(o) => {
            let mut data = read_api::status_totals(Some(&o));
            let s = r.status.get();
            data["store"] = Value::from(r.store.backend());
            data["replica"] = json!({"cursor": s.cursor, "state": s.state, "lag_seq": s.lag_seq});
            Json(json!({"success": true, "data": data})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

async fn series(State(r): State<Replicator>) -> Response {
    match r.store.overview().await {
        Ok(o) => {
            let data: Vec<Value> = o
                .iter()
                .map(|o| {
                    json!({
                        "symbol": o.key.symbol,
                        "interval": o.key.interval,
                        "count": o.count,
                        "first": o.first.to_rfc3339(),
                        "last": o.last.to_rfc3339(),
                        "digest": o.digest.hash_hex(),
                    })
                })
                .collect();
            Json(json!({"success": true, "count": data.len(), "data": data})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

async fn bars(State(r): State<Replicator>, Query(q): Query<SeriesQuery>) -> Response {
    let req = match q.bars_request() {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (page, next) = match read_api::read_page(&*r.store, &req).await {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut response = if req.csv {
        (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            read_api::bars_csv(&page),
        )
            .into_response()
    } else {
        Json(read_api::bars_json(&req.key, &page, next)).into_response()
    };
    if let Some(n) = next
        && let Ok(v) = n.to_rfc3339().parse()
    {
        response.headers_mut().insert("x-next-start", v);
    }
    response
}
