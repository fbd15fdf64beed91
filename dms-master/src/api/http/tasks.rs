//! The task routes: queuing a task from a JSON body ([`TaskRequest`], answered 202 with its
//! id), listing, showing and cancelling tasks, and listing the backups.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{bad_request, internal, parse_body, task_error};
use crate::api::state::ApiState;
use crate::tasks::request::{self, TaskRequest};
use crate::tasks::{TaskKind, TaskStatus};

/// A task as JSON; a running task held back by backpressure says so in its message.
fn task_json(s: &ApiState, t: &crate::tasks::Task) -> Value {
    request::shown(t.clone(), &s.backpressure).to_json()
}
pub(super) async fn import(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::FullImport).await
}

pub(super) async fn update(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::IncrementalUpdate).await
}

pub(super) async fn backfill(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Backfill).await
}

pub(super) async fn validate(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Validate).await
}

pub(super) async fn migrate(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Migrate).await
}

pub(super) async fn check(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Check).await
}

pub(super) async fn backup(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Backup).await
}

/// `POST /api/data/restore`: `{"backup": NAME, "dry_run"?}`.
pub(super) async fn restore(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Restore).await
}

pub(super) async fn verify_backup(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let body = Bytes::from(json!({ "backup": name }).to_string());
    start_task(&s, &body, TaskKind::VerifyBackup).await
}

/// `GET /api/data/backups`: the complete backups, newest first.
pub(super) async fn list_backups(State(s): State<ApiState>) -> Response {
    let dir = s.tasks.backup_dir().to_owned();
    let listed = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::data::backup::list(&dir)).await
    };
    match listed {
        Ok(Ok(list)) => Json(json!({
            "success": true,
            "dir": dir.display().to_string(),
            "count": list.len(),
            "data": list,
        }))
        .into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

/// Parses the body as a [`TaskRequest`] and queues the task (202), or answers why not.
async fn start_task(s: &ApiState, body: &Bytes, kind: TaskKind) -> Response {
    let req: TaskRequest = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match request::start(&s.tasks, kind, req).await {
        Ok(task) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "success": true,
                "task_id": task.id,
                "message": format!("{} queued as {}", kind.display_name(), task.id),
            })),
        )
            .into_response(),
        Err(e) => task_error(e),
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct TaskQuery {
    status: Option<String>,
    limit: Option<String>,
}

pub(super) async fn list_tasks(
    State(s): State<ApiState>,
    query: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let params = request::parse_status(q.status.as_deref())
        .and_then(|status| Ok((status, request::list_limit(q.limit.as_deref())?)));
    let (status, limit) = match params {
        Ok(p) => p,
        Err(e) => return task_error(e),
    };
    match request::list(&s.tasks, status, limit).await {
        Ok(tasks) => {
            let data: Vec<Value> = tasks.iter().map(|t| task_json(&s, t)).collect();
            Json(json!({"success": true, "count": data.len(), "data": data})).into_response()
        }
        Err(e) => task_error(e),
    }
}

pub(super) async fn get_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match request::get(&s.tasks, &id).await {
        Ok(t) => Json(json!({"success": true, "data": task_json(&s, &t)})).into_response(),
        Err(e) => task_error(e),
    }
}

pub(super) async fn cancel_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match request::cancel(&s.tasks, &id).await {
        Ok(t) => Json(json!({
            "success": true,
            "message": if t.status == TaskStatus::Cancelled { "task cancelled" } else { "cancel requested; the task stops within 2 s" },
            "data": t.to_json(),
        }))
        .into_response(),
        Err(e) => task_error(e),
    }
}
