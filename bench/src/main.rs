//! `dms-bench`: the DMS benchmark scenarios.
//!
//! - `ingest`: S symbols × N daily bars (default 5,000 × 2,520 = 12.6M) from a deterministic
//!   generator through the master's real write path: validate → journal (durable) → the store
//!   applier → the SQLite bar store. Timed until the store has applied everything.
//! - `store-raw`: the same bars straight into the same SQLite schema with one prepared upsert
//!   in large transactions: the reference for `ingest`.
//! - `store-raw-multirow`: the same with 64 rows per upsert statement, the technique the SQLite
//!   store uses for bars after a series' end: the engine's ceiling for it.
//! - `fetch`, `fetch-adaptive`: an incremental update from a local Yahoo-shaped provider,
//!   under a rate limit the master is told, or one it must learn (see [`fetch`]).
//! - `replicate`: a master and a replica over loopback gRPC (see [`replicate`]).
//! - `store --backend influxdb|postgres|mysql --url URL`: the ingest path into a server store
//!   beside the server's raw write rate (see [`stores`]).
//! - `export`: a SQLite store of S × N bars exported to Parquet and to CSV through the
//!   master's export code, each step in its own process (see [`export`]).
//! - `all`: runs each scenario in its own process (so peak RSS is per scenario) and prints a
//!   table with bars/s, the ratio of `ingest` to `store-raw`, and peak RSS.

mod data;
mod export;
mod fetch;
mod generator;
mod replicate;
mod scenarios;
mod stores;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "dms-bench", about = "DMS benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// validate → journal → store applier → SQLite store.
    Ingest(Size),
    /// The same bars straight into the same SQLite schema, one prepared single-row upsert.
    StoreRaw(Size),
    /// Like store-raw with 64 rows per upsert statement.
    StoreRawMultirow(Size),
    /// Every store scenario, each in its own process, with a summary table.
    All(Size),
    /// Incremental update from a local provider with latency, under a rate limit.
    Fetch(fetch::FetchArgs),
    /// Incremental update from a local provider with a rate limit the master is not told,
    /// learned by its adaptive rate.
    FetchAdaptive(fetch::FetchAdaptiveArgs),
    /// The master's ingest path into a server store beside the server's raw write rate, and
    /// reads back.
    Store(StoreArgs),
    /// Replication to an in-process replica over loopback gRPC: catch-up, verify, lag under
    /// steady ingest, repair of one bucket, bytes per bar.
    Replicate(ReplicateArgs),
    /// Export of a filled SQLite store to Parquet and to CSV (each step in its own process).
    Export(Size),
    /// File import of a Parquet export through the journal beside `ingest`, and (with
    /// --pg-url) the migration to PostgreSQL beside its COPY (each step in its own process).
    Data(DataArgs),
    /// (A step of `data`.) Imports the Parquet file at --file into a fresh store.
    #[command(hide = true)]
    ImportRun(ImportStep),
    /// (A step of `data`.) The PostgreSQL COPY reference.
    #[command(hide = true)]
    CopyRef(PgStep),
    /// (A step of `data`.) Migrates the SQLite store at --store to PostgreSQL.
    #[command(hide = true)]
    MigrateRun(PgStep),
    /// (A step of `export`.) Fills the SQLite store at --store.
    #[command(hide = true)]
    ExportFill(ExportStep),
    /// (A step of `export`.) Exports the SQLite store at --store in --format.
    #[command(hide = true)]
    ExportRun(ExportStep),
}

/// A step of the `export` scenario.
#[derive(Debug, Clone, Args)]
struct ExportStep {
    #[command(flatten)]
    size: Size,
    /// The SQLite store file.
    #[arg(long)]
    store: PathBuf,
    /// parquet or csv (export-run).
    #[arg(long, default_value = "parquet")]
    format: String,
    /// Keep the file written (export-run).
    #[arg(long)]
    keep: bool,
}

/// Options of the `data` scenario.
#[derive(Debug, Clone, Args)]
struct DataArgs {
    #[command(flatten)]
    size: Size,
    /// A PostgreSQL database the benchmark may create databases from, for the migration
    /// steps (e.g. `postgres://postgres@127.0.0.1:5432/test`).
    #[arg(long)]
    pg_url: Option<String>,
}

/// A step of `data` reading a file.
#[derive(Debug, Clone, Args)]
struct ImportStep {
    #[command(flatten)]
    size: Size,
    #[arg(long)]
    file: PathBuf,
}

/// A step of `data` on PostgreSQL.
#[derive(Debug, Clone, Args)]
struct PgStep {
    #[command(flatten)]
    size: Size,
    #[arg(long)]
    url: String,
    /// The SQLite store (migrate-run).
    #[arg(long)]
    store: Option<PathBuf>,
}

