//! `AlertsConfig`: the `alerts:` section of the master's config.

use std::collections::BTreeMap;
use std::time::Duration;

use dms_common::config::{ConfigDuration, ConfigIssue, Secret};
use serde::{Deserialize, Serialize};

/// Where alerts go and when they are raised.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Receivers of alert messages. Without any, alerts are only logged.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Which conditions raise alerts, and their thresholds.
    #[serde(default)]
    pub rules: RulesConfig,
    /// An alert that is still active is sent again (a reminder) after this long; a repeated
    /// event with the same key is not sent again within it.
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: ConfigDuration,
    /// How often state conditions (replica lag, store errors) are checked.
    #[serde(default = "default_check_interval")]
    pub check_interval: ConfigDuration,
    /// Most firing messages each webhook gets per window; more are dropped (and counted in
    /// `dms_alerts_dropped_total`). "Resolved" messages are never held back.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Messages waiting for delivery per webhook; when full, new ones are dropped rather than
    /// waited for, so alerting never blocks the pipeline.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Delivery attempts after the first one failed (connection refused, timeout, non-2xx)
    /// before the message is dropped with a log line.
    #[serde(default = "default_max_retries")]
    pub max_retries: usize,
    /// First wait between delivery attempts (doubles, with jitter, up to `max_retry_delay`).
    #[serde(default = "default_retry_delay")]
    pub retry_delay: ConfigDuration,
    /// Longest wait between delivery attempts.
    #[serde(default = "default_max_retry_delay")]
    pub max_retry_delay: ConfigDuration,
}

/// One receiver of alert messages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Its name, in logs and metrics.
    pub name: String,
    /// The URL messages are POSTed to (often holds a secret token: never printed or logged).
    pub url: Secret,
    /// The payload shape: `generic` (JSON object), `dingtalk`, `wecom` or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra request headers (e.g. an authorization header); values are never printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Time for one delivery attempt.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
}

/// The shape of the JSON body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"status", "key", "kind", "severity", "summary", "details", "at"}`.
    #[default]
    Generic,
    /// DingTalk robot: `{"msgtype": "markdown", "markdown": {"title", "text"}}`.
    Dingtalk,
    /// WeCom (WeChat Work) robot: `{"msgtype": "markdown", "markdown": {"content"}}`.
    Wecom,
    /// Slack incoming webhook: `{"text"}`.
    Slack,
}

/// Which conditions raise alerts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// A task that ended `failed`.
    #[serde(default = "default_true")]
    pub task_failed: bool,
    /// A scheduled run that missed its window.
    #[serde(default = "default_true")]
    pub missed_run: bool,
    /// The store failing (unreachable, writes retried) or journal appends failing.
    #[serde(default = "default_true")]
    pub store_error: bool,
    /// A replica whose oldest unacknowledged change is older than this; `null` turns the rule
    /// off.
    #[serde(default = "default_replica_lag")]
    pub replica_lag: Option<ConfigDuration>,
    /// Fraction of a task's provider requests that must succeed (0 to 1, over the last
    /// finished task); `null` turns the rule off.
    #[serde(default = "default_success_rate")]
    pub provider_success_rate: Option<f64>,
    /// Fewest provider requests a task must have made for its success rate to be judged.
    #[serde(default = "default_min_requests")]
    pub provider_min_requests: u64,
}

/// A per-webhook limit on firing messages.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Most firing messages per window.
    #[serde(default = "default_rate_messages")]
    pub max_messages: usize,
    /// The window.
    #[serde(default = "default_rate_window")]
    pub window: ConfigDuration,
}

