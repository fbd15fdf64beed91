//! Parquet: typed columns written with the `parquet` crate's low-level column writer (no
//! Arrow arrays in between).
//!
//! Schema (every reader maps it to its own types: pandas/pyarrow, DuckDB, Polars, Spark):
//!
//! | column | physical type | logical type |
//! | --- | --- | --- |
//! | `symbol`, `interval` | BYTE_ARRAY, required | STRING (dictionary-encoded) |
//! | `ts` | INT64, required | TIMESTAMP(MILLIS, isAdjustedToUTC = true) |
//! | `open`, `high`, `low`, `close`, `volume` | DOUBLE, required | — |
//! | `adj_close`, `turnover`, `open_interest` | DOUBLE, optional | — (null where a bar has none) |
//!
//! Bars hold their values as `f64` and times in whole seconds, so doubles and milliseconds
//! keep every value exactly. Rows are buffered column by column and written as a row group
//! every [`ROW_GROUP_ROWS`] rows (and at the end), so memory stays bounded whatever the
//! selection; each row group goes to the output as soon as it is complete. Pages are
//! compressed with zstd (level 1) or snappy.

use std::io::Write;
use std::sync::Arc;

use dms_common::{Bar, SeriesKey};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use super::{Encoder, ExportError, ParquetCompression};

/// Rows in a row group: 256Ki rows is about 20 MB of column buffers here; readers parallelize
/// over row groups (DuckDB writes 122,880-row groups, pyarrow up to 1Mi rows), so a 12.6M-bar
/// export has ~48 of them.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// The file's schema, in the Parquet message syntax.
pub const SCHEMA: &str = "
message bar {
  REQUIRED BYTE_ARRAY symbol (STRING);
  REQUIRED BYTE_ARRAY interval (STRING);
  REQUIRED INT64 ts (TIMESTAMP(MILLIS,true));
  REQUIRED DOUBLE open;
  REQUIRED DOUBLE high;
  REQUIRED DOUBLE low;
  REQUIRED DOUBLE close;
  REQUIRED DOUBLE volume;
  OPTIONAL DOUBLE adj_close;
  OPTIONAL DOUBLE turnover;
  OPTIONAL DOUBLE open_interest;
}
";

/// An optional column: the values present and a definition level per row (1 present, 0 null).
#[derive(Debug, Default)]
struct OptionalColumn {
    values: Vec<f64>,
    levels: Vec<i16>,
}

impl OptionalColumn {
    fn push(&mut self, v: Option<f64>) {
        match v {
            Some(v) => {
                self.values.push(v);
                self.levels.push(1);
            }
            None => self.levels.push(0),
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.levels.clear();
    }
}

/// The rows of the row group being gathered, column by column.
#[derive(Debug, Default)]
struct Columns {
    symbol: Vec<ByteArray>,
    interval: Vec<ByteArray>,
    ts_ms: Vec<i64>,
    /// open, high, low, close, volume.
    values: [Vec<f64>; 5],
    /// adj_close, turnover, open_interest.
    optional: [OptionalColumn; 3],
}

impl Columns {
    fn len(&self) -> usize {
        self.ts_ms.len()
    }

    fn clear(&mut self) {
        self.symbol.clear();
        self.interval.clear();
        self.ts_ms.clear();
        self.values.iter_mut().for_each(Vec::clear);
        self.optional.iter_mut().for_each(OptionalColumn::clear);
    }
}

/// Writes bars as a Parquet file.
pub struct ParquetEncoder<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    row_group_rows: usize,
    columns: Columns,
    /// The current series' text, shared by its rows.
    current: Option<(SeriesKey, ByteArray, ByteArray)>,
}

impl<W: Write + Send> std::fmt::Debug for ParquetEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetEncoder")
            .field("row_group_rows", &self.row_group_rows)
            .field("buffered_rows", &self.columns.len())
            .finish_non_exhaustive()
    }
}

