//! The HTTP side of [`YahooSource`]: one request ([`Attempt`]), its retries with backoff and
//! `Retry-After`, what each answer tells the rate limiter, error texts from the provider's
//! bodies, and the chunks a range is cut into ([`plan_chunks`]) under the provider's limits.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use dms_common::{Interval, SeriesKey, Symbol, TimeRange, Timestamp};

use super::YahooSource;
use super::chart::{ParseError, ParsedChart, parse_chart, shortest_float32_prices};
use crate::sources::limiter::Answer;
use crate::sources::{FetchStats, SourceError};

const DAY: u64 = 86_400;

impl YahooSource {
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
    pub(super) async fn fetch_chunk(
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
pub(super) fn limits(interval: Interval) -> (Option<u64>, Option<u64>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::yahoo::YahooSourceConfig;

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
