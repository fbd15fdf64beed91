//! Long-running task behaviour of the real master process: resuming after SIGKILL, recovering
//! from a provider outage, and filling gaps.

use std::time::Duration;

use dms_e2e::provider::{FakeYahoo, Fault};
use dms_e2e::{Check, MasterProcess, Tmpfs, unix_day as day};
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
    let counters = &task["counters"];
    assert_eq!(counters["series_failed"], 0, "{task}");
    // The report covers both runs: the series finished before the kill count as done and as
    // resumed, the time reported is the task's, and the work time adds up both runs.
    assert_eq!(counters["series_done"], 500, "{task}");
    assert_eq!(counters["runs"], 2, "{task}");
    let resumed = counters["series_resumed"].as_u64().unwrap();
    assert!((200..500).contains(&resumed), "{task}");
    let worked = counters["worked_secs"].as_f64().unwrap();
    assert!(worked > 0.0, "{task}");
    let message = task["message"].as_str().unwrap();
    assert!(message.contains("over 2 runs of the master"), "{message}");
    let status = master.wait_applied(Duration::from_secs(30)).await.unwrap();
    // Every symbol is stored whole, once: 2024-01-01..2024-04-01 has 65 weekdays.
    assert_eq!(status["total_series"], 500, "{status}");
    assert_eq!(status["total_records"], 500 * 65, "{status}");
    let requests = yahoo.all_requests();
    assert_eq!(requests.len(), 500);
    // Every series' request counted once; only those of series in flight at the kill are not.
    let served: u64 = requests.values().sum();
    let counted = counters["requests"].as_u64().unwrap();
    assert!(
        (500..=served).contains(&counted) && served - counted <= 8,
        "{counted} counted, {served} served"
    );
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

