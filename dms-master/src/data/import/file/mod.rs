//! File import: bars from a CSV, JSON (an array or JSON Lines), Excel (xlsx) or Parquet file,
//! uploaded (`POST /api/data/import-file`, the body streamed to a file beside the state file)
//! or read from a path on the daemon's machine (`dmsctl import FILE`, the same endpoint with
//! `path=`), as a `file_import` task like every other (id, progress, cancel, counters), every
//! bar through the journal so replicas receive it.
//!
//! The way through:
//! 1. [`FileImportQuery`] (the parameters as sent) → [`FileImportQuery::check`] →
//!    [`FileImportSpec`]: the file and its [`FileFormat`] (given, or from the extension), the
//!    column mapping resolved against the file's header ([`ColumnMapping::resolve`]: the
//!    columns given, the usual names for the rest), defaults of fields no column gives, the
//!    time zone of naive times, the [`ImportMode`]. Everything wrong is refused before a task
//!    is queued, with a message naming the parameter or the column.
//! 2. A dry run ([`dry_run`]) reads the whole file and answers at once: the first rows as they
//!    would be stored (and whether each is new, changed or the same as stored), the counts,
//!    and every row problem (the first [`MAX_LISTED_PROBLEMS`] listed).
//! 3. The import ([`run::import_file`]) reads the file in batches, journals each batch's new
//!    or changed bars, and saves the rows done after each batch: a resumed import skips them.
//!    A row that is not a bar is reported with its row number and reason, written to the
//!    import's quarantine file (`import-quarantine/<task>.csv` beside the state file), and
//!    the rest goes on.
//!
//! # Layout
//!
//! - this module: the request ([`FileImportSpec`]), the dry run, the problems of rows.
//! - [`read`]: one reader per format; [`run`]: the import through the pipeline, resumable;
//!   [`config`]: the `file_import:` section.

pub mod config;
pub mod read;
pub mod run;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dms_common::{Interval, Symbol};
use serde::{Deserialize, Serialize};

use crate::pipeline::reconcile::Reconciler;
pub use crate::sources::rows::{ColumnMapping, Field, FieldDefaults, ImportMode, RowMapper};
pub use read::FileFormat;
use read::{Cell, ReadOptions};

/// Row problems a dry run lists (all are counted).
pub const MAX_LISTED_PROBLEMS: usize = 10_000;
/// Rows a dry run shows when the request does not say.
pub const DEFAULT_PREVIEW_ROWS: usize = 20;
/// Most rows a dry run shows.
pub const MAX_PREVIEW_ROWS: usize = 1_000;
/// Rows read and journaled at a time.
pub const BATCH_ROWS: usize = 20_000;

/// A file import as a client asks for it (REST query parameters, a JSON body, dmsctl).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileImportQuery {
    /// The file on the daemon's machine (absolute). Not given for an upload.
    pub path: Option<String>,
    /// `csv`, `json`, `jsonl`, `xlsx` or `parquet` (default: from the file's extension).
    pub format: Option<String>,
    /// Bar field → the file's column, for the columns without one of the usual names.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Defaults for fields no column gives.
    pub symbol: Option<String>,
    pub interval: Option<String>,
    pub volume: Option<f64>,
    /// The IANA time zone of naive times (default UTC).
    pub timezone: Option<String>,
    /// `upsert` (default) or `insert_only`.
    pub mode: Option<String>,
    /// The CSV delimiter: one character (default `,`; `\t` for tab).
    pub delimiter: Option<String>,
    /// Report what would be stored; store nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Rows a dry run shows.
    pub preview_rows: Option<usize>,
    /// The task's name.
    pub name: Option<String>,
}

