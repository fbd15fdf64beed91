//! `YahooSource`: Yahoo Finance's v8 chart API (`/v8/finance/chart/{symbol}`).
//!
//! - One request per (symbol, interval, chunk); ranges are cut into chunks the provider serves
//!   (1m: 7 days; 5m–30m: 60 days; 1h: 365 days; daily and longer: whole range) and clipped to
//!   how far back it serves each interval (1m: 30 days; 5m–30m: 60 days; 1h: 730 days).
//! - Normalization ([`parse_chart`]): `null`s in the arrays mean a missing bar, never zero;
//!   daily and longer bars move from the session-open time Yahoo reports (14:30Z for New York)
//!   to 00:00 UTC of the exchange-local trading date (time zone from
//!   `meta.exchangeTimezoneName`); the bar whose period has not ended is reported provisional;
//!   `events.splits` and `events.dividends` become [`CorporateAction`]s.
//! - Errors: a 404 whose body says "No data found" is [`SourceError::NotFound`] and is not
//!   retried; 429 waits for `Retry-After` (else exponential backoff with jitter) and pauses the
//!   whole provider; 5xx, resets, timeouts and cut-off or unparsable bodies are retried up to
//!   `max_retries` times and `max_retry_elapsed`. A chunk is used only when its whole body
//!   parsed, so a half-read answer never reaches the store.
//! - Every request goes through the provider's shared [`RateLimiter`] and tells it what it
//!   got: served, overloaded (429, 408, 5xx, a timeout) or neither; with `adaptive_rate` (the
//!   default) the rate follows those answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{Datelike, NaiveDate, TimeZone};
use dms_common::{Bar, Interval, SeriesKey, Symbol, TimeRange, Timestamp};
use serde::{Deserialize, Serialize};

use super::limiter::{Answer, RateBounds, RateLimiter, RateStatus};
use super::{ActionKind, CorporateAction, FetchStats, Fetched, Source, SourceError};
use dms_common::config::ConfigDuration;

const DAY: u64 = 86_400;

/// Settings of a Yahoo source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct YahooSourceConfig {
    /// Name of the source, recorded as the origin of its bars.
    pub name: String,
    /// Base URL of the chart API.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The User-Agent header sent.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Time allowed to connect.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Time allowed for a whole request, body included.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Request starts per second, shared by every task: the fixed rate, or where an adaptive
    /// rate starts.
    #[serde(default = "default_rps")]
    pub requests_per_second: f64,
    /// Adapt the rate to the provider's answers: raise it while requests are served, cut it on
    /// 429, 408, 5xx and timeouts, within `min_requests_per_second` and
    /// `max_requests_per_second` (see `source::limiter`).
    #[serde(default = "default_true")]
    pub adaptive_rate: bool,
    /// Floor of an adaptive rate (default 0.5, or `requests_per_second` when lower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests_per_second: Option<f64>,
    /// Ceiling of an adaptive rate (default 50, or `requests_per_second` when higher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_second: Option<f64>,
    /// Most requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Most attempts after the first for one request.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Most time spent retrying one request.
    #[serde(default = "default_max_retry_elapsed")]
    pub max_retry_elapsed: ConfigDuration,
    /// Shortest wait before a retry (doubles each time, with jitter).
    #[serde(default = "default_min_retry_delay")]
    pub min_retry_delay: ConfigDuration,
    /// Yahoo sends prices as float32 values printed as doubles (104.05999755859375 for 104.06):
    /// store each price that is exactly a float32 as the shortest decimal that is the same
    /// float32 (104.06), i.e. what the exchange printed. Volumes are left as sent.
    #[serde(default = "default_true")]
    pub float32_prices: bool,
}

fn default_true() -> bool {
    true
}

fn default_base_url() -> String {
    "https://query2.finance.yahoo.com".into()
}
fn default_user_agent() -> String {
    format!(
        "Mozilla/5.0 (compatible; dms/{})",
        env!("CARGO_PKG_VERSION")
    )
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_request_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_rps() -> f64 {
    2.0
}
/// Default floor of an adaptive rate.
pub const DEFAULT_MIN_RPS: f64 = 0.5;
/// Default ceiling of an adaptive rate.
pub const DEFAULT_MAX_RPS: f64 = 50.0;
fn default_concurrency() -> usize {
    4
}
fn default_max_retries() -> u32 {
    5
}
fn default_max_retry_elapsed() -> ConfigDuration {
    ConfigDuration::from_secs(120)
}
fn default_min_retry_delay() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}

