//! The scenarios themselves. Each runs in a fresh temporary directory and reports bars/s and
//! the process's peak RSS.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use dms_common::journal::{Journal, Origin, RetentionPolicy, Seq};
use dms_common::store::SharedStore;
use dms_common::store::sqlite::{self, SqliteOptions, SqliteStore};
use dms_master::pipeline::applier::{self, ApplierOptions};
use dms_master::pipeline::ingest::Ingestor;
use dms_master::pipeline::quarantine::Quarantine;
use tokio_util::sync::CancellationToken;

use crate::generator::BarGenerator;
use crate::{Outcome, Size};

pub(crate) fn workdir(size: &Size) -> Result<tempfile::TempDir> {
    let base = size.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    Ok(tempfile::Builder::new()
        .prefix("dms-bench-")
        .tempdir_in(base)?)
}

/// Peak resident set size of this process, from /proc/self/status (VmHWM).
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The benchmarks' runtime: two worker threads, as the machine has two cores.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// The master's write path over files in `dir`: the journal, a SQLite bar store, the store
/// applier and the ingestor in front of them.
pub(crate) struct WritePath {
    pub(crate) journal: Journal,
    pub(crate) store: SharedStore,
    pub(crate) applier: applier::ApplierHandle,
    pub(crate) ingestor: Ingestor,
    /// Stops the applier.
    pub(crate) stop: CancellationToken,
}

impl WritePath {
    pub(crate) async fn open(dir: &std::path::Path) -> Result<WritePath> {
        let state = dir.join("state.db");
        let journal = Journal::open(&state, RetentionPolicy::default())?;
        let store: SharedStore = Arc::new(SqliteStore::open(dir.join("bars.db"))?);
        let stop = CancellationToken::new();
        let applier = applier::start(
            journal.clone(),
            store.clone(),
            ApplierOptions::default(),
            stop.clone(),
        )
        .await?;
        let ingestor = Ingestor::new(journal.clone(), Quarantine::open(&state)?);
        Ok(WritePath {
            journal,
            store,
            applier,
            ingestor,
            stop,
        })
    }
}

pub(crate) fn ingest(size: &Size) -> Result<Outcome> {
    let dir = workdir(size)?;
    let runtime = runtime()?;
    runtime.block_on(async {
        let WritePath {
            journal,
            applier,
            ingestor,
            stop,
            ..
        } = WritePath::open(dir.path()).await?;
        let retention = {
            let journal = journal.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                        _ = stop.cancelled() => {}
                    }
                    journal
                        .apply_retention(chrono::Utc::now().timestamp_millis())
                        .await
                        .context("retention")?;
                }
                anyhow::Ok(())
            })
        };
        let generator = BarGenerator { bars: size.bars };
        let dates = generator.dates();
        let started = Instant::now();
        let (total, last) = journal_generated(&ingestor, size, &generator, &dates).await?;
        let journaled = started.elapsed().as_secs_f64();
        applier.wait_applied(last).await;
        let secs = started.elapsed().as_secs_f64();
        stop.cancel();
        let status = applier.status();
        applier.join(std::time::Duration::from_secs(30)).await;
        retention.await??;
        anyhow::ensure!(
            status.bars.inserted == total,
            "store inserted {} of {total}",
            status.bars.inserted
        );
        Ok(Outcome {
            scenario: "ingest".into(),
            bars: total,
            secs,
            bars_per_sec: total as f64 / secs,
            peak_rss_mib: peak_rss_mib(),
            notes: format!(
                "journaled in {journaled:.1} s; {} journal appends of {} series",
                size.symbols.div_ceil(size.group),
                size.group
            ),
        })
    })
}

