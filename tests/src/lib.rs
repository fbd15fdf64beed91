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
//! - [`ReplicaProcess`]: `dms-replica` as a `DaemonProcess`, with a wait until it is in sync
//!   with a master; [`replica_config`] writes its config.
//! - [`Dmsctl`]: the real `dmsctl` binary run against a master, its exit status and output
//!   returned ([`CtlOutput`]).
//! - [`LinkProxy`]: a TCP proxy that cuts, throttles and flaps a replica's link to its master.
//! - [`InfluxServer`]: a real `influxd` (InfluxDB 1.x) on a free loopback port with its data in
//!   a temporary directory, for the master's InfluxDB store; stopped and started again on the
//!   same port with the same data to simulate an outage; InfluxQL over HTTP to check what the
//!   store holds.
//! - [`Tmpfs`]: a small tmpfs mounted for a test: a disk that fills up and is freed again.
//! - [`provider::FakeYahoo`] serves Yahoo's chart API on loopback from recorded responses or a
//!   deterministic generator, and can be scripted to fail.
//! - `layering` (tests only): the workspace's layers held against the code: crate
//!   dependencies and `dms-master`'s folders importing only downward.

mod binary;
mod daemon;
mod dmsctl;
mod influx;
#[cfg(test)]
mod layering;
mod master;
pub mod provider;
mod proxy;
mod replica;
mod tmpfs;
mod wait;

pub use binary::{binary, run_binary};
pub use daemon::{DaemonCommand, DaemonProcess};
pub use dmsctl::{CtlOutput, Dmsctl};
pub use influx::InfluxServer;
pub use master::{MasterProcess, SAMPLE_SOURCE, master_config, run_master_command};
pub use proxy::{LinkMode, LinkProxy};
pub use replica::{ReplicaProcess, replica_config};
pub use tmpfs::Tmpfs;
pub use wait::{Check, wait_until};

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// 00:00 UTC of `date` (`YYYY-MM-DD`) as a Unix time.
pub fn unix_day(date: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .expect("a YYYY-MM-DD date")
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp()
}

/// The status code and the body of a raw HTTP/1.1 answer (0 and empty when there is none).
pub fn http_answer(answer: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
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

/// Writes `symbols` daily OHLCV CSV files of `bars` weekday bars each into `dir` (symbols
/// `S0000`, `S0001`, …; a deterministic random walk from 2000-01-03); returns the bars written.
pub fn write_daily_csvs(dir: &Path, symbols: usize, bars: usize) -> u64 {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let start = chrono::NaiveDate::from_ymd_opt(2000, 1, 3).unwrap();
    for s in 0..symbols {
        let file = std::fs::File::create(dir.join(format!("S{s:04}.csv"))).unwrap();
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "date,open,high,low,close,volume").unwrap();
        let (mut day, mut price, mut written) = (start, 50.0 + s as f64, 0);
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (s as u64).wrapping_mul(0x1000_0000_01b3);
        while written < bars {
            if !matches!(
                chrono::Datelike::weekday(&day),
                chrono::Weekday::Sat | chrono::Weekday::Sun
            ) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let step = (state % 2001) as f64 / 1000.0 - 1.0;
                let open = price;
                let close = (price * (1.0 + step * 0.02)).max(1.0);
                let high = open.max(close) * 1.01;
                let low = open.min(close) * 0.99;
                writeln!(
                    out,
                    "{day},{open:.4},{high:.4},{low:.4},{close:.4},{}",
                    1000 + state % 100_000
                )
                .unwrap();
                price = close;
                written += 1;
            }
            day = day.succ_opt().unwrap();
        }
    }
    (symbols * bars) as u64
}
