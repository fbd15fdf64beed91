//! An export request as sent ([`ExportQuery`]), checked ([`ExportRequest`]) and resolved
//! against the store ([`ExportPlan`], by [`plan`]). Messages name the parameter, the same for
//! the REST API and admin gRPC.

use std::collections::BTreeSet;

use dms_common::read_api::{date_of, parse_when};
use dms_common::store::{BarStore, SeriesOverview, StoreError};
use dms_common::{Interval, Symbol, TimeRange, Timestamp};

use super::{EncoderOptions, ExportFormat, ParquetCompression, xlsx};

/// Most different symbols one request may name.
pub const MAX_SYMBOLS: usize = crate::universe::MAX_SYMBOLS;
/// Series named one by one in a file name; more are counted (`dms-12-series-…`).
const NAMED_SERIES: usize = 3;

/// The parameters of `GET /api/data/export`, as sent.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv`, `json`, `jsonl`, `xlsx` or `parquet`.
    pub format: Option<String>,
    /// Symbols separated by commas; none: every stored series.
    pub symbols: Option<String>,
    /// Only this interval.
    pub interval: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339; the range is `[start, end)`.
    pub start: Option<String>,
    pub end: Option<String>,
    /// Parquet only: `zstd` (default) or `snappy`.
    pub compression: Option<String>,
}

/// A checked export request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub format: ExportFormat,
    pub compression: ParquetCompression,
    /// Only these symbols, in order, without repeats (empty: every stored series).
    pub symbols: Vec<Symbol>,
    pub interval: Option<Interval>,
    pub range: TimeRange,
}

impl ExportQuery {
    /// Checks every parameter; the error names the one that is wrong.
    pub fn check(&self) -> Result<ExportRequest, String> {
        let formats = ExportFormat::ALL.map(ExportFormat::as_str).join(", ");
        let format = match self.format.as_deref() {
            None | Some("") => {
                return Err(format!("parameter `format` is required: one of {formats}"));
            }
            Some(raw) => ExportFormat::parse(raw)
                .ok_or_else(|| format!("parameter `format`: {raw:?} is not one of {formats}"))?,
        };
        let compression = match self.compression.as_deref() {
            None | Some("") => ParquetCompression::default(),
            Some(_) if format != ExportFormat::Parquet => {
                return Err(format!(
                    "parameter `compression` applies to parquet only, not to {}",
                    format.as_str()
                ));
            }
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "zstd" => ParquetCompression::Zstd,
                "snappy" => ParquetCompression::Snappy,
                _ => {
                    return Err(format!(
                        "parameter `compression`: {raw:?} is not zstd or snappy"
                    ));
                }
            },
        };
        let mut symbols = Vec::new();
        let mut seen = BTreeSet::new();
        for raw in self
            .symbols
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let symbol = Symbol::new(raw).map_err(|e| format!("parameter `symbols`: {e}"))?;
            if seen.insert(symbol.clone()) {
                symbols.push(symbol);
            }
        }
        if symbols.len() > MAX_SYMBOLS {
            return Err(format!(
                "parameter `symbols`: at most {MAX_SYMBOLS} different symbols"
            ));
        }
        let interval = match self.interval.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<Interval>().map_err(|_| {
                format!("parameter `interval`: {raw:?} is not one of 1m 5m 15m 30m 1h 1d 1wk 1mo")
            })?),
        };
        let start = match self.start.as_deref() {
            None | Some("") => Timestamp(i64::MIN),
            Some(raw) => parse_when("start", raw)?,
        };
        let end = match self.end.as_deref() {
            None | Some("") => Timestamp(i64::MAX),
            Some(raw) => parse_when("end", raw)?,
        };
        if end <= start {
            return Err("parameter `end` must be after `start`".into());
        }
        Ok(ExportRequest {
            format,
            compression,
            symbols,
            interval,
            range: TimeRange::new(start, end),
        })
    }
}

/// An export resolved against the store: what is read, in which order, and the file it makes.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub request: ExportRequest,
    /// The series to read, in symbol and interval order, as the store's overview had them.
    pub series: Vec<SeriesOverview>,
    /// `dms-GOOG-1d-2004-08-19_2013-03-28.parquet`, `dms-12-series-….csv`.
    pub file_name: String,
    /// Bars of the selected series by the store's counts: exact without a range, at most this
    /// with one.
    pub bars_estimate: u64,
}