impl FileImportQuery {
    /// The query from URL parameters: each field by its name, a column mapping as
    /// `map.<field>=<column>` (e.g. `map.time=Date`), and `filename` (an upload's name) apart.
    pub fn from_params(
        params: Vec<(String, String)>,
    ) -> Result<(FileImportQuery, Option<String>), String> {
        let mut q = FileImportQuery::default();
        let mut filename = None;
        let flag = |k: &str, v: &str| match v {
            "" | "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(format!("parameter `{k}`: {v:?} is not true or false")),
        };
        for (k, v) in params {
            match k.as_str() {
                "path" => q.path = Some(v),
                "format" => q.format = Some(v),
                "symbol" => q.symbol = Some(v),
                "interval" => q.interval = Some(v),
                "volume" => {
                    q.volume = Some(
                        v.trim()
                            .parse()
                            .map_err(|_| format!("parameter `volume`: {v:?} is not a number"))?,
                    )
                }
                "timezone" => q.timezone = Some(v),
                "mode" => q.mode = Some(v),
                "delimiter" => q.delimiter = Some(v),
                "dry_run" => q.dry_run = flag(&k, &v)?,
                "preview_rows" => {
                    q.preview_rows =
                        Some(v.trim().parse().map_err(|_| {
                            format!("parameter `preview_rows`: {v:?} is not a number")
                        })?)
                }
                "name" => q.name = Some(v),
                "filename" => filename = Some(v),
                _ => match k.strip_prefix("map.") {
                    Some(field) => {
                        Field::parse(field).map_err(|e| format!("parameter `{k}`: {e}"))?;
                        q.columns.insert(field.to_owned(), v);
                    }
                    None => {
                        return Err(format!(
                            "unknown parameter `{k}` (path, format, map.<field>, symbol, interval, volume, timezone, mode, delimiter, dry_run, preview_rows, name, filename)"
                        ));
                    }
                },
            }
        }
        Ok((q, filename))
    }
}

/// The place of each [`Field::ALL`] among a record's cells (None: not mapped).
pub type Places = [Option<usize>; 11];

/// A checked file import, saved with its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileImportSpec {
    /// The file read (an upload's spooled copy).
    pub path: PathBuf,
    /// The name the client knows the file by (an upload's name, or the path).
    pub file_name: String,
    pub format: FileFormat,
    pub columns: ColumnMapping,
    #[serde(default)]
    pub defaults: FieldDefaults,
    pub timezone: String,
    #[serde(default)]
    pub mode: ImportMode,
    pub delimiter: u8,
    /// The file was uploaded: it is deleted when the import ends.
    #[serde(default)]
    pub uploaded: bool,
}

