//! Importing a whole source once: every file of a CSV source is read, compared with the store,
//! and what is new or changed is validated and journaled. Importing the same files again (every
//! start) journals nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dms_common::journal::{Origin, Seq};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::ingest::Ingestor;
use crate::pipeline::reconcile::Reconciler;
use crate::sources::csv::{CsvSeries, CsvSource};

/// Row problems logged per file before the rest are only counted.
const LOGGED_PROBLEMS_PER_FILE: usize = 20;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    pub source: String,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub state: String,
    /// Files read so far, of `files_total` in the source's directory.
    pub files: u64,
    pub files_total: u64,
    pub series: u64,
    pub bars_read: u64,
    /// Bars the store already held with the same values (not journaled again).
    pub bars_unchanged: u64,
    pub bars_accepted: u64,
    pub bars_rejected: u64,
    /// Rows skipped because they could not be read.
    pub rows_skipped: u64,
    /// Files that could not be read at all, with the reason.
    pub failed_files: Vec<String>,
    /// The first row problems, `file:line: reason`.
    pub row_problems: Vec<String>,
    /// The last journal entry written; the import is in the store once the store applier
    /// reached it.
    pub last_seq: Seq,
    pub error: Option<String>,
}

/// What a source import reads: a set of files, one series each (a CSV source's directory).
/// Its calls block (file I/O) and run on the blocking pool.
pub trait SeriesFiles: Send + Sync + 'static {
    /// The source's name, recorded as the origin of its bars.
    fn name(&self) -> &str;
    /// The files, in the order they are imported.
    fn files(&self) -> Result<Vec<PathBuf>, String>;
    /// One file's series: its bars and the rows that are not bars.
    fn read_file(&self, path: &Path) -> Result<CsvSeries, String>;
}

impl SeriesFiles for CsvSource {
    fn name(&self) -> &str {
        CsvSource::name(self)
    }

    fn files(&self) -> Result<Vec<PathBuf>, String> {
        CsvSource::files(self).map_err(|e| e.to_string())
    }

    fn read_file(&self, path: &Path) -> Result<CsvSeries, String> {
        CsvSource::read_file(self, path).map_err(|e| e.to_string())
    }
}

/// Imports every file of `source`; stops between files when `cancel` fires.
pub async fn import_csv(
    source: Arc<dyn SeriesFiles>,
    ingestor: &Ingestor,
    reconciler: &Reconciler,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&ImportSummary),
) -> ImportSummary {
    let mut summary = ImportSummary {
        source: source.name().to_owned(),
        state: "running".into(),
        ..Default::default()
    };
    progress(&summary);
    let files = {
        let source = source.clone();
        match tokio::task::spawn_blocking(move || source.files()).await {
            Ok(Ok(files)) => {
                summary.files_total = files.len() as u64;
                progress(&summary);
                files
            }
            Ok(Err(e)) => return failed(summary, e),
            Err(e) => return failed(summary, e.to_string()),
        }
    };
    let origin = Origin {
        task_id: String::new(),
        source: source.name().to_owned(),
    };
    for path in files {
        if cancel.is_cancelled() {
            summary.state = "cancelled".into();
            progress(&summary);
            return summary;
        }
        summary.files += 1;
        let read = {
            let source = source.clone();
            let path = path.clone();
            tokio::task::spawn_blocking(move || source.read_file(&path)).await
        };
        let series = match read {
            Ok(Ok(series)) => series,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "CSV file skipped");
                summary.failed_files.push(e.to_string());
                progress(&summary);
                continue;
            }
            Err(e) => return failed(summary, e.to_string()),
        };
        for (n, p) in series.problems.iter().enumerate() {
            if n < LOGGED_PROBLEMS_PER_FILE {
                tracing::warn!("{p}");
            }
            if summary.row_problems.len() < 100 {
                summary.row_problems.push(p.to_string());
            }
        }
        if series.problems.len() > LOGGED_PROBLEMS_PER_FILE {
            tracing::warn!(
                file = %path.display(),
                "... and {} more rows skipped",
                series.problems.len() - LOGGED_PROBLEMS_PER_FILE
            );
        }
        summary.rows_skipped += series.problems.len() as u64;
        summary.bars_read += series.bars.len() as u64;
        let key = series.key.clone();
        let read_bars = series.bars.len();
        let changed = reconciler.changed(&key, &series.bars).await;
        summary.bars_unchanged += (read_bars - changed.len()) as u64;
        match ingestor
            .ingest(
                vec![dms_common::SeriesBars::new(series.key, changed)],
                &origin,
            )
            .await
        {
            Ok(report) => {
                summary.series += 1;
                summary.bars_accepted += report.accepted;
                summary.bars_rejected += report.rejected;
                if let Some(seq) = report.seqs.last() {
                    summary.last_seq = *seq;
                }
                for (_, rejections) in &report.rejections {
                    for r in rejections {
                        tracing::warn!(series = %key, ts = %r.bar.ts, reason = %r.reason, "bar quarantined");
                    }
                }
                tracing::info!(
                    series = %key,
                    file = %path.display(),
                    bars = read_bars,
                    accepted = report.accepted,
                    rejected = report.rejected,
                    rows_skipped = series.problems.len(),
                    interval_guessed = series.interval_guessed,
                    "imported"
                );
            }
            Err(e) => return failed(summary, format!("journal write failed: {e}")),
        }
        progress(&summary);
    }
    summary.state = "completed".into();
    progress(&summary);
    summary
}

fn failed(mut summary: ImportSummary, error: String) -> ImportSummary {
    tracing::error!(source = %summary.source, %error, "import failed");
    summary.state = "failed".into();
    summary.error = Some(error);
    summary
}
