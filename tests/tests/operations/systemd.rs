//! The daemons under a service manager: a notify socket the test binds plays systemd
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`), and the test checks READY (only once `/readyz`
//! answers), STATUS lines, watchdog pings and STOPPING on SIGTERM. Also: SIGTERM in the middle
//! of an import stops within the shutdown timeout, and after a restart the task resumes and
//! stores exactly what it should.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dms_e2e::provider::FakeYahoo;
use dms_e2e::{Check, MasterProcess, ReplicaProcess, free_port, replica_config, wait_until};
use nix::sys::signal::Signal;
use tokio::net::UnixDatagram;

use crate::tls::master_config;

const WAIT: Duration = Duration::from_secs(60);

/// One datagram the daemon sent, and for `READY=1`, whether `/readyz` answered 200 right
/// after it arrived.
#[derive(Debug, Clone)]
struct Message {
    text: String,
    readyz_after: Option<u16>,
}

/// A notify socket and everything received on it.
struct NotifySocket {
    path: std::path::PathBuf,
    received: Arc<Mutex<Vec<Message>>>,
}

impl NotifySocket {
    /// Binds `dir/notify.sock`; on each `READY=1`, asks `http://127.0.0.1:{port}/readyz` at
    /// once and records the answer.
    fn bind(dir: &Path, port: u16) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let received: Arc<Mutex<Vec<Message>>> = Arc::default();
        let log = received.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let readyz_after = if text.lines().any(|l| l == "READY=1") {
                    let url = format!("http://127.0.0.1:{port}/readyz");
                    Some(match client.get(url).send().await {
                        Ok(r) => r.status().as_u16(),
                        Err(_) => 0,
                    })
                } else {
                    None
                };
                log.lock().unwrap().push(Message { text, readyz_after });
            }
        });
        NotifySocket { path, received }
    }

    fn env(&self) -> [(&'static str, String); 2] {
        [
            ("NOTIFY_SOCKET", self.path.display().to_string()),
            ("WATCHDOG_USEC", "400000".to_owned()),
        ]
    }

    fn messages(&self) -> Vec<Message> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self, line: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.text.lines().any(|l| l == line))
            .count()
    }

    fn statuses(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| m.text.lines().map(str::to_owned).collect::<Vec<_>>())
            .filter_map(|l| l.strip_prefix("STATUS=").map(str::to_owned))
            .collect()
    }

    /// Waits until `line` has arrived at least `n` times.
    async fn wait_for(&self, line: &str, n: usize) {
        wait_until(&format!("{n} × {line}"), WAIT, async || {
            let seen = self.count(line);
            Ok(if seen >= n {
                Check::Ready(())
            } else {
                Check::Waiting(format!("{seen} so far; statuses {:?}", self.statuses()))
            })
        })
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_tells_systemd_it_is_ready_alive_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    let port = free_port();
    let notify = NotifySocket::bind(dir.path(), port);
    let env = notify.env();
    let mut master = MasterProcess::start_with(dir.path(), &master_config(""), port, |c| {
        c.envs(&[(env[0].0, &env[0].1), (env[1].0, &env[1].1)])
    })
    .await
    .unwrap();
    notify.wait_for("READY=1", 1).await;
    let ready: Vec<_> = notify
        .messages()
        .into_iter()
        .filter_map(|m| m.readyz_after)
        .collect();
    assert_eq!(ready, vec![200], "READY=1 once, with /readyz answering");
    // Watchdog pings keep coming (every 200 ms for a 400 ms watchdog).
    let before = notify.count("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1", before + 5).await;
    master.wait_imported(WAIT).await.unwrap();
    // What it did, in order: opening the state, importing (unless the import was over before
    // READY), then ready with the number of series.
    wait_until("the final status line", WAIT, async || {
        let statuses = notify.statuses();
        Ok(match statuses.last() {
            Some(s) if s == "ready: 3 series" => Check::Ready(()),
            _ => Check::Waiting(format!("{statuses:?}")),
        })
    })
    .await
    .unwrap();
    let statuses = notify.statuses();
    assert!(statuses[0].starts_with("starting"), "{statuses:?}");
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("importing from source sample")),
        "{statuses:?}"
    );

    let (exit, took) = master.stop(Signal::SIGTERM, WAIT).unwrap();
    assert!(exit.success(), "{exit}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    notify.wait_for("STOPPING=1", 1).await;
    assert!(notify.statuses().contains(&"shutting down".to_owned()));
    assert_eq!(notify.count("READY=1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reload_is_reported_to_systemd_and_a_bad_config_keeps_the_old_settings() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    let port = free_port();
    let notify = NotifySocket::bind(dir.path(), port);
    let env = notify.env();
    let master = MasterProcess::start_with(dir.path(), &master_config(""), port, |c| {
        c.envs(&[(env[0].0, &env[0].1)])
    })
    .await
    .unwrap();
    notify.wait_for("READY=1", 1).await;
    let config_file = dir.path().join("dms-master.yaml");
    let good = std::fs::read_to_string(&config_file).unwrap();

    // A schedule added along with a bad value: nothing of it is applied.
    let schedule = "schedules: [{name: nightly, cron: '0 18 * * *', timezone: America/New_York, kind: update, source: sample, enabled: false}]\n";
    let schedules = async || {
        let (code, body) = master.get("/api/schedules").await.unwrap();
        assert_eq!(code, 200, "{body}");
        body["count"].as_u64().unwrap()
    };
    assert_eq!(schedules().await, 0);
    std::fs::write(
        &config_file,
        format!("{good}shutdown_timeout: 0s\n{schedule}"),
    )
    .unwrap();
    master.reload().unwrap();
    notify.wait_for("RELOADING=1", 1).await;
    notify.wait_for("READY=1", 2).await;
    let log = master.log_text();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("shutdown_timeout"), "{log}");
    assert_eq!(
        schedules().await,
        0,
        "a refused reload applied its schedule"
    );

    // A good file: the schedule is applied at run time, the rest waits for a restart.
    std::fs::write(
        &config_file,
        format!("{good}shutdown_timeout: 9s\n{schedule}"),
    )
    .unwrap();
    master.reload().unwrap();
    notify.wait_for("READY=1", 3).await;
    assert_eq!(schedules().await, 1);
    let log = master.log_text();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        log.contains("takes effect only after a restart") && log.contains("shutdown_timeout"),
        "{log}"
    );
    let (code, _) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_tells_systemd_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    dms_e2e::copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(""))
        .await
        .unwrap();
    let port = free_port();
    let rdir = dir.path().join("replica");
    std::fs::create_dir_all(&rdir).unwrap();
    let notify = NotifySocket::bind(&rdir, port);
    let env = notify.env();
    let mut replica = ReplicaProcess::start_with(
        &rdir,
        "r1",
        &replica_config("r1", master.port, ""),
        port,
        |c| c.envs(&[(env[0].0, &env[0].1), (env[1].0, &env[1].1)]),
    )
    .await
    .unwrap();
    notify.wait_for("READY=1", 1).await;
    let before = notify.count("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1", before + 3).await;
    replica.wait_in_sync(&master, WAIT).await.unwrap();
    let statuses = notify.statuses();
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("ready: following the master")),
        "{statuses:?}"
    );
    let (exit, _) = replica.stop(Signal::SIGTERM, WAIT).unwrap();
    assert!(exit.success(), "{exit}");
    notify.wait_for("STOPPING=1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_import_stops_in_time_and_the_task_resumes_exactly() {
    let yahoo = FakeYahoo::start(true, Duration::from_millis(100)).await;
    let symbols: Vec<String> = (0..300).map(|i| format!("T{i:03}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "
http: {{listen: '127.0.0.1:{{port}}'}}
shutdown_timeout: 3s
sources:
  - type: yahoo
    name: gen
    base_url: {}
    request_timeout: 2s
    min_retry_delay: 20ms
    max_retries: 1
    requests_per_second: 1000
    max_concurrency: 4
watchlists:
  - name: all
    source: gen
    calendar: nyse
    symbols: [{}]
tasks:
  concurrency: 4
",
        yahoo.base_url(),
        symbols.join(", ")
    );
    let mut master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let (code, answer) = master
        .post(
            "/api/data/import",
            r#"{"start_date": "2024-01-01", "end_date": "2024-04-01"}"#,
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{answer}");
    let id = answer["task_id"].as_str().unwrap().to_owned();
    master.wait_series_done(&id, 100, WAIT).await.unwrap();

    let (exit, took) = master.stop(Signal::SIGTERM, WAIT).unwrap();
    assert!(exit.success(), "{exit}\n{}", master.log_text());
    assert!(
        took < Duration::from_secs(3) + Duration::from_millis(1500),
        "stopped in {took:?}, shutdown_timeout is 3s"
    );
    let log = master.log_text();
    assert!(log.contains("shutdown complete"), "{log}");
    let fetched: u64 = yahoo.all_requests().values().sum();
    assert!(fetched < 300, "stopped halfway: {fetched} requests");

    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let task = master.wait_task(&id, WAIT * 2).await.unwrap();
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["counters"]["series_failed"], 0, "{task}");
    let status = master.wait_applied(WAIT).await.unwrap();
    // Every symbol stored whole and once: 2024-01-01..2024-04-01 has 65 weekdays.
    assert_eq!(status["total_series"], 300, "{status}");
    assert_eq!(status["total_records"], 300 * 65, "{status}");
    assert_eq!(yahoo.all_requests().len(), 300);
}