impl FileImportQuery {
    /// The parameters as a spec for the file at `path` (an upload's spooled copy, or the
    /// query's `path`, which must be inside one of `allowed_dirs`); reads the file's header to
    /// resolve the mapping. Errors about a file on the master's machine never quote it.
    pub async fn check(
        &self,
        upload: Option<(PathBuf, String)>,
        allowed_dirs: &[PathBuf],
    ) -> Result<FileImportSpec, String> {
        let (path, file_name, uploaded) = match (&self.path, upload) {
            (Some(_), Some(_)) => {
                return Err("give either a path or a file in the body, not both".into());
            }
            (Some(p), None) => {
                let path = allowed_path(p, allowed_dirs).await?;
                (path, p.trim().to_owned(), false)
            }
            (None, Some((path, name))) => (path, name, true),
            (None, None) => {
                return Err(
                    "give the file: `path` on the daemon's machine, or upload it as the body"
                        .into(),
                );
            }
        };
        let format = match &self.format {
            Some(f) => FileFormat::parse(f).map_err(|e| format!("field `format`: {e}"))?,
            None => FileFormat::from_path(Path::new(&file_name)).ok_or_else(|| {
                format!(
                    "field `format`: {file_name:?} has no extension that names a format; give format (csv, json, jsonl, xlsx or parquet)"
                )
            })?,
        };
        let timezone = self.timezone.clone().unwrap_or_else(|| "UTC".into());
        if timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "field `timezone`: {timezone:?} is not an IANA time zone (e.g. Asia/Shanghai)"
            ));
        }
        let mode = match &self.mode {
            Some(m) => ImportMode::parse(m).map_err(|e| format!("field `mode`: {e}"))?,
            None => ImportMode::Upsert,
        };
        let delimiter = match self.delimiter.as_deref() {
            None => b',',
            Some("\\t" | "\t" | "tab") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
            Some(d) => {
                return Err(format!(
                    "field `delimiter`: {d:?} is not one ASCII character"
                ));
            }
        };
        let defaults = FieldDefaults {
            symbol: match &self.symbol {
                Some(s) => Some(Symbol::new(s.trim()).map_err(|e| format!("field `symbol`: {e}"))?),
                None => None,
            },
            interval: match &self.interval {
                Some(i) => Some(i.trim().parse::<Interval>().map_err(|_| {
                    format!("field `interval`: {i:?} is not one of 1m 5m 15m 30m 1h 1d 1wk 1mo")
                })?),
                None => None,
            },
            volume: match self.volume {
                Some(v) if !v.is_finite() || v < 0.0 => {
                    return Err(format!("field `volume`: {v} is not a volume"));
                }
                v => v,
            },
        };
        if let Some(n) = self.preview_rows
            && !(1..=MAX_PREVIEW_ROWS).contains(&n)
        {
            return Err(format!(
                "field `preview_rows`: {n} is not between 1 and {MAX_PREVIEW_ROWS}"
            ));
        }
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| format!("{file_name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{file_name}: not a file"));
        }
        let shown = |e: String| {
            if uploaded { e } else { withhold_content(&e) }
        };
        let header = {
            let at = path.clone();
            tokio::task::spawn_blocking(move || read::header(&at, format, delimiter))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| {
                    if uploaded {
                        rename(&e.to_string(), &path, &file_name)
                    } else {
                        format!(
                            "{file_name}: cannot be read as {format} (the reason quotes the file, which is not shown for a file on the master's machine)"
                        )
                    }
                })?
        };
        let columns = ColumnMapping::resolve(&self.columns, &header, &defaults)
            .map_err(|e| shown(format!("{file_name}: {e}")))?;
        Ok(FileImportSpec {
            path,
            file_name,
            format,
            columns,
            defaults,
            timezone,
            mode,
            delimiter,
            uploaded,
        })
    }
}

/// The file a `path=` import names, once it is known to be a file inside one of
/// `allowed_dirs` after symlinks and `..` are resolved. Every refusal says the same thing
/// whether or not the file exists, so the API cannot be used to probe the machine's files.
async fn allowed_path(given: &str, allowed_dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let shown = dms_common::http_rules::excerpt(given.trim());
    if allowed_dirs.is_empty() {
        return Err(format!(
            "field `path`: imports of files on the master's machine are off (list the directories they may come from under file_import.allowed_dirs), so {shown:?} is not read; upload the file as the body instead"
        ));
    }
    let path = PathBuf::from(given.trim());
    let refused = || {
        format!("field `path`: {shown:?} is not a readable file inside file_import.allowed_dirs")
    };
    if !path.is_absolute() {
        return Err(format!(
            "field `path`: {shown:?} is not an absolute path (the master reads it on its own machine)"
        ));
    }
    let real = tokio::fs::canonicalize(&path)
        .await
        .map_err(|_| refused())?;
    let mut inside = false;
    for dir in allowed_dirs {
        if let Ok(d) = tokio::fs::canonicalize(dir).await
            && real.starts_with(&d)
            && real != d
        {
            inside = true;
        }
    }
    match tokio::fs::metadata(&real).await {
        Ok(m) if inside && m.is_file() => Ok(real),
        _ => Err(refused()),
    }
}

