//! Rows of another system's data (a SQL table, an import file) read as bars: which column
//! gives each bar field, the values of fields no column gives, the time zone of naive times,
//! and what an import does with bars already stored.
//!
//! A row arrives as typed [`Cell`]s, one per [`Field`] (in [`Field::ALL`] order, `Null` where no
//! column is mapped); [`RowMapper::bar`] makes it a bar of a series, or says why it is not one,
//! naming the column. Times:
//! - a date is a daily bar's date (stored at 00:00 UTC of that date);
//! - a naive date-time is in the configured time zone (stored as UTC);
//! - text with an offset (`2024-01-02T09:30:00+08:00`) is that instant; for a daily or longer
//!   bar its date as written;
//! - an instant without a written offset (a `timestamptz`, a Parquet UTC timestamp) is taken
//!   as it is; for a daily or longer bar its date in the configured zone, except that 00:00 UTC
//!   is read as that UTC date (how DMS and most tools write dates as timestamps);
//! - an integer is Unix seconds, or milliseconds when beyond 10^11 (after the year 5000 as
//!   seconds); 8 digits of text (`20240102`) are a date.
//!
//! Key types: [`Field`], [`ColumnMapping`], [`FieldDefaults`], [`ImportMode`], [`RowMapper`].

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};
use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
use serde::{Deserialize, Serialize};

/// A value of a row, typed as its source gives it (a file, a SQL column).
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Empty: an empty CSV field, JSON null or an absent key, an empty xlsx cell, a Parquet null.
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Date(NaiveDate),
    /// A date-time without a time zone (an xlsx date-time, a Parquet timestamp not adjusted to
    /// UTC): the import's time zone says where it is.
    DateTime(NaiveDateTime),
    /// An instant (a Parquet timestamp adjusted to UTC).
    Timestamp(DateTime<Utc>),
}

/// A field of a bar a column can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Symbol,
    Interval,
    Time,
    Open,
    High,
    Low,
    Close,
    Volume,
    AdjClose,
    Turnover,
    OpenInterest,
}

impl Field {
    /// Every field, in the order of a row's cells.
    pub const ALL: [Field; 11] = [
        Field::Symbol,
        Field::Interval,
        Field::Time,
        Field::Open,
        Field::High,
        Field::Low,
        Field::Close,
        Field::Volume,
        Field::AdjClose,
        Field::Turnover,
        Field::OpenInterest,
    ];

    /// The name in mappings (`time`, `adj_close`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Symbol => "symbol",
            Field::Interval => "interval",
            Field::Time => "time",
            Field::Open => "open",
            Field::High => "high",
            Field::Low => "low",
            Field::Close => "close",
            Field::Volume => "volume",
            Field::AdjClose => "adj_close",
            Field::Turnover => "turnover",
            Field::OpenInterest => "open_interest",
        }
    }

    /// The field a mapping names.
    pub fn parse(name: &str) -> Result<Field, String> {
        Field::ALL
            .into_iter()
            .find(|f| f.as_str() == name.trim())
            .ok_or_else(|| {
                format!(
                    "{name:?} is not a bar field (one of {})",
                    Field::ALL.map(Field::as_str).join(", ")
                )
            })
    }

    /// Column names that give the field when no mapping says otherwise, compared without
    /// regard to case: DMS's own export, Yahoo's and the usual Chinese data tools' names.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Field::Symbol => &[
                "symbol",
                "ticker",
                "code",
                "ts_code",
                "vt_symbol",
                "instrument",
            ],
            Field::Interval => &["interval", "freq", "frequency", "period"],
            Field::Time => &[
                "ts",
                "time",
                "date",
                "datetime",
                "timestamp",
                "trade_date",
                "trade_time",
            ],
            Field::Open => &["open", "open_price"],
            Field::High => &["high", "high_price"],
            Field::Low => &["low", "low_price"],
            Field::Close => &["close", "close_price"],
            Field::Volume => &["volume", "vol"],
            Field::AdjClose => &["adj_close", "adj close", "adjclose"],
            Field::Turnover => &["turnover", "amount"],
            Field::OpenInterest => &["open_interest", "openinterest", "oi"],
        }
    }
}

/// Which source column gives each bar field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    pub time: String,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adj_close: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turnover: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest: Option<String>,
}

