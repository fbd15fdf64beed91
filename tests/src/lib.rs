//! # dms-e2e
//!
//! End-to-end tests: the real daemons run as processes, configured through real config files,
//! and are driven over HTTP on loopback like an operator would.
//!
//! # Layout
//!
//! - [`binary`]: a workspace binary, built by `cargo build` the first time a test executable
//!   asks for its package, so no test runs a stale build (`DMS_BIN_DIR` points at prebuilt
//!   binaries instead and skips the build); [`run_binary`] runs one to completion.
//! - [`wait_until`]: polls a condition until it holds or a deadline passes; every wait in the
//!   tests goes through it, so a regression fails with what was awaited and the last state seen
//!   instead of hanging.
//! - [`DaemonProcess`], started by a [`DaemonCommand`]: a daemon as a child process in a scratch
//!   directory, ready once `/readyz` answers, driven over HTTP, signalled, its log read, killed
//!   on drop.
//! - [`MasterProcess`]: `dms-master` as a `DaemonProcess`, with waits for tasks, imports and the
//!   journal; [`run_master_command`] for its one-shot commands.
//! - [`provider::FakeYahoo`] serves Yahoo's chart API on loopback from recorded responses or a
//!   deterministic generator, and can be scripted to fail.

mod binary;
mod daemon;
mod master;
pub mod provider;
mod wait;

pub use binary::{binary, run_binary};
pub use daemon::{DaemonCommand, DaemonProcess};
pub use master::{MasterProcess, run_master_command};
pub use wait::{Check, wait_until};

use std::path::{Path, PathBuf};

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