impl ExportPlan {
    pub fn content_type(&self) -> &'static str {
        self.request.format.content_type()
    }

    /// How the encoder is set up: the request's compression, and the newest bar's time as the
    /// xlsx document's creation time (the same bars make the same file).
    pub fn encoder_options(&self) -> EncoderOptions {
        let newest = self
            .series
            .iter()
            .map(|s| {
                s.last
                    .min(Timestamp(self.request.range.end.0.saturating_sub(1)))
            })
            .max()
            .unwrap_or(Timestamp(0));
        EncoderOptions {
            compression: self.request.compression,
            created: newest.0,
            xlsx_sheet_rows: xlsx::MAX_SHEET_ROWS,
        }
    }
}

/// Why an export cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A parameter is wrong or names what the store does not hold; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
}

/// Resolves `request` against what `store` holds. Every named symbol must have a stored
/// series (of the interval, when one is given); a range without bars is fine (an empty file).
pub async fn plan(store: &dyn BarStore, request: ExportRequest) -> Result<ExportPlan, PlanError> {
    let overview = store.overview().await?;
    let mut series: Vec<SeriesOverview> = overview
        .into_iter()
        .filter(|o| request.interval.is_none_or(|i| o.key.interval == i))
        .filter(|o| request.symbols.is_empty() || request.symbols.contains(&o.key.symbol))
        .collect();
    series.sort_by(|a, b| {
        (a.key.symbol.as_str(), a.key.interval).cmp(&(b.key.symbol.as_str(), b.key.interval))
    });
    for symbol in &request.symbols {
        if !series.iter().any(|s| &s.key.symbol == symbol) {
            let what = match request.interval {
                Some(i) => format!("no {i} series of {:?} is stored", symbol.as_str()),
                None => format!("no series of {:?} is stored", symbol.as_str()),
            };
            return Err(PlanError::Invalid(format!("parameter `symbols`: {what}")));
        }
    }
    if request.format == ExportFormat::Xlsx && series.len() > xlsx::MAX_SERIES {
        return Err(PlanError::Invalid(format!(
            "parameter `symbols`: an xlsx export holds at most {} series (one sheet each), {} are selected; select fewer, or use parquet or csv",
            xlsx::MAX_SERIES,
            series.len()
        )));
    }
    let file_name = file_name(&request, &series);
    let bars_estimate = series.iter().map(|s| s.count).sum();
    Ok(ExportPlan {
        request,
        series,
        file_name,
        bars_estimate,
    })
}

