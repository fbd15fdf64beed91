//! The workspace's binaries, built fresh for the tests that run them.
//!
//! [`binary`] runs `cargo build --bins -p <package>` the first time a test executable asks for
//! one of the package's binaries, with the target directory and profile that test executable
//! was built with, so a test never runs a stale build. When `DMS_BIN_DIR` is set, binaries are
//! taken from that directory as they are and nothing is built.
//!
//! [`run_binary`] runs one to completion within a deadline.

use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

/// Generous: a build from scratch on a small machine takes minutes; one that is up to date, a
/// second.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A package's binaries by name, or why its build failed.
type Built = Result<BTreeMap<String, PathBuf>, String>;

/// The packages this test executable built. Held during a build, so concurrent tests wait for
/// one build instead of starting their own.
static BUILT: Mutex<BTreeMap<String, Built>> = Mutex::new(BTreeMap::new());

/// The path of binary `bin` of workspace package `package`, built first if this test executable
/// has not built the package yet. Fails with cargo's output if the build fails.
///
/// With `DMS_BIN_DIR` set, returns `$DMS_BIN_DIR/<bin>` without building anything.
pub fn binary(package: &str, bin: &str) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DMS_BIN_DIR") {
        let path = Path::new(&dir).join(bin);
        ensure!(
            path.is_file(),
            "{} not found (DMS_BIN_DIR is set, so nothing is built)",
            path.display()
        );
        return Ok(path);
    }
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    let bins = built
        .entry(package.to_owned())
        .or_insert_with(|| build(package).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    bins.get(bin).cloned().with_context(|| {
        format!(
            "package {package} has no binary {bin}; it has {:?}",
            bins.keys()
        )
    })
}

/// Runs `cargo build --bins -p <package>` for the test executable's target directory and
/// profile; returns the binaries it made.
fn build(package: &str) -> Result<BTreeMap<String, PathBuf>> {
    let exe = std::env::current_exe().context("locate the test executable")?;
    // <target dir>/<profile dir>/deps/<test executable>. Under `--target <triple>`,
    // <target dir>/<triple> is taken for the target dir: a separate build, but a fresh one.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .with_context(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        // Cargo names the `dev` (and `test`) profile's directory `debug`, `bench`'s `release`.
        Some("debug") => "dev",
        Some(name) => name,
        None => bail!("no profile in {}", profile_dir.display()),
    };
    // Cargo sets CARGO for the tests it runs; it has released its build lock by then.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args([
            "build",
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--profile", profile, "-p", package])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(crate::repo_root());
    let shown = format!(
        "CARGO_TARGET_DIR={} cargo build --bins --profile {profile} -p {package}",
        target_dir.display()
    );
    let (status, stdout, stderr) = output_within(&mut command, BUILD_TIMEOUT, &shown)?;
    ensure!(status.success(), "`{shown}` failed ({status}):\n{stderr}");
    let bins = executables(&stdout);
    ensure!(!bins.is_empty(), "`{shown}` built no binaries");
    Ok(bins)
}

/// The binaries named in cargo's JSON messages (`compiler-artifact` of `bin` targets).
fn executables(messages: &str) -> BTreeMap<String, PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            let uplifted = PathBuf::from(m["executable"].as_str()?);
            Some((name, in_deps(&uplifted).unwrap_or(uplifted)))
        })
        .collect()
}

/// The file under `deps/` that cargo hard-linked to `uplifted` (`target/<profile>/<bin>`).
/// Checkouts sharing a target dir all write the uplifted path, so it may hold another
/// checkout's build by the time a test starts the binary; the file under `deps/` carries a
/// hash of the package's path and is written by this checkout's builds only.
fn in_deps(uplifted: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let linked = std::fs::metadata(uplifted).ok()?;
    let prefix = format!("{}-", uplifted.file_name()?.to_str()?.replace('-', "_"));
    std::fs::read_dir(uplifted.parent()?.join("deps"))
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry.file_name().to_str().is_some_and(|name| {
                name.strip_prefix(&prefix)
                    .is_some_and(|hash| !hash.contains('.'))
            })
        })
        .map(|entry| entry.path())
        .find(|path| {
            std::fs::metadata(path)
                .is_ok_and(|m| (m.dev(), m.ino()) == (linked.dev(), linked.ino()))
        })
}

/// Runs binary `bin` of `package` (see [`binary`]) with `args` and `env` in `workdir`; returns
/// its exit code (-1 when killed by a signal), stdout and stderr. Fails if it is still running
/// after `timeout`.
pub fn run_binary(
    package: &str,
    bin: &str,
    workdir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(i32, String, String)> {
    let mut command = Command::new(binary(package, bin)?);
    command
        .args(args)
        .current_dir(workdir)
        .envs(env.iter().copied());
    let shown = format!("{bin} {}", args.join(" "));
    let (status, stdout, stderr) = output_within(&mut command, timeout, &shown)?;
    Ok((status.code().unwrap_or(-1), stdout, stderr))
}

/// Like [`Command::output`] (exit status, stdout, stderr), but kills the process and fails once
/// it has run for `timeout`. `shown` names the command in errors.
fn output_within(
    command: &mut Command,
    timeout: Duration,
    shown: &str,
) -> Result<(ExitStatus, String, String)> {
    // Files rather than pipes: nothing has to drain them while the process runs.
    let mut stdout = tempfile::tempfile()?;
    let mut stderr = tempfile::tempfile()?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("spawn `{shown}`"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{shown}` still running after {timeout:?}, killed; its stderr:\n{}",
                read_all(&mut stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((status, read_all(&mut stdout), read_all(&mut stderr)))
}

fn read_all(file: &mut std::fs::File) -> String {
    let mut bytes = Vec::new();
    let _ = file.rewind().and_then(|()| file.read_to_end(&mut bytes));
    String::from_utf8_lossy(&bytes).into_owned()
}
