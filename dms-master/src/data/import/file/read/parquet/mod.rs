//! Parquet: only the wanted columns are read (by their top-level names), row group by row
//! group; within a row group the same number of records is read from every wanted column's
//! typed reader (values and definition levels), a chunk at a time, and the records put
//! together row by row. Memory holds one chunk of values and each column's current page.
//!
//! Types, by physical and logical type:
//! - BOOLEAN → [`Cell::Bool`]; INT32 / INT64 → [`Cell::Int`];
//! - INT32 DATE → [`Cell::Date`];
//! - INT64 TIMESTAMP(MILLIS | MICROS | NANOS) → [`Cell::Timestamp`] when adjusted to UTC,
//!   [`Cell::DateTime`] (naive: the import's time zone applies) when not; INT96 (the legacy
//!   timestamps of Spark and older pandas) → [`Cell::Timestamp`];
//! - INT32 / INT64 DECIMAL(scale) → [`Cell::Float`] (the value / 10^scale);
//! - FLOAT / DOUBLE → [`Cell::Float`];
//! - BYTE_ARRAY (STRING, ENUM, JSON or none) → [`Cell::Text`], trimmed (empty → null);
//! - a null (definition level below the column's maximum) → [`Cell::Null`].
//!
//! Nested or repeated columns, BYTE_ARRAY decimals and FIXED_LEN_BYTE_ARRAY columns are not
//! read: wanting one is an error naming the column.
//!
//! The parquet crate trusts what a file declares, so before it reads (in [`header`] as in
//! [`ParquetReader`]) the file is checked against [`Limits`]:
//! - the footer: the metadata's declared length, against the file's size and
//!   [`Limits::parquet_metadata_bytes`];
//! - the metadata, walked as parquet's Thrift decoder reads it
//!   ([`check_metadata`](checks::check_metadata)): the schema's size and nesting (parquet
//!   reserves room for each group's declared number of children, and builds the tree
//!   recursively), the number of row groups; an encoding that parquet would read differently
//!   from this walk is refused;
//! - once parsed: each column chunk's offsets and sizes (within the file; its uncompressed
//!   size under [`Limits::parquet_chunk_bytes`]);
//! - before a row group is read, the page headers of each wanted column chunk
//!   ([`check_pages`]): a page's sizes within its chunk and under
//!   [`Limits::parquet_page_bytes`] (parquet allocates a page's declared uncompressed size), a
//!   dictionary's declared number of values within its page (parquet allocates a slot for
//!   each), and no DELTA_LENGTH_BYTE_ARRAY or DELTA_BYTE_ARRAY text pages (parquet allocates
//!   a slot for each value those encodings declare inside the compressed data, which cannot
//!   be checked from outside).
//!
//! A row's texts are at most [`Limits::row_bytes`] (a longer row is a problem of that row,
//! its texts never copied) and a batch stops at [`Limits::batch_bytes`] of text: a dictionary
//! value repeated in every row is copied once per row.
//!
//! # Layout
//!
//! - this module: [`ParquetReader`] and [`header`]: opening a file, the kinds of its columns
//!   and their values made cells, row group by row group.
//! - `checks`: the checks against [`Limits`] of the footer, metadata, row groups, column
//!   chunks and pages, run before parquet reads them.
//! - `thrift`: the walk of Thrift's compact protocol the checks read the metadata and page
//!   headers with.
//!
//! `checks` imports `thrift` (and this module's error helpers); `thrift` imports neither.

mod checks;
mod thrift;

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};
use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType, FixedLenByteArray, Int96};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescPtr;

use super::{
    Cell, Item, Limits, ReadError, ReadOptions, Record, RecordReader, excerpt, guard, item_bytes,
    resolve_columns, row_too_long,
};
use checks::{check_footer, check_pages, check_row_groups};

/// How a column's values become cells.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Date,
    /// Units per second, adjusted to UTC.
    Timestamp(i64, bool),
    Int96,
    /// Divide by this.
    Decimal(f64),
    Float,
    Text,
}

