//! Alerts: telling someone when something goes wrong, over webhooks. Like [`crate::metrics`],
//! a sink every layer reports into, so it stands at the ground and imports only `metrics`.
//!
//! [`Alerts`] is the one handle every part of the master uses. An [`Alert`] is keyed
//! (`task_failed:<id>`, `replica_lag:<node>`, …): [`Alerts::raise`] sends a *firing* message
//! the first time a key is raised, and not again while it stays active, except a reminder once
//! `repeat_interval` has passed; [`Alerts::resolve`] sends a *resolved* message to the webhooks
//! that heard it fire. Two kinds of alerts:
//!
//! - **events** (a task failed, a scheduled run missed its window) are raised by the code that
//!   sees them; the same key raised again within `repeat_interval` is not sent again.
//! - **conditions** (replica lag, store errors, provider success rate) stay active until
//!   resolved; the lag and store conditions are checked every `check_interval` by the
//!   [`crate::ops::watcher`], the provider success rate after each task.
//!
//! Delivery never blocks the caller: each webhook has a bounded queue and a sender task that
//! retries with backoff and finally drops the message with a log line
//! ([`delivery`]). Each webhook has a rate limit on firing messages; a condition held back by it
//! is sent at a later check. [`Alerts::reload`] swaps the config (SIGHUP) and keeps what is
//! active. Payload shapes (generic JSON, DingTalk, WeCom, Slack) are in [`payload`].
//!
//! Key types: [`Alerts`], [`Alert`], [`AlertKind`], [`Severity`], [`AlertsConfig`].
//!
//! # Layout
//!
//! - this module: [`Alerts`], the handle, and the de-duplication of keys.
//! - `config`: the `alerts:` section; [`delivery`]: a queue and a sender per webhook;
//!   [`payload`]: the message shapes.
//!
//! Imports only `metrics` and `dms-common`.

mod config;
pub mod delivery;
pub mod payload;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{AlertsConfig, RateLimitConfig, RulesConfig, WebhookConfig, WebhookFormat};
use delivery::{Message, Webhook};

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What an alert is about; each kind has a rule in `alerts.rules` that can turn it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A task ended `failed` (event).
    TaskFailed,
    /// A scheduled run missed its window (event).
    MissedRun,
    /// A replica is behind by more than the threshold (condition).
    ReplicaLag,
    /// The store fails or journal appends fail (condition).
    StoreError,
    /// The last task's provider requests succeeded less often than the threshold (condition).
    ProviderSuccessRate,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::TaskFailed => "task_failed",
            AlertKind::MissedRun => "missed_run",
            AlertKind::ReplicaLag => "replica_lag",
            AlertKind::StoreError => "store_error",
            AlertKind::ProviderSuccessRate => "provider_success_rate",
        }
    }

    /// Whether the alert stays active until resolved (else it is an event).
    pub fn is_condition(self) -> bool {
        matches!(
            self,
            AlertKind::ReplicaLag | AlertKind::StoreError | AlertKind::ProviderSuccessRate
        )
    }
}

/// Whether a message announces or closes an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What identifies it for de-duplication and resolution, e.g. `task_failed:<id>`.
    pub key: String,
    pub kind: AlertKind,
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// More, possibly several lines.
    pub details: String,
}

impl Alert {
    /// Task `id` of `kind` ended `failed` with `error`.
    pub fn task_failed(id: &str, kind: &str, error: &str) -> Alert {
        Alert {
            key: format!("task_failed:{id}"),
            kind: AlertKind::TaskFailed,
            severity: Severity::Critical,
            summary: format!("task {id} ({kind}) failed"),
            details: error.to_owned(),
        }
    }

    /// Schedule `schedule` did not run in its window; `details` says which run and why.
    pub fn missed_run(schedule: &str, details: impl Into<String>) -> Alert {
        Alert {
            key: format!("missed_run:{schedule}"),
            kind: AlertKind::MissedRun,
            severity: Severity::Warning,
            summary: format!("scheduled run of {schedule} missed its window"),
            details: details.into(),
        }
    }

    /// Replica `node` is `seconds` (and `entries` journal entries) behind.
    pub fn replica_lag(node: &str, seconds: f64, entries: u64, threshold: f64) -> Alert {
        Alert {
            key: format!("replica_lag:{node}"),
            kind: AlertKind::ReplicaLag,
            severity: Severity::Warning,
            summary: format!("replica {node} is {seconds:.0} s behind"),
            details: format!(
                "{entries} journal entries not acknowledged; the oldest is {seconds:.1} s old (threshold {threshold:.0} s)"
            ),
        }
    }