/// `message` with every quoted text (`"…"`) and every list after "columns:" left out: what is
/// said about a file on the master's machine never shows what the file holds (only its row
/// numbers and the columns the request named).
pub fn withhold_content(message: &str) -> String {
    const HIDDEN: &str = "(not shown for a file on the master's machine)";
    let mut out = dms_common::http_rules::map_quoted(message, |_| HIDDEN.to_owned());
    // Lists and values that are not quoted: the file's columns, a cell's text after "column
    // X:" (the column is the request's or one of the usual names; what follows is the file's).
    if let Some(at) = out.find("the file's columns:") {
        out.truncate(at);
        out.push_str("the file's columns are ");
        out.push_str(HIDDEN);
        out.push(')');
    }
    if let Some(rest) = out.strip_prefix("column ")
        && let Some((column, _)) = rest.split_once(": ")
    {
        return format!("column {column}: not a valid value {HIDDEN}");
    }
    dms_common::http_rules::excerpt(&out)
}

/// An error about the spooled copy of an upload, told with the name the client knows.
fn rename(message: &str, path: &Path, name: &str) -> String {
    message.replace(&path.display().to_string(), name)
}

impl FileImportSpec {
    /// The mapper of the spec's rows.
    pub fn mapper(&self) -> Result<RowMapper, String> {
        RowMapper::new(self.columns.clone(), self.defaults.clone(), &self.timezone)
    }

    /// The columns to read (the mapped ones) and, for each [`Field::ALL`], its place among
    /// them.
    fn wanted(&self) -> (Vec<String>, Places) {
        let mut columns = Vec::new();
        let mut places = [None; 11];
        for (i, f) in Field::ALL.into_iter().enumerate() {
            if let Some(c) = self.columns.column(f) {
                places[i] = Some(columns.len());
                columns.push(c.to_owned());
            }
        }
        (columns, places)
    }

    /// Opens the file for reading the mapped columns; also gives the cells' places.
    pub fn open(&self) -> Result<(Box<dyn read::RecordReader>, Places), String> {
        let (columns, places) = self.wanted();
        let options = ReadOptions {
            columns,
            delimiter: self.delimiter,
        };
        let reader = read::open(&self.path, self.format, &options)
            .map_err(|e| rename(&e.to_string(), &self.path, &self.file_name))?;
        Ok((reader, places))
    }
}

/// The cells of a record in [`Field::ALL`] order.
pub fn field_cells(record: read::Record, places: &Places) -> Vec<Cell> {
    let mut cells: Vec<Option<Cell>> = record.cells.into_iter().map(Some).collect();
    places
        .iter()
        .map(|p| {
            p.and_then(|i| cells.get_mut(i)?.take())
                .unwrap_or(Cell::Null)
        })
        .collect()
}

/// A row that is not a bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowProblem {
    pub row: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RowProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            read::place(self.sheet.as_deref(), self.row),
            self.reason
        )
    }
}

/// A bar as a dry run shows it: its row, its series, the bar as `/api/data/bars` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewBar {
    pub row: u64,
    pub symbol: String,
    pub interval: String,
    #[serde(flatten)]
    pub bar: serde_json::Value,
    /// `new`, `changed` or `unchanged`: what the store holds at its time.
    pub stored: String,
}

/// What a dry run found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DryRunReport {
    pub file: String,
    pub format: String,
    pub columns: Option<ColumnMapping>,
    pub timezone: String,
    pub mode: String,
    pub rows: u64,
    pub bars: u64,
    pub series: u64,
    /// Bars at times the store has none for.
    pub bars_new: u64,
    /// Bars the store holds with other values: overwritten in `upsert` mode, kept in
    /// `insert_only` mode.
    pub bars_changed: u64,
    pub bars_unchanged: u64,
    /// Bars an import would journal (new, and in `upsert` mode changed).
    pub bars_to_write: u64,
    pub preview: Vec<PreviewBar>,
    pub problems_total: u64,
    pub problems: Vec<RowProblem>,
}

