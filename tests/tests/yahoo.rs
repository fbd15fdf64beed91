//! The master fetching from Yahoo's chart API, served offline by `FakeYahoo` from recorded
//! real responses (or generated data), through the master's real Yahoo client.

use std::time::Duration;

use dms_e2e::provider::{FakeYahoo, Fault, RateLimit, Split, generated_close};
use dms_e2e::{Dmsctl, MasterProcess, unix_day};
use serde_json::Value;

fn config(base_url: &str, symbols: &str, extra_source: &str) -> String {
    format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - type: yahoo
    name: yahoo
    base_url: {base_url}
    request_timeout: 1s
    min_retry_delay: 50ms
    requests_per_second: 100
{extra_source}
watchlists:
  - name: test
    source: yahoo
    symbols: [{symbols}]
tasks:
  second_pass_delay: 200ms
"
    )
}

async fn run_task(master: &MasterProcess, path: &str, body: &str) -> Value {
    let (code, answer) = master.post(path, body).await.unwrap();
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["success"], true);
    let id = answer["task_id"].as_str().unwrap().to_owned();
    let task = master
        .wait_task(&id, Duration::from_secs(60))
        .await
        .unwrap();
    master.wait_applied(Duration::from_secs(30)).await.unwrap();
    task
}

/// A `FakeYahoo` (serving `fixture` for AAPL when given) and a master keeping `symbols` from
/// it, its config passed through `edit` first. Keep the directory alive as long as the master.
async fn start(
    fixture: Option<&str>,
    symbols: &str,
    edit: impl Fn(String) -> String,
) -> (FakeYahoo, MasterProcess, tempfile::TempDir) {
    let yahoo = FakeYahoo::start(false, Duration::ZERO).await;
    if let Some(f) = fixture {
        yahoo.record("AAPL", f);
    }
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(dir.path(), &edit(config(&yahoo.base_url(), symbols, "")))
        .await
        .unwrap();
    (yahoo, master, dir)
}

