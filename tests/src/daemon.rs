//! [`DaemonProcess`]: one DMS daemon running as a child process, and what every daemon's test
//! wrapper needs from it: starting it from a fresh build ([`DaemonCommand`]), waiting until its
//! `/readyz` answers, HTTP on loopback, signals, its log, and killing it on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::{Check, binary, wait_until};

/// How long a daemon may take from spawn to a successful `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How [`DaemonProcess::kill`] waits for the process to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How to start a daemon: a binary of a workspace package, its arguments and environment.
#[derive(Debug, Clone)]
pub struct DaemonCommand {
    package: String,
    bin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    ready_path: String,
    https: Option<reqwest::Client>,
    token: Option<String>,
}

impl DaemonCommand {
    /// Binary `bin` of workspace package `package`, built as [`binary`] does.
    pub fn new(package: &str, bin: &str) -> DaemonCommand {
        DaemonCommand {
            package: package.to_owned(),
            bin: bin.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            ready_path: "/readyz".into(),
            https: None,
            token: None,
        }
    }

    /// The path that must answer 2xx before [`DaemonCommand::start`] returns (`/readyz`
    /// unless set; a replica started while its master is away is only `/healthz`-alive).
    pub fn ready_path(mut self, path: &str) -> DaemonCommand {
        self.ready_path = path.to_owned();
        self
    }

    /// Talks to the daemon over HTTPS with `client` (built with the test CA and, for mutual
    /// TLS, a client certificate) instead of plain HTTP.
    pub fn https(mut self, client: reqwest::Client) -> DaemonCommand {
        self.https = Some(client);
        self
    }

    /// Sends `authorization: Bearer <token>` with every request of [`DaemonProcess`]'s helpers
    /// ([`DaemonProcess::get`], [`DaemonProcess::post`], …) and of [`DaemonProcess::client`]
    /// (unless started with [`DaemonCommand::https`], whose client is the caller's): for a
    /// daemon with `auth`, where every endpoint but `/healthz` and `/readyz` needs a token. A
    /// request that sets its own `authorization` header sends that one instead.
    pub fn token(mut self, token: &str) -> DaemonCommand {
        self.token = Some(token.to_owned());
        self
    }

    /// Adds command-line arguments.
    pub fn args(mut self, args: &[&str]) -> DaemonCommand {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Adds environment variables (`RUST_LOG` is `info` unless set here).
    pub fn envs(mut self, env: &[(&str, &str)]) -> DaemonCommand {
        self.env
            .extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// Starts the daemon in `workdir`, its stderr going to `workdir/<bin>-<port>.log`, and
    /// returns once `GET /readyz` on `port` answers 2xx. Fails, with the log, if the daemon
    /// exits first or is not ready within 30 s.
    pub async fn start(self, workdir: &Path, port: u16) -> Result<DaemonProcess> {
        let (package, bin) = (self.package.clone(), self.bin.clone());
        // The first call builds the package: off the runtime's worker threads.
        let path = tokio::task::spawn_blocking(move || binary(&package, &bin)).await??;
        let log = workdir.join(format!("{}-{port}.log", self.bin));
        let child = Command::new(path)
            .args(&self.args)
            .current_dir(workdir)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("spawn {}", self.bin))?;
        let (scheme, client) = match self.https {
            Some(c) => ("https", c),
            None => {
                let mut headers = reqwest::header::HeaderMap::new();
                if let Some(t) = &self.token {
                    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))?;
                    value.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, value);
                }
                (
                    "http",
                    reqwest::Client::builder()
                        .timeout(Duration::from_secs(10))
                        // The daemons close a keep-alive connection idle for their header
                        // timeout (10 s by default): never reuse one that old, or a request
                        // races the close.
                        .pool_idle_timeout(Duration::from_secs(5))
                        .default_headers(headers)
                        .build()?,
                )
            }
        };
        let mut daemon = DaemonProcess {
            bin: self.bin,
            child: Some(child),
            port,
            scheme,
            workdir: workdir.to_path_buf(),
            log,
            client,
            token: self.token,
        };
        daemon.wait_ready(&self.ready_path).await?;
        Ok(daemon)
    }
}