/// The writer properties: the codec, dictionaries for the two text columns only (prices
/// rarely repeat, so a dictionary there is work that is thrown away).
fn properties(compression: ParquetCompression) -> WriterProperties {
    let codec = match compression {
        ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
        ParquetCompression::Snappy => Compression::SNAPPY,
    };
    WriterProperties::builder()
        .set_compression(codec)
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from("symbol"), true)
        .set_column_dictionary_enabled(ColumnPath::from("interval"), true)
        .build()
}

impl<W: Write + Send> ParquetEncoder<W> {
    /// Writes the file's magic; row groups of `row_group_rows` rows follow.
    pub fn new(
        out: W,
        compression: ParquetCompression,
        row_group_rows: usize,
    ) -> Result<Self, ExportError> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let writer = SerializedFileWriter::new(out, schema, Arc::new(properties(compression)))?;
        Ok(ParquetEncoder {
            writer,
            row_group_rows: row_group_rows.max(1),
            columns: Columns::default(),
            current: None,
        })
    }

    /// Ends the file and gives the output back (flushed).
    pub fn into_inner(mut self) -> Result<W, ExportError> {
        self.flush_row_group()?;
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        Ok(out)
    }

    /// Writes the gathered rows as one row group.
    fn flush_row_group(&mut self) -> Result<(), ExportError> {
        if self.columns.len() == 0 {
            return Ok(());
        }
        let c = &self.columns;
        let mut group = self.writer.next_row_group()?;
        let mut index = 0;
        while let Some(mut column) = group.next_column()? {
            match index {
                0 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&c.symbol, None, None)?,
                1 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&c.interval, None, None)?,
                2 => column
                    .typed::<Int64Type>()
                    .write_batch(&c.ts_ms, None, None)?,
                3..=7 => {
                    column
                        .typed::<DoubleType>()
                        .write_batch(&c.values[index - 3], None, None)?
                }
                _ => {
                    let o = &c.optional[index - 8];
                    column
                        .typed::<DoubleType>()
                        .write_batch(&o.values, Some(&o.levels), None)?
                }
            };
            column.close()?;
            index += 1;
        }
        group.close()?;
        self.columns.clear();
        Ok(())
    }
}

