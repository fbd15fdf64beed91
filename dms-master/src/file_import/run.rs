//! The import of a file as a task: a blocking reader thread reads the file in batches of
//! [`BATCH_ROWS`] rows into a bounded channel (so memory holds at most a few batches), the task
//! maps each batch's rows to bars, journals the new or changed ones ([`journal_page`]) and
//! reports the rows done, which the task saves: a resumed import skips that many rows. Rows
//! that are not bars are counted, the first listed in the task, and every one written to the
//! import's quarantine file (CSV: `row,sheet,reason`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use dms_common::journal::Origin;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::read::Item;
use super::{BATCH_ROWS, FileImportSpec, RowProblem, map_item};
use crate::ingest::Ingestor;
use crate::reconcile::Reconciler;
use crate::table_import::{TableImportSummary, journal_page};

/// Row problems logged per import before the rest are only counted.
const LOGGED_PROBLEMS: u64 = 20;
/// Row problems listed in the task (all are in the quarantine file).
const LISTED_PROBLEMS: usize = 100;

/// The batches of a file being read.
#[derive(Debug)]
pub struct Batches {
    rx: mpsc::Receiver<Result<Vec<Item>, String>>,
    /// The place of each [`super::Field::ALL`] among a record's cells.
    pub places: super::Places,
    /// Rows in the file, when its format tells.
    pub total_rows: Option<u64>,
}

impl Batches {
    /// The next batch; None once the file is read.
    pub async fn recv(&mut self) -> Option<Result<Vec<Item>, String>> {
        self.rx.recv().await
    }
}

/// Starts reading `spec`'s file on a blocking thread.
pub fn read_batches(spec: &FileImportSpec) -> Result<Batches, String> {
    let (mut reader, places) = spec.open()?;
    let total_rows = reader.total_rows();
    let (tx, rx) = mpsc::channel(2);
    let (path, name) = (spec.path.clone(), spec.file_name.clone());
    tokio::task::spawn_blocking(move || {
        loop {
            let mut items = Vec::with_capacity(BATCH_ROWS);
            match reader.next_batch(BATCH_ROWS, &mut items) {
                Ok(false) => break,
                Ok(true) => {
                    if tx.blocking_send(Ok(items)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let message = super::rename(&e.to_string(), &path, &name);
                    let _ = tx.blocking_send(Err(message));
                    break;
                }
            }
        }
    });
    Ok(Batches {
        rx,
        places,
        total_rows,
    })
}

/// Where the rows of a task's import that are not bars are written.
pub fn quarantine_path(dir: &Path, task_id: &str) -> PathBuf {
    dir.join(format!("{task_id}.csv"))
}

/// Imports `spec`'s file, skipping the `summary.rows_read` rows an earlier run journaled;
/// stops between batches when `cancel` fires. Rows that are not bars go to `quarantine`.
#[allow(clippy::too_many_arguments)]
pub async fn import_file(
    spec: &FileImportSpec,
    ingestor: &Ingestor,
    reconciler: &Reconciler,
    mut summary: TableImportSummary,
    task_id: &str,
    quarantine: &Path,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&TableImportSummary),
) -> TableImportSummary {
    summary.source = spec.file_name.clone();
    summary.state = "running".into();
    let mapper = match spec.mapper() {
        Ok(m) => m,
        Err(e) => return failed(summary, e),
    };
    let mut batches = match read_batches(spec) {
        Ok(b) => b,
        Err(e) => return failed(summary, e),
    };
    if let Some(n) = batches.total_rows {
        summary.rows_total = n;
    }
    let mut quarantined = match Quarantined::open(quarantine, summary.rows_read > 0) {
        Ok(q) => q,
        Err(e) => return failed(summary, e),
    };
    progress(&summary);
    let origin = Origin {
        task_id: task_id.to_owned(),
        source: format!("file {}", spec.file_name),
    };
    // Rows an earlier run journaled.
    let mut skip = summary.rows_read;
    loop {
        if cancel.is_cancelled() {
            summary.state = "cancelled".into();
            progress(&summary);
            return summary;
        }
        let items = match batches.recv().await {
            None => break,
            Some(Ok(items)) => items,
            Some(Err(e)) => return failed(summary, e),
        };
        let items = if skip > 0 {
            let n = (skip as usize).min(items.len());
            skip -= n as u64;
            items.into_iter().skip(n).collect()
        } else {
            items
        };
        if items.is_empty() {
            continue;
        }
        let rows = items.len() as u64;
        let mut by_series: BTreeMap<_, Vec<_>> = BTreeMap::new();
        let mut problems = Vec::new();
        for item in items {
            match map_item(item, &mapper, &batches.places) {
                Ok((key, bar)) => by_series.entry(key).or_default().push(bar),
                Err(p) => problems.push(p),
            }
        }
        // The batch's problems are on disk before its rows count as done.
        if let Err(e) = quarantined.write(&problems) {
            return failed(summary, e);
        }
        for p in problems {
            if summary.rows_skipped < LOGGED_PROBLEMS {
                tracing::warn!(file = %spec.file_name, "{p}");
            }
            summary.rows_skipped += 1;
            if summary.row_problems.len() < LISTED_PROBLEMS {
                summary.row_problems.push(p.to_string());
            }
        }
        if let Err(e) = journal_page(
            by_series,
            spec.mode,
            ingestor,
            reconciler,
            &origin,
            &mut summary,
        )
        .await
        {
            return failed(summary, e);
        }
        summary.rows_read += rows;
        summary.pages += 1;
        summary.rows_total = summary.rows_total.max(summary.rows_read);
        progress(&summary);
    }
    summary.rows_total = summary.rows_read;
    summary.state = "completed".into();
    tracing::info!(
        file = %spec.file_name,
        rows = summary.rows_read,
        written = summary.bars_accepted,
        unchanged = summary.bars_unchanged,
        skipped = summary.rows_skipped,
        "file imported"
    );
    progress(&summary);
    summary
}

fn failed(mut summary: TableImportSummary, error: String) -> TableImportSummary {
    tracing::error!(file = %summary.source, %error, "file import failed");
    summary.state = "failed".into();
    summary.error = Some(error);
    summary
}

/// The quarantine file of an import, created at its first problem.
struct Quarantined {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Append to what an earlier run wrote.
    resumed: bool,
}

impl Quarantined {
    fn open(path: &Path, resumed: bool) -> Result<Quarantined, String> {
        Ok(Quarantined {
            path: path.to_owned(),
            file: None,
            resumed,
        })
    }

    fn write(&mut self, problems: &[RowProblem]) -> Result<(), String> {
        if problems.is_empty() {
            return Ok(());
        }
        let err = |e: std::io::Error| format!("quarantine file {}: {e}", self.path.display());
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let exists = self.path.exists();
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(self.resumed)
                .write(true)
                .truncate(!self.resumed)
                .open(&self.path)
                .map_err(err)?;
            if !(self.resumed && exists) {
                file.write_all(b"row,sheet,reason\n").map_err(err)?;
            }
            self.file = Some(file);
        }
        let mut out = Vec::new();
        for p in problems {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record([
                p.row.to_string().as_str(),
                p.sheet.as_deref().unwrap_or(""),
                p.reason.as_str(),
            ])
            .map_err(|e| format!("quarantine file {}: {e}", self.path.display()))?;
            w.flush().map_err(err)?;
        }
        let file = self.file.as_mut().map(|f| {
            f.write_all(&out)?;
            f.sync_data()
        });
        file.transpose().map_err(err)?;
        Ok(())
    }
}