fn recorded_aapl() -> Value {
    let path = dms_e2e::repo_root()
        .join("dms-master/tests/fixtures/yahoo/chart-AAPL-2020-08-31-to-2020-11-07.json");
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["body"]["chart"]["result"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_import_stores_the_recorded_bars_and_an_update_right_after_writes_nothing() {
    let (_yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL",
        |c| c,
    )
    .await;

    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"symbols": ["AAPL"], "start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["progress"], 100.0);
    assert_eq!(task["counters"]["bars_written"], 49, "{task}");
    assert_eq!(task["is_running"], false);

    let (code, bars) = master
        .get("/api/data/bars?symbol=AAPL&interval=1d&limit=1000")
        .await
        .unwrap();
    assert_eq!(code, 200, "{bars}");
    let data = bars["data"].as_array().unwrap();
    assert_eq!(data.len(), 49);
    // Session opens (14:30Z / 13:30Z) became trading dates at 00:00Z; prices as the exchange
    // printed them: Yahoo serves float32 values as doubles, stored as the shortest decimal of
    // that float32 (127.58000183105469 is stored as 127.58).
    let recorded = recorded_aapl();
    let q = &recorded["indicators"]["quote"][0];
    let printed = |v: Option<f64>| v.map(|v| (v as f32).to_string().parse::<f64>().unwrap());
    let mut denoised = 0;
    for (i, bar) in data.iter().enumerate() {
        let raw_ts = recorded["timestamp"][i].as_i64().unwrap();
        let date =
            chrono::DateTime::from_timestamp(raw_ts, 0).unwrap() - chrono::Duration::hours(5);
        assert_eq!(
            bar["ts"].as_str().unwrap(),
            format!("{}T00:00:00Z", date.format("%Y-%m-%d")),
            "bar {i}"
        );
        for f in ["open", "high", "low", "close"] {
            let stored = bar[f].as_f64().unwrap();
            assert_eq!(Some(stored), printed(q[f][i].as_f64()), "bar {i} {f}");
            assert_eq!(
                stored as f32,
                q[f][i].as_f64().unwrap() as f32,
                "the same float32"
            );
            denoised += usize::from(Some(stored) != q[f][i].as_f64());
        }
        assert_eq!(
            bar["adj_close"].as_f64(),
            printed(recorded["indicators"]["adjclose"][0]["adjclose"][i].as_f64())
        );
    }
    assert!(
        denoised > 100,
        "most served prices carried float32 noise: {denoised}"
    );
    assert_eq!(data[0]["ts"], "2020-08-31T00:00:00Z");

    let (_, actions) = master.get("/api/data/actions?symbol=AAPL").await.unwrap();
    let actions = actions["data"].as_array().unwrap().clone();
    assert!(
        actions.iter().any(|a| a["type"] == "split"
            && a["date"] == "2020-08-31"
            && a["numerator"] == 4.0
            && a["denominator"] == 1.0),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|a| a["type"] == "dividend" && a["amount"] == 0.205)
    );

    let update = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(update["status"], "completed", "{update}");
    assert_eq!(update["counters"]["bars_written"], 0, "{update}");
    assert!(
        update["counters"]["bars_unchanged"].as_u64().unwrap() > 0,
        "{update}"
    );
    let status = master.status().await.unwrap();
    assert_eq!(status["total_records"], 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_errors_timeouts_and_cut_bodies_are_retried_and_counted() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL",
        |c| c,
    )
    .await;
    yahoo.script([
        Fault::RateLimited {
            retry_after_secs: 1,
        },
        Fault::RateLimitedBare,
        Fault::ServerError(500),
        Fault::ServerError(503),
        Fault::Slow(Duration::from_secs(3)),
        Fault::Truncated,
    ]);
    let started = std::time::Instant::now();
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    // First pass: 6 attempts (5 retries), all failed; second pass: 1 request, success.
    assert_eq!(task["counters"]["retries"], 5, "{task}");
    assert_eq!(task["counters"]["requests"], 7, "{task}");
    assert_eq!(task["counters"]["series_failed"], 0, "{task}");
    assert_eq!(task["counters"]["bars_written"], 49, "{task}");
    assert_eq!(yahoo.requests("AAPL"), 7);
    // At least the 1 s Retry-After and the 1 s request timeout.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (_, bars) = master.get("/api/data/bars?symbol=AAPL").await.unwrap();
    assert_eq!(bars["count"], 49, "nothing half-parsed was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_is_waited_for() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL",
        |c| c,
    )
    .await;
    yahoo.script([Fault::RateLimited {
        retry_after_secs: 2,
    }]);
    let started = std::time::Instant::now();
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    // The client's own backoff starts at 50 ms: only the header explains a 2 s wait.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["retries"], 1, "{task}");
    assert_eq!(yahoo.requests("AAPL"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_retry_budget_is_not_waited_for() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL",
        |c| {
            c.replace(
                "    requests_per_second: 100\n",
                "    requests_per_second: 100\n    max_retry_elapsed: 2s\n",
            )
        },
    )
    .await;
    yahoo.script([Fault::RateLimited {
        retry_after_secs: 3600,
    }]);
    let started = std::time::Instant::now();
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    // Given up at once, then fetched by the second pass; nobody slept for an hour.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["bars_written"], 49, "{task}");
    assert_eq!(yahoo.requests("AAPL"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_symbols_fail_without_retries_and_the_rest_goes_on() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL, NOSUCH",
        |c| c,
    )
    .await;
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    // Some series failed after their second pass: not a plain success.
    assert_eq!(task["status"], "partial", "{task}");
    assert!(
        task["error"]
            .as_str()
            .unwrap()
            .contains("1 of 2 series failed"),
        "{task}"
    );
    assert_eq!(task["counters"]["series_done"], 1);
    assert_eq!(task["counters"]["series_failed"], 1);
    let failed = &task["counters"]["failed"][0];
    assert_eq!(failed["series"], "NOSUCH@1d");
    assert!(
        failed["reason"].as_str().unwrap().contains("No data found"),
        "{failed}"
    );
    assert_eq!(
        yahoo.requests("NOSUCH"),
        1,
        "a missing symbol is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_naming_the_field_and_start_nothing() {
    let (yahoo, master, _dir) = start(None, "AAPL", |c| c).await;
    let cases: &[(&str, &str, &str)] = &[
        ("/api/data/import", "{not json", "invalid JSON"),
        (
            "/api/data/import",
            r#"{"start_date": "2020-13-45"}"#,
            "start_date",
        ),
        (
            "/api/data/import",
            r#"{"start_date": "2021-01-01", "end_date": "2020-01-01"}"#,
            "end_date",
        ),
        (
            "/api/data/import",
            r#"{"symbols": ["AA PL"]}"#,
            "symbols[0]",
        ),
        ("/api/data/import", r#"{"symbols": []}"#, "symbols"),
        (
            "/api/data/import",
            r#"{"end_date": "1990-01-01"}"#,
            "end_date",
        ),
        ("/api/data/import", r#"{"limit": 0}"#, "limit"),
        ("/api/data/import", r#"{"limit": 99999999999}"#, "limit"),
        ("/api/data/import", r#"{"limit": -5}"#, "limit"),
        ("/api/data/import", r#"{"colour": "red"}"#, "colour"),
        ("/api/data/import", r#"{"interval": "2h"}"#, "interval"),
        ("/api/data/import", r#"{"source": "nowhere"}"#, "nowhere"),
        ("/api/data/update", r#"{"days": 0}"#, "days"),
        (
            "/api/data/update",
            r#"{"only_existing": "yes"}"#,
            "only_existing",
        ),
        ("/api/data/backfill", r#"{"symbols": "AAPL"}"#, "symbols"),
    ];
    for (path, body, field) in cases {
        let (code, answer) = master.post(path, body).await.unwrap();
        assert_eq!(code, 400, "{path} {body}: {answer}");
        assert_eq!(answer["success"], false);
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(field), "{path} {body}: {error}");
    }
    for (path, code) in [
        ("/api/data/tasks/full_import-999999", 404),
        ("/api/data/tasks?status=sleeping", 400),
        ("/api/data/tasks?limit=0", 400),
        ("/api/data/bars?interval=1d", 400),
        ("/api/data/bars?symbol=AAPL&interval=7d", 400),
        (
            "/api/data/bars?symbol=AAPL&start=2021-01-01&end=2020-01-01",
            400,
        ),
        ("/api/data/bars?symbol=AAPL&limit=100001", 400),
        ("/api/data/bars?symbol=AAPL&format=xml", 400),
        ("/api/data/gaps?symbol=A%20B", 400),
    ] {
        let (got, answer) = master.get(path).await.unwrap();
        assert_eq!(got, code, "{path}: {answer}");
        assert_eq!(answer["success"], false, "{path}");
    }
    let (code, answer) = master
        .post("/api/data/tasks/nope/cancel", "")
        .await
        .unwrap();
    assert_eq!(code, 404, "{answer}");
    let (_, tasks) = master.get("/api/data/tasks").await.unwrap();
    assert_eq!(
        tasks["count"], 0,
        "a rejected request started nothing: {tasks}"
    );
    assert_eq!(yahoo.all_requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_stops_within_two_seconds_and_tasks_run_one_at_a_time() {
    // 300 generated symbols, 100 ms each, 4 at a time: about 8 s of work.
    let yahoo = FakeYahoo::start(true, Duration::from_millis(100)).await;
    let symbols: Vec<String> = (0..300).map(|i| format!("G{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(
        dir.path(),
        &config(&yahoo.base_url(), &symbols.join(", "), "")
            .replace("tasks:\n", "tasks:\n  concurrency: 4\n"),
    )
    .await
    .unwrap();
    let (_, first) = master
        .post(
            "/api/data/import",
            r#"{"start_date": "2024-01-01", "end_date": "2024-03-01"}"#,
        )
        .await
        .unwrap();
    let (_, second) = master.post("/api/data/update", "{}").await.unwrap();
    let first = first["task_id"].as_str().unwrap().to_owned();
    let second = second["task_id"].as_str().unwrap().to_owned();
    // Wait until the import is under way.
    master
        .wait_series_done(&first, 10, Duration::from_secs(30))
        .await
        .unwrap();
    let (_, t) = master
        .get(&format!("/api/data/tasks/{second}"))
        .await
        .unwrap();
    assert_eq!(
        t["data"]["status"], "pending",
        "the update waits for the import"
    );
    let (_, running) = master.get("/api/data/tasks?status=running").await.unwrap();
    assert_eq!(running["count"], 1);

    let asked = std::time::Instant::now();
    let (code, answer) = master
        .post(&format!("/api/data/tasks/{first}/cancel"), "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    let task = master
        .wait_task(&first, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(task["status"], "cancelled", "{task}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    let done = task["counters"]["series_done"].as_u64().unwrap();
    assert!(done < 300, "{task}");
    // The store holds whole series only: every stored series has all of its bars.
    master.wait_applied(Duration::from_secs(10)).await.unwrap();
    let (_, series) = master.get("/api/data/series").await.unwrap();
    let counts: Vec<u64> = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect();
    // Every finished series is stored; at most the 4 in flight at the cancel got there too.
    let stored = counts.len() as u64;
    assert!(
        stored >= done && stored <= done + 4,
        "{stored} stored, {done} done"
    );
    // Each one whole: 2024-01-01 .. 2024-03-01 has 44 weekdays.
    assert!(counts.iter().all(|c| *c == 44), "{counts:?}");
    // Cancelling again is harmless; the queued update cancelled before it ran.
    let (code, _) = master
        .post(&format!("/api/data/tasks/{second}/cancel"), "")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let t = master
        .wait_task(&second, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(t["status"], "cancelled");
    let (code, answer) = master
        .post(&format!("/api/data/tasks/{first}/cancel"), "")
        .await
        .unwrap();
    assert_eq!(code, 409, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_endpoints_page_bars_as_json_and_csv_and_the_cache_follows_writes() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-08-31-to-2020-11-07.json"),
        "AAPL",
        |c| c,
    )
    .await;
    run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-08-01", "end_date": "2020-12-01"}"#,
    )
    .await;

    // Pages of 20 follow `next_start`: 49 bars are 3 pages.
    let mut seen = Vec::new();
    let mut path = "/api/data/bars?symbol=AAPL&interval=1d&limit=20".to_owned();
    for pages in 1.. {
        assert!(pages <= 3, "paging does not end: page {pages} is {path}");
        let (code, page) = master.get(&path).await.unwrap();
        assert_eq!(code, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 20);
        seen.extend(data.iter().map(|b| b["ts"].as_str().unwrap().to_owned()));
        match page["next_start"].as_str() {
            Some(next) => path = format!("/api/data/bars?symbol=AAPL&limit=20&start={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 49);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ordered, no repeats");

    // Half-open ranges: [2020-09-01, 2020-09-03) is two trading days.
    let (_, two) = master
        .get("/api/data/bars?symbol=AAPL&start=2020-09-01&end=2020-09-03")
        .await
        .unwrap();
    assert_eq!(two["count"], 2, "{two}");

    let (code, csv) = master
        .get_text("/api/data/bars?symbol=AAPL&format=csv")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "ts,open,high,low,close,volume,adj_close,turnover,open_interest"
    );
    assert_eq!(lines.len(), 50);
    assert!(
        // Yahoo sent 127.58000183105469 (a float32): stored as printed by the exchange.
        lines[1].starts_with("2020-08-31T00:00:00Z,127.58,"),
        "{}",
        lines[1]
    );

    // The second identical read is served from the cache...
    let (_, first) = master
        .get("/api/data/bars?symbol=AAPL&limit=100")
        .await
        .unwrap();
    let (_, again) = master
        .get("/api/data/bars?symbol=AAPL&limit=100")
        .await
        .unwrap();
    assert_eq!(first, again);
    let hits = master.status().await.unwrap()["bars_cache"]["hits"]
        .as_u64()
        .unwrap();
    assert!(hits >= 1);
    // ...until a write changes the series: the provider corrects the last close.
    let mut corrected = FakeYahoo::fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
    let quote = &mut corrected["chart"]["result"][0]["indicators"]["quote"][0];
    let mid = (quote["high"][48].as_f64().unwrap() + quote["low"][48].as_f64().unwrap()) / 2.0;
    quote["close"][48] = serde_json::json!(mid);
    yahoo.record_body("AAPL", corrected);
    let update = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(update["counters"]["bars_written"], 1, "{update}");
    let (_, after) = master
        .get("/api/data/bars?symbol=AAPL&limit=100")
        .await
        .unwrap();
    assert_eq!(
        after["data"][48]["close"].as_f64(),
        Some(mid),
        "no stale page after a write"
    );

    let (_, series) = master.get("/api/data/series").await.unwrap();
    assert_eq!(series["count"], 1);
    let s = &series["data"][0];
    assert_eq!(
        (s["symbol"].as_str(), s["interval"].as_str()),
        (Some("AAPL"), Some("1d"))
    );
    assert_eq!(s["count"], 49);
    assert_eq!(s["first"], "2020-08-31T00:00:00Z");
    assert_eq!(s["source"], "yahoo");
    assert_eq!(s["last_fetch_ok"], true);

    let (_, done) = master
        .get("/api/data/tasks?status=completed&limit=1")
        .await
        .unwrap();
    assert_eq!(done["count"], 1);
    assert_eq!(done["data"][0]["kind"], "incremental_update");
    let validation = run_task(&master, "/api/data/validate", "{}").await;
    assert_eq!(validation["status"], "completed", "{validation}");
    assert_eq!(validation["counters"]["invalid_stored_bars"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_split_refetches_the_whole_history_of_the_series() {
    let (yahoo, master, _dir) = start(
        Some("chart-AAPL-2020-01-01-to-2020-01-03.json"),
        "AAPL",
        |c| c,
    )
    .await;
    let first = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2020-01-01", "end_date": "2020-01-03"}"#,
    )
    .await;
    assert_eq!(first["counters"]["bars_written"], 1, "{first}");
    assert_eq!(first["counters"]["new_actions"], 0);

    // Later answers carry the 2020-08-31 split (and a dividend).
    yahoo.record("AAPL", "chart-AAPL-2020-08-31-to-2020-11-07.json");
    let before = yahoo.requests("AAPL");
    let update = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(update["status"], "completed", "{update}");
    assert_eq!(update["counters"]["new_actions"], 2, "{update}");
    assert_eq!(
        yahoo.requests("AAPL") - before,
        2,
        "the update, then the whole history again"
    );
    assert!(master.log_text().contains("new corporate action"));
    let status = master.status().await.unwrap();
    assert_eq!(status["total_records"], 50, "{status}");
    // Seen once, the actions do not trigger again.
    let before = yahoo.requests("AAPL");
    let again = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(again["counters"]["new_actions"], 0, "{again}");
    assert_eq!(yahoo.requests("AAPL") - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_the_provider_lists_with_null_prices_are_counted_and_logged() {
    let (yahoo, master, _dir) = start(None, "AAPL", |c| c).await;
    let mut body = FakeYahoo::fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
    let quote = &mut body["chart"]["result"][0]["indicators"]["quote"][0];
    for i in [10, 11, 30] {
        for f in ["open", "high", "low", "close", "volume"] {
            quote[f][i] = Value::Null;
        }
    }
    yahoo.record_body("AAPL", body);
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"symbols": ["AAPL"], "start_date": "2020-08-31", "end_date": "2020-11-07"}"#,
    )
    .await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["provider_null_bars"], 3, "{task}");
    assert_eq!(task["counters"]["bars_written"], 46, "{task}");
    assert!(
        master
            .log_text()
            .contains("the provider listed bars with null prices"),
        "{}",
        master.log_text()
    );
}

/// A master keeping `symbol` from a `FakeYahoo` that generates bars, with `tasks_extra` added
/// under `tasks:`. Keep the directory alive as long as the master.
async fn start_generated(
    symbol: &str,
    tasks_extra: &str,
) -> (FakeYahoo, MasterProcess, tempfile::TempDir) {
    let yahoo = FakeYahoo::start(true, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!("{}{tasks_extra}", config(&yahoo.base_url(), symbol, ""));
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    (yahoo, master, dir)
}

/// The stored close of `symbol` on `date`.
async fn close_on(master: &MasterProcess, symbol: &str, date: &str) -> f64 {
    let (code, bars) = master
        .get(&format!(
            "/api/data/bars?symbol={symbol}&start={date}&limit=1"
        ))
        .await
        .unwrap();
    assert_eq!(code, 200, "{bars}");
    let bar = &bars["data"][0];
    assert_eq!(bar["ts"], format!("{date}T00:00:00Z"), "{bars}");
    bar["close"].as_f64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_reported_late_for_a_date_before_the_update_window_is_seen() {
    let (yahoo, master, _dir) = start_generated("LATE", "  actions_check_interval: 0s\n").await;
    let import = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
    )
    .await;
    assert_eq!(import["counters"]["bars_written"], 65, "{import}");
    let jan = unix_day("2024-01-02").div_euclid(86_400);
    assert_eq!(
        close_on(&master, "LATE", "2024-01-02").await,
        generated_close("LATE", jan)
    );

    // The provider now reports a 3:1 split on 2024-02-01, weeks before the update's window.
    yahoo.add_split(
        "LATE",
        Split {
            date: unix_day("2024-02-01"),
            ratio: 3.0,
            reported: true,
        },
    );
    let update = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(update["status"], "completed", "{update}");
    assert_eq!(update["counters"]["new_actions"], 1, "{update}");
    assert!(
        master.log_text().contains("LATE split 3:1 on 2024-02-01"),
        "{}",
        master.log_text()
    );
    // The whole history is at the new scale: no mixed scales around the split.
    let adjusted = close_on(&master, "LATE", "2024-01-02").await;
    let expected = generated_close("LATE", jan) / 3.0;
    assert!(
        (adjusted - expected).abs() < 1e-6,
        "{adjusted} vs {expected}"
    );
    let after = unix_day("2024-02-01").div_euclid(86_400);
    assert_eq!(
        close_on(&master, "LATE", "2024-02-01").await,
        generated_close("LATE", after)
    );
    let (_, actions) = master.get("/api/data/actions?symbol=LATE").await.unwrap();
    assert_eq!(actions["data"][0]["type"], "split", "{actions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_changed_by_one_ratio_without_an_action_reported_refetch_the_history() {
    let (yahoo, master, _dir) = start_generated("SILENT", "").await;
    run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
    )
    .await;
    // The provider halves every price before today, and reports nothing.
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    yahoo.add_split(
        "SILENT",
        Split {
            date: unix_day(&today),
            ratio: 2.0,
            reported: false,
        },
    );
    let before = yahoo.requests("SILENT");
    let update = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(update["status"], "completed", "{update}");
    assert_eq!(update["counters"]["new_actions"], 0, "{update}");
    assert_eq!(update["counters"]["unreported_actions"], 1, "{update}");
    assert_eq!(
        yahoo.requests("SILENT") - before,
        2,
        "the update, then the whole history"
    );
    assert!(
        master.log_text().contains("one common ratio"),
        "{}",
        master.log_text()
    );
    let jan = unix_day("2024-01-02").div_euclid(86_400);
    let stored = close_on(&master, "SILENT", "2024-01-02").await;
    let expected = generated_close("SILENT", jan) / 2.0;
    assert!((stored - expected).abs() < 1e-6, "{stored} vs {expected}");
    // Once the store matches, the next update finds nothing to adjust.
    let again = run_task(&master, "/api/data/update", "{}").await;
    assert_eq!(again["counters"]["unreported_actions"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_rate_learns_a_providers_unknown_limit_and_every_bar_is_exact() {
    // The provider allows 10 requests/s (a token bucket with a burst of 10) and says nothing
    // about it; the master starts at 2 requests/s.
    let yahoo = FakeYahoo::start(true, Duration::from_millis(20)).await;
    yahoo.set_rate_limit(Some(RateLimit {
        requests_per_second: 10.0,
        burst: 10.0,
        retry_after_secs: None,
    }));
    let symbols: Vec<String> = (0..120).map(|i| format!("R{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(
        dir.path(),
        &config(&yahoo.base_url(), &symbols.join(", "), "")
            .replace(
                "    requests_per_second: 100\n",
                "    requests_per_second: 2\n    max_concurrency: 8\n",
            )
            .replace("tasks:\n", "tasks:\n  concurrency: 8\n"),
    )
    .await
    .unwrap();
    let status = master.status().await.unwrap();
    let provider = &status["providers"][0];
    assert_eq!(provider["source"], "yahoo", "{status}");
    assert_eq!(provider["adaptive"], true, "{status}");
    assert_eq!(provider["requests_per_second"], 2.0, "{status}");
    assert_eq!(provider["probing"], true, "{status}");

    let started = std::time::Instant::now();
    let task = run_task(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-01", "end_date": "2024-03-01"}"#,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["series_done"], 120, "{task}");
    assert_eq!(task["counters"]["series_failed"], 0, "{task}");
    // At its starting rate the import would take 60 s.
    assert!(took < Duration::from_secs(40), "{took:?}");

    // The limit was met, and answered by cutting the rate, not by waves of 429s.
    let throttled = yahoo.throttled();
    let requests = yahoo.total_requests();
    assert!(
        throttled >= 1,
        "the limit was never reached: {requests} requests"
    );
    assert!(
        (throttled as f64) < 0.1 * requests as f64,
        "{throttled} of {requests} requests refused"
    );
    let learned = task["counters"]["request_rates"]["yahoo"].as_f64().unwrap();
    assert!(learned > 2.0 && learned < 30.0, "{task}");
    assert!(
        task["message"].as_str().unwrap().contains("yahoo at "),
        "{task}"
    );
    let status = master.status().await.unwrap();
    let provider = &status["providers"][0];
    let rate = provider["requests_per_second"].as_f64().unwrap();
    assert!(rate > 2.0 && rate < 30.0, "{status}");
    assert_eq!(provider["probing"], false, "{status}");
    assert!(provider["decreases"].as_u64().unwrap() >= 1, "{status}");
    assert_eq!(provider["min_requests_per_second"], 0.5, "{status}");
    assert_eq!(provider["max_requests_per_second"], 50.0, "{status}");
    let (code, metrics) = master.get_text("/metrics").await.unwrap();
    assert_eq!(code, 200);
    let gauge: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dms_provider_request_rate{source=\"yahoo\"} "))
        .unwrap_or_else(|| panic!("no rate gauge in\n{metrics}"))
        .parse()
        .unwrap();
    assert!(gauge > 2.0 && gauge < 30.0, "{gauge}");
    // dmsctl status shows it too, from the admin service.
    let ctl = Dmsctl::new(&format!("http://127.0.0.1:{}", master.port));
    let out = ctl.run(&["status", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let shown = &out.json()["providers"][0];
    assert_eq!(shown["source"], "yahoo", "{out:?}");
    assert_eq!(shown["adaptive"], true, "{out:?}");
    let shown_rate = shown["requests_per_second"].as_f64().unwrap();
    assert!(shown_rate > 2.0 && shown_rate < 30.0, "{out:?}");
    let out = ctl.run(&["status"]).await.unwrap();
    assert!(
        out.stdout.lines().any(|l| l.starts_with("request rate")
            && l.contains("yahoo")
            && l.contains("adaptive within 0.5..50")),
        "{out:?}"
    );

    // Every bar exact: 2024-01-01..2024-03-01 has 44 weekdays.
    assert_eq!(status["total_records"], 120 * 44, "{status}");
    for symbol in &symbols {
        let (code, bars) = master
            .get(&format!(
                "/api/data/bars?symbol={symbol}&interval=1d&limit=1000"
            ))
            .await
            .unwrap();
        assert_eq!(code, 200, "{bars}");
        let bars = bars["data"].as_array().unwrap();
        assert_eq!(bars.len(), 44, "{symbol}");
        for bar in bars {
            let ts = chrono::DateTime::parse_from_rfc3339(bar["ts"].as_str().unwrap()).unwrap();
            let day = ts.timestamp().div_euclid(86_400);
            let close = dms_e2e::provider::generated_close(symbol, day);
            assert_eq!(bar["close"].as_f64(), Some(close), "{symbol} {bar}");
            assert_eq!(bar["open"].as_f64(), Some(close - 0.25), "{symbol} {bar}");
            assert_eq!(bar["high"].as_f64(), Some(close + 1.0), "{symbol} {bar}");
            assert_eq!(bar["low"].as_f64(), Some(close - 1.0), "{symbol} {bar}");
            assert_eq!(bar["volume"].as_f64(), Some((1000 + day % 1000) as f64));
        }
    }
}
