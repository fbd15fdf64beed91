//! [`InfluxServer`]: a real `influxd` (InfluxDB 1.x, Debian package `influxdb`) on a free
//! loopback port, for tests of the master's InfluxDB store.
//!
//! It runs with a generated config (reporting disabled, logging quiet) and its data in a
//! temporary directory, under a small shell watchdog that stops it once the test process is
//! gone, and a janitor removes the directory then: a test that panics or is killed leaves no
//! server and no data behind.
//! [`InfluxServer::stop`] and [`InfluxServer::start_again`] take the server down and bring it
//! back on the same port with the same data, as an outage of the store would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{Check, free_port, wait_until};

/// How long `influxd` may take from spawn to answering `/ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `influxd` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The watchdog of one run: runs influxd (config `$1`, output appended to `$2`), prints its
/// pid and keeps it in `$4/influxd.pid`; once influxd or the test process (`$3`) is gone,
/// stops influxd.
const WATCHDOG: &str = r#"influxd -config "$1" >>"$2" 2>&1 & child=$!
echo "$child" >"$4/influxd.pid"; echo "$child"
while kill -0 "$3" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.2; done
kill "$child" 2>/dev/null; wait "$child" 2>/dev/null"#;

/// The janitor, for the server's whole life, stopped or running: once the test process (`$1`)
/// is gone, waits (up to 30 s) for the last influxd (its pid in `$2/influxd.pid`) to be gone,
/// then removes the data directory `$2`.
const JANITOR: &str = r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
n=0
while [ "$n" -lt 150 ] && kill -0 "$(cat "$2/influxd.pid" 2>/dev/null)" 2>/dev/null; do
  sleep 0.2; n=$((n + 1))
done
rm -rf "$2""#;

/// A running (or stopped) `influxd`; stopped, and its data removed, when dropped.
#[derive(Debug)]
pub struct InfluxServer {
    /// The HTTP port on loopback; the same across [`InfluxServer::start_again`].
    pub port: u16,
    dir: tempfile::TempDir,
    running: Option<Running>,
    /// Removes the data directory if the test process dies without dropping this.
    janitor: Child,
    client: reqwest::Client,
}

/// The processes of a running server.
#[derive(Debug)]
struct Running {
    watchdog: Child,
    influxd: Pid,
}

impl InfluxServer {
    /// Starts `influxd` on a free loopback port with an empty data directory; returns once
    /// `/ping` answers. Fails if `influxd` is not installed, exits, or does not answer within
    /// 30 s (with its output).
    pub async fn start() -> Result<InfluxServer> {
        let found = Command::new("influxd")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            bail!(
                "`influxd` is not installed: install the InfluxDB 1.x server, Debian package \
                 `influxdb` (`apt-get install -y influxdb influxdb-client`, or run \
                 scripts/test.sh, which does)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("dms-e2e-influxd-")
            .tempdir()?;
        let (port, rpc_port) = (free_port(), free_port());
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "error"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"#,
            dir = dir.path().display()
        );
        std::fs::write(dir.path().join("influxdb.conf"), config)?;
        let janitor = Command::new("sh")
            .args(["-c", JANITOR, "influxd-janitor"])
            .arg(std::process::id().to_string())
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .context("start the influxd janitor")?;
        let mut server = InfluxServer {
            port,
            dir,
            running: None,
            janitor,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// Starts `influxd` again after [`InfluxServer::stop`], on the same port with the same data;
    /// returns once `/ping` answers.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.running.is_some() {
            bail!("influxd is already running");
        }
        let mut watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "influxd-watchdog"])
            .arg(self.dir.path().join("influxdb.conf"))
            .arg(self.log_path())
            .arg(std::process::id().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the influxd watchdog")?;
        let mut line = String::new();
        let read =
            BufReader::new(watchdog.stdout.take().expect("piped stdout")).read_line(&mut line);
        let influxd = match read.map(|_| line.trim().parse()) {
            Ok(Ok(pid)) => Pid::from_raw(pid),
            _ => {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                bail!("influxd did not start: its watchdog printed {line:?} for its pid");
            }
        };
        self.running = Some(Running { watchdog, influxd });
        let ping = self.url_of("/ping");
        let (client, running) = (&self.client, &mut self.running);
        let ready = wait_until("influxd to answer /ping", READY_TIMEOUT, async || {
            let watchdog = &mut running.as_mut().expect("started").watchdog;
            if let Some(status) = watchdog.try_wait()? {
                bail!("influxd exited before it answered /ping (watchdog {status})");
            }
            Ok(match client.get(&ping).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => Check::Ready(()),
                Ok(r) => Check::Waiting(format!("/ping answered {}", r.status())),
                Err(e) => Check::Waiting(format!("/ping: {e}")),
            })
        })
        .await;
        if let Err(e) = ready {
            self.kill();
            return Err(self.with_log(&e));
        }
        Ok(())
    }

    /// Stops `influxd` with SIGTERM and waits until it has exited; the data stays for
    /// [`InfluxServer::start_again`]. Fails (after killing it) if it still runs after 30 s.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(running) = self.running.as_mut() else {
            bail!("influxd is not running");
        };
        kill(running.influxd, Signal::SIGTERM).context("SIGTERM influxd")?;
        // The watchdog exits once influxd has.
        let watchdog = &mut running.watchdog;
        let stopped = wait_until("influxd to exit after SIGTERM", STOP_TIMEOUT, async || {
            Ok(match watchdog.try_wait()? {
                Some(_) => Check::Ready(()),
                None => Check::Waiting("influxd still running".into()),
            })
        })
        .await;
        if let Err(e) = stopped {
            self.kill();
            return Err(self.with_log(&e));
        }
        self.running = None;
        Ok(())
    }

    /// Whether `influxd` was started and not stopped since.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The base URL, `http://127.0.0.1:PORT`, for a store's `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// Runs InfluxQL against `database` over HTTP (`GET /query?db=…&q=…`, times as epoch
    /// seconds); returns the JSON answer. Fails on an HTTP error or a statement that failed.
    pub async fn query(&self, database: &str, influxql: &str) -> Result<Value> {
        let r = self
            .client
            .get(self.url_of("/query"))
            .query(&[("db", database), ("epoch", "s"), ("q", influxql)])
            .send()
            .await
            .with_context(|| format!("InfluxQL {influxql:?}"))?;
        let code = r.status();
        let text = r.text().await?;
        if !code.is_success() {
            bail!("InfluxQL {influxql:?} answered {code}: {text}");
        }
        let body: Value = serde_json::from_str(&text)
            .with_context(|| format!("InfluxQL {influxql:?} answered {text:?}"))?;
        let failed = body["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|r| r["error"].as_str());
        if let Some(error) = failed {
            bail!("InfluxQL {influxql:?} failed: {error}");
        }
        Ok(body)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// influxd's output so far (errors only).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// SIGKILL to influxd, then waits for its watchdog.
    fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = kill(running.influxd, Signal::SIGKILL);
            let _ = running.watchdog.wait();
        }
    }

    fn with_log(&self, e: &anyhow::Error) -> anyhow::Error {
        anyhow!(
            "{e:#}\n--- influxd output ({}) ---\n{}",
            self.log_path().display(),
            self.log_text()
        )
    }
}

impl Drop for InfluxServer {
    fn drop(&mut self) {
        self.kill();
        let _ = self.janitor.kill();
        let _ = self.janitor.wait();
    }
}
