//! The REST view of the replicas: `/api/nodes`.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /api/nodes` | every known replica with state, cursor, lag (entries and seconds), open session |
//! | `GET /api/nodes/{id}` | one replica |
//! | `GET /api/nodes/{id}/history?limit=` | its sessions, newest first (default 20, at most 1,000) |
//! | `POST /api/nodes/{id}/verify` | compares its digests with the master's; the report names diverged buckets |
//! | `DELETE /api/nodes/{id}` | forgets it and releases what the journal kept for it |

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dms_common::journal::{Journal, Seq};
use dms_common::store::SharedStore;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::nodes::{NodeInfo, NodeRegistry, cursor_name, validate_node_id};
use super::verify::{VerifyError, verify_node};

/// What the node endpoints read.
#[derive(Debug, Clone)]
pub struct NodesApi {
    pub nodes: NodeRegistry,
    pub journal: Journal,
    pub store: SharedStore,
    pub store_applied: watch::Receiver<Seq>,
}

/// The `/api/nodes` routes.
pub fn router(api: NodesApi) -> Router {
    Router::new()
        .route("/api/nodes", get(list))
        .route("/api/nodes/{id}", get(one).delete(forget))
        .route("/api/nodes/{id}/history", get(history))
        .route("/api/nodes/{id}/verify", post(verify))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": message.into()})),
    )
        .into_response()
}

fn unknown(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no replica named {id:?}"))
}

/// Every node, with its journal cursor and lag filled in.
async fn nodes_with_cursors(api: &NodesApi) -> Result<Vec<NodeInfo>, Response> {
    let mut nodes = api
        .nodes
        .list()
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let head = api.journal.head();
    for n in &mut nodes {
        if let Ok(Some(c)) = api.journal.cursor(&cursor_name(&n.node_id)).await {
            n.cursor = Some(c.seq.0);
            n.lag_seq = head.0.saturating_sub(c.seq.0);
            n.needs_repair = c.needs_repair;
            n.repair_reason = c.repair_reason;
        }
    }
    Ok(nodes)
}

async fn list(State(api): State<NodesApi>) -> Response {
    match nodes_with_cursors(&api).await {
        Ok(nodes) => {
            let count = nodes.len();
            Json(json!({"success": true, "data": nodes, "count": count})).into_response()
        }
        Err(r) => r,
    }
}

async fn one(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    match nodes_with_cursors(&api).await {
        Ok(nodes) => match nodes.into_iter().find(|n| n.node_id == id) {
            Some(n) => Json(json!({"success": true, "data": n})).into_response(),
            None => unknown(&id),
        },
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<String>,
}

async fn history(
    State(api): State<NodesApi>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n @ 1..=1000)) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "field `limit` must be a whole number from 1 to 1000",
            );
        }
    };
    match api.nodes.history(&id, limit).await {
        Ok(Some(rows)) => {
            let count = rows.len();
            Json(json!({"success": true, "data": rows, "count": count})).into_response()
        }
        Ok(None) => unknown(&id),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn verify(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    if let Err(e) = validate_node_id(&id) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    match verify_node(
        &api.nodes,
        &api.journal,
        &api.store,
        &api.store_applied,
        &id,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(report) => Json(json!({"success": true, "data": report})).into_response(),
        Err(e @ VerifyError::UnknownNode(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ VerifyError::NotConnected(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e @ VerifyError::NoAnswer(..)) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        Err(e @ VerifyError::Master(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn forget(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    let known = match api.nodes.forget(&id).await {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let cursor = api.journal.remove_cursor(&cursor_name(&id)).await;
    match (known, cursor) {
        (false, Ok(false)) => unknown(&id),
        (_, Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        _ => Json(json!({"success": true, "message": format!("replica {id:?} forgotten; the journal no longer keeps entries for it")}))
            .into_response(),
    }
}
