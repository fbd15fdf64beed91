//! Reading a workbook's sheets with calamine's cell reader: [`read_sheets`] runs on the
//! reader's thread, finds each sheet's header ([`HeaderRow`]) and wanted columns, puts each
//! data row together ([`SheetRow`]) and sends the items in batches; [`cell_of`] makes a cell of
//! a calamine value.

use std::path::Path;
use std::sync::mpsc::SyncSender;

use calamine::{DataRef, Reader};

use super::Workbook;
use crate::data::import::file::read::{
    Cell, Item, Limits, MAX_XLSX_COLUMNS, ReadError, Record, excerpt, item_bytes, resolve_columns,
    row_too_long,
};

/// A data row being put together: its index and each wanted column's value (or why it is not
/// one), or None once its texts are longer than the limit.
type SheetRow = (u32, Option<Vec<Option<Result<Cell, String>>>>);

/// Items handed over at a time.
const BATCH: usize = 4096;

/// The bytes of a value's text, without making it.
fn text_len(v: &DataRef<'_>) -> usize {
    match v {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.len(),
        DataRef::SharedString(s) => s.len(),
        DataRef::Empty => 0,
        // Numbers, booleans, dates and error values print in a few dozen bytes.
        _ => 32,
    }
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
        DataRef::Error(e) => return Err(excerpt(&format!("the cell holds the error {e}"))),
    })
}

/// `sheet "X": ` (the name an excerpt), for messages.
pub(super) fn sheet_prefix(name: &str) -> String {
    format!("sheet {:?}: ", excerpt(name))
}

/// A cell's column as an index, or the error of a cell beyond Excel's last column.
pub(super) fn column(path: &Path, name: &str, col: u32) -> Result<usize, ReadError> {
    if col >= MAX_XLSX_COLUMNS {
        return Err(ReadError::format(
            path,
            format!(
                "{}a cell in column {}, beyond Excel's last (XFD)",
                sheet_prefix(name),
                u64::from(col) + 1
            ),
        ));
    }
    Ok(col as usize)
}

/// The header row's texts, gathered cell by cell (at most the row limit of text).
#[derive(Debug, Default)]
pub(super) struct HeaderRow {
    pub(super) names: Vec<String>,
    bytes: usize,
}

impl HeaderRow {
    pub(super) fn add(
        &mut self,
        path: &Path,
        sheet: &str,
        col: usize,
        value: &DataRef<'_>,
        limits: &Limits,
    ) -> Result<(), ReadError> {
        self.bytes += text_len(value);
        if self.bytes > limits.row_bytes {
            return Err(ReadError::format(
                path,
                format!(
                    "{}the header row: {}",
                    sheet_prefix(sheet),
                    row_too_long(limits)
                ),
            ));
        }
        if self.names.len() <= col {
            self.names.resize(col + 1, String::new());
        }
        self.names[col] = text_of(value);
        Ok(())
    }
}