impl YahooSourceConfig {
    /// A config with defaults for everything but the name and base URL.
    pub fn new(name: &str, base_url: &str) -> Self {
        YahooSourceConfig {
            name: name.into(),
            base_url: base_url.into(),
            user_agent: default_user_agent(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            requests_per_second: default_rps(),
            adaptive_rate: true,
            min_requests_per_second: None,
            max_requests_per_second: None,
            max_concurrency: default_concurrency(),
            max_retries: default_max_retries(),
            max_retry_elapsed: default_max_retry_elapsed(),
            min_retry_delay: default_min_retry_delay(),
            float32_prices: true,
        }
    }

    /// The floor and ceiling of the adaptive rate, defaults resolved.
    pub fn rate_bounds(&self) -> RateBounds {
        RateBounds {
            min: self
                .min_requests_per_second
                .unwrap_or(DEFAULT_MIN_RPS.min(self.requests_per_second)),
            max: self
                .max_requests_per_second
                .unwrap_or(DEFAULT_MAX_RPS.max(self.requests_per_second)),
        }
    }

    /// What is wrong with the rate settings, as (field, message) pairs.
    pub fn rate_issues(&self) -> Vec<(&'static str, String)> {
        let mut issues = Vec::new();
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !positive(self.requests_per_second) {
            issues.push((
                "requests_per_second",
                format!("{} must be a positive number", self.requests_per_second),
            ));
        }
        for (field, value) in [
            ("min_requests_per_second", self.min_requests_per_second),
            ("max_requests_per_second", self.max_requests_per_second),
        ] {
            if let Some(v) = value
                && !positive(v)
            {
                issues.push((field, format!("{v} must be a positive number")));
            }
        }
        if !issues.is_empty() {
            return issues;
        }
        let bounds = self.rate_bounds();
        if let Some(min) = self.min_requests_per_second
            && min > self.requests_per_second
        {
            issues.push((
                "min_requests_per_second",
                format!(
                    "{min} is above requests_per_second ({}), where the rate starts",
                    self.requests_per_second
                ),
            ));
        }
        if let Some(max) = self.max_requests_per_second
            && max < self.requests_per_second
        {
            issues.push((
                "max_requests_per_second",
                format!(
                    "{max} is below requests_per_second ({}), where the rate starts",
                    self.requests_per_second
                ),
            ));
        }
        if issues.is_empty() && bounds.min > bounds.max {
            issues.push((
                "min_requests_per_second",
                format!(
                    "{} is above max_requests_per_second ({})",
                    bounds.min, bounds.max
                ),
            ));
        }
        issues
    }
}

/// `v` as the shortest decimal that is the same float32, when `v` is exactly a float32
/// (127.58000183105469 → 127.58); any other value is returned as it is.
pub fn shortest_float32(v: f64) -> f64 {
    let f = v as f32;
    if f64::from(f) != v || !f.is_finite() {
        return v;
    }
    // Display of an f32 is the shortest text that parses back to the same f32.
    f.to_string().parse::<f64>().unwrap_or(v)
}

fn shortest_float32_prices(b: &mut Bar) {
    for v in [&mut b.open, &mut b.high, &mut b.low, &mut b.close] {
        *v = shortest_float32(*v);
    }
    if let Some(a) = b.adj_close.as_mut() {
        *a = shortest_float32(*a);
    }
}

/// The Yahoo chart API client.
#[derive(Debug, Clone)]
pub struct YahooSource {
    config: YahooSourceConfig,
    base: reqwest::Url,
    client: reqwest::Client,
    limiter: Arc<RateLimiter>,
}

impl YahooSource {
    /// Builds the client; fails on a bad base URL.
    pub fn new(config: YahooSourceConfig) -> Result<Self, String> {
        let base = reqwest::Url::parse(&config.base_url)
            .map_err(|e| format!("base_url {:?}: {e}", config.base_url))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "base_url {:?} is not an http(s) URL",
                config.base_url
            ));
        }
        let client = reqwest::Client::builder()
            .user_agent(&config.user_agent)
            .connect_timeout(config.connect_timeout.0)
            .timeout(config.request_timeout.0)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let limiter = Arc::new(if config.adaptive_rate {
            RateLimiter::adaptive(
                config.requests_per_second,
                config.rate_bounds(),
                config.max_concurrency,
            )
        } else {
            RateLimiter::new(config.requests_per_second, config.max_concurrency)
        });
        Ok(YahooSource {
            config,
            base,
            client,
            limiter,
        })
    }

    fn chart_url(&self, symbol: &Symbol, interval: Interval, chunk: TimeRange) -> reqwest::Url {
        let mut url = self.base.clone();
        // Every byte but unreserved ones percent-encoded, as providers expect (`^` → `%5E`).
        let encoded: String = symbol
            .as_str()
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                other => format!("%{other:02X}"),
            })
            .collect();
        let path = format!(
            "{}/v8/finance/chart/{encoded}",
            self.base.path().trim_end_matches('/')
        );
        url.set_path(&path);
        url.query_pairs_mut()
            .append_pair("period1", &chunk.start.0.to_string())
            .append_pair("period2", &chunk.end.0.to_string())
            .append_pair("interval", interval.as_str())
            .append_pair("includePrePost", "false")
            .append_pair("events", "div|split");
        url
    }

    /// One chunk, with retries. Returns the parsed chart and the counters.
    async fn fetch_chunk(
        &self,
        series: &SeriesKey,
        chunk: TimeRange,
        stats: &mut FetchStats,
    ) -> Result<ParsedChart, SourceError> {
        let url = self.chart_url(&series.symbol, series.interval, chunk);
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.config.min_retry_delay.0)
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build();
        let started = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            stats.requests += 1;
            let (outcome, took) = {
                let slot = self.limiter.acquire().await;
                let sent = Instant::now();
                let outcome = self.attempt(&url, series).await;
                slot.finish(outcome.answer());
                (outcome, sent.elapsed())
            };
            let record = |error| crate::metrics::provider_request(&self.config.name, took, error);
            let (error, retry_after) = match outcome {
                Attempt::Done(body) => {
                    match parse_chart(&body, series.interval, Timestamp::now()) {
                        Ok(mut chart) => {
                            record(None);
                            if self.config.float32_prices {
                                chart.bars.iter_mut().for_each(shortest_float32_prices);
                            }
                            return Ok(chart);
                        }
                        Err(ParseError::NoData(message)) => {
                            record(Some("not_found"));
                            return Err(SourceError::NotFound {
                                source_name: self.config.name.clone(),
                                symbol: series.symbol.to_string(),
                                message,
                            });
                        }
                        // A body cut off in transit does not parse: fetch it again.
                        Err(e) => {
                            record(Some("unusable"));
                            (format!("unusable answer: {e}"), None)
                        }
                    }
                }
                Attempt::Fatal(e) => {
                    record(Some(match e {
                        SourceError::NotFound { .. } => "not_found",
                        _ => "rejected",
                    }));
                    return Err(e);
                }
                Attempt::Retry {
                    error,
                    retry_after,
                    kind,
                    ..
                } => {
                    record(Some(kind));
                    (error, retry_after)
                }
            };
            let elapsed = started.elapsed();
            if attempt > self.config.max_retries || elapsed >= self.config.max_retry_elapsed.0 {
                return Err(SourceError::Exhausted {
                    series: series.to_string(),
                    attempts: attempt,
                    last_error: error,
                });
            }
            let delay =
                retry_after.unwrap_or_else(|| delays.next().unwrap_or(Duration::from_secs(60)));
            if elapsed + delay > self.config.max_retry_elapsed.0 {
                // Waiting that long would break the retry budget: give up now, the task's
                // second pass (or the next update) tries again.
                return Err(SourceError::Exhausted {
                    series: series.to_string(),
                    attempts: attempt,
                    last_error: format!("{error}; the provider asked to wait {delay:?}"),
                });
            }
            if retry_after.is_some() {
                self.limiter.pause_all(delay);
            }
            stats.retries += 1;
            tracing::warn!(series = %series, attempt, error = %error, retry_in = ?delay, "yahoo request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, url: &reqwest::Url, series: &SeriesKey) -> Attempt {
        let response = match self.client.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: describe_reqwest(&e),
                    retry_after: None,
                    kind: "network",
                    timed_out: e.is_timeout(),
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    error: format!("HTTP {status}: body cut off: {}", describe_reqwest(&e)),
                    retry_after: None,
                    kind: "network",
                    timed_out: e.is_timeout(),
                };
            }
        };
        match status.as_u16() {
            200..=299 => Attempt::Done(body.to_vec()),
            404 => {
                let message = chart_error(&body).unwrap_or_else(|| snippet(&body));
                Attempt::Fatal(SourceError::NotFound {
                    source_name: self.config.name.clone(),
                    symbol: series.symbol.to_string(),
                    message,
                })
            }
            429 => Attempt::Retry {
                error: "HTTP 429 Too Many Requests".into(),
                retry_after,
                kind: "rate_limited",
                timed_out: false,
            },
            408 | 500..=599 => Attempt::Retry {
                error: format!("HTTP {status}: {}", snippet(&body)),
                retry_after,
                kind: "server",
                timed_out: false,
            },
            _ => Attempt::Fatal(SourceError::Rejected {
                series: series.to_string(),
                message: format!(
                    "HTTP {status}: {}",
                    chart_error(&body).unwrap_or_else(|| snippet(&body))
                ),
            }),
        }
    }
}