    /// The store or the journal fails; `details` lists how.
    pub fn store_error(details: impl Into<String>) -> Alert {
        Alert {
            key: "store_error".into(),
            kind: AlertKind::StoreError,
            severity: Severity::Critical,
            summary: "the store or the journal is failing".into(),
            details: details.into(),
        }
    }

    /// Of `requests` provider requests of the last task over `source`, `failed` failed.
    pub fn provider_success_rate(
        source: &str,
        task: &str,
        requests: u64,
        failed: u64,
        threshold: f64,
    ) -> Alert {
        let rate = success_rate(requests, failed);
        Alert {
            key: format!("provider_success_rate:{source}"),
            kind: AlertKind::ProviderSuccessRate,
            severity: Severity::Warning,
            summary: format!(
                "provider {source}: {:.1} % of requests succeeded in the last run",
                rate * 100.0
            ),
            details: format!(
                "task {task}: {failed} of {requests} requests failed (threshold {:.1} %)",
                threshold * 100.0
            ),
        }
    }
}

/// Fraction of `requests` that did not fail.
fn success_rate(requests: u64, failed: u64) -> f64 {
    if requests == 0 {
        return 1.0;
    }
    1.0 - failed.min(requests) as f64 / requests as f64
}

/// The alerting handle. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Mutex<Shared>,
    /// Parent of every sender task.
    stop: CancellationToken,
}

struct Shared {
    config: AlertsConfig,
    webhooks: Vec<Webhook>,
    active: HashMap<String, Active>,
}

/// An alert that fired and is not resolved (or an event still within its repeat interval).
struct Active {
    alert: Alert,
    last_raised: Instant,
    /// The webhooks that were sent its firing message, and when last.
    notified: HashMap<String, Instant>,
}

impl fmt::Debug for Alerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Alerts")
            .field("webhooks", &s.webhooks.len())
            .field("active", &s.active.len())
            .finish()
    }
}