impl ColumnMapping {
    /// The column mapped to `field`.
    pub fn column(&self, field: Field) -> Option<&str> {
        match field {
            Field::Symbol => self.symbol.as_deref(),
            Field::Interval => self.interval.as_deref(),
            Field::Time => Some(&self.time),
            Field::Open => Some(&self.open),
            Field::High => Some(&self.high),
            Field::Low => Some(&self.low),
            Field::Close => Some(&self.close),
            Field::Volume => self.volume.as_deref(),
            Field::AdjClose => self.adj_close.as_deref(),
            Field::Turnover => self.turnover.as_deref(),
            Field::OpenInterest => self.open_interest.as_deref(),
        }
    }

    /// The mapping of a file: the columns `given` (field name → column) and, for the fields
    /// they leave out, the header's column with one of the field's [`Field::aliases`].
    /// Fields with a default are not looked up. Says which required field has no column.
    pub fn resolve(
        given: &std::collections::BTreeMap<String, String>,
        header: &[String],
        defaults: &FieldDefaults,
    ) -> Result<ColumnMapping, String> {
        let mut found: [Option<String>; 11] = Default::default();
        for (field, column) in given {
            let f = Field::parse(field).map_err(|e| format!("columns: {e}"))?;
            found[Field::ALL.iter().position(|x| *x == f).unwrap_or(0)] = Some(column.clone());
        }
        let defaulted = |f: Field| match f {
            Field::Symbol => defaults.symbol.is_some(),
            Field::Interval => defaults.interval.is_some(),
            Field::Volume => defaults.volume.is_some(),
            _ => false,
        };
        for (i, f) in Field::ALL.into_iter().enumerate() {
            if found[i].is_some() || defaulted(f) {
                continue;
            }
            found[i] = f.aliases().iter().find_map(|alias| {
                header
                    .iter()
                    .find(|h| h.trim().eq_ignore_ascii_case(alias))
                    .cloned()
            });
        }
        let [
            symbol,
            interval,
            time,
            open,
            high,
            low,
            close,
            volume,
            adj,
            turnover,
            oi,
        ] = found;
        let need = |f: Field, c: Option<String>| {
            c.ok_or_else(|| {
                let hint = match f {
                    Field::Symbol | Field::Interval => {
                        format!(" or give defaults.{}", f.as_str())
                    }
                    _ => String::new(),
                };
                format!(
                    "no column gives the {} (map one with columns.{}{hint}; the file's columns: {})",
                    f.as_str(),
                    f.as_str(),
                    dms_common::http_rules::excerpt(&header.join(", "))
                )
            })
        };
        let mapping = ColumnMapping {
            time: need(Field::Time, time)?,
            open: need(Field::Open, open)?,
            high: need(Field::High, high)?,
            low: need(Field::Low, low)?,
            close: need(Field::Close, close)?,
            symbol,
            interval,
            volume,
            adj_close: adj,
            turnover,
            open_interest: oi,
        };
        if mapping.symbol.is_none() && defaults.symbol.is_none() {
            need(Field::Symbol, None)?;
        }
        if mapping.interval.is_none() && defaults.interval.is_none() {
            need(Field::Interval, None)?;
        }
        Ok(mapping)
    }
}

/// Values for fields no column gives.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<Symbol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<f64>,
}

/// What an import does with bars the store already holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportMode {
    /// Stored bars take the imported values (identical ones journal nothing).
    #[default]
    Upsert,
    /// Stored bars are kept; only bars at new times are written.
    InsertOnly,
}

impl ImportMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportMode::Upsert => "upsert",
            ImportMode::InsertOnly => "insert_only",
        }
    }

    /// `upsert` (or `overwrite`) or `insert_only`.
    pub fn parse(s: &str) -> Result<ImportMode, String> {
        match s.trim() {
            "upsert" | "overwrite" => Ok(ImportMode::Upsert),
            "insert_only" | "insert-only" => Ok(ImportMode::InsertOnly),
            other => Err(format!("{other:?} is not a mode (upsert or insert_only)")),
        }
    }
}

/// Makes rows bars.
#[derive(Debug, Clone)]
pub struct RowMapper {
    columns: ColumnMapping,
    defaults: FieldDefaults,
    tz: chrono_tz::Tz,
}

