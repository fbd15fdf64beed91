//! `CsvSource`: a directory of OHLCV CSV files, one series per file.
//!
//! Reading a file gives a [`CsvSeries`]: its series key, its bars sorted by time, and a
//! [`RowProblem`] (file and line) for every row that could not be read, which is skipped while
//! the other rows are kept. See [`crate::sources::config::CsvSourceConfig`] for the accepted columns and
//! time formats.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};

use crate::sources::config::CsvSourceConfig;
use crate::sources::{FetchStats, Fetched, Source, SourceError};

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub file: PathBuf,
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// One file's series.
#[derive(Debug, Clone)]
pub struct CsvSeries {
    pub file: PathBuf,
    pub key: SeriesKey,
    /// Bars in time order, daily and longer ones aligned to the start of their period.
    pub bars: Vec<Bar>,
    /// Rows that were skipped, with the reason.
    pub problems: Vec<RowProblem>,
    /// Whether the interval was guessed from the timestamps (not configured).
    pub interval_guessed: bool,
}

/// Why a whole file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
}

/// A directory of CSV files.
#[derive(Debug, Clone)]
pub struct CsvSource {
    config: CsvSourceConfig,
}

/// Which column holds what.
#[derive(Debug, Default)]
struct Columns {
    time: Option<usize>,
    open: Option<usize>,
    high: Option<usize>,
    low: Option<usize>,
    close: Option<usize>,
    volume: Option<usize>,
    adj_close: Option<usize>,
    turnover: Option<usize>,
    open_interest: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Columns {
        let mut c = Columns::default();
        for (i, raw) in header.iter().enumerate() {
            let name = raw
                .trim()
                .trim_start_matches('\u{feff}')
                .to_ascii_lowercase()
                .replace([' ', '-', '.'], "_");
            let slot = match name.as_str() {
                "" if i == 0 => &mut c.time,
                "date" | "datetime" | "time" | "timestamp" | "date_time" | "trade_date"
                | "trade_time" => &mut c.time,
                "open" | "open_price" | "o" => &mut c.open,
                "high" | "high_price" | "h" => &mut c.high,
                "low" | "low_price" | "l" => &mut c.low,
                "close" | "close_price" | "c" => &mut c.close,
                "volume" | "vol" | "v" => &mut c.volume,
                "adj_close" | "adjclose" | "adjusted_close" | "adj_close_price" => &mut c.adj_close,
                "turnover" | "amount" => &mut c.turnover,
                "open_interest" | "openinterest" | "oi" => &mut c.open_interest,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(i);
            }
        }
        c
    }

    fn missing(&self) -> Vec<&'static str> {
        [
            (
                "time (first unnamed column or date/datetime/time/timestamp)",
                self.time,
            ),
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
        ]
        .into_iter()
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| n)
        .collect()
    }
}

impl CsvSource {
    pub fn new(config: CsvSourceConfig) -> Self {
        CsvSource { config }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The `*.csv` files of the directory, by name.
    pub fn files(&self) -> Result<Vec<PathBuf>, CsvError> {
        let dir = &self.config.dir;
        let io = |source| CsvError::Io {
            path: dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let is_csv = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            if is_csv && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads one file.
    pub fn read_file(&self, path: &Path) -> Result<CsvSeries, CsvError> {
        let format_err = |message: String| CsvError::Format {
            path: path.to_path_buf(),
            message,
        };
        let (file_name, symbol, configured) = self.file_settings(path)?;

        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(|e| csv_err(path, e))?;
        let header = reader.headers().map_err(|e| csv_err(path, e))?.clone();
        let columns = Columns::from_header(&header);
        let missing = columns.missing();
        if !missing.is_empty() {
            return Err(format_err(format!(
                "header {:?} has no column for {}",
                header.iter().collect::<Vec<_>>(),
                missing.join(", ")
            )));
        }

        let mut problems = Vec::new();
        let mut rows: Vec<(u64, Bar, bool)> = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(line);
                    problems.push(RowProblem {
                        file: path.to_path_buf(),
                        line,
                        message: format!("unreadable row: {e}"),
                    });
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        break;
                    }
                    continue;
                }
            }
            let line = record.position().map(|p| p.line()).unwrap_or(line);
            if record.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            match parse_row(&record, &header, &columns) {
                Ok((bar, date_only)) => rows.push((line, bar, date_only)),
                Err(message) => problems.push(RowProblem {
                    file: path.to_path_buf(),
                    line,
                    message: format!("{message}; row skipped"),
                }),
            }
        }

