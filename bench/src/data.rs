//! `data`: the data-management paths on 12.6M bars (by default), each step in its own process
//! so each peak RSS is its own:
//!
//! 1. fill a SQLite store (as `export` does), 2. export it to Parquet (the file kept),
//! 3. `ingest` (the reference: the same bars from the generator through validation → journal →
//!    applier → SQLite), 4. import of the Parquet file into an empty master store through the
//!    file import's task code ([`dms_master::data::import::file::run::import_file`]: the reader thread,
//!    the mapping, the reconcile against the store, the journal, the applier), timed until the
//!    store applied the last entry.
//!
//! With `--pg-url`: 5. the PostgreSQL `COPY` reference (the same rows into a plain table), and
//! 6. the migration's copy of the filled SQLite store into an empty PostgreSQL store (what the
//!    migrate task runs: [`dms_master::data::migrate::read_ahead`] reading the source while the
//!    target's `upsert` writes 50,000 bars of several series at a time).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use dms_common::store::sqlite::SqliteStore;
use dms_common::store::{SharedStore, open_store};
use dms_master::data::import::file::{FileImportQuery, run::import_file};
use dms_master::data::import::table::RowImportSummary;
use dms_master::pipeline::reconcile::Reconciler;
use tokio_util::sync::CancellationToken;

use crate::generator::BarGenerator;
use crate::scenarios::{WritePath, peak_rss_mib, workdir};
use crate::stores::{Backend, Database};
use crate::{Outcome, Size};

/// Runs every step in a child process; prints one JSON line per step and a table.
pub(crate) fn run(size: &Size, pg_url: Option<&str>) -> Result<()> {
    let dir = workdir(size)?;
    let store = dir.path().join("bars.db");
    let exe = std::env::current_exe()?;
    let sizes = [
        "--symbols".to_owned(),
        size.symbols.to_string(),
        "--bars".into(),
        size.bars.to_string(),
        "--group".into(),
        size.group.to_string(),
    ];
    let child = |args: &[&str]| -> Result<Outcome> {
        let out = Command::new(&exe)
            .args(args)
            .args(&sizes)
            // As the systemd units run the daemons (deploy/*.service).
            .env("MALLOC_ARENA_MAX", "2")
            .output()
            .with_context(|| format!("run {args:?}"))?;
        if !out.status.success() {
            bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let line = line.trim().lines().last().unwrap_or("");
        println!("{line}");
        serde_json::from_str(line).with_context(|| format!("{args:?} printed {line:?}"))
    };
    let store_arg = store.to_str().context("a UTF-8 path")?;
    eprintln!("filling a SQLite store...");
    let mut outcomes = vec![child(&["export-fill", "--store", store_arg])?];
    eprintln!("exporting it to Parquet...");
    outcomes.push(child(&[
        "export-run",
        "--store",
        store_arg,
        "--format",
        "parquet",
        "--keep",
    ])?);
    let parquet = store.with_extension("parquet");
    let dir_arg = dir.path().to_str().context("a UTF-8 path")?;
    eprintln!("ingest (the reference)...");
    outcomes.push(child(&["ingest", "--dir", dir_arg])?);
    eprintln!("importing the Parquet file...");
    outcomes.push(child(&[
        "import-run",
        "--file",
        parquet.to_str().context("a UTF-8 path")?,
        "--dir",
        dir_arg,
    ])?);
    std::fs::remove_file(&parquet)?;
    if let Some(url) = pg_url {
        eprintln!("PostgreSQL COPY (the reference)...");
        outcomes.push(child(&["copy-ref", "--url", url])?);
        eprintln!("migrating the SQLite store to PostgreSQL...");
        outcomes.push(child(&["migrate-run", "--store", store_arg, "--url", url])?);
    }
    println!("| step | bars | seconds | bars/s | peak RSS (MiB) | notes |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {} |",
            o.scenario, o.bars, o.secs, o.bars_per_sec, o.peak_rss_mib, o.notes
        );
    }
    let rate = |name: &str| {
        outcomes
            .iter()
            .find(|o| o.scenario.starts_with(name))
            .map(|o| o.bars_per_sec)
    };
    if let (Some(import), Some(ingest)) = (rate("import"), rate("ingest")) {
        println!("\nimport vs ingest: {:.0}%", 100.0 * import / ingest);
    }
    if let (Some(migrate), Some(copy)) = (rate("migrate"), rate("copy")) {
        println!("migration vs COPY: {:.0}%", 100.0 * migrate / copy);
    }
    Ok(())
}

