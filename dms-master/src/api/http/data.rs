//! The stored data: bars (a page, cached per series version), the series and their catalog
//! rows, the overview, a series' gaps, corporate actions, deletes through the journal, and
//! exports streamed as they are written.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dms_common::read_api::{self, SeriesQuery};
use dms_common::{SeriesKey, Symbol};
use serde_json::{Value, json};

use super::{bad_request, error, internal, parse_body};
use crate::api::state::{ApiState, CachedAnswer};
use crate::api::views::{self, SeriesGaps};
use crate::data::export;

/// `POST /api/data/delete`: `{"symbol", "interval", "start"?, "end"?, "dry_run"?}`.
pub(super) async fn delete_bars(State(s): State<ApiState>, body: Bytes) -> Response {
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

pub(super) async fn gaps(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
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
pub(super) async fn overview(
    State(s): State<ApiState>,
    Query(q): Query<views::OverviewQuery>,
) -> Response {
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

pub(super) async fn series(State(s): State<ApiState>) -> Response {
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

pub(super) async fn actions(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
    let symbol = match q.symbol.as_deref().map(Symbol::new).transpose() {
        Ok(s) => s.map(|s| s.to_string()),
        Err(e) => return bad_request(format!("parameter `symbol`: {e}")),
    };
    match s.catalog.actions(symbol).await {
        Ok(a) => Json(json!({"success": true, "count": a.len(), "data": a})).into_response(),
        Err(e) => internal(e),
    }
}
/// `GET /api/data/export?format=&symbols=&interval=&start=&end=&compression=`: the selected
/// series as one file, streamed as it is written ([`crate::data::export`]).
pub(super) async fn export(
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

pub(super) async fn bars(State(s): State<ApiState>, Query(q): Query<SeriesQuery>) -> Response {
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