impl RowMapper {
    /// Fails when `timezone` is not an IANA time zone.
    pub fn new(
        columns: ColumnMapping,
        defaults: FieldDefaults,
        timezone: &str,
    ) -> Result<RowMapper, String> {
        let tz = timezone
            .parse()
            .map_err(|_| format!("timezone {timezone:?} is not an IANA time zone"))?;
        Ok(RowMapper {
            columns,
            defaults,
            tz,
        })
    }

    pub fn columns(&self) -> &ColumnMapping {
        &self.columns
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        self.tz
    }

    /// The row as a bar of its series; `cells` holds one cell per [`Field::ALL`].
    pub fn bar(&self, cells: &[Cell]) -> Result<(SeriesKey, Bar), String> {
        let key = self.key(cells)?;
        let bar = self.bar_of(key.interval, cells)?;
        Ok((key, bar))
    }

    /// The series of a row (its symbol and interval cells, or the defaults).
    pub fn key(&self, cells: &[Cell]) -> Result<SeriesKey, String> {
        let column = |f: Field| self.columns.column(f).unwrap_or(f.as_str());
        let symbol = match (&cells[0], &self.defaults.symbol) {
            (Cell::Null, Some(s)) => s.clone(),
            (Cell::Null, None) => {
                return Err(
                    "no symbol (the column is empty and defaults.symbol is not set)".into(),
                );
            }
            (c, _) => {
                let text = text_of(c);
                Symbol::new(text.trim())
                    .map_err(|e| format!("column {}: {e}", column(Field::Symbol)))?
            }
        };
        let interval = match (&cells[1], self.defaults.interval) {
            (Cell::Null, Some(i)) => i,
            (Cell::Null, None) => {
                return Err(
                    "no interval (the column is empty and defaults.interval is not set)".into(),
                );
            }
            (c, _) => {
                let text = text_of(c);
                text.trim().parse::<Interval>().map_err(|_| {
                    format!(
                        "column {}: {text:?} is not one of 1m 5m 15m 30m 1h 1d 1wk 1mo",
                        column(Field::Interval)
                    )
                })?
            }
        };
        Ok(SeriesKey::new(symbol, interval))
    }

    /// The bar of a row of a series of `interval` (see [`RowMapper::key`]).
    pub fn bar_of(&self, interval: Interval, cells: &[Cell]) -> Result<Bar, String> {
        let column = |f: Field| self.columns.column(f).unwrap_or(f.as_str());
        let ts = self
            .time(&cells[2], interval)
            .map_err(|e| format!("column {}: {e}", column(Field::Time)))?;
        let mut values = [0.0; 4];
        for (i, f) in [Field::Open, Field::High, Field::Low, Field::Close]
            .into_iter()
            .enumerate()
        {
            values[i] = number(&cells[3 + i])
                .map_err(|e| format!("column {}: {e}", column(f)))?
                .ok_or_else(|| format!("column {} is empty", column(f)))?;
        }
        let volume = match (
            number(&cells[7]).map_err(|e| format!("column {}: {e}", column(Field::Volume)))?,
            self.defaults.volume,
        ) {
            (Some(v), _) => v,
            (None, Some(d)) => d,
            (None, None) if self.columns.volume.is_none() => 0.0,
            (None, None) => {
                return Err(format!(
                    "column {} is empty (give defaults.volume to use a value)",
                    column(Field::Volume)
                ));
            }
        };
        let mut optional = [None; 3];
        for (i, f) in [Field::AdjClose, Field::Turnover, Field::OpenInterest]
            .into_iter()
            .enumerate()
        {
            optional[i] =
                number(&cells[8 + i]).map_err(|e| format!("column {}: {e}", column(f)))?;
        }
        let mut bar = Bar::ohlcv(ts, values[0], values[1], values[2], values[3], volume);
        [bar.adj_close, bar.turnover, bar.open_interest] = optional;
        Ok(bar)
    }