/// Imports the Parquet file at `file` into a fresh master store in `size.dir`.
pub(crate) fn import(size: &Size, file: &Path) -> Result<Outcome> {
    let dir = workdir(size)?;
    crate::scenarios::runtime()?.block_on(async {
        let WritePath {
            journal,
            store,
            applier,
            ingestor,
            stop,
        } = WritePath::open(dir.path()).await?;
        let reconciler = Reconciler {
            ingestor: ingestor.clone(),
            store: store.clone(),
            applied: applier.applied(),
        };
        let query = FileImportQuery {
            path: Some(file.display().to_string()),
            ..FileImportQuery::default()
        };
        // A file named by path is read only inside the allowed directories: its own.
        let allowed = [file
            .parent()
            .ok_or_else(|| anyhow::anyhow!("{} has no directory", file.display()))?
            .to_path_buf()];
        let spec = query
            .check(None, &allowed)
            .await
            .map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        let summary = import_file(
            &spec,
            &ingestor,
            &reconciler,
            RowImportSummary::default(),
            "bench",
            &dir.path().join("quarantine.csv"),
            &CancellationToken::new(),
            |_| {},
        )
        .await;
        ensure!(
            summary.state == "completed",
            "the import ended {}: {:?}",
            summary.state,
            summary.error
        );
        let journaled = started.elapsed().as_secs_f64();
        applier.wait_applied(journal.head()).await;
        let secs = started.elapsed().as_secs_f64();
        stop.cancel();
        let status = applier.status();
        applier.join(std::time::Duration::from_secs(30)).await;
        ensure!(
            status.bars.inserted == summary.bars_accepted && summary.rows_skipped == 0,
            "store inserted {} of {} ({} rows skipped)",
            status.bars.inserted,
            summary.bars_accepted,
            summary.rows_skipped
        );
        Ok(Outcome {
            scenario: "import parquet (file import task → journal → store)".into(),
            bars: summary.bars_accepted,
            secs,
            bars_per_sec: summary.bars_accepted as f64 / secs,
            peak_rss_mib: peak_rss_mib(),
            notes: format!(
                "journaled in {journaled:.1} s; {} batches of {} rows",
                summary.pages,
                dms_master::data::import::file::BATCH_ROWS
            ),
        })
    })
}

/// The PostgreSQL `COPY` reference: the generated bars into a plain table of a new database.
pub(crate) fn copy_reference(size: &Size, url: &str) -> Result<Outcome> {
    crate::scenarios::runtime()?.block_on(async {
        let db = Database::create(Backend::Postgres, url).await?;
        let generator = BarGenerator { bars: size.bars };
        let dates = generator.dates();
        let started = Instant::now();
        let result = crate::stores::raw_postgres(&db.store_url, size, &generator, &dates).await;
        let secs = started.elapsed().as_secs_f64();
        db.drop_all().await;
        result?;
        let bars = (size.symbols * size.bars) as u64;
        Ok(Outcome {
            scenario: "copy (PostgreSQL COPY of the same rows)".into(),
            bars,
            secs,
            bars_per_sec: bars as f64 / secs,
            peak_rss_mib: peak_rss_mib(),
            notes: "CSV COPY FROM STDIN into a plain table with a primary key".into(),
        })
    })
}

/// The migration's copy of the SQLite store at `path` into an empty PostgreSQL store.
pub(crate) fn migrate(path: &PathBuf, url: &str) -> Result<Outcome> {
    crate::scenarios::runtime()?.block_on(async {
        let source: SharedStore = Arc::new(SqliteStore::open(path)?);
        let db = Database::create(Backend::Postgres, url).await?;
        let result = async {
            let target = open_store(&db.store_config()?).await?;
            let series = source.overview().await?;
            let started = Instant::now();
            let mut bars = 0u64;
            let keys = series.iter().map(|o| o.key.clone()).collect();
            let mut batches = dms_master::data::migrate::read_ahead(source.clone(), keys);
            while let Some(batch) = batches.next().await {
                let batch = batch.map_err(anyhow::Error::msg)?;
                target.upsert(&batch.series).await?;
                bars += batch.bars;
            }
            let secs = started.elapsed().as_secs_f64();
            let stored: u64 = target.overview().await?.iter().map(|o| o.count).sum();
            ensure!(stored == bars, "the target holds {stored} of {bars} bars");
            anyhow::Ok(Outcome {
                scenario: "migrate SQLite → PostgreSQL (the migrate task's copy)".into(),
                bars,
                secs,
                bars_per_sec: bars as f64 / secs,
                peak_rss_mib: peak_rss_mib(),
                notes: format!(
                    "{} series, 50,000 bars per PostgresStore::upsert",
                    series.len()
                ),
            })
        }
        .await;
        db.drop_all().await;
        result
    })
}
