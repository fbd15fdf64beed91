//! Reading the rows of an import file, whatever its format, as typed cells of the columns the
//! import asked for.
//!
//! Each format has its reader ([`csv`], [`json`] for a JSON array of objects and for JSON Lines,
//! [`xlsx`], [`parquet`]); all of them give the same thing: [`Item`]s, each a [`Record`] (the
//! row's number as a user would point at it, and one [`Cell`] per wanted column, in the order
//! the columns were asked for) or a [`Item::Problem`] (a row that could not be read at all,
//! with its number and the reason; the rest of the file goes on). A file that cannot be read
//! as a whole (missing, not of its format, a wanted column absent) is a [`ReadError`] naming
//! the file and what is wrong.
//!
//! Readers stream: memory stays bounded by one batch (and, for Parquet, one row group of the
//! wanted columns) whatever the size of the file.
//!
//! Key types: [`FileFormat`], [`Cell`], [`Record`], [`Item`], [`RecordReader`], [`open`],
//! [`header`].

pub mod csv;
pub mod json;
pub mod parquet;
pub mod xlsx;

use std::fmt;
use std::path::{Path, PathBuf};

/// The formats a file import reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    /// One JSON array of objects.
    Json,
    /// JSON Lines: one object per line.
    Jsonl,
    Xlsx,
    Parquet,
}

impl FileFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [FileFormat; 5] = [
        FileFormat::Csv,
        FileFormat::Json,
        FileFormat::Jsonl,
        FileFormat::Xlsx,
        FileFormat::Parquet,
    ];

    /// The name used in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Xlsx => "xlsx",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The format a request names (`csv`, `json`, `jsonl`/`ndjson`, `xlsx`, `parquet`).
    pub fn parse(name: &str) -> Result<FileFormat, String> {
        match name.trim().to_ascii_lowercase().as_str() {
            "csv" | "txt" => Ok(FileFormat::Csv),
            "json" => Ok(FileFormat::Json),
            "jsonl" | "ndjson" => Ok(FileFormat::Jsonl),
            "xlsx" => Ok(FileFormat::Xlsx),
            "parquet" | "pq" => Ok(FileFormat::Parquet),
            other => Err(format!(
                "{other:?} is not a file format (csv, json, jsonl, xlsx or parquet)"
            )),
        }
    }

    /// The format a file's extension says, if it says one.
    pub fn from_path(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?;
        FileFormat::parse(ext).ok()
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::rows::Cell;

/// One row of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Where a user finds the row: the line of a CSV or JSON Lines file (the header is line
    /// 1), the element of a JSON array (from 1), the row of an xlsx sheet (from 1, the header
    /// is row 1), the row of a Parquet file (from 1).
    pub row: u64,
    /// The sheet of an xlsx row.
    pub sheet: Option<String>,
    /// One cell per wanted column, in the order asked for.
    pub cells: Vec<Cell>,
}

impl Record {
    /// `row 12` or `sheet "GOOG 1d" row 12`.
    pub fn place(&self) -> String {
        place(self.sheet.as_deref(), self.row)
    }
}

/// `row 12` or `sheet "GOOG 1d" row 12`.
pub fn place(sheet: Option<&str>, row: u64) -> String {
    match sheet {
        Some(s) => format!("sheet {s:?} row {row}"),
        None => format!("row {row}"),
    }
}

/// What a reader gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Record(Record),
    /// A row that could not be read (too few fields, not an object, invalid UTF-8 …).
    Problem {
        row: u64,
        sheet: Option<String>,
        message: String,
    },
}

/// Why a file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a file of the format, or damaged.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// A wanted column is not in the file (or in one of its sheets).
    #[error("{}: {where_}no column {column:?} (its columns: {})", path.display(), available.join(", "))]
    MissingColumn {
        path: PathBuf,
        /// `sheet "X": ` for an xlsx sheet, empty otherwise.
        where_: String,
        column: String,
        available: Vec<String>,
    },
}

