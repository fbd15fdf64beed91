//! The master's HTTP API on port 11183: liveness (`/healthz`), readiness (`/readyz`: the store
//! and the journal answer) and the REST API under `/api/data/`.
//!
//! Envelopes follow the seed API: `{"success": true, "data": ...}` for reads,
//! `{"success": true, "task_id", "message"}` when a task is queued, and
//! `{"success": false, "error": "..."}` with 400 (naming the field and the reason), 404 or 409
//! for requests that cannot be served. A rejected request starts nothing.
//!
//! # Layout
//!
//! - this module: [`router`], and what every area shares: the error envelope
//!   (`error`, `bad_request`, `internal`), a refused task operation's answer, JSON bodies.
//! - `health`: `/healthz`, `/readyz` and `/api/data/status`.
//! - `tasks`: queuing tasks (import, update, backfill, validate, migrate, check, backup,
//!   restore, verify), listing, showing and cancelling them, and the list of backups.
//! - `upload`: `/api/data/import-file`, with the body spooled to the uploads directory.
//! - `data`: the stored data: bars, series, overview, gaps, corporate actions, deletes and
//!   exports.
//! - `sources`: the tables and preview of a SQL source.
//!
//! The areas import this module's shared helpers and no sibling.

// Request parsing returns the finished error response as its `Err`; it is built once per
// rejected request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod data;
mod health;
mod sources;
mod tasks;
mod upload;

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::state::ApiState;
use crate::tasks::request::TaskApiError;

pub use crate::tasks::request::{MAX_SYMBOLS, MAX_TASK_LIMIT};
/// Most bars one `/api/data/bars` page returns.
pub use dms_common::read_api::MAX_PAGE_BARS;

/// The REST routes merged with `extra` (gRPC services, the node API), which must have no
/// fallback of their own. The caller puts it behind the request rules
/// ([`dms_common::http_rules::HttpRules::apply`]: tokens, Host, Origin, content types).
pub fn router(state: ApiState, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/data/status", get(health::status))
        .route("/api/data/import", post(tasks::import))
        .route("/api/data/update", post(tasks::update))
        .route("/api/data/backfill", post(tasks::backfill))
        .route("/api/data/validate", post(tasks::validate))
        .route("/api/data/migrate", post(tasks::migrate))
        .route("/api/data/check", post(tasks::check))
        .route("/api/data/tasks", get(tasks::list_tasks))
        .route("/api/data/tasks/{task_id}", get(tasks::get_task))
        .route("/api/data/tasks/{task_id}/cancel", post(tasks::cancel_task))
        .route("/api/data/delete", post(data::delete_bars))
        .route("/api/data/gaps", get(data::gaps))
        .route("/api/data/series", get(data::series))
        .route("/api/data/overview", get(data::overview))
        .route("/api/data/bars", get(data::bars))
        .route("/api/data/export", get(data::export))
        .route("/api/data/backup", post(tasks::backup))
        .route("/api/data/backups", get(tasks::list_backups))
        .route(
            "/api/data/backups/{name}/verify",
            post(tasks::verify_backup),
        )
        .route("/api/data/restore", post(tasks::restore))
        .route(
            "/api/data/import-file",
            post(upload::import_file).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/data/actions", get(data::actions))
        .route("/api/sources/{name}/tables", get(sources::source_tables))
        .route("/api/sources/{name}/preview", get(sources::source_preview))
        .fallback(not_found)
        .with_state(state)
        .merge(extra)
}

/// The answer to a refused task operation: 400, 404, 409 or 500.
fn task_error(e: TaskApiError) -> Response {
    match e {
        TaskApiError::Invalid(m) => bad_request(m),
        TaskApiError::Busy(m) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, m);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            r
        }
        e @ TaskApiError::NotFound(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        e @ TaskApiError::AlreadyEnded { .. } => error(StatusCode::CONFLICT, e.to_string()),
        TaskApiError::Store(e) => internal(e),
    }
}

/// An error response in the API envelope.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"success": false, "error": message.into()})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {}", uri.path()),
    )
}

/// Parses a JSON body; an empty body is `{}`. Errors name the field.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(
        |e: serde_path_to_error::Error<serde_json::Error>| {
            let path = e.path().to_string();
            let syntax = matches!(
                e.inner().classify(),
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof
            );
            if syntax || path == "." || path.is_empty() || path == "?" {
                bad_request(format!("invalid JSON body: {}", e.inner()))
            } else {
                bad_request(format!("field `{path}`: {}", e.inner()))
            }
        },
    )
}
