//! The bar overview (filtered by symbol prefix and interval, missing bars counted), and
//! deleting through the journal: a range of one series over REST and a whole series with
//! `dmsctl delete`, each first as a dry run that changes nothing; the master's store and a
//! replica's both lose exactly those bars, and the replica still verifies equal.

use std::time::Duration;

use dms_e2e::{
    Check, Dmsctl, MasterProcess, ReplicaProcess, SAMPLE_SOURCE, copy_sample_data, master_config,
    replica_config,
};
use serde_json::{Value, json};

const SYNC: Duration = Duration::from_secs(60);

/// Bars of `symbol`/`interval` in `[start, end)` as the daemon's read API serves them.
async fn count_in(daemon: &dms_e2e::DaemonProcess, q: &str) -> u64 {
    let (code, page) = daemon
        .get(&format!("/api/data/bars?{q}&limit=100000"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(
        page["next_start"].is_null(),
        "one page holds the range: {page}"
    );
    page["count"].as_u64().unwrap()
}

/// Waits until `daemon` serves no bar for `q` (its store applied a deletion).
async fn wait_gone(daemon: &dms_e2e::DaemonProcess, q: &str) {
    daemon
        .wait_until(&format!("{q} to be deleted"), SYNC, async || {
            let n = count_in(daemon, q).await;
            Ok(if n == 0 {
                Check::Ready(())
            } else {
                Check::Waiting(format!("{n} left"))
            })
        })
        .await
        .unwrap();
}

async fn total(daemon: &dms_e2e::DaemonProcess) -> u64 {
    let (_, s) = daemon.get("/api/data/status").await.unwrap();
    s["data"]["total_records"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_go_through_the_journal_to_the_store_and_the_replicas_after_a_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(SAMPLE_SOURCE))
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    let replica = ReplicaProcess::start(
        &dir.path().join("replica"),
        "r1",
        &replica_config("r1", master.port, ""),
    )
    .await
    .unwrap();
    replica.wait_in_sync(&master, SYNC).await.unwrap();
    let before = total(&master).await;

    // The overview: filtered by prefix and by interval, with missing bars counted.
    let (code, eur) = master.get("/api/data/overview?prefix=EUR").await.unwrap();
    assert_eq!(code, 200, "{eur}");
    assert_eq!(eur["count"], 1, "{eur}");
    let row = &eur["data"][0];
    assert_eq!(
        (row["symbol"].as_str(), row["interval"].as_str()),
        (Some("EURUSD=X"), Some("1h"))
    );
    let (_, series) = master.get("/api/data/series").await.unwrap();
    let eur_count = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "EURUSD=X")
        .map(|s| s["count"].clone())
        .unwrap();
    assert_eq!(row["count"], eur_count, "{eur}");
    assert!(row["missing"].as_u64().is_some(), "{eur}");
    // Size on disk: the SQLite store's files, shared out by bar count.
    let store_bytes = eur["store_bytes"].as_u64().unwrap();
    let store_file = std::fs::metadata(dir.path().join("data/bars.db"))
        .unwrap()
        .len();
    assert!(store_bytes >= store_file, "{eur}");
    let share = row["size_bytes"].as_u64().unwrap();
    assert!(share > 0 && share < store_bytes, "{eur}");
    let (code, bad) = master.get("/api/data/overview?interval=2d").await.unwrap();
    assert_eq!(code, 400, "{bad}");
    let ctl = Dmsctl::new(&format!("http://127.0.0.1:{}", master.port));
    let monthly = ctl
        .run(&["overview", "-i", "1mo", "--no-gaps", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(monthly.code, 0, "{monthly:?}");
    let rows = monthly.json()["series"].as_array().cloned().unwrap();
    assert_eq!(rows.len(), 1, "{monthly:?}");
    assert_eq!(rows[0]["symbol"], "BTC-USD");
    assert!(
        rows[0]["missing"].is_null(),
        "not counted with --no-gaps: {monthly:?}"
    );

    let range = "symbol=EURUSD%3DX&interval=1h&start=2017-06-01&end=2017-07-01";
    let in_range = count_in(&master, range).await;
    assert!(
        in_range > 100,
        "the sample has June 2017 hourly bars: {in_range}"
    );

    // Refused without an interval; a dry run counts and changes nothing.
    let (code, answer) = master
        .post("/api/data/delete", r#"{"symbol": "EURUSD=X"}"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("`interval`"),
        "{answer}"
    );
    let body = json!({"symbol": "EURUSD=X", "interval": "1h", "start": "2017-06-01",
                      "end": "2017-07-01", "dry_run": true});
    let (code, answer) = master
        .post("/api/data/delete", &body.to_string())
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"]["bars"], in_range, "{answer}");
    assert!(answer["data"]["journal_seq"].is_null(), "{answer}");
    assert_eq!(total(&master).await, before);

    // The deletion itself: journaled, applied by the store, followed by the replica.
    let mut body = body;
    body["dry_run"] = Value::from(false);
    let (code, answer) = master
        .post("/api/data/delete", &body.to_string())
        .await
        .unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["data"]["bars"], in_range, "{answer}");
    assert!(answer["data"]["journal_seq"].as_u64().is_some(), "{answer}");
    wait_gone(&master, range).await;
    assert_eq!(total(&master).await, before - in_range);
    replica.wait_in_sync(&master, SYNC).await.unwrap();
    assert_eq!(count_in(&replica, range).await, 0);
    assert_eq!(total(&replica).await, before - in_range);
    // Bars next to the range stay.
    assert!(
        count_in(
            &master,
            "symbol=EURUSD%3DX&interval=1h&start=2017-05-01&end=2017-06-01"
        )
        .await
            > 0
    );

    // A whole series with dmsctl, dry run first.
    let btc = count_in(&master, "symbol=BTC-USD&interval=1mo").await;
    assert!(btc > 0);
    let dry = ctl
        .run(&["delete", "BTC-USD", "-i", "1mo", "--dry-run"])
        .await
        .unwrap();
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains(&format!("{btc} bars would be deleted")),
        "{dry:?}"
    );
    let done = ctl
        .run(&["delete", "BTC-USD", "-i", "1mo", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(done.json()["bars"], btc, "{done:?}");
    wait_gone(&replica, "symbol=BTC-USD&interval=1mo").await;
    let table = ctl.run(&["overview"]).await.unwrap();
    assert!(!table.stdout.contains("BTC-USD"), "{table:?}");
    assert!(table.stdout.contains("EURUSD=X"), "{table:?}");
    let again = ctl.run(&["delete", "BTC-USD", "-i", "1mo"]).await.unwrap();
    assert!(again.stdout.contains("nothing to delete"), "{again:?}");
    // The interval is never assumed.
    let bad = ctl.run(&["delete", "BTC-USD"]).await.unwrap();
    assert_eq!(bad.code, 2, "{bad:?}");

    // Master and replica still hold the same bars, bucket by bucket.
    replica.wait_in_sync(&master, SYNC).await.unwrap();
    let verify = ctl
        .run(&["nodes", "verify", "r1", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(verify.code, 0, "{verify:?}");
    assert_eq!(verify.json()["equal"], true, "{verify:?}");
}