impl Alerts {
    /// Starts a sender task per webhook of `config` (they stop with `shutdown`). Needs a Tokio
    /// runtime.
    pub fn start(config: AlertsConfig, shutdown: &CancellationToken) -> Alerts {
        let alerts = Alerts {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    config: AlertsConfig::default(),
                    webhooks: Vec::new(),
                    active: HashMap::new(),
                }),
                stop: shutdown.child_token(),
            }),
        };
        alerts.reload(config);
        alerts
    }

    /// Alerts that are tracked and logged but sent nowhere (no webhooks; no runtime needed).
    pub fn disabled() -> Alerts {
        Alerts {
            inner: Arc::new(Inner {
                shared: Mutex::new(Shared {
                    config: AlertsConfig::default(),
                    webhooks: Vec::new(),
                    active: HashMap::new(),
                }),
                stop: CancellationToken::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config in force.
    pub fn config(&self) -> AlertsConfig {
        self.lock().config.clone()
    }

    /// Replaces the config (webhooks, rules, limits). Active alerts stay active; a webhook
    /// that is replaced sends what it has queued, then stops.
    pub fn reload(&self, config: AlertsConfig) {
        let mut old = std::mem::take(&mut self.lock().webhooks);
        let mut webhooks = Vec::with_capacity(config.webhooks.len());
        for w in &config.webhooks {
            // An unchanged webhook keeps its sender, its queue and its rate-limit window.
            let settings = (w.clone(), delivery::DeliverySettings::of(&config));
            if let Some(i) = old.iter().position(|h| h.settings == settings) {
                let mut hook = old.swap_remove(i);
                hook.set_rate_limit(&config);
                webhooks.push(hook);
                continue;
            }
            match Webhook::start(
                w,
                &config,
                self.on_dropped(&w.name),
                self.inner.stop.child_token(),
            ) {
                Ok(hook) => webhooks.push(hook),
                Err(e) => tracing::error!(webhook = %w.name, error = %e, "webhook left out"),
            }
        }
        let mut s = self.lock();
        tracing::info!(
            webhooks = webhooks.len(),
            active = s.active.len(),
            "alert settings loaded"
        );
        s.config = config;
        s.webhooks = webhooks;
    }

    /// What webhook `hook` does with a firing message it could not deliver: the alert no
    /// longer counts as heard there, so the next raise of it (a condition is raised at every
    /// check while it holds) sends it again.
    fn on_dropped(&self, hook: &str) -> delivery::OnDropped {
        let inner = Arc::downgrade(&self.inner);
        let hook = hook.to_owned();
        Arc::new(move |key: &str| {
            if let Some(inner) = inner.upgrade() {
                let mut s = inner.shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(active) = s.active.get_mut(key) {
                    active.notified.remove(&hook);
                }
            }
        })
    }

    /// Whether `key` is active (fired and not resolved, or an event within its repeat
    /// interval).
    pub fn is_active(&self, key: &str) -> bool {
        self.lock().active.contains_key(key)
    }

    /// The keys of the active alerts, sorted.
    pub fn active_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().active.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Raises `alert`: sends a firing message to every webhook that has not heard it within
    /// `repeat_interval`. Returns at once; delivery happens in the background.
    pub fn raise(&self, alert: Alert) {
        let now = Instant::now();
        let mut guard = self.lock();
        let Shared {
            config,
            webhooks,
            active,
        } = &mut *guard;
        if !rule_allows(config, alert.kind) {
            return;
        }
        let repeat = config.repeat_interval.0;
        active.retain(|_, a| {
            a.alert.kind.is_condition() || now.duration_since(a.last_raised) < repeat
        });
        let entry = active.entry(alert.key.clone()).or_insert_with(|| {
            tracing::warn!(key = %alert.key, kind = alert.kind.as_str(), summary = %alert.summary, details = %alert.details, "alert firing");
            Active {
                alert: alert.clone(),
                last_raised: now,
                notified: HashMap::new(),
            }
        });
        entry.alert = alert;
        entry.last_raised = now;
        for hook in webhooks.iter_mut() {
            let due = entry
                .notified
                .get(&hook.name)
                .is_none_or(|last| now.duration_since(*last) >= repeat);
            if !due {
                continue;
            }
            if !hook.take_slot(now) {
                tracing::warn!(webhook = %hook.name, key = %entry.alert.key, "alert rate limit reached; message dropped");
                crate::metrics::alert_dropped(&hook.name, "rate_limited");
                continue;
            }
            let body = payload::render(
                hook.format,
                &entry.alert,
                Status::Firing,
                chrono::Utc::now(),
            );
            if hook.enqueue(Message {
                key: entry.alert.key.clone(),
                status: Status::Firing,
                body,
            }) {
                entry.notified.insert(hook.name.clone(), now);
            }
        }
    }

    /// Resolves `key` if it is active: the webhooks that heard it fire get a resolved message.
    pub fn resolve(&self, key: &str) {
        let mut guard = self.lock();
        let Some(entry) = guard.active.remove(key) else {
            return;
        };
        tracing::info!(key, kind = entry.alert.kind.as_str(), "alert resolved");
        for hook in &guard.webhooks {
            if entry.notified.contains_key(&hook.name) {
                let body = payload::render(
                    hook.format,
                    &entry.alert,
                    Status::Resolved,
                    chrono::Utc::now(),
                );
                hook.enqueue(Message {
                    key: key.to_owned(),
                    status: Status::Resolved,
                    body,
                });
            }
        }
    }

    /// Judges the provider success rate of a finished task over `source`: raises the alert
    /// below the threshold, resolves it at or above (too few requests: no judgement).
    pub fn provider_run(&self, source: &str, task: &str, requests: u64, failed: u64) {
        let rules = self.lock().config.rules.clone();
        let Some(threshold) = rules.provider_success_rate else {
            return;
        };
        if requests < rules.provider_min_requests.max(1) {
            return;
        }
        if success_rate(requests, failed) < threshold {
            self.raise(Alert::provider_success_rate(
                source, task, requests, failed, threshold,
            ));
        } else {
            self.resolve(&format!("provider_success_rate:{source}"));
        }
    }
}

fn rule_allows(config: &AlertsConfig, kind: AlertKind) -> bool {
    let r = &config.rules;
    match kind {
        AlertKind::TaskFailed => r.task_failed,
        AlertKind::MissedRun => r.missed_run,
        AlertKind::StoreError => r.store_error,
        AlertKind::ReplicaLag => r.replica_lag.is_some(),
        AlertKind::ProviderSuccessRate => r.provider_success_rate.is_some(),
    }
}

#[cfg(test)]
mod tests;
