//! `export`: a SQLite store of S symbols × N daily bars (default 12.6M), exported to Parquet
//! and to CSV through the master's export code: [`dms_master::data::export::plan`], then
//! [`dms_master::data::export::start`] (the reader task paging the store, the blocking encoder, the
//! chunk channel), exactly what `GET /api/data/export` and the admin `Export` stream run. The
//! transport is left out: the chunks are written to a file as they arrive, as `dmsctl export`
//! does with the gRPC stream's.
//!
//! Each step runs in its own process (the fill, then one export per format), so the peak RSS
//! reported for an export is that export's alone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use dms_common::store::sqlite::SqliteStore;
use dms_common::store::{BarStore, SharedStore};
use dms_master::data::export::{self, ExportEvent, ExportQuery};

use crate::generator::BarGenerator;
use crate::scenarios::{peak_rss_mib, workdir};
use crate::{Outcome, Size};

/// Runs the fill and both exports, each in a child process; prints one JSON line per step and
/// a table.
pub(crate) fn run(size: &Size) -> Result<()> {
    let dir = workdir(size)?;
    let store = dir.path().join("bars.db");
    let exe = std::env::current_exe()?;
    let child = |args: &[&str]| -> Result<Outcome> {
        let out = Command::new(&exe)
            .args(args)
            .arg("--store")
            .arg(&store)
            .args(["--symbols", &size.symbols.to_string()])
            .args(["--bars", &size.bars.to_string()])
            .args(["--group", &size.group.to_string()])
            .output()
            .with_context(|| format!("run {args:?}"))?;
        if !out.status.success() {
            bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        println!("{}", line.trim());
        serde_json::from_str(line.trim()).with_context(|| format!("{args:?} printed {line:?}"))
    };
    eprintln!(
        "filling a SQLite store with {} symbols × {} bars...",
        size.symbols, size.bars
    );
    let fill = child(&["export-fill"])?;
    let mut outcomes = vec![fill];
    for format in ["parquet", "csv"] {
        eprintln!("exporting to {format}...");
        outcomes.push(child(&["export-run", "--format", format])?);
    }
    println!("| step | bars | seconds | bars/s | peak RSS (MiB) | notes |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {} |",
            o.scenario, o.bars, o.secs, o.bars_per_sec, o.peak_rss_mib, o.notes
        );
    }
    Ok(())
}

/// Fills the store at `path` through `SqliteStore::upsert`, `size.group` series per batch.
pub(crate) fn fill(size: &Size, path: &Path) -> Result<Outcome> {
    let runtime = crate::scenarios::runtime()?;
    runtime.block_on(async {
        let store = SqliteStore::open(path)?;
        let generator = BarGenerator { bars: size.bars };
        let dates = generator.dates();
        let started = Instant::now();
        let mut total = 0u64;
        let mut i = 0;
        while i < size.symbols {
            let end = (i + size.group).min(size.symbols);
            let batch: Vec<_> = (i..end).map(|s| generator.series(s, &dates)).collect();
            total += store.upsert(&batch).await?.inserted;
            i = end;
        }
        let secs = started.elapsed().as_secs_f64();
        Ok(Outcome {
            scenario: "fill (SqliteStore::upsert)".into(),
            bars: total,
            secs,
            bars_per_sec: total as f64 / secs,
            peak_rss_mib: peak_rss_mib(),
            notes: format!("{} series per upsert", size.group),
        })
    })
}

/// Exports every series of the store at `path` in `format` to a file beside it.
pub(crate) fn export_store(path: &Path, format: &str, keep: bool) -> Result<Outcome> {
    let runtime = crate::scenarios::runtime()?;
    runtime.block_on(async {
        let store: SharedStore = Arc::new(SqliteStore::open(path)?);
        let expected: u64 = store.overview().await?.iter().map(|o| o.count).sum();
        let out_path: PathBuf = path.with_extension(format);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out_path)?);
        let started = Instant::now();
        let query = ExportQuery {
            format: Some(format.to_owned()),
            ..Default::default()
        };
        let request = query.check().map_err(anyhow::Error::msg)?;
        let plan = export::plan(&*store, request).await?;
        let mut stream = export::start(store.clone(), &plan);
        let (bars, bytes) = loop {
            match stream.next().await.context("the export stream ended")? {
                Ok(ExportEvent::Data(chunk)) => out.write_all(&chunk.data)?,
                Ok(ExportEvent::Done { bars, bytes }) => break (bars, bytes),
                Err(e) => bail!("export failed: {e}"),
            }
        };
        out.flush()?;
        let secs = started.elapsed().as_secs_f64();
        let peak = peak_rss_mib();
        ensure!(bars == expected, "exported {bars} of {expected} bars");
        let mut notes = format!(
            "{} MiB file ({:.1} bytes/bar), {}",
            bytes >> 20,
            bytes as f64 / bars.max(1) as f64,
            plan.file_name
        );
        if format == "parquet" {
            notes.push_str(&parquet_check(&out_path, bars)?);
        }
        if !keep {
            std::fs::remove_file(&out_path)?;
        }
        Ok(Outcome {
            scenario: format!("export {format}"),
            bars,
            secs,
            bars_per_sec: bars as f64 / secs,
            peak_rss_mib: peak,
            notes,
        })
    })
}

/// Reads the Parquet footer back: its row count must be the bars exported.
fn parquet_check(path: &Path, bars: u64) -> Result<String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(path)?)?;
    let meta = reader.metadata();
    let rows = meta.file_metadata().num_rows() as u64;
    ensure!(
        rows == bars,
        "the file holds {rows} rows, {bars} bars were exported"
    );
    Ok(format!(
        "; zstd, {} row groups, footer read back: {rows} rows",
        meta.num_row_groups()
    ))
}
