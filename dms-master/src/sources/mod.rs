//! Data sources: where bars come from. One trait, [`Source`], with a module per provider.
//!
//! # Layout
//!
//! - [`config`]: [`config::SourceConfig`], one entry of `sources:`.
//! - [`yahoo`]: Yahoo Finance's v8 chart API, rate-limited (an adaptive rate by default, see
//!   [`limiter`]), retried, chunked by the provider's history limits.
//! - [`csv`]: a directory of OHLCV CSV files, one series per file.
//! - [`sql`]: a SQL table read page by page ([`sql::SqlTable`]), imported whole.
//! - [`registry`]: [`registry::Sources`] and [`registry::SqlTables`], every configured source
//!   built once and found by name.
//! - [`rows`]: rows of another system's data (a SQL table, an import file) read as bars.
//! - [`limiter`]: the per-provider rate limiter.
//!
//! Imports only `metrics` (and `dms-common`): every other folder stands above it.
//!
//! A fetch returns normalized bars (UTC bar starts; daily and longer bars at 00:00 UTC of the
//! exchange-local trading date), the corporate actions seen, which bars are still provisional
//! (the current, unfinished bar), and counters of the requests it took.

pub mod config;
pub mod csv;
pub mod limiter;
pub mod registry;
pub mod rows;
pub mod sql;
pub mod yahoo;

use std::fmt;

use async_trait::async_trait;
use dms_common::{Bar, SeriesKey, Symbol, TimeRange, Timestamp};
use serde::Serialize;

/// A split or a dividend, on the exchange-local date it took effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorporateAction {
    pub symbol: Symbol,
    /// 00:00 UTC of the exchange-local date.
    pub date: Timestamp,
    pub kind: ActionKind,
}

/// What a corporate action did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ActionKind {
    /// `numerator` new shares for every `denominator` old ones (4:1 is 4/1).
    Split { numerator: f64, denominator: f64 },
    /// Cash per share.
    Dividend { amount: f64 },
}

impl fmt::Display for CorporateAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = self.date.to_datetime().format("%Y-%m-%d");
        match self.kind {
            ActionKind::Split {
                numerator,
                denominator,
            } => write!(
                f,
                "{} split {numerator}:{denominator} on {date}",
                self.symbol
            ),
            ActionKind::Dividend { amount } => {
                write!(f, "{} dividend {amount} on {date}", self.symbol)
            }
        }
    }
}

/// Counters of one fetch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FetchStats {
    /// Requests made (or files read), retries included.
    pub requests: u64,
    /// Attempts repeated after a rate limit, a server error, a timeout or a cut-off body.
    pub retries: u64,
    /// Bars the provider listed with null prices (skipped: no value is invented).
    pub provider_nulls: u64,
}

impl FetchStats {
    pub fn add(&mut self, other: FetchStats) {
        self.requests += other.requests;
        self.retries += other.retries;
        self.provider_nulls += other.provider_nulls;
    }
}

/// What a fetch returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    /// Bars in ts order, unique by ts.
    pub bars: Vec<Bar>,
    pub actions: Vec<CorporateAction>,
    /// Bars at or after this time are not final yet (today's bar) and must be fetched again.
    pub provisional_from: Option<Timestamp>,
    pub stats: FetchStats,
}

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The provider does not know the symbol (or has no data for it); retrying will not help.
    #[error("{symbol}: not found at {source_name}: {message}")]
    NotFound {
        source_name: String,
        symbol: String,
        message: String,
    },
    /// The request was refused or the answer could not be used, and retrying will not help.
    #[error("{series}: {message}")]
    Rejected { series: String, message: String },
    /// Retries ran out (rate limits, server errors, timeouts, cut-off bodies).
    #[error("{series}: gave up after {attempts} attempts: {last_error}")]
    Exhausted {
        series: String,
        attempts: u32,
        last_error: String,
    },
    /// The source does not serve this series (e.g. no CSV file for the symbol).
    #[error("{series}: not served by source {source_name}: {message}")]
    Unsupported {
        source_name: String,
        series: String,
        message: String,
    },
    #[error("fetch cancelled")]
    Cancelled,
}

impl SourceError {
    /// Whether a later attempt (a task's second pass) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SourceError::Exhausted { .. })
    }

    /// Counters of the attempts made before the error, when known: an error the provider
    /// answered (not found, refused, unreadable) took one request.
    pub fn stats(&self) -> FetchStats {
        match self {
            SourceError::Exhausted { attempts, .. } => FetchStats {
                requests: u64::from(*attempts),
                retries: u64::from(attempts.saturating_sub(1)),
                provider_nulls: 0,
            },
            SourceError::NotFound { .. }
            | SourceError::Rejected { .. }
            | SourceError::Unsupported { .. } => FetchStats {
                requests: 1,
                ..FetchStats::default()
            },
            SourceError::Cancelled => FetchStats::default(),
        }
    }
}

/// A provider of bars.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// The source's configured name.
    fn name(&self) -> &str;

    /// How far back the provider serves bars of `interval` (None: no limit). Nothing older is
    /// requested, and nothing older counts as a gap.
    fn history_limit(&self, interval: dms_common::Interval) -> Option<std::time::Duration>;

    /// The request rate the provider is held to now, for providers with a rate limit.
    fn request_rate(&self) -> Option<limiter::RateStatus> {
        None
    }

    /// Bars of `series` in `range`, normalized, with the corporate actions seen.
    async fn fetch(&self, series: &SeriesKey, range: TimeRange) -> Result<Fetched, SourceError>;

    /// Every corporate action of `symbol` from `since` to now, in one cheap request where the
    /// provider can tell them apart from bars; `None` when the source knows of no actions.
    async fn actions(
        &self,
        _symbol: &Symbol,
        _since: Timestamp,
    ) -> Result<Option<(Vec<CorporateAction>, FetchStats)>, SourceError> {
        Ok(None)
    }
}