enum Attempt {
    Done(Vec<u8>),
    Retry {
        error: String,
        retry_after: Option<Duration>,
        /// The failure's kind, as `dms_provider_errors_total` labels it.
        kind: &'static str,
        /// The request or its body timed out (a sign of an overloaded provider).
        timed_out: bool,
    },
    Fatal(SourceError),
}

impl Attempt {
    /// What the attempt tells the rate limiter.
    fn answer(&self) -> Answer {
        match self {
            Attempt::Done(_) | Attempt::Fatal(SourceError::NotFound { .. }) => Answer::Served,
            Attempt::Retry {
                kind: "rate_limited" | "server",
                ..
            }
            | Attempt::Retry {
                timed_out: true, ..
            } => Answer::Overloaded,
            Attempt::Retry { .. } | Attempt::Fatal(_) => Answer::Other,
        }
    }
}

fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "body cut off"
    } else {
        "request failed"
    };
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(3600.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.len() > 200 {
        let mut end = 200;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &text[..end])
    } else {
        text.to_owned()
    }
}

/// `chart.error.description` of an error body, if it has one.
fn chart_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("chart")?.get("error")?;
    let description = e.get("description").and_then(|d| d.as_str());
    let code = e.get("code").and_then(|d| d.as_str());
    match (code, description) {
        (Some(c), Some(d)) => Some(format!("{c}: {d}")),
        (None, Some(d)) => Some(d.to_owned()),
        (Some(c), None) => Some(c.to_owned()),
        (None, None) => None,
    }
}

