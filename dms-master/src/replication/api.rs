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

use super::nodes::{NodeInfo, NodeRegistry, SessionStats, cursor_name, validate_node_id};
use super::verify::{VerifyError, VerifyReport, verify_node};

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

/// Why a node operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeApiError {
    /// A parameter is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("no replica named {0:?}")]
    NotFound(String),
    /// The operation needs the replica connected.
    #[error("{0}")]
    NotConnected(String),
    /// The replica did not answer in time.
    #[error("{0}")]
    NoAnswer(String),
    #[error("{0}")]
    Internal(String),
}

impl NodeApiError {
    fn internal(e: impl std::fmt::Display) -> NodeApiError {
        NodeApiError::Internal(e.to_string())
    }
}

/// Sessions a history listing returns when the request does not say.
pub const DEFAULT_HISTORY_LIMIT: usize = 20;

/// The `limit` of a history listing: absent means 20; otherwise 1 to 1,000.
pub fn history_limit(raw: Option<&str>) -> Result<usize, NodeApiError> {
    match raw.map(str::parse::<usize>) {
        None => Ok(DEFAULT_HISTORY_LIMIT),
        Some(Ok(n @ 1..=1000)) => Ok(n),
        Some(_) => Err(NodeApiError::Invalid(
            "field `limit` must be a whole number from 1 to 1000".into(),
        )),
    }
}

impl NodesApi {
    /// Every node, with its journal cursor and lag filled in.
    pub async fn list(&self) -> Result<Vec<NodeInfo>, NodeApiError> {
        let mut nodes = self.nodes.list().await.map_err(NodeApiError::internal)?;
        let head = self.journal.head();
        for n in &mut nodes {
            if let Ok(Some(c)) = self.journal.cursor(&cursor_name(&n.node_id)).await {
                n.cursor = Some(c.seq.0);
                n.lag_seq = head.0.saturating_sub(c.seq.0);
                n.needs_repair = c.needs_repair;
                n.repair_reason = c.repair_reason;
            }
        }
        Ok(nodes)
    }

    /// One node.
    pub async fn get(&self, id: &str) -> Result<NodeInfo, NodeApiError> {
        self.list()
            .await?
            .into_iter()
            .find(|n| n.node_id == id)
            .ok_or_else(|| NodeApiError::NotFound(id.to_owned()))
    }

    /// A node's sessions, newest first.
    pub async fn history(&self, id: &str, limit: usize) -> Result<Vec<SessionStats>, NodeApiError> {
        self.nodes
            .history(id, limit)
            .await
            .map_err(NodeApiError::internal)?
            .ok_or_else(|| NodeApiError::NotFound(id.to_owned()))
    }

    /// Compares the connected node's digests with the master's.
    pub async fn verify(&self, id: &str) -> Result<VerifyReport, NodeApiError> {
        validate_node_id(id).map_err(NodeApiError::Invalid)?;
        verify_node(
            &self.nodes,
            &self.journal,
            &self.store,
            &self.store_applied,
            id,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| match e {
            VerifyError::UnknownNode(id) => NodeApiError::NotFound(id),
            e @ VerifyError::NotConnected(_) => NodeApiError::NotConnected(e.to_string()),
            e @ VerifyError::NoAnswer(..) => NodeApiError::NoAnswer(e.to_string()),
            e @ VerifyError::Master(_) => NodeApiError::Internal(e.to_string()),
        })
    }

    /// Forgets a node and releases what the journal kept for it; returns what was done.
    pub async fn forget(&self, id: &str) -> Result<String, NodeApiError> {
        let known = self
            .nodes
            .forget(id)
            .await
            .map_err(NodeApiError::internal)?;
        let cursor = self
            .journal
            .remove_cursor(&cursor_name(id))
            .await
            .map_err(NodeApiError::internal)?;
        if !known && !cursor {
            return Err(NodeApiError::NotFound(id.to_owned()));
        }
        Ok(format!(
            "replica {id:?} forgotten; the journal no longer keeps entries for it"
        ))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": message.into()})),
    )
        .into_response()
}

fn refused(e: &NodeApiError) -> Response {
    let status = match e {
        NodeApiError::Invalid(_) => StatusCode::BAD_REQUEST,
        NodeApiError::NotFound(_) => StatusCode::NOT_FOUND,
        NodeApiError::NotConnected(_) => StatusCode::CONFLICT,
        NodeApiError::NoAnswer(_) => StatusCode::GATEWAY_TIMEOUT,
        NodeApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

async fn list(State(api): State<NodesApi>) -> Response {
    match api.list().await {
        Ok(nodes) => {
            let count = nodes.len();
            Json(json!({"success": true, "data": nodes, "count": count})).into_response()
        }
        Err(e) => refused(&e),
    }
}

async fn one(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    match api.get(&id).await {
        Ok(n) => Json(json!({"success": true, "data": n})).into_response(),
        Err(e) => refused(&e),
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
    let rows = match history_limit(q.limit.as_deref()) {
        Ok(limit) => api.history(&id, limit).await,
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => {
            let count = rows.len();
            Json(json!({"success": true, "data": rows, "count": count})).into_response()
        }
        Err(e) => refused(&e),
    }
}

async fn verify(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    match api.verify(&id).await {
        Ok(report) => Json(json!({"success": true, "data": report})).into_response(),
        Err(e) => refused(&e),
    }
}

async fn forget(State(api): State<NodesApi>, Path(id): Path<String>) -> Response {
    match api.forget(&id).await {
        Ok(message) => Json(json!({"success": true, "message": message})).into_response(),
        Err(e) => refused(&e),
    }
}
