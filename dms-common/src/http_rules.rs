//! The rules every DMS HTTP API follows, as one axum middleware ([`enforce`]) both daemons put
//! in front of their routes:
//!
//! - A request that changes something (`POST`, `PUT`, `PATCH`, `DELETE` under `/api/`) must be
//!   `Content-Type: application/json` when it has a body: a web page can send forms and
//!   `text/plain` to any address without asking, so those are refused with 415 and cannot
//!   start a task. A request without a body needs no content type. No CORS headers are sent, so
//!   browsers do not let other sites read the answers either.
//! - Every error answer is the JSON envelope `{"success": false, "error": "..."}`: the
//!   framework's own rejections (a bad query string, a bad path parameter, a body over the
//!   limit, a method the path does not take) are rewritten into it, with a message a user
//!   understands.
//!
//! - A request announcing a body over [`MAX_REST_BODY`] (`Content-Length`) is refused with 413
//!   at once, before its body is read; a longer body without a length is cut there by the
//!   framework's limit (also 413).
//!
//! - An upload path ([`UPLOAD_PATHS`]: a file to import) takes a body of any length whose
//!   content type a web page cannot send without asking (`application/octet-stream`,
//!   `text/csv`, …): a form, `text/plain` or no content type is refused with 415.
//!
//! gRPC calls (`Content-Type: application/grpc…`) pass through untouched.

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The largest REST request body taken (the framework's default limit, checked up front).
pub const MAX_REST_BODY: u64 = 2 << 20;

/// Paths whose body is a file (streamed to disk by the handler, of any length).
pub const UPLOAD_PATHS: &[&str] = &["/api/data/import-file"];

/// Content types a web page may send to any address without asking (CORS "simple" requests).
const SIMPLE_CONTENT_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

/// Longest framework error body rewritten into the envelope.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn envelope(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "error": message})),
    )
        .into_response()
}

/// Whether `req` is a gRPC call: `content-type: application/grpc…` on a path outside the REST
/// API. The content type alone is the client's say-so: a REST path (`/api/…`) is REST whatever
/// it claims, so REST checks (tokens, body rules) cannot be skipped by naming gRPC.
pub fn is_grpc(req: &Request) -> bool {
    !req.uri().path().starts_with("/api/")
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
}

fn has_body(req: &Request) -> bool {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

/// The middleware.
pub async fn enforce(req: Request, next: Next) -> Response {
    if is_grpc(&req) {
        return next.run(req).await;
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if UPLOAD_PATHS.contains(&path.as_str()) && has_body(&req) {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence.is_empty() || SIMPLE_CONTENT_TYPES.contains(&essence.as_str()) {
            let shown = if ct.is_empty() { "none" } else { ct };
            return envelope(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "{method} {path} takes the file as the body: send Content-Type: application/octet-stream (got {shown})"
                ),
            );
        }
        return next.run(req).await;
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = length.filter(|n| *n > MAX_REST_BODY) {
        return envelope(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{method} {path}: the body is larger than this endpoint takes ({n} bytes; at most {MAX_REST_BODY})"
            ),
        );
    }
    let mutating = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if mutating && path.starts_with("/api/") && has_body(&req) {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            let shown = if ct.is_empty() { "none" } else { ct };
            return envelope(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "{method} {path} takes a JSON body: send Content-Type: application/json (got {shown})"
                ),
            );
        }
    }
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || status.is_informational() || json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_ERROR_BODY).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = rewrite(status, &method, &path, text.trim());
    let mut out = envelope(status, &message);
    // Keep headers that matter to the client (Allow on 405, Retry-After).
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.remove(&name) {
            out.headers_mut().insert(name, v);
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// A user-facing message for a framework rejection.
fn rewrite(status: StatusCode, method: &Method, path: &str, text: &str) -> String {
    if let Some(rest) = text.strip_prefix("Failed to deserialize query string: ") {
        return format!("query string: {rest}");
    }
    if text.starts_with("Invalid URL") || text.contains("percent-decode") {
        return format!("{path}: the path is not valid UTF-8 once decoded");
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("{method} {path}: the body is larger than this endpoint takes")
        }
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not take {method}"),
        _ if text.is_empty() => format!(
            "{method} {path}: {}",
            status.canonical_reason().unwrap_or("error").to_lowercase()
        ),
        _ => text.to_owned(),
    }
}