        let (interval, interval_guessed) = match configured {
            Some(i) => (i, false),
            None => (
                guess_interval(&rows).ok_or_else(|| {
                    format_err(format!(
                        "cannot tell the bar interval from {} rows; set it with files.{file_name}.interval",
                        rows.len()
                    ))
                })?,
                true,
            ),
        };
        if interval.is_daily_or_longer() {
            for (_, bar, _) in &mut rows {
                bar.ts = interval.align(bar.ts);
            }
        }
        rows.sort_by_key(|(line, bar, _)| (bar.ts, *line));
        let mut bars = Vec::with_capacity(rows.len());
        let mut first_line: HashMap<i64, u64> = HashMap::new();
        for (line, bar, _) in rows {
            if let Some(first) = first_line.get(&bar.ts.0) {
                problems.push(RowProblem {
                    file: path.to_path_buf(),
                    line,
                    message: format!(
                        "a second {interval} bar for {} (line {first} has one); row skipped",
                        bar.ts
                    ),
                });
                continue;
            }
            first_line.insert(bar.ts.0, line);
            bars.push(bar);
        }
        problems.sort_by_key(|p| p.line);
        Ok(CsvSeries {
            file: path.to_path_buf(),
            key: SeriesKey::new(symbol, interval),
            bars,
            problems,
            interval_guessed,
        })
    }
}

impl CsvSource {
    /// The file holding `symbol`'s bars: a file mapped to it in `files`, else `SYMBOL.csv`.
    pub fn file_for(&self, symbol: &Symbol) -> Option<PathBuf> {
        let mapped = self
            .config
            .files
            .iter()
            .find(|(_, f)| f.symbol.as_ref() == Some(symbol))
            .map(|(name, _)| self.config.dir.join(name));
        mapped
            .or_else(|| Some(self.config.dir.join(format!("{symbol}.csv"))))
            .filter(|p| p.is_file())
    }

