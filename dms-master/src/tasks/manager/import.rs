//! The import tasks: a CSV source's files, a SQL table page by page, one file; each driven to its
//! end with progress reports, cancel and shutdown taking effect between pages or files.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Run, Stop, TaskManager};
use crate::data::import::source::{self, ImportSummary};
use crate::data::import::table::{self, RowImportSummary, TablePages};
use crate::tasks::{FailedSeries, Task, TaskCounters};

impl TaskManager {
    /// Reads every file of the task's CSV source (or the table of its SQL source). Cancel and
    /// shutdown take effect between files; an interrupted file import runs again from the
    /// first file at the next start (files whose bars are stored unchanged journal nothing).
    pub(super) async fn import_source(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        cancel: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let name = task.params.source.clone().unwrap_or_default();
        if let Some(table) = self.sql_source(&name) {
            return self
                .import_table(task, run, table, counters, (cancel, shutdown))
                .await;
        }
        let Some(csv) = self.ctx.universe.sources().csv(&name) else {
            return Err((
                Stop::Invalid(format!(
                    "source {name:?} is no longer a configured CSV or SQL source"
                )),
                counters,
            ));
        };
        tracing::info!(source = %name, "source import begins");
        let imports = self.ctx.imports.clone();
        let slot = {
            let mut all = imports.lock().unwrap_or_else(|p| p.into_inner());
            all.push(ImportSummary {
                source: name.clone(),
                state: "running".into(),
                ..ImportSummary::default()
            });
            all.len() - 1
        };
        let reconciler = self.reconciler();
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(ImportSummary::default());
        let import = source::import_csv(csv.clone(), &self.ctx.ingestor, &reconciler, &stop, |s| {
            imports.lock().unwrap_or_else(|p| p.into_inner())[slot] = s.clone();
            seen.send_replace(s.clone());
        });
        let mut last_report = Instant::now();
        let mut driven = Driven::new(import, summaries, stop.clone());
        let (summary, why) = loop {
            let s = match driven.next((cancel, shutdown)).await {
                Next::Progress(s) => s,
                Next::Done(s, why) => break (s, why),
            };
            import_counters(&s, &mut counters);
            if last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                run.stamp(&mut counters);
                let message = format!(
                    "{} of {} files read, {} bars written, {} unchanged",
                    s.files, s.files_total, s.bars_accepted, s.bars_unchanged
                );
                self.report(task, &counters, message).await;
            }
        };
        import_counters(&summary, &mut counters);
        tracing::info!(
            source = %summary.source,
            state = %summary.state,
            series = summary.series,
            bars = summary.bars_accepted,
            rejected = summary.bars_rejected,
            rows_skipped = summary.rows_skipped,
            failed_files = summary.failed_files.len(),
            "source import finished"
        );
        import_outcome(&summary.state, summary.error, why, counters)
    }

    /// Reads the whole table of a SQL source, page by page, from after the last key a
    /// previous run journaled. Cancel and shutdown take effect between pages.
    async fn import_table(
        &self,
        task: &Task,
        run: &Run,
        table: &dyn TablePages,
        counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        tracing::info!(source = table.name(), resume_after = ?counters.resume_after, "table import begins");
        let reconciler = self.reconciler();
        let start = row_summary(&counters);
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(start.clone());
        let import = table::import_table(
            table,
            &self.ctx.ingestor,
            &reconciler,
            start,
            &task.id,
            &stop,
            |s| {
                seen.send_replace(s.clone());
            },
        );
        let driven = Driven::new(import, summaries, stop.clone());
        self.drive_rows(task, run, counters, driven, (cancel, shutdown))
            .await
    }

    /// Reads the task's file, skipping the rows an earlier run journaled. Cancel and shutdown
    /// take effect between batches. An uploaded file is deleted when the import ends (not
    /// when the master stops: the import resumes at the next start).
    pub(super) async fn import_file(
        &self,
        task: &Task,
        run: &Run,
        counters: TaskCounters,
        stops: (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let Some(spec) = task.params.file.clone() else {
            return Err((
                Stop::Invalid("the task names no file to import".into()),
                counters,
            ));
        };
        tracing::info!(file = %spec.file_name, format = %spec.format, rows_done = counters.rows_read, "file import begins");
        let quarantine = crate::data::import::file::run::quarantine_path(
            &self.ctx.files.import_quarantine_dir,
            &task.id,
        );
        // Named in the counters once it exists (the first bad row creates it).
        let file = quarantine.display().to_string();
        let named = move |mut c: TaskCounters| {
            c.quarantine_file = (c.rows_skipped > 0).then(|| file.clone());
            c
        };
        let counters = named(counters);
        let reconciler = self.reconciler();
        let start = row_summary(&counters);
        let stop = CancellationToken::new();
        let (seen, summaries) = watch::channel(start.clone());
        let import = crate::data::import::file::run::import_file(
            &spec,
            &self.ctx.ingestor,
            &reconciler,
            start,
            &task.id,
            &quarantine,
            &stop,
            |s| {
                seen.send_replace(s.clone());
            },
        );
        let driven = Driven::new(import, summaries, stop.clone());
        let outcome = match self.drive_rows(task, run, counters, driven, stops).await {
            Ok(c) => Ok(named(c)),
            Err((stop, c)) => Err((stop, named(c))),
        };
        let ended = !matches!(outcome, Err((Stop::Shutdown, _)));
        if spec.uploaded
            && ended
            && let Err(e) = std::fs::remove_file(&spec.path)
        {
            tracing::warn!(file = %spec.path.display(), error = %e, "the uploaded file cannot be removed");
        }
        outcome
    }

    /// Reports a row import's progress (a SQL table's, a file's) until it ends; every
    /// report saves the rows done, from which a restart reads on.
    async fn drive_rows(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        mut driven: Driven<'_, RowImportSummary>,
        stops: (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let (summary, why) = loop {
            let s = match driven.next(stops).await {
                Next::Progress(s) => s,
                Next::Done(s, why) => break (s, why),
            };
            table_counters(&s, &mut counters);
            run.stamp(&mut counters);
            let total = if s.rows_total > 0 {
                format!(" of {}", s.rows_total)
            } else {
                String::new()
            };
            let message = format!(
                "page {}: {}{total} rows read, {} bars written, {} unchanged, {} rows skipped",
                s.pages, s.rows_read, s.bars_accepted, s.bars_unchanged, s.rows_skipped
            );
            self.report(task, &counters, message).await;
        };
        table_counters(&summary, &mut counters);
        import_outcome(&summary.state, summary.error, why, counters)
    }
}

/// An import that reports its summaries on a watch channel, asked to stop (through `stop`)
/// on cancel or shutdown.
struct Driven<'a, S> {
    import: std::pin::Pin<Box<dyn std::future::Future<Output = S> + Send + 'a>>,
    summaries: watch::Receiver<S>,
    stop: CancellationToken,
    why: Option<Stop>,
}

