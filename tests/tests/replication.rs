//! Replication as an operator runs it: a real master and real replicas as processes, talking
//! gRPC over loopback (through a proxy that cuts and slows the link where a test needs it).

use std::path::Path;
use std::time::Duration;

use dms_e2e::{
    Check, LinkMode, LinkProxy, MasterProcess, ReplicaProcess, copy_sample_data, free_port,
    replica_config, write_daily_csvs,
};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(120);

fn master_config(extra: &str) -> String {
    format!(
        "
http:
  listen: 127.0.0.1:{{port}}
state:
  path: ./data/master-state.db
store:
  type: sqlite
  path: ./data/bars.db
{extra}"
    )
}

const SAMPLE_SOURCE: &str = "
sources:
  - type: csv
    name: sample
    dir: ./sample-data
    files:
      EURUSD.csv: {symbol: EURUSD=X, interval: 1h}
      BTCUSD.csv: {symbol: BTC-USD}
";

const GENERATED_SOURCE: &str = "
sources:
  - type: csv
    name: gen
    dir: ./gen
    interval: 1d
";

async fn sample_master(dir: &Path) -> MasterProcess {
    copy_sample_data(&dir.join("sample-data"));
    let master = MasterProcess::start(dir, &master_config(SAMPLE_SOURCE))
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    master
}

async fn replica(dir: &Path, name: &str, master_port: u16, extra: &str) -> ReplicaProcess {
    ReplicaProcess::start(
        &dir.join(name),
        name,
        &replica_config(name, master_port, extra),
    )
    .await
    .unwrap()
}

