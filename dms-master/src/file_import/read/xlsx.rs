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

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use calamine::{DataRef, Reader, Xlsx};

use super::{Cell, Item, ReadError, ReadOptions, Record, RecordReader, resolve_columns};

/// A data row being put together: its index and each column's value (or why it is not one).
type SheetRow = (u32, Vec<Option<Result<Cell, String>>>);

/// Items handed over at a time.
const BATCH: usize = 4096;

type Workbook = Xlsx<BufReader<File>>;

fn open_workbook(path: &Path) -> Result<Workbook, ReadError> {
    calamine::open_workbook(path).map_err(|e: calamine::XlsxError| {
        ReadError::format(path, format!("not a readable xlsx workbook: {e}"))
    })
}

fn text_of(v: &DataRef<'_>) -> String {
    match v {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
            s.trim().to_owned()
        }
        DataRef::SharedString(s) => s.trim().to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(d) => d.to_string(),
        DataRef::Error(e) => e.to_string(),
        DataRef::Empty => String::new(),
    }
}

/// A value as a cell, or the reason it cannot be one.
fn cell_of(v: &DataRef<'_>) -> Result<Cell, String> {
    Ok(match v {
        DataRef::Empty => Cell::Null,
        DataRef::String(_)
        | DataRef::SharedString(_)
        | DataRef::DateTimeIso(_)
        | DataRef::DurationIso(_) => {
            let t = text_of(v);
            if t.is_empty() {
                Cell::Null
            } else {
                Cell::Text(t)
            }
        }
        DataRef::Int(i) => Cell::Int(*i),
        DataRef::Float(f) => Cell::Float(*f),
        DataRef::Bool(b) => Cell::Bool(*b),
        DataRef::DateTime(d) => match d.as_datetime() {
            Some(t) if d.is_datetime() => Cell::DateTime(t),
            _ => Cell::Float(d.as_f64()),
        },
        DataRef::Error(e) => return Err(format!("the cell holds the error {e}")),
    })
}

/// The first sheet's header.
pub fn header(path: &Path) -> Result<Vec<String>, ReadError> {
    let mut book = open_workbook(path)?;
    for name in book.sheet_names() {
        let mut cells = book
            .worksheet_cells_reader(&name)
            .map_err(|e| ReadError::format(path, format!("sheet {name:?}: {e}")))?;
        let mut header: Vec<String> = Vec::new();
        let mut first_row = None;
        while let Some(c) = cells
            .next_cell()
            .map_err(|e| ReadError::format(path, format!("sheet {name:?}: {e}")))?
        {
            let (row, col) = c.get_position();
            if *first_row.get_or_insert(row) != row {
                break;
            }
            let col = col as usize;
            if header.len() <= col {
                header.resize(col + 1, String::new());
            }
            header[col] = text_of(c.get_value());
        }
        if first_row.is_some() {
            return Ok(header);
        }
    }
    Err(ReadError::format(path, "the workbook has no rows"))
}

/// Reads every sheet on a thread of its own; sends batches of items.
fn read_sheets(path: &Path, wanted: &[String], tx: &SyncSender<Result<Vec<Item>, ReadError>>) {
    let fail = |e: ReadError| {
        let _ = tx.send(Err(e));
    };
    let mut book = match open_workbook(path) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let mut batch = Vec::with_capacity(BATCH);
    for name in book.sheet_names() {
        let sheet_error =
            |e: calamine::XlsxError| ReadError::format(path, format!("sheet {name:?}: {e}"));
        let mut cells = match book.worksheet_cells_reader(&name) {
            Ok(c) => c,
            Err(e) => return fail(sheet_error(e)),
        };
        // The header row's texts, then each data row's values by column.
        let mut header: Option<(u32, Vec<String>)> = None;
        let mut fields: Vec<usize> = Vec::new();
        let mut row: Option<SheetRow> = None;
        let emit = |row: Option<SheetRow>, fields: &[usize], batch: &mut Vec<Item>| {
            let Some((r, values)) = row else { return };
            let mut out = Vec::with_capacity(fields.len());
            for (i, &f) in fields.iter().enumerate() {
                match values.get(f).cloned().flatten() {
                    None => out.push(Cell::Null),
                    Some(Ok(c)) => out.push(c),
                    Some(Err(m)) => {
                        batch.push(Item::Problem {
                            row: u64::from(r) + 1,
                            sheet: Some(name.clone()),
                            message: format!("column {:?}: {m}", wanted[i]),
                        });
                        return;
                    }
                }
            }
            if out.iter().all(|c| *c == Cell::Null) {
                return;
            }
            batch.push(Item::Record(Record {
                row: u64::from(r) + 1,
                sheet: Some(name.clone()),
                cells: out,
            }));
        };
        loop {
            let next = match cells.next_cell() {
                Ok(n) => n,
                Err(e) => return fail(sheet_error(e)),
            };
            let Some(c) = next else { break };
            let (r, col) = c.get_position();
            let col = col as usize;
            match &mut header {
                None => header = Some((r, Vec::new())),
                Some((h, _)) if *h != r && fields.is_empty() => {
                    let names = header.as_ref().map(|(_, n)| n.clone()).unwrap_or_default();
                    match resolve_columns(wanted, &names) {
                        Ok(f) => fields = f,
                        Err(column) => {
                            return fail(ReadError::MissingColumn {
                                path: path.to_owned(),
                                where_: format!("sheet {name:?}: "),
                                column,
                                available: names,
                            });
                        }
                    }
                }
                _ => {}
            }
            if fields.is_empty() {
                if let Some((_, names)) = &mut header {
                    if names.len() <= col {
                        names.resize(col + 1, String::new());
                    }
                    names[col] = text_of(c.get_value());
                }
                continue;
            }
            if row.as_ref().is_some_and(|(rr, _)| *rr != r) {
                emit(row.take(), &fields, &mut batch);
                if batch.len() >= BATCH {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return;
                    }
                    batch.reserve(BATCH);
                }
            }
            let values = &mut row.get_or_insert_with(|| (r, Vec::new())).1;
            if values.len() <= col {
                values.resize(col + 1, None);
            }
            values[col] = Some(cell_of(c.get_value()));
        }
        // A sheet of only a header still needs every wanted column.
        if fields.is_empty()
            && let Some((_, names)) = &header
            && let Err(column) = resolve_columns(wanted, names)
        {
            return fail(ReadError::MissingColumn {
                path: path.to_owned(),
                where_: format!("sheet {name:?}: "),
                column,
                available: names.clone(),
            });
        }
        emit(row.take(), &fields, &mut batch);
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
}

