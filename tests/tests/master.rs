//! The master as an operator runs it: a real process, a real config file, HTTP on loopback.

use std::time::Duration;

use dms_e2e::{MasterProcess, SAMPLE_SOURCE, copy_sample_data, master_config, run_master_command};

fn sample_config() -> String {
    master_config(SAMPLE_SOURCE)
}
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_imports_sample_csvs_and_restart_adds_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));

    let mut master = MasterProcess::start(dir.path(), &sample_config())
        .await
        .unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["total_series"], 3, "{status}");
    assert_eq!(status["total_stocks"], 3, "{status}");
    assert_eq!(status["total_records"], 2148 + 5000 + 156, "{status}");
    assert_eq!(status["earliest_date"], "2004-08-19");
    assert_eq!(status["latest_date"], "2024-12-01");
    assert_eq!(status["quarantined_bars"], 0);
    let head_after_first = status["journal"]["head"].as_u64().unwrap();

    let (exit, took) = master.stop(Signal::SIGINT, Duration::from_secs(5)).unwrap();
    assert!(exit.success(), "exit status {exit} after SIGINT");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert!(
        master.log_text().contains("shutdown complete"),
        "{}",
        master.log_text()
    );

    // Start again: the import reads the files again, finds every bar stored, and journals
    // nothing (nothing goes to replicas either).
    let mut master = MasterProcess::start(dir.path(), &sample_config())
        .await
        .unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["total_series"], 3, "{status}");
    assert_eq!(status["total_records"], 7304, "{status}");
    assert_eq!(status["journal"]["head"], head_after_first, "{status}");
    assert_eq!(status["imports"][0]["bars_unchanged"], 7304, "{status}");
    assert_eq!(status["imports"][0]["bars_accepted"], 0, "{status}");
    // Each start-up import is an ordinary task in the task list.
    let (_, tasks) = master.get("/api/data/tasks").await.unwrap();
    let imports: Vec<&serde_json::Value> = tasks["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "source_import")
        .collect();
    assert_eq!(imports.len(), 2, "one per start: {tasks}");
    let last = imports[0];
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["params"]["source"], "sample", "{last}");
    assert_eq!(last["counters"]["series_total"], 3, "{last}");
    assert_eq!(last["counters"]["bars_unchanged"], 7304, "{last}");
    assert_eq!(last["counters"]["bars_written"], 0, "{last}");
    assert_eq!(last["progress"], 100.0, "{last}");
    // A file that changed journals only its changed and new bars.
    let goog = dir.path().join("sample-data/GOOG.csv");
    let text = std::fs::read_to_string(&goog).unwrap();
    let text = text.replace(
        "2013-03-01,797.8,807.14,796.15,806.19,2175400",
        "2013-03-01,797.8,807.14,796.15,806.2,2175400\n2013-03-04,805.3,822.84,805,821.5,2775600",
    );
    std::fs::write(&goog, text).unwrap();
    master
        .stop(Signal::SIGTERM, Duration::from_secs(5))
        .unwrap();
    let mut master = MasterProcess::start(dir.path(), &sample_config())
        .await
        .unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["total_records"], 7305, "{status}");
    assert_eq!(status["imports"][0]["bars_accepted"], 2, "{status}");
    assert_eq!(
        status["journal"]["head"].as_u64().unwrap(),
        head_after_first + 1,
        "{status}"
    );
    let (exit, _) = master
        .stop(Signal::SIGTERM, Duration::from_secs(5))
        .unwrap();
    assert!(exit.success(), "exit status {exit} after SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_csv_rows_are_reported_with_file_and_line_and_the_rest_imported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sample-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("ACME.csv"),
        "Date,Open,High,Low,Close,Volume\n\
         2024-01-02,10,11,9,10.5,100\n\
         2024-01-03,10,11,9,ten,100\n\
         2024-01-04,10,11,9,10.5,100\n\
         2024-01-05,10,9,11,10.5,100\n\
         2024-01-08,10,11,9,10.5,100\n",
    )
    .unwrap();
    let config = "
http: {listen: '127.0.0.1:{port}'}
sources:
  - {type: csv, name: files, dir: ./sample-data}
