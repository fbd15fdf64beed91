//! [`ReplicaProcess`]: `dms-replica` as a [`DaemonProcess`], with the waits the replication
//! tests need: in sync with a master, equal to it bar for bar.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::{Check, DaemonCommand, DaemonProcess, MasterProcess, free_port};

/// A running `dms-replica`.
#[derive(Debug)]
pub struct ReplicaProcess {
    daemon: DaemonProcess,
    pub node_id: String,
}

impl Deref for ReplicaProcess {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.daemon
    }
}

impl DerefMut for ReplicaProcess {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.daemon
    }
}

/// The config of a replica named `node_id` following the master on `master_port`, its files in
/// its working directory, quick to notice a dead link; `extra` is appended (YAML).
pub fn replica_config(node_id: &str, master_port: u16, extra: &str) -> String {
    format!(
        "node_id: {node_id}
master:
  url: http://127.0.0.1:{master_port}
  idle_timeout: 3s
  reconnect_min_delay: 100ms
  reconnect_max_delay: 1s
http:
  listen: 127.0.0.1:{{port}}
state:
  path: ./replica-state.db
store:
  type: sqlite
  path: ./replica-bars.db
{extra}"
    )
}

impl ReplicaProcess {
    /// Writes `config` (`{port}` is replaced by a free port) to `workdir/dms-replica.yaml` and
    /// starts the replica there; returns once `/healthz` answers (it may still be connecting).
    pub async fn start(workdir: &Path, node_id: &str, config: &str) -> Result<ReplicaProcess> {
        Self::start_on(workdir, node_id, config, free_port()).await
    }

    /// Like [`ReplicaProcess::start`] on a given port.
    pub async fn start_on(
        workdir: &Path,
        node_id: &str,
        config: &str,
        port: u16,
    ) -> Result<ReplicaProcess> {
        Self::start_with(workdir, node_id, config, port, |c| c).await
    }

    /// Like [`ReplicaProcess::start_on`], with the command adjusted by `configure`.
    pub async fn start_with(
        workdir: &Path,
        node_id: &str,
        config: &str,
        port: u16,
        configure: impl FnOnce(DaemonCommand) -> DaemonCommand,
    ) -> Result<ReplicaProcess> {
        std::fs::create_dir_all(workdir)?;
        let config = config.replace("{port}", &port.to_string());
        std::fs::write(workdir.join("dms-replica.yaml"), config)?;
        let command = DaemonCommand::new("dms-replica", "dms-replica")
            .args(&["--config", "dms-replica.yaml", "run"])
            .ready_path("/healthz");
        let daemon = configure(command).start(workdir, port).await?;
        Ok(ReplicaProcess {
            daemon,
            node_id: node_id.to_owned(),
        })
    }

    /// `GET /api/replica/status`'s `data`.
    pub async fn status(&self) -> Result<Value> {
        let (code, body) = self.get("/api/replica/status").await?;
        if code != 200 {
            bail!("replica status answered {code}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// `GET /api/data/status`'s `data`.
    pub async fn data_status(&self) -> Result<Value> {
        let (code, body) = self.get("/api/data/status").await?;
        if code != 200 {
            bail!("replica data status answered {code}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// The repairs this replica ran, newest first.
    pub async fn repairs(&self) -> Result<Vec<Value>> {
        let (code, body) = self.get("/api/replica/repairs").await?;
        if code != 200 {
            bail!("repairs answered {code}: {body}");
        }
        Ok(body["data"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the replica is in sync with `master`: the master's store applied its whole
    /// journal, the replica's cursor is the master's head, and both hold the same number of
    /// bars in the same series. Returns the replica's status.
    pub async fn wait_in_sync(&self, master: &MasterProcess, timeout: Duration) -> Result<Value> {
        let what = format!("replica {} to be in sync with the master", self.node_id);
        self.wait_until(&what, timeout, async || {
            let m = master.status().await?;
            let r = self.status().await?;
            let d = self.data_status().await?;
            let head = &m["journal"]["head"];
            let ok = m["journal"]["store_lag"] == 0
                && r["cursor"] == *head
                && r["state"] == "in_sync"
                && d["total_records"] == m["total_records"]
                && d["total_series"] == m["total_series"];
            Ok(if ok {
                Check::Ready(r)
            } else {
                Check::Waiting(format!(
                    "master head {head} records {} series {}; replica {r}, records {} series {}",
                    m["total_records"], m["total_series"], d["total_records"], d["total_series"]
                ))
            })
        })
        .await
    }
}