impl ReadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ReadError {
        ReadError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, message: impl Into<String>) -> ReadError {
        ReadError::Format {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// How to read a file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The columns wanted, by name as in the file's header (matched after trimming, exactly
    /// first and then without regard to case). A JSON object without one of them gives
    /// [`Cell::Null`]; a CSV file, an xlsx sheet or a Parquet file without one is a
    /// [`ReadError::MissingColumn`].
    pub columns: Vec<String>,
    /// The CSV field delimiter.
    pub delimiter: u8,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            columns: Vec::new(),
            delimiter: b',',
        }
    }
}

/// A file being read, batch by batch.
pub trait RecordReader: Send {
    /// Appends up to `max` items to `out`; false once the file is exhausted (nothing was added).
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError>;

    /// Rows in the file, when the format tells without reading it all (Parquet's metadata, an
    /// xlsx sheet's dimensions); for progress.
    fn total_rows(&self) -> Option<u64> {
        None
    }
}

/// Opens `path` as `format`, reading the wanted columns.
pub fn open(
    path: &Path,
    format: FileFormat,
    options: &ReadOptions,
) -> Result<Box<dyn RecordReader>, ReadError> {
    Ok(match format {
        FileFormat::Csv => Box::new(csv::CsvReader::open(path, options)?),
        FileFormat::Json => Box::new(json::JsonArrayReader::open(path, options)?),
        FileFormat::Jsonl => Box::new(json::JsonLinesReader::open(path, options)?),
        FileFormat::Xlsx => Box::new(xlsx::XlsxReader::open(path, options)?),
        FileFormat::Parquet => Box::new(parquet::ParquetReader::open(path, options)?),
    })
}

/// The column names of the file (an xlsx file: of its first sheet; JSON: the keys of its first
/// object, in their order), to resolve a mapping against.
pub fn header(path: &Path, format: FileFormat, delimiter: u8) -> Result<Vec<String>, ReadError> {
    match format {
        FileFormat::Csv => csv::header(path, delimiter),
        FileFormat::Json => json::header(path, false),
        FileFormat::Jsonl => json::header(path, true),
        FileFormat::Xlsx => xlsx::header(path),
        FileFormat::Parquet => parquet::header(path),
    }
}

/// The index in `available` of each wanted column (trimmed; exact match first, then without
/// regard to case), or the first one missing.
pub fn resolve_columns(wanted: &[String], available: &[String]) -> Result<Vec<usize>, String> {
    wanted
        .iter()
        .map(|w| {
            let w = w.trim();
            available
                .iter()
                .position(|a| a.trim() == w)
                .or_else(|| {
                    available
                        .iter()
                        .position(|a| a.trim().eq_ignore_ascii_case(w))
                })
                .ok_or_else(|| w.to_owned())
        })
        .collect()
}

/// Reads every item of `reader`, `batch` at a time (for tests).
#[cfg(test)]
pub(crate) fn read_items(
    reader: &mut dyn RecordReader,
    batch: usize,
) -> Result<Vec<Item>, ReadError> {
    let mut items = Vec::new();
    while reader.next_batch(batch, &mut items)? {}
    Ok(items)
}

/// Options wanting `columns` (for tests).
#[cfg(test)]
pub(crate) fn options(columns: &[&str]) -> ReadOptions {
    ReadOptions {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        ..ReadOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_come_from_extensions() {
        assert_eq!(FileFormat::parse("NDJSON"), Ok(FileFormat::Jsonl));
        assert!(FileFormat::parse("xls").unwrap_err().contains("\"xls\""));
        assert_eq!(
            FileFormat::from_path(Path::new("/x/GOOG.parquet")),
            Some(FileFormat::Parquet)
        );
        assert_eq!(FileFormat::from_path(Path::new("/x/GOOG")), None);
    }

    #[test]
    fn columns_resolve_exactly_then_without_case() {
        let available: Vec<String> = ["Date", "date", " Close ", "VOL"].map(String::from).into();
        let wanted: Vec<String> = ["date", "close", "vol"].map(String::from).into();
        assert_eq!(resolve_columns(&wanted, &available), Ok(vec![1, 2, 3]));
        let wanted: Vec<String> = ["open"].map(String::from).into();
        assert_eq!(resolve_columns(&wanted, &available), Err("open".into()));
    }
}