    /// A time cell as the start of a bar of `interval` (see the module doc).
    pub fn time(&self, cell: &Cell, interval: Interval) -> Result<Timestamp, String> {
        let daily = interval.is_daily_or_longer();
        let instant: DateTime<Utc> = match cell {
            Cell::Date(d) => return Ok(Timestamp::from_date(*d)),
            Cell::DateTime(t) => {
                if daily {
                    return Ok(Timestamp::from_date(t.date()));
                }
                self.tz
                    .from_local_datetime(t)
                    .earliest()
                    .ok_or_else(|| format!("{t} does not exist in {}", self.tz))?
                    .with_timezone(&Utc)
            }
            Cell::Timestamp(t) => *t,
            Cell::Int(n) => unix(*n)?,
            Cell::Text(s) => return self.text_time(s.trim(), interval),
            Cell::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => unix(*f as i64)?,
            Cell::Float(f) => return Err(format!("{f} is not a time")),
            Cell::Bool(b) => return Err(format!("{b} is not a time")),
            Cell::Null => return Err("is empty".into()),
        };
        if daily {
            let midnight_utc = instant.num_seconds_from_midnight() == 0;
            let date = if midnight_utc {
                instant.date_naive()
            } else {
                instant.with_timezone(&self.tz).date_naive()
            };
            return Ok(Timestamp::from_date(date));
        }
        Ok(Timestamp(instant.timestamp()))
    }

    fn text_time(&self, s: &str, interval: Interval) -> Result<Timestamp, String> {
        for f in ["%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d"] {
            if let Ok(d) = NaiveDate::parse_from_str(s, f) {
                return Ok(Timestamp::from_date(d));
            }
        }
        if s.len() == 8
            && s.bytes().all(|b| b.is_ascii_digit())
            && let Ok(d) = NaiveDate::parse_from_str(s, "%Y%m%d")
        {
            return Ok(Timestamp::from_date(d));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z"))
        {
            if interval.is_daily_or_longer() {
                return Ok(Timestamp::from_date(t.date_naive()));
            }
            return Ok(Timestamp(t.timestamp()));
        }
        if let Some(naive) = [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M",
            "%Y-%m-%dT%H:%M",
            "%Y/%m/%d %H:%M:%S",
            "%Y/%m/%d %H:%M",
            "%Y%m%d %H:%M:%S",
        ]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        {
            return self.time(&Cell::DateTime(naive), interval);
        }
        if let Ok(n) = s.parse::<i64>() {
            return self.time(&Cell::Int(n), interval);
        }
        Err(format!("{s:?} is not a date or a date-time"))
    }
}

/// Unix seconds, or milliseconds beyond 10^11.
fn unix(n: i64) -> Result<DateTime<Utc>, String> {
    let t = if n.abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    };
    t.ok_or_else(|| format!("{n} is not a Unix time"))
}

/// A cell's text (a symbol or an interval).
fn text_of(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Date(d) => d.to_string(),
        Cell::DateTime(t) => t.to_string(),
        Cell::Timestamp(t) => t.to_rfc3339(),
        Cell::Null => String::new(),
    }
}

