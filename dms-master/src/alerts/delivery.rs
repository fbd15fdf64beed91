//! Delivery of alert messages to one webhook: a bounded queue and a sender task that POSTs
//! each message, retrying with backoff; a message whose retries run out is dropped with a log
//! line and counted. Callers only ever `try_send` into the queue, so a slow or dead receiver
//! never holds up whoever raised the alert.

use std::collections::VecDeque;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Status;
use super::config::{AlertsConfig, WebhookConfig, WebhookFormat};
use crate::metrics;

/// A rendered message waiting for delivery.
#[derive(Debug)]
pub(super) struct Message {
    pub(super) key: String,
    pub(super) status: Status,
    pub(super) body: Value,
}

/// Called with a message's key when a firing message could not be delivered, so the alert
/// does not count as heard by this webhook (its next raise sends it again).
pub(super) type OnDropped = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The sending side of one webhook: its queue and its rate limit.
#[derive(Debug)]
pub(super) struct Webhook {
    pub(super) name: String,
    pub(super) format: WebhookFormat,
    /// What it was started from; an unchanged webhook is kept across reloads.
    pub(super) settings: (WebhookConfig, DeliverySettings),
    queue: mpsc::Sender<Message>,
    /// When the firing messages of the current window were queued.
    sent: VecDeque<Instant>,
    max_messages: usize,
    window: Duration,
}

impl Webhook {
    /// Starts the sender task of `config`. It ends when `stop` fires, or when this `Webhook` is
    /// dropped (a reload replaced it) and it has sent what was queued.
    pub(super) fn start(
        config: &WebhookConfig,
        alerts: &AlertsConfig,
        on_dropped: OnDropped,
        stop: CancellationToken,
    ) -> Result<Webhook, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            let mut value = reqwest::header::HeaderValue::from_str(value.expose())
                .map_err(|_| format!("header {name}: invalid value"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout.0)
            .default_headers(headers)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let (tx, rx) = mpsc::channel(alerts.queue_size.max(1));
        let sender = Sender {
            name: config.name.clone(),
            url: config.url.expose().to_owned(),
            format: config.format,
            client,
            max_retries: alerts.max_retries,
            retry_delay: alerts.retry_delay.0,
            max_retry_delay: alerts.max_retry_delay.0,
            on_dropped,
        };
        tokio::spawn(sender.run(rx, stop));
        Ok(Webhook {
            name: config.name.clone(),
            format: config.format,
            settings: (config.clone(), DeliverySettings::of(alerts)),
            queue: tx,
            sent: VecDeque::new(),
            max_messages: alerts.rate_limit.max_messages,
            window: alerts.rate_limit.window.0,
        })
    }

    /// Takes the rate limit of `alerts` (a reload that kept this webhook).
    pub(super) fn set_rate_limit(&mut self, alerts: &AlertsConfig) {
        self.max_messages = alerts.rate_limit.max_messages;
        self.window = alerts.rate_limit.window.0;
    }

    /// Whether a firing message may go out now (counting it if so).
    pub(super) fn take_slot(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.max_messages {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// Queues `message` without waiting; a full queue drops it (logged and counted).
    pub(super) fn enqueue(&self, message: Message) -> bool {
        match self.queue.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(m)) => {
                tracing::error!(webhook = %self.name, key = %m.key, status = m.status.as_str(), "alert queue full; message dropped");
                metrics::alert_dropped(&self.name, "queue_full");
                false
            }
            Err(mpsc::error::TrySendError::Closed(m)) => {
                tracing::warn!(webhook = %self.name, key = %m.key, "alert sender stopped; message dropped");
                false
            }
        }
    }
}

/// The settings of `alerts:` a sender task is started with.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DeliverySettings {
    queue_size: usize,
    max_retries: usize,
    retry_delay: Duration,
    max_retry_delay: Duration,
}

impl DeliverySettings {
    pub(super) fn of(alerts: &AlertsConfig) -> DeliverySettings {
        DeliverySettings {
            queue_size: alerts.queue_size,
            max_retries: alerts.max_retries,
            retry_delay: alerts.retry_delay.0,
            max_retry_delay: alerts.max_retry_delay.0,
        }
    }
}

/// The task that POSTs one webhook's messages in order.
struct Sender {
    name: String,
    url: String,
    format: WebhookFormat,
    client: reqwest::Client,
    max_retries: usize,
    retry_delay: Duration,
    max_retry_delay: Duration,
    on_dropped: OnDropped,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Message>, stop: CancellationToken) {
        loop {
            let message = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                _ = stop.cancelled() => return,
            };
            tokio::select! {
                _ = self.deliver(&message) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn deliver(&self, message: &Message) {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.retry_delay)
            .with_max_delay(self.max_retry_delay)
            .with_max_times(self.max_retries)
            .with_jitter()
            .build();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let error = match self.post(&message.body).await {
                Ok(()) => {
                    tracing::info!(webhook = %self.name, key = %message.key, status = message.status.as_str(), attempt, "alert delivered");
                    metrics::alert_sent(&self.name, message.status.as_str());
                    return;
                }
                Err(e) => e,
            };
            match delays.next() {
                Some(delay) => {
                    tracing::warn!(webhook = %self.name, key = %message.key, attempt, %error, retry_in = ?delay, "alert delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tracing::error!(webhook = %self.name, key = %message.key, status = message.status.as_str(), attempts = attempt, %error, "alert delivery failed; message dropped");
                    metrics::alert_dropped(&self.name, "delivery_failed");
                    if message.status == Status::Firing {
                        (self.on_dropped)(&message.key);
                    }
                    return;
                }
            }
        }
    }

    /// One attempt. Errors never carry the URL (it may hold a token).
    async fn post(&self, body: &Value) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", snippet(&text)));
        }
        // DingTalk and WeCom answer 200 with a non-zero `errcode` when they refuse a message.
        if matches!(self.format, WebhookFormat::Dingtalk | WebhookFormat::Wecom)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(code) = v.get("errcode").and_then(Value::as_i64)
            && code != 0
        {
            return Err(format!(
                "errcode {code}: {}",
                snippet(&v["errmsg"].to_string())
            ));
        }
        Ok(())
    }
}

fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display includes the URL; only the innermost cause is kept.
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
