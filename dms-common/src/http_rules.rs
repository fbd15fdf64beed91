//! The rules every DMS HTTP request passes, as one axum middleware ([`enforce`]) both daemons
//! put in front of everything they serve, with its settings in [`HttpRules`]. The threat: any
//! client on the network, and any web page a user of the daemon opens (which can send forms,
//! `text/plain` bodies and `no-cors` fetches to any address, and can rebind a DNS name of its
//! own to the daemon's address).
//!
//! - gRPC paths (`/package.Service/Method`, [`is_grpc_path`]) answer only HTTP/2 requests with
//!   an `application/grpc…` content type (400 for HTTP/1.x, 415 otherwise): no request a
//!   browser can send without a CORS preflight reaches a gRPC service. Each service checks its
//!   own token.
//! - `Host` must be an IP address, `localhost`, or a name in `http.server_names` (403
//!   otherwise): a DNS-rebinding page reaches the daemon under its own name, never under one of
//!   these. An `Origin` that is present must be the daemon's own (the scheme-less authority of
//!   `Host`) or listed in `http.allowed_origins` (403 otherwise). No CORS headers are sent.
//! - Tokens ([`crate::auth::needed_access`]): with `auth` configured, everything but the health
//!   probes needs the read-only or the full token; writes the full token.
//! - A request that changes something (`POST`, `PUT`, `PATCH`, `DELETE`) must say
//!   `Content-Type: application/json`, with or without a body (415 otherwise): a web page cannot
//!   send that without a preflight. An upload path ([`UPLOAD_PATHS`]: a file to import) takes a
//!   body of a content type a page cannot send without asking (`application/octet-stream`,
//!   `text/csv`, …): a form, `text/plain` or no content type is refused with 415.
//! - A request announcing a body over [`MAX_REST_BODY`] (`Content-Length`) is refused with 413
//!   at once, before its body is read; a longer body without a length is cut there by the
//!   framework's limit (also 413). Upload bodies are bounded by their handler.
//! - Every error answer is the JSON envelope `{"success": false, "error": "..."}`: the
//!   framework's own rejections (a bad query string, a bad path parameter, a body over the
//!   limit, a method the path does not take) are rewritten into it, with a message a user
//!   understands, quoting at most [`MAX_EXCERPT_CHARS`] of what the request sent.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::Authorizer;

/// Most characters of a request's own text (a header, a parameter, a line of a file) an
/// error message quotes.
pub const MAX_EXCERPT_CHARS: usize = 200;

/// `text` cut to at most [`MAX_EXCERPT_CHARS`] characters (on a character boundary, `…`
/// marking the cut), for quoting untrusted input in a message.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_EXCERPT_CHARS) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// What [`enforce`] checks beyond the fixed rules: the tokens, and the names and origins the
/// daemon answers to.
#[derive(Debug, Clone, Default)]
pub struct HttpRules {
    auth: Authorizer,
    public_metrics: bool,
    server_names: Arc<[String]>,
    allowed_origins: Arc<[String]>,
}

impl HttpRules {
    /// Rules checking `auth`'s tokens (`public_metrics`: `/metrics` needs none), accepting
    /// `server_names` as `Host` besides IP addresses and `localhost`, and `allowed_origins`
    /// (`scheme://host[:port]`) as `Origin` besides the daemon's own.
    pub fn new(
        auth: Authorizer,
        public_metrics: bool,
        server_names: &[String],
        allowed_origins: &[String],
    ) -> HttpRules {
        HttpRules {
            auth,
            public_metrics,
            server_names: server_names
                .iter()
                .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            allowed_origins: allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// `router` behind [`enforce`] with these rules.
    pub fn apply(self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self, enforce))
    }

    /// Whether `host` (a `Host` header: `name[:port]`, `[v6]:port`) names this daemon.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).trim_end_matches('.').to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.server_names.contains(&name)
    }

    /// Whether `origin` may send requests: the daemon's own (same authority as `host`) or
    /// configured.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let (scheme, authority) = match origin.split_once("://") {
            Some(p) => p,
            None => return false,
        };
        let Some(host) = host else { return false };
        let default_port = match scheme {
            "http" => ":80",
            "https" => ":443",
            _ => return false,
        };
        let strip = |a: &str| a.strip_suffix(default_port).unwrap_or(a).to_owned();
        strip(authority) == strip(&host.trim().to_ascii_lowercase())
    }
}

/// The host part of a `Host` value (`example.com:80` → `example.com`, `[::1]:80` → `::1`).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

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