/// Rows read from each column at a time (their values, not yet cells).
const CHUNK_ROWS: usize = 4096;

/// Reads a Parquet file.
pub struct ParquetReader {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    /// The file again, for the checks of page headers.
    file: File,
    limits: Limits,
    /// The leaf column index and kind of each wanted column.
    columns: Vec<(usize, Kind, ColumnDescPtr)>,
    /// The next row group to read.
    next_group: usize,
    /// The current row group's column readers, and its rows not read yet.
    readers: Vec<ColumnReader>,
    rows_left: usize,
    /// The values read and not given yet, per wanted column; the rows they hold and the next.
    chunk: Vec<Values>,
    chunk_rows: usize,
    chunk_next: usize,
    /// Rows given so far.
    rows_given: u64,
    total_rows: u64,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("path", &self.path)
            .field("next_group", &self.next_group)
            .finish_non_exhaustive()
    }
}

fn format_error(path: &Path, e: &parquet::errors::ParquetError) -> ReadError {
    unreadable(path, e)
}

fn unreadable(path: &Path, message: impl std::fmt::Display) -> ReadError {
    ReadError::format(
        path,
        excerpt(&format!("not a readable Parquet file: {message}")),
    )
}

/// Opens `path` once its footer and metadata passed the checks; gives the reader, a handle of
/// the file, and the file's size.
fn open_file(
    path: &Path,
    limits: &Limits,
) -> Result<(SerializedFileReader<File>, File), ReadError> {
    let mut file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    let len = check_footer(&mut file, path, limits)?;
    let again = file.try_clone().map_err(|e| ReadError::io(path, e))?;
    let reader = guard(path, || {
        SerializedFileReader::new(file).map_err(|e| format_error(path, &e))
    })?;
    check_row_groups(reader.metadata(), len, limits).map_err(|m| unreadable(path, m))?;
    Ok((reader, again))
}

/// The top-level column names of `path`, in schema order.
pub fn header(path: &Path, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let (reader, _) = open_file(path, limits)?;
    Ok(top_level_names(&reader))
}

fn top_level_names(reader: &SerializedFileReader<File>) -> Vec<String> {
    reader
        .metadata()
        .file_metadata()
        .schema_descr_ptr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

/// How the column described by `d` is read, or why it cannot be.
fn kind_of(d: &ColumnDescPtr) -> Result<Kind, String> {
    let name = excerpt(&d.path().string());
    if d.max_rep_level() > 0 || d.path().parts().len() > 1 {
        return Err(format!(
            "column {name:?} is nested or repeated, which is not read"
        ));
    }
    let logical = d.logical_type_ref();
    let scale = |s: i32| 10f64.powi(s);
    Ok(match d.physical_type() {
        PhysicalType::BOOLEAN => Kind::Bool,
        PhysicalType::INT32 => match (logical, d.converted_type()) {
            (Some(LogicalType::Date), _) | (_, ConvertedType::DATE) => Kind::Date,
            (Some(LogicalType::Decimal(t)), _) => Kind::Decimal(scale(t.scale)),
            (_, ConvertedType::DECIMAL) => Kind::Decimal(scale(d.type_scale())),
            _ => Kind::Int,
        },
        PhysicalType::INT64 => match (logical, d.converted_type()) {
            (Some(LogicalType::Timestamp(t)), _) => {
                let per_second = match t.unit {
                    TimeUnit::MILLIS => 1_000,
                    TimeUnit::MICROS => 1_000_000,
                    TimeUnit::NANOS => 1_000_000_000,
                };
                Kind::Timestamp(per_second, t.is_adjusted_to_u_t_c)
            }
            (_, ConvertedType::TIMESTAMP_MILLIS) => Kind::Timestamp(1_000, true),
            (_, ConvertedType::TIMESTAMP_MICROS) => Kind::Timestamp(1_000_000, true),
            (Some(LogicalType::Decimal(t)), _) => Kind::Decimal(scale(t.scale)),
            (_, ConvertedType::DECIMAL) => Kind::Decimal(scale(d.type_scale())),
            _ => Kind::Int,
        },
        PhysicalType::INT96 => Kind::Int96,
        PhysicalType::FLOAT | PhysicalType::DOUBLE => Kind::Float,
        PhysicalType::BYTE_ARRAY => match (logical, d.converted_type()) {
            (Some(LogicalType::Decimal(_)), _) | (_, ConvertedType::DECIMAL) => {
                return Err(format!(
                    "column {name:?} is a binary decimal, which is not read (cast it to DOUBLE)"
                ));
            }
            _ => Kind::Text,
        },
        PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            return Err(format!(
                "column {name:?} is a fixed-length binary column, which is not read"
            ));
        }
    })
}

