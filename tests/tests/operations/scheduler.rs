//! The scheduler in a real master: a job whose cron is shortened to every two seconds (6-field
//! cron) runs its update over the sample data by itself; pause, resume and trigger over REST;
//! a fire while the job's task still waits is recorded as an overlap; a `verify_replicas` job
//! verifies a real replica.

use std::time::Duration;

use anyhow::{Result, bail};
use dms_e2e::provider::FakeYahoo;
use dms_e2e::{Check, MasterProcess, ReplicaProcess, copy_sample_data, replica_config};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The sample CSV source and a schedule `sample-update` (an update of its series every two
/// seconds), plus `extra` appended (sources, watchlists, schedule keys).
fn config(schedule_extra: &str, extra: &str) -> String {
    format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
sources:
  - type: csv
    name: sample
    dir: ./sample-data
    files:
      EURUSD.csv: {{symbol: EURUSD=X, interval: 1h}}
      BTCUSD.csv: {{symbol: BTC-USD, interval: 1mo}}
{extra}
schedules:
  - name: sample-update
    cron: '*/2 * * * * *'
    timezone: America/New_York
    kind: update
    source: sample
{schedule_extra}
"
    )
}

async fn schedule(master: &MasterProcess, name: &str) -> Result<Value> {
    let (code, body) = master.get(&format!("/api/schedules/{name}")).await?;
    if code != 200 || body["success"] != true {
        bail!("GET /api/schedules/{name} answered {code}: {body}");
    }
    Ok(body["data"].clone())
}

/// Waits until schedule `name` records a run that `wanted` accepts (newest runs first);
/// returns it.
async fn wait_run(
    master: &MasterProcess,
    name: &str,
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    master
        .wait_until(what, WAIT, async || {
            let s = schedule(master, name).await?;
            let runs = s["recent_runs"].as_array().cloned().unwrap_or_default();
            Ok(match runs.into_iter().find(|r| wanted(r)) {
                Some(run) => Check::Ready(run),
                None => Check::Waiting(s["recent_runs"].to_string()),
            })
        })
        .await
        .unwrap()
}

