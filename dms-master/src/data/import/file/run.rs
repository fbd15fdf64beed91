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

use dms_common::{Bar, SeriesKey};

use super::read::{Cell, Item};
use super::{BATCH_ROWS, FileImportSpec, Places, RowMapper, RowProblem, field_cells};
use crate::data::import::table::{RowImportSummary, journal_page};
use crate::pipeline::ingest::Ingestor;
use crate::pipeline::reconcile::Reconciler;

/// Row problems logged per import before the rest are only counted.
const LOGGED_PROBLEMS: u64 = 20;
/// Row problems listed in the task (all are in the quarantine file).
const LISTED_PROBLEMS: usize = 100;

/// Consecutive rows of one series, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesRun {
    pub key: SeriesKey,
    /// The place of its first row among the batch's rows (from 0).
    first_item: u64,
    /// The row of each bar.
    pub rows: Vec<u64>,
    pub bars: Vec<Bar>,
}

/// A batch of rows read and mapped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// Rows in the batch (bars and problems).
    pub rows: u64,
    pub runs: Vec<SeriesRun>,
    pub problems: Vec<RowProblem>,
    /// The place of each problem among the batch's rows.
    problem_items: Vec<u64>,
}

impl Mapped {
    /// Splits off the rows from the last series run on (to go with the next batch, so that a
    /// series contiguous in the file is journaled in one batch); None when the batch holds
    /// one run only.
    fn split_last_run(&mut self) -> Option<Mapped> {
        if self.runs.len() < 2 {
            return None;
        }
        let run = self.runs.pop()?;
        let cut = run.first_item;
        let at = self.problem_items.partition_point(|i| *i < cut);
        let mut rest = Mapped {
            rows: self.rows - cut,
            runs: vec![run],
            problems: self.problems.split_off(at),
            problem_items: self.problem_items.split_off(at),
        };
        rest.runs[0].first_item = 0;
        for i in &mut rest.problem_items {
            *i -= cut;
        }
        self.rows = cut;
        Some(rest)
    }

    /// The batch's bars by series (the runs of a series joined).
    pub fn by_series(self) -> BTreeMap<SeriesKey, Vec<Bar>> {
        let mut by_series: BTreeMap<SeriesKey, Vec<Bar>> = BTreeMap::new();
        for run in self.runs {
            by_series.entry(run.key).or_default().extend(run.bars);
        }
        by_series
    }
}

/// The batches of a file being read and mapped.
#[derive(Debug)]
pub struct Batches {
    rx: mpsc::Receiver<Result<Mapped, String>>,
    /// Rows in the file, when its format tells.
    pub total_rows: Option<u64>,
}

impl Batches {
    /// The next batch; None once the file is read.
    pub async fn recv(&mut self) -> Option<Result<Mapped, String>> {
        self.rx.recv().await
    }
}

/// Maps items to bars, reusing the series of the row before when its symbol and interval
/// cells are the same (files hold long runs of one series).
struct Mapper {
    mapper: RowMapper,
    places: Places,
    last: Option<(Cell, Cell, SeriesKey)>,
    /// The file is on the master's machine: problems do not quote it.
    withhold: bool,
}

impl Mapper {
    fn reason(&self, reason: String) -> String {
        if self.withhold {
            super::withhold_content(&reason)
        } else {
            reason
        }
    }

    fn map(&mut self, items: impl IntoIterator<Item = Item>, out: &mut Mapped) {
        for item in items {
            let index = out.rows;
            out.rows += 1;
            let record = match item {
                Item::Problem {
                    row,
                    sheet,
                    message,
                } => {
                    out.problems.push(RowProblem {
                        row,
                        sheet,
                        reason: self.reason(message),
                    });
                    out.problem_items.push(index);
                    continue;
                }
                Item::Record(r) => r,
            };
            let (row, sheet) = (record.row, record.sheet.clone());
            let cells = field_cells(record, &self.places);
            let key = match &self.last {
                Some((s, i, key)) if *s == cells[0] && *i == cells[1] => Ok(key.clone()),
                _ => self.mapper.key(&cells).inspect(|key| {
                    self.last = Some((cells[0].clone(), cells[1].clone(), key.clone()));
                }),
            };
            let bar = key.and_then(|key| Ok((self.mapper.bar_of(key.interval, &cells)?, key)));
            match bar {
                Ok((bar, key)) => match out.runs.last_mut() {
                    Some(run) if run.key == key => {
                        run.rows.push(row);
                        run.bars.push(bar);
                    }
                    _ => out.runs.push(SeriesRun {
                        key,
                        first_item: index,
                        rows: vec![row],
                        bars: vec![bar],
                    }),
                },
                Err(reason) => {
                    let reason = self.reason(reason);
                    out.problems.push(RowProblem { row, sheet, reason });
                    out.problem_items.push(index);
                }
            }
        }
    }
}

