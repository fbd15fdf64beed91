//! File import: the sample data exported in every format and imported into an empty store
//! gives a store the consistency check finds equal (digests of every bucket, computed from
//! the bars); uploads (a streamed body) and paths (`dmsctl import`) alike; naive Asia/Shanghai
//! times stored at the right UTC instants; bad rows reported with their row number, listed in
//! the quarantine file and skipped while the rest is stored; `insert_only` keeps a stored bar,
//! `upsert` replaces it; a dry run stores nothing; bad requests are refused naming the
//! parameter. Files named by path are read only inside `file_import.allowed_dirs`, and what
//! is said about them never quotes their content.

use std::path::Path;
use std::time::Duration;

use dms_e2e::{Dmsctl, MasterProcess, SAMPLE_SOURCE, copy_sample_data, master_config};
use serde_json::{Value, json};

const SYNC: Duration = Duration::from_secs(120);

/// `POST /api/data/import-file?query` with `body` as the file (`application/octet-stream`).
async fn upload(master: &MasterProcess, query: &str, body: Vec<u8>) -> (u16, Value) {
    let r = master
        .client()
        .post(master.url(&format!("/api/data/import-file?{query}")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

/// Queues an import (202) and waits for it to complete; returns the task.
async fn imported(master: &MasterProcess, answer: (u16, Value)) -> Value {
    let (code, body) = answer;
    assert_eq!(code, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    let task = master.wait_task(&id, SYNC).await.unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["kind"], "file_import");
    master.wait_applied(SYNC).await.unwrap();
    task
}

/// `file_import:` allowing path imports of files inside `dir`.
fn allowed_dir(dir: &Path) -> String {
    format!(
        "file_import:\n  allowed_dirs:\n    - {}\n",
        dir.canonicalize().unwrap().display()
    )
}

/// Runs a consistency check of `master`'s store against the store configured as `target`
/// under its `targets:`; returns its report.
async fn check_against(master: &MasterProcess, target: &str) -> Value {
    let body = json!({ "target": target }).to_string();
    let (code, answer) = master.post("/api/data/check", &body).await.unwrap();
    assert_eq!(code, 202, "{answer}");
    let task = master
        .wait_task(answer["task_id"].as_str().unwrap(), SYNC)
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    task["counters"]["check"].clone()
}

/// Deletes every stored series of `master` (through the journal) and waits until applied.
async fn empty(master: &MasterProcess) {
    let (_, series) = master.get("/api/data/series").await.unwrap();
    for s in series["data"].as_array().unwrap() {
        let body = json!({"symbol": s["symbol"], "interval": s["interval"]}).to_string();
        let (code, answer) = master.post("/api/data/delete", &body).await.unwrap();
        assert_eq!(code, 200, "{answer}");
    }
    master.wait_applied(SYNC).await.unwrap();
    let (_, series) = master.get("/api/data/series").await.unwrap();
    assert_eq!(series["data"].as_array().unwrap().len(), 0, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_export_format_imports_back_with_equal_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    copy_sample_data(&a_dir.join("sample-data"));
    std::fs::create_dir_all(&b_dir).unwrap();
    // A checks against B's store, named in its config; B reads the exported files by path
    // from the test's directory.
    let b_store = b_dir.join("data/bars.db");
    let a_config = format!(
        "{SAMPLE_SOURCE}targets:\n  b:\n    type: sqlite\n    path: {}\n",
        b_store.display()
    );
    let a = MasterProcess::start(&a_dir, &master_config(&a_config))
        .await
        .unwrap();
    a.wait_imported(SYNC).await.unwrap();
    let b = MasterProcess::start(&b_dir, &master_config(&allowed_dir(dir.path())))
        .await
        .unwrap();
    let (_, series) = a.get("/api/data/series").await.unwrap();
    let total: u64 = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .sum();
    assert!(total > 5000, "{series}");
    let ctl = Dmsctl::new(&format!("http://127.0.0.1:{}", b.port));

    for format in ["csv", "json", "jsonl", "xlsx", "parquet"] {
        let r = a
            .client()
            .get(a.url(&format!("/api/data/export?format={format}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{format}");
        let file = dir.path().join(format!("export.{format}"));
        std::fs::write(&file, r.bytes().await.unwrap()).unwrap();

        // A dry run of the file stores nothing and sees every bar as new.
        let dry = ctl
            .run(&["-o", "json", "import", file.to_str().unwrap(), "--dry-run"])
            .await
            .unwrap();
        assert_eq!(dry.code, 0, "{format}: {}", dry.stderr);
        let report: Value = serde_json::from_str(&dry.stdout).unwrap();
        assert_eq!(report["bars"], total, "{format}: {report}");
        assert_eq!(report["bars_new"], total, "{format}");
        assert_eq!(report["series"], 3, "{format}");
        assert_eq!(report["problems_total"], 0, "{format}: {report}");
        assert_eq!(report["preview"].as_array().unwrap().len(), 20);

        // CSV and xlsx are uploaded; the others are read from their path (dmsctl for Parquet).
        let task = match format {
            "csv" | "xlsx" => {
                let body = std::fs::read(&file).unwrap();
                imported(
                    &b,
                    upload(&b, &format!("filename=export.{format}"), body).await,
                )
                .await
            }
            "parquet" => {
                let run = ctl
                    .run(&["-o", "json", "import", file.to_str().unwrap()])
                    .await
                    .unwrap();
                assert_eq!(run.code, 0, "{}", run.stderr);
                let queued: Value = serde_json::from_str(&run.stdout).unwrap();
                let id = queued["task_id"].as_str().unwrap();
                let task = b.wait_task(id, SYNC).await.unwrap();
                assert_eq!(task["status"], "completed", "{task}");
                b.wait_applied(SYNC).await.unwrap();
                task
            }
            _ => {
                let query = format!("path={}", file.display());
                imported(
                    &b,
                    b.post(&format!("/api/data/import-file?{query}"), "")
                        .await
                        .unwrap(),
                )
                .await
            }
        };
        assert_eq!(task["counters"]["bars_written"], total, "{format}: {task}");
        assert_eq!(task["counters"]["rows_read"], total, "{format}");
        assert_eq!(task["counters"]["rows_skipped"], 0, "{format}");
        assert!(
            task["counters"]["quarantine_file"].is_null(),
            "no bad row, no file: {task}"
        );

        // The imported store equals the exported one, bucket digest by bucket digest.
        let check = check_against(&a, "b").await;
        assert_eq!(check["series_compared"], 3, "{format}: {check}");
        assert_eq!(check["series_equal"], 3, "{format}: {check}");
        assert_eq!(check["bars_missing"], 0, "{format}: {check}");
        assert_eq!(check["bars_extra"], 0, "{format}: {check}");
        assert_eq!(check["bars_changed"], 0, "{format}: {check}");

        // The same file again journals nothing.
        if format == "jsonl" {
            let query = format!("path={}", file.display());
            let again = imported(
                &b,
                b.post(&format!("/api/data/import-file?{query}"), "")
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(again["counters"]["bars_written"], 0, "{again}");
            assert_eq!(again["counters"]["bars_unchanged"], total);
        }
        empty(&b).await;
    }
    // A master without file_import.allowed_dirs reads no file by path (A), and one with them
    // none outside (B): refused alike, whether or not the file exists.
    let csv = dir.path().join("export.csv");
    let (code, answer) = a
        .post(&format!("/api/data/import-file?path={}", csv.display()), "")
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("imports of files on the master's machine are off"),
        "{answer}"
    );
    // Outside: a file elsewhere, and a link inside the allowed directory to one elsewhere.
    let outside = dms_e2e::repo_root().join("config/sample-data/EURUSD.csv");
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for path in [outside.display().to_string(), link.display().to_string()] {
        let (code, answer) = b
            .post(&format!("/api/data/import-file?path={path}"), "")
            .await
            .unwrap();
        assert_eq!(code, 400, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains("is not a readable file inside file_import.allowed_dirs"),
            "{answer}"
        );
    }
    // Uploads are removed once imported.
    let uploads: Vec<_> = std::fs::read_dir(b_dir.join("data/uploads"))
        .unwrap()
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
}

/// The bars of a series as `(ts, close)`.
async fn closes(master: &MasterProcess, symbol: &str, interval: &str) -> Vec<(String, f64)> {
    let (code, page) = master
        .get(&format!(
            "/api/data/bars?symbol={symbol}&interval={interval}&limit=1000"
        ))
        .await
        .unwrap();
    if code == 404 {
        return Vec::new();
    }
    assert_eq!(code, 200, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["ts"].as_str().unwrap().to_owned(),
                b["close"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_shanghai_times_bad_rows_modes_and_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterProcess::start(dir.path(), &master_config(&allowed_dir(dir.path())))
        .await
        .unwrap();
    // Hourly bars of a Shanghai stock in local time, two rows broken.
    let csv = "trade_time,o,high,low,close,vol\n\
        2024-01-02 09:30:00,10.0,10.5,9.9,10.2,1000\n\
        2024-01-02 10:30:00,10.2,10.6,10.1,10.4,1200\n\
        2024-01-02 11:30:00,abc,10.6,10.1,10.4,1200\n\
        2024-01-02 13:00:00,10.4,10.8,10.3\n\
        2024-01-02 14:00:00,10.7,10.9,10.6,10.8,900\n";
    let file = dir.path().join("600000.csv");
    std::fs::write(&file, csv).unwrap();
    let query = format!(
        "path={}&map.open=o&symbol=600000.SS&interval=1h&timezone=Asia/Shanghai",
        file.display()
    );

    // Dry run: the bars as they would be stored, every problem with its row; nothing stored.
    let (code, dry) = master
        .post(&format!("/api/data/import-file?{query}&dry_run=true"), "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{dry}");
    let dry = &dry["data"];
    assert_eq!(dry["rows"], 5, "{dry}");
    assert_eq!(dry["bars"], 3);
    assert_eq!(dry["bars_to_write"], 3);
    assert_eq!(dry["columns"]["time"], "trade_time");
    assert_eq!(dry["columns"]["volume"], "vol");
    let preview = dry["preview"].as_array().unwrap();
    assert_eq!(preview[0]["ts"], "2024-01-02T01:30:00Z", "{dry}");
    assert_eq!(preview[0]["row"], 2);
    assert_eq!(preview[0]["stored"], "new");
    assert_eq!(preview[2]["ts"], "2024-01-02T06:00:00Z");
    assert_eq!(preview[2]["row"], 6);
    let problems = dry["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{dry}");
    assert_eq!(problems[0]["row"], 4);
    // A file on the master's machine: the problem says where, never what the file holds.
    assert_eq!(
        problems[0]["reason"],
        "column o: not a valid value (not shown for a file on the master's machine)"
    );
    assert!(!dry.to_string().contains("abc"), "{dry}");
    assert_eq!(problems[1]["row"], 5);
    assert!(closes(&master, "600000.SS", "1h").await.is_empty());

    // The import (uploaded): three bars at their UTC times; the bad rows quarantined.
    let task = imported(
        &master,
        upload(
            &master,
            "filename=600000.csv&map.open=o&symbol=600000.SS&interval=1h&timezone=Asia/Shanghai",
            csv.as_bytes().to_vec(),
        )
        .await,
    )
    .await;
    let counters = &task["counters"];
    assert_eq!(counters["bars_written"], 3, "{task}");
    assert_eq!(counters["rows_skipped"], 2);
    let listed = counters["row_problems"].as_array().unwrap();
    // An upload is the client's own file: its problems quote it.
    assert_eq!(listed[0], "row 4: column o: \"abc\" is not a number");
    let quarantine =
        std::fs::read_to_string(counters["quarantine_file"].as_str().unwrap()).unwrap();
    let lines: Vec<&str> = quarantine.lines().collect();
    assert_eq!(lines.len(), 3, "{quarantine}");
    assert_eq!(lines[0], "row,sheet,reason");
    assert!(lines[1].starts_with("4,,"), "{quarantine}");
    assert!(lines[2].starts_with("5,,"), "{quarantine}");
    assert_eq!(
        closes(&master, "600000.SS", "1h").await,
        vec![
            ("2024-01-02T01:30:00Z".to_owned(), 10.2),
            ("2024-01-02T02:30:00Z".to_owned(), 10.4),
            ("2024-01-02T06:00:00Z".to_owned(), 10.8),
        ]
    );

    // insert_only keeps the stored 09:30 bar and adds the new one; upsert replaces it.
    let changed = dir.path().join("changed.csv");
    std::fs::write(
        &changed,
        "trade_time,o,high,low,close,vol\n\
         2024-01-02 09:30:00,10.0,10.5,9.9,10.3,1000\n\
         2024-01-02 15:00:00,10.8,10.9,10.7,10.9,500\n",
    )
    .unwrap();
    let changed_query = format!(
        "path={}&map.open=o&symbol=600000.SS&interval=1h&timezone=Asia/Shanghai",
        changed.display()
    );
    let task = imported(
        &master,
        master
            .post(
                &format!("/api/data/import-file?{changed_query}&mode=insert_only"),
                "",
            )
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(task["counters"]["bars_written"], 1, "{task}");
    assert_eq!(task["counters"]["bars_unchanged"], 1);
    let stored = closes(&master, "600000.SS", "1h").await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].1, 10.2, "insert_only kept the stored bar");
    assert_eq!(stored[3], ("2024-01-02T07:00:00Z".to_owned(), 10.9));
    let (_, dry) = master
        .post(
            &format!("/api/data/import-file?{changed_query}&dry_run=true"),
            "",
        )
        .await
        .unwrap();
    assert_eq!(dry["data"]["bars_changed"], 1, "{dry}");
    assert_eq!(dry["data"]["bars_unchanged"], 1);
    assert_eq!(dry["data"]["preview"][0]["stored"], "changed");
    let task = imported(
        &master,
        master
            .post(&format!("/api/data/import-file?{changed_query}"), "")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(task["counters"]["bars_written"], 1, "{task}");
    assert_eq!(closes(&master, "600000.SS", "1h").await[0].1, 10.3);

    // Bad requests are refused before a task is queued, naming what is wrong.
    let refused = |query: String, expect: &'static str| {
        let master = &master;
        async move {
            let (code, body) = master
                .post(&format!("/api/data/import-file?{query}"), "")
                .await
                .unwrap();
            assert_eq!(code, 400, "{query}: {body}");
            let error = body["error"].as_str().unwrap();
            assert!(error.contains(expect), "{query}: {error}");
        }
    };
    refused("path=relative.csv".into(), "not an absolute path").await;
    refused(format!("{query}&timezone=Mars/Base"), "Mars/Base").await;
    refused(format!("{query}&colour=red"), "unknown parameter `colour`").await;
    refused(
        format!("path={}", file.display()),
        "no column gives the open",
    )
    .await;
    refused(
        format!("{query}&map.price=x"),
        "\"price\" is not a bar field",
    )
    .await;
    refused(
        format!(
            "path={}/missing.csv&symbol=X&interval=1d",
            dir.path().display()
        ),
        "is not a readable file inside file_import.allowed_dirs",
    )
    .await;
    refused("symbol=X".into(), "give the file").await;
    let plain = master
        .client()
        .post(master.url("/api/data/import-file?filename=a.csv"))
        .header("content-type", "text/plain")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status().as_u16(), 415);
    let listed = std::fs::read_dir(dir.path().join("data/uploads"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(listed, 0, "refused uploads leave nothing behind");
}
