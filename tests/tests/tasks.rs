//! Long-running task behaviour of the real master process: resuming after SIGKILL, recovering
//! from a provider outage, and filling gaps.

use std::time::Duration;

use dms_e2e::MasterProcess;
use dms_e2e::provider::{FakeYahoo, Fault};
use nix::sys::signal::Signal;
use serde_json::Value;

fn config(base_url: &str, symbols: &[String], concurrency: usize) -> String {
    format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - type: yahoo
    name: gen
    base_url: {base_url}
    request_timeout: 2s
    min_retry_delay: 20ms
    max_retries: 1
    requests_per_second: 1000
    max_concurrency: {concurrency}
watchlists:
  - name: all
    source: gen
    calendar: nyse
    symbols: [{}]
tasks:
  concurrency: {concurrency}
  second_pass_delay: 100ms
",
        symbols.join(", ")
    )
}

fn day(date: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

async fn queue(master: &MasterProcess, path: &str, body: &str) -> String {
    let (code, answer) = master.post(path, body).await.unwrap();
    assert_eq!(code, 202, "{answer}");
    answer["task_id"].as_str().unwrap().to_owned()
}

async fn gaps(master: &MasterProcess, symbol: &str) -> Value {
    let (code, g) = master
        .get(&format!("/api/data/gaps?symbol={symbol}&interval=1d"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{g}");
    g["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_halfway_resumes_without_refetching_finished_series() {
    let yahoo = FakeYahoo::start(true, Duration::from_millis(100)).await;
    let symbols: Vec<String> = (0..500).map(|i| format!("K{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&yahoo.base_url(), &symbols, 4);
    let mut master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
    )
    .await;
    master
        .wait_series_done(&id, 200, Duration::from_secs(60))
        .await
        .unwrap();
    master
        .stop(Signal::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let before: u64 = yahoo.all_requests().values().sum();
    assert!(before < 500, "killed halfway: {before} requests");

    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let task = master
        .wait_task(&id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["series_failed"], 0, "{task}");
    // The time reported is the task's, from its first start, not the last process's life.
    let message = task["message"].as_str().unwrap();
    assert!(
        message.contains("since it resumed after a restart"),
        "{message}"
    );
    let status = master.wait_applied(Duration::from_secs(30)).await.unwrap();
    // Every symbol is stored whole, once: 2024-01-01..2024-04-01 has 65 weekdays.
    assert_eq!(status["total_series"], 500, "{status}");
    assert_eq!(status["total_records"], 500 * 65, "{status}");
    let requests = yahoo.all_requests();
    assert_eq!(requests.len(), 500);
    let twice: Vec<_> = requests.iter().filter(|(_, n)| **n > 1).collect();
    // Only series in flight when the process died are fetched again.
    assert!(
        twice.len() <= 8,
        "{} series fetched again: {twice:?}",
        twice.len()
    );
    assert!(
        master.log_text().contains("resuming"),
        "{}",
        master.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_after_an_outage_recovers_every_missing_bar_and_backfill_fills_gaps() {
    let yahoo = FakeYahoo::start(true, Duration::ZERO).await;
    let symbols = vec!["GAPPY".to_owned()];
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(dir.path(), &config(&yahoo.base_url(), &symbols, 2))
        .await
        .unwrap();
    // The provider lost 2024-02-05 .. 2024-02-09 for a while.
    yahoo.set_outage(Some((day("2024-02-05"), day("2024-02-10"))));
    let ten_days_ago = chrono::Utc::now().date_naive() - chrono::Days::new(10);
    let id = queue(
        &master,
        "/api/data/import",
        &format!(r#"{{"start_date": "2024-01-02", "end_date": "{ten_days_ago}"}}"#),
    )
    .await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    master.wait_applied(Duration::from_secs(10)).await.unwrap();

    let g = gaps(&master, "GAPPY").await;
    let list = g["gaps"].as_array().unwrap();
    assert_eq!(list[0]["start"], "2024-02-05T00:00:00Z", "{g}");
    assert_eq!(list[0]["end"], "2024-02-12T00:00:00Z", "{g}");
    assert_eq!(list[0]["missing"], 5, "{g}");
    assert_eq!(list.len(), 2, "the hole and the days since the import: {g}");
    assert_eq!(g["calendar"], "Nyse");

    // The provider is down: the update fails, nothing is lost.
    yahoo.script((0..10).map(|_| Fault::ServerError(502)));
    let id = queue(&master, "/api/data/update", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "failed", "{t}");
    assert_eq!(t["progress"], 100.0, "every series ended: {t}");
    assert_eq!(t["error"], "every series failed");
    assert_eq!(t["counters"]["failed"][0]["series"], "GAPPY@1d", "{t}");

    // Back up: the next update fetches everything since the last stored bar by itself.
    yahoo.clear_script();
    let id = queue(&master, "/api/data/update", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert!(t["counters"]["bars_written"].as_u64().unwrap() >= 5, "{t}");
    master.wait_applied(Duration::from_secs(10)).await.unwrap();
    let g = gaps(&master, "GAPPY").await;
    assert_eq!(
        g["gaps"].as_array().unwrap().len(),
        1,
        "only the old hole is left: {g}"
    );

    // The provider has the lost days again; a backfill fetches just the hole.
    yahoo.set_outage(None);
    let id = queue(&master, "/api/data/backfill", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["gaps_found"], 1, "{t}");
    assert_eq!(t["counters"]["bars_written"], 5, "{t}");
    master.wait_applied(Duration::from_secs(10)).await.unwrap();
    let g = gaps(&master, "GAPPY").await;
    assert_eq!(g["missing"], 0, "{g}");
}
