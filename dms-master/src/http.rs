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

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dms_common::journal::Journal;
use dms_common::read_api::{self, SeriesQuery};
use dms_common::store::SharedStore;
use dms_common::{Interval, SeriesKey, Symbol, Timestamp};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::applier::{SeriesVersions, StatusCell};
use crate::catalog::Catalog;
use crate::import::ImportSummary;
use crate::quarantine::Quarantine;
use crate::tasks::manager::{SubmitError, TaskManager};
use crate::tasks::{TaskKind, TaskParams, TaskStatus};

/// Most bars one `/api/data/bars` page returns.
pub use dms_common::read_api::MAX_PAGE_BARS;
/// Most series one request may select with `limit`.
pub const MAX_TASK_LIMIT: usize = 1_000_000;
/// Most different symbols one task request may name.
pub const MAX_SYMBOLS: usize = 20_000;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: SharedStore,
    pub journal: Journal,
    pub quarantine: Quarantine,
    pub dead_letters: crate::dead_letters::DeadLetters,
    pub backpressure: crate::ingest::Backpressure,
    pub catalog: Catalog,
    pub applier: StatusCell,
    pub versions: SeriesVersions,
    pub imports: Arc<Mutex<Vec<ImportSummary>>>,
    pub tasks: Arc<TaskManager>,
    pub bars_cache: Arc<BarsCache>,
}

/// An LRU cache of `/api/data/bars` answers, each valid while its series' version is unchanged
/// (every write the store applies to a series bumps the version), bounded by entries and by
/// bytes.
#[derive(Debug)]
pub struct BarsCache {
    entries: Mutex<lru::LruCache<String, (u64, Arc<CachedAnswer>)>>,
    max_bytes: usize,
    bytes: std::sync::atomic::AtomicUsize,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// A cached answer.
#[derive(Debug)]
pub struct CachedAnswer {
    content_type: &'static str,
    body: Bytes,
    next_start: Option<Timestamp>,
}

impl BarsCache {
    /// At most `capacity` answers and `max_bytes` of bodies.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        BarsCache {
            entries: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("positive"),
            )),
            max_bytes,
            bytes: Default::default(),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn get(&self, key: &str, version: u64) -> Option<Arc<CachedAnswer>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let hit = match entries.get(key) {
            Some((v, r)) if *v == version => Some(r.clone()),
            _ => None,
        };
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        hit
    }

    fn put(&self, key: String, version: u64, response: Arc<CachedAnswer>) {
        use std::sync::atomic::Ordering::Relaxed;
        let size = response.body.len();
        if size > self.max_bytes / 4 {
            return; // too big to be worth keeping
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, (_, old))) = entries.push(key, (version, response)) {
            self.bytes.fetch_sub(old.body.len(), Relaxed);
        }
        self.bytes.fetch_add(size, Relaxed);
        while self.bytes.load(Relaxed) > self.max_bytes {
            match entries.pop_lru() {
                Some((_, (_, old))) => {
                    self.bytes.fetch_sub(old.body.len(), Relaxed);
                }
                None => break,
            }
        }
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// The router with every endpoint.
/// The REST routes merged with `extra` (gRPC services, the node API), which must have no
/// fallback of their own.
pub fn router(state: ApiState, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/data/status", get(status))
        .route("/api/data/import", post(import))
        .route("/api/data/update", post(update))
        .route("/api/data/backfill", post(backfill))
        .route("/api/data/validate", post(validate))
        .route("/api/data/tasks", get(list_tasks))
        .route("/api/data/tasks/{task_id}", get(get_task))
        .route("/api/data/tasks/{task_id}/cancel", post(cancel_task))
        .route("/api/data/gaps", get(gaps))
        .route("/api/data/series", get(series))
        .route("/api/data/bars", get(bars))
        .route("/api/data/actions", get(actions))
        .fallback(not_found)
        .with_state(state)
        .merge(extra)
        .layer(axum::middleware::from_fn(dms_common::http_rules::enforce))
}