fn default_true() -> bool {
    true
}
fn default_repeat_interval() -> ConfigDuration {
    ConfigDuration::from_secs(4 * 3600)
}
fn default_check_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_queue_size() -> usize {
    256
}
fn default_max_retries() -> usize {
    5
}
fn default_retry_delay() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_max_retry_delay() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_replica_lag() -> Option<ConfigDuration> {
    Some(ConfigDuration::from_secs(300))
}
fn default_success_rate() -> Option<f64> {
    Some(0.95)
}
fn default_min_requests() -> u64 {
    1
}
fn default_rate_messages() -> usize {
    20
}
fn default_rate_window() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            rules: RulesConfig::default(),
            repeat_interval: default_repeat_interval(),
            check_interval: default_check_interval(),
            rate_limit: RateLimitConfig::default(),
            queue_size: default_queue_size(),
            max_retries: default_max_retries(),
            retry_delay: default_retry_delay(),
            max_retry_delay: default_max_retry_delay(),
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            task_failed: true,
            missed_run: true,
            store_error: true,
            replica_lag: default_replica_lag(),
            provider_success_rate: default_success_rate(),
            provider_min_requests: default_min_requests(),
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            max_messages: default_rate_messages(),
            window: default_rate_window(),
        }
    }
}

impl WebhookConfig {
    /// A webhook of `format` at `url` with the default timeout and no extra headers.
    pub fn new(name: &str, url: &str, format: WebhookFormat) -> Self {
        WebhookConfig {
            name: name.to_owned(),
            url: Secret::new(url),
            format,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
        }
    }
}

impl AlertsConfig {
    /// Problems with the section, each naming its key under `alerts`.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut issue = |key: String, message: String| {
            issues.push(ConfigIssue::new(format!("alerts.{key}"), message))
        };
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if w.name.trim().is_empty() {
                issue(format!("webhooks[{i}].name"), "must not be empty".into());
            } else if !names.insert(w.name.as_str()) {
                issue(
                    format!("webhooks[{i}].name"),
                    format!("{:?} is used by another webhook", w.name),
                );
            }
            // The URL may hold a token: say what is wrong without repeating it.
            match reqwest::Url::parse(w.url.expose()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => issue(
                    format!("webhooks[{i}].url"),
                    format!("scheme {:?} is not http or https", u.scheme()),
                ),
                Err(e) => issue(format!("webhooks[{i}].url"), format!("not a URL: {e}")),
            }
            for (name, value) in &w.headers {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    issue(
                        format!("webhooks[{i}].headers"),
                        format!("{name:?} is not a valid header name"),
                    );
                }
                if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
                    issue(
                        format!("webhooks[{i}].headers.{name}"),
                        "the value holds characters a header cannot carry".into(),
                    );
                }
            }
            if w.timeout.0.is_zero() {
                issue(
                    format!("webhooks[{i}].timeout"),
                    "must be more than 0s".into(),
                );
            }
        }
        for (key, d) in [
            ("repeat_interval", self.repeat_interval),
            ("check_interval", self.check_interval),
            ("rate_limit.window", self.rate_limit.window),
            ("retry_delay", self.retry_delay),
        ] {
            if d.0.is_zero() {
                issue(key.into(), "must be more than 0s".into());
            }
        }
        if self.max_retry_delay.0 < self.retry_delay.0 {
            issue(
                "max_retry_delay".into(),
                format!(
                    "{} is shorter than retry_delay {}",
                    self.max_retry_delay, self.retry_delay
                ),
            );
        }
        if self.rate_limit.max_messages == 0 {
            issue(
                "rate_limit.max_messages".into(),
                "must be at least 1".into(),
            );
        }
        if self.queue_size == 0 {
            issue("queue_size".into(), "must be at least 1".into());
        }
        if let Some(rate) = self.rules.provider_success_rate
            && !(0.0..=1.0).contains(&rate)
        {
            issue(
                "rules.provider_success_rate".into(),
                format!("{rate} is not between 0 and 1 (0.95 is 95 %)"),
            );
        }
        if self.rules.replica_lag.is_some_and(|d| d.0.is_zero()) {
            issue(
                "rules.replica_lag".into(),
                "must be more than 0s (or null to turn the rule off)".into(),
            );
        }
        issues
    }

    /// The replica lag threshold, if that rule is on.
    pub fn replica_lag_threshold(&self) -> Option<Duration> {
        self.rules.replica_lag.map(|d| d.0)
    }
}