/// The file name: `dms-` + the series (`GOOG-1d`, up to three joined by `+`, else
/// `N-series`) + the dates covered + the format's extension. The dates are the first and last
/// day of the stored bars within the requested range (the range itself where it holds none).
pub fn file_name(request: &ExportRequest, series: &[SeriesOverview]) -> String {
    let what = if !series.is_empty() && series.len() <= NAMED_SERIES {
        series
            .iter()
            .map(|s| format!("{}-{}", s.key.symbol, s.key.interval))
            .collect::<Vec<_>>()
            .join("+")
    } else {
        format!("{}-series", series.len())
    };
    let range = request.range;
    let last_in_range = Timestamp(range.end.0.saturating_sub(1));
    let first = series.iter().map(|s| s.first.max(range.start)).min();
    let last = series.iter().map(|s| s.last.min(last_in_range)).max();
    let open = |t: Timestamp| t.0 == i64::MIN || t.0 == i64::MAX;
    let dates = match (first, last) {
        (Some(f), Some(l)) if f <= l => Some((f, l)),
        // Nothing stored in the range: the range asked for, where it is bounded.
        _ if !open(range.start) && !open(range.end) => Some((range.start, last_in_range)),
        _ => None,
    };
    let mut name = format!("dms-{what}");
    if let Some((f, l)) = dates {
        name.push_str(&format!("-{}_{}", date_of(f), date_of(l)));
    }
    name.push('.');
    name.push_str(request.format.as_str());
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use dms_common::SeriesKey;
    use dms_common::store::Digest;

    fn query(pairs: &[(&str, &str)]) -> ExportQuery {
        let mut q = ExportQuery::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "format" => q.format = v,
                "symbols" => q.symbols = v,
                "interval" => q.interval = v,
                "start" => q.start = v,
                "end" => q.end = v,
                "compression" => q.compression = v,
                _ => unreachable!(),
            }
        }
        q
    }

    fn refused(pairs: &[(&str, &str)]) -> String {
        query(pairs).check().unwrap_err()
    }

    #[test]
    fn bad_parameters_are_refused_by_name() {
        assert!(refused(&[]).starts_with("parameter `format` is required"));
        assert!(refused(&[("format", "xls")]).starts_with("parameter `format`: \"xls\""));
        let e = refused(&[("format", "csv"), ("interval", "2d")]);
        assert!(e.starts_with("parameter `interval`"), "{e}");
        let e = refused(&[("format", "csv"), ("start", "2024-13-01")]);
        assert!(e.contains("`start`"), "{e}");
        let e = refused(&[
            ("format", "csv"),
            ("start", "2024-02-01"),
            ("end", "2024-01-01"),
        ]);
        assert_eq!(e, "parameter `end` must be after `start`");
        let e = refused(&[("format", "csv"), ("symbols", "GOOG,BAD SYMBOL")]);
        assert!(e.starts_with("parameter `symbols`"), "{e}");
        let e = refused(&[("format", "csv"), ("compression", "zstd")]);
        assert!(
            e.starts_with("parameter `compression` applies to parquet"),
            "{e}"
        );
        let e = refused(&[("format", "parquet"), ("compression", "gzip")]);
        assert!(e.starts_with("parameter `compression`: \"gzip\""), "{e}");
    }

    #[test]
    fn a_good_query_is_checked_into_a_request() {
        let r = query(&[
            ("format", "Parquet"),
            ("symbols", "GOOG, BTC-USD,GOOG,"),
            ("interval", "1d"),
            ("start", "2010-01-01"),
            ("end", "2011-01-01T00:00:00Z"),
            ("compression", "snappy"),
        ])
        .check()
        .unwrap();
        assert_eq!(r.format, ExportFormat::Parquet);
        assert_eq!(r.compression, ParquetCompression::Snappy);
        let symbols: Vec<&str> = r.symbols.iter().map(Symbol::as_str).collect();
        assert_eq!(symbols, ["GOOG", "BTC-USD"]);
        assert_eq!(r.interval, Some(Interval::D1));
        assert_eq!(r.range.start.to_rfc3339(), "2010-01-01T00:00:00Z");
        let all = query(&[("format", "csv")]).check().unwrap();
        assert!(all.symbols.is_empty() && all.interval.is_none());
        assert_eq!(all.range, TimeRange::all());
        assert_eq!(all.compression, ParquetCompression::Zstd);
    }

    fn overview(symbol: &str, interval: Interval, first: &str, last: &str) -> SeriesOverview {
        SeriesOverview {
            key: SeriesKey::new(Symbol::new(symbol).unwrap(), interval),
            count: 10,
            first: parse_when("first", first).unwrap(),
            last: parse_when("last", last).unwrap(),
            digest: Digest::default(),
        }
    }

    #[test]
    fn file_names_say_the_series_and_the_range_covered() {
        let goog = overview("GOOG", Interval::D1, "2004-08-19", "2013-03-28");
        let btc = overview("BTC-USD", Interval::Mo1, "2012-01-01", "2024-12-01");
        let request = |pairs: &[(&str, &str)]| query(pairs).check().unwrap();
        let all = request(&[("format", "parquet")]);
        assert_eq!(
            file_name(&all, std::slice::from_ref(&goog)),
            "dms-GOOG-1d-2004-08-19_2013-03-28.parquet"
        );
        assert_eq!(
            file_name(&all, &[btc, goog.clone()]),
            "dms-BTC-USD-1mo+GOOG-1d-2004-08-19_2024-12-01.parquet"
        );
        let many: Vec<SeriesOverview> = (0..12).map(|_| goog.clone()).collect();
        assert_eq!(
            file_name(&request(&[("format", "csv")]), &many),
            "dms-12-series-2004-08-19_2013-03-28.csv"
        );
        // A range cuts the dates; its end is exclusive.
        let ranged = request(&[
            ("format", "jsonl"),
            ("start", "2010-01-01"),
            ("end", "2011-01-01"),
        ]);
        assert_eq!(
            file_name(&ranged, std::slice::from_ref(&goog)),
            "dms-GOOG-1d-2010-01-01_2010-12-31.jsonl"
        );
        // Nothing stored in the range: the range asked for; nothing at all: no dates.
        let later = request(&[
            ("format", "csv"),
            ("start", "2030-01-01"),
            ("end", "2030-02-01"),
        ]);
        assert_eq!(
            file_name(&later, std::slice::from_ref(&goog)),
            "dms-GOOG-1d-2030-01-01_2030-01-31.csv"
        );
        assert_eq!(file_name(&all, &[]), "dms-0-series.parquet");
    }
}