impl<W: Write + Send> Encoder for ParquetEncoder<W> {
    fn write(&mut self, key: &SeriesKey, bars: &[Bar]) -> Result<(), ExportError> {
        if self.current.as_ref().is_none_or(|(k, _, _)| k != key) {
            let text = |s: &str| ByteArray::from(s.as_bytes().to_vec());
            self.current = Some((
                key.clone(),
                text(key.symbol.as_str()),
                text(key.interval.as_str()),
            ));
        }
        let Some((_, symbol, interval)) = &self.current else {
            unreachable!("set above")
        };
        let (symbol, interval) = (symbol.clone(), interval.clone());
        for b in bars {
            let c = &mut self.columns;
            c.symbol.push(symbol.clone());
            c.interval.push(interval.clone());
            c.ts_ms.push(b.ts.secs().saturating_mul(1000));
            for (column, v) in c
                .values
                .iter_mut()
                .zip([b.open, b.high, b.low, b.close, b.volume])
            {
                column.push(v);
            }
            for (column, v) in c
                .optional
                .iter_mut()
                .zip([b.adj_close, b.turnover, b.open_interest])
            {
                column.push(v);
            }
            if c.len() >= self.row_group_rows {
                self.flush_row_group()?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), ExportError> {
        (*self).into_inner().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::export::test_bars::{goog, key};
    use dms_common::Interval;
    use parquet::basic::{LogicalType, TimeUnit};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn encode(
        series: &[(SeriesKey, Vec<Bar>)],
        compression: ParquetCompression,
        rows: usize,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e: Box<dyn Encoder> =
                Box::new(ParquetEncoder::new(&mut out, compression, rows).unwrap());
            for (k, bars) in series {
                e.write(k, bars).unwrap();
            }
            e.finish().unwrap();
        }
        out
    }

    /// Every row of the file as (symbol, interval, ts ms, values).
    #[allow(clippy::type_complexity)]
    fn read(bytes: Vec<u8>) -> Vec<(String, String, i64, Vec<Option<f64>>)> {
        let reader = SerializedFileReader::new(axum::body::Bytes::from(bytes)).unwrap();
        let mut rows = Vec::new();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let mut fields = row.get_column_iter().map(|(_, f)| f.clone());
            let text = |f: Option<Field>| match f {
                Some(Field::Str(s)) => s,
                other => panic!("not text: {other:?}"),
            };
            let symbol = text(fields.next());
            let interval = text(fields.next());
            let ts = match fields.next() {
                Some(Field::TimestampMillis(ms)) => ms,
                other => panic!("not a timestamp: {other:?}"),
            };
            let values = fields
                .map(|f| match f {
                    Field::Double(v) => Some(v),
                    Field::Null => None,
                    other => panic!("not a double: {other:?}"),
                })
                .collect();
            rows.push((symbol, interval, ts, values));
        }
        rows
    }

    fn expected(series: &[(SeriesKey, Vec<Bar>)]) -> Vec<(String, String, i64, Vec<Option<f64>>)> {
        series
            .iter()
            .flat_map(|(k, bars)| {
                bars.iter().map(|b| {
                    (
                        k.symbol.to_string(),
                        k.interval.to_string(),
                        b.ts.secs() * 1000,
                        vec![
                            Some(b.open),
                            Some(b.high),
                            Some(b.low),
                            Some(b.close),
                            Some(b.volume),
                            b.adj_close,
                            b.turnover,
                            b.open_interest,
                        ],
                    )
                })
            })
            .collect()
    }

    fn sample() -> Vec<(SeriesKey, Vec<Bar>)> {
        vec![
            (key("GOOG", Interval::D1), goog()),
            (key("EURUSD=X", Interval::H1), goog()[..2].to_vec()),
        ]
    }

    #[test]
    fn values_and_times_read_back_exactly_with_either_codec() {
        for compression in [ParquetCompression::Zstd, ParquetCompression::Snappy] {
            let bytes = encode(&sample(), compression, ROW_GROUP_ROWS);
            assert_eq!(&bytes[..4], b"PAR1");
            let reader = SerializedFileReader::new(axum::body::Bytes::from(bytes.clone())).unwrap();
            let meta = reader.metadata();
            assert_eq!(meta.file_metadata().num_rows(), 5);
            let codec = meta.row_group(0).column(3).compression();
            let want = match compression {
                ParquetCompression::Zstd => "ZSTD",
                ParquetCompression::Snappy => "SNAPPY",
            };
            assert!(codec.to_string().starts_with(want), "{codec}");
            assert_eq!(read(bytes), expected(&sample()));
        }
    }

    #[test]
    fn the_schema_has_typed_columns_and_a_utc_timestamp() {
        let bytes = encode(&sample(), ParquetCompression::Zstd, ROW_GROUP_ROWS);
        let reader = SerializedFileReader::new(axum::body::Bytes::from(bytes)).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, crate::data::export::COLUMNS);
        assert_eq!(
            schema.column(2).logical_type_ref(),
            Some(&LogicalType::timestamp(true, TimeUnit::MILLIS))
        );
        assert_eq!(
            schema.column(0).logical_type_ref(),
            Some(&LogicalType::String)
        );
        assert_eq!(
            schema.column(3).physical_type(),
            parquet::basic::Type::DOUBLE
        );
        assert!(!schema.column(3).self_type().is_optional());
        assert!(schema.column(8).self_type().is_optional());
    }

    #[test]
    fn rows_are_split_into_row_groups_of_the_given_size() {
        let bytes = encode(&sample(), ParquetCompression::Zstd, 2);
        let reader = SerializedFileReader::new(axum::body::Bytes::from(bytes.clone())).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [2, 2, 1]);
        assert_eq!(read(bytes), expected(&sample()));
    }

    #[test]
    fn an_empty_export_is_a_file_with_the_schema_and_no_rows() {
        let bytes = encode(&[], ParquetCompression::Zstd, ROW_GROUP_ROWS);
        let reader = SerializedFileReader::new(axum::body::Bytes::from(bytes)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(reader.metadata().num_row_groups(), 0);
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .num_columns(),
            11
        );
    }
}