";
    let master = MasterProcess::start(dir.path(), config).await.unwrap();
    let status = master.wait_imported(Duration::from_secs(30)).await.unwrap();
    // Line 3 cannot be read; line 5 reads but breaks high >= low and is quarantined.
    assert_eq!(status["total_records"], 3, "{status}");
    assert_eq!(status["quarantined_bars"], 1, "{status}");
    let import = &status["imports"][0];
    assert_eq!(import["rows_skipped"], 1);
    assert_eq!(import["bars_rejected"], 1);
    let problem = import["row_problems"][0].as_str().unwrap();
    assert!(
        problem.ends_with("ACME.csv:3: column Close: \"ten\" is not a number; row skipped"),
        "{problem}"
    );
    let log = master.log_text();
    assert!(log.contains("ACME.csv:3: column Close"), "{log}");
    assert!(log.contains("bar quarantined"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_with_status_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "store:\n  type: sqlite\n  pth: ./x.db\n",
    )
    .unwrap();
    for args in [
        &["--config", "bad.yaml"][..],
        &["--config", "bad.yaml", "check-config"],
    ] {
        let (code, _, stderr) = run_master_command(dir.path(), args, &[]).unwrap();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains("bad.yaml") && stderr.contains("pth"),
            "{stderr}"
        );
    }
    std::fs::write(
        dir.path().join("good.yaml"),
        "http: {listen: '127.0.0.1:0'}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_master_command(
        dir.path(),
        &["--config", "good.yaml", "check-config"],
        &[("DMS_STORE__PATH", "/tmp/elsewhere.db")],
    )
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("good.yaml: ok") && stdout.contains("/tmp/elsewhere.db"),
        "{stdout}"
    );
    let (code, _, stderr) = run_master_command(
        dir.path(),
        &["--config", "good.yaml", "check-config"],
        &[("DMS_HTTP__LISTEN", "nowhere")],
    )
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("http.listen") && stderr.contains("DMS_HTTP__LISTEN"),
        "{stderr}"
    );
    // A listener other machines can reach needs tokens, or an explicit opt-out.
    let (code, _, stderr) = run_master_command(
        dir.path(),
        &["--config", "good.yaml", "check-config"],
        &[("DMS_HTTP__LISTEN", "0.0.0.0:0")],
    )
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("http.listen") && stderr.contains("allow_unauthenticated"),
        "{stderr}"
    );
    let (code, _, stderr) = run_master_command(
        dir.path(),
        &["--config", "good.yaml", "check-config"],
        &[
            ("DMS_HTTP__LISTEN", "0.0.0.0:0"),
            ("DMS_HTTP__ALLOW_UNAUTHENTICATED", "true"),
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "{stderr}");
    // Files the config points to are checked too.
    std::fs::write(
        dir.path().join("files.yaml"),
        "sources:\n  - {type: csv, name: a, dir: ./nowhere}\n",
    )
    .unwrap();
    let (code, _, stderr) =
        run_master_command(dir.path(), &["--config", "files.yaml", "check-config"], &[]).unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("source a: dir") && stderr.contains("nowhere"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("list.yaml"),
        "sources:\n  - {type: yahoo, name: y}\nwatchlists:\n  - {name: w, source: y, symbols_file: ./syms.txt}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("syms.txt"), "AAPL\nBAD SYMBOL\n").unwrap();
    let (code, _, stderr) =
        run_master_command(dir.path(), &["--config", "list.yaml", "check-config"], &[]).unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("syms.txt:2") && stderr.contains("whitespace"),
        "{stderr}"
    );
    let (code, _, stderr) =
        run_master_command(dir.path(), &["--config", "missing.yaml"], &[]).unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_unknown_paths_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(dir.path(), "http: {listen: '127.0.0.1:{port}'}\n")
        .await
        .unwrap();
    let (code, body) = master.get("/healthz").await.unwrap();
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, body) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(body["checks"]["store"], "ok");
    assert_eq!(body["checks"]["journal"], "ok");
    let (code, body) = master.get("/api/nothing").await.unwrap();
    assert_eq!(code, 404);
    assert_eq!(body["success"], false);
    assert!(body["error"].as_str().unwrap().contains("/api/nothing"));
    // An empty store reports zeros, not errors.
    let status = master.status().await.unwrap();
    assert_eq!(status["total_records"], 0);
    assert_eq!(status["earliest_date"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_error_is_the_json_envelope_and_forms_cannot_start_tasks() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &sample_config())
        .await
        .unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let client = reqwest::Client::new();
    let check = |r: reqwest::Response, code: u16, needle: &'static str| async move {
        assert_eq!(r.status().as_u16(), code);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("application/json"), "{ct}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["success"], false, "{body}");
        let e = body["error"].as_str().unwrap();
        assert!(e.contains(needle), "{needle:?} not in {e:?}");
        assert!(!e.contains("expected struct"), "{e}");
    };
    let (_, before) = master.get("/api/data/tasks").await.unwrap();
    let url = |p: &str| master.url(p);
    check(
        client
            .get(url("/api/data/tasks?limit=1&limit=2"))
            .send()
            .await
            .unwrap(),
        400,
        "limit",
    )
    .await;
    let r = client.get(url("/api/data/tasks/%ff")).send().await.unwrap();
    let code = r.status().as_u16();
    assert!(code == 400 || code == 404, "{code}");
    check(r, code, "").await;
    // A 10 MB body is refused once more than the limit (2 MiB) has arrived; the answer comes
    // while the client is still sending, so the request is written by hand and the rest of
    // the body left unsent.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", master.port))
            .await
            .unwrap();
        let head = format!(
            "POST /api/data/import HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            10 << 20
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let _ = conn.write_all(&vec![b' '; 3 << 20]).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .ok();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("\"success\":false"), "{answer}");
        assert!(answer.contains("larger"), "{answer}");
    }
    let r = client.get(url("/api/data/import")).send().await.unwrap();
    assert!(r.headers().contains_key("allow"));
    check(r, 405, "does not take GET").await;
    // Bodies a web page can send without asking are refused, and start nothing.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = client
            .post(url("/api/data/update"))
            .header("content-type", ct)
            .body("{}")
            .send()
            .await
            .unwrap();
        check(r, 415, "application/json").await;
    }
    // Nor may a request without a body and without the JSON content type.
    let r = client.post(url("/api/data/update")).send().await.unwrap();
    check(r, 415, "application/json").await;
    // A Host that is not this daemon's (DNS rebinding) and a foreign Origin are refused.
    let r = client
        .post(url("/api/data/update"))
        .header("host", "attacker.example")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    check(r, 403, "http.server_names").await;
    let r = client
        .post(url("/api/data/update"))
        .header("origin", "http://attacker.example")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    check(r, 403, "http.allowed_origins").await;
    let (_, after) = master.get("/api/data/tasks").await.unwrap();
    assert_eq!(after["count"], before["count"], "no task was queued");
    // JSON, with a body or without one, is accepted.
    let r = client
        .post(url("/api/data/update"))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // The same symbol many times selects it once.
    let body = format!(r#"{{"symbols": [{}]}}"#, vec![r#""GOOG""#; 5_000].join(","));
    let (code, queued) = master.post("/api/data/update", &body).await.unwrap();
    assert_eq!(code, 202, "{queued}");
    let task = master
        .task(queued["task_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        task["params"]["symbols"],
        serde_json::json!(["GOOG"]),
        "{task}"
    );

    // Requests the HTTP layer refuses before routing (a URI beyond 64 KiB, too many header
    // fields, a head that is not HTTP) are answered in the envelope too.
    let raw = async |request: String| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", master.port))
            .await
            .unwrap();
        let _ = conn.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    };
    let long = format!(
        "GET /api/data/tasks?x={} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /api/data/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n");
    for (request, code, needle) in [
        (long, "414", "URI is too long"),
        (many, "431", "header fields"),
        ("GET /api data\r\n\r\n".to_owned(), "400", "not valid HTTP"),
    ] {
        let answer = raw(request).await;
        assert!(answer.starts_with(&format!("HTTP/1.1 {code}")), "{answer}");
        assert!(
            answer.contains("content-type: application/json"),
            "{answer}"
        );
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["success"], false, "{answer}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_clients_are_dropped_and_do_not_hold_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let config = sample_config().replace(
        "  listen: 127.0.0.1:{port}\n",
        "  listen: 127.0.0.1:{port}\n  header_read_timeout: 1s\n  request_timeout: 2s\n",
    );
    let mut master = MasterProcess::start(dir.path(), &config).await.unwrap();
    master.wait_imported(Duration::from_secs(60)).await.unwrap();
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", master.port));
    // Half a request: the connection is closed once the header time is up.
    let mut half = connect().await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), half.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "a half-sent request is dropped");
    // A body shorter than its Content-Length: 408 in the JSON envelope, not a hang.
    let mut short = connect().await.unwrap();
    short
        .write_all(
            b"POST /api/data/update HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"days\"",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), short.read(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"success\":false"), "{answer}");
    // A half-sent request is open when SIGTERM arrives: the master still exits in time, with
    // the journal and store intact.
    let mut stuck = connect().await.unwrap();
    stuck
        .write_all(b"GET /api/data/status HTTP/1.1\r\n")
        .await
        .unwrap();
    let (exit, took) = master
        .stop(Signal::SIGTERM, Duration::from_secs(8))
        .unwrap();
    assert!(exit.success(), "exit status {exit}");
    assert!(took < Duration::from_secs(6), "shutdown took {took:?}");
    drop(stuck);
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["total_records"], 7304, "{status}");
}