/// A cell as a number (None when empty).
fn number(cell: &Cell) -> Result<Option<f64>, String> {
    match cell {
        Cell::Null => Ok(None),
        Cell::Float(f) => Ok(Some(*f)),
        Cell::Int(i) => Ok(Some(*i as f64)),
        Cell::Text(s) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{s:?} is not a number")),
        other => Err(format!("{} is not a number", text_of(other))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mappings_resolve_from_aliases_and_name_what_is_missing() {
        let h = header(&[
            "Date",
            "Open",
            "High",
            "Low",
            "Close",
            "Adj Close",
            "Volume",
        ]);
        let defaults = FieldDefaults {
            symbol: Some(Symbol::new("GOOG").unwrap()),
            interval: Some(Interval::D1),
            volume: None,
        };
        let m = ColumnMapping::resolve(&BTreeMap::new(), &h, &defaults).unwrap();
        assert_eq!(m.time, "Date");
        assert_eq!(m.adj_close.as_deref(), Some("Adj Close"));
        assert_eq!(m.symbol, None);
        let given = BTreeMap::from([("close".to_string(), "Adj Close".to_string())]);
        let m = ColumnMapping::resolve(&given, &h, &defaults).unwrap();
        assert_eq!(m.close, "Adj Close");
        let e =
            ColumnMapping::resolve(&BTreeMap::new(), &h, &FieldDefaults::default()).unwrap_err();
        assert!(e.contains("no column gives the symbol"), "{e}");
        assert!(e.contains("defaults.symbol"), "{e}");
        let bad = BTreeMap::from([("price".to_string(), "x".to_string())]);
        let e = ColumnMapping::resolve(&bad, &h, &defaults).unwrap_err();
        assert!(e.contains("\"price\" is not a bar field"), "{e}");
    }

    fn mapper(tz: &str) -> RowMapper {
        let h = header(&["symbol", "interval", "ts", "open", "high", "low", "close"]);
        let m = ColumnMapping::resolve(&BTreeMap::new(), &h, &FieldDefaults::default()).unwrap();
        RowMapper::new(m, FieldDefaults::default(), tz).unwrap()
    }

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn times_follow_their_kind_and_the_zone() {
        let sh = mapper("Asia/Shanghai");
        let text = |s: &str| Cell::Text(s.into());
        let day = Timestamp::from_date(ymd(2024, 1, 2));
        for t in [
            "2024-01-02",
            "20240102",
            "2024/01/02",
            "2024-01-02T00:00:00Z",
        ] {
            assert_eq!(sh.time(&text(t), Interval::D1), Ok(day), "{t}");
        }
        // A naive time is local: 09:30 in Shanghai is 01:30Z.
        let naive = ymd(2024, 1, 2).and_hms_opt(9, 30, 0).unwrap();
        let utc = naive.and_utc().timestamp() - 8 * 3600;
        assert_eq!(
            sh.time(&text("2024-01-02 09:30:00"), Interval::H1),
            Ok(Timestamp(utc))
        );
        assert_eq!(
            sh.time(&Cell::DateTime(naive), Interval::M30),
            Ok(Timestamp(utc))
        );
        assert_eq!(sh.time(&Cell::DateTime(naive), Interval::D1), Ok(day));
        // An instant: midnight UTC is its UTC date; otherwise the local date.
        let midnight = ymd(2024, 1, 2).and_hms_opt(0, 0, 0).unwrap().and_utc();
        assert_eq!(sh.time(&Cell::Timestamp(midnight), Interval::D1), Ok(day));
        let local_midnight = ymd(2024, 1, 1).and_hms_opt(16, 0, 0).unwrap().and_utc();
        assert_eq!(
            sh.time(&Cell::Timestamp(local_midnight), Interval::D1),
            Ok(day)
        );
        assert_eq!(
            sh.time(&text("2024-01-02T00:00:00+08:00"), Interval::D1),
            Ok(day)
        );
        // Integers: seconds, or milliseconds when large.
        assert_eq!(
            sh.time(&Cell::Int(1_704_153_600_000), Interval::H1),
            Ok(Timestamp(1_704_153_600))
        );
        assert_eq!(
            sh.time(&Cell::Int(1_704_153_600), Interval::H1),
            Ok(Timestamp(1_704_153_600))
        );
        assert!(
            sh.time(&text("yesterday"), Interval::D1)
                .unwrap_err()
                .contains("\"yesterday\"")
        );
        assert!(
            sh.time(&Cell::Null, Interval::D1)
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn rows_become_bars_or_name_the_column_at_fault() {
        let m = mapper("UTC");
        let text = |s: &str| Cell::Text(s.into());
        let mut cells = vec![
            text("GOOG"),
            text("1d"),
            text("2024-01-02"),
            text("1.5"),
            Cell::Float(2.0),
            Cell::Int(1),
            text("1.75"),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
        ];
        let (key, bar) = m.bar(&cells).unwrap();
        assert_eq!(key.to_string(), "GOOG@1d");
        assert_eq!(
            (bar.open, bar.low, bar.close, bar.volume),
            (1.5, 1.0, 1.75, 0.0)
        );
        cells[6] = text("n/a");
        assert_eq!(
            m.bar(&cells).unwrap_err(),
            "column close: \"n/a\" is not a number"
        );
        cells[6] = Cell::Null;
        assert_eq!(m.bar(&cells).unwrap_err(), "column close is empty");
        cells[6] = text("1.75");
        cells[1] = text("2d");
        assert!(
            m.bar(&cells)
                .unwrap_err()
                .contains("column interval: \"2d\"")
        );
    }

    #[test]
    fn modes_and_fields_parse() {
        assert_eq!(ImportMode::parse("overwrite"), Ok(ImportMode::Upsert));
        assert_eq!(ImportMode::parse("insert_only"), Ok(ImportMode::InsertOnly));
        assert!(ImportMode::parse("merge").is_err());
        assert_eq!(Field::parse("adj_close"), Ok(Field::AdjClose));
    }
}
