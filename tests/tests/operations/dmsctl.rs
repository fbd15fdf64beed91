//! `dmsctl` and the admin gRPC service as an operator uses them: the real `dmsctl` binary
//! against a real master (and a replica) over loopback.

use std::path::Path;
use std::time::Duration;

use dms_common::pb;
use dms_common::pb::admin_client::AdminClient;
use dms_e2e::{
    CtlOutput, Dmsctl, MasterProcess, ReplicaProcess, SAMPLE_SOURCE, copy_sample_data, free_port,
    master_config, replica_config, write_daily_csvs,
};

const SYNC: Duration = Duration::from_secs(120);

async fn sample_master(dir: &Path, extra: &str) -> MasterProcess {
    sample_master_with_token(dir, extra, None).await
}

/// [`sample_master`] driven with `token` (a master with `auth` answers nothing else without
/// one).
async fn sample_master_with_token(dir: &Path, extra: &str, token: Option<&str>) -> MasterProcess {
    copy_sample_data(&dir.join("sample-data"));
    let config = master_config(&format!("{SAMPLE_SOURCE}{extra}"));
    let master = MasterProcess::start_with(dir, &config, free_port(), |c| match token {
        Some(t) => c.token(t),
        None => c,
    })
    .await
    .unwrap();
    master.wait_imported(SYNC).await.unwrap();
    master
}

fn endpoint(master: &MasterProcess) -> String {
    format!("http://127.0.0.1:{}", master.port)
}