async fn verify(master: &MasterProcess, node: &str) -> Value {
    let (code, body) = master
        .post(&format!("/api/nodes/{node}/verify"), "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    body["data"].clone()
}

async fn node(master: &MasterProcess, id: &str) -> Value {
    let (code, body) = master.get(&format!("/api/nodes/{id}")).await.unwrap();
    assert_eq!(code, 200, "{body}");
    body["data"].clone()
}

fn assert_equal(report: &Value) {
    assert_eq!(report["equal"], true, "{report}");
    assert_eq!(report["buckets_diverged"], 0, "{report}");
    assert!(report["buckets_compared"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["bars_master"], report["bars_replica"], "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_reach_the_masters_exact_counts_and_verify_equal() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample_master(dir.path()).await;
    let a = replica(dir.path(), "replica-a", master.port, "").await;
    let b = replica(dir.path(), "replica-b", master.port, "").await;
    for r in [&a, &b] {
        r.wait_in_sync(&master, SYNC).await.unwrap();
        let data = r.data_status().await.unwrap();
        assert_eq!(data["total_records"], 7304, "{data}");
        assert_eq!(data["total_series"], 3, "{data}");
        // The replica serves the same bars as the master.
        let q = "/api/data/bars?symbol=GOOG&start=2013-02-01&limit=50";
        assert_eq!(r.get(q).await.unwrap(), master.get(q).await.unwrap());
    }
    let (code, nodes) = master.get("/api/nodes").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(nodes["count"], 2, "{nodes}");
    for n in nodes["data"].as_array().unwrap() {
        assert_eq!(n["state"], "in_sync", "{n}");
        assert_eq!(n["lag_seq"], 0, "{n}");
        assert_eq!(n["needs_repair"], false, "{n}");
        assert_eq!(n["session"]["bars"], 7304, "{n}");
    }
    for id in ["replica-a", "replica-b"] {
        let report = verify(&master, id).await;
        assert_equal(&report);
        assert_eq!(report["series_total"], 3);
    }
    let (code, ready) = a.get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{ready}");
    // Unknown nodes are named in the error.
    let (code, body) = master.post("/api/nodes/nobody/verify", "").await.unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nobody"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_store_was_deleted_while_down_rebuilds_it_by_range_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample_master(dir.path()).await;
    let rdir = dir.path().join("replica-a");
    let config = replica_config("replica-a", master.port, "");
    let mut a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    a.wait_in_sync(&master, SYNC).await.unwrap();
    a.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    for f in [
        "replica-bars.db",
        "replica-bars.db-wal",
        "replica-bars.db-shm",
    ] {
        let _ = std::fs::remove_file(rdir.join(f));
    }
    let a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    a.wait_in_sync(&master, SYNC).await.unwrap();
    let repairs = a.repairs().await.unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert!(
        repairs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match its cursor"),
        "{repairs:?}"
    );
    assert_eq!(repairs[0]["bars_pulled"], 7304, "{repairs:?}");
    assert_eq!(repairs[0]["series_differing"], 3, "{repairs:?}");
    assert_equal(&verify(&master, "replica-a").await);
    // The master's sync history shows the repair and the sessions around it.
    let (_, history) = master.get("/api/nodes/replica-a/history").await.unwrap();
    let sessions = history["data"].as_array().unwrap();
    assert!(
        sessions.iter().any(|s| s["repair_reason"]
            .as_str()
            .is_some_and(|r| r.contains("store"))),
        "{history}"
    );
    assert!(
        sessions.iter().any(|s| s["repair"]["bars_pulled"] == 7304),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_finds_and_fixes_exactly_the_tampered_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample_master(dir.path()).await;
    let rdir = dir.path().join("replica-a");
    let config = replica_config("replica-a", master.port, "anti_entropy_interval: 0s\n");
    let mut a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    a.wait_in_sync(&master, SYNC).await.unwrap();
    a.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    // Another program changes one bar, deletes one and adds one, in three buckets of GOOG.
    let conn = rusqlite::Connection::open(rdir.join("replica-bars.db")).unwrap();
    let goog: i64 = conn
        .query_row(
            "SELECT id FROM series WHERE symbol = 'GOOG' AND interval = '1d'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let day = |d: &str| {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp()
    };
    let changed = conn
        .execute(
            "UPDATE bars SET close = close + 1 WHERE series_id = ?1 AND ts = ?2",
            rusqlite::params![goog, day("2010-06-01")],
        )
        .unwrap();
    let deleted = conn
        .execute(
            "DELETE FROM bars WHERE series_id = ?1 AND ts = ?2",
            rusqlite::params![goog, day("2008-03-03")],
        )
        .unwrap();
    let added = conn
        .execute(
            "INSERT INTO bars (series_id, ts, open, high, low, close, volume)
             VALUES (?1, ?2, 10, 11, 9, 10, 1)",
            rusqlite::params![goog, day("2012-07-04")],
        )
        .unwrap();
    assert_eq!((changed, deleted, added), (1, 1, 1));
    drop(conn);
    let a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    a.wait_until("the replica to connect", SYNC, async || {
        let s = a.status().await?;
        Ok(if s["state"] == "in_sync" {
            Check::Ready(())
        } else {
            Check::Waiting(s.to_string())
        })
    })
    .await
    .unwrap();
    let (code, body) = a.post("/api/replica/anti-entropy", "").await.unwrap();
    assert_eq!(code, 202, "{body}");
    let repair = a
        .wait_until("anti-entropy to finish", SYNC, async || {
            let r = a.repairs().await?;
            Ok(match r.first() {
                Some(r) if r["reason"] == "anti-entropy" => Check::Ready(r.clone()),
                _ => Check::Waiting(format!("{r:?}")),
            })
        })
        .await
        .unwrap();
    assert_eq!(repair["buckets_pulled"], 3, "{repair}");
    assert_eq!(repair["series_differing"], 1, "{repair}");
    // Only GOOG's buckets were compared (~35 quarters), and only three pulled (~63 bars each).
    assert!(
        repair["buckets_compared"].as_u64().unwrap() > 30,
        "{repair}"
    );
    assert!(
        repair["bars_pulled"].as_u64().unwrap() <= 3 * 66,
        "{repair}"
    );
    a.wait_in_sync(&master, SYNC).await.unwrap();
    assert_equal(&verify(&master, "replica-a").await);
    let q = "/api/data/bars?symbol=GOOG&start=2010-06-01&end=2010-06-02";
    assert_eq!(a.get(q).await.unwrap(), master.get(q).await.unwrap());
    // The master's history of this node shows the repair once the replica reconnects.
    master
        .wait_until("the repair in the master's history", SYNC, async || {
            let (_, h) = master.get("/api/nodes/replica-a/history").await?;
            let found = h["data"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["repair"]["reason"] == "anti-entropy"));
            Ok(if found {
                Check::Ready(())
            } else {
                Check::Waiting(h.to_string())
            })
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_a_replica_from_another_history_converges_by_repair() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "the-right-token\n").unwrap();
    let token_cfg = format!(
        "{SAMPLE_SOURCE}replication:\n  token_file: {}\n",
        dir.path().join("token").display()
    );
    copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(&token_cfg))
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    let wdir = dir.path().join("wrong");
    let cfg = replica_config("wrong", master.port, "").replace(
        "  idle_timeout: 3s",
        "  token: not-the-token\n  idle_timeout: 3s",
    );
    let w = ReplicaProcess::start(&wdir, "wrong", &cfg).await.unwrap();
    let status = w
        .wait_until("the refusal to show in the status", SYNC, async || {
            let s = w.status().await?;
            Ok(
                if s["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("token"))
                {
                    Check::Ready(s)
                } else {
                    Check::Waiting(s.to_string())
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(status["cursor"], 0, "{status}");
    assert!(
        w.log_text().contains("refused this replica's token"),
        "{}",
        w.log_text()
    );
    assert!(!w.log_text().contains("the-right-token"));
    let (code, _) = w.get("/readyz").await.unwrap();
    assert_eq!(code, 503);
    assert_eq!(w.data_status().await.unwrap()["total_records"], 0);

    // A replica in sync with another master (another history) re-pointed here converges.
    let other_dir = dir.path().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    copy_sample_data(&other_dir.join("sample-data"));
    let other = MasterProcess::start(&other_dir, &master_config(SAMPLE_SOURCE))
        .await
        .unwrap();
    other.wait_imported(SYNC).await.unwrap();
    let adir = dir.path().join("a");
    let mut a = ReplicaProcess::start(&adir, "a", &replica_config("a", other.port, ""))
        .await
        .unwrap();
    a.wait_in_sync(&other, SYNC).await.unwrap();
    let first_history = a.status().await.unwrap()["history_id"].clone();
    a.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let cfg = replica_config("a", master.port, "").replace(
        "  idle_timeout: 3s",
        "  token: the-right-token\n  idle_timeout: 3s",
    );
    let a = ReplicaProcess::start(&adir, "a", &cfg).await.unwrap();
    let status = a.wait_in_sync(&master, SYNC).await.unwrap();
    assert_ne!(status["history_id"], first_history);
    let repairs = a.repairs().await.unwrap();
    assert!(
        repairs[0]["reason"].as_str().unwrap().contains("history"),
        "{repairs:?}"
    );
    // Same sample data on both masters: nothing had to move.
    assert_eq!(repairs[0]["buckets_pulled"], 0, "{repairs:?}");
    assert_equal(&verify(&master, "a").await);
}
