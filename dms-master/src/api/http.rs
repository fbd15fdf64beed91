//! The master's HTTP API on port 11183: liveness (`/healthz`), readiness (`/readyz`: the store
//! and the journal answer) and the REST API under `/api/data/`.
//!
//! Envelopes follow the seed API: `{"success": true, "data": ...}` for reads,
//! `{"success": true, "task_id", "message"}` when a task is queued, and
//! `{"success": false, "error": "..."}` with 400 (naming the field and the reason), 404 or 409
//! for requests that cannot be served. A rejected request starts nothing.

// Request parsing returns the finished error response as its `Err`; it is built once per
// rejected request, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dms_common::read_api::{self, SeriesQuery};
use dms_common::{SeriesKey, Symbol};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::state::{ApiState, CachedAnswer};
use crate::api::views::{self, DataStatus, SeriesGaps};
use crate::data::export;
use crate::tasks::request::{self, TaskApiError, TaskRequest};
use crate::tasks::{TaskKind, TaskStatus};

pub use crate::tasks::request::{MAX_SYMBOLS, MAX_TASK_LIMIT};
/// Most bars one `/api/data/bars` page returns.
pub use dms_common::read_api::MAX_PAGE_BARS;

/// The REST routes merged with `extra` (gRPC services, the node API), which must have no
/// fallback of their own. The caller puts it behind the request rules
/// ([`dms_common::http_rules::HttpRules::apply`]: tokens, Host, Origin, content types).
pub fn router(state: ApiState, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/data/status", get(status))
        .route("/api/data/import", post(import))
        .route("/api/data/update", post(update))
        .route("/api/data/backfill", post(backfill))
        .route("/api/data/validate", post(validate))
        .route("/api/data/migrate", post(migrate))
        .route("/api/data/check", post(check))
        .route("/api/data/tasks", get(list_tasks))
        .route("/api/data/tasks/{task_id}", get(get_task))
        .route("/api/data/tasks/{task_id}/cancel", post(cancel_task))
        .route("/api/data/delete", post(delete_bars))
        .route("/api/data/gaps", get(gaps))
        .route("/api/data/series", get(series))
        .route("/api/data/overview", get(overview))
        .route("/api/data/bars", get(bars))
        .route("/api/data/export", get(export))
        .route("/api/data/backup", post(backup))
        .route("/api/data/backups", get(list_backups))
        .route("/api/data/backups/{name}/verify", post(verify_backup))
        .route("/api/data/restore", post(restore))
        .route(
            "/api/data/import-file",
            post(import_file).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/data/actions", get(actions))
        .route("/api/sources/{name}/tables", get(source_tables))
        .route("/api/sources/{name}/preview", get(source_preview))
        .fallback(not_found)
        .with_state(state)
        .merge(extra)
}

/// A task as JSON; a running task held back by backpressure says so in its message.
fn task_json(s: &ApiState, t: &crate::tasks::Task) -> Value {
    request::shown(t.clone(), &s.backpressure).to_json()
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

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(s): State<ApiState>) -> Response {
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

async fn status(State(s): State<ApiState>) -> Response {
    let data = DataStatus::gather(&s).await.to_json();
    Json(json!({"success": true, "data": data})).into_response()
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

async fn import(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::FullImport).await
}

async fn update(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::IncrementalUpdate).await
}

async fn backfill(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Backfill).await
}

async fn validate(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Validate).await
}

async fn migrate(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Migrate).await
}

async fn check(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Check).await
}

async fn backup(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Backup).await
}

/// `POST /api/data/restore`: `{"backup": NAME, "dry_run"?}`.
async fn restore(State(s): State<ApiState>, body: Bytes) -> Response {
    start_task(&s, &body, TaskKind::Restore).await
}

async fn verify_backup(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let body = Bytes::from(json!({ "backup": name }).to_string());
    start_task(&s, &body, TaskKind::VerifyBackup).await
}

