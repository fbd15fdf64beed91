//! `/metrics` and webhook alerts of the real master (and replica) processes.
//!
//! Every scrape is parsed with a Prometheus text-format parser; alerts go to a webhook receiver
//! (axum on a loopback port) run by the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use dms_e2e::provider::FakeYahoo;
use dms_e2e::{
    Check, DaemonProcess, InfluxServer, MasterProcess, ReplicaProcess, free_port, replica_config,
    wait_until, write_daily_csvs,
};
use nix::sys::signal::Signal;
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::Value;

/// One parsed `/metrics` answer.
#[derive(Debug)]
struct Metrics(Vec<Sample>);

impl Metrics {
    /// GETs and parses `/metrics` of `daemon`; fails on anything but a 200 in the text format.
    async fn scrape(daemon: &DaemonProcess) -> anyhow::Result<Metrics> {
        let (code, text) = daemon.get_text("/metrics").await?;
        anyhow::ensure!(code == 200, "/metrics answered {code}: {text}");
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        anyhow::ensure!(!scrape.samples.is_empty(), "no samples in {text}");
        Ok(Metrics(scrape.samples))
    }

    fn find(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.0
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// The value of a counter, gauge or untyped sample (`_sum`, `_count` of histograms).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(metric, labels).and_then(|s| match s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => Some(v),
            _ => None,
        })
    }

    /// Like [`Metrics::value`], 0 when the series does not exist (yet).
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(metric, labels).unwrap_or(0.0)
    }

    /// The `+Inf` bucket of a histogram (its number of observations).
    fn histogram_total(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match &self.find(metric, labels)?.value {
            Metric::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            _ => None,
        }
    }
}

/// A webhook receiver: the JSON bodies POSTed to `/hook`.
#[derive(Debug, Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Serves on `port` of loopback.
    async fn start(port: u16) -> Receiver {
        let r = Receiver::default();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the receiver's port");
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn messages(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a message satisfies `wanted`; returns it.
    async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(what, timeout, async || {
            let got = self.messages();
            Ok(match got.iter().find(|m| wanted(m)) {
                Some(m) => Check::Ready(m.clone()),
                None => Check::Waiting(format!("{got:?}")),
            })
        })
        .await
        .unwrap()
    }
}

async fn receive(State(r): State<Receiver>, Json(v): Json<Value>) {
    r.got.lock().unwrap().push(v);
}

fn yahoo_source(name: &str, base_url: &str) -> String {
    format!(
        "
  - type: yahoo
    name: {name}
    base_url: {base_url}
    request_timeout: 2s
    min_retry_delay: 20ms
    max_retries: 1
    requests_per_second: 1000
    max_concurrency: 2"
    )
}