/// A task as JSON; a running task held back by backpressure says so in its message.
fn task_json(s: &ApiState, t: &crate::tasks::Task) -> Value {
    let mut v = t.to_json();
    if t.status == TaskStatus::Running
        && let Some(reason) = s.backpressure.waiting()
    {
        v["message"] = Value::from(reason);
    }
    v
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
        None => s.journal.check().await.map_err(|e| e.to_string()),
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

fn date_of(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d").to_string()
}

async fn status(State(s): State<ApiState>) -> Response {
    // Read in the order the write path moves (imports journal, the store applies, the counts
    // follow), so the answer is never torn the other way: an import shown done is within the
    // head, and the counts include everything shown applied.
    let imports = s.imports.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let journal_head = s.journal.head();
    let applier = s.applier.get();
    // With the store unreachable, the counts are unknown (null) but the rest, the journal
    // waiting for the store above all, is what an operator needs to see.
    let (overview, store_error) = match s.store.overview().await {
        Ok(o) => (Some(o), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let journal_stats = s.journal.stats().await.ok();
    let quarantined = s.quarantine.count().await.unwrap_or(0);
    let dead = s.dead_letters.count().await.unwrap_or((0, 0));
    let cursors = s.journal.cursors().await.unwrap_or_default();
    let (hits, misses) = s.bars_cache.stats();
    let mut data = read_api::status_totals(overview.as_deref());
    data.as_object_mut().expect("totals are an object").extend(
        json!({
            "store": s.store.backend(),
            "store_error": store_error,
            "journal": {
                "head": journal_head,
                "entries": journal_stats.map(|j| j.entries),
                "bytes": journal_stats.map(|j| j.bytes),
                "append_error": s.journal.append_error(),
                "store_applied": applier.applied_seq,
                "store_lag": journal_head.0.saturating_sub(applier.applied_seq.0),
                "store_retries": applier.retries,
                "store_last_error": applier.last_error,
                "cursors": cursors,
            },
            "quarantined_bars": quarantined,
            "dead_letters": {"entries": dead.0, "bars": dead.1},
            "backpressure": s.backpressure.waiting(),
            "kept_series": s.tasks.universe().len(),
            "imports": imports,
            "bars_cache": {"hits": hits, "misses": misses},
        })
        .as_object()
        .expect("an object")
        .clone(),
    );
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

/// A date (`2024-01-31`) or a date-time (RFC 3339) in a request.
fn parse_when(field: &str, raw: &str) -> Result<Timestamp, Response> {
    read_api::parse_when(field, raw).map_err(bad_request)
}

fn parse_symbols(raw: Option<Vec<String>>) -> Result<Option<Vec<Symbol>>, Response> {
    let Some(list) = raw else { return Ok(None) };
    if list.is_empty() {
        return Err(bad_request(
            "field `symbols`: the list is empty; leave it out to select every kept series",
        ));
    }
    // The same symbol twice selects it once.
    let mut seen = std::collections::HashSet::new();
    let list: Vec<String> = list
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect();
    if list.len() > MAX_SYMBOLS {
        return Err(bad_request(format!(
            "field `symbols`: at most {MAX_SYMBOLS} different symbols"
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| Symbol::new(s).map_err(|e| bad_request(format!("field `symbols[{i}]`: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_interval(field: &str, raw: Option<&str>) -> Result<Option<Interval>, Response> {
    raw.map(|r| {
        r.parse()
            .map_err(|e| bad_request(format!("field `{field}`: {e}")))
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    start_date: Option<String>,
    end_date: Option<String>,
    limit: Option<usize>,
    skip: Option<usize>,
    symbols: Option<Vec<String>>,
    interval: Option<String>,
    source: Option<String>,
}

async fn import(State(s): State<ApiState>, body: Bytes) -> Response {
    let req: ImportRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let params = match import_params(req) {
        Ok(p) => p,
        Err(e) => return e,
    };
    submit(&s, TaskKind::FullImport, "full import", params).await
}

fn check_paging(limit: Option<usize>, skip: Option<usize>) -> Result<(), Response> {
    if let Some(l) = limit
        && (l == 0 || l > MAX_TASK_LIMIT)
    {
        return Err(bad_request(format!(
            "field `limit`: {l} is out of range; use 1 to {MAX_TASK_LIMIT}"
        )));
    }
    if let Some(k) = skip
        && k > MAX_TASK_LIMIT
    {
        return Err(bad_request(format!(
            "field `skip`: {k} is out of range; use 0 to {MAX_TASK_LIMIT}"
        )));
    }
    Ok(())
}

fn import_params(req: ImportRequest) -> Result<TaskParams, Response> {
    check_paging(req.limit, req.skip)?;
    let start = req
        .start_date
        .as_deref()
        .map(|d| parse_when("start_date", d))
        .transpose()?;
    let end = req
        .end_date
        .as_deref()
        .map(|d| parse_when("end_date", d))
        .transpose()?;
    if let (Some(a), Some(b)) = (start, end)
        && b <= a
    {
        return Err(bad_request(format!(
            "field `end_date`: {} is not after start_date {}",
            date_of(b),
            date_of(a)
        )));
    }
    if let Some(a) = start
        && a > Timestamp::now()
    {
        return Err(bad_request(format!(
            "field `start_date`: {} is in the future",
            date_of(a)
        )));
    }
    Ok(TaskParams {
        symbols: parse_symbols(req.symbols)?,
        interval: parse_interval("interval", req.interval.as_deref())?,
        source: req.source,
        start,
        end,
        skip: req.skip,
        limit: req.limit,
        ..Default::default()
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    days: Option<u32>,
    #[serde(default)]
    only_existing: bool,
    symbols: Option<Vec<String>>,
    interval: Option<String>,
    source: Option<String>,
    limit: Option<usize>,
    skip: Option<usize>,
}

async fn update(State(s): State<ApiState>, body: Bytes) -> Response {
    let req: UpdateRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = check_paging(req.limit, req.skip) {
        return e;
    }
    if let Some(d) = req.days
        && !(1..=36_500).contains(&d)
    {
        return bad_request(format!("field `days`: {d} is out of range; use 1 to 36500"));
    }
    let params = match (
        parse_symbols(req.symbols),
        parse_interval("interval", req.interval.as_deref()),
    ) {
        (Ok(symbols), Ok(interval)) => TaskParams {
            symbols,
            interval,
            source: req.source,
            days: req.days,
            only_existing: req.only_existing,
            limit: req.limit,
            skip: req.skip,
            ..Default::default()
        },
        (Err(e), _) | (_, Err(e)) => return e,
    };
    submit(
        &s,
        TaskKind::IncrementalUpdate,
        "incremental update",
        params,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectRequest {
    symbols: Option<Vec<String>>,
    interval: Option<String>,
    source: Option<String>,
}

async fn select_task(s: &ApiState, body: &Bytes, kind: TaskKind, name: &str) -> Response {
    let req: SelectRequest = match parse_body(body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let params = match (
        parse_symbols(req.symbols),
        parse_interval("interval", req.interval.as_deref()),
    ) {
        (Ok(symbols), Ok(interval)) => TaskParams {
            symbols,
            interval,
            source: req.source,
            ..Default::default()
        },
        (Err(e), _) | (_, Err(e)) => return e,
    };
    submit(s, kind, name, params).await
}

async fn backfill(State(s): State<ApiState>, body: Bytes) -> Response {
    select_task(&s, &body, TaskKind::Backfill, "gap backfill").await
}

async fn validate(State(s): State<ApiState>, body: Bytes) -> Response {
    select_task(&s, &body, TaskKind::Validate, "validation").await
}

async fn submit(s: &ApiState, kind: TaskKind, name: &str, params: TaskParams) -> Response {
    match s.tasks.submit(kind, name.to_owned(), params).await {
        Ok(task) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "success": true,
                "task_id": task.id,
                "message": format!("{name} queued as {}", task.id),
            })),
        )
            .into_response(),
        Err(SubmitError::Invalid(m)) => bad_request(m),
        Err(SubmitError::Store(e)) => internal(e),
    }
}

#[derive(Debug, Deserialize)]
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
    let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match raw.parse::<TaskStatus>() {
            Ok(st) => Some(st),
            Err(e) => return bad_request(format!("parameter `status`: {e}")),
        },
    };
    let limit = match q.limit.as_deref() {
        None => 20,
        Some(raw) => match raw.parse::<usize>() {
            Ok(l) if (1..=1000).contains(&l) => l,
            _ => {
                return bad_request(format!(
                    "parameter `limit`: {raw:?} is not a number from 1 to 1000"
                ));
            }
        },
    };
    match s.tasks.tasks().list(status, limit).await {
        Ok(tasks) => {
            let data: Vec<Value> = tasks.iter().map(|t| task_json(&s, t)).collect();
            Json(json!({"success": true, "count": data.len(), "data": data})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn get_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.tasks.tasks().get(&id).await {
        Ok(Some(t)) => Json(json!({"success": true, "data": task_json(&s, &t)})).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no task {id:?}")),
        Err(e) => internal(e),
    }
}

async fn cancel_task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    match s.tasks.tasks().get(&id).await {
        Ok(Some(t)) if t.status.is_final() => {
            return error(
                StatusCode::CONFLICT,
                format!("task {id} already ended ({})", t.status),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no task {id:?}")),
        Err(e) => return internal(e),
    }
    match s.tasks.cancel(&id).await {
        Ok(Some(t)) => Json(json!({
            "success": true,
            "message": if t.status == TaskStatus::Cancelled { "task cancelled" } else { "cancel requested; the task stops within 2 s" },
            "data": t.to_json(),
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no task {id:?}")),
        Err(e) => internal(e),
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
    let (calendar, limit) = match s.tasks.universe().get(&key) {
        Some(e) => (e.calendar.clone(), e.source.history_limit(key.interval)),
        None => (crate::universe::guess_calendar(&key.symbol), None),
    };
    match crate::gaps::find_gaps(&*s.store, &key, &calendar, limit, Timestamp::now()).await {
        Ok(report) => {
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
                    "calendar": format!("{calendar:?}").split(' ').next().unwrap_or(""),
                    "checked_from": report.checked.map(|c| c.0.to_rfc3339()),
                    "checked_to": report.checked.map(|c| c.1.to_rfc3339()),
                    "expected": report.expected,
                    "stored": report.stored,
                    "missing": report.missing,
                    "gaps": gaps,
                }
            }))
            .into_response()
        }
        Err(e) => internal(e),
    }
}

async fn series(State(s): State<ApiState>) -> Response {
    let overview = match s.store.overview().await {
        Ok(o) => o,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    };
    let catalog = s.catalog.entries().await.unwrap_or_default();
    let catalog: std::collections::HashMap<(&str, &str), &crate::catalog::CatalogEntry> = catalog
        .iter()
        .map(|c| ((c.symbol.as_str(), c.interval.as_str()), c))
        .collect();
    let data: Vec<Value> = overview
        .iter()
        .map(|o| {
            let c = catalog
                .get(&(o.key.symbol.as_str(), o.key.interval.as_str()))
                .copied();
            let source = c
                .map(|c| c.source.clone())
                .or_else(|| s.tasks.universe().get(&o.key).map(|e| e.source.name().to_owned()));
            json!({
                "symbol": o.key.symbol,
                "interval": o.key.interval,
                "count": o.count,
                "first": o.first.to_rfc3339(),
                "last": o.last.to_rfc3339(),
                "source": source,
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