/// The task's JSON once `check` holds for it.
async fn wait_task_state(
    master: &MasterProcess,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    master
        .wait_until(what, Duration::from_secs(60), async || {
            let t = master.task(id).await?;
            Ok(match check(&t) {
                true => Check::Ready(t),
                false => Check::Waiting(t.to_string()),
            })
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_state_file_pauses_the_task_until_space_returns() {
    let yahoo = FakeYahoo::start(true, Duration::ZERO).await;
    let symbols: Vec<String> = (0..200).map(|i| format!("F{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("state"), 16 << 20).unwrap();
    let cfg = format!(
        "{}state: {{path: '{}/state.db'}}\nstore: {{type: sqlite, path: '{}/bars.db'}}\n",
        config(&yahoo.base_url(), &symbols, 2),
        disk.path().display(),
        dir.path().display()
    );
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "2023-01-01", "end_date": "2024-01-01"}"#,
    )
    .await;
    master
        .wait_series_done(&id, 20, Duration::from_secs(60))
        .await
        .unwrap();
    let filler = disk.fill().unwrap();

    // Writes fail: the task says so and waits, instead of failing series or looking alive.
    let paused = wait_task_state(&master, &id, "the task to pause", |t| {
        t["status"] == "paused"
    })
    .await;
    assert!(
        paused["error"].as_str().unwrap().contains("full"),
        "{paused}"
    );
    assert_eq!(paused["counters"]["series_failed"], 0, "{paused}");
    let (code, ready) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 503, "{ready}");
    assert!(
        ready["checks"]["journal"]
            .as_str()
            .unwrap()
            .contains("full"),
        "{ready}"
    );

    // Space returns: the task goes on by itself and every bar arrives.
    std::fs::remove_file(&filler).unwrap();
    let task = master
        .wait_task(&id, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["series_done"], 200, "{task}");
    assert_eq!(task["counters"]["series_failed"], 0, "{task}");
    let status = master.wait_applied(Duration::from_secs(60)).await.unwrap();
    // 2023 has 250 NYSE sessions; generated bars are weekdays (260), holidays included.
    assert_eq!(status["total_records"], 200 * 260, "{status}");
    let (code, _) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        master
            .log_text()
            .contains("task paused until writes succeed"),
        "{}",
        master.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_store_keeps_the_bars_in_the_journal_until_space_returns() {
    let yahoo = FakeYahoo::start(true, Duration::ZERO).await;
    let symbols: Vec<String> = (0..100).map(|i| format!("S{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("store"), 16 << 20).unwrap();
    let cfg = format!(
        "{}store: {{type: sqlite, path: '{}/bars.db'}}\n",
        config(&yahoo.base_url(), &symbols, 4),
        disk.path().display()
    );
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let filler = disk.fill().unwrap();
    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "2023-01-01", "end_date": "2024-01-01"}"#,
    )
    .await;
    // The journal takes every bar; the store cannot, and says so.
    let task = master
        .wait_task(&id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    let status = master
        .wait_until(
            "the store error in status",
            Duration::from_secs(30),
            async || {
                let s = master.status().await?;
                Ok(match s["journal"]["store_last_error"].is_string() {
                    true => Check::Ready(s),
                    false => Check::Waiting(s.to_string()),
                })
            },
        )
        .await
        .unwrap();
    assert!(
        status["journal"]["store_lag"].as_u64().unwrap() > 0,
        "{status}"
    );
    std::fs::remove_file(&filler).unwrap();
    let status = master.wait_applied(Duration::from_secs(120)).await.unwrap();
    assert_eq!(status["total_records"], 100 * 260, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_the_provider_has_no_bar_for_are_remembered_and_asked_again_after_the_delay() {
    let yahoo = FakeYahoo::start(true, Duration::ZERO).await;
    let symbols = vec!["HOLEY".to_owned()];
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&yahoo.base_url(), &symbols, 2);
    let mut master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    // The provider never had 2024-02-05 .. 2024-02-09.
    yahoo.set_outage(Some((day("2024-02-05"), day("2024-02-10"))));
    let id = queue(
        &master,
        "/api/data/import",
        r#"{"start_date": "2024-01-02", "end_date": "2024-04-01"}"#,
    )
    .await;
    master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    master.wait_applied(Duration::from_secs(10)).await.unwrap();
    // Only the hole counts (the range after the import is left out by its end).
    let g = gaps(&master, "HOLEY").await;
    let hole = g["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["start"] == "2024-02-05T00:00:00Z");
    assert!(hole.is_some_and(|h| h["missing"] == 5), "{g}");

    // A backfill asks, the provider has nothing: remembered, counted, logged.
    let id = queue(&master, "/api/data/backfill", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert!(
        t["counters"]["provider_missing"].as_u64().unwrap() >= 5,
        "{t}"
    );
    assert!(master.log_text().contains("remembered as provider-missing"));
    let g = gaps(&master, "HOLEY").await;
    let known: Vec<&str> = g["provider_missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for date in [
        "2024-02-05",
        "2024-02-06",
        "2024-02-07",
        "2024-02-08",
        "2024-02-09",
    ] {
        assert!(known.contains(&format!("{date}T00:00:00Z").as_str()), "{g}");
    }
    assert!(
        g["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["start"] != "2024-02-05T00:00:00Z"),
        "a provider-missing session is not a gap: {g}"
    );

    // The next backfill leaves them alone: no request for them.
    let before = yahoo.requests("HOLEY");
    let id = queue(&master, "/api/data/backfill", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    let asked = yahoo.requests("HOLEY") - before;
    assert_eq!(t["counters"]["provider_missing"], 0, "{t}");
    assert!(
        asked <= 1,
        "{asked} requests; only the days since the import may be asked"
    );

    // Past the delay (0 s here), a backfill asks again, and what the provider now has is stored.
    master
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    yahoo.set_outage(None);
    let cfg = format!("{cfg}  provider_missing_retry: 0s\n");
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let id = queue(&master, "/api/data/backfill", "{}").await;
    let t = master
        .wait_task(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert!(t["counters"]["bars_written"].as_u64().unwrap() >= 5, "{t}");
    master.wait_applied(Duration::from_secs(10)).await.unwrap();
    let g = gaps(&master, "HOLEY").await;
    assert_eq!(g["provider_missing"].as_array().unwrap().len(), 0, "{g}");
    assert_eq!(g["missing"], 0, "{g}");
}

/// Runs `sql` on the PostgreSQL server of the tests.
fn psql(sql: &str) {
    let url = std::env::var("DMS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let out = std::process::Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sql` on the MariaDB server of the tests (database `test`).
fn mariadb(sql: &str) {
    let out = std::process::Command::new("mysql")
        .args(["-h", "127.0.0.1", "-uroot", "test", "-e", sql])
        .output()
        .expect("run mysql");
    assert!(
        out.status.success(),
        "mysql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A table name no other run uses.
fn table_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros() % 1_000_000
    )
}

async fn bar_at(master: &MasterProcess, symbol: &str, interval: &str, start: &str) -> Value {
    let (code, bars) = master
        .get(&format!(
            "/api/data/bars?symbol={symbol}&interval={interval}&start={start}&limit=1"
        ))
        .await
        .unwrap();
    assert_eq!(code, 200, "{bars}");
    bars["data"][0].clone()
}

async fn import_source(master: &MasterProcess, source: &str) -> Value {
    let id = queue(
        master,
        "/api/data/import",
        &format!(r#"{{"source": "{source}"}}"#),
    )
    .await;
    let t = master
        .wait_task(&id, Duration::from_secs(60))
        .await
        .unwrap();
    master.wait_applied(Duration::from_secs(30)).await.unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tables_import_with_a_mapping_defaults_a_time_zone_and_both_modes() {
    // PostgreSQL: daily bars keyed by code and date, prices as NUMERIC, no interval column.
    let pg = table_name("legacy_daily");
    psql(&format!(
        "CREATE TABLE {pg} (code TEXT, trade_date DATE, o NUMERIC(12,4), h NUMERIC(12,4),
                            l NUMERIC(12,4), c NUMERIC(12,4), vol BIGINT, PRIMARY KEY (code, trade_date));
         INSERT INTO {pg} SELECT 'P' || s, DATE '2024-01-01' + d, 10 + d, 11 + d, 9 + d, 10.5 + d, 1000 * s
           FROM generate_series(1, 3) s, generate_series(0, 49) d;
         INSERT INTO {pg} VALUES ('P9', DATE '2024-01-01', 1, 2, 0.5, NULL, 5);"
    ));
    // MariaDB: hourly bars with a naive Shanghai time, an interval column, read by a query.
    let my = table_name("legacy_hourly");
    mariadb(&format!(
        "CREATE TABLE {my} (id BIGINT PRIMARY KEY, sym VARCHAR(16), freq VARCHAR(8), t DATETIME,
                            o DOUBLE, h DOUBLE, l DOUBLE, c DOUBLE, v DOUBLE);
         INSERT INTO {my} VALUES (1, 'M1', '1h', '2024-03-01 09:00:00', 5, 6, 4, 5.5, 100),
                                 (2, 'M1', '1h', '2024-03-01 10:00:00', 5.5, 6.5, 5, 6, 200);"
    ));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.password");
    std::fs::write(&pw, "unused-with-trust-auth\n").unwrap();
    let cfg = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - type: sql
    name: pg
    url: postgres://postgres@127.0.0.1:5432/test
    password_file: {pw}
    table: {pg}
    columns: {{symbol: code, time: trade_date, open: o, high: h, low: l, close: c, volume: vol}}
    defaults: {{interval: 1d}}
    timezone: Asia/Shanghai
    page_size: 40
  - type: sql
    name: maria
    url: mysql://root@127.0.0.1:3306/test
    query: SELECT id, sym, freq, t, o, h, l, c, v FROM {my} WHERE sym <> ''
    columns: {{symbol: sym, interval: freq, time: t, open: o, high: h, low: l, close: c, volume: v}}
    key: [id]
    timezone: Asia/Shanghai
    mode: insert_only
schedules:
  - {{name: legacy-nightly, cron: '0 3 1 1 *', kind: import, source: pg}}
",
        pw = pw.display()
    );
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();

    // Discovery: the table with its columns and types, and the mapping's first rows.
    let (code, tables) = master.get("/api/sources/pg/tables").await.unwrap();
    assert_eq!(code, 200, "{tables}");
    let t = tables["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == pg.as_str())
        .unwrap();
    assert_eq!(t["columns"][1]["name"], "trade_date", "{t}");
    assert_eq!(t["columns"][1]["type"], "date", "{t}");
    let (code, preview) = master.get("/api/sources/pg/preview?limit=3").await.unwrap();
    assert_eq!(code, 200, "{preview}");
    assert_eq!(preview["data"][0]["symbol"], "P1", "{preview}");
    assert_eq!(preview["data"][0]["interval"], "1d", "{preview}");
    assert_eq!(
        preview["data"][0]["ts"], "2024-01-01T00:00:00Z",
        "{preview}"
    );
    assert_eq!(preview["data"][0]["close"], 10.5, "{preview}");
    let (code, missing) = master.get("/api/sources/nope/tables").await.unwrap();
    assert_eq!(code, 404, "{missing}");
    // The same through dmsctl.
    let ctl = dms_e2e::Dmsctl::new(&master.url(""));
    let out = ctl.run(&["sources", "tables", "pg"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&pg), "{out:?}");
    let out = ctl
        .run(&["-o", "json", "sources", "preview", "maria", "--limit", "2"])
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let preview = out.json();
    assert_eq!(preview["rows"][0]["series"]["symbol"], "M1", "{preview}");
    assert_eq!(preview["mode"], "insert_only", "{preview}");

    // Upsert from PostgreSQL: every good row, in pages; the bad row named and skipped.
    let t = import_source(&master, "pg").await;
    assert_eq!(t["kind"], "source_import", "{t}");
    assert_eq!(t["status"], "completed", "{t}");
    let c = &t["counters"];
    assert_eq!(c["rows_total"], 151, "{t}");
    assert_eq!(c["rows_read"], 151, "{t}");
    assert_eq!(c["pages"], 4, "{t}");
    assert_eq!(c["bars_written"], 150, "{t}");
    assert_eq!(c["rows_skipped"], 1, "{t}");
    assert!(c["row_problems"][0].as_str().unwrap().contains("P9"), "{t}");
    assert!(
        c["row_problems"][0]
            .as_str()
            .unwrap()
            .contains("column c is empty"),
        "{t}"
    );
    let b = bar_at(&master, "P2", "1d", "2024-01-05").await;
    assert_eq!(b["ts"], "2024-01-05T00:00:00Z");
    assert_eq!(
        (
            b["open"].as_f64(),
            b["close"].as_f64(),
            b["volume"].as_f64()
        ),
        (Some(14.0), Some(14.5), Some(2000.0))
    );

    // A changed row overwrites the stored bar; the rest journals nothing.
    psql(&format!(
        "UPDATE {pg} SET c = 14.75 WHERE code = 'P2' AND trade_date = DATE '2024-01-05'"
    ));
    let t = import_source(&master, "pg").await;
    assert_eq!(t["counters"]["bars_written"], 1, "{t}");
    assert_eq!(t["counters"]["bars_unchanged"], 149, "{t}");
    assert_eq!(
        bar_at(&master, "P2", "1d", "2024-01-05").await["close"],
        14.75
    );

    // Insert-only from MariaDB: naive Shanghai times stored as UTC; a changed row keeps the
    // stored bar, a new row is added.
    let t = import_source(&master, "maria").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["bars_written"], 2, "{t}");
    let b = bar_at(&master, "M1", "1h", "2024-03-01T01:00:00Z").await;
    assert_eq!(b["ts"], "2024-03-01T01:00:00Z", "09:00 in Shanghai");
    assert_eq!(b["close"], 5.5);
    mariadb(&format!(
        "UPDATE {my} SET c = 99 WHERE id = 1;
         INSERT INTO {my} VALUES (3, 'M1', '1h', '2024-03-01 11:00:00', 6, 7, 5.5, 6.5, 300);"
    ));
    let t = import_source(&master, "maria").await;
    assert_eq!(t["counters"]["bars_written"], 1, "{t}");
    assert_eq!(t["counters"]["bars_unchanged"], 2, "{t}");
    assert_eq!(
        bar_at(&master, "M1", "1h", "2024-03-01T01:00:00Z").await["close"],
        5.5,
        "kept"
    );
    assert_eq!(
        bar_at(&master, "M1", "1h", "2024-03-01T03:00:00Z").await["close"],
        6.5,
        "added"
    );

    // A schedule of kind import naming a SQL source imports its table.
    let (code, run) = master
        .post("/api/schedules/legacy-nightly/trigger", "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["data"]["outcome"], "started", "{run}");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .starts_with("source_import task"),
        "{run}"
    );
    let t = master
        .wait_task(run["task_id"].as_str().unwrap(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(t["kind"], "source_import", "{t}");
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["bars_unchanged"], 150, "{t}");

    // An import of a SQL source takes no other parameters.
    let (code, answer) = master
        .post(
            "/api/data/import",
            r#"{"source": "pg", "start_date": "2024-01-01"}"#,
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("imported whole"),
        "{answer}"
    );
    psql(&format!("DROP TABLE {pg}"));
    mariadb(&format!("DROP TABLE {my}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_table_imports_in_pages_and_resumes_after_sigkill() {
    let pg = table_name("legacy_big");
    psql(&format!(
        "CREATE TABLE {pg} (code TEXT, day DATE, c DOUBLE PRECISION, PRIMARY KEY (code, day));
         INSERT INTO {pg} SELECT 'B' || lpad(s::text, 4, '0'), DATE '2000-01-03' + d, s + d / 1000.0
           FROM generate_series(1, 1000) s, generate_series(0, 999) d;"
    ));
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - type: sql
    name: big
    url: postgres://postgres@127.0.0.1:5432/test
    table: {pg}
    columns: {{symbol: code, time: day, open: c, high: c, low: c, close: c}}
    defaults: {{interval: 1d}}
    page_size: 20000
"
    );
    let master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let id = queue(&master, "/api/data/import", r#"{"source": "big"}"#).await;
    let (master, t) = kill_at_rows_and_resume(master, dir.path(), &cfg, &id, 300_000).await;
    assert_eq!(t["status"], "completed", "{t}");
    let c = &t["counters"];
    assert_eq!(c["runs"], 2, "{t}");
    assert_eq!(c["rows_read"], 1_000_000, "{t}");
    assert_eq!(c["rows_total"], 1_000_000, "{t}");
    let status = master.wait_applied(Duration::from_secs(120)).await.unwrap();
    assert_eq!(status["total_records"], 1_000_000, "{status}");
    assert_eq!(status["total_series"], 1000, "{status}");
    let last = bar_at(&master, "B1000", "1d", "2002-09-28").await;
    assert_eq!(last["close"], 1000.999, "{last}");
    // Pages keep the memory bounded: the whole table would not fit in this.
    let pid = master.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("peak RSS of the resumed import: {} MiB", peak_kib / 1024);
    assert!(peak_kib < 300 * 1024, "peak RSS {peak_kib} KiB");
    psql(&format!("DROP TABLE {pg}"));
}

/// Kills the master with SIGKILL once task `id` has read `rows` rows, starts it again on the
/// same files and config, and waits for the task to end; returns the new master and the task.
async fn kill_at_rows_and_resume(
    mut master: MasterProcess,
    dir: &std::path::Path,
    cfg: &str,
    id: &str,
    rows: u64,
) -> (MasterProcess, Value) {
    wait_task_state(&master, id, &format!("{rows} rows read"), |t| {
        t["counters"]["rows_read"].as_u64().unwrap_or(0) >= rows
    })
    .await;
    master
        .stop(Signal::SIGKILL, Duration::from_secs(5))
        .unwrap();
    let master = MasterProcess::start(dir, cfg).await.unwrap();
    let t = master
        .wait_task(id, Duration::from_secs(300))
        .await
        .unwrap();
    (master, t)
}

/// Starts a task at `path` with `body` and waits for it to end.
async fn run_task(master: &MasterProcess, path: &str, body: &str) -> Value {
    let id = queue(master, path, body).await;
    master
        .wait_task(&id, Duration::from_secs(300))
        .await
        .unwrap()
}

/// Queues a migrate or check task with `target` (a store's name under `targets:` in the
/// master's config) and waits for it.
async fn store_task(master: &MasterProcess, path: &str, target: &str) -> Value {
    let body = serde_json::json!({ "target": target }).to_string();
    run_task(master, path, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_bars_migrate_sqlite_to_postgresql_and_back_and_the_check_finds_two_changes() {
    // A million bars in a master on SQLite, read from a PostgreSQL table.
    let pg = table_name("migrate_src");
    psql(&format!(
        "CREATE TABLE {pg} (code TEXT, day DATE, c DOUBLE PRECISION, PRIMARY KEY (code, day));
         INSERT INTO {pg} SELECT 'G' || lpad(s::text, 4, '0'), DATE '2000-01-03' + d, s + d / 1000.0
           FROM generate_series(1, 1000) s, generate_series(0, 999) d;"
    ));
    let db = table_name("dms_migrate");
    psql(&format!("CREATE DATABASE {db}"));
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        "
sources:
  - type: sql
    name: big
    url: postgres://postgres@127.0.0.1:5432/test
    table: {pg}
    columns: {{symbol: code, time: day, open: c, high: c, low: c, close: c}}
    defaults: {{interval: 1d}}
    page_size: 50000
"
    );
    // The other stores are named in the config, never in a request.
    let cfg = format!(
        "http: {{listen: '127.0.0.1:{{port}}'}}\n{source}targets:\n  pg:\n    type: postgres\n    url: postgres://postgres@127.0.0.1:5432/{db}\n"
    );
    let mut master = MasterProcess::start(dir.path(), &cfg).await.unwrap();
    let t = import_source(&master, "big").await;
    assert_eq!(t["counters"]["bars_written"], 1_000_000, "{t}");

    // SQLite → PostgreSQL: every bar copied, and the check says equal.
    let t = store_task(&master, "/api/data/migrate", "pg").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["bars_written"], 1_000_000, "{t}");
    assert_eq!(t["counters"]["series_done"], 1000, "{t}");
    let check = &t["counters"]["check"];
    assert_eq!(check["series_compared"], 1000, "{t}");
    assert_eq!(check["series_equal"], 1000, "{t}");
    master
        .stop(Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();

    // PostgreSQL → SQLite, from a master whose store is that database.
    let dir2 = tempfile::tempdir().unwrap();
    let back = dir2.path().join("back.db");
    let cfg2 = format!(
        "http: {{listen: '127.0.0.1:{{port}}'}}\nstore: {{type: postgres, url: 'postgres://postgres@127.0.0.1:5432/{db}'}}\n{source}targets:\n  back:\n    type: sqlite\n    path: {}\n",
        back.display()
    );
    let master = MasterProcess::start(dir2.path(), &cfg2).await.unwrap();
    let t = store_task(&master, "/api/data/migrate", "back").await;
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["counters"]["bars_written"], 1_000_000, "{t}");
    assert_eq!(t["counters"]["check"]["series_equal"], 1000, "{t}");

    // Another program changes one bar and deletes another in the copy: the check lists
    // exactly those two.
    let conn = rusqlite::Connection::open(&back).unwrap();
    let series = |symbol: &str| -> i64 {
        conn.query_row(
            "SELECT id FROM series WHERE symbol = ?1 AND interval = '1d'",
            [symbol],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (g7, g500) = (series("G0007"), series("G0500"));
    let changed = conn
        .execute(
            "UPDATE bars SET close = close + 0.5 WHERE series_id = ?1 AND ts = ?2",
            rusqlite::params![g7, day("2001-06-01")],
        )
        .unwrap();
    let deleted = conn
        .execute(
            "DELETE FROM bars WHERE series_id = ?1 AND ts = ?2",
            rusqlite::params![g500, day("2002-02-01")],
        )
        .unwrap();
    assert_eq!((changed, deleted), (1, 1));
    drop(conn);
    let t = store_task(&master, "/api/data/check", "back").await;
    assert_eq!(t["status"], "completed", "{t}");
    let check = &t["counters"]["check"];
    assert_eq!(check["series_equal"], 998, "{t}");
    assert_eq!(check["bars_changed"], 1, "{t}");
    assert_eq!(check["bars_missing"], 1, "{t}");
    assert_eq!(check["bars_extra"], 0, "{t}");
    let diffs = check["differences"].as_array().unwrap();
    assert_eq!(diffs.len(), 2, "{check}");
    let changed = diffs.iter().find(|d| d["kind"] == "changed").unwrap();
    assert_eq!(changed["series"], "G0007@1d");
    assert_eq!(changed["ts"], "2001-06-01T00:00:00Z");
    assert_eq!(changed["fields"][0]["field"], "close", "{changed}");
    let c = changed["fields"][0]["source"].as_f64().unwrap();
    assert_eq!(
        changed["fields"][0]["target"].as_f64().unwrap(),
        c + 0.5,
        "{changed}"
    );
    let missing = diffs.iter().find(|d| d["kind"] == "missing").unwrap();
    assert_eq!(missing["series"], "G0500@1d");
    assert_eq!(missing["ts"], "2002-02-01T00:00:00Z");

    // A store given inline (here with a password) is refused: a request names a configured
    // target, never an address, a path or a secret; and the password is saved nowhere.
    const INLINE_PASSWORD: &str = "inline-password-never-saved";
    let (code, answer) = master
        .post(
            "/api/data/check",
            &format!(
                r#"{{"target": {{"type": "postgres", "url": "postgres://u@127.0.0.1/x", "password": "{INLINE_PASSWORD}"}}}}"#
            ),
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("not the store itself"), "{answer}");
    assert!(!error.contains(INLINE_PASSWORD), "{answer}");
    let (code, tasks) = master.get_text("/api/data/tasks").await.unwrap();
    assert_eq!(code, 200, "{tasks}");
    assert!(!tasks.contains(INLINE_PASSWORD), "{tasks}");
    assert!(!master.log_text().contains(INLINE_PASSWORD));
    // A name that is not configured is refused naming what is.
    let (code, answer) = master
        .post("/api/data/check", r#"{"target": "elsewhere"}"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("no store target has that name"), "{answer}");
    assert!(error.contains("back"), "{answer}");
    drop(master);
    psql(&format!("DROP TABLE {pg}"));
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_master_backup_restores_into_an_empty_postgresql_store_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    dms_e2e::copy_sample_data(&dir.path().join("a/sample-data"));
    // The PostgreSQL database restored into below, which A's check names in its config.
    let db = table_name("dms_restore");
    let pg_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let config = format!(
        "{}backup: {{dir: '{}', keep_last: 2, keep_daily: 0, keep_weekly: 0}}
schedules:
  - {{name: nightly-backup, cron: '0 3 * * *', kind: backup}}
targets:
  restored: {{type: postgres, url: '{pg_url}'}}
",
        dms_e2e::master_config(dms_e2e::SAMPLE_SOURCE),
        backups.display()
    );
    let a = MasterProcess::start(&dir.path().join("a"), &config)
        .await
        .unwrap();
    a.wait_imported(Duration::from_secs(60)).await.unwrap();
    let (_, series) = a.get("/api/data/series").await.unwrap();
    let total: u64 = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();

    // The scheduled job writes a backup: every series in Parquet, the SQLite files, the
    // manifest.
    let (code, run) = a
        .post("/api/schedules/nightly-backup/trigger", "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{run}");
    let t = a
        .wait_task(run["task_id"].as_str().unwrap(), Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(t["status"], "completed", "{t}");
    assert_eq!(t["kind"], "backup");
    assert_eq!(t["counters"]["bars_written"], total, "{t}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .starts_with("backup dms-backup-"),
        "{t}"
    );
    let path = std::path::PathBuf::from(t["counters"]["backup"].as_str().unwrap());
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(path.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["bars"], total);
    assert_eq!(manifest["series"].as_array().unwrap().len(), 3);
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["store.sqlite", "state.db"]);
    // The copies are whole SQLite databases.
    let copy = rusqlite::Connection::open(path.join("store.sqlite")).unwrap();
    let copied: i64 = copy
        .query_row("SELECT COUNT(*) FROM bars", [], |r| r.get(0))
        .unwrap();
    assert_eq!(copied as u64, total);
    let (_, listed) = a.get("/api/data/backups").await.unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["data"][0]["name"], name.as_str());

    // Verify: every file matches; the check of the store against the backup: equal.
    let v = run_task(&a, &format!("/api/data/backups/{name}/verify"), "").await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["counters"]["verify"]["bars_checked"], total, "{v}");
    let c = run_task(&a, "/api/data/check", &format!(r#"{{"backup": "{name}"}}"#)).await;
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(c["counters"]["check"]["series_equal"], 3, "{c}");

    // A master on an empty PostgreSQL database: the dry run says every bar would be added,
    // the restore adds them through the journal, and the two stores' digests agree.
    psql(&format!("CREATE DATABASE {db}"));
    let b_config = format!(
        "http: {{listen: '127.0.0.1:{{port}}'}}\nstore: {{type: postgres, url: '{pg_url}'}}\nbackup: {{dir: '{}'}}\n",
        backups.display()
    );
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let b = MasterProcess::start(&dir.path().join("b"), &b_config)
        .await
        .unwrap();
    let dry = run_task(
        &b,
        "/api/data/restore",
        &format!(r#"{{"backup": "{name}", "dry_run": true}}"#),
    )
    .await;
    assert_eq!(dry["status"], "completed", "{dry}");
    assert_eq!(dry["counters"]["check"]["bars_missing"], total, "{dry}");
    let (_, empty) = b.get("/api/data/series").await.unwrap();
    assert_eq!(
        empty["data"].as_array().unwrap().len(),
        0,
        "a dry run changes nothing"
    );
    let r = run_task(
        &b,
        "/api/data/restore",
        &format!(r#"{{"backup": "{name}"}}"#),
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    assert_eq!(r["counters"]["bars_written"], total, "{r}");
    assert_eq!(r["counters"]["check"]["series_equal"], 3, "{r}");
    b.wait_applied(Duration::from_secs(60)).await.unwrap();
    let c = store_task(&a, "/api/data/check", "restored").await;
    assert_eq!(c["status"], "completed", "{c}");
    assert_eq!(c["counters"]["check"]["series_equal"], 3, "{c}");
    assert_eq!(c["counters"]["check"]["bars_missing"], 0, "{c}");

    // One damaged byte: verify names the file, restore refuses it naming the file.
    let goog = path.join("series/GOOG_1d.parquet");
    let mut bytes = std::fs::read(&goog).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&goog, bytes).unwrap();
    let v = run_task(&a, &format!("/api/data/backups/{name}/verify"), "").await;
    assert_eq!(v["status"], "failed", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("series/GOOG_1d.parquet"), "{error}");
    assert!(error.contains("damaged"), "{error}");
    let r = run_task(
        &b,
        "/api/data/restore",
        &format!(r#"{{"backup": "{name}"}}"#),
    )
    .await;
    assert_eq!(r["status"], "failed", "{r}");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("series/GOOG_1d.parquet"), "{error}");
    assert!(error.contains("nothing was restored"), "{error}");
    let (code, answer) = b
        .post("/api/data/restore", r#"{"backup": "no-such-backup"}"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("no backup"),
        "{answer}"
    );

    // Retention: with keep_last 2, two more backups leave the newest two.
    for _ in 0..2 {
        let t = run_task(&a, "/api/data/backup", "").await;
        assert_eq!(t["status"], "completed", "{t}");
    }
    let (_, listed) = a.get("/api/data/backups").await.unwrap();
    assert_eq!(listed["count"], 2, "{listed}");
    assert!(!path.exists(), "the oldest backup is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_row_file_import_resumes_after_sigkill_and_stores_every_bar_once() {
    let dir = tempfile::tempdir().unwrap();
    // 1,000 symbols × 1,000 days, one row each; every 100,000th row broken.
    let file = dir.path().join("big.csv");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        writeln!(out, "code,day,c").unwrap();
        let start = chrono::NaiveDate::from_ymd_opt(2000, 1, 3).unwrap();
        for s in 1..=1000 {
            for d in 0..1000 {
                let day = start + chrono::Duration::days(d);
                if (s * 1000 + d) % 100_000 == 0 {
                    writeln!(out, "F{s:04},{day},oops").unwrap();
                } else {
                    writeln!(out, "F{s:04},{day},{}", s as f64 + d as f64 / 1000.0).unwrap();
                }
            }
        }
    }
    // Files named by path are read only from the directories the config allows.
    let cfg = format!(
        "http: {{listen: '127.0.0.1:{{port}}'}}\nfile_import:\n  allowed_dirs:\n    - {}\n",
        dir.path().canonicalize().unwrap().display()
    );
    let cfg = cfg.as_str();
    let master = MasterProcess::start(dir.path(), cfg).await.unwrap();
    let query = format!(
        "/api/data/import-file?path={}&map.symbol=code&map.time=day&map.open=c&map.high=c&map.low=c&map.close=c&interval=1d",
        file.display()
    );
    let id = queue(&master, &query, "").await;
    let (master, t) = kill_at_rows_and_resume(master, dir.path(), cfg, &id, 300_000).await;
    assert_eq!(t["status"], "completed", "{t}");
    let c = &t["counters"];
    assert_eq!(c["runs"], 2, "{t}");
    assert_eq!(c["rows_read"], 1_000_000, "{t}");
    assert_eq!(c["rows_skipped"], 10, "{t}");
    // Each bad row is in the quarantine file once, whatever the restart re-read.
    let quarantine = std::fs::read_to_string(c["quarantine_file"].as_str().unwrap()).unwrap();
    assert_eq!(quarantine.lines().count(), 1 + 10, "{quarantine}");
    let status = master.wait_applied(Duration::from_secs(120)).await.unwrap();
    assert_eq!(status["total_records"], 1_000_000 - 10, "{status}");
    assert_eq!(status["total_series"], 1000, "{status}");
    let last = bar_at(&master, "F1000", "1d", "2002-09-28").await;
    assert_eq!(last["close"], 1000.999, "{last}");
}
