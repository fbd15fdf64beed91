//! [`MasterProcess`]: `dms-master` as a [`DaemonProcess`], with waits for what the master does
//! (tasks, start-up imports, applying the journal); [`run_master_command`] for its one-shot
//! commands.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::{Check, DaemonCommand, DaemonProcess, free_port, run_binary};

/// How long a one-shot `dms-master` command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `dms-master`. Everything a [`DaemonProcess`] offers (HTTP, signals, the log) is
/// reached through it.
#[derive(Debug)]
pub struct MasterProcess {
    daemon: DaemonProcess,
}

impl Deref for MasterProcess {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.daemon
    }
}

impl DerefMut for MasterProcess {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.daemon
    }
}

impl MasterProcess {
    /// Writes `config` (YAML; `{port}` is replaced by a free port) to `workdir/dms-master.yaml`
    /// and starts the master there; returns once `/readyz` answers 200.
    pub async fn start(workdir: &Path, config: &str) -> Result<MasterProcess> {
        Self::start_with_env(workdir, config, &[]).await
    }

    /// Like [`MasterProcess::start`], with extra environment variables.
    pub async fn start_with_env(
        workdir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<MasterProcess> {
        Self::start_on(workdir, config, env, free_port()).await
    }

    /// Like [`MasterProcess::start_with_env`] on a given port (a restart where replicas
    /// expect it).
    pub async fn start_on(
        workdir: &Path,
        config: &str,
        env: &[(&str, &str)],
        port: u16,
    ) -> Result<MasterProcess> {
        Self::start_with(workdir, config, port, |c| c.envs(env)).await
    }

    /// Like [`MasterProcess::start_on`], with the command adjusted by `configure` (HTTPS,
    /// environment).
    pub async fn start_with(
        workdir: &Path,
        config: &str,
        port: u16,
        configure: impl FnOnce(DaemonCommand) -> DaemonCommand,
    ) -> Result<MasterProcess> {
        let config = config.replace("{port}", &port.to_string());
        std::fs::write(workdir.join("dms-master.yaml"), config)?;
        let command = DaemonCommand::new("dms-master", "dms-master").args(&[
            "--config",
            "dms-master.yaml",
            "run",
        ]);
        let daemon = configure(command).start(workdir, port).await?;
        Ok(MasterProcess { daemon })
    }

    /// `GET /api/data/status`'s `data`.
    pub async fn status(&self) -> Result<Value> {
        let (code, body) = self.get("/api/data/status").await?;
        if code != 200 || body["success"] != true {
            bail!("status answered {code}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// `GET /api/data/tasks/{id}`'s `data`.
    pub async fn task(&self, id: &str) -> Result<Value> {
        let (code, body) = self.get(&format!("/api/data/tasks/{id}")).await?;
        if code != 200 {
            bail!("task {id}: {code} {body}");
        }
        Ok(body["data"].clone())
    }

    /// Waits until task `id` reaches a final status; returns its JSON.
    pub async fn wait_task(&self, id: &str, timeout: Duration) -> Result<Value> {
        self.wait_until(&format!("task {id} to finish"), timeout, async || {
            let task = self.task(id).await?;
            Ok(match task["status"].as_str() {
                Some("completed" | "partial" | "failed" | "cancelled") => Check::Ready(task),
                _ => Check::Waiting(task.to_string()),
            })
        })
        .await
    }

    /// Waits until task `id` has finished at least `series` series; returns its JSON.
    pub async fn wait_series_done(
        &self,
        id: &str,
        series: u64,
        timeout: Duration,
    ) -> Result<Value> {
        let what = format!("task {id} to finish {series} series");
        self.wait_until(&what, timeout, async || {
            let task = self.task(id).await?;
            Ok(
                if task["counters"]["series_done"].as_u64().unwrap_or(0) >= series {
                    Check::Ready(task)
                } else {
                    Check::Waiting(task.to_string())
                },
            )
        })
        .await
    }

    /// Waits until the store applied everything journaled; returns the status.
    pub async fn wait_applied(&self, timeout: Duration) -> Result<Value> {
        let what = "the store to apply the whole journal";
        self.wait_until(what, timeout, async || {
            let status = self.status().await?;
            Ok(if status["journal"]["store_lag"] == 0 {
                Check::Ready(status)
            } else {
                Check::Waiting(format!("journal {}", status["journal"]))
            })
        })
        .await
    }

    /// Waits until every start-up import finished and the store applied the whole journal;
    /// returns the status.
    pub async fn wait_imported(&self, timeout: Duration) -> Result<Value> {
        let what = "the start-up imports to finish and be applied";
        self.wait_until(what, timeout, async || {
            let status = self.status().await?;
            let imports = status["imports"].as_array().cloned().unwrap_or_default();
            let done = !imports.is_empty()
                && imports
                    .iter()
                    .all(|i| i["state"] != "running" && i["state"] != Value::Null);
            Ok(if done && status["journal"]["store_lag"] == 0 {
                Check::Ready(status)
            } else {
                Check::Waiting(format!(
                    "imports {}, journal {}",
                    status["imports"], status["journal"]
                ))
            })
        })
        .await
    }
}

/// Runs `dms-master` with `args` in `workdir` to completion (within a minute); returns exit
/// code, stdout, stderr.
pub fn run_master_command(
    workdir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(i32, String, String)> {
    run_binary(
        "dms-master",
        "dms-master",
        workdir,
        args,
        env,
        COMMAND_TIMEOUT,
    )
}

/// A master config on loopback (`{port}` left for [`MasterProcess::start`]) with its state
/// and SQLite store under `./data/`, and `extra` appended (sources, schedules, …).
pub fn master_config(extra: &str) -> String {
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

/// The sample CSV source (`./sample-data`, see [`crate::copy_sample_data`]): EURUSD=X hourly
/// and BTC-USD monthly bars.
pub const SAMPLE_SOURCE: &str = "
sources:
  - type: csv
    name: sample
    dir: ./sample-data
    files:
      EURUSD.csv: {symbol: EURUSD=X, interval: 1h}
      BTCUSD.csv: {symbol: BTC-USD}
";