/// `GET /api/data/backups`: the complete backups, newest first.
async fn list_backups(State(s): State<ApiState>) -> Response {
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
struct TaskQuery {
    status: Option<String>,
    limit: Option<String>,
}

async fn list_tasks(
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

async fn get_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match request::get(&s.tasks, &id).await {
        Ok(t) => Json(json!({"success": true, "data": task_json(&s, &t)})).into_response(),
        Err(e) => task_error(e),
    }
}

async fn cancel_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
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

/// `POST /api/data/import-file?…`: the body is the file (streamed to the uploads directory,
/// at most `file_import.max_upload_bytes`, leaving `file_import.min_free_bytes` free), or
/// `path=` names a file inside `file_import.allowed_dirs` and the body is empty. A dry run
/// answers 200 with its report; an import is queued (202).
async fn import_file(
    State(s): State<ApiState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (query, filename) = match crate::data::import::file::FileImportQuery::from_params(params) {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let upload = if query.path.is_some() {
        None
    } else {
        let name = filename.unwrap_or_else(|| "upload".into());
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match spool(body, &s.uploads_dir, &name, announced, &s.file_import).await {
            Ok(Some(path)) => Some((path, name)),
            Ok(None) => None,
            Err(e) => return e,
        }
    };
    let allowed = &s.file_import.allowed_dirs;
    match request::import_file(&s.tasks, query, upload, allowed).await {
        Ok(request::FileImportAnswer::Queued(task)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "success": true,
                "task_id": task.id,
                "message": format!("file import queued as {}", task.id),
            })),
        )
            .into_response(),
        Ok(request::FileImportAnswer::DryRun(report)) => {
            Json(json!({"success": true, "data": report})).into_response()
        }
        Err(e) => task_error(e),
    }
}

/// Bytes free for an unprivileged writer on the disk of `dir` (None when it cannot be told).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// How often an upload re-checks the free space while it is written.
const FREE_SPACE_CHECK_BYTES: u64 = 64 << 20;

/// Writes a request body to a new file in `dir` (synced), or None when the body is empty.
/// Refuses a body over `limits.max_upload_bytes` (413) and one that would leave less than
/// `limits.min_free_bytes` free on the disk (507), before it starts (from the announced
/// length) and while it is written; nothing is left behind.
async fn spool(
    body: axum::body::Body,
    dir: &std::path::Path,
    name: &str,
    announced: Option<u64>,
    limits: &crate::data::import::file::config::FileImportConfig,
) -> Result<Option<std::path::PathBuf>, Response> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let max = limits.max_upload_bytes.0;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than file_import.max_upload_bytes ({})",
                limits.max_upload_bytes
            ),
        )
    };
    let no_space = |free: u64| {
        error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the upload would leave less than file_import.min_free_bytes ({}) free on the disk of the uploads directory ({free} bytes free)",
                limits.min_free_bytes
            ),
        )
    };
    if announced.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        return Err(internal(format!(
            "the uploads directory {} cannot be created: {e}",
            dir.display()
        )));
    }
    let enough = |free: Option<u64>, more: u64| match free {
        Some(f) if f < more.saturating_add(limits.min_free_bytes.0) => Err(f),
        _ => Ok(()),
    };
    if let Err(free) = enough(free_bytes(dir), announced.unwrap_or(0)) {
        return Err(no_space(free));
    }
    let safe: String = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!(
        "{}-{}-{safe}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.f"),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    enum Stop {
        Io(std::io::Error),
        TooLarge,
        NoSpace(u64),
    }
    let write = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(Stop::Io)?;
        let mut stream = body.into_data_stream();
        let (mut written, mut checked) = (0u64, 0u64);
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| Stop::Io(std::io::Error::other(format!("the upload was cut: {e}"))))?
        {
            written += chunk.len() as u64;
            if written > max {
                return Err(Stop::TooLarge);
            }
            if written - checked >= FREE_SPACE_CHECK_BYTES {
                checked = written;
                enough(free_bytes(dir), 0).map_err(Stop::NoSpace)?;
            }
            file.write_all(&chunk).await.map_err(Stop::Io)?;
        }
        file.sync_all().await.map_err(Stop::Io)?;
        Ok::<u64, Stop>(written)
    };
    let result = write.await;
    if !matches!(result, Ok(n) if n > 0) {
        let _ = tokio::fs::remove_file(&path).await;
    }
    match result {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(path)),
        Err(Stop::TooLarge) => Err(too_large()),
        Err(Stop::NoSpace(free)) => Err(no_space(free)),
        Err(Stop::Io(e)) => Err(internal(format!(
            "the upload cannot be stored in {}: {e}",
            dir.display()
        ))),
    }
}