/// Reads `rows` records of a typed column: its values and definition levels.
fn read_raw<T: DataType>(
    r: &mut ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<(Vec<T::T>, Vec<i16>)> {
    let mut values: Vec<T::T> = Vec::with_capacity(rows);
    let mut defs: Vec<i16> = Vec::with_capacity(if max_def > 0 { rows } else { 0 });
    let mut read = 0;
    while read < rows {
        let (records, _, _) = r.read_records(
            rows - read,
            (max_def > 0).then_some(&mut defs),
            None,
            &mut values,
        )?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok((values, defs))
}

/// A chunk of one column's values, not made cells yet.
#[derive(Debug)]
enum Raw {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Int96(Vec<Int96>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

/// One column's part of the current chunk.
#[derive(Debug)]
struct Values {
    raw: Raw,
    /// Definition levels (empty for a required column).
    defs: Vec<i16>,
    max_def: i16,
    kind: Kind,
    /// The next value.
    next: usize,
}

impl Values {
    /// Records the chunk holds.
    fn records(&self) -> usize {
        if self.max_def > 0 {
            return self.defs.len();
        }
        match &self.raw {
            Raw::Bool(v) => v.len(),
            Raw::Int32(v) => v.len(),
            Raw::Int64(v) => v.len(),
            Raw::Int96(v) => v.len(),
            Raw::Float(v) => v.len(),
            Raw::Double(v) => v.len(),
            Raw::Bytes(v) => v.len(),
            Raw::Fixed(v) => v.len(),
        }
    }

    /// Row `row`'s cell; Err with the text's length if it is longer than `room` (not copied).
    fn cell(&mut self, row: usize, room: usize) -> Result<Cell, usize> {
        if self.max_def > 0 && self.defs.get(row) != Some(&self.max_def) {
            return Ok(Cell::Null);
        }
        let i = self.next;
        self.next += 1;
        let kind = self.kind;
        Ok(match &self.raw {
            Raw::Bool(v) => v.get(i).map_or(Cell::Null, |v| Cell::Bool(*v)),
            Raw::Int32(v) => v.get(i).map_or(Cell::Null, |v| match kind {
                Kind::Date => NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(*v))))
                    .map_or(Cell::Null, Cell::Date),
                Kind::Decimal(div) => Cell::Float(f64::from(*v) / div),
                _ => Cell::Int(i64::from(*v)),
            }),
            Raw::Int64(v) => v.get(i).map_or(Cell::Null, |v| match kind {
                Kind::Timestamp(per, utc) => timestamp_cell(*v, per, utc),
                Kind::Decimal(div) => Cell::Float(*v as f64 / div),
                _ => Cell::Int(*v),
            }),
            Raw::Int96(v) => v.get(i).map_or(Cell::Null, |v| {
                timestamp_cell(v.to_nanos(), 1_000_000_000, true)
            }),
            Raw::Float(v) => v.get(i).map_or(Cell::Null, |v| Cell::Float(f64::from(*v))),
            Raw::Double(v) => v.get(i).map_or(Cell::Null, |v| Cell::Float(*v)),
            Raw::Bytes(v) => match v.get(i) {
                None => Cell::Null,
                Some(b) if b.len() > room => return Err(b.len()),
                Some(b) => text_cell(b.data()),
            },
            Raw::Fixed(v) => match v.get(i) {
                None => Cell::Null,
                Some(b) if b.len() > room => return Err(b.len()),
                Some(b) => text_cell(b.data()),
            },
        })
    }
}

fn text_cell(bytes: &[u8]) -> Cell {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.trim().is_empty() => Cell::Null,
        Ok(s) => Cell::Text(s.trim().to_owned()),
        Err(_) => Cell::Text(String::from_utf8_lossy(bytes).trim().to_owned()),
    }
}