async fn post(master: &MasterProcess, path: &str) -> Value {
    let (code, body) = master.post(path, "").await.unwrap();
    assert_eq!(code, 200, "POST {path}: {body}");
    assert_eq!(body["success"], true, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_update_runs_by_itself_and_pause_resume_and_trigger_control_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &config("", ""))
        .await
        .unwrap();
    master.wait_imported(WAIT).await.unwrap();

    // By itself: a run that queued a task, and the task completes writing nothing (the files
    // did not change).
    let run = wait_run(
        &master,
        "sample-update",
        "a scheduled run to queue a task",
        |r| r["outcome"] == "started" && r["trigger"] == "schedule",
    )
    .await;
    let task_id = run["task_id"].as_str().unwrap().to_owned();
    let task = master.wait_task(&task_id, WAIT).await.unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["task_name"], "schedule sample-update", "{task}");
    assert_eq!(task["kind"], "incremental_update", "{task}");
    assert_eq!(task["counters"]["series_total"], 3, "{task}");
    assert_eq!(task["counters"]["bars_written"], 0, "{task}");
    let run = wait_run(
        &master,
        "sample-update",
        "the run to show its task completed",
        |r| r["task_id"] == task_id.as_str() && r["task_status"] == "completed",
    )
    .await;
    assert_eq!(run["outcome"], "started", "{run}");

    // The list shows the last run and the next fires, two seconds apart, with their offset.
    let (code, list) = master.get("/api/schedules").await.unwrap();
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["count"], 1, "{list}");
    let s = &list["data"][0];
    assert_eq!(
        (&s["name"], &s["kind"], &s["timezone"], &s["paused"]),
        (
            &Value::from("sample-update"),
            &Value::from("update"),
            &Value::from("America/New_York"),
            &Value::from(false)
        ),
        "{s}"
    );
    assert!(s["last_run"]["outcome"].is_string(), "{s}");
    let fires: Vec<chrono::DateTime<chrono::FixedOffset>> = s["next_fires"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| chrono::DateTime::parse_from_rfc3339(f.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(fires.len(), 5, "{s}");
    assert!(
        fires.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 2),
        "{s}"
    );
    assert!(
        [-4 * 3600, -5 * 3600].contains(&fires[0].offset().local_minus_utc()),
        "{s}"
    );

    // Paused: no fires while paused.
    let paused = post(&master, "/api/schedules/sample-update/pause").await;
    assert_eq!(paused["data"]["paused"], true, "{paused}");
    assert_eq!(
        paused["data"]["next_fires"],
        Value::Array(vec![]),
        "{paused}"
    );
    let newest = schedule(&master, "sample-update").await.unwrap()["recent_runs"][0].clone();
    // An absence cannot be awaited: let three fire times pass.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let after = schedule(&master, "sample-update").await.unwrap();
    assert_eq!(
        after["recent_runs"][0], newest,
        "a paused schedule ran: {after}"
    );
    assert_eq!(after["paused"], true);

    // Trigger runs it now, paused or not.
    let triggered = post(&master, "/api/schedules/sample-update/trigger").await;
    assert_eq!(triggered["data"]["trigger"], "manual", "{triggered}");
    assert_eq!(triggered["data"]["outcome"], "started", "{triggered}");
    let manual_task = triggered["task_id"].as_str().unwrap().to_owned();
    let task = master.wait_task(&manual_task, WAIT).await.unwrap();
    assert_eq!(task["status"], "completed", "{task}");

    // Resumed: it fires again by itself.
    let resumed = post(&master, "/api/schedules/sample-update/resume").await;
    assert_eq!(resumed["data"]["paused"], false, "{resumed}");
    let run = wait_run(
        &master,
        "sample-update",
        "a scheduled run after resume",
        |r| {
            r["trigger"] == "schedule"
                && r["started_at"].as_str() > triggered["data"]["started_at"].as_str()
        },
    )
    .await;
    assert!(
        ["started", "skipped_overlap"].contains(&run["outcome"].as_str().unwrap()),
        "{run}"
    );

    // Unknown schedules are 404 naming them.
    let (code, body) = master.get("/api/schedules/nope").await.unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
    let (code, body) = master
        .post("/api/schedules/nope/trigger", "")
        .await
        .unwrap();
    assert_eq!(code, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_while_the_jobs_task_still_waits_is_skipped_as_overlap() {
    // A slow provider keeps a long import running, so the scheduled update waits behind it.
    let yahoo = FakeYahoo::start(true, Duration::from_millis(100)).await;
    let symbols: Vec<String> = (0..300).map(|i| format!("W{i:03}")).collect();
    let extra = format!(
        "
  - type: yahoo
    name: gen
    base_url: {}
    requests_per_second: 1000
    max_concurrency: 1
watchlists:
  - {{name: slow, source: gen, calendar: nyse, symbols: [{}]}}
tasks:
  concurrency: 1
",
        yahoo.base_url(),
        symbols.join(", ")
    );
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    // `enabled: false`: the job starts paused.
    let master = MasterProcess::start(dir.path(), &config("    enabled: false", &extra))
        .await
        .unwrap();
    master.wait_imported(WAIT).await.unwrap();
    assert_eq!(
        schedule(&master, "sample-update").await.unwrap()["paused"],
        true
    );
    let (code, body) = master
        .post(
            "/api/data/import",
            r#"{"source": "gen", "start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let import = body["task_id"].as_str().unwrap().to_owned();
    master
        .wait_until("the import to run", WAIT, async || {
            let t = master.task(&import).await?;
            Ok(if t["status"] == "running" {
                Check::Ready(())
            } else {
                Check::Waiting(t.to_string())
            })
        })
        .await
        .unwrap();

    post(&master, "/api/schedules/sample-update/resume").await;
    let started = wait_run(&master, "sample-update", "a run to queue its task", |r| {
        r["outcome"] == "started"
    })
    .await;
    let waiting = started["task_id"].as_str().unwrap().to_owned();
    let overlap = wait_run(&master, "sample-update", "a fire to overlap", |r| {
        r["outcome"] == "skipped_overlap"
    })
    .await;
    assert_eq!(overlap["task_id"], waiting.as_str(), "{overlap}");
    assert!(
        overlap["message"]
            .as_str()
            .unwrap()
            .contains("still pending"),
        "{overlap}"
    );
    assert_eq!(master.task(&waiting).await.unwrap()["status"], "pending");

    // Once the import is cancelled the scheduled task runs to completion.
    let (code, body) = master
        .post(&format!("/api/data/tasks/{import}/cancel"), "")
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let task = master.wait_task(&waiting, WAIT).await.unwrap();
    assert_eq!(task["status"], "completed", "{task}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_replicas_job_verifies_the_connected_replicas() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let jobs = "    enabled: false
  - {name: verify-all, cron: '*/2 * * * * *', kind: verify_replicas}
  - {name: verify-ghost, cron: '*/2 * * * * *', kind: verify_replicas, nodes: [ghost]}
";
    let master = MasterProcess::start(dir.path(), &config(jobs, ""))
        .await
        .unwrap();
    master.wait_imported(WAIT).await.unwrap();
    let run = wait_run(&master, "verify-all", "a verify with no replica", |r| {
        r["outcome"] == "completed"
    })
    .await;
    assert_eq!(run["message"], "no replica is connected", "{run}");
    let run = wait_run(
        &master,
        "verify-ghost",
        "a verify of an unknown node",
        |r| r["outcome"] == "failed",
    )
    .await;
    assert!(run["message"].as_str().unwrap().contains("ghost"), "{run}");

    let replica = ReplicaProcess::start(
        &dir.path().join("replica"),
        "replica-v",
        &replica_config("replica-v", master.port, ""),
    )
    .await
    .unwrap();
    replica.wait_in_sync(&master, WAIT).await.unwrap();
    let run = wait_run(&master, "verify-all", "a verify of the replica", |r| {
        r["message"] == "equal: replica-v"
    })
    .await;
    assert_eq!(run["outcome"], "completed", "{run}");
    assert_eq!(run["task_id"], Value::Null, "{run}");
}
