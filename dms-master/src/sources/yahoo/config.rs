//! [`YahooSourceConfig`]: the settings of a Yahoo source, their defaults
//! ([`DEFAULT_MIN_RPS`], [`DEFAULT_MAX_RPS`] bound an adaptive rate) and the checks of its
//! rate settings.

use std::time::Duration;

use dms_common::config::ConfigDuration;
use serde::{Deserialize, Serialize};

use crate::sources::limiter::RateBounds;

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