/// The chunk length requested at once, and how far back the provider serves, per interval.
fn limits(interval: Interval) -> (Option<u64>, Option<u64>) {
    match interval {
        Interval::M1 => (Some(7 * DAY), Some(30 * DAY)),
        Interval::M5 | Interval::M15 | Interval::M30 => (Some(60 * DAY), Some(60 * DAY)),
        Interval::H1 => (Some(365 * DAY), Some(730 * DAY)),
        Interval::D1 | Interval::W1 | Interval::Mo1 => (None, None),
    }
}

/// Cuts `range` into request chunks for `interval`, after clipping it to the history the
/// provider serves as of `now`.
pub fn plan_chunks(interval: Interval, range: TimeRange, now: Timestamp) -> Vec<TimeRange> {
    let (chunk, history) = limits(interval);
    let mut start = range.start.0;
    if let Some(h) = history {
        // A minute of margin: the provider measures "30 days back" from its own clock.
        start = start.max(now.0 - h as i64 + 60);
    }
    let end = range.end.0.min(now.0 + interval.nominal_secs());
    let mut out = Vec::new();
    if start >= end {
        return out;
    }
    match chunk {
        // Daily and longer bars are requested a day wider on each side: a session can open on
        // the UTC day before its local trading date (Auckland) or after it, and the bars are
        // filtered by their normalized date afterwards.
        None => out.push(TimeRange::new(
            Timestamp(start.saturating_sub(86_400)),
            Timestamp(end.saturating_add(86_400)),
        )),
        Some(len) => {
            let mut s = start;
            while s < end {
                let e = (s + len as i64).min(end);
                out.push(TimeRange::new(Timestamp(s), Timestamp(e)));
                s = e;
            }
        }
    }
    out
}