/// Reads every sheet of `book` on a thread of its own; sends batches of items.
pub(super) fn read_sheets(
    path: &Path,
    mut book: Workbook,
    wanted: &[String],
    limits: &Limits,
    tx: &SyncSender<Result<Vec<Item>, ReadError>>,
) -> Result<(), ReadError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_bytes = 0;
    // A thread's batch is a quarter of a reader's: a few of them wait in the channel.
    let flush_bytes = (limits.batch_bytes / 4).max(1);
    for name in book.sheet_names() {
        let label = excerpt(&name);
        let sheet_error = |e: calamine::XlsxError| {
            ReadError::format(path, excerpt(&format!("{}{e}", sheet_prefix(&name))))
        };
        let mut cells = book.worksheet_cells_reader(&name).map_err(sheet_error)?;
        // The header row's index and texts, then each data row's wanted values by column.
        let mut header: Option<(u32, HeaderRow)> = None;
        // Once the header is read: the column of each wanted field, and for each column the
        // place of its value in a row (None for a column not wanted).
        let mut fields: Option<(Vec<usize>, Vec<Option<usize>>)> = None;
        let mut row: Option<SheetRow> = None;
        let emit = |row: Option<SheetRow>, fields: &[usize], batch: &mut Vec<Item>| {
            let Some((r, values)) = row else { return };
            let Some(values) = values else {
                batch.push(Item::Problem {
                    row: u64::from(r) + 1,
                    sheet: Some(label.clone()),
                    message: row_too_long(limits),
                });
                return;
            };
            let mut out = Vec::with_capacity(fields.len());
            for (i, value) in values.into_iter().enumerate() {
                match value {
                    None => out.push(Cell::Null),
                    Some(Ok(c)) => out.push(c),
                    Some(Err(m)) => {
                        batch.push(Item::Problem {
                            row: u64::from(r) + 1,
                            sheet: Some(label.clone()),
                            message: format!("column {:?}: {m}", excerpt(&wanted[i])),
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
                sheet: Some(label.clone()),
                cells: out,
            }));
        };
        while let Some(c) = cells.next_cell().map_err(sheet_error)? {
            let (r, col) = c.get_position();
            let col = column(path, &name, col)?;
            if fields.is_none() {
                match &mut header {
                    None => header = Some((r, HeaderRow::default())),
                    Some((h, names)) if *h != r => {
                        let names = std::mem::take(&mut names.names);
                        let f = resolve_columns(wanted, &names).map_err(|column| {
                            ReadError::MissingColumn {
                                path: path.to_owned(),
                                where_: sheet_prefix(&name),
                                column,
                                available: names.clone(),
                            }
                        })?;
                        let width = f.iter().max().map_or(0, |m| m + 1);
                        let mut places = vec![None; width];
                        // A column wanted twice gives its value to the first place; the
                        // others are filled when the row is emitted.
                        for (i, &c) in f.iter().enumerate() {
                            places[c].get_or_insert(i);
                        }
                        fields = Some((f, places));
                    }
                    _ => {}
                }
            }
            let Some((f, places)) = &fields else {
                if let Some((_, names)) = &mut header {
                    names.add(path, &name, col, c.get_value(), limits)?;
                }
                continue;
            };
            if row.as_ref().is_some_and(|(rr, _)| *rr != r) {
                emit(row.take().map(|row| spread(row, f, places)), f, &mut batch);
                batch_bytes += batch.last().map_or(0, item_bytes);
                if batch.len() >= BATCH || batch_bytes >= flush_bytes {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return Ok(());
                    }
                    batch.reserve(BATCH);
                    batch_bytes = 0;
                }
            }
            let Some(&Some(place)) = places.get(col) else {
                // Not a wanted column; the row still starts.
                row.get_or_insert_with(|| (r, Some(vec![None; f.len()])));
                continue;
            };
            let entry = row.get_or_insert_with(|| (r, Some(vec![None; f.len()])));
            let Some(values) = &mut entry.1 else { continue };
            let used: usize = values
                .iter()
                .map(|v| match v {
                    Some(Ok(Cell::Text(t))) => t.len(),
                    _ => 0,
                })
                .sum();
            if used + text_len(c.get_value()) > limits.row_bytes {
                entry.1 = None;
                continue;
            }
            values[place] = Some(cell_of(c.get_value()));
        }
        // A sheet of only a header still needs every wanted column.
        if fields.is_none()
            && let Some((_, names)) = &header
            && let Err(column) = resolve_columns(wanted, &names.names)
        {
            return Err(ReadError::MissingColumn {
                path: path.to_owned(),
                where_: sheet_prefix(&name),
                column,
                available: names.names.clone(),
            });
        }
        if let Some((f, places)) = &fields {
            emit(row.take().map(|row| spread(row, f, places)), f, &mut batch);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    Ok(())
}

/// A row's values for each wanted field: a column wanted more than once gives its value to
/// each of its places.
fn spread(row: SheetRow, fields: &[usize], places: &[Option<usize>]) -> SheetRow {
    let (r, values) = row;
    let values = values.map(|mut values| {
        for (i, &c) in fields.iter().enumerate() {
            if let Some(first) = places[c]
                && first != i
            {
                values[i] = values[first].clone();
            }
        }
        values
    });
    (r, values)
}
