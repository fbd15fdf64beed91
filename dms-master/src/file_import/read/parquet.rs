//! Parquet: only the wanted columns are read (by their top-level names), row group by row
//! group; within a row group each batch reads the same number of records from every wanted
//! column's typed reader (values and definition levels) and puts the records together. Memory
//! holds one batch of cells and each column's current page.
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

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};
use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::DataType;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescPtr;

use super::{Cell, Item, ReadError, ReadOptions, Record, RecordReader, resolve_columns};

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

/// Reads a Parquet file.
pub struct ParquetReader {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    /// The leaf column index and kind of each wanted column.
    columns: Vec<(usize, Kind, ColumnDescPtr)>,
    /// The next row group to read.
    next_group: usize,
    /// The current row group's column readers, and its rows not read yet.
    readers: Vec<ColumnReader>,
    rows_left: usize,
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
    ReadError::format(path, format!("not a readable Parquet file: {e}"))
}

fn open_file(path: &Path) -> Result<SerializedFileReader<File>, ReadError> {
    let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    SerializedFileReader::new(file).map_err(|e| format_error(path, &e))
}

/// The top-level column names of `path`, in schema order.
pub fn header(path: &Path) -> Result<Vec<String>, ReadError> {
    let reader = open_file(path)?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    Ok(schema
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect())
}

/// How the column described by `d` is read, or why it cannot be.
fn kind_of(d: &ColumnDescPtr) -> Result<Kind, String> {
    let name = d.path().string();
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

/// Reads `rows` values of a typed column with their definition levels; `convert` makes each
/// value a cell.
fn read_typed<T: DataType>(
    r: &mut ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
    mut convert: impl FnMut(&T::T) -> Cell,
) -> parquet::errors::Result<Vec<Cell>>
where
    T::T: Clone,
{
    let mut values: Vec<T::T> = Vec::with_capacity(rows);
    let mut defs: Vec<i16> = Vec::with_capacity(rows);
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
    let mut cells = Vec::with_capacity(rows);
    if max_def == 0 {
        cells.extend(values.iter().map(&mut convert));
    } else {
        let mut next = values.iter();
        for d in &defs {
            if *d == max_def {
                cells.push(next.next().map_or(Cell::Null, &mut convert));
            } else {
                cells.push(Cell::Null);
            }
        }
    }
    Ok(cells)
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
    pub fn open(path: &Path, options: &ReadOptions) -> Result<ParquetReader, ReadError> {
        let reader = open_file(path)?;
        let available = header(path)?;
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
                .ok_or_else(|| ReadError::format(path, format!("column {name:?} has no values")))?;
            let d = schema.column(leaf);
            let kind = kind_of(&d).map_err(|m| ReadError::format(path, m))?;
            columns.push((leaf, kind, d));
        }
        let total_rows = reader.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(ParquetReader {
            path: path.to_owned(),
            reader,
            columns,
            next_group: 0,
            readers: Vec::new(),
            rows_left: 0,
            rows_given: 0,
            total_rows,
        })
    }

    /// Opens the next row group's column readers; false when there is none.
    fn next_group(&mut self) -> Result<bool, ReadError> {
        let metadata = self.reader.metadata();
        if self.next_group >= metadata.num_row_groups() {
            return Ok(false);
        }
        let rows = metadata.row_group(self.next_group).num_rows().max(0) as usize;
        let group = self
            .reader
            .get_row_group(self.next_group)
            .map_err(|e| format_error(&self.path, &e))?;
        self.readers = self
            .columns
            .iter()
            .map(|(leaf, _, _)| group.get_column_reader(*leaf))
            .collect::<Result<_, _>>()
            .map_err(|e| format_error(&self.path, &e))?;
        self.rows_left = rows;
        self.next_group += 1;
        Ok(true)
    }

    /// Reads the next `rows` rows of the current row group, column by column.
    fn read_rows(&mut self, rows: usize) -> Result<Vec<Vec<Cell>>, ReadError> {
        let mut columns = Vec::with_capacity(self.columns.len());
        for ((_, kind, d), reader) in self.columns.iter().zip(&mut self.readers) {
            let max_def = d.max_def_level();
            let kind = *kind;
            let cells = match reader {
                ColumnReader::BoolColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| Cell::Bool(*v))
                }
                ColumnReader::Int32ColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| match kind {
                        Kind::Date => NaiveDate::from_ymd_opt(1970, 1, 1)
                            .and_then(|e| {
                                e.checked_add_signed(chrono::Duration::days(i64::from(*v)))
                            })
                            .map_or(Cell::Null, Cell::Date),
                        Kind::Decimal(div) => Cell::Float(f64::from(*v) / div),
                        _ => Cell::Int(i64::from(*v)),
                    })
                }
                ColumnReader::Int64ColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| match kind {
                        Kind::Timestamp(per, utc) => timestamp_cell(*v, per, utc),
                        Kind::Decimal(div) => Cell::Float(*v as f64 / div),
                        _ => Cell::Int(*v),
                    })
                }
                ColumnReader::Int96ColumnReader(r) => read_typed(r, rows, max_def, |v| {
                    timestamp_cell(v.to_nanos(), 1_000_000_000, true)
                }),
                ColumnReader::FloatColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| Cell::Float(f64::from(*v)))
                }
                ColumnReader::DoubleColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| Cell::Float(*v))
                }
                ColumnReader::ByteArrayColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| text_cell(v.data()))
                }
                ColumnReader::FixedLenByteArrayColumnReader(r) => {
                    read_typed(r, rows, max_def, |v| text_cell(v.data()))
                }
            }
            .map_err(|e| format_error(&self.path, &e))?;
            if cells.len() != rows {
                return Err(ReadError::format(
                    &self.path,
                    format!(
                        "row group {}: column {:?} has {} values where {rows} rows were expected",
                        self.next_group - 1,
                        d.path().string(),
                        cells.len()
                    ),
                ));
            }
            columns.push(cells);
        }
        Ok(columns)
    }
}

impl RecordReader for ParquetReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut left = max;
        while left > 0 {
            if self.rows_left == 0 && !self.next_group()? {
                break;
            }
            let take = left.min(self.rows_left);
            let columns = self.read_rows(take)?;
            let mut iters: Vec<_> = columns.into_iter().map(Vec::into_iter).collect();
            for _ in 0..take {
                self.rows_given += 1;
                let cells = iters
                    .iter_mut()
                    .map(|c| c.next().unwrap_or(Cell::Null))
                    .collect();
                out.push(Item::Record(Record {
                    row: self.rows_given,
                    sheet: None,
                    cells,
                }));
            }
            self.rows_left -= take;
            left -= take;
            added |= take > 0;
        }
        Ok(added)
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.total_rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
    use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    use super::*;
    use crate::export::parquet::ParquetEncoder;
    use crate::export::{Encoder, ParquetCompression};

    fn read_all(path: &Path, columns: &[&str], batch: usize) -> Result<Vec<Record>, ReadError> {
        let mut r = ParquetReader::open(path, &super::super::options(columns))?;
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
        assert_eq!(header(&path).unwrap()[..3], ["symbol", "interval", "ts"]);
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
        let e = header(&path).unwrap_err().to_string();
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