fn timestamp_cell(v: i64, per_second: i64, utc: bool) -> Cell {
    let secs = v.div_euclid(per_second);
    let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    match DateTime::from_timestamp(secs, nanos) {
        Some(t) if utc => Cell::Timestamp(t),
        Some(t) => Cell::DateTime(t.naive_utc()),
        None => Cell::Text(format!("{v} (out of range)")),
    }
}

impl ParquetReader {
    /// Opens `path` and finds the wanted columns among its top-level columns.
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<ParquetReader, ReadError> {
        let (reader, file) = open_file(path, limits)?;
        let available = top_level_names(&reader);
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let fields = resolve_columns(&options.columns, &available).map_err(|column| {
            ReadError::MissingColumn {
                path: path.to_owned(),
                where_: String::new(),
                column,
                available: available.clone(),
            }
        })?;
        let mut columns = Vec::with_capacity(fields.len());
        for f in fields {
            let name = &available[f];
            let leaf = (0..schema.num_columns())
                .find(|&i| schema.column(i).path().parts().first() == Some(name))
                .ok_or_else(|| {
                    ReadError::format(path, format!("column {:?} has no values", excerpt(name)))
                })?;
            let d = schema.column(leaf);
            let kind = kind_of(&d).map_err(|m| ReadError::format(path, m))?;
            columns.push((leaf, kind, d));
        }
        let total_rows = reader.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(ParquetReader {
            path: path.to_owned(),
            reader,
            file,
            limits: limits.clone(),
            columns,
            next_group: 0,
            readers: Vec::new(),
            rows_left: 0,
            chunk: Vec::new(),
            chunk_rows: 0,
            chunk_next: 0,
            rows_given: 0,
            total_rows,
        })
    }

    /// Opens the next row group's column readers, once their pages passed [`check_pages`];
    /// false when there is none.
    fn next_group(&mut self) -> Result<bool, ReadError> {
        let metadata = self.reader.metadata();
        if self.next_group >= metadata.num_row_groups() {
            return Ok(false);
        }
        let g = self.next_group;
        let group = metadata.row_group(g);
        let len = self
            .file
            .metadata()
            .map_err(|e| ReadError::io(&self.path, e))?
            .len();
        for (leaf, _, d) in &self.columns {
            check_pages(&self.file, group.column(*leaf), len, d, &self.limits).map_err(|m| {
                unreadable(
                    &self.path,
                    format!(
                        "row group {g}: column {:?}: {m}",
                        excerpt(&d.path().string())
                    ),
                )
            })?;
        }
        let rows = group.num_rows().max(0) as usize;
        let path = self.path.clone();
        let reader = &self.reader;
        let columns = &self.columns;
        self.readers = guard(&path, || {
            let group = reader
                .get_row_group(g)
                .map_err(|e| format_error(&path, &e))?;
            columns
                .iter()
                .map(|(leaf, _, _)| group.get_column_reader(*leaf))
                .collect::<Result<_, _>>()
                .map_err(|e| format_error(&path, &e))
        })?;
        self.rows_left = rows;
        self.next_group += 1;
        Ok(true)
    }