/// Reads the whole file as an import would, storing nothing.
pub async fn dry_run(
    spec: &FileImportSpec,
    preview_rows: usize,
    reconciler: &Reconciler,
) -> Result<DryRunReport, String> {
    let mut report = DryRunReport {
        file: spec.file_name.clone(),
        format: spec.format.to_string(),
        columns: Some(spec.columns.clone()),
        timezone: spec.timezone.clone(),
        mode: spec.mode.as_str().into(),
        ..DryRunReport::default()
    };
    let mut series = std::collections::HashSet::new();
    let mut batches = run::read_batches(spec, 0)?;
    while let Some(batch) = batches.recv().await {
        let mapped = batch?;
        report.rows += mapped.rows;
        report.problems_total += mapped.problems.len() as u64;
        let room = MAX_LISTED_PROBLEMS.saturating_sub(report.problems.len());
        report
            .problems
            .extend(mapped.problems.into_iter().take(room));
        let mut shown = Vec::new();
        let mut by_series: BTreeMap<dms_common::SeriesKey, Vec<dms_common::Bar>> = BTreeMap::new();
        for run in mapped.runs {
            for (row, bar) in run.rows.iter().zip(&run.bars) {
                if report.preview.len() + shown.len() >= preview_rows {
                    break;
                }
                shown.push((*row, run.key.clone(), *bar));
            }
            by_series.entry(run.key).or_default().extend(run.bars);
        }
        let mut stored_of = BTreeMap::new();
        for (key, mut bars) in by_series {
            report.bars += bars.len() as u64;
            bars.sort_by_key(|b| b.ts);
            let stored = reconciler.stored(&key, &bars).await.unwrap_or_default();
            for bar in &bars {
                match state(stored.get(&bar.ts.0), bar) {
                    "new" => report.bars_new += 1,
                    "changed" => report.bars_changed += 1,
                    _ => report.bars_unchanged += 1,
                }
            }
            if shown.iter().any(|(_, k, _)| *k == key) {
                stored_of.insert(key.clone(), stored);
            }
            series.insert(key);
        }
        for (row, key, bar) in shown {
            let stored = stored_of.get(&key).and_then(|s| s.get(&bar.ts.0));
            report
                .preview
                .push(preview(row, &key, &bar, state(stored, &bar)));
        }
    }
    report.series = series.len() as u64;
    report.bars_to_write = report.bars_new
        + match spec.mode {
            ImportMode::Upsert => report.bars_changed,
            ImportMode::InsertOnly => 0,
        };
    Ok(report)
}

/// `new`, `changed` or `unchanged`: a bar against the stored one at its time.
fn state(stored: Option<&dms_common::Bar>, bar: &dms_common::Bar) -> &'static str {
    match stored {
        None => "new",
        Some(s) if s.same_values(bar) => "unchanged",
        Some(_) => "changed",
    }
}

fn preview(row: u64, key: &dms_common::SeriesKey, b: &dms_common::Bar, state: &str) -> PreviewBar {
    PreviewBar {
        row,
        symbol: key.symbol.to_string(),
        interval: key.interval.to_string(),
        bar: b.to_json(),
        stored: state.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::withhold_content;

    #[test]
    fn what_a_server_file_holds_is_never_shown() {
        let m = withhold_content(r#"line 3: "root:x:0:0:\"quoted\"" is not a date; "second""#);
        assert!(!m.contains("root") && !m.contains("second"), "{m}");
        assert!(m.starts_with("line 3: \"(not shown"), "{m}");
        let m =
            withhold_content("no column gives the time (the file's columns: root:x:0:0, daemon)");
        assert!(!m.contains("root") && !m.contains("daemon"), "{m}");
        assert_eq!(
            withhold_content("column o: abc is not a number"),
            "column o: not a valid value (not shown for a file on the master's machine)"
        );
        let unclosed = withhold_content("a \"secret without an end");
        assert!(!unclosed.contains("secret"), "{unclosed}");
    }
}
