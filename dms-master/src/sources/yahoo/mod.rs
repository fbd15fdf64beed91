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
//!
//! # Layout
//!
//! - this module: [`YahooSource`] and its [`Source`] impl: a range becomes chunks, each
//!   fetched and merged into one [`Fetched`].
//! - `config`: [`YahooSourceConfig`], the settings with their defaults and rate checks.
//! - `client`: the HTTP side: one attempt, its retries, what each answer means and tells the
//!   rate limiter, and the chunks a range is cut into ([`plan_chunks`]).
//! - `chart`: the chart API's JSON and its normalization ([`parse_chart`], [`ParsedChart`]).
//!
//! `client` may import `chart`; `chart` and `config` import no sibling.

mod chart;
mod client;
mod config;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dms_common::{Interval, SeriesKey, Symbol, TimeRange, Timestamp};

use super::limiter::{RateLimiter, RateStatus};
use super::{CorporateAction, FetchStats, Fetched, Source, SourceError};
use client::limits;

pub use chart::{ParseError, ParsedChart, parse_chart, shortest_float32};
pub use client::plan_chunks;
pub use config::{DEFAULT_MAX_RPS, DEFAULT_MIN_RPS, YahooSourceConfig};

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