/// Reads an xlsx workbook.
pub struct XlsxReader {
    path: PathBuf,
    rx: Receiver<Result<Vec<Item>, ReadError>>,
    /// Items received and not given yet.
    pending: std::collections::VecDeque<Item>,
    done: bool,
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
    /// Opens `path` (checked to be a workbook here; its sheets are read on a thread).
    pub fn open(path: &Path, options: &ReadOptions) -> Result<XlsxReader, ReadError> {
        open_workbook(path)?;
        let (tx, rx) = sync_channel(4);
        let (p, wanted) = (path.to_owned(), options.columns.clone());
        std::thread::Builder::new()
            .name("xlsx-reader".into())
            .spawn(move || read_sheets(&p, &wanted, &tx))
            .map_err(|e| ReadError::io(path, e))?;
        Ok(XlsxReader {
            path: path.to_owned(),
            rx,
            pending: Default::default(),
            done: false,
        })
    }
}

impl RecordReader for XlsxReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        while out.len() < max || !added {
            if let Some(item) = self.pending.pop_front() {
                out.push(item);
                added = true;
                if out.len() >= max {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::Encoder;
    use crate::export::xlsx::XlsxEncoder;
    use chrono::NaiveDate;
    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};

    fn read_all(path: &Path, columns: &[&str]) -> Result<Vec<Item>, ReadError> {
        super::super::read_items(
            &mut XlsxReader::open(path, &super::super::options(columns))?,
            1000,
        )
    }

    #[test]
    fn an_export_reads_back_sheet_by_sheet_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.xlsx");
        let goog = SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1);
        let eur = SeriesKey::new(Symbol::new("EURUSD=X").unwrap(), Interval::H1);
        let day = NaiveDate::from_ymd_opt(2004, 8, 19).unwrap();
        let t0 = Timestamp::from_date(day);
        let mut b1 = Bar::ohlcv(t0, 49.81, 51.84, 47.80, 49.98, 44_871_361.0);
        b1.adj_close = Some(49.98);
        let b2 = Bar::ohlcv(
            Timestamp(t0.0 + 3_600 * 5 + 7),
            1.0831,
            1.0842,
            1.0829,
            1.084,
            0.0,
        );
        {
            let file = File::create(&path).unwrap();
            let mut e: Box<dyn Encoder> = Box::new(
                XlsxEncoder::new(file, t0.0, crate::export::xlsx::MAX_SHEET_ROWS).unwrap(),
            );
            e.write(&eur, &[b2]).unwrap();
            e.write(&goog, &[b1]).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            header(&path).unwrap()[..4],
            ["symbol", "interval", "ts", "open"]
        );
        let items = read_all(&path, &["symbol", "ts", "close", "adj_close"]).unwrap();
        let record = |sheet: &str, cells| {
            Item::Record(Record {
                row: 2,
                sheet: Some(sheet.into()),
                cells,
            })
        };
        assert_eq!(
            items,
            vec![
                record(
                    "EURUSD=X 1h",
                    vec![
                        Cell::Text("EURUSD=X".into()),
                        Cell::DateTime(day.and_hms_opt(5, 0, 7).unwrap()),
                        Cell::Float(1.084),
                        Cell::Null
                    ]
                ),
                record(
                    "GOOG 1d",
                    vec![
                        Cell::Text("GOOG".into()),
                        Cell::DateTime(day.and_hms_opt(0, 0, 0).unwrap()),
                        Cell::Float(49.98),
                        Cell::Float(49.98)
                    ]
                ),
            ]
        );
        let e = read_all(&path, &["volume", "nope"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sheet \"EURUSD=X 1h\": no column \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_workbook_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.xlsx");
        std::fs::write(&path, "a,b\n").unwrap();
        let e = header(&path).unwrap_err().to_string();
        assert!(e.contains("x.xlsx: not a readable xlsx workbook"), "{e}");
    }
}
