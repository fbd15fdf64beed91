//! `FakeYahoo`: a local HTTP server that speaks Yahoo's v8 chart API, so the master's real
//! Yahoo client can be tested offline.
//!
//! It answers from recorded real responses (`dms-master/tests/fixtures/yahoo/`), from a
//! deterministic generator of daily bars (any symbol, any range, with a configurable latency),
//! and can be scripted to misbehave first: rate limits with `Retry-After`, server errors,
//! answers slower than the client's timeout, and bodies cut off mid-way. It can also hold its
//! clients to a rate it does not tell them ([`RateLimit`]: a token bucket answering 429 when
//! empty). It counts the requests per symbol, and the ones refused by the bucket.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// One scripted misbehaviour, used once, in order, before normal answers resume.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 with `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
    /// 429 without `Retry-After`.
    RateLimitedBare,
    /// An HTTP 5xx with a short body.
    ServerError(u16),
    /// Answers after this delay (longer than the client's timeout).
    Slow(Duration),
    /// A 200 whose body stops half-way.
    Truncated,
}

/// A token bucket: `requests_per_second` tokens a second, at most `burst` saved up; a request
/// that finds no token is answered 429 (with `Retry-After: retry_after_secs` when given).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: f64,
    pub retry_after_secs: Option<u64>,
}

#[derive(Debug)]
struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.limit.requests_per_second;
        self.tokens = (self.tokens + refill).min(self.limit.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    bucket: Option<Bucket>,
    /// Requests the bucket refused.
    throttled: u64,
    recorded: HashMap<String, Value>,
    faults: VecDeque<Fault>,
    requests: HashMap<String, u64>,
    generate_unknown: bool,
    latency: Duration,
    /// Generated bars in `[start, end)` are missing (the provider lost them for a while).
    outage: Option<(i64, i64)>,
    /// Splits of generated symbols: prices before each are divided by its ratio.
    splits: HashMap<String, Vec<Split>>,
}

/// A split of a generated symbol.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    /// Its date, as a Unix time (bars before it are adjusted).
    pub date: i64,
    /// New shares per old one (3.0 for 3:1).
    pub ratio: f64,
    /// Whether answers list it in `events.splits` (else the prices change silently).
    pub reported: bool,
}

/// The fake provider. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FakeYahoo {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