/// Whether `path` is a gRPC method's path: `/package.Service/Method` (a first segment with a
/// dot, then a method), never under `/api/`.
pub fn is_grpc_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    match rest.split_once('/') {
        Some((service, method)) => {
            service.contains('.') && !method.is_empty() && !method.contains('/')
        }
        None => false,
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Whether `req` is a gRPC call: a gRPC path ([`is_grpc_path`]) over HTTP/2 with an
/// `application/grpc…` content type. Anything else is an HTTP request, whatever it claims, so
/// the REST checks (tokens, body rules, the request timeout) cannot be skipped by naming gRPC.
pub fn is_grpc(req: &Request) -> bool {
    req.version() == Version::HTTP_2
        && is_grpc_path(req.uri().path())
        && content_type(req.headers()).starts_with("application/grpc")
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

/// The middleware (see the module doc for the rules, in the order checked).
pub async fn enforce(State(rules): State<HttpRules>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if is_grpc_path(&path) {
        if req.version() != Version::HTTP_2 {
            return envelope(
                StatusCode::BAD_REQUEST,
                &format!("{} is a gRPC method: call it over HTTP/2", excerpt(&path)),
            );
        }
        if !content_type(req.headers()).starts_with("application/grpc") {
            return envelope(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "{} is a gRPC method: send Content-Type: application/grpc",
                    excerpt(&path)
                ),
            );
        }
        let mut response = next.run(req).await;
        // A refusal is answered in the headers (trailers-only): keep its message short.
        if let Some(bounded) = response
            .headers()
            .get("grpc-message")
            .and_then(|v| bound_grpc_message(v.as_bytes()))
        {
            response.headers_mut().insert("grpc-message", bounded);
        }
        return response;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    if let Some(h) = &host
        && !rules.host_allowed(h)
    {
        return envelope(
            StatusCode::FORBIDDEN,
            &format!(
                "Host {:?} is not a name of this daemon: add it to http.server_names (IP addresses and localhost are always accepted)",
                excerpt(h)
            ),
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let shown = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        if !rules.origin_allowed(&shown, host.as_deref()) {
            return envelope(
                StatusCode::FORBIDDEN,
                &format!(
                    "requests from web pages of origin {:?} are not accepted: add it to http.allowed_origins",
                    excerpt(&shown)
                ),
            );
        }
    }
    if let Err(refused) = crate::auth::check_request(
        &rules.auth,
        rules.public_metrics,
        &method,
        &path,
        req.headers(),
    ) {
        return refused;
    }
    let mutating = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let ct = content_type(req.headers());
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let shown = if ct.is_empty() {
        "none".to_owned()
    } else {
        excerpt(ct)
    };
    if UPLOAD_PATHS.contains(&path.as_str()) && has_body(&req) {
        if essence.is_empty() || SIMPLE_CONTENT_TYPES.contains(&essence.as_str()) {
            return envelope(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!(
                    "{method} {path} takes the file as the body: send Content-Type: application/octet-stream (got {shown})"
                ),
            );
        }
        return rewrite_errors(next.run(req).await, &method, &path).await;
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
                "{method} {}: the body is larger than this endpoint takes ({n} bytes; at most {MAX_REST_BODY})",
                excerpt(&path)
            ),
        );
    }
    if mutating && essence != "application/json" {
        return envelope(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "{method} {} needs Content-Type: application/json, also without a body (got {shown})",
                excerpt(&path)
            ),
        );
    }
    rewrite_errors(next.run(req).await, &method, &path).await
}

/// A non-JSON error answer of the framework rewritten into the envelope.
async fn rewrite_errors(response: Response, method: &Method, path: &str) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.is_success() || status.is_informational() {
        return response;
    }
    if json {
        return bound_json_error(response).await;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_ERROR_BODY).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = rewrite(status, method, &excerpt(path), text.trim());
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

/// Longest error message an answer carries (REST `error`, gRPC `grpc-message`); a longer one
/// is cut.
const MAX_ERROR_MESSAGE_CHARS: usize = 1_000;

/// `message` with every quoted text in it (`"…"`, as `{:?}` quotes a request's value) cut to
/// [`MAX_EXCERPT_CHARS`], and the whole cut to [`MAX_ERROR_MESSAGE_CHARS`]: the last guard
/// against an answer that repeats a huge parameter or a line of an uploaded file.
pub fn bound_message(message: &str) -> String {
    let mut out = map_quoted(message, |quoted| {
        match quoted.char_indices().nth(MAX_EXCERPT_CHARS) {
            Some((at, _)) => format!("{}…", &quoted[..at]),
            None => quoted.to_owned(),
        }
    });
    if let Some((at, _)) = out.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        out.truncate(at);
        out.push('…');
    }
    out
}

