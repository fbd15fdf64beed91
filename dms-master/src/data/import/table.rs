//! Importing a SQL table source ([`SqlTable`]) page by page: each page's rows become bars,
//! rows that are not bars are reported with their key and the reason, and the bars go through
//! the journal like every other write (only the new or changed ones in `upsert` mode, only the
//! ones at new times in `insert_only` mode). After each page the key of its last row is
//! reported, so a resumed import reads on from there; a page read twice (a crash between its
//! journal append and the saved key) journals nothing the second time.

use std::collections::BTreeMap;

use dms_common::journal::Origin;
use dms_common::{Bar, SeriesBars, SeriesKey};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::ingest::Ingestor;
use crate::pipeline::reconcile::Reconciler;
use crate::sources::rows::ImportMode;
use crate::sources::sql::{KeyValue, Page, SqlRow, SqlTable};

/// Row problems logged per import before the rest are only counted.
const LOGGED_PROBLEMS: usize = 20;

/// What a row import (a SQL table's, a file's) did so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RowImportSummary {
    pub source: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub state: String,
    pub rows_total: u64,
    pub rows_read: u64,
    pub pages: u64,
    pub bars_accepted: u64,
    /// Bars the store already held: with the same values (`upsert`), or at all
    /// (`insert_only`, kept as stored).
    pub bars_unchanged: u64,
    pub bars_rejected: u64,
    /// Rows that are not bars (a bad value, an empty price): skipped.
    pub rows_skipped: u64,
    /// The first row problems.
    pub row_problems: Vec<String>,
    /// The key of the last row journaled: a resumed import reads on after it.
    pub resume_after: Option<Vec<KeyValue>>,
    pub error: Option<String>,
}

/// What a table import reads: a table's rows as bars, in pages in key order, from after a key.
/// The SQL-table source ([`SqlTable`]) is one.
#[async_trait::async_trait]
pub trait TablePages: Send + Sync {
    /// The source's name, recorded as the origin of its bars.
    fn name(&self) -> &str;
    /// What the import does with bars already stored.
    fn mode(&self) -> ImportMode;
    /// How many rows the table holds, for progress.
    async fn count(&self) -> Result<u64, String>;
    /// The next page after the row with key `after` (from the first row when None).
    async fn page(&self, after: Option<&[KeyValue]>) -> Result<Page, String>;
}

#[async_trait::async_trait]
impl TablePages for SqlTable {
    fn name(&self) -> &str {
        SqlTable::name(self)
    }

    fn mode(&self) -> ImportMode {
        self.config().mode
    }

    async fn count(&self) -> Result<u64, String> {
        SqlTable::count(self).await
    }

    async fn page(&self, after: Option<&[KeyValue]>) -> Result<Page, String> {
        SqlTable::page(self, after).await
    }
}

/// Imports `table` from after `resume_after` (from the start when None); stops between pages
/// when `cancel` fires.
pub async fn import_table(
    table: &dyn TablePages,
    ingestor: &Ingestor,
    reconciler: &Reconciler,
    mut summary: RowImportSummary,
    task_id: &str,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&RowImportSummary),
) -> RowImportSummary {
    summary.source = table.name().to_owned();
    summary.state = "running".into();
    match table.count().await {
        Ok(n) => summary.rows_total = n,
        Err(e) => return failed(summary, e),
    }
    progress(&summary);
    let origin = Origin {
        task_id: task_id.to_owned(),
        source: table.name().to_owned(),
    };
    let mode = table.mode();
    loop {
        if cancel.is_cancelled() {
            summary.state = "cancelled".into();
            progress(&summary);
            return summary;
        }
        let page = match table.page(summary.resume_after.as_deref()).await {
            Ok(p) => p,
            Err(e) => return failed(summary, e),
        };
        let Some(last_key) = page.last_key else { break };
        let rows = page.rows.len() as u64;
        let mut by_series: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for row in page.rows {
            match row {
                SqlRow::Bar(key, bar) => by_series.entry(key).or_default().push(bar),
                SqlRow::Problem(p) => {
                    if summary.rows_skipped < LOGGED_PROBLEMS as u64 {
                        tracing::warn!(source = table.name(), "{p}");
                    }
                    if summary.row_problems.len() < 100 {
                        summary.row_problems.push(p);
                    }
                    summary.rows_skipped += 1;
                }
            }
        }
        if let Err(e) =
            journal_page(by_series, mode, ingestor, reconciler, &origin, &mut summary).await
        {
            return failed(summary, e);
        }
        summary.rows_read += rows;
        summary.pages += 1;
        summary.resume_after = Some(last_key);
        tracing::info!(
            source = table.name(),
            page = summary.pages,
            rows,
            rows_read = summary.rows_read,
            rows_total = summary.rows_total,
            written = summary.bars_accepted,
            "page imported"
        );
        progress(&summary);
    }
    summary.state = "completed".into();
    progress(&summary);
    summary
}

/// Journals the bars of one page of rows: per series in time order, the last row of a time
/// winning (as a database upsert of the rows in order would); in `upsert` mode the new or
/// changed bars, in `insert_only` mode the bars at new times. Counts them in `summary`.
pub async fn journal_page(
    by_series: BTreeMap<SeriesKey, Vec<Bar>>,
    mode: ImportMode,
    ingestor: &Ingestor,
    reconciler: &Reconciler,
    origin: &Origin,
    summary: &mut RowImportSummary,
) -> Result<(), String> {
    let mut batch = Vec::new();
    for (key, mut bars) in by_series {
        bars.sort_by_key(|b| b.ts);
        bars.reverse();
        bars.dedup_by_key(|b| b.ts);
        bars.reverse();
        let read = bars.len() as u64;
        let keep = match mode {
            ImportMode::Upsert => reconciler.changed(&key, &bars).await,
            ImportMode::InsertOnly => reconciler.missing(&key, &bars).await,
        };
        summary.bars_unchanged += read - keep.len() as u64;
        if !keep.is_empty() {
            batch.push(SeriesBars::new(key, keep));
        }
    }
    let report = ingestor
        .ingest(batch, origin)
        .await
        .map_err(|e| format!("journal write failed: {e}"))?;
    summary.bars_accepted += report.accepted;
    summary.bars_rejected += report.rejected;
    Ok(())
}

fn failed(mut summary: RowImportSummary, error: String) -> RowImportSummary {
    tracing::error!(source = %summary.source, %error, "table import failed");
    summary.state = "failed".into();
    summary.error = Some(error);
    summary
}