    /// A file's name, its symbol (mapped, else the name without `.csv`) and its configured
    /// interval, if any.
    fn file_settings<'p>(
        &self,
        path: &'p Path,
    ) -> Result<(&'p str, Symbol, Option<Interval>), CsvError> {
        let format_err = |message: String| CsvError::Format {
            path: path.to_path_buf(),
            message,
        };
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format_err("file name is not UTF-8".into()))?;
        let file_config = self.config.files.get(file_name);
        let symbol = match file_config.and_then(|f| f.symbol.clone()) {
            Some(s) => s,
            None => {
                let stem = file_name
                    .rsplit_once('.')
                    .map(|(s, _)| s)
                    .unwrap_or(file_name);
                Symbol::new(stem).map_err(|e| {
                    format_err(format!(
                        "the file name does not make a symbol ({e}); map it with files.{file_name}.symbol"
                    ))
                })?
            }
        };
        let interval = file_config
            .and_then(|f| f.interval)
            .or(self.config.interval);
        Ok((file_name, symbol, interval))
    }

    /// The series of every file. A file whose interval is configured is not read; the others
    /// are read to guess it from their timestamps.
    pub fn series(&self) -> Result<Vec<SeriesKey>, CsvError> {
        let mut out = Vec::new();
        for path in self.files()? {
            let key = match self.file_settings(&path) {
                Ok((_, symbol, Some(interval))) => Ok(SeriesKey::new(symbol, interval)),
                Ok((_, _, None)) => self.read_file(&path).map(|s| s.key),
                Err(e) => Err(e),
            };
            match key {
                Ok(k) => out.push(k),
                Err(e) => tracing::warn!(error = %e, "CSV file skipped"),
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Source for CsvSource {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn history_limit(&self, _interval: Interval) -> Option<std::time::Duration> {
        None
    }

    async fn fetch(
        &self,
        series: &SeriesKey,
        range: dms_common::TimeRange,
    ) -> Result<Fetched, SourceError> {
        let unsupported = |message: String| SourceError::Unsupported {
            source_name: self.config.name.clone(),
            series: series.to_string(),
            message,
        };
        let Some(path) = self.file_for(&series.symbol) else {
            return Err(SourceError::NotFound {
                source_name: self.config.name.clone(),
                symbol: series.symbol.to_string(),
                message: format!("no CSV file for it in {}", self.config.dir.display()),
            });
        };
        let this = self.clone();
        let started = std::time::Instant::now();
        let read = tokio::task::spawn_blocking(move || this.read_file(&path))
            .await
            .map_err(|e| unsupported(e.to_string()))
            .and_then(|r| r.map_err(|e| unsupported(e.to_string())));
        crate::metrics::provider_request(
            &self.config.name,
            started.elapsed(),
            read.is_err().then_some("unusable"),
        );
        let read = read?;
        if read.key.interval != series.interval {
            return Err(unsupported(format!(
                "{} holds {} bars",
                read.file.display(),
                read.key.interval
            )));
        }
        for p in read.problems.iter().take(20) {
            tracing::warn!("{p}");
        }
        Ok(Fetched {
            bars: read
                .bars
                .into_iter()
                .filter(|b| range.contains(b.ts))
                .collect(),
            actions: Vec::new(),
            provisional_from: None,
            stats: FetchStats {
                requests: 1,
                ..FetchStats::default()
            },
        })
    }
}

fn csv_err(path: &Path, e: csv::Error) -> CsvError {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => CsvError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => CsvError::Format {
            path: path.to_path_buf(),
            message: format!("{other:?}"),
        },
    }
}

fn parse_row(
    record: &csv::StringRecord,
    header: &csv::StringRecord,
    c: &Columns,
) -> Result<(Bar, bool), String> {
    let field = |i: usize| record.get(i).map(str::trim).unwrap_or("");
    let name = |i: usize| {
        let n = header.get(i).unwrap_or("").trim();
        if n.is_empty() {
            format!("column {}", i + 1)
        } else {
            format!("column {n}")
        }
    };
    let required = |col: Option<usize>| -> Result<f64, String> {
        let i = col.expect("checked with the header");
        let raw = field(i);
        if raw.is_empty() {
            return Err(format!("{} is empty", name(i)));
        }
        raw.parse::<f64>()
            .map_err(|_| format!("{}: {raw:?} is not a number", name(i)))
    };
    let optional = |col: Option<usize>| -> Result<Option<f64>, String> {
        match col {
            None => Ok(None),
            Some(i) => {
                let raw = field(i);
                if raw.is_empty() {
                    return Ok(None);
                }
                raw.parse::<f64>()
                    .map(Some)
                    .map_err(|_| format!("{}: {raw:?} is not a number", name(i)))
            }
        }
    };
    let time_col = c.time.expect("checked with the header");
    let raw_time = field(time_col);
    let (ts, date_only) = parse_time(raw_time).ok_or_else(|| {
        format!(
            "{}: {raw_time:?} is not a date or date-time",
            name(time_col)
        )
    })?;
    let bar = Bar {
        ts,
        open: required(c.open)?,
        high: required(c.high)?,
        low: required(c.low)?,
        close: required(c.close)?,
        volume: optional(c.volume)?.unwrap_or(0.0),
        adj_close: optional(c.adj_close)?,
        turnover: optional(c.turnover)?,
        open_interest: optional(c.open_interest)?,
    };
    Ok((bar, date_only))
}

const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"];
const DATETIME_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M",
];
const OFFSET_FORMATS: &[&str] = &["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z"];

/// Parses a time cell; returns the UTC time and whether it was a bare date.
pub fn parse_time(raw: &str) -> Option<(Timestamp, bool)> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if raw.bytes().all(|b| b.is_ascii_digit()) {
        return match raw.len() {
            8 => NaiveDate::parse_from_str(raw, "%Y%m%d")
                .ok()
                .map(|d| (Timestamp::from_date(d), true)),
            9 | 10 => raw.parse().ok().map(|s| (Timestamp(s), false)),
            13 => raw
                .parse::<i64>()
                .ok()
                .map(|ms| (Timestamp(ms.div_euclid(1000)), false)),
            _ => None,
        };
    }
    for f in DATE_FORMATS {
        if let Ok(d) = NaiveDate::parse_from_str(raw, f) {
            return Some((Timestamp::from_date(d), true));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some((Timestamp(t.timestamp()), false));
    }
    for f in OFFSET_FORMATS {
        if let Ok(t) = DateTime::parse_from_str(raw, f) {
            return Some((Timestamp(t.timestamp()), false));
        }
    }
    for f in DATETIME_FORMATS {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, f) {
            return Some((Timestamp(t.and_utc().timestamp()), false));
        }
    }
    None
}