/// Starts reading `spec`'s file on a blocking thread, which maps the rows too (so reading and
/// mapping run beside the journal writes); the first `skip` rows are passed over unmapped.
pub fn read_batches(spec: &FileImportSpec, skip: u64) -> Result<Batches, String> {
    let (mut reader, places) = spec.open()?;
    let mut mapper = Mapper {
        mapper: spec.mapper()?,
        places,
        last: None,
        withhold: !spec.uploaded,
    };
    let total_rows = reader.total_rows();
    let (tx, rx) = mpsc::channel(2);
    let (path, name) = (spec.path.clone(), spec.file_name.clone());
    tokio::task::spawn_blocking(move || {
        let mut skip = skip;
        let mut items = Vec::with_capacity(BATCH_ROWS);
        // Rows mapped and not sent: a batch goes once it holds BATCH_ROWS, less its last
        // series run, which goes with the next (unless that run alone is huge).
        let mut mapped = Mapped::default();
        loop {
            items.clear();
            match reader.next_batch(BATCH_ROWS, &mut items) {
                Ok(false) => {
                    if mapped.rows > 0 {
                        let _ = tx.blocking_send(Ok(mapped));
                    }
                    break;
                }
                Ok(true) => {
                    let n = (skip as usize).min(items.len());
                    skip -= n as u64;
                    mapper.map(items.drain(n..), &mut mapped);
                    if (mapped.rows as usize) < BATCH_ROWS {
                        continue;
                    }
                    let rest = match mapped.runs.last() {
                        Some(last) if last.bars.len() < 8 * BATCH_ROWS => mapped.split_last_run(),
                        _ => None,
                    };
                    let full = std::mem::replace(&mut mapped, rest.unwrap_or_default());
                    if full.rows > 0 && tx.blocking_send(Ok(full)).is_err() {
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
    Ok(Batches { rx, total_rows })
}

/// The directory of the file imports' quarantines, beside the state file in `state_dir`.
pub fn quarantine_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("import-quarantine")
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
    mut summary: RowImportSummary,
    task_id: &str,
    quarantine: &Path,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&RowImportSummary),
) -> RowImportSummary {
    summary.source = spec.file_name.clone();
    summary.state = "running".into();
    let mut batches = match read_batches(spec, summary.rows_read) {
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
    loop {
        if cancel.is_cancelled() {
            summary.state = "cancelled".into();
            progress(&summary);
            return summary;
        }
        let mut mapped = match batches.recv().await {
            None => break,
            Some(Ok(m)) => m,
            Some(Err(e)) => return failed(summary, e),
        };
        let rows = mapped.rows;
        let problems = std::mem::take(&mut mapped.problems);
        let by_series = mapped.by_series();
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

fn failed(mut summary: RowImportSummary, error: String) -> RowImportSummary {
    tracing::error!(file = %summary.source, %error, "file import failed");
    summary.state = "failed".into();
    summary.error = Some(error);
    summary
}

/// The quarantine file of an import, created at its first problem. A resumed import appends
/// to what an earlier run wrote, leaving out the rows already there (a batch whose problems
/// were written just before a crash is read again).
struct Quarantined {
    path: PathBuf,
    file: Option<std::fs::File>,
    /// Append to what an earlier run wrote.
    resumed: bool,
    /// The rows (sheet, row) the file already lists.
    listed: std::collections::HashSet<(String, u64)>,
}

impl Quarantined {
    fn open(path: &Path, resumed: bool) -> Result<Quarantined, String> {
        let mut listed = std::collections::HashSet::new();
        if resumed && path.exists() && !ends_with_newline(path) {
            // A line cut short by the crash goes; its row is written again.
            let text = std::fs::read(path)
                .map_err(|e| format!("quarantine file {}: {e}", path.display()))?;
            let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(keep as u64))
                .map_err(|e| format!("quarantine file {}: {e}", path.display()))?;
        }
        if resumed && path.exists() {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_path(path)
                .map_err(|e| format!("quarantine file {}: {e}", path.display()))?;
            for record in reader.records().flatten() {
                if let Some(row) = record.get(0).and_then(|r| r.parse().ok()) {
                    listed.insert((record.get(1).unwrap_or("").to_owned(), row));
                }
            }
        }
        Ok(Quarantined {
            path: path.to_owned(),
            file: None,
            resumed,
            listed,
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
            let key = (p.sheet.clone().unwrap_or_default(), p.row);
            if self.resumed && !self.listed.insert(key) {
                continue;
            }
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

/// Whether a file's last byte is a line break (or it is empty).
fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return true;
    };
    if f.seek(SeekFrom::End(-1)).is_err() {
        return true;
    }
    let mut last = [0u8; 1];
    f.read_exact(&mut last).is_err() || last[0] == b'\n'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::import::file::FileImportQuery;

    #[test]
    fn a_resumed_import_lists_each_bad_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        let problem = |row: u64| RowProblem {
            row,
            sheet: None,
            reason: "column c: \"x\" is not a number".into(),
        };
        let mut q = Quarantined::open(&path, false).unwrap();
        q.write(&[problem(4), problem(9)]).unwrap();
        drop(q);
        // A crash cut the next line short.
        std::fs::write(
            &path,
            std::fs::read_to_string(&path).unwrap() + "12,,column",
        )
        .unwrap();
        let mut q = Quarantined::open(&path, true).unwrap();
        q.write(&[problem(9), problem(12), problem(15)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<&str> = text.lines().map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(rows, ["row", "4", "9", "12", "15"], "{text}");
        assert!(text.contains("12,,\"column c:"), "{text}");
    }

    /// A CSV of `series` series of `bars` rows each, with a bad row every 1,000 rows.
    fn csv(path: &Path, series: usize, bars: usize) {
        let mut text = String::from("symbol,date,open,high,low,close\n");
        for s in 0..series {
            for b in 0..bars {
                let day = chrono::NaiveDate::from_ymd_opt(1990, 1, 1).unwrap()
                    + chrono::Duration::days(b as i64);
                let close = if b % 1000 == 999 {
                    "x".to_owned()
                } else {
                    format!("{b}.5")
                };
                text.push_str(&format!("S{s},{day},1,2,0.5,{close}\n"));
            }
        }
        std::fs::write(path, text).unwrap();
    }

    #[tokio::test]
    async fn a_series_contiguous_in_the_file_comes_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.csv");
        let (series, bars) = (7, 9_000);
        csv(&path, series, bars);
        let query = FileImportQuery {
            path: Some(path.display().to_string()),
            interval: Some("1d".into()),
            ..FileImportQuery::default()
        };
        let spec = query
            .check(None, &[dir.path().to_path_buf()])
            .await
            .unwrap();
        let mut batches = read_batches(&spec, 0).unwrap();
        let (mut rows, mut seen, mut problems, mut sent) = (0, Vec::new(), 0, 0);
        while let Some(b) = batches.recv().await {
            let b = b.unwrap();
            sent += 1;
            rows += b.rows;
            problems += b.problems.len();
            for p in &b.problems {
                assert_eq!(p.row % 1000, 1, "{p}");
            }
            for run in &b.runs {
                assert!(!seen.contains(&run.key), "{} in two batches", run.key);
                assert_eq!(run.bars.len(), bars - bars / 1000);
                seen.push(run.key.clone());
            }
        }
        assert_eq!(rows, (series * bars) as u64);
        assert_eq!(seen.len(), series);
        assert_eq!(problems, series * (bars / 1000));
        assert!(sent > 1, "{sent} batches");
        // Resuming after 10,000 rows skips them unmapped.
        let mut batches = read_batches(&spec, 10_000).unwrap();
        let mut rows = 0;
        while let Some(b) = batches.recv().await {
            rows += b.unwrap().rows;
        }
        assert_eq!(rows, (series * bars) as u64 - 10_000);
    }
}
