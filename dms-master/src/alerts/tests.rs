//! Alerts against a real HTTP receiver on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;
use tokio::sync::Notify;

use super::*;

/// A webhook receiver: every POST body, with the path it came to.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    arrived: Arc<Notify>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let r = Receiver::default();
        let app = Router::new()
            .route("/{hook}", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, base)
    }

    /// Waits (at most 10 s) until `n` messages arrived; returns them.
    async fn wait_for(&self, n: usize) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            {
                let got = self.got.lock().unwrap();
                if got.len() >= n {
                    return got.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} messages, got {:?}", self.got.lock().unwrap());
            }
        }
    }
}

async fn receive(State(r): State<Receiver>, Path(hook): Path<String>, Json(v): Json<Value>) {
    r.got.lock().unwrap().push((hook, v));
    r.arrived.notify_waiters();
}

fn config(url: &str, format: WebhookFormat) -> AlertsConfig {
    AlertsConfig {
        webhooks: vec![WebhookConfig::new("ops", url, format)],
        retry_delay: dms_common::config::ConfigDuration(Duration::from_millis(20)),
        ..AlertsConfig::default()
    }
}

fn lag(node: &str) -> Alert {
    Alert::replica_lag(node, 400.0, 12, 300.0)
}

/// (status, key) of generic messages.
fn summary(got: &[(String, Value)]) -> Vec<(String, String)> {
    got.iter()
        .map(|(_, v)| {
            (
                v["status"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(status: &str, key: &str) -> (String, String) {
    (status.to_owned(), key.to_owned())
}

#[tokio::test]
async fn a_repeated_alert_is_sent_once_while_active_then_resolved_once() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(config(&format!("{base}/a"), WebhookFormat::Generic), &stop);
    alerts.raise(lag("r1"));
    alerts.raise(lag("r1"));
    alerts.raise(lag("r1"));
    alerts.resolve("replica_lag:r1");
    alerts.resolve("replica_lag:r1");
    // Resolving what is not active sends nothing; an event after it marks the end.
    alerts.resolve("replica_lag:never-raised");
    alerts.raise(Alert::task_failed(
        "t-9",
        "full_import",
        "every series failed",
    ));
    let got = rx.wait_for(3).await;
    assert_eq!(
        summary(&got),
        [
            pair("firing", "replica_lag:r1"),
            pair("resolved", "replica_lag:r1"),
            pair("firing", "task_failed:t-9"),
        ]
    );
    assert_eq!(got[1].1["summary"], got[0].1["summary"]);
    assert!(!alerts.is_active("replica_lag:r1"));
    // The event stays known within its repeat interval: raised again, it is not re-sent.
    alerts.raise(Alert::task_failed(
        "t-9",
        "full_import",
        "every series failed",
    ));
    alerts.raise(lag("r2"));
    let got = rx.wait_for(4).await;
    assert_eq!(summary(&got)[3], pair("firing", "replica_lag:r2"));
    stop.cancel();
}

#[tokio::test]
async fn an_active_alert_is_sent_again_after_the_repeat_interval() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let mut c = config(&format!("{base}/a"), WebhookFormat::Generic);
    c.repeat_interval = dms_common::config::ConfigDuration(Duration::from_millis(300));
    let alerts = Alerts::start(c, &stop);
    alerts.raise(lag("r1"));
    rx.wait_for(1).await;
    alerts.raise(lag("r1"));
    // The repeat interval is what is tested: let it pass.
    tokio::time::sleep(Duration::from_millis(350)).await;
    alerts.raise(lag("r1"));
    let got = rx.wait_for(2).await;
    assert_eq!(
        summary(&got),
        [
            pair("firing", "replica_lag:r1"),
            pair("firing", "replica_lag:r1")
        ]
    );
    stop.cancel();
}

#[tokio::test]
async fn the_rate_limit_drops_firing_messages_but_never_resolved_ones() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let mut c = config(&format!("{base}/a"), WebhookFormat::Generic);
    c.rate_limit = RateLimitConfig {
        max_messages: 2,
        window: dms_common::config::ConfigDuration(Duration::from_secs(3600)),
    };
    let alerts = Alerts::start(c, &stop);
    alerts.raise(lag("r1"));
    alerts.raise(lag("r2"));
    alerts.raise(lag("r3")); // over the limit: dropped
    alerts.resolve("replica_lag:r1");
    // r3 never reached the webhook, so its resolution is not sent either.
    alerts.resolve("replica_lag:r3");
    alerts.resolve("replica_lag:r2");
    let got = rx.wait_for(4).await;
    assert_eq!(
        summary(&got),
        [
            pair("firing", "replica_lag:r1"),
            pair("firing", "replica_lag:r2"),
            pair("resolved", "replica_lag:r1"),
            pair("resolved", "replica_lag:r2"),
        ]
    );
    stop.cancel();
}

#[tokio::test]
async fn reload_keeps_active_alerts_and_switches_webhooks_formats_and_rules() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(
        config(&format!("{base}/before"), WebhookFormat::Generic),
        &stop,
    );
    alerts.raise(lag("r1"));
    rx.wait_for(1).await;

    let mut c = config(&format!("{base}/after"), WebhookFormat::Slack);
    c.rules.task_failed = false;
    alerts.reload(c);
    assert!(alerts.is_active("replica_lag:r1"));
    // Still active and already announced to "ops": not sent again.
    alerts.raise(lag("r1"));
    // Turned off: ignored.
    alerts.raise(Alert::task_failed("t-1", "full_import", "boom"));
    alerts.resolve("replica_lag:r1");
    let got = rx.wait_for(2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "before");
    assert_eq!(got[1].0, "after");
    let text = got[1].1["text"].as_str().unwrap();
    assert!(
        text.starts_with("*[DMS RESOLVED] replica r1 is 400 s behind*"),
        "{text}"
    );
    assert!(!alerts.is_active("task_failed:t-1"));
    stop.cancel();
}

#[tokio::test]
async fn provider_success_rate_fires_below_the_threshold_and_resolves_at_it() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let alerts = Alerts::start(config(&format!("{base}/a"), WebhookFormat::Generic), &stop);
    alerts.provider_run("yahoo", "t-1", 100, 6); // 94 % < 95 %
    alerts.provider_run("yahoo", "t-2", 0, 0); // nothing to judge
    alerts.provider_run("yahoo", "t-3", 100, 5); // 95 %: fine again
    let got = rx.wait_for(2).await;
    assert_eq!(
        summary(&got),
        [
            pair("firing", "provider_success_rate:yahoo"),
            pair("resolved", "provider_success_rate:yahoo"),
        ]
    );
    assert_eq!(got[0].1["kind"], "provider_success_rate");
    assert!(
        got[0].1["details"]
            .as_str()
            .unwrap()
            .contains("6 of 100 requests failed"),
        "{}",
        got[0].1
    );
    stop.cancel();
}

