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
//! Readers stream: memory stays bounded by one batch (and, for Parquet, one page of each wanted
//! column) whatever the size of the file.
//!
//! The files are untrusted (uploaded by a client, or named by path): no file may abort the
//! process or take more than a bounded amount of memory, whatever it declares. Each reader
//! checks what its format lets a file declare (sizes, counts, nesting) against [`Limits`]
//! before the library that parses it (calamine, parquet) trusts it, caps a row at
//! [`MAX_ROW_BYTES`] without buffering more than that, stops a batch at [`MAX_BATCH_BYTES`] of
//! text, and turns a panic of those libraries into a [`ReadError`]. A message quotes at most
//! [`MAX_EXCERPT_CHARS`] characters of the file's content ([`excerpt`]).
//!
//! Key types: [`FileFormat`], [`Cell`], [`Record`], [`Item`], [`RecordReader`], [`Limits`],
//! [`open`], [`header`].

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

pub use crate::sources::rows::Cell;

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

/// `row 12` or `sheet "GOOG 1d" row 12` (the sheet's name cut to an [`excerpt`]).
pub fn place(sheet: Option<&str>, row: u64) -> String {
    match sheet {
        Some(s) => format!("sheet {:?} row {row}", excerpt(s)),
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
    #[error("{}: {where_}no column {column:?} (its columns: {})", path.display(), excerpt(&available.join(", ")))]
    MissingColumn {
        path: PathBuf,
        /// `sheet "X": ` for an xlsx sheet (the name an [`excerpt`]), empty otherwise.
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

/// Opens `path` as `format`, reading the wanted columns, within the default [`Limits`].
pub fn open(
    path: &Path,
    format: FileFormat,
    options: &ReadOptions,
) -> Result<Box<dyn RecordReader>, ReadError> {
    open_with(path, format, options, &Limits::default())
}

/// [`open`] within `limits`.
pub fn open_with(
    path: &Path,
    format: FileFormat,
    options: &ReadOptions,
    limits: &Limits,
) -> Result<Box<dyn RecordReader>, ReadError> {
    Ok(match format {
        FileFormat::Csv => Box::new(csv::CsvReader::open(path, options, limits)?),
        FileFormat::Json => Box::new(json::JsonArrayReader::open(path, options, limits)?),
        FileFormat::Jsonl => Box::new(json::JsonLinesReader::open(path, options, limits)?),
        FileFormat::Xlsx => Box::new(xlsx::XlsxReader::open(path, options, limits)?),
        FileFormat::Parquet => Box::new(parquet::ParquetReader::open(path, options, limits)?),
    })
}

/// The column names of the file (an xlsx file: of its first sheet; JSON: the keys of its first
/// object, in their order), to resolve a mapping against; within the default [`Limits`].
pub fn header(path: &Path, format: FileFormat, delimiter: u8) -> Result<Vec<String>, ReadError> {
    header_with(path, format, delimiter, &Limits::default())
}

/// [`header`] within `limits`.
pub fn header_with(
    path: &Path,
    format: FileFormat,
    delimiter: u8,
    limits: &Limits,
) -> Result<Vec<String>, ReadError> {
    match format {
        FileFormat::Csv => csv::header(path, delimiter, limits),
        FileFormat::Json => json::header(path, false, limits),
        FileFormat::Jsonl => json::header(path, true, limits),
        FileFormat::Xlsx => xlsx::header(path, limits),
        FileFormat::Parquet => parquet::header(path, limits),
    }
}

// ---------------------------------------------------------------------------------------------
// Limits: what an untrusted file may declare or hold. Each is far above what a file of bars
// needs, and low enough that the memory a file can make a reader take stays bounded.

/// Bytes of one row at most: a CSV record, a JSON array element, a JSON Lines line, the texts of
/// an xlsx or Parquet row's cells. A bar row is a few hundred bytes; a longer row is refused
/// (a [`ReadError`] or a problem of that row naming the limit) without buffering more of it.
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// Bytes of text a batch of items holds at most: a reader stops a batch there (after one item at
/// least) even short of the items asked for, so that rows referring to one long shared value
/// (an xlsx shared string, a Parquet dictionary value) cannot make a batch huge.
pub const MAX_BATCH_BYTES: usize = 64 << 20;

/// Characters of the file's content a message quotes at most ([`excerpt`]).
pub use dms_common::http_rules::MAX_EXCERPT_CHARS;

/// Entries of an xlsx zip archive at most. A workbook has a handful of parts plus about two per
/// sheet. (An archive of more than 65,535 entries, or over 4 GiB, needs ZIP64, which an xlsx
/// import refuses: the zip reader would size its index from a ZIP64 count.)
pub const MAX_ZIP_ENTRIES: usize = 10_000;

/// Uncompressed bytes of one entry of an xlsx archive at most: a worksheet (read streaming) of
/// a million rows of bars is a few hundred MiB of XML.
pub const MAX_XLSX_ENTRY_BYTES: u64 = 1 << 30;

/// Uncompressed bytes of an xlsx workbook's shared strings at most: they are held in memory
/// (some five times their XML size at worst) while the workbook is read.
pub const MAX_XLSX_SHARED_STRINGS_BYTES: u64 = 128 << 20;

/// The `uniqueCount` a shared-strings part may declare at most (calamine reserves room for that
/// many strings up front), and never more than its XML could hold (`<si/>` is 5 bytes).
pub const MAX_XLSX_SHARED_STRINGS: u64 = 1 << 24;

/// Uncompressed bytes at most of each other part calamine parses into memory when it opens a
/// workbook (the workbook, its relationships, styles and theme), which are a few KiB to a few
/// MiB in real workbooks.
pub const MAX_XLSX_PART_BYTES: u64 = 32 << 20;

/// Bytes of an attribute value at most in those in-memory parts: calamine copies some of them
/// (a font's name, a number format, a relationship's target) once per style or sheet using
/// them, so their length times [`MAX_XLSX_STYLES`] or [`MAX_XLSX_SHEETS`] bounds that memory.
pub const MAX_XLSX_ATTRIBUTE_BYTES: usize = 2 << 10;

/// Bytes of one XML tag at most in those in-memory parts.
pub const MAX_XLSX_TAG_BYTES: usize = 64 << 10;

/// Cell formats (`<xf>` elements) a workbook may declare at most (Excel's own limit is 64,000).
pub const MAX_XLSX_STYLES: u64 = 65_536;

/// Sheets (`<sheet>` elements) a workbook may declare at most.
pub const MAX_XLSX_SHEETS: u64 = 65_536;

/// The compression ratio an archive entry may have at most, once it is over
/// [`RATIO_CHECKED_ABOVE_BYTES`]: XML compresses some 5–50 to 1; deflate cannot go past about
/// 1,030 to 1, which only runs of one byte reach (what a zip bomb is made of).
pub const MAX_COMPRESSION_RATIO: u64 = 1_000;

/// Entries up to this uncompressed size are not checked for their compression ratio.
pub const RATIO_CHECKED_ABOVE_BYTES: u64 = 4 << 20;

/// Columns of an xlsx sheet (Excel's format: A to XFD); a cell beyond is refused.
pub const MAX_XLSX_COLUMNS: u32 = 16_384;

/// Bytes of a Parquet file's footer metadata at most. Bar files have a few KiB (a few hundred
/// bytes per row group); the metadata is parsed into memory (some 20 times its size at worst).
pub const MAX_PARQUET_METADATA_BYTES: u64 = 16 << 20;

/// Row groups a Parquet file may declare at most.
pub const MAX_PARQUET_ROW_GROUPS: usize = 100_000;

/// Schema elements (columns and groups) a Parquet file may declare at most.
pub const MAX_PARQUET_COLUMNS: usize = 10_000;

/// Nesting of a Parquet schema at most (parquet builds the schema tree recursively: deeper
/// nesting would overflow the stack).
pub const MAX_PARQUET_SCHEMA_DEPTH: usize = 64;

/// Uncompressed bytes a Parquet column chunk may declare at most.
pub const MAX_PARQUET_CHUNK_BYTES: u64 = 1 << 30;

/// Bytes of one Parquet page at most, compressed or not (parquet allocates a page's declared
/// uncompressed size up front; writers make pages of about 1 MiB).
pub const MAX_PARQUET_PAGE_BYTES: u64 = 64 << 20;

/// The limits a reader applies (the constants above by default; smaller in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// [`MAX_ROW_BYTES`]
    pub row_bytes: usize,
    /// [`MAX_BATCH_BYTES`]
    pub batch_bytes: usize,
    /// [`MAX_ZIP_ENTRIES`]
    pub zip_entries: usize,
    /// [`MAX_XLSX_ENTRY_BYTES`]
    pub xlsx_entry_bytes: u64,
    /// [`MAX_XLSX_SHARED_STRINGS_BYTES`]
    pub xlsx_shared_strings_bytes: u64,
    /// [`MAX_XLSX_SHARED_STRINGS`]
    pub xlsx_shared_strings: u64,
    /// [`MAX_XLSX_PART_BYTES`]
    pub xlsx_part_bytes: u64,
    /// [`MAX_XLSX_ATTRIBUTE_BYTES`]
    pub xlsx_attribute_bytes: usize,
    /// [`MAX_XLSX_TAG_BYTES`]
    pub xlsx_tag_bytes: usize,
    /// [`MAX_XLSX_STYLES`]
    pub xlsx_styles: u64,
    /// [`MAX_XLSX_SHEETS`]
    pub xlsx_sheets: u64,
    /// [`MAX_COMPRESSION_RATIO`]
    pub compression_ratio: u64,
    /// [`RATIO_CHECKED_ABOVE_BYTES`]
    pub ratio_checked_above: u64,
    /// [`MAX_PARQUET_METADATA_BYTES`]
    pub parquet_metadata_bytes: u64,
    /// [`MAX_PARQUET_ROW_GROUPS`]
    pub parquet_row_groups: usize,
    /// [`MAX_PARQUET_COLUMNS`]
    pub parquet_columns: usize,
    /// [`MAX_PARQUET_SCHEMA_DEPTH`]
    pub parquet_schema_depth: usize,
    /// [`MAX_PARQUET_CHUNK_BYTES`]
    pub parquet_chunk_bytes: u64,
    /// [`MAX_PARQUET_PAGE_BYTES`]
    pub parquet_page_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            row_bytes: MAX_ROW_BYTES,
            batch_bytes: MAX_BATCH_BYTES,
            zip_entries: MAX_ZIP_ENTRIES,
            xlsx_entry_bytes: MAX_XLSX_ENTRY_BYTES,
            xlsx_shared_strings_bytes: MAX_XLSX_SHARED_STRINGS_BYTES,
            xlsx_shared_strings: MAX_XLSX_SHARED_STRINGS,
            xlsx_part_bytes: MAX_XLSX_PART_BYTES,
            xlsx_attribute_bytes: MAX_XLSX_ATTRIBUTE_BYTES,
            xlsx_tag_bytes: MAX_XLSX_TAG_BYTES,
            xlsx_styles: MAX_XLSX_STYLES,
            xlsx_sheets: MAX_XLSX_SHEETS,
            compression_ratio: MAX_COMPRESSION_RATIO,
            ratio_checked_above: RATIO_CHECKED_ABOVE_BYTES,
            parquet_metadata_bytes: MAX_PARQUET_METADATA_BYTES,
            parquet_row_groups: MAX_PARQUET_ROW_GROUPS,
            parquet_columns: MAX_PARQUET_COLUMNS,
            parquet_schema_depth: MAX_PARQUET_SCHEMA_DEPTH,
            parquet_chunk_bytes: MAX_PARQUET_CHUNK_BYTES,
            parquet_page_bytes: MAX_PARQUET_PAGE_BYTES,
        }
    }
}