/// Options of the `store` scenario.
#[derive(Debug, Clone, Args)]
struct StoreArgs {
    /// Number of symbols.
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Daily bars per symbol.
    #[arg(long, default_value_t = 2_520)]
    bars: usize,
    /// Series per journal append.
    #[arg(long, default_value_t = 20)]
    group: usize,
    /// The server: influxdb, postgres or mysql.
    #[arg(long, value_enum)]
    backend: stores::Backend,
    /// Its URL (InfluxDB: `http://127.0.0.1:8086`; SQL: a database the benchmark may create
    /// databases from, e.g. `postgres://postgres@127.0.0.1:5432/test`).
    #[arg(long)]
    url: String,
}

/// Options of the `replicate` scenario.
#[derive(Debug, Clone, Args)]
struct ReplicateArgs {
    #[command(flatten)]
    size: Size,
    /// How long the steady ingest runs for the lag measurement, in seconds.
    #[arg(long, default_value_t = 20)]
    steady_secs: u64,
    /// Compression of the stream: zstd, gzip or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
}

/// Data set size and where the files go.
#[derive(Debug, Clone, Args)]
pub(crate) struct Size {
    /// Number of symbols.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) symbols: usize,
    /// Daily bars per symbol.
    #[arg(long, default_value_t = 2_520)]
    pub(crate) bars: usize,
    /// Series per journal append (ingest) or per transaction (store-raw).
    #[arg(long, default_value_t = 20)]
    pub(crate) group: usize,
    /// Directory for the database files (a fresh temporary directory inside it is used).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

/// What one scenario measured; printed as one JSON line.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Outcome {
    pub(crate) scenario: String,
    pub(crate) bars: u64,
    pub(crate) secs: f64,
    pub(crate) bars_per_sec: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) notes: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Ingest(size) => print(&scenarios::ingest(&size)?),
        Cmd::StoreRaw(size) => print(&scenarios::store_raw(&size)?),
        Cmd::StoreRawMultirow(size) => print(&scenarios::store_raw_multirow(&size)?),
        Cmd::All(size) => all(&size),
        Cmd::Fetch(args) => print(&fetch::fetch(&args)?),
        Cmd::FetchAdaptive(args) => print(&fetch::fetch_adaptive(&args)?),
        Cmd::Store(a) => {
            let size = Size {
                symbols: a.symbols,
                bars: a.bars,
                group: a.group,
                dir: None,
            };
            stores::run(&size, a.backend, &a.url)
        }
        Cmd::Replicate(args) => {
            replicate::replicate(&args.size, args.steady_secs, &args.compression)
        }
        Cmd::Export(size) => export::run(&size),
        Cmd::Data(args) => data::run(&args.size, args.pg_url.as_deref()),
        Cmd::ImportRun(step) => print(&data::import(&step.size, &step.file)?),
        Cmd::CopyRef(step) => print(&data::copy_reference(&step.size, &step.url)?),
        Cmd::MigrateRun(step) => {
            let store = step.store.context("--store names the SQLite store")?;
            print(&data::migrate(&store, &step.url)?)
        }
        Cmd::ExportFill(step) => print(&export::fill(&step.size, &step.store)?),
        Cmd::ExportRun(step) => print(&export::export_store(&step.store, &step.format, step.keep)?),
    }
}

fn print(outcome: &Outcome) -> Result<()> {
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

fn all(size: &Size) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut outcomes = Vec::new();
    for scenario in ["store-raw", "store-raw-multirow", "ingest"] {
        eprintln!(
            "running {scenario} ({} symbols × {} bars)...",
            size.symbols, size.bars
        );
        let mut cmd = Command::new(&exe);
        cmd.arg(scenario)
            .args(["--symbols", &size.symbols.to_string()])
            .args(["--bars", &size.bars.to_string()])
            .args(["--group", &size.group.to_string()]);
        if let Some(dir) = &size.dir {
            cmd.arg("--dir").arg(dir);
        }
        let out = cmd.output().with_context(|| format!("run {scenario}"))?;
        if !out.status.success() {
            bail!(
                "{scenario} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let outcome: Outcome = serde_json::from_str(line.trim())
            .with_context(|| format!("{scenario} printed {line:?}"))?;
        outcomes.push(outcome);
    }
    let raw = &outcomes[0];
    println!("| scenario | bars | seconds | bars/s | vs store-raw | peak RSS (MiB) | notes |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0}% | {:.0} | {} |",
            o.scenario,
            o.bars,
            o.secs,
            o.bars_per_sec,
            100.0 * o.bars_per_sec / raw.bars_per_sec,
            o.peak_rss_mib,
            o.notes
        );
    }
    Ok(())
}