/// `message` with the text of each quoted string in it (`"…"` as `{:?}` writes a value,
/// escapes followed; an unclosed one runs to the end) replaced by what `inner` makes of it.
/// The quotes stay.
pub fn map_quoted(message: &str, mut inner: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(message.len().min(4096));
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let body = &rest[open + 1..];
        let mut escaped = false;
        let close = body.char_indices().find_map(|(i, c)| {
            let end = !escaped && c == '"';
            escaped = !escaped && c == '\\';
            end.then_some(i)
        });
        match close {
            Some(i) => {
                out.push_str(&inner(&body[..i]));
                out.push('"');
                rest = &body[i + 1..];
            }
            None => {
                out.push_str(&inner(body));
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A gRPC answer's `grpc-message` (percent-encoded, as tonic sends it) bounded like
/// [`bound_message`]; None when it needs no change.
fn bound_grpc_message(value: &[u8]) -> Option<HeaderValue> {
    if value.len() <= 2 * MAX_EXCERPT_CHARS {
        return None;
    }
    let mut decoded = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            value[i],
            value.get(i + 1).copied().and_then(hex),
            value.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                decoded.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let bounded = bound_message(&String::from_utf8_lossy(&decoded));
    let mut encoded = String::with_capacity(bounded.len());
    for b in bounded.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&encoded).ok()
}

/// A JSON error answer whose `error` message is at most [`MAX_ERROR_MESSAGE_CHARS`]: a last
/// guard against a message that quotes a whole line of an uploaded file or a huge parameter.
async fn bound_json_error(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ERROR_BODY * 16).await else {
        return envelope(parts.status, "the error's description was too long to send");
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    if let Some(serde_json::Value::String(e)) = value.get_mut("error") {
        *e = bound_message(e);
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(value.to_string()))
}

/// A user-facing message for a framework rejection.
fn rewrite(status: StatusCode, method: &Method, path: &str, text: &str) -> String {
    if let Some(rest) = text.strip_prefix("Failed to deserialize query string: ") {
        return format!("query string: {}", excerpt(rest));
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
        _ => excerpt(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HttpRules {
        HttpRules::new(
            Authorizer::open(),
            false,
            &["dms.example.com".to_owned()],
            &["https://console.example.com/".to_owned()],
        )
    }

    #[test]
    fn grpc_paths_are_service_and_method() {
        assert!(is_grpc_path("/dms.v1.Admin/DeleteBars"));
        assert!(is_grpc_path("/grpc.health.v1.Health/Check"));
        assert!(!is_grpc_path("/api/data/tasks"));
        assert!(!is_grpc_path("/favicon.ico"));
        assert!(!is_grpc_path("/dms.v1.Admin/"));
        assert!(!is_grpc_path("/dms.v1.Admin/A/B"));
        assert!(!is_grpc_path("/healthz"));
    }

    #[test]
    fn hosts_are_addresses_localhost_or_configured_names() {
        let r = rules();
        for ok in [
            "127.0.0.1:11183",
            "[::1]:11183",
            "10.1.2.3",
            "localhost:11183",
            "LOCALHOST",
            "app.localhost:80",
            "dms.example.com:11183",
            "DMS.Example.COM.",
        ] {
            assert!(r.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:11183",
            "example.com",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!r.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn origins_are_the_daemons_own_or_configured() {
        let r = rules();
        let host = Some("127.0.0.1:11183");
        assert!(r.origin_allowed("http://127.0.0.1:11183", host));
        assert!(r.origin_allowed("https://console.example.com", host));
        assert!(r.origin_allowed("http://localhost", Some("localhost:80")));
        assert!(!r.origin_allowed("http://evil.example", host));
        assert!(!r.origin_allowed("null", host));
        assert!(!r.origin_allowed("http://127.0.0.1:11184", host));
        assert!(!r.origin_allowed("http://127.0.0.1:11183", None));
    }

    #[test]
    fn messages_quote_at_most_an_excerpt() {
        let long = "x".repeat(10_000);
        let m = bound_message(&format!(
            "field `a`: {long:?} is not a date; field `b`: {:?}",
            "ok"
        ));
        assert!(m.contains(&"x".repeat(MAX_EXCERPT_CHARS)));
        assert!(!m.contains(&"x".repeat(MAX_EXCERPT_CHARS + 1)), "{m}");
        assert!(m.ends_with("field `b`: \"ok\""), "{m}");
        let m = bound_message(&"y".repeat(5_000));
        assert_eq!(m.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        let header = format!("interval %22{}%00%22 is bad", "a".repeat(3_000));
        let bounded = bound_grpc_message(header.as_bytes()).unwrap();
        let text = bounded.to_str().unwrap();
        assert!(text.len() < 400, "{text}");
        assert!(text.starts_with("interval \"aaa"), "{text}");
        assert!(text.ends_with("a%E2%80%A6\" is bad"), "{text}");
        assert!(bound_grpc_message(b"short").is_none());
    }

    #[test]
    fn excerpts_are_bounded_on_char_boundaries() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(1_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    /// The request rules over arbitrary requests (any method, path, host, origin, content type,
    /// token, body): never a panic, never a 5xx, and a refusal is always the JSON envelope.
    mod properties {
        use super::*;
        use axum::body::Body;
        use proptest::prelude::*;
        use tower::ServiceExt;

        fn app(auth: bool) -> axum::Router {
            let auth = if auth {
                Authorizer::from_config(&crate::auth::AuthConfig {
                    token: Some(crate::config::Secret::new(
                        "0123456789abcdef0123456789abcdef",
                    )),
                    ..Default::default()
                })
                .unwrap()
            } else {
                Authorizer::open()
            };
            let router = axum::Router::new()
                .route(
                    "/api/data/tasks",
                    axum::routing::get(|| async { "[]" }).post(|| async { "{}" }),
                )
                .route(
                    "/api/data/import-file",
                    axum::routing::post(|| async { "{}" }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok" }));
            HttpRules::new(auth, false, &["dms.example".to_owned()], &[]).apply(router)
        }

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                "[ -~]{0,64}",
                any::<String>(),
                Just("application/json".to_owned()),
                Just("application/grpc".to_owned()),
                Just("127.0.0.1:11183".to_owned()),
                Just("http://127.0.0.1:11183".to_owned()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn any_request_gets_a_well_formed_answer(
                method in prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PUT"), Just("OPTIONS"), Just("HEAD"), Just("PATCH")],
                path in prop_oneof![
                    Just("/api/data/tasks".to_owned()),
                    Just("/api/data/import-file".to_owned()),
                    Just("/healthz".to_owned()),
                    Just("/dms.v1.Admin/DeleteBars".to_owned()),
                    "/[a-zA-Z0-9._/%-]{0,40}",
                ],
                host in text(),
                origin in proptest::option::of(text()),
                content_type in proptest::option::of(text()),
                token in proptest::option::of(text()),
                body in proptest::collection::vec(any::<u8>(), 0..64),
                auth in any::<bool>(),
                h2 in any::<bool>(),
            ) {
                let mut req = axum::http::Request::builder().method(method).uri(&path);
                if h2 {
                    req = req.version(Version::HTTP_2);
                }
                for (name, value) in [("host", Some(host)), ("origin", origin), ("content-type", content_type), ("authorization", token.map(|t| format!("Bearer {t}")))] {
                    if let Some(v) = value
                        && let Ok(v) = HeaderValue::from_str(&v)
                    {
                        req = req.header(name, v);
                    }
                }
                let Ok(req) = req.body(Body::from(body)) else {
                    return Ok(());
                };
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let response = runtime.block_on(app(auth).oneshot(req)).unwrap();
                let status = response.status();
                prop_assert!(!status.is_server_error(), "{status}");
                if status.is_client_error() && method != "HEAD" && status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED {
                    let bytes = runtime.block_on(to_bytes(response.into_body(), 1 << 20)).unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|e| TestCaseError::fail(format!("{status}: {e}: {bytes:?}")))?;
                    prop_assert_eq!(&v["success"], &serde_json::Value::Bool(false));
                    prop_assert!(v["error"].as_str().is_some_and(|e| e.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1));
                }
            }

            #[test]
            fn bounded_messages_never_quote_more_than_an_excerpt(message in any::<String>(), quoted in "[a-z]{0,600}") {
                let m = bound_message(&format!("{message} {quoted:?} {message}"));
                prop_assert!(m.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1);
                if !message.contains('"') {
                    prop_assert!(!m.contains(&"q".repeat(MAX_EXCERPT_CHARS + 1)) || quoted.len() <= MAX_EXCERPT_CHARS || message.contains(&"q".repeat(MAX_EXCERPT_CHARS + 1)));
                }
                let _ = bound_grpc_message(m.as_bytes());
                let _ = host_name(&message);
                let _ = is_grpc_path(&message);
            }
        }
    }
}
