//! The REST view of the scheduler: `/api/schedules`.
//!
//! | endpoint | what it does |
//! | --- | --- |
//! | `GET /api/schedules` | every schedule with its last run and next fire times |
//! | `GET /api/schedules/{name}` | one schedule with its newest runs |
//! | `POST /api/schedules/{name}/trigger` | runs it now; answers the run |
//! | `POST /api/schedules/{name}/pause` | stops its fires until resumed |
//! | `POST /api/schedules/{name}/resume` | fires again from now on |

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{ScheduleError, ScheduleView, Scheduler};

/// The `/api/schedules` routes.
pub fn router(scheduler: Scheduler) -> Router {
    Router::new()
        .route("/api/schedules", get(list))
        .route("/api/schedules/{name}", get(one))
        .route("/api/schedules/{name}/trigger", post(trigger))
        .route("/api/schedules/{name}/pause", post(pause))
        .route("/api/schedules/{name}/resume", post(resume))
        .with_state(scheduler)
}

fn failure(e: &ScheduleError) -> Response {
    let status = match e {
        ScheduleError::NotFound(_) => StatusCode::NOT_FOUND,
        ScheduleError::Invalid { .. } => StatusCode::BAD_REQUEST,
        ScheduleError::State(_) => {
            tracing::error!(error = %e, "schedule request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (
        status,
        Json(json!({"success": false, "error": e.to_string()})),
    )
        .into_response()
}

fn view(result: Result<ScheduleView, ScheduleError>) -> Response {
    match result {
        Ok(v) => Json(json!({"success": true, "data": v})).into_response(),
        Err(e) => failure(&e),
    }
}

async fn list(State(s): State<Scheduler>) -> Response {
    let all = s.list().await;
    let count = all.len();
    Json(json!({"success": true, "data": all, "count": count})).into_response()
}

async fn one(State(s): State<Scheduler>, Path(name): Path<String>) -> Response {
    view(s.get(&name).await.ok_or(ScheduleError::NotFound(name)))
}

async fn trigger(State(s): State<Scheduler>, Path(name): Path<String>) -> Response {
    match s.trigger(&name).await {
        Ok(run) => Json(json!({
            "success": true,
            "task_id": run.task_id,
            "message": run.message,
            "data": run,
        }))
        .into_response(),
        Err(e) => failure(&e),
    }
}

async fn pause(State(s): State<Scheduler>, Path(name): Path<String>) -> Response {
    view(s.pause(&name).await)
}

async fn resume(State(s): State<Scheduler>, Path(name): Path<String>) -> Response {
    view(s.resume(&name).await)
}