/// The run failed with exactly one line on stderr, and no panic or backtrace.
fn one_error_line(out: &CtlOutput) -> &str {
    assert_ne!(out.code, 0, "{out:?}");
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "one line expected: {out:?}");
    assert!(err.starts_with("error: "), "{out:?}");
    assert!(!err.contains("panicked"), "{out:?}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsctl_runs_tasks_and_shows_status_nodes_and_their_history() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample_master(dir.path(), "").await;
    let replica = ReplicaProcess::start(
        &dir.path().join("replica-1"),
        "replica-1",
        &replica_config("replica-1", master.port, ""),
    )
    .await
    .unwrap();
    let ctl = Dmsctl::new(&endpoint(&master));

    // An update followed to its end: progress on stderr, the outcome on stdout, exit 0.
    let out = ctl
        .run(&["task", "start", "update", "--only-existing", "--follow"])
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("queued as incremental_update-"),
        "{out:?}"
    );
    assert!(out.stderr.contains("series 3/3"), "{out:?}");
    assert!(out.stderr.contains("bars/s"), "{out:?}");
    let id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("task"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_else(|| panic!("no task line: {out:?}"));
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("status") && l.ends_with("completed")),
        "{out:?}"
    );
    assert_eq!(master.task(&id).await.unwrap()["status"], "completed");

    // The task list as JSON parses and holds that task as the REST API reports it.
    let out = ctl.run(&["task", "list", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let tasks = out.json();
    let task = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {tasks}"))
        .clone();
    assert_eq!(task["status"], "completed");
    assert_eq!(task["kind"], "update");
    assert_eq!(task["counters"]["series_done"], 3);
    assert_eq!(task["params"]["only_existing"], true);

    // `task get` of the same task as JSON.
    let out = ctl.run(&["-o", "json", "task", "get", &id]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["task_id"], id.as_str());

    // The data status: the same figures as the REST API.
    let out = ctl.run(&["status", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let status = out.json();
    let rest = master.status().await.unwrap();
    assert_eq!(status["total_records"], rest["total_records"]);
    assert_eq!(status["total_series"], 3);
    assert_eq!(status["earliest_date"], rest["earliest_date"]);
    assert_eq!(status["journal"]["head"], rest["journal"]["head"]);
    assert_eq!(status["store"], "sqlite");

    // The replica, its lag and state, its history, and a verify that finds it equal.
    replica.wait_in_sync(&master, SYNC).await.unwrap();
    let out = ctl.run(&["nodes"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let header = out.stdout.lines().next().unwrap();
    for column in ["NODE", "STATE", "LAG SEQ", "LAG SECONDS"] {
        assert!(header.contains(column), "{out:?}");
    }
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("replica-1 "))
        .unwrap_or_else(|| panic!("replica-1 not listed: {out:?}"));
    assert!(row.contains("in_sync"), "{row}");

    let out = ctl.run(&["nodes", "history", "replica-1"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("SESSION"), "{out:?}");
    assert!(out.stdout.lines().count() >= 2, "a session row: {out:?}");
    let out = ctl
        .run(&["nodes", "history", "replica-1", "-o", "json"])
        .await
        .unwrap();
    let history = out.json();
    assert_eq!(history["node_id"], "replica-1");
    let session = &history["sessions"][0];
    assert!(session["connected_ms"].as_i64().unwrap() > 0, "{history}");

    let out = ctl.run(&["nodes", "verify", "replica-1"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("replica-1: equal"), "{out:?}");
    let out = ctl
        .run(&["nodes", "verify", "replica-1", "-o", "json"])
        .await
        .unwrap();
    let report = out.json();
    assert_eq!(report["equal"], true, "{report}");
    assert_eq!(report["series_total"], 3);

    // Refusals are one line: an unknown task, a parameter that does not fit the kind (the
    // REST API's message, exit status 2), a replica that is not known.
    let out = ctl.run(&["task", "get", "no-such-task"]).await.unwrap();
    assert_eq!(out.code, 1);
    assert!(
        one_error_line(&out).contains("no task \"no-such-task\""),
        "{out:?}"
    );
    let out = ctl
        .run(&["task", "start", "import", "--days", "3"])
        .await
        .unwrap();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        one_error_line(&out).contains("field `days` does not apply to a full import"),
        "{out:?}"
    );
    let (code, body) = master
        .post("/api/data/import", r#"{"days": 3}"#)
        .await
        .unwrap();
    assert_eq!(code, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("field `days` does not apply to a full import"),
        "{body}"
    );
    let out = ctl.run(&["nodes", "get", "nobody"]).await.unwrap();
    assert!(
        one_error_line(&out).contains("no replica named \"nobody\""),
        "{out:?}"
    );
    // A bad argument is clap's usage error, status 2.
    let out = ctl.run(&["task", "start", "everything"]).await.unwrap();
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsctl_names_an_unreachable_master_in_one_line() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let out = Dmsctl::new(&endpoint).run(&["status"]).await.unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    let line = one_error_line(&out);
    assert!(
        line.contains(&format!("cannot reach the master at {endpoint}")),
        "{line}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsctl_lists_triggers_pauses_and_resumes_schedules() {
    let dir = tempfile::tempdir().unwrap();
    // Starts paused; fires only when triggered here (its cron is daily).
    let schedule = "
schedules:
  - name: nightly
    cron: '0 18 * * *'
    timezone: America/New_York
    kind: update
    source: sample
    enabled: false
";
    let master = sample_master(dir.path(), schedule).await;
    let ctl = Dmsctl::new(&endpoint(&master));

    let list = ctl.run(&["schedules", "list", "-o", "json"]).await.unwrap();
    assert_eq!(list.code, 0, "{list:?}");
    let all = list.json()["schedules"].as_array().cloned().unwrap();
    assert_eq!(all.len(), 1, "{list:?}");
    assert_eq!(all[0]["name"], "nightly");
    assert_eq!(all[0]["paused"], true);
    assert_eq!(all[0]["timezone"], "America/New_York");

    let resumed = ctl
        .run(&["schedules", "resume", "nightly", "-o", "json"])
        .await
        .unwrap();
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let resumed = resumed.json();
    assert_eq!(resumed["paused"], false);
    let fires = resumed["next_fires_ms"].as_array().unwrap();
    assert!(!fires.is_empty(), "{resumed}");
    // Every next fire is 18:00 in New York.
    for f in fires {
        let at = chrono::DateTime::from_timestamp_millis(f.as_i64().unwrap()).unwrap();
        let local = at.with_timezone(&chrono_tz::America::New_York);
        assert_eq!(local.format("%H:%M").to_string(), "18:00", "{resumed}");
    }

    // Triggered now and followed to the end: the task's outcome is the exit status.
    let run = ctl
        .run(&["schedules", "trigger", "nightly", "--follow"])
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("nightly: started (task "), "{run:?}");
    assert!(run.stdout.contains("completed"), "{run:?}");

    let paused = ctl.run(&["schedules", "pause", "nightly"]).await.unwrap();
    assert_eq!(paused.code, 0, "{paused:?}");
    assert!(paused.stdout.contains("nightly"), "{paused:?}");
    let table = ctl.run(&["schedules", "list"]).await.unwrap();
    assert!(
        table.stdout.contains("started"),
        "the last run is shown: {table:?}"
    );
    let listed = ctl
        .run(&["schedules", "list", "-o", "json"])
        .await
        .unwrap()
        .json();
    assert_eq!(listed["schedules"][0]["paused"], true);
    assert_eq!(listed["schedules"][0]["last_run"]["outcome"], "started");

    // The REST view agrees with what dmsctl did.
    let (code, body) = master.get("/api/schedules/nightly").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["paused"], true);
    assert_eq!(body["data"]["last_run"]["trigger"], "manual", "{body}");

    let unknown = ctl.run(&["schedules", "trigger", "weekly"]).await.unwrap();
    let line = one_error_line(&unknown);
    assert!(line.contains("weekly"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmsctl_needs_the_token_and_a_read_only_token_cannot_start_tasks() {
    let dir = tempfile::tempdir().unwrap();
    const READ_ONLY: &str = "read-only-token-0123456789abcdef0123456789";
    std::fs::write(
        dir.path().join("admin.token"),
        "full-secret-token-0123456789abcdef0123456789\n",
    )
    .unwrap();
    let auth = format!(
        "
auth:
  token_file: ./admin.token
  read_only:
    token: {READ_ONLY}
"
    );
    // The REST helpers read with the read-only token.
    let master = sample_master_with_token(dir.path(), &auth, Some(READ_ONLY)).await;
    let ctl = Dmsctl::new(&endpoint(&master));

    // No token: one clear line, nothing else.
    let out = ctl.run(&["task", "list"]).await.unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    let line = one_error_line(&out);
    assert!(line.contains("a bearer token is required"), "{line}");
    assert!(line.contains("--token"), "{line}");
    // A wrong token is refused, and not echoed.
    let out = ctl.run(&["--token", "guess", "status"]).await.unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    let line = one_error_line(&out);
    assert!(line.contains("not valid"), "{line}");
    // A token file that cannot be read is a usage error (2), named.
    let out = ctl
        .run(&["--token-file", "/nonexistent/admin.token", "status"])
        .await
        .unwrap();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        one_error_line(&out).contains("/nonexistent/admin.token"),
        "{out:?}"
    );
    assert!(!line.contains("guess"), "{line}");

    // The read-only token reads, and cannot start a task.
    let reader = ctl.clone().env("DMS_TOKEN", READ_ONLY);
    let out = reader.run(&["task", "list", "-o", "json"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.json()["tasks"].is_array());
    let out = reader.run(&["task", "start", "update"]).await.unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    let line = one_error_line(&out);
    assert!(line.starts_with("error: permission denied"), "{line}");
    assert!(line.contains("read-only"), "{line}");
    let (_, tasks) = master.get("/api/data/tasks").await.unwrap();
    let started = |tasks: &serde_json::Value| {
        tasks["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"] != "source_import")
            .count()
    };
    assert_eq!(started(&tasks), 0, "nothing was started: {tasks}");
    // An export is a read: the read-only token may make one; no token may not.
    let file = dir.path().join("goog.csv");
    let file = file.to_str().unwrap();
    let out = reader
        .run(&["export", "-o", file, "-s", "GOOG"])
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let csv = std::fs::read_to_string(file).unwrap();
    assert!(csv.starts_with("symbol,interval,ts,"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + 2148);
    std::fs::remove_file(file).unwrap();
    let out = ctl
        .run(&["export", "-o", file, "-s", "GOOG"])
        .await
        .unwrap();
    assert!(
        one_error_line(&out).contains("a bearer token is required"),
        "{out:?}"
    );
    assert!(!std::path::Path::new(file).exists());

    // The full token from a file starts one.
    let token_file = dir.path().join("admin.token");
    let writer = ctl
        .clone()
        .env("DMS_TOKEN_FILE", token_file.to_str().unwrap());
    let out = writer
        .run(&["task", "start", "update", "--only-existing", "--follow"])
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let (_, tasks) = master.get("/api/data/tasks").await.unwrap();
    assert_eq!(started(&tasks), 1, "{tasks}");
}

/// A gRPC admin client of `master` (no token).
async fn admin(master: &MasterProcess) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(endpoint(master)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_task_streams_progress_and_ends_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    write_daily_csvs(&dir.path().join("gen"), 60, 400);
    let source = "
sources:
  - type: csv
    name: gen
    dir: ./gen
    interval: 1d
    import_on_start: false
tasks:
  concurrency: 2
";
    let master = MasterProcess::start(dir.path(), &master_config(source))
        .await
        .unwrap();
    let mut client = admin(&master).await;
    let task = client
        .start_task(pb::StartTaskRequest {
            kind: pb::TaskKind::Import.into(),
            params: Some(pb::TaskParams {
                start_date: Some("2000-01-01".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(task.status, i32::from(pb::TaskStatus::Pending));

    let mut stream = client
        .watch_task(pb::WatchTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(SYNC, async {
        while let Some(t) = stream.message().await.unwrap() {
            seen.push(t);
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end: {seen:?}");
    let last = seen.last().expect("at least one snapshot");
    assert_eq!(
        last.status,
        i32::from(pb::TaskStatus::Completed),
        "{last:?}"
    );
    let counters = last.counters.clone().unwrap();
    assert_eq!(counters.series_done, 60);
    assert_eq!(counters.bars_written, 60 * 400);
    assert!(seen.len() >= 2, "progress before the end: {seen:?}");
    let done: Vec<u64> = seen
        .iter()
        .map(|t| t.counters.clone().unwrap_or_default().series_done)
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|t| t.status != i32::from(pb::TaskStatus::Completed)),
        "only the last snapshot is final"
    );

    // A watch of a task that already ended sends it once and ends.
    let mut stream = client
        .watch_task(pb::WatchTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let only = stream.message().await.unwrap().unwrap();
    assert_eq!(only.status, i32::from(pb::TaskStatus::Completed));
    assert!(stream.message().await.unwrap().is_none());

    // Errors carry their gRPC codes.
    let e = client
        .watch_task(pb::WatchTaskRequest {
            task_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = client
        .cancel_task(pb::CancelTaskRequest {
            task_id: task.task_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    let e = client
        .start_task(pb::StartTaskRequest {
            kind: pb::TaskKind::Update.into(),
            params: Some(pb::TaskParams {
                limit: Some(0),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("field `limit`"), "{e:?}");
    // No schedules configured: an empty list, and an unknown one is NotFound by name.
    let list = client
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.schedules.is_empty(), "{list:?}");
    let e = client
        .trigger_schedule(pb::ScheduleRequest {
            name: "nightly".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nightly"), "{e:?}");
}