    /// Reads the values of the next `rows` rows of the current row group, column by column.
    fn read_chunk(&mut self, rows: usize) -> Result<(), ReadError> {
        let path = self.path.clone();
        let g = self.next_group - 1;
        let chunk = guard(&path, || {
            let mut chunk = Vec::with_capacity(self.columns.len());
            for ((_, kind, d), reader) in self.columns.iter().zip(&mut self.readers) {
                let max_def = d.max_def_level();
                let (raw, defs) = match reader {
                    ColumnReader::BoolColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Bool(v), d))
                    }
                    ColumnReader::Int32ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int32(v), d))
                    }
                    ColumnReader::Int64ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int64(v), d))
                    }
                    ColumnReader::Int96ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int96(v), d))
                    }
                    ColumnReader::FloatColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Float(v), d))
                    }
                    ColumnReader::DoubleColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Double(v), d))
                    }
                    ColumnReader::ByteArrayColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Bytes(v), d))
                    }
                    ColumnReader::FixedLenByteArrayColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Fixed(v), d))
                    }
                }
                .map_err(|e| format_error(&path, &e))?;
                let values = Values {
                    raw,
                    defs,
                    max_def,
                    kind: *kind,
                    next: 0,
                };
                if values.records() != rows {
                    return Err(ReadError::format(
                        &path,
                        format!(
                            "row group {g}: column {:?} has {} values where {rows} rows were \
                             expected",
                            excerpt(&d.path().string()),
                            values.records()
                        ),
                    ));
                }
                chunk.push(values);
            }
            Ok(chunk)
        })?;
        self.chunk = chunk;
        self.chunk_rows = rows;
        self.chunk_next = 0;
        self.rows_left -= rows;
        Ok(())
    }
}

