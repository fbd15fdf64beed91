//! Liveness (`/healthz`), readiness (`/readyz`: the store and the journal answer) and the
//! data status (`/api/data/status`, [`DataStatus`]).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::state::ApiState;
use crate::api::views::DataStatus;

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(s): State<ApiState>) -> Response {
    let store = s.store.check().await.map_err(|e| e.to_string());
    let journal = match s.journal.append_error() {
        Some(e) => Err(format!("appends fail: {e}")),
        None => match s.tasks.tasks().write_error() {
            Some(e) => Err(format!("writes to the state file fail: {e}")),
            None => s.journal.check().await.map_err(|e| e.to_string()),
        },
    };
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

pub(super) async fn status(State(s): State<ApiState>) -> Response {
    let data = DataStatus::gather(&s).await.to_json();
    Json(json!({"success": true, "data": data})).into_response()
}