/// The interval whose spacing is the most common gap between consecutive rows.
fn guess_interval(rows: &[(u64, Bar, bool)]) -> Option<Interval> {
    let mut ts: Vec<i64> = rows.iter().map(|(_, b, _)| b.ts.0).collect();
    ts.sort_unstable();
    ts.dedup();
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for w in ts.windows(2) {
        let gap = w[1] - w[0];
        // Months vary in length: count all month-like gaps together.
        let gap = if (27 * 86_400..=32 * 86_400).contains(&gap) {
            30 * 86_400
        } else {
            gap
        };
        *counts.entry(gap).or_default() += 1;
    }
    let (gap, _) = counts
        .into_iter()
        .max_by_key(|(gap, n)| (*n, std::cmp::Reverse(*gap)))?;
    Interval::from_spacing(gap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::config::CsvFileConfig;

    fn source(dir: &Path) -> CsvSource {
        CsvSource::new(CsvSourceConfig {
            name: "test".into(),
            dir: dir.to_path_buf(),
            import_on_start: true,
            interval: None,
            files: Default::default(),
        })
    }

    fn sample(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/sample-data")
            .join(name)
    }

    #[test]
    fn reads_the_sample_files_with_guessed_intervals() {
        let src = source(&sample(""));
        let goog = src.read_file(&sample("GOOG.csv")).unwrap();
        assert_eq!(goog.key.to_string(), "GOOG@1d");
        assert_eq!(goog.bars.len(), 2148);
        assert!(goog.problems.is_empty());
        assert_eq!(goog.bars[0].ts.to_string(), "2004-08-19T00:00:00Z");
        assert_eq!((goog.bars[0].open, goog.bars[0].close), (100.0, 100.34));
        let fx = src.read_file(&sample("EURUSD.csv")).unwrap();
        assert_eq!((fx.key.interval, fx.bars.len()), (Interval::H1, 5000));
        assert_eq!(fx.bars[0].ts.to_string(), "2017-04-19T09:00:00Z");
        let btc = src.read_file(&sample("BTCUSD.csv")).unwrap();
        assert_eq!((btc.key.interval, btc.bars.len()), (Interval::Mo1, 156));
        // Month-end labels become the month's start.
        assert_eq!(btc.bars[0].ts.to_string(), "2012-01-01T00:00:00Z");
        assert_eq!(btc.bars[0].volume, 2012.25343589);
        assert!(btc.interval_guessed);
    }

    #[test]
    fn bad_rows_are_reported_with_line_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ACME.csv");
        std::fs::write(
            &p,
            "Date,Open,High,Low,Close,Volume\n\
             2024-01-02,10,11,9,10.5,100\n\
             2024-01-03,10,eleven,9,10.5,100\n\
             not-a-date,10,11,9,10.5,100\n\
             2024-01-04,10,11,9,10.5\n\
             2024-01-05,10,11,9,,100\n\
             \n\
             2024-01-08,10,11,9,10.5,100\n\
             2024-01-08,10,12,9,10.5,100\n\
             2024-01-09,10,11,9,10.5,100,extra\n",
        )
        .unwrap();
        let s = source(dir.path()).read_file(&p).unwrap();
        assert_eq!(s.key.to_string(), "ACME@1d");
        assert_eq!(s.bars.len(), 4, "{:?}", s.bars);
        // A missing optional cell (volume) is 0; a missing price is an error.
        assert_eq!(s.bars[1].volume, 0.0);
        let shown: Vec<String> = s.problems.iter().map(|p| p.to_string()).collect();
        let file = p.display().to_string();
        assert_eq!(shown.len(), 4, "{shown:?}");
        assert_eq!(
            shown[0],
            format!("{file}:3: column High: \"eleven\" is not a number; row skipped")
        );
        assert!(
            shown[1].starts_with(&format!("{file}:4: column Date")),
            "{shown:?}"
        );
        assert!(
            shown[2].starts_with(&format!("{file}:6: column Close is empty")),
            "{shown:?}"
        );
        assert!(
            shown[3].starts_with(&format!("{file}:9: a second 1d bar")),
            "{shown:?}"
        );
    }

    #[test]
    fn columns_are_matched_by_name_and_mapping_sets_symbol() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("eurusd_h1.csv");
        std::fs::write(
            &p,
            "timestamp,open_price,high_price,low_price,close_price,vol,open_interest\n\
             2024-03-01T10:00:00Z,1.08,1.09,1.07,1.085,5,7\n\
             2024-03-01 11:00:00+00:00,1.08,1.09,1.07,1.085,,\n\
             1709294400,1.08,1.09,1.07,1.085,1,\n",
        )
        .unwrap();
        let mut cfg = source(dir.path()).config;
        cfg.files.insert(
            "eurusd_h1.csv".into(),
            CsvFileConfig {
                symbol: Some(Symbol::new("EURUSD=X").unwrap()),
                interval: Some(Interval::H1),
            },
        );
        let s = CsvSource::new(cfg).read_file(&p).unwrap();
        assert_eq!(s.key.to_string(), "EURUSD=X@1h");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.bars.len(), 3);
        assert_eq!(s.bars[0].open_interest, Some(7.0));
        assert_eq!(s.bars[2].ts.to_string(), "2024-03-01T12:00:00Z");
    }

    #[test]
    fn missing_columns_and_bad_names_fail_the_file_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("X.csv");
        std::fs::write(&p, "Date,Open,High,Close\n2024-01-02,1,2,1.5\n").unwrap();
        let err = source(dir.path()).read_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("X.csv") && err.contains("no column for low"),
            "{err}"
        );
        let p = dir.path().join("A B.csv");
        std::fs::write(&p, "Date,Open,High,Low,Close\n").unwrap();
        let err = source(dir.path()).read_file(&p).unwrap_err().to_string();
        assert!(
            err.contains("whitespace") && err.contains("files.A B.csv.symbol"),
            "{err}"
        );
    }

    #[test]
    fn parses_time_formats() {
        let t = |s| parse_time(s).map(|(t, d)| (t.to_string(), d));
        assert_eq!(t("2024-01-31"), Some(("2024-01-31T00:00:00Z".into(), true)));
        assert_eq!(t("2024/01/31"), Some(("2024-01-31T00:00:00Z".into(), true)));
        assert_eq!(t("20240131"), Some(("2024-01-31T00:00:00Z".into(), true)));
        assert_eq!(
            t("2024-01-31 09:30:00"),
            Some(("2024-01-31T09:30:00Z".into(), false))
        );
        assert_eq!(
            t("2024-01-31T09:30:00-05:00"),
            Some(("2024-01-31T14:30:00Z".into(), false))
        );
        assert_eq!(
            t("1706693400000"),
            Some(("2024-01-31T09:30:00Z".into(), false))
        );
        assert_eq!(t("31/01/2024"), None);
        assert_eq!(t(""), None);
    }
}
