//! Replication as an operator runs it: a real master and real replicas as processes, talking
//! gRPC over loopback (through a proxy that cuts and slows the link where a test needs it).

use std::path::Path;
use std::time::Duration;

use dms_e2e::{
    Check, LinkMode, LinkProxy, MasterProcess, ReplicaProcess, SAMPLE_SOURCE, copy_sample_data,
    free_port, master_config, replica_config, write_daily_csvs,
};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(120);

/// The master's replication token in the token test.
const RIGHT_TOKEN: &str = "the-right-token-0123456789abcdef0123456789";

const GENERATED_SOURCE: &str = "
sources:
  - type: csv
    name: gen
    dir: ./gen
    interval: 1d
";

async fn sample_master(dir: &Path) -> MasterProcess {
    sample_master_with(dir, "").await
}

/// [`sample_master`] with `extra` appended to its config.
async fn sample_master_with(dir: &Path, extra: &str) -> MasterProcess {
    copy_sample_data(&dir.join("sample-data"));
    let config = master_config(&format!("{SAMPLE_SOURCE}{extra}"));
    let master = MasterProcess::start(dir, &config).await.unwrap();
    master.wait_imported(SYNC).await.unwrap();
    master
}

/// A `targets:` section naming the replica that will listen on `port` as `name` (checks
/// name a replica configured there, never an address).
fn replica_target(name: &str, port: u16) -> String {
    format!("targets:\n  {name}:\n    type: replica\n    url: http://127.0.0.1:{port}\n")
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

/// Runs the master's consistency check against the replica configured as `name` under its
/// `targets:`; returns its report.
async fn replica_check(master: &MasterProcess, name: &str) -> Value {
    let body = serde_json::json!({ "replica": name }).to_string();
    let (code, answer) = master.post("/api/data/check", &body).await.unwrap();
    assert_eq!(code, 202, "{answer}");
    let task = master
        .wait_task(answer["task_id"].as_str().unwrap(), SYNC)
        .await
        .unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    task["counters"]["check"].clone()
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
    // A range pulled on demand changes nothing on a replica in sync.
    let (code, pulled) = a
        .post(
            "/api/replica/pull",
            r#"{"symbol": "GOOG", "start": "2010-01-01", "end": "2011-01-01"}"#,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{pulled}");
    assert_eq!(pulled["data"]["bars_pulled"], 252, "{pulled}");
    assert_eq!(pulled["data"]["unchanged"], 252, "{pulled}");
    let (code, bad) = a
        .post("/api/replica/pull", r#"{"symbol": "GO OG"}"#)
        .await
        .unwrap();
    assert_eq!(code, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("symbol"), "{bad}");
    // A node that is gone for good is forgotten, with its journal cursor.
    drop(b);
    let (code, body) = master.delete("/api/nodes/replica-b").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = master.get("/api/nodes/replica-b").await.unwrap();
    assert_eq!(code, 404);
    let cursors = master.status().await.unwrap()["journal"]["cursors"].clone();
    assert!(
        cursors
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "replica:replica-b"),
        "{cursors}"
    );
    // Forgetting a connected replica ends its session; it reconnects and is known again.
    let (code, body) = master.delete("/api/nodes/replica-a").await.unwrap();
    assert_eq!(code, 200, "{body}");
    a.wait_in_sync(&master, SYNC).await.unwrap();
    master
        .wait_until("replica-a to be known again", SYNC, async || {
            let (code, n) = master.get("/api/nodes/replica-a").await?;
            Ok(if code == 200 && n["data"]["state"] == "in_sync" {
                Check::Ready(())
            } else {
                Check::Waiting(n.to_string())
            })
        })
        .await
        .unwrap();
    assert_equal(&verify(&master, "replica-a").await);
    // gRPC health answers on the same port for the replication service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", master.port))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dms.v1.Replication".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
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
    // The replica's port is fixed up front: the master's check names it in its config.
    let rport = free_port();
    let master = sample_master_with(dir.path(), &replica_target("replica-a", rport)).await;
    let rdir = dir.path().join("replica-a");
    let config = replica_config("replica-a", master.port, "anti_entropy_interval: 0s\n");
    let mut a = ReplicaProcess::start_on(&rdir, "replica-a", &config, rport)
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
    let day = dms_e2e::unix_day;
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
    let a = ReplicaProcess::start_on(&rdir, "replica-a", &config, rport)
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
    // The master's consistency check against what the replica serves lists exactly the three.
    let check = replica_check(&master, "replica-a").await;
    assert_eq!(
        (
            &check["bars_changed"],
            &check["bars_missing"],
            &check["bars_extra"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{check}"
    );
    assert_eq!(check["series_compared"], 3, "{check}");
    assert_eq!(check["series_equal"], 2, "{check}");
    let when: Vec<&str> = check["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ts"].as_str().unwrap())
        .collect();
    assert_eq!(when.len(), 3, "{check}");
    for date in ["2008-03-03", "2010-06-01", "2012-07-04"] {
        assert!(
            when.iter().any(|t| t.starts_with(date)),
            "{date} in {when:?}"
        );
    }
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
    std::fs::write(dir.path().join("token"), format!("{RIGHT_TOKEN}\n")).unwrap();
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
        "  token: not-the-token-0123456789abcdef0123456789\n  idle_timeout: 3s",
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
    assert!(!w.log_text().contains(RIGHT_TOKEN));
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
        &format!("  token: {RIGHT_TOKEN}\n  idle_timeout: 3s"),
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

/// A master on `symbols` generated daily series of `bars` bars, imported at start.
async fn generated_master(dir: &Path, symbols: usize, bars: usize, extra: &str) -> MasterProcess {
    write_daily_csvs(&dir.join("gen"), symbols, bars);
    MasterProcess::start(dir, &master_config(&format!("{GENERATED_SOURCE}{extra}")))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_a_million_bars_stream_converges_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let master = generated_master(dir.path(), 400, 2_500, "").await;
    let started = std::time::Instant::now();
    let status = master
        .wait_imported(Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(status["total_records"], 1_000_000, "{status}");
    eprintln!("master imported 1M bars in {:?}", started.elapsed());
    // Through a slow link, so that the kill lands mid-stream.
    let proxy = LinkProxy::start(master.port).await;
    proxy.set(LinkMode::Throttled(4 << 20));
    let rdir = dir.path().join("replica-a");
    let config = replica_config("replica-a", proxy.port, "");
    let mut a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    let head = status["journal"]["head"].as_u64().unwrap();
    let seen = a
        .wait_until("the replica to be part way through", SYNC, async || {
            let s = a.status().await?;
            let c = s["cursor"].as_u64().unwrap_or(0);
            Ok(if c > 0 && c < head {
                Check::Ready(c)
            } else {
                Check::Waiting(s.to_string())
            })
        })
        .await
        .unwrap();
    let killed = a.kill().unwrap();
    assert!(!killed.success());
    proxy.set(LinkMode::Open);
    let a = ReplicaProcess::start(&rdir, "replica-a", &config)
        .await
        .unwrap();
    let status = a
        .wait_in_sync(&master, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(status["cursor"].as_u64().unwrap() >= seen);
    assert!(
        a.repairs().await.unwrap().is_empty(),
        "resumed from its cursor, no repair"
    );
    assert_equal(&verify(&master, "replica-a").await);
    // No duplicate rows: the store's count is the number of distinct bars.
    let conn = rusqlite::Connection::open(rdir.join("replica-bars.db")).unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_row(
            "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT series_id, ts FROM bars)) FROM bars",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct), (1_000_000, 1_000_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_resume_from_their_cursors_after_the_master_is_killed_during_ingest() {
    let dir = tempfile::tempdir().unwrap();
    write_daily_csvs(&dir.path().join("gen"), 400, 2_500);
    let config = master_config(GENERATED_SOURCE);
    let port = free_port();
    let mut master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    let a = replica(dir.path(), "replica-a", port, "").await;
    let b = replica(dir.path(), "replica-b", port, "").await;
    // Kill the master once replicas have applied part of the ingest.
    let before = master
        .wait_until("replicas to apply part of the ingest", SYNC, async || {
            let (sa, sb) = (a.status().await?, b.status().await?);
            let ca = sa["cursor"].as_u64().unwrap_or(0);
            let cb = sb["cursor"].as_u64().unwrap_or(0);
            Ok(if ca >= 20 && cb >= 20 {
                Check::Ready((ca, cb))
            } else {
                Check::Waiting(format!("a {sa} b {sb}"))
            })
        })
        .await
        .unwrap();
    let journaled = master.status().await.unwrap()["journal"]["head"]
        .as_u64()
        .unwrap();
    master.kill().unwrap();
    let history = a.status().await.unwrap()["history_id"].clone();
    let master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    let status = master
        .wait_imported(Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(status["total_records"], 1_000_000, "{status}");
    assert!(status["journal"]["head"].as_u64().unwrap() >= journaled);
    for (r, cursor) in [(&a, before.0), (&b, before.1)] {
        let s = r
            .wait_in_sync(&master, Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(s["history_id"], history, "the same history: no repair");
        assert!(s["cursor"].as_u64().unwrap() > cursor);
        assert!(r.repairs().await.unwrap().is_empty());
        assert_equal(&verify(&master, &r.node_id).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_then_flapping_link_reconnects_converges_and_is_in_the_sync_history() {
    let dir = tempfile::tempdir().unwrap();
    write_daily_csvs(&dir.path().join("gen"), 40, 2_500);
    let config = master_config(&format!(
        "{GENERATED_SOURCE}replication:\n  heartbeat_interval: 200ms\n"
    ));
    let port = free_port();
    let mut master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    let proxy = LinkProxy::start(port).await;
    let a = replica(dir.path(), "replica-a", proxy.port, "").await;
    a.wait_in_sync(&master, SYNC).await.unwrap();

    // Cut for 10 s while the master restarts with more data (the start-up import runs again,
    // so the journal grows while the link is down).
    proxy.set(LinkMode::Cut);
    master
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    write_daily_csvs(&dir.path().join("gen"), 60, 2_500);
    let master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    a.wait_until("the replica to notice the cut", SYNC, async || {
        let s = a.status().await?;
        Ok(if s["state"] == "disconnected" {
            Check::Ready(())
        } else {
            Check::Waiting(s.to_string())
        })
    })
    .await
    .unwrap();
    let cursor_at_cut = a.status().await.unwrap()["cursor"].clone();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Still cut off: between reconnect attempts (disconnected) or in one (connecting), and
    // nothing arrived meanwhile.
    let during = a.status().await.unwrap();
    assert!(
        during["state"] == "disconnected" || during["state"] == "connecting",
        "{during}"
    );
    assert_eq!(during["cursor"], cursor_at_cut, "{during}");
    proxy.set(LinkMode::Open);
    a.wait_in_sync(&master, SYNC).await.unwrap();

    // Flapping every 500 ms for 10 s.
    proxy
        .flap(Duration::from_millis(500), Duration::from_secs(10))
        .await;
    let status = a.wait_in_sync(&master, SYNC).await.unwrap();
    assert!(status["sessions"].as_u64().unwrap() >= 3, "{status}");
    assert_equal(&verify(&master, "replica-a").await);
    let (_, history) = master
        .get("/api/nodes/replica-a/history?limit=1000")
        .await
        .unwrap();
    let sessions = history["data"].as_array().unwrap();
    assert!(sessions.len() >= 2, "{history}");
    // Every session but the open one ended with a reason: the restart, then broken links.
    let open = sessions
        .iter()
        .filter(|s| s["disconnected_ms"].is_null())
        .count();
    assert_eq!(open, 1, "{history}");
    let ended: Vec<&str> = sessions
        .iter()
        .filter_map(|s| s["end_reason"].as_str())
        .collect();
    assert_eq!(ended.len(), sessions.len() - 1, "{history}");
    assert!(ended.contains(&"the master is shutting down"), "{ended:?}");
    assert!(
        ended.iter().filter(|r| r.contains("link broke")).count() >= 2,
        "{ended:?}"
    );
    let n = node(&master, "replica-a").await;
    assert_eq!(n["state"], "in_sync", "{n}");
    assert_eq!(n["lag_seq"], 0, "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_does_not_hold_back_a_fast_one_and_repairs_once_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    write_daily_csvs(&dir.path().join("gen"), 5, 500);
    let config = master_config(&format!(
        "{GENERATED_SOURCE}journal:\n  max_bytes: 1MiB\n  retention_interval: 1s\n"
    ));
    let port = free_port();
    let mut master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    let proxy = LinkProxy::start(port).await;
    let fast = replica(dir.path(), "fast", port, "").await;
    let slow = replica(dir.path(), "slow", proxy.port, "").await;
    fast.wait_in_sync(&master, SYNC).await.unwrap();
    slow.wait_in_sync(&master, SYNC).await.unwrap();
    // A replica that first connects after retention removed applied entries starts with a
    // repair; what counts below is what happens after this point.
    let initial_repairs = slow.repairs().await.unwrap().len();

    // The slow replica is cut off while the master takes a little more (well within 1 MiB):
    // the fast one keeps up, the journal keeps what the slow one needs.
    proxy.set(LinkMode::Cut);
    write_daily_csvs(&dir.path().join("gen"), 5, 1_000);
    let (code, body) = master.post("/api/data/update", "{}").await.unwrap();
    assert_eq!(code, 202, "{body}");
    let id = body["task_id"].as_str().unwrap().to_owned();
    master.wait_task(&id, SYNC).await.unwrap();
    fast.wait_in_sync(&master, SYNC).await.unwrap();
    let n = node(&master, "fast").await;
    assert_eq!(
        (n["state"].as_str(), n["lag_seq"].as_u64()),
        (Some("in_sync"), Some(0)),
        "{n}"
    );
    let s = node(&master, "slow").await;
    assert!(s["lag_seq"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["needs_repair"], false, "{s}");
    proxy.set(LinkMode::Open);
    slow.wait_in_sync(&master, SYNC).await.unwrap();
    assert_eq!(
        slow.repairs().await.unwrap().len(),
        initial_repairs,
        "streamed from its cursor"
    );

    // Cut again, and the master takes far more than the journal keeps (a restart re-imports
    // 40 series): retention drops what the slow one needs and marks it.
    proxy.set(LinkMode::Cut);
    master
        .stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    write_daily_csvs(&dir.path().join("gen"), 40, 1_000);
    let master = MasterProcess::start_on(dir.path(), &config, &[], port)
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    fast.wait_in_sync(&master, SYNC).await.unwrap();
    let s = master
        .wait_until("retention to mark the slow replica", SYNC, async || {
            let (_, n) = master.get("/api/nodes/slow").await?;
            Ok(if n["data"]["needs_repair"] == true {
                Check::Ready(n["data"].clone())
            } else {
                Check::Waiting(n.to_string())
            })
        })
        .await
        .unwrap();
    assert!(
        s["repair_reason"].as_str().unwrap().contains("retention"),
        "{s}"
    );
    // Retention held the journal to its limit (what the store had not applied aside).
    master
        .wait_until(
            "retention to bring the journal under 1 MiB",
            SYNC,
            async || {
                let status = master.status().await?;
                let bytes = status["journal"]["bytes"].as_u64().expect("journal bytes");
                Ok(if bytes <= 1 << 20 {
                    Check::Ready(())
                } else {
                    Check::Waiting(status["journal"].to_string())
                })
            },
        )
        .await
        .unwrap();
    proxy.set(LinkMode::Open);
    slow.wait_in_sync(&master, SYNC).await.unwrap();
    let repairs = slow.repairs().await.unwrap();
    assert_eq!(repairs.len(), initial_repairs + 1, "{repairs:?}");
    assert!(
        repairs[0]["reason"].as_str().unwrap().contains("retention"),
        "{repairs:?}"
    );
    // It pulled the 35 new series and the new half of the first 5, nothing else.
    assert!(
        repairs[0]["bars_pulled"].as_u64().unwrap() <= 40_000,
        "{repairs:?}"
    );
    assert_eq!(repairs[0]["series_differing"], 35, "{repairs:?}");
    assert_equal(&verify(&master, "slow").await);
    assert_equal(&verify(&master, "fast").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_a_new_master_on_a_replicas_store_and_the_other_replica_pulls_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let m1_dir = dir.path().join("m1");
    write_daily_csvs(&m1_dir.join("gen"), 20, 1_000);
    let config = master_config(GENERATED_SOURCE);
    let port = free_port();
    let mut m1 = MasterProcess::start_on(&m1_dir, &config, &[], port)
        .await
        .unwrap();
    m1.wait_imported(SYNC).await.unwrap();
    let adir = dir.path().join("a");
    let bdir = dir.path().join("b");
    let mut a = ReplicaProcess::start(&adir, "a", &replica_config("a", port, ""))
        .await
        .unwrap();
    let mut b = ReplicaProcess::start(&bdir, "b", &replica_config("b", port, ""))
        .await
        .unwrap();
    a.wait_in_sync(&m1, SYNC).await.unwrap();
    b.wait_in_sync(&m1, SYNC).await.unwrap();
    // B goes down; the master takes 10 more series, which A receives.
    b.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    m1.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    write_daily_csvs(&m1_dir.join("gen"), 30, 1_000);
    let mut m1 = MasterProcess::start_on(&m1_dir, &config, &[], port)
        .await
        .unwrap();
    m1.wait_imported(SYNC).await.unwrap();
    a.wait_in_sync(&m1, SYNC).await.unwrap();
    let old_history = a.status().await.unwrap()["history_id"].clone();

    // The master is lost with its state. A new master starts on A's store with a new state.
    m1.kill().unwrap();
    a.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
        .unwrap();
    let m2_dir = dir.path().join("m2");
    std::fs::create_dir_all(m2_dir.join("data")).unwrap();
    // The store is the file and its write-ahead log.
    for (from, to) in [
        ("replica-bars.db", "bars.db"),
        ("replica-bars.db-wal", "bars.db-wal"),
    ] {
        if adir.join(from).exists() {
            std::fs::copy(adir.join(from), m2_dir.join("data").join(to)).unwrap();
        }
    }
    let m2 = MasterProcess::start(&m2_dir, &master_config(""))
        .await
        .unwrap();
    let status = m2.status().await.unwrap();
    assert_eq!(status["total_records"], 30_000, "{status}");
    assert_eq!(status["total_series"], 30, "{status}");

    // B is pointed at the new master: another history, so it repairs by digests.
    let b = ReplicaProcess::start(&bdir, "b", &replica_config("b", m2.port, ""))
        .await
        .unwrap();
    let s = b.wait_in_sync(&m2, SYNC).await.unwrap();
    assert_ne!(s["history_id"], old_history);
    let repairs = b.repairs().await.unwrap();
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    assert_eq!(repairs[0]["series_compared"], 30, "{repairs:?}");
    assert_eq!(repairs[0]["series_differing"], 10, "{repairs:?}");
    assert_eq!(repairs[0]["bars_pulled"], 10_000, "{repairs:?}");
    assert_equal(&verify(&m2, "b").await);
    // A brand-new replica of the new master gets the bars that predate its journal.
    let c = replica(dir.path(), "c", m2.port, "").await;
    c.wait_in_sync(&m2, SYNC).await.unwrap();
    let repairs = c.repairs().await.unwrap();
    assert!(
        repairs[0]["reason"]
            .as_str()
            .unwrap()
            .contains("before its journal began"),
        "{repairs:?}"
    );
    assert_eq!(repairs[0]["bars_pulled"], 30_000, "{repairs:?}");
    assert_equal(&verify(&m2, "c").await);
}