#[async_trait]
impl Source for YahooSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn history_limit(&self, interval: Interval) -> Option<Duration> {
        limits(interval).1.map(Duration::from_secs)
    }

    fn request_rate(&self) -> Option<RateStatus> {
        Some(self.limiter.status())
    }

    async fn fetch(&self, series: &SeriesKey, range: TimeRange) -> Result<Fetched, SourceError> {
        let mut fetched = Fetched::default();
        for chunk in plan_chunks(series.interval, range, Timestamp::now()) {
            let chart = self.fetch_chunk(series, chunk, &mut fetched.stats).await?;
            if chart.skipped_nulls > 0 {
                tracing::warn!(
                    source = %self.config.name,
                    series = %series,
                    bars = chart.skipped_nulls,
                    "the provider listed bars with null prices; they are skipped"
                );
                fetched.stats.provider_nulls += chart.skipped_nulls as u64;
            }
            fetched
                .bars
                .extend(chart.bars.into_iter().filter(|b| range.contains(b.ts)));
            for action in chart.actions {
                if !fetched.actions.contains(&action) {
                    fetched.actions.push(action);
                }
            }
            if let Some(p) = chart.provisional_from {
                fetched.provisional_from =
                    Some(fetched.provisional_from.map_or(p, |q: Timestamp| q.min(p)));
            }
        }
        fetched.bars.sort_by_key(|b| b.ts);
        fetched.bars.dedup_by_key(|b| b.ts);
        Ok(fetched)
    }

    /// One request for monthly bars over the whole range: its events are every split and
    /// dividend since `since` (a few kilobytes for decades of history).
    async fn actions(
        &self,
        symbol: &Symbol,
        since: Timestamp,
    ) -> Result<Option<(Vec<CorporateAction>, FetchStats)>, SourceError> {
        let monthly = SeriesKey {
            symbol: symbol.clone(),
            interval: Interval::Mo1,
        };
        let now = Timestamp::now();
        let range = TimeRange::new(Timestamp(since.0.min(now.0 - 86_400)), Timestamp(now.0 + 1));
        let mut stats = FetchStats::default();
        let chart = self.fetch_chunk(&monthly, range, &mut stats).await?;
        Ok(Some((chart.actions, stats)))
    }
}

/// A chart answer, normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedChart {
    pub symbol: Option<Symbol>,
    pub timezone: Option<String>,
    pub bars: Vec<Bar>,
    pub actions: Vec<CorporateAction>,
    /// Bars from here on have not finished yet.
    pub provisional_from: Option<Timestamp>,
    /// Entries skipped because a price was `null`.
    pub skipped_nulls: usize,
}

/// Why a chart body could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not chart JSON: {0}")]
    Json(String),
    /// The provider says it has no data for the symbol.
    #[error("{0}")]
    NoData(String),
    #[error("{0}")]
    Shape(String),
}

#[derive(Debug, Deserialize)]
struct ChartBody {
    chart: ChartInner,
}