impl FakeYahoo {
    /// Starts the server on a free loopback port. With `generate_unknown`, symbols without a
    /// recording get generated daily bars; without it they get Yahoo's 404 "No data found".
    pub async fn start(generate_unknown: bool, latency: Duration) -> FakeYahoo {
        let inner = Arc::new(Mutex::new(Inner {
            generate_unknown,
            latency,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/v8/finance/chart/{symbol}", get(chart))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeYahoo { inner, addr }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves the recorded response in `file` (a fixture name) for its symbol.
    pub fn record(&self, symbol: &str, file: &str) {
        let path = crate::repo_root()
            .join("dms-master/tests/fixtures/yahoo")
            .join(file);
        let v: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        self.lock()
            .recorded
            .insert(symbol.to_owned(), v["body"].clone());
    }

    /// Serves `body` (a chart answer) for `symbol`.
    pub fn record_body(&self, symbol: &str, body: Value) {
        self.lock().recorded.insert(symbol.to_owned(), body);
    }

    /// The chart answer recorded in fixture `file`.
    pub fn fixture(file: &str) -> Value {
        let path = crate::repo_root()
            .join("dms-master/tests/fixtures/yahoo")
            .join(file);
        let v: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
        v["body"].clone()
    }

    /// Misbehaves in these ways, one per request, before answering normally again.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Leaves generated bars in `[start, end)` out of answers (None: serve everything).
    pub fn set_outage(&self, window: Option<(i64, i64)>) {
        self.lock().outage = window;
    }

    /// From now on, generated bars of `symbol` before `split.date` are adjusted by it.
    pub fn add_split(&self, symbol: &str, split: Split) {
        self.lock()
            .splits
            .entry(symbol.to_owned())
            .or_default()
            .push(split);
    }

    /// Sets the delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Holds clients to `limit` from now on (a full bucket), or to nothing.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        self.lock().bucket = limit.map(|limit| Bucket {
            limit,
            tokens: limit.burst,
            at: tokio::time::Instant::now(),
        });
    }

    /// Requests the rate limit refused with 429.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// Requests seen, every symbol together.
    pub fn total_requests(&self) -> u64 {
        self.lock().requests.values().sum()
    }

    /// Drops the faults not used yet: answers are normal from now on.
    pub fn clear_script(&self) {
        self.lock().faults.clear();
    }

    /// Requests seen for `symbol`.
    pub fn requests(&self, symbol: &str) -> u64 {
        self.lock().requests.get(symbol).copied().unwrap_or(0)
    }

    /// Requests seen per symbol.
    pub fn all_requests(&self) -> HashMap<String, u64> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn chart(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(symbol): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (throttled, fault, recorded, generate, latency, outage, splits) = {
        let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
        *g.requests.entry(symbol.clone()).or_default() += 1;
        let throttled = g
            .bucket
            .as_mut()
            .and_then(|b| (!b.take()).then_some(b.limit.retry_after_secs));
        g.throttled += u64::from(throttled.is_some());
        (
            throttled,
            // A refused request uses no scripted fault.
            if throttled.is_some() {
                None
            } else {
                g.faults.pop_front()
            },
            g.recorded.get(&symbol).cloned(),
            g.generate_unknown,
            g.latency,
            g.outage,
            g.splits.get(&symbol).cloned().unwrap_or_default(),
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(retry_after) = throttled {
        let mut h = HeaderMap::new();
        if let Some(secs) = retry_after {
            h.insert("retry-after", HeaderValue::from(secs));
        }
        return (StatusCode::TOO_MANY_REQUESTS, h, "Too Many Requests").into_response();
    }
    let body = match (recorded, generate) {
        (Some(b), _) => Some(b),
        (None, true) => {
            let p1 = q.get("period1").and_then(|v| v.parse().ok()).unwrap_or(0);
            let p2 = q.get("period2").and_then(|v| v.parse().ok()).unwrap_or(0);
            Some(generated(&symbol, p1, p2, outage, &splits))
        }
        (None, false) => None,
    };
    match fault {
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from(retry_after_secs));
            return (StatusCode::TOO_MANY_REQUESTS, h, "Too Many Requests").into_response();
        }
        Some(Fault::RateLimitedBare) => {
            return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
        }
        Some(Fault::ServerError(code)) => {
            return (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "upstream failure",
            )
                .into_response();
        }
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Truncated) => {
            let full = body.map(|b| b.to_string()).unwrap_or_default();
            let half = full[..full.len() / 2].to_owned();
            return ([("content-type", "application/json")], half).into_response();
        }
        None => {}
    }
    match body {
        Some(b) => ([("content-type", "application/json")], b.to_string()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            json!({"chart": {"result": null, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}).to_string(),
        )
            .into_response(),
    }
}

/// The deterministic close of `symbol` on day number `day` (days since the Unix epoch).
pub fn generated_close(symbol: &str, day: i64) -> f64 {
    let seed = symbol
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let x = (seed ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % 10_000;
    50.0 + x as f64 / 100.0
}

/// Weekday bars at 14:30Z (the New York open) in `[p1, p2)`, Yahoo-shaped, adjusted for
/// `splits` (the reported ones in the range are listed as events).
fn generated(
    symbol: &str,
    p1: i64,
    p2: i64,
    outage: Option<(i64, i64)>,
    splits: &[Split],
) -> Value {
    let mut ts = Vec::new();
    let (mut open, mut high, mut low, mut close, mut volume) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let first_day = p1.div_euclid(86_400);
    let last_day = (p2 - 1).div_euclid(86_400).min(first_day + 20_000);
    for day in first_day..=last_day {
        let weekday = (day + 4).rem_euclid(7); // 0 = Sunday
        if weekday == 0 || weekday == 6 {
            continue;
        }
        let t = day * 86_400 + 14 * 3600 + 1800;
        if t < p1 || t >= p2 || t > chrono::Utc::now().timestamp() {
            continue;
        }
        if outage.is_some_and(|(a, b)| t >= a && t < b) {
            continue;
        }
        let factor: f64 = splits
            .iter()
            .filter(|s| t < s.date)
            .map(|s| s.ratio)
            .product();
        let c = generated_close(symbol, day);
        ts.push(t);
        open.push((c - 0.25) / factor);
        high.push((c + 1.0) / factor);
        low.push((c - 1.0) / factor);
        close.push(c / factor);
        volume.push(1000 + day % 1000);
    }
    let events: serde_json::Map<String, Value> = splits
        .iter()
        .filter(|s| s.reported && s.date >= p1 && s.date < p2)
        .map(|s| {
            let at = s.date + 14 * 3600 + 1800;
            (
                at.to_string(),
                json!({"date": at, "numerator": s.ratio, "denominator": 1.0,
                       "splitRatio": format!("{}:1", s.ratio)}),
            )
        })
        .collect();
    json!({"chart": {"result": [{
        "meta": {"symbol": symbol, "exchangeTimezoneName": "America/New_York", "dataGranularity": "1d"},
        "timestamp": ts,
        "events": {"splits": events},
        "indicators": {"quote": [{"open": open, "high": high, "low": low, "close": close, "volume": volume}],
                       "adjclose": [{"adjclose": close}]}
    }], "error": null}})
}
