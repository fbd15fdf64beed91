//! # dms-e2e
//!
//! End-to-end tests: the real daemons run as processes, configured through real config files,
//! and are driven over HTTP on loopback like an operator would.
//!
//! [`MasterProcess`] starts `dms-master` from the workspace's target directory in a scratch
//! directory, waits until `/readyz` answers, and kills it on drop. The binaries must be built
//! first (`cargo build --bins`, which `scripts/test.sh` does); a missing binary fails the test
//! with that instruction.
//!
//! [`provider::FakeYahoo`] serves Yahoo's chart API on loopback from recorded responses or a
//! deterministic generator, and can be scripted to fail.

pub mod provider;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// The directory holding the workspace's built binaries (next to this test's executable).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DMS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of a workspace binary; panics with how to build it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (cargo build --bins)",
        path.display()
    );
    path
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Copies the shipped sample CSVs into `dir`.
pub fn copy_sample_data(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(repo_root().join("config/sample-data")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
}

/// A running `dms-master`.
#[derive(Debug)]
pub struct MasterProcess {
    child: Option<Child>,
    pub port: u16,
    pub workdir: PathBuf,
    pub log: PathBuf,
    client: reqwest::Client,
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
        let port = free_port();
        let config = config.replace("{port}", &port.to_string());
        std::fs::write(workdir.join("dms-master.yaml"), config)?;
        let log = workdir.join(format!("master-{port}.log"));
        let child = Command::new(binary("dms-master"))
            .args(["--config", "dms-master.yaml", "run"])
            .current_dir(workdir)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn dms-master")?;
        let mut master = MasterProcess {
            child: Some(child),
            port,
            workdir: workdir.to_path_buf(),
            log,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        master.wait_ready(Duration::from_secs(30)).await?;
        Ok(master)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "dms-master exited with {status} before it was ready:\n{}",
                    self.log_text()
                );
            }
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "dms-master not ready after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// GET `path`; returns the status code and the JSON body.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.client.get(self.url(path)).send().await?;
        let code = r.status().as_u16();
        let body = r.json().await.context("JSON body")?;
        Ok((code, body))
    }

    /// POST `path` with a JSON body (raw text, to test bad input too).
    pub async fn post(&self, path: &str, body: &str) -> Result<(u16, Value)> {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let code = r.status().as_u16();
        let body = r.json().await.context("JSON body")?;
        Ok((code, body))
    }

    /// GET `path` as text.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let r = self.client.get(self.url(path)).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// Waits until task `id` reaches a final status; returns its JSON.
    pub async fn wait_task(&self, id: &str, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let (code, body) = self.get(&format!("/api/data/tasks/{id}")).await?;
            if code != 200 {
                bail!("task {id}: {code} {body}");
            }
            let status = body["data"]["status"].as_str().unwrap_or("");
            if matches!(status, "completed" | "failed" | "cancelled") {
                return Ok(body["data"].clone());
            }
            if started.elapsed() > timeout {
                bail!(
                    "task {id} not finished after {timeout:?}: {body}\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the store applied everything journaled.
    pub async fn wait_applied(&self, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let status = self.status().await?;
            if status["journal"]["store_lag"] == 0 {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                bail!("store still behind after {timeout:?}: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/data/status`'s `data`.
    pub async fn status(&self) -> Result<Value> {
        let (code, body) = self.get("/api/data/status").await?;
        if code != 200 || body["success"] != true {
            bail!("status answered {code}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// Waits until every start-up import finished and the store applied the whole journal.
    pub async fn wait_imported(&self, timeout: Duration) -> Result<Value> {
        let started = Instant::now();
        loop {
            let status = self.status().await?;
            let imports = status["imports"].as_array().cloned().unwrap_or_default();
            let done = !imports.is_empty()
                && imports
                    .iter()
                    .all(|i| i["state"] != "running" && i["state"] != Value::Null);
            if done && status["journal"]["store_lag"] == 0 {
                return Ok(status);
            }
            if started.elapsed() > timeout {
                bail!(
                    "import not finished after {timeout:?}: {status}\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` and waits for the process to exit; returns its status and how long it
    /// took.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let child = self.child.as_mut().context("already stopped")?;
        let pid = Pid::from_raw(child.id() as i32);
        let started = Instant::now();
        kill(pid, signal)?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                bail!(
                    "dms-master still running {timeout:?} after {signal}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `dms-master` with `args` in `workdir` to completion; returns exit code, stdout, stderr.
pub fn run_master_command(
    workdir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(i32, String, String)> {
    let out = Command::new(binary("dms-master"))
        .args(args)
        .current_dir(workdir)
        .envs(env.iter().copied())
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