#[test]
fn config_errors_name_the_key_and_never_repeat_the_url() {
    let mut c = config("ftp://hooks.example/secret-token", WebhookFormat::Generic);
    c.webhooks.push(WebhookConfig::new(
        "ops",
        "http://x/secret-token",
        WebhookFormat::Slack,
    ));
    c.rules.provider_success_rate = Some(95.0);
    c.rate_limit.max_messages = 0;
    let issues: Vec<String> = c
        .issues()
        .iter()
        .map(|i| format!("{}: {}", i.key, i.message))
        .collect();
    let all = issues.join("\n");
    assert!(
        all.contains("alerts.webhooks[0].url: scheme \"ftp\""),
        "{all}"
    );
    assert!(all.contains("alerts.webhooks[1].name"), "{all}");
    assert!(all.contains("alerts.rules.provider_success_rate"), "{all}");
    assert!(all.contains("alerts.rate_limit.max_messages"), "{all}");
    assert!(!all.contains("secret-token"), "{all}");
}

#[test]
fn printed_config_hides_webhook_urls_and_header_values() {
    let mut c = config(
        "https://oapi.dingtalk.com/robot/send?access_token=tok-123",
        WebhookFormat::Dingtalk,
    );
    c.webhooks[0].headers.insert(
        "Authorization".into(),
        dms_common::config::Secret::new("Bearer hdr-456"),
    );
    let printed = serde_json::to_string(&c).unwrap();
    assert!(
        !printed.contains("tok-123") && !printed.contains("hdr-456"),
        "{printed}"
    );
    assert!(printed.contains("\"format\":\"dingtalk\""), "{printed}");
    assert!(format!("{c:?}").contains("<redacted>"));
    assert!(!format!("{c:?}").contains("tok-123"));
}

#[tokio::test]
async fn a_firing_message_that_could_not_be_delivered_is_sent_at_the_next_raise() {
    // A receiver that answers 503 while `failing`, then takes messages.
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (rx, base) = Receiver::start().await;
    let app = Router::new().route(
        "/flaky",
        post({
            let (failing, attempts, rx) = (failing.clone(), attempts.clone(), rx.clone());
            move |Json(v): Json<Value>| async move {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if failing.load(std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                receive(State(rx), Path("flaky".to_owned()), Json(v)).await;
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky = format!("http://{}/flaky", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    drop(base);

    let stop = CancellationToken::new();
    let mut c = config(&flaky, WebhookFormat::Generic);
    c.max_retries = 0;
    let alerts = Alerts::start(c, &stop);
    alerts.raise(lag("r1"));
    // The one attempt fails and the message is dropped: the alert is not heard there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let heard = alerts.lock().active["replica_lag:r1"]
            .notified
            .contains_key("ops");
        if attempts.load(std::sync::atomic::Ordering::SeqCst) >= 1 && !heard {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drop was not noticed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The condition still holds at the next check: raised again well within the repeat
    // interval, it is sent (it would not be, had the dropped message counted as heard).
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    alerts.raise(lag("r1"));
    let got = rx.wait_for(1).await;
    assert_eq!(summary(&got), [pair("firing", "replica_lag:r1")]);
    alerts.resolve("replica_lag:r1");
    let got = rx.wait_for(2).await;
    assert_eq!(summary(&got)[1], pair("resolved", "replica_lag:r1"));
    stop.cancel();
}

#[tokio::test]
async fn a_reload_that_leaves_a_webhook_unchanged_keeps_its_rate_limit_window() {
    let (rx, base) = Receiver::start().await;
    let stop = CancellationToken::new();
    let mut c = config(&format!("{base}/a"), WebhookFormat::Generic);
    c.rate_limit = RateLimitConfig {
        max_messages: 1,
        window: dms_common::config::ConfigDuration(Duration::from_secs(3600)),
    };
    let alerts = Alerts::start(c.clone(), &stop);
    alerts.raise(lag("r1"));
    alerts.reload(c.clone());
    // Still the same window: a second alert is over the limit.
    alerts.raise(lag("r2"));
    // A changed webhook is a new one, with a new window.
    c.webhooks[0].timeout = dms_common::config::ConfigDuration(Duration::from_secs(3));
    alerts.reload(c);
    alerts.raise(lag("r3"));
    let got = rx.wait_for(2).await;
    assert_eq!(
        summary(&got),
        [
            pair("firing", "replica_lag:r1"),
            pair("firing", "replica_lag:r3")
        ]
    );
    stop.cancel();
}