/// `POST /api/data/delete`: `{"symbol", "interval", "start"?, "end"?, "dry_run"?}`.
async fn delete_bars(State(s): State<ApiState>, body: Bytes) -> Response {
    use crate::pipeline::delete::{self, DeleteError, DeleteRequest};
    let req: DeleteRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match delete::delete(&s.store, &s.ingestor, &req).await {
        Ok(d) => {
            let message = match (d.dry_run, d.journal_seq) {
                (true, _) => format!("dry run: {} bars would be deleted", d.bars),
                (false, None) => "nothing to delete".to_owned(),
                (false, Some(seq)) => format!(
                    "{} bars are deleted as journal entry {seq} is applied (replicas too)",
                    d.bars
                ),
            };
            Json(json!({"success": true, "message": message, "data": d})).into_response()
        }
        Err(e @ DeleteError::Invalid(_)) => bad_request(e.to_string()),
        Err(e @ DeleteError::Store(_)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e @ DeleteError::Journal(_)) => internal(e),
    }
}

fn series_key(q: &SeriesQuery) -> Result<SeriesKey, Response> {
    q.series_key().map_err(bad_request)
}

async fn gaps(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
    let key = match series_key(&q) {
        Ok(k) => k,
        Err(e) => return e,
    };
    match views::series_gaps(&s, &key).await {
        Ok(SeriesGaps { report, calendar }) => {
            let gaps: Vec<Value> = report
                .gaps
                .iter()
                .map(|g| json!({"start": g.start.to_rfc3339(), "end": g.end.to_rfc3339(), "missing": g.missing}))
                .collect();
            Json(json!({
                "success": true,
                "data": {
                    "symbol": key.symbol,
                    "interval": key.interval,
                    "calendar": calendar,
                    "checked_from": report.checked.map(|c| c.0.to_rfc3339()),
                    "checked_to": report.checked.map(|c| c.1.to_rfc3339()),
                    "expected": report.expected,
                    "stored": report.stored,
                    "missing": report.missing,
                    "gaps": gaps,
                    "provider_missing": report
                        .provider_missing
                        .iter()
                        .map(|t| t.to_rfc3339())
                        .collect::<Vec<_>>(),
                }
            }))
            .into_response()
        }
        Err(e) => internal(e),
    }
}

/// `GET /api/data/overview?prefix=&interval=&gaps=`.
async fn overview(State(s): State<ApiState>, Query(q): Query<views::OverviewQuery>) -> Response {
    match views::overview(&s, &q).await {
        Ok(o) => Json(json!({
            "success": true,
            "count": o.rows.len(),
            "store_bytes": o.store_bytes,
            "data": o.rows,
        }))
        .into_response(),
        Err(e) if e.starts_with("field") => bad_request(e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn series(State(s): State<ApiState>) -> Response {
    let rows = match views::catalog_rows(&s).await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (o, c) = (&r.overview, r.catalog.as_ref());
            json!({
                "symbol": o.key.symbol,
                "interval": o.key.interval,
                "count": o.count,
                "first": o.first.to_rfc3339(),
                "last": o.last.to_rfc3339(),
                "source": r.source,
                "last_fetch_at": c.and_then(|c| c.last_fetch_at_ms).and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()),
                "last_fetch_ok": c.and_then(|c| c.last_fetch_ok),
                "last_error": c.and_then(|c| c.last_error.clone()),
                "provisional_from": c.and_then(|c| c.provisional_from).map(|t| t.to_rfc3339()),
            })
        })
        .collect();
    Json(json!({"success": true, "count": data.len(), "data": data})).into_response()
}

async fn actions(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
    let symbol = match q.symbol.as_deref().map(Symbol::new).transpose() {
        Ok(s) => s.map(|s| s.to_string()),
        Err(e) => return bad_request(format!("parameter `symbol`: {e}")),
    };
    match s.catalog.actions(symbol).await {
        Ok(a) => Json(json!({"success": true, "count": a.len(), "data": a})).into_response(),
        Err(e) => internal(e),
    }
}