async fn queue(master: &MasterProcess, path: &str, body: &str) -> String {
    let (code, answer) = master.post(path, body).await.unwrap();
    assert_eq!(code, 202, "{answer}");
    answer["task_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_show_bars_journal_and_task_figures_growing_during_an_import() {
    let yahoo = FakeYahoo::start(true, Duration::from_millis(20)).await;
    let symbols: Vec<String> = (0..300).map(|i| format!("M{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:{}
watchlists:
  - name: all
    source: gen
    calendar: nyse
    symbols: [{}]
tasks:
  concurrency: 2
",
        yahoo_source("gen", &yahoo.base_url()),
        symbols.join(", ")
    );
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let first = Metrics::scrape(&master).await.unwrap();
    assert_eq!(first.value("dms_journal_head_seq", &[]), Some(0.0));

    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
    )
    .await;
    // Scrape over and over while the import runs: (task status, figures) each time.
    let mut seen: Vec<(String, Metrics)> = Vec::new();
    let task = master
        .wait_until(
            "the import to finish",
            Duration::from_secs(120),
            async || {
                let m = Metrics::scrape(&master).await?;
                let task = master.task(&id).await?;
                let status = task["status"].as_str().unwrap_or_default().to_owned();
                seen.push((status.clone(), m));
                Ok(match status.as_str() {
                    "completed" | "failed" | "cancelled" => Check::Ready(task),
                    _ => Check::Waiting(task.to_string()),
                })
            },
        )
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    let running: Vec<&Metrics> = seen
        .iter()
        .filter(|(s, _)| s == "running")
        .map(|(_, m)| m)
        .collect();
    let from_gen = [("source", "gen")];
    let ingested: Vec<f64> = running
        .iter()
        .map(|m| m.get("dms_bars_ingested_total", &from_gen))
        .collect();
    let mut distinct = ingested.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 3,
        "bars ingested should grow while the import runs: {ingested:?}"
    );
    for (what, labels) in [
        ("dms_bars_ingested_total", &from_gen[..]),
        ("dms_provider_requests_total", &from_gen[..]),
        ("dms_journal_head_seq", &[][..]),
        ("dms_journal_size_bytes", &[][..]),
    ] {
        let values: Vec<f64> = seen.iter().map(|(_, m)| m.get(what, labels)).collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "{what} never goes back: {values:?}"
        );
        assert!(
            values.first() < values.last(),
            "{what} grew over the import: {values:?}"
        );
    }
    let done = [("kind", "full_import"), ("outcome", "completed")];
    assert!(
        running
            .iter()
            .all(|m| m.value("dms_task_duration_seconds_count", &done).is_none()),
        "no task had finished while the import ran"
    );

    let status = master.wait_applied(Duration::from_secs(30)).await.unwrap();
    let last = Metrics::scrape(&master).await.unwrap();
    let head = status["journal"]["head"].as_f64().unwrap();
    assert_eq!(last.value("dms_journal_head_seq", &[]), Some(head));
    assert_eq!(last.value("dms_store_applied_seq", &[]), Some(head));
    assert_eq!(last.value("dms_store_lag_entries", &[]), Some(0.0));
    assert_eq!(last.value("dms_store_lag_seconds", &[]), Some(0.0));
    assert_eq!(
        last.value("dms_journal_entries", &[]),
        status["journal"]["entries"].as_f64()
    );
    let counters = &task["counters"];
    assert_eq!(
        last.get("dms_bars_ingested_total", &from_gen),
        counters["bars_written"].as_f64().unwrap()
    );
    assert_eq!(
        last.get("dms_provider_requests_total", &from_gen),
        counters["requests"].as_f64().unwrap()
    );
    assert_eq!(
        last.histogram_total("dms_provider_request_duration_seconds", &from_gen),
        counters["requests"].as_f64()
    );
    assert_eq!(last.get("dms_bars_rejected_total", &from_gen), 0.0);
    assert_eq!(last.value("dms_tasks_total", &done), Some(1.0));
    assert_eq!(
        last.histogram_total("dms_task_duration_seconds", &done),
        Some(1.0)
    );
    let took = last.get("dms_task_duration_seconds_sum", &done);
    assert!(
        took > 0.5,
        "300 series at 20 ms a request take a while: {took}"
    );
    assert!(last.histogram_total("dms_store_apply_duration_seconds", &[]) >= Some(1.0));
    assert_eq!(
        last.get("dms_store_applied_entries_total", &[]),
        head,
        "every entry applied once"
    );

    // A second task adds to the same figures.
    let id = queue(&master, "/api/data/update", r#"{"limit": 10}"#).await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    let after = Metrics::scrape(&master).await.unwrap();
    assert_eq!(
        after.histogram_total(
            "dms_task_duration_seconds",
            &[("kind", "incremental_update"), ("outcome", "completed")]
        ),
        Some(1.0)
    );
    assert!(
        after.get("dms_provider_requests_total", &from_gen)
            >= last.get("dms_provider_requests_total", &from_gen) + 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failure_reaches_a_receiver_that_was_down_at_first_and_imports_go_on_meanwhile() {
    let missing = FakeYahoo::start(false, Duration::ZERO).await;
    let good = FakeYahoo::start(true, Duration::from_millis(5)).await;
    let receiver_port = free_port(); // nothing listens there yet
    let symbols: Vec<String> = (0..40).map(|i| format!("G{i:02}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:{}{}
watchlists:
  - {{name: gone, source: bad, calendar: nyse, symbols: [NOPE1, NOPE2]}}
  - {{name: fine, source: gen, calendar: nyse, symbols: [{}]}}
tasks:
  second_pass_delay: 100ms
alerts:
  retry_delay: 200ms
  max_retry_delay: 500ms
  max_retries: 200
  webhooks:
    - name: ops
      url: http://127.0.0.1:{receiver_port}/hook
      format: dingtalk
      timeout: 2s
      headers: {{X-Receiver-Token: s3cret-header}}
",
        yahoo_source("bad", &missing.base_url()),
        yahoo_source("gen", &good.base_url()),
        symbols.join(", ")
    );
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();

    let failed = queue(&master, "/api/data/update", r#"{"source": "bad"}"#).await;
    let t = master
        .wait_task(&failed, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "failed", "{t}");
    // The receiver is down: the master retries…
    master
        .wait_until(
            "the master to retry the alert",
            Duration::from_secs(10),
            async || {
                let log = master.log_text();
                Ok(if log.contains("alert delivery failed; retrying") {
                    Check::Ready(())
                } else {
                    Check::Waiting("no retry logged yet".into())
                })
            },
        )
        .await
        .unwrap();
    // …and the pipeline goes on meanwhile.
    let import = queue(
        &master,
        "/api/data/import",
        r#"{"source": "gen", "start_date": "2024-01-01", "end_date": "2024-03-01"}"#,
    )
    .await;
    let t = master
        .wait_task(&import, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["series_done"], 40, "{t}");
    let m = Metrics::scrape(&master).await.unwrap();
    assert_eq!(m.get("dms_alerts_sent_total", &[("webhook", "ops")]), 0.0);

    let receiver = Receiver::start(receiver_port).await;
    let alert = receiver
        .wait_for("the task failure alert", Duration::from_secs(30), |m| {
            m["markdown"]["text"]
                .as_str()
                .is_some_and(|t| t.contains(&failed))
        })
        .await;
    assert_eq!(alert["msgtype"], "markdown", "{alert}");
    let title = alert["markdown"]["title"].as_str().unwrap();
    assert_eq!(
        title,
        format!("[DMS FIRING] task {failed} (incremental_update) failed")
    );
    let text = alert["markdown"]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("task_failed:{failed}")) && text.contains("every series failed"),
        "{text}"
    );
    // Both requests of the failed task failed: the provider's success rate is 0 %.
    let rate = receiver
        .wait_for(
            "the provider success rate alert",
            Duration::from_secs(30),
            |m| {
                m["markdown"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("provider_success_rate:bad"))
            },
        )
        .await;
    assert!(
        rate["markdown"]["title"]
            .as_str()
            .unwrap()
            .contains("provider bad: 0.0 % of requests succeeded"),
        "{rate}"
    );
    // The good source's import did not judge the bad one; nothing else was sent.
    assert_eq!(receiver.messages().len(), 2, "{:?}", receiver.messages());
    master
        .wait_until(
            "the deliveries to be counted",
            Duration::from_secs(10),
            async || {
                let m = Metrics::scrape(&master).await?;
                let sent = m.get(
                    "dms_alerts_sent_total",
                    &[("webhook", "ops"), ("status", "firing")],
                );
                Ok(if sent == 2.0 {
                    Check::Ready(())
                } else {
                    Check::Waiting(format!("sent {sent}"))
                })
            },
        )
        .await
        .unwrap();
    let log = master.log_text();
    assert!(!log.contains("s3cret-header"), "a header value was logged");
    assert!(
        !log.contains(&format!("{receiver_port}/hook")),
        "the webhook URL was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_alert_fires_while_the_replica_is_down_and_resolves_once_it_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("csv");
    write_daily_csvs(&csv, 2, 200);
    let receiver_port = free_port();
    let receiver = Receiver::start(receiver_port).await;
    let config = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - {{type: csv, name: files, dir: {}, import_on_start: false}}
alerts:
  check_interval: 200ms
  rules:
    replica_lag: 1s
  webhooks:
    - {{name: ops, url: 'http://127.0.0.1:{receiver_port}/hook', format: generic}}
",
        csv.display()
    );
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let rdir = dir.path().join("replica");
    let rconfig = replica_config("lagging", master.port, "");
    let mut replica = ReplicaProcess::start(&rdir, "lagging", &rconfig)
        .await
        .unwrap();
    replica
        .wait_in_sync(&master, Duration::from_secs(30))
        .await
        .unwrap();
    // A connected replica follows at once: no lag alert.
    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "1999-01-01"}"#,
    )
    .await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["counters"]["bars_written"], 400, "{t}");
    replica
        .wait_in_sync(&master, Duration::from_secs(30))
        .await
        .unwrap();
    let r = Metrics::scrape(&replica).await.unwrap();
    let head = master.status().await.unwrap()["journal"]["head"]
        .as_f64()
        .unwrap();
    assert_eq!(r.value("dms_replica_applied_seq", &[]), Some(head));
    assert_eq!(r.value("dms_replica_lag_entries", &[]), Some(0.0));
    assert_eq!(r.value("dms_replica_connected", &[]), Some(1.0));
    assert!(r.get("dms_replica_sessions_total", &[]) >= 1.0);
    let node = [("node", "lagging")];
    let m = Metrics::scrape(&master).await.unwrap();
    assert_eq!(m.value("dms_replica_lag_entries", &node), Some(0.0));
    assert_eq!(m.value("dms_replica_connected", &node), Some(1.0));
    assert!(receiver.messages().is_empty(), "{:?}", receiver.messages());

    // The replica goes away and the master journals more: it falls behind.
    replica
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    write_daily_csvs(&csv, 2, 210);
    let id = queue(&master, "/api/data/update", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["counters"]["bars_written"], 20, "{t}");
    let firing = receiver
        .wait_for("the replica lag alert", Duration::from_secs(30), |m| {
            m["key"] == "replica_lag:lagging" && m["status"] == "firing"
        })
        .await;
    assert_eq!(firing["kind"], "replica_lag");
    assert_eq!(firing["severity"], "warning");
    assert!(
        firing["summary"]
            .as_str()
            .unwrap()
            .starts_with("replica lagging is "),
        "{firing}"
    );
    assert!(firing["at"].as_str().unwrap().ends_with('Z'), "{firing}");
    let m = Metrics::scrape(&master).await.unwrap();
    assert!(m.get("dms_replica_lag_seconds", &node) > 1.0, "{m:?}");
    assert!(m.get("dms_replica_lag_entries", &node) >= 1.0);
    assert_eq!(m.value("dms_replica_connected", &node), Some(0.0));

    // Back: it catches up, and the alert is resolved.
    let replica = ReplicaProcess::start(&rdir, "lagging", &rconfig)
        .await
        .unwrap();
    let resolved = receiver
        .wait_for(
            "the replica lag to be resolved",
            Duration::from_secs(30),
            |m| m["key"] == "replica_lag:lagging" && m["status"] == "resolved",
        )
        .await;
    assert_eq!(resolved["summary"], firing["summary"]);
    let firing_count = receiver
        .messages()
        .iter()
        .filter(|m| m["status"] == "firing")
        .count();
    assert_eq!(
        firing_count,
        1,
        "sent once while active: {:?}",
        receiver.messages()
    );
    let r = replica
        .wait_in_sync(&master, Duration::from_secs(30))
        .await
        .unwrap();
    let m = Metrics::scrape(&replica).await.unwrap();
    assert_eq!(
        m.value("dms_replica_applied_seq", &[]),
        r["cursor"].as_f64(),
        "{r}"
    );
    assert_eq!(m.value("dms_replica_lag_entries", &[]), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_error_alert_fires_while_influxdb_is_down_and_resolves_when_it_is_back() {
    let mut influx = InfluxServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gen");
    write_daily_csvs(&csv, 2, 100);
    let receiver_port = free_port();
    let receiver = Receiver::start(receiver_port).await;
    let config = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
store: {{type: influxdb, url: '{}', database: dms_alerts}}
sources:
  - {{type: csv, name: gen, dir: ./gen, interval: 1d}}
alerts:
  check_interval: 200ms
  webhooks:
    - {{name: team, url: 'http://127.0.0.1:{receiver_port}/hook', format: wecom}}
",
        influx.url()
    );
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();

    influx.stop().await.unwrap();
    let is_store = |status: &'static str| {
        move |m: &Value| {
            m["msgtype"] == "markdown"
                && m["markdown"]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("**key**: store_error") && c.contains(status))
        }
    };
    let firing = receiver
        .wait_for(
            "the store error alert",
            Duration::from_secs(30),
            is_store("[DMS FIRING]"),
        )
        .await;
    let content = firing["markdown"]["content"].as_str().unwrap();
    assert!(
        content.contains("the store does not answer") && content.contains("**severity**: critical"),
        "{content}"
    );
    influx.start_again().await.unwrap();
    receiver
        .wait_for(
            "the store error to be resolved",
            Duration::from_secs(60),
            is_store("[DMS RESOLVED]"),
        )
        .await;
    let firing_count = receiver
        .messages()
        .iter()
        .filter(|m| {
            m["markdown"]["content"]
                .as_str()
                .is_some_and(|c| c.contains("FIRING"))
        })
        .count();
    assert_eq!(firing_count, 1, "{:?}", receiver.messages());
}
