//! Export: stored bars of selected series as one file (CSV, JSON, JSON Lines, Excel xlsx or
//! Parquet), streamed to the client as it is written, never the whole selection in memory.
//!
//! Two front ends serve the same bytes: `GET /api/data/export` (the body of the response) and
//! the admin RPC `Export` (a server stream of chunks that `dmsctl export -o FILE` writes to a
//! file). Both hand the request over as sent and get the same checks and messages.
//!
//! The way through:
//! 1. [`ExportQuery`] (the parameters as sent) → [`ExportQuery::check`] → [`ExportRequest`]
//!    (format, symbols, interval, range, compression), refusing bad input with a message naming
//!    the parameter.
//! 2. [`plan`] resolves the request against the store's overview into an [`ExportPlan`]: the
//!    series in symbol and interval order, the file name (the series and the range covered),
//!    the media type. A named symbol the store does not hold is refused; a selection without
//!    bars is not an error, it gives a valid empty file.
//! 3. [`start`] runs the export: a reader task reads each series from the store in pages
//!    ([`PAGE_BARS`] bars), a blocking task feeds them to the format's [`Encoder`], which writes
//!    to a [`stream::ChunkWriter`] that hands chunks of [`CHUNK_BYTES`] to the transport through
//!    a bounded channel. A slow client slows the reader down; a client that goes away stops it.
//!    The last item of a successful export is [`ExportEvent::Done`]; a stream that ends without
//!    it ended in an error.
//!
//! Formats ([`ExportFormat`]), each in its own module, every one with the same columns:
//! `symbol`, `interval`, `ts`, `open`, `high`, `low`, `close`, `volume`, `adj_close`,
//! `turnover`, `open_interest` (the last three empty where a bar has none):
//! - [`csv`]: a header line, `ts` in RFC 3339, numbers in their shortest exact form.
//! - [`json`]: one array of objects, or JSON Lines (one object per line); absent values left out.
//! - [`xlsx`]: one sheet per series, continued on further sheets at the row limit; `ts` as an
//!   Excel date-time (UTC).
//! - [`parquet`]: typed columns (`ts` a UTC timestamp in milliseconds, prices and volume as
//!   doubles, exact), zstd or snappy, row groups of [`parquet::ROW_GROUP_ROWS`] rows.
//!
//! The same selection of the same bars gives the same bytes every time, whichever front end
//! asks (the xlsx document's creation time is the newest bar's time, not the clock's).
//!
//! # Layout
//!
//! - [`request`]: the query checked; [`stream`]: the plan streamed through an encoder;
//! - one encoder per format: [`csv`], [`json`], [`xlsx`], [`parquet`].

pub mod csv;
pub mod json;
pub mod parquet;
pub mod request;
pub mod stream;
pub mod xlsx;

pub use request::{ExportPlan, ExportQuery, ExportRequest, PlanError, plan};
pub use stream::{Chunk, ExportEvent, ExportStream, start};

use dms_common::store::StoreError;
use dms_common::{Bar, SeriesKey};

/// Bars read from the store in one page.
pub const PAGE_BARS: usize = 10_000;
/// Bytes handed to the transport in one chunk (a gRPC message, a piece of the HTTP body).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// The file formats an export can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    Csv,
    /// One JSON array of objects.
    Json,
    /// JSON Lines: one object per line.
    Jsonl,
    Xlsx,
    Parquet,
}

impl ExportFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [ExportFormat; 5] = [
        ExportFormat::Csv,
        ExportFormat::Json,
        ExportFormat::Jsonl,
        ExportFormat::Xlsx,
        ExportFormat::Parquet,
    ];

    /// The name used in requests, and the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
            ExportFormat::Jsonl => "jsonl",
            ExportFormat::Xlsx => "xlsx",
            ExportFormat::Parquet => "parquet",
        }
    }

    /// The media type of the file.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Csv => "text/csv; charset=utf-8",
            ExportFormat::Json => "application/json",
            ExportFormat::Jsonl => "application/x-ndjson",
            ExportFormat::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            }
            ExportFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format named `name` (`csv`, `json`, `jsonl`, `xlsx`, `parquet`; any case).
    pub fn parse(name: &str) -> Option<ExportFormat> {
        let name = name.to_ascii_lowercase();
        ExportFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// The compression of a Parquet file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    /// Zstandard (level 1): small files, fast to read; the default.
    #[default]
    Zstd,
    /// Snappy: what older readers expect.
    Snappy,
}