/// The SQL-table source `name`, or the 404 naming it.
fn sql_source<'a>(
    s: &'a ApiState,
    name: &str,
) -> Result<&'a crate::sources::sql::SqlTable, Response> {
    s.tasks.sql_source(name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no SQL source named {name:?} (see sources[] with type: sql)"),
        )
    })
}

/// `GET /api/sources/{name}/tables`: the tables of a SQL source's database and their columns
/// with types, to choose a table and a mapping.
async fn source_tables(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let table = match sql_source(&s, &name) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match table.tables().await {
        Ok(t) => Json(json!({"success": true, "count": t.len(), "data": t})).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Query of `GET /api/sources/{name}/preview`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    limit: Option<usize>,
}

/// `GET /api/sources/{name}/preview?limit=`: the first rows of a SQL source as they would be
/// imported with its mapping (bars with their series), and the rows that are not bars.
async fn source_preview(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(q)) => q.limit.unwrap_or(20),
        Err(_) => return bad_request("parameter `limit`: give a number of rows, 1 to 1000"),
    };
    if !(1..=1000).contains(&limit) {
        return bad_request(format!(
            "parameter `limit`: {limit} is not between 1 and 1000"
        ));
    }
    let table = match sql_source(&s, &name) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match table.preview(limit).await {
        Ok(rows) => {
            let (mut bars, mut problems) = (Vec::new(), Vec::new());
            for row in rows {
                match row {
                    crate::sources::sql::SqlRow::Bar(key, bar) => {
                        let mut v = bar.to_json();
                        v["symbol"] = json!(key.symbol);
                        v["interval"] = json!(key.interval);
                        bars.push(v);
                    }
                    crate::sources::sql::SqlRow::Problem(p) => problems.push(p),
                }
            }
            Json(json!({
                "success": true,
                "mode": table.config().mode,
                "key": table.config().key_columns(),
                "data": bars,
                "problems": problems,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// `GET /api/data/export?format=&symbols=&interval=&start=&end=&compression=`: the selected
/// series as one file, streamed as it is written ([`crate::data::export`]).
async fn export(
    State(s): State<ApiState>,
    query: Result<Query<export::ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_request(e.body_text()),
    };
    let request = match q.check() {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let plan = match export::plan(&*s.store, request).await {
        Ok(p) => p,
        Err(e @ export::PlanError::Invalid(_)) => return bad_request(e.to_string()),
        Err(e @ export::PlanError::Store(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
    };
    let body = axum::body::Body::from_stream(export::start(s.store.clone(), &plan).into_bytes());
    // File names are made of symbols, intervals and dates: no quote or backslash to escape.
    let disposition = format!("attachment; filename=\"{}\"", plan.file_name);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(plan.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn bars(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
    let req = match q.bars_request() {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let (key, csv) = (&req.key, req.csv);
    let cache_key = format!(
        "{key}|{}|{}|{}|{csv}",
        req.range.start.0, req.range.end.0, req.limit
    );
    let version = s.versions.get(key);
    if let Some(hit) = s.bars_cache.get(&cache_key, version) {
        return cached_response(&hit);
    }
    let (page, next) = match read_api::read_page(&*s.store, &req).await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let response = if csv {
        CachedAnswer {
            content_type: "text/csv; charset=utf-8",
            body: Bytes::from(read_api::bars_csv(&page)),
            next_start: next,
        }
    } else {
        CachedAnswer {
            content_type: "application/json",
            body: Bytes::from(read_api::bars_json(key, &page, next).to_string()),
            next_start: next,
        }
    };
    let response = Arc::new(response);
    s.bars_cache.put(cache_key, version, response.clone());
    cached_response(&response)
}

fn cached_response(r: &CachedAnswer) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(r.content_type),
        )],
        r.body.clone(),
    )
        .into_response();
    if let Some(n) = r.next_start
        && let Ok(v) = HeaderValue::from_str(&n.to_rfc3339())
    {
        response.headers_mut().insert("x-next-start", v);
    }
    response
}