/// A running daemon; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct DaemonProcess {
    bin: String,
    child: Option<Child>,
    /// The HTTP port on loopback.
    pub port: u16,
    scheme: &'static str,
    /// Where it runs.
    pub workdir: PathBuf,
    /// Its stderr (the log).
    pub log: PathBuf,
    client: reqwest::Client,
    /// Sent as a bearer token by the helpers ([`DaemonCommand::token`]).
    token: Option<String>,
}

impl DaemonProcess {
    async fn wait_ready(&mut self, path: &str) -> Result<()> {
        let url = self.url(path);
        let (bin, child, client) = (&self.bin, &mut self.child, &self.client);
        let ready = wait_until(&format!("{bin} to be ready"), READY_TIMEOUT, async || {
            if let Some(status) = child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("{bin} exited with {status} before it was ready");
            }
            Ok(match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Check::Ready(()),
                Ok(r) => Check::Waiting(format!(
                    "{path} answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Check::Waiting(format!("{path}: {e}")),
            })
        })
        .await;
        ready.map_err(|e| self.with_log(&e))
    }

    /// The binary's name.
    pub fn name(&self) -> &str {
        &self.bin
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` when started with [`DaemonCommand::https`]).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// The HTTP client the daemon is driven with (with the token of [`DaemonCommand::token`]
    /// as a default header, unless the client came from [`DaemonCommand::https`]).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// A request of `method` to `path` with the client and the token, if any.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends SIGHUP (reload).
    pub fn reload(&self) -> Result<()> {
        let pid = self.pid().context("not running")?;
        kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGHUP)?;
        Ok(())
    }

    /// GET `path`; returns the status code and the JSON body.
    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        let code = r.status().as_u16();
        let body = r
            .json()
            .await
            .with_context(|| format!("GET {path} answered {code} without a JSON body"))?;
        Ok((code, body))
    }

    /// POST `path` with a JSON body (raw text, to test bad input too; `Content-Type:
    /// application/json` even when empty, as every mutating request needs).
    pub async fn post(&self, path: &str, body: &str) -> Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        let code = r.status().as_u16();
        let body = r
            .json()
            .await
            .with_context(|| format!("POST {path} answered {code} without a JSON body"))?;
        Ok((code, body))
    }

    /// DELETE `path` (`Content-Type: application/json`, no body); returns the status code and
    /// the JSON body.
    pub async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        let r = self
            .request(reqwest::Method::DELETE, path)
            .header("content-type", "application/json")
            .send()
            .await?;
        let code = r.status().as_u16();
        let body = r
            .json()
            .await
            .with_context(|| format!("DELETE {path} answered {code} without a JSON body"))?;
        Ok((code, body))
    }

    /// GET `path` as text.
    pub async fn get_text(&self, path: &str) -> Result<(u16, String)> {
        let r = self.request(reqwest::Method::GET, path).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// [`wait_until`] with this daemon's log added to a failure.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        probe: impl AsyncFnMut() -> Result<Check<T>>,
    ) -> Result<T> {
        let waited = wait_until(what, timeout, probe).await;
        waited.map_err(|e| self.with_log(&e))
    }

    /// Sends `signal` and waits for the process to exit; returns its status and how long it
    /// took. Fails, with the log, if it still runs after `timeout`.
    pub fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("{} already stopped", self.bin))?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        let started = Instant::now();
        kill(pid, signal)?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > timeout {
                let e = anyhow!("{} still running {timeout:?} after {signal}", self.bin);
                return Err(self.with_log(&e));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process dies at once, with no chance to clean up; returns its status.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        Ok(self.stop(Signal::SIGKILL, KILL_TIMEOUT)?.0)
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `e` followed by the log, which usually says why.
    fn with_log(&self, e: &anyhow::Error) -> anyhow::Error {
        anyhow!(
            "{e:#}\n--- {} log ({}) ---\n{}",
            self.bin,
            self.log.display(),
            self.log_text()
        )
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