/// At most [`MAX_EXCERPT_CHARS`] characters of `text` (content of a file quoted in a
/// message), cut on a character boundary and ending with "…": the one excerpt every message
/// of either daemon quotes.
pub use dms_common::http_rules::excerpt;

/// `1 MiB`, `64 KiB`, `1000 bytes`: a limit as a message names it.
pub(crate) fn size(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// What a row longer than the limit is told.
pub(crate) fn row_too_long(limits: &Limits) -> String {
    format!(
        "the row is longer than {}, the limit of a row (a bar row is a few hundred bytes)",
        size(limits.row_bytes as u64)
    )
}

/// The bytes of text an item holds, for [`MAX_BATCH_BYTES`].
pub(crate) fn item_bytes(item: &Item) -> usize {
    match item {
        Item::Record(r) => r
            .cells
            .iter()
            .map(|c| match c {
                Cell::Text(t) => t.len() + 24,
                _ => 24,
            })
            .sum(),
        Item::Problem { message, .. } => message.len() + 24,
    }
}

/// Runs `f`, a call into a parsing library, turning a panic into a [`ReadError`] of `path` (its
/// message an [`excerpt`]): a damaged file must not take down the thread reading it.
pub(crate) fn guard<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, ReadError>,
) -> Result<T, ReadError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(ReadError::format(
            path,
            format!("the file could not be read ({})", excerpt(&what)),
        ))
    })
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

    #[test]
    fn excerpts_are_cut_on_a_character_boundary() {
        assert_eq!(excerpt("short"), "short");
        let exact = "é".repeat(MAX_EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let long = "é".repeat(MAX_EXCERPT_CHARS + 1);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().filter(|c| *c == 'é').count(), MAX_EXCERPT_CHARS);
        assert!(cut.ends_with("é…"));
        assert_eq!(size(1 << 20), "1 MiB");
        assert_eq!(size(1000), "1000 bytes");
        let e = ReadError::MissingColumn {
            path: "/x".into(),
            where_: String::new(),
            column: "close".into(),
            available: vec!["c".repeat(10_000); 100],
        };
        assert!(e.to_string().chars().count() < 300);
        assert!(place(Some(&"s".repeat(10_000)), 3).chars().count() < 220);
    }

    #[test]
    fn a_panic_is_an_error_of_the_file() {
        let e = guard::<()>(Path::new("/x.xlsx"), || panic!("{}", "p".repeat(10_000)))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/x.xlsx: the file could not be read (ppp"),
            "{e}"
        );
        assert!(e.chars().count() < 300);
    }
}