#[derive(Debug, Deserialize)]
struct ChartInner {
    result: Option<Vec<ChartResult>>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ChartResult {
    meta: Meta,
    #[serde(default)]
    timestamp: Vec<i64>,
    #[serde(default)]
    events: Option<Events>,
    indicators: Indicators,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    symbol: Option<String>,
    exchange_timezone_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Events {
    #[serde(default)]
    splits: std::collections::BTreeMap<String, SplitEvent>,
    #[serde(default)]
    dividends: std::collections::BTreeMap<String, DividendEvent>,
}

#[derive(Debug, Deserialize)]
struct SplitEvent {
    date: i64,
    numerator: f64,
    denominator: f64,
}

#[derive(Debug, Deserialize)]
struct DividendEvent {
    date: i64,
    amount: f64,
}

#[derive(Debug, Deserialize)]
struct Indicators {
    #[serde(default)]
    quote: Vec<Quote>,
    #[serde(default)]
    adjclose: Vec<AdjClose>,
}

#[derive(Debug, Default, Deserialize)]
struct Quote {
    #[serde(default)]
    open: Vec<Option<f64>>,
    #[serde(default)]
    high: Vec<Option<f64>>,
    #[serde(default)]
    low: Vec<Option<f64>>,
    #[serde(default)]
    close: Vec<Option<f64>>,
    #[serde(default)]
    volume: Vec<Option<f64>>,
}

#[derive(Debug, Deserialize)]
struct AdjClose {
    #[serde(default)]
    adjclose: Vec<Option<f64>>,
}

/// Parses and normalizes a chart body for bars of `interval`, as of `now`.
pub fn parse_chart(
    body: &[u8],
    interval: Interval,
    now: Timestamp,
) -> Result<ParsedChart, ParseError> {
    let parsed: ChartBody =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let result = match (parsed.chart.result, parsed.chart.error) {
        (Some(mut r), _) if !r.is_empty() => r.swap_remove(0),
        (_, Some(e)) if !e.is_null() => {
            let description = e
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("no result")
                .to_owned();
            return Err(ParseError::NoData(description));
        }
        _ => {
            return Err(ParseError::Shape(
                "chart has neither result nor error".into(),
            ));
        }
    };
    let tz: Option<chrono_tz::Tz> = result
        .meta
        .exchange_timezone_name
        .as_deref()
        .and_then(|n| n.parse().ok());
    let symbol = result
        .meta
        .symbol
        .as_deref()
        .and_then(|s| Symbol::new(s).ok());
    let quote = result
        .indicators
        .quote
        .into_iter()
        .next()
        .unwrap_or_default();
    let adj = result
        .indicators
        .adjclose
        .into_iter()
        .next()
        .map(|a| a.adjclose);
    let n = result.timestamp.len();
    for (name, len) in [
        ("open", quote.open.len()),
        ("high", quote.high.len()),
        ("low", quote.low.len()),
        ("close", quote.close.len()),
    ] {
        if n > 0 && len != n {
            return Err(ParseError::Shape(format!(
                "{n} timestamps but {len} {name} values"
            )));
        }
    }
    let mut bars = Vec::with_capacity(n);
    let mut skipped_nulls = 0;
    let mut provisional_from: Option<Timestamp> = None;
    for (i, &raw_ts) in result.timestamp.iter().enumerate() {
        let (Some(open), Some(high), Some(low), Some(close)) =
            (quote.open[i], quote.high[i], quote.low[i], quote.close[i])
        else {
            skipped_nulls += 1;
            continue;
        };
        let (ts, period_end) = normalize_time(raw_ts, interval, tz);
        if period_end > now && provisional_from.is_none() {
            provisional_from = Some(ts);
        }
        bars.push(Bar {
            ts,
            open,
            high,
            low,
            close,
            volume: quote.volume.get(i).copied().flatten().unwrap_or(0.0),
            adj_close: adj.as_ref().and_then(|a| a.get(i).copied().flatten()),
            turnover: None,
            open_interest: None,
        });
    }
    bars.sort_by_key(|b| b.ts);
    // Two entries for one period (a live bar next to a final one): keep the later.
    let mut unique: Vec<Bar> = Vec::with_capacity(bars.len());
    for b in bars {
        match unique.last_mut() {
            Some(last) if last.ts == b.ts => *last = b,
            _ => unique.push(b),
        }
    }
    let mut actions = Vec::new();
    if let (Some(events), Some(symbol)) = (result.events, symbol.clone()) {
        for s in events.splits.values() {
            actions.push(CorporateAction {
                symbol: symbol.clone(),
                date: local_date(s.date, tz),
                kind: ActionKind::Split {
                    numerator: s.numerator,
                    denominator: s.denominator,
                },
            });
        }
        for d in events.dividends.values() {
            actions.push(CorporateAction {
                symbol: symbol.clone(),
                date: local_date(d.date, tz),
                kind: ActionKind::Dividend { amount: d.amount },
            });
        }
        actions.sort_by_key(|a| a.date);
    }
    Ok(ParsedChart {
        symbol,
        timezone: result.meta.exchange_timezone_name,
        bars: unique,
        actions,
        provisional_from,
        skipped_nulls,
    })
}

/// 00:00 UTC of the exchange-local date of `ts`.
fn local_date(ts: i64, tz: Option<chrono_tz::Tz>) -> Timestamp {
    Timestamp::from_date(local_naive_date(ts, tz))
}

fn local_naive_date(ts: i64, tz: Option<chrono_tz::Tz>) -> NaiveDate {
    let utc = Timestamp(ts).to_datetime();
    match tz {
        Some(tz) => tz.from_utc_datetime(&utc.naive_utc()).date_naive(),
        None => utc.date_naive(),
    }
}

/// The stored bar start and the end of the bar's period, for a raw Yahoo timestamp.
fn normalize_time(
    raw: i64,
    interval: Interval,
    tz: Option<chrono_tz::Tz>,
) -> (Timestamp, Timestamp) {
    if !interval.is_daily_or_longer() {
        let ts = Timestamp(raw);
        return (ts, Timestamp(raw + interval.nominal_secs()));
    }
    let date = local_naive_date(raw, tz);
    let start = interval.align(Timestamp::from_date(date));
    let end_date = match interval {
        Interval::D1 => date.succ_opt().unwrap_or(date),
        Interval::W1 => NaiveDate::from_isoywd_opt(
            date.iso_week().year(),
            date.iso_week().week(),
            chrono::Weekday::Mon,
        )
        .and_then(|d| d.checked_add_days(chrono::Days::new(7)))
        .unwrap_or(date),
        _ => interval.next(start).to_datetime().date_naive(),
    };
    // The period ends at local midnight after its last day.
    let end = match tz {
        Some(tz) => tz
            .from_local_datetime(&end_date.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|d| Timestamp(d.timestamp()))
            .unwrap_or(Timestamp::from_date(end_date)),
        None => Timestamp::from_date(end_date),
    };
    (start, end)
}

#[cfg(test)]
mod float32_tests {
    use super::shortest_float32;

    #[test]
    fn float32_noise_becomes_the_printed_price_and_other_values_stay() {
        assert_eq!(shortest_float32(104.05999755859375), 104.06);
        assert_eq!(shortest_float32(127.58000183105469), 127.58);
        assert_eq!(shortest_float32(125.82673645019531), 125.82674);
        // Not a float32: a double with more precision is kept as sent.
        assert_eq!(shortest_float32(104.06), 104.06);
        assert_eq!(shortest_float32(0.1 + 0.2), 0.1 + 0.2);
        assert_eq!(shortest_float32(1e300), 1e300);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/yahoo")
            .join(name);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        serde_json::to_vec(&v["body"]).unwrap()
    }

    const NOW: Timestamp = Timestamp(1_763_000_000);

    #[test]
    fn daily_bars_move_to_the_local_trading_date() {
        let c = parse_chart(
            &fixture("chart-AAPL-2020-08-31-to-2020-11-07.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        assert_eq!(c.bars.len(), 49);
        assert_eq!(c.bars[0].ts.to_string(), "2020-08-31T00:00:00Z");
        assert_eq!(c.bars[0].open, 127.58000183105469);
        assert_eq!(c.bars[0].adj_close, Some(125.82673645019531));
        assert_eq!(c.bars[0].volume, 225_702_700.0);
        assert!(c.provisional_from.is_none());
        assert_eq!(c.timezone.as_deref(), Some("America/New_York"));
        // Jakarta opens at 02:00Z, Oslo at 08:00Z: both are that day's bar.
        let jk = parse_chart(
            &fixture("chart-WSKT.JK-2020-01-01-to-2020-01-03.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        assert_eq!(jk.bars[0].ts.to_string(), "2020-01-02T00:00:00Z");
        let btc = parse_chart(
            &fixture("chart-BTC-USD-2020-01-01-to-2020-01-03.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        let days: Vec<String> = btc.bars.iter().map(|b| b.ts.to_string()).collect();
        assert_eq!(
            days,
            [
                "2020-01-01T00:00:00Z",
                "2020-01-02T00:00:00Z",
                "2020-01-03T00:00:00Z"
            ]
        );
    }

    #[test]
    fn split_and_dividend_become_corporate_actions() {
        let c = parse_chart(
            &fixture("chart-AAPL-2020-08-31-to-2020-11-07.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        let shown: Vec<String> = c.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            [
                "AAPL split 4:1 on 2020-08-31",
                "AAPL dividend 0.205 on 2020-11-06"
            ]
        );
    }

    #[test]
    fn nulls_are_missing_bars_not_zeros() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("chart-AAPL-2020-08-31-to-2020-11-07.json")).unwrap();
        let q = &mut v["chart"]["result"][0]["indicators"]["quote"][0];
        q["close"][3] = serde_json::Value::Null;
        q["volume"][5] = serde_json::Value::Null;
        let c = parse_chart(&serde_json::to_vec(&v).unwrap(), Interval::D1, NOW).unwrap();
        assert_eq!(c.bars.len(), 48);
        assert_eq!(c.skipped_nulls, 1);
        assert!(c.bars.iter().all(|b| b.close > 0.0));
    }

    #[test]
    fn todays_bar_is_provisional() {
        let body = fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
        // "Now" is 2020-11-06 18:00Z: the 2020-11-06 bar has not finished.
        let c = parse_chart(&body, Interval::D1, Timestamp(1_604_685_600)).unwrap();
        assert_eq!(
            c.provisional_from.map(|t| t.to_string()).as_deref(),
            Some("2020-11-06T00:00:00Z")
        );
    }

    #[test]
    fn empty_and_error_answers() {
        let c = parse_chart(
            &fixture("chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json"),
            Interval::M1,
            NOW,
        )
        .unwrap();
        assert!(c.bars.is_empty());
        let err = parse_chart(
            br#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#,
            Interval::D1,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParseError::NoData("No data found, symbol may be delisted".into())
        );
        let cut = fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
        assert!(matches!(
            parse_chart(&cut[..cut.len() / 2], Interval::D1, NOW),
            Err(ParseError::Json(_))
        ));
    }

    #[test]
    fn chunks_follow_the_provider_limits() {
        let now = Timestamp(1_700_000_000);
        let year = TimeRange::new(Timestamp(now.0 - 365 * 86_400), now);
        let m1 = plan_chunks(Interval::M1, year, now);
        assert_eq!(m1.len(), 5, "30 days back in 7-day chunks: {m1:?}");
        assert!(m1[0].start.0 >= now.0 - 30 * 86_400);
        assert_eq!(plan_chunks(Interval::M5, year, now).len(), 1);
        assert_eq!(plan_chunks(Interval::H1, year, now).len(), 1);
        let decade = TimeRange::new(Timestamp(now.0 - 3650 * 86_400), now);
        assert_eq!(
            plan_chunks(Interval::H1, decade, now).len(),
            2,
            "730 days in 365-day chunks"
        );
        assert_eq!(plan_chunks(Interval::D1, decade, now).len(), 1);
        assert!(
            plan_chunks(
                Interval::M1,
                TimeRange::new(Timestamp(0), Timestamp(100)),
                now
            )
            .is_empty()
        );
    }

    #[test]
    fn each_answer_tells_the_rate_limiter_whether_the_provider_is_overloaded() {
        let retry = |kind, timed_out| Attempt::Retry {
            error: String::new(),
            retry_after: None,
            kind,
            timed_out,
        };
        let not_found = SourceError::NotFound {
            source_name: "y".into(),
            symbol: "X".into(),
            message: "No data found".into(),
        };
        let rejected = SourceError::Rejected {
            series: "X 1d".into(),
            message: "HTTP 403".into(),
        };
        for (attempt, answer) in [
            (Attempt::Done(Vec::new()), Answer::Served),
            (Attempt::Fatal(not_found), Answer::Served),
            (retry("rate_limited", false), Answer::Overloaded),
            (retry("server", false), Answer::Overloaded),
            (retry("network", true), Answer::Overloaded),
            (retry("network", false), Answer::Other),
            (Attempt::Fatal(rejected), Answer::Other),
        ] {
            assert_eq!(attempt.answer(), answer);
        }
    }

    #[test]
    fn url_escapes_the_symbol() {
        let src =
            YahooSource::new(YahooSourceConfig::new("y", "http://127.0.0.1:9/base/")).unwrap();
        let url = src.chart_url(
            &Symbol::new("^GSPC").unwrap(),
            Interval::D1,
            TimeRange::new(Timestamp(1), Timestamp(2)),
        );
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/base/v8/finance/chart/%5EGSPC?period1=1&period2=2&interval=1d&includePrePost=false&events=div%7Csplit"
        );
    }
}
