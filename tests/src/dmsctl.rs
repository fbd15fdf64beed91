//! [`Dmsctl`]: the real `dmsctl` binary pointed at a master, run to completion for each
//! command, its exit status and output returned.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::run_binary;

/// How long one `dmsctl` command may run (a followed task included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What one `dmsctl` run did.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// The exit status (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// stdout parsed as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// `dmsctl` with an endpoint and environment (`DMS_TOKEN`, …) for every run.
#[derive(Debug, Clone)]
pub struct Dmsctl {
    endpoint: String,
    env: Vec<(String, String)>,
    workdir: PathBuf,
}

impl Dmsctl {
    /// `dmsctl --endpoint <endpoint>`, run in the system's temporary directory.
    pub fn new(endpoint: &str) -> Dmsctl {
        Dmsctl {
            endpoint: endpoint.to_owned(),
            env: Vec::new(),
            workdir: std::env::temp_dir(),
        }
    }

    /// The same with `key=value` in its environment.
    pub fn env(mut self, key: &str, value: &str) -> Dmsctl {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `dmsctl --endpoint <endpoint> <args>` to completion.
    pub async fn run(&self, args: &[&str]) -> Result<CtlOutput> {
        let mut all = vec!["--endpoint".to_owned(), self.endpoint.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let (env, workdir) = (self.env.clone(), self.workdir.clone());
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (code, stdout, stderr) =
                run_binary("dmsctl", "dmsctl", &workdir, &args, &env, COMMAND_TIMEOUT)?;
            Ok(CtlOutput {
                code,
                stdout,
                stderr,
            })
        })
        .await?
    }
}