/// What the readers' property tests share: mutations of a valid file, and reading every item a
/// reader gives while checking that no message is long.
#[cfg(test)]
pub(crate) mod fuzz {
    use proptest::prelude::*;

    use super::{Item, ReadError, RecordReader};

    /// Every message a reader gives about any file is shorter than this.
    pub(crate) const MAX_MESSAGE: usize = 2_000;

    /// Byte flips, a cut and an insertion, as proptest draws them.
    pub(crate) type Mutation = (
        Vec<(prop::sample::Index, u8)>,
        Option<prop::sample::Index>,
        Option<(prop::sample::Index, Vec<u8>)>,
    );

    /// Up to 8 flipped bytes, maybe a cut, maybe an insertion of up to `insert` bytes.
    pub(crate) fn mutation(insert: usize) -> impl Strategy<Value = Mutation> {
        (
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            prop::option::of(any::<prop::sample::Index>()),
            prop::option::of((
                any::<prop::sample::Index>(),
                prop::collection::vec(any::<u8>(), 1..insert),
            )),
        )
    }

    /// `bytes` with the bytes flipped, the insertion made and the cut applied.
    pub(crate) fn mutate(mut bytes: Vec<u8>, (flips, cut, insert): Mutation) -> Vec<u8> {
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some((at, more)) = insert {
            let i = at.index(bytes.len());
            bytes.splice(i..i, more);
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        bytes
    }

    /// Fails when `e`'s message is long.
    pub(crate) fn short(e: &impl std::fmt::Display) -> Result<(), TestCaseError> {
        prop_assert!(e.to_string().len() < MAX_MESSAGE, "{e}");
        Ok(())
    }

    /// Reads every item of the reader `opened` gave, `batch` at a time; fails when an error
    /// or a row problem has a long message.
    pub(crate) fn drain<R: RecordReader>(
        opened: Result<R, ReadError>,
        batch: usize,
    ) -> Result<(), TestCaseError> {
        let mut r = match opened {
            Err(e) => return short(&e),
            Ok(r) => r,
        };
        let mut items = Vec::new();
        loop {
            items.clear();
            match r.next_batch(batch, &mut items) {
                Ok(true) => {
                    for i in &items {
                        if let Item::Problem { message, .. } = i {
                            short(message)?;
                        }
                    }
                }
                Ok(false) => return Ok(()),
                Err(e) => return short(&e),
            }
        }
    }
}