/// What a driven import did next.
enum Next<S> {
    /// A new summary.
    Progress(S),
    /// Its last summary, and why it was asked to stop, if it was.
    Done(S, Option<Stop>),
}

impl<'a, S: Clone> Driven<'a, S> {
    pub(super) fn new(
        import: impl std::future::Future<Output = S> + Send + 'a,
        summaries: watch::Receiver<S>,
        stop: CancellationToken,
    ) -> Self {
        Driven {
            import: Box::pin(import),
            summaries,
            stop,
            why: None,
        }
    }

    pub(super) async fn next(
        &mut self,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Next<S> {
        loop {
            tokio::select! {
                s = &mut self.import => return Next::Done(s, self.why.take()),
                Ok(()) = self.summaries.changed() => {
                    return Next::Progress(self.summaries.borrow_and_update().clone());
                }
                _ = cancel.cancelled(), if self.why.is_none() => {
                    self.why = Some(Stop::Cancelled);
                    self.stop.cancel();
                }
                _ = shutdown.cancelled(), if self.why.is_none() => {
                    self.why = Some(Stop::Shutdown);
                    self.stop.cancel();
                }
            }
        }
    }
}

/// How an import that ended in `state` ends its task (in the shape every runner returns).
#[allow(clippy::result_large_err)]
fn import_outcome(
    state: &str,
    error: Option<String>,
    why: Option<Stop>,
    counters: TaskCounters,
) -> Result<TaskCounters, (Stop, TaskCounters)> {
    match (state, why) {
        ("cancelled", Some(stop)) => Err((stop, counters)),
        ("failed", _) => Err((
            Stop::Failed(error.unwrap_or_else(|| "the import failed".into())),
            counters,
        )),
        _ => Ok(counters),
    }
}

/// Where a row import (a table's, a file's) starts from: what earlier runs did.
fn row_summary(c: &TaskCounters) -> RowImportSummary {
    RowImportSummary {
        rows_read: c.rows_read,
        pages: c.pages,
        bars_accepted: c.bars_written,
        bars_unchanged: c.bars_unchanged,
        bars_rejected: c.bars_rejected,
        rows_skipped: c.rows_skipped,
        row_problems: c.row_problems.clone(),
        resume_after: c.resume_after.clone(),
        ..RowImportSummary::default()
    }
}

/// A table import's counters from what it reports.
fn table_counters(s: &RowImportSummary, c: &mut TaskCounters) {
    c.rows_total = s.rows_total;
    c.rows_read = s.rows_read;
    c.pages = s.pages;
    c.bars_written = s.bars_accepted;
    c.bars_unchanged = s.bars_unchanged;
    c.bars_rejected = s.bars_rejected;
    c.rows_skipped = s.rows_skipped;
    c.row_problems.clone_from(&s.row_problems);
    c.resume_after.clone_from(&s.resume_after);
}

/// A source import's counters from what it reports: each file is a series.
fn import_counters(s: &ImportSummary, c: &mut TaskCounters) {
    c.series_total = s.files_total;
    c.series_done = s.series;
    c.series_failed = s.failed_files.len() as u64;
    c.failed = s
        .failed_files
        .iter()
        .take(100)
        .map(|f| FailedSeries {
            series: s.source.clone(),
            reason: f.clone(),
        })
        .collect();
    c.bars_written = s.bars_accepted;
    c.bars_unchanged = s.bars_unchanged;
    c.bars_rejected = s.bars_rejected;
    c.rows_skipped = s.rows_skipped;
}