impl ParquetCompression {
    pub fn as_str(self) -> &'static str {
        match self {
            ParquetCompression::Zstd => "zstd",
            ParquetCompression::Snappy => "snappy",
        }
    }
}

/// Why an export failed once it had started.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
    /// Writing the file failed (the client went away, a temporary file could not be written).
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing the Parquet file failed: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("writing the xlsx file failed: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    /// The export stopped without finishing (its worker panicked or was cancelled).
    #[error("the export stopped before the end of the file")]
    Incomplete,
}

/// Writes bars in one file format to an output. Series arrive one after the other, each in ts
/// order and possibly in several calls; [`Encoder::finish`] ends the file.
pub trait Encoder: Send {
    /// Writes bars of the series `key`.
    fn write(&mut self, key: &SeriesKey, bars: &[Bar]) -> Result<(), ExportError>;

    /// Ends the file and writes what is left of it to the output.
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// What an encoder needs beyond its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderOptions {
    pub compression: ParquetCompression,
    /// The xlsx document's creation time (Unix seconds): the newest bar's time, so that the
    /// same bars give the same file.
    pub created: i64,
    /// Rows of an xlsx sheet, its header included, before the series continues on a new sheet.
    pub xlsx_sheet_rows: u32,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            compression: ParquetCompression::Zstd,
            created: 0,
            xlsx_sheet_rows: xlsx::MAX_SHEET_ROWS,
        }
    }
}

/// An encoder of `format` writing to `out`.
pub fn encoder<W: std::io::Write + Send + 'static>(
    format: ExportFormat,
    options: EncoderOptions,
    out: W,
) -> Result<Box<dyn Encoder>, ExportError> {
    Ok(match format {
        ExportFormat::Csv => Box::new(csv::CsvEncoder::new(out)?),
        ExportFormat::Json => Box::new(json::JsonEncoder::array(out)?),
        ExportFormat::Jsonl => Box::new(json::JsonEncoder::lines(out)),
        ExportFormat::Xlsx => Box::new(xlsx::XlsxEncoder::new(
            out,
            options.created,
            options.xlsx_sheet_rows,
        )?),
        ExportFormat::Parquet => Box::new(parquet::ParquetEncoder::new(
            out,
            options.compression,
            parquet::ROW_GROUP_ROWS,
        )?),
    })
}

/// Column names, in order, of every format.
pub const COLUMNS: [&str; 11] = [
    "symbol",
    "interval",
    "ts",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "adj_close",
    "turnover",
    "open_interest",
];

#[cfg(test)]
pub(crate) mod test_bars {
    //! Bars with edge values the format tests share.
    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};

    pub(crate) fn key(symbol: &str, interval: Interval) -> SeriesKey {
        SeriesKey::new(Symbol::new(symbol).unwrap(), interval)
    }

    /// GOOG's first daily bars (decimals such as 104.06), a huge volume, optional fields.
    pub(crate) fn goog() -> Vec<Bar> {
        let mut second = Bar::ohlcv(
            Timestamp(1_092_960_000),
            101.01,
            109.08,
            100.5,
            108.31,
            11_428_600.0,
        );
        second.adj_close = Some(54.155);
        second.turnover = Some(1.234_567_890_123_456_7e15);
        second.open_interest = Some(0.0);
        vec![
            Bar::ohlcv(
                Timestamp(1_092_873_600),
                100.0,
                104.06,
                95.96,
                100.34,
                22_351_900.0,
            ),
            second,
            Bar::ohlcv(
                Timestamp(1_093_219_200),
                0.000_123_4,
                1e21,
                1e-7,
                104.059_997_558_593_75,
                9_007_199_254_740_993.0,
            ),
        ]
    }
}
