//! Excel (xlsx): every sheet in workbook order, the first row of each its header (the wanted
//! columns are found in each sheet's own header; a sheet without one is an error naming the
//! sheet), every further row a record numbered as Excel shows it (the header is row 1). A
//! sheet without rows is skipped.
//!
//! Cells: empty → [`Cell::Null`]; a string → [`Cell::Text`] (trimmed; empty → null); a number
//! → [`Cell::Float`] (or [`Cell::Int`]); a boolean → [`Cell::Bool`]; a date-time (a number in a
//! date-formatted cell) → [`Cell::DateTime`], naive as Excel has no time zone, to the
//! millisecond; an error value (`#N/A` …) in a wanted column → a problem of that row.
//!
//! The sheets are read with calamine's cell reader, which streams a sheet's XML instead of
//! building the whole grid: a reader thread puts rows together and hands them over in
//! batches through a bounded channel, so memory holds a few batches (plus the workbook's
//! shared strings) whatever the number of rows.
//!
//! Before calamine opens a workbook (for [`header`] as for [`XlsxReader`]), [`check_package`]
//! checks the zip archive against [`Limits`], as calamine trusts what it declares: the number
//! of entries and each entry's uncompressed size and compression ratio (zip bombs; the zip
//! reader fails an entry that inflates past its declared size, so the declared sizes bound
//! what is read); the `uniqueCount` of the shared strings (calamine reserves that many strings
//! up front); and, in the parts calamine parses into memory when it opens a workbook, the
//! size, the length of tags and attribute values and the number of styles and sheets
//! (calamine copies a font name, a number format or a relationship target once per style or
//! sheet using it). A row's texts are at most [`Limits::row_bytes`] and its cells within
//! Excel's [`MAX_XLSX_COLUMNS`].
//!
//! # Layout
//!
//! - this module: [`XlsxReader`] and [`header`]: opening a checked workbook, and the reader
//!   that receives the batches of the sheets' thread.
//! - `sheets`: reading the sheets cell by cell: each sheet's header, its rows put together
//!   into items and sent in batches, and the cells made from calamine's values.
//! - `package`: the checks of the zip archive and of the parts calamine reads into memory
//!   (shared strings, styles, workbook and relationships) against [`Limits`].
//! - `xml`: the scan of a part's XML, as calamine's XML parser tokenizes it, that the checks
//!   use.
//!
//! `sheets` and `package` import this module's workbook type and error helper; `package`
//! imports `xml`; `xml` imports no sibling.
//!
//! [`Cell::Null`]: super::Cell::Null
//! [`Cell::Text`]: super::Cell::Text
//! [`Cell::Float`]: super::Cell::Float
//! [`Cell::Int`]: super::Cell::Int
//! [`Cell::Bool`]: super::Cell::Bool
//! [`Cell::DateTime`]: super::Cell::DateTime
//! [`MAX_XLSX_COLUMNS`]: super::MAX_XLSX_COLUMNS

mod package;
mod sheets;
#[cfg(test)]
mod tests;
mod xml;

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};

use calamine::{Reader, Xlsx};

use super::{Item, Limits, ReadError, ReadOptions, RecordReader, excerpt, guard, item_bytes};
use package::check_package;
use sheets::{HeaderRow, column, read_sheets, sheet_prefix};

type Workbook = Xlsx<BufReader<File>>;

fn unreadable(path: &Path, message: impl std::fmt::Display) -> ReadError {
    ReadError::format(
        path,
        excerpt(&format!("not a readable xlsx workbook: {message}")),
    )
}

/// Opens `path` as a workbook, once its archive passed [`check_package`].
fn open_workbook(path: &Path, limits: &Limits) -> Result<Workbook, ReadError> {
    let mut file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    check_package(&file, path, limits)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ReadError::io(path, e))?;
    guard(path, || {
        Xlsx::new(BufReader::new(file)).map_err(|e: calamine::XlsxError| unreadable(path, e))
    })
}

/// The first sheet's header.
pub fn header(path: &Path, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let mut book = open_workbook(path, limits)?;
    guard(path, || {
        for name in book.sheet_names() {
            let sheet_error = |e: calamine::XlsxError| {
                ReadError::format(path, excerpt(&format!("{}{e}", sheet_prefix(&name))))
            };
            let mut cells = book.worksheet_cells_reader(&name).map_err(sheet_error)?;
            let mut header = HeaderRow::default();
            let mut first_row = None;
            while let Some(c) = cells.next_cell().map_err(sheet_error)? {
                let (row, col) = c.get_position();
                if *first_row.get_or_insert(row) != row {
                    break;
                }
                let col = column(path, &name, col)?;
                header.add(path, &name, col, c.get_value(), limits)?;
            }
            if first_row.is_some() {
                return Ok(header.names);
            }
        }
        Err(ReadError::format(path, "the workbook has no rows"))
    })
}

/// Reads an xlsx workbook.
pub struct XlsxReader {
    path: PathBuf,
    rx: Receiver<Result<Vec<Item>, ReadError>>,
    /// Items received and not given yet.
    pending: std::collections::VecDeque<Item>,
    done: bool,
    batch_bytes: usize,
}

impl std::fmt::Debug for XlsxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxReader")
            .field("path", &self.path)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl XlsxReader {
    /// Opens `path` (checked and opened here; its sheets are read on a thread).
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<XlsxReader, ReadError> {
        let book = open_workbook(path, limits)?;
        let (tx, rx) = sync_channel(4);
        let (p, wanted, l) = (path.to_owned(), options.columns.clone(), limits.clone());
        std::thread::Builder::new()
            .name("xlsx-reader".into())
            .spawn(move || {
                if let Err(e) = guard(&p, || read_sheets(&p, book, &wanted, &l, &tx)) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| ReadError::io(path, e))?;
        Ok(XlsxReader {
            path: path.to_owned(),
            rx,
            pending: Default::default(),
            done: false,
            batch_bytes: limits.batch_bytes,
        })
    }
}

impl RecordReader for XlsxReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut bytes = 0;
        while out.len() < max || !added {
            if let Some(item) = self.pending.pop_front() {
                bytes += item_bytes(&item);
                out.push(item);
                added = true;
                if out.len() >= max || bytes >= self.batch_bytes {
                    break;
                }
                continue;
            }
            if self.done {
                break;
            }
            match self.rx.recv() {
                Ok(Ok(items)) => self.pending.extend(items),
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(added)
    }
}