/// Journals every generated series through `ingestor`, `size.group` series per append;
/// returns the bars accepted and the last seq written.
pub(crate) async fn journal_generated(
    ingestor: &Ingestor,
    size: &Size,
    generator: &BarGenerator,
    dates: &[dms_common::Timestamp],
) -> Result<(u64, Seq)> {
    let origin = Origin {
        task_id: "bench".into(),
        source: "generator".into(),
    };
    let (mut total, mut last) = (0u64, Seq(0));
    let mut i = 0;
    while i < size.symbols {
        let end = (i + size.group).min(size.symbols);
        let batch: Vec<_> = (i..end).map(|s| generator.series(s, dates)).collect();
        let report = ingestor.ingest(batch, &origin).await?;
        anyhow::ensure!(
            report.rejected == 0,
            "generated bars were rejected: {report:?}"
        );
        total += report.accepted;
        last = *report.seqs.last().unwrap_or(&last);
        i = end;
    }
    Ok((total, last))
}

/// `store-raw`: one prepared single-row upsert per bar, as the reference is defined.
pub(crate) fn store_raw(size: &Size) -> Result<Outcome> {
    raw_load(size, 1, "store-raw")
}

/// `store-raw-multirow`: the same upsert with 64 rows per statement, the engine's ceiling
/// for the technique the SQLite store uses on its append path.
pub(crate) fn store_raw_multirow(size: &Size) -> Result<Outcome> {
    raw_load(size, 64, "store-raw-multirow")
}

fn raw_upsert_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p: Vec<String> = (1..=10).map(|c| format!("?{}", r * 10 + c)).collect();
            format!("({})", p.join(","))
        })
        .collect();
    format!(
        "INSERT INTO bars (series_id, ts, open, high, low, close, volume, adj_close, turnover, open_interest)
         VALUES {}
         ON CONFLICT (series_id, ts) DO UPDATE SET
           open = excluded.open, high = excluded.high, low = excluded.low,
           close = excluded.close, volume = excluded.volume, adj_close = excluded.adj_close,
           turnover = excluded.turnover, open_interest = excluded.open_interest",
        values.join(",")
    )
}

fn raw_load(size: &Size, rows_per_statement: usize, name: &str) -> Result<Outcome> {
    let dir = workdir(size)?;
    let mut conn = rusqlite::Connection::open(dir.path().join("bars.db"))?;
    sqlite::apply_pragmas(&conn, &SqliteOptions::default())?;
    conn.execute_batch(sqlite::SCHEMA)?;
    let generator = BarGenerator { bars: size.bars };
    let dates = generator.dates();
    // Large transactions: five journal groups' worth of series per commit.
    let per_tx = size.group * 5;
    let multi_sql = raw_upsert_sql(rows_per_statement);
    let single_sql = raw_upsert_sql(1);
    let started = Instant::now();
    let mut total = 0u64;
    let mut i = 0;
    while i < size.symbols {
        let end = (i + per_tx).min(size.symbols);
        let tx = conn.transaction()?;
        {
            let mut series = tx.prepare_cached(
                "INSERT INTO series (symbol, interval) VALUES (?1, ?2) RETURNING id",
            )?;
            let mut multi = tx.prepare_cached(&multi_sql)?;
            let mut single = tx.prepare_cached(&single_sql)?;
            for s in i..end {
                let sb = generator.series(s, &dates);
                let id: i64 = series.query_row(
                    rusqlite::params![sb.key.symbol.as_str(), sb.key.interval.as_str()],
                    |r| r.get(0),
                )?;
                let mut chunks = sb.bars.chunks_exact(rows_per_statement);
                for chunk in &mut chunks {
                    for (r, b) in chunk.iter().enumerate() {
                        sqlite::bind_bar(&mut multi, r * 10 + 1, id, b)?;
                    }
                    multi.raw_execute()?;
                }
                for b in chunks.remainder() {
                    sqlite::bind_bar(&mut single, 1, id, b)?;
                    single.raw_execute()?;
                }
                total += sb.bars.len() as u64;
            }
        }
        tx.commit()?;
        i = end;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Outcome {
        scenario: name.into(),
        bars: total,
        secs,
        bars_per_sec: total as f64 / secs,
        peak_rss_mib: peak_rss_mib(),
        notes: format!(
            "prepared upsert, {rows_per_statement} row(s) per statement, {per_tx} series per transaction"
        ),
    })
}