impl RecordReader for ParquetReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = 0;
        let mut bytes = 0;
        while added < max && bytes < self.limits.batch_bytes {
            if self.chunk_next == self.chunk_rows {
                while self.rows_left == 0 {
                    if !self.next_group()? {
                        return Ok(added > 0);
                    }
                }
                self.read_chunk(self.rows_left.min(CHUNK_ROWS))?;
            }
            let row = self.chunk_next;
            self.chunk_next += 1;
            self.rows_given += 1;
            let mut room = self.limits.row_bytes;
            let mut too_long = false;
            let mut cells = Vec::with_capacity(self.chunk.len());
            for values in &mut self.chunk {
                match values.cell(row, room) {
                    Ok(c) => {
                        if let Cell::Text(t) = &c {
                            room -= t.len().min(room);
                        }
                        cells.push(c);
                    }
                    Err(_) => too_long = true,
                }
            }
            let item = if too_long {
                Item::Problem {
                    row: self.rows_given,
                    sheet: None,
                    message: row_too_long(&self.limits),
                }
            } else {
                Item::Record(Record {
                    row: self.rows_given,
                    sheet: None,
                    cells,
                })
            };
            bytes += item_bytes(&item);
            out.push(item);
            added += 1;
        }
        Ok(added > 0)
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.total_rows)
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
    use parquet::data_type::{ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;
    use crate::data::export::parquet::ParquetEncoder;
    use crate::data::export::{Encoder, ParquetCompression};

    fn read_all(path: &Path, columns: &[&str], batch: usize) -> Result<Vec<Record>, ReadError> {
        let mut r = ParquetReader::open(path, &super::super::options(columns), &Limits::default())?;
        Ok(super::super::read_items(&mut r, batch)?
            .into_iter()
            .map(|i| match i {
                Item::Record(r) => r,
                Item::Problem { message, .. } => panic!("{message}"),
            })
            .collect())
    }

    #[test]
    fn reads_an_export_across_row_groups_with_row_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.parquet");
        let key = SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1);
        let bars: Vec<Bar> = (0..2_500)
            .map(|i| {
                let mut b = Bar::ohlcv(Timestamp(i * 86_400), 1.5, 2.0, 1.0, 1.25 + i as f64, 10.0);
                b.adj_close = (i % 2 == 0).then_some(0.1 * i as f64);
                b
            })
            .collect();
        {
            let file = File::create(&path).unwrap();
            let mut e: Box<dyn Encoder> =
                Box::new(ParquetEncoder::new(file, ParquetCompression::Zstd, 1_000).unwrap());
            e.write(&key, &bars).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            header(&path, &Limits::default()).unwrap()[..3],
            ["symbol", "interval", "ts"]
        );
        let rows = read_all(&path, &["ts", "CLOSE", "adj_close", "symbol"], 333).unwrap();
        assert_eq!(rows.len(), 2_500);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.row, i as u64 + 1);
            let t = DateTime::from_timestamp(i as i64 * 86_400, 0).unwrap();
            assert_eq!(r.cells[0], Cell::Timestamp(t));
            assert_eq!(r.cells[1], Cell::Float(1.25 + i as f64));
            let adj = if i % 2 == 0 {
                Cell::Float(0.1 * i as f64)
            } else {
                Cell::Null
            };
            assert_eq!(r.cells[2], adj, "row {i}");
            assert_eq!(r.cells[3], Cell::Text("GOOG".into()));
        }
        let e = read_all(&path, &["nope"], 10).unwrap_err().to_string();
        assert!(e.contains("no column \"nope\""), "{e}");
    }

    #[test]
    fn dates_naive_timestamps_decimals_and_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typed.parquet");
        let schema = Arc::new(
            parse_message_type(
                "message m {
                   REQUIRED INT32 day (DATE);
                   OPTIONAL INT64 at (TIMESTAMP(MICROS,false));
                   REQUIRED INT64 price (DECIMAL(10,2));
                   REQUIRED INT64 n;
                   REQUIRED BYTE_ARRAY code (STRING);
                 }",
            )
            .unwrap(),
        );
        let file = File::create(&path).unwrap();
        let mut w =
            SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
                .unwrap();
        let mut group = w.next_row_group().unwrap();
        let mut i = 0;
        while let Some(mut c) = group.next_column().unwrap() {
            match i {
                0 => {
                    c.typed::<Int32Type>()
                        .write_batch(&[19_724, 19_725], None, None)
                        .unwrap();
                }
                1 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[1_704_187_800_000_000], Some(&[1, 0]), None)
                        .unwrap();
                }
                2 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[10_425, 7], None, None)
                        .unwrap();
                }
                3 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[5, 6], None, None)
                        .unwrap();
                }
                _ => {
                    c.typed::<ByteArrayType>()
                        .write_batch(
                            &[ByteArray::from(" 600000.SS "), ByteArray::from("")],
                            None,
                            None,
                        )
                        .unwrap();
                }
            }
            c.close().unwrap();
            i += 1;
        }
        group.close().unwrap();
        w.close().unwrap();
        let rows = read_all(&path, &["day", "at", "price", "n", "code"], 10).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        assert_eq!(
            rows[0].cells,
            vec![
                Cell::Date(day),
                Cell::DateTime(day.and_hms_opt(9, 30, 0).unwrap()),
                Cell::Float(104.25),
                Cell::Int(5),
                Cell::Text("600000.SS".into()),
            ]
        );
        assert_eq!(rows[1].cells[1], Cell::Null);
        assert_eq!(rows[1].cells[2], Cell::Float(0.07));
        assert_eq!(rows[1].cells[4], Cell::Null);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, "symbol,ts\nA,1\n").unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("x.parquet: not a readable Parquet file"), "{e}");
    }

    #[test]
    fn a_million_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let key = SeriesKey::new(Symbol::new("EURUSD=X").unwrap(), Interval::M1);
        {
            let file = File::create(&path).unwrap();
            let mut e = ParquetEncoder::new(file, ParquetCompression::Snappy, 262_144).unwrap();
            for chunk in 0..10 {
                let bars: Vec<Bar> = (0..100_000)
                    .map(|i| {
                        let n = chunk * 100_000 + i;
                        Bar::ohlcv(Timestamp(n * 60), 1.0, 1.0, 1.0, n as f64, 0.0)
                    })
                    .collect();
                e.write(&key, &bars).unwrap();
            }
            e.into_inner().unwrap();
        }
        let rows = read_all(&path, &["close"], 50_000).unwrap();
        assert_eq!(rows.len(), 1_000_000);
        assert_eq!(rows[0].cells[0], Cell::Float(0.0));
        assert_eq!(rows[999_999].cells[0], Cell::Float(999_999.0));
        assert_eq!(rows[999_999].row, 1_000_000);
    }
}
