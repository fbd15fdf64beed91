//! The read side both daemons serve over HTTP (`/api/data/bars`, `/api/data/series`): parsing
//! of the query, one page of bars, and its CSV and JSON forms. Errors are user-facing messages
//! naming the parameter; each daemon wraps them in its response envelope.

use chrono::NaiveDate;
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bar::{Bar, SeriesKey};
use crate::interval::Interval;
use crate::store::{BarStore, SeriesOverview, StoreError};
use crate::symbol::Symbol;
use crate::time::{TimeRange, Timestamp};

/// Most bars in one page of `/api/data/bars`.
pub const MAX_PAGE_BARS: usize = 100_000;
/// Bars in a page when the query gives no `limit`.
pub const DEFAULT_PAGE_BARS: usize = 10_000;

/// The query of `/api/data/bars` and `/api/data/gaps`, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct SeriesQuery {
    pub symbol: Option<String>,
    pub interval: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<String>,
    pub format: Option<String>,
}

/// A checked request for a page of bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarsRequest {
    pub key: SeriesKey,
    pub range: TimeRange,
    pub limit: usize,
    pub csv: bool,
}

/// A date (`2024-01-31`) or a date-time (RFC 3339) in a request.
pub fn parse_when(field: &str, raw: &str) -> Result<Timestamp, String> {
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Timestamp::from_date(d));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(Timestamp(t.timestamp()));
    }
    Err(format!(
        "field `{field}`: {raw:?} is not a date (YYYY-MM-DD) or an RFC 3339 date-time"
    ))
}

impl SeriesQuery {
    /// The series named by `symbol` and `interval` (default `1d`).
    pub fn series_key(&self) -> Result<SeriesKey, String> {
        let raw = self
            .symbol
            .as_deref()
            .ok_or_else(|| "parameter `symbol` is required".to_owned())?;
        let symbol = Symbol::new(raw).map_err(|e| format!("parameter `symbol`: {e}"))?;
        let interval = match self.interval.as_deref() {
            None => Interval::D1,
            Some(raw) => raw.parse::<Interval>().map_err(|_| {
                format!("parameter `interval`: {raw:?} is not one of 1m 5m 15m 30m 1h 1d 1wk 1mo")
            })?,
        };
        Ok(SeriesKey::new(symbol, interval))
    }

    /// The page of bars asked for.
    pub fn bars_request(&self) -> Result<BarsRequest, String> {
        let key = self.series_key()?;
        let start = match self.start.as_deref() {
            Some(d) => parse_when("start", d)?,
            None => Timestamp(i64::MIN),
        };
        let end = match self.end.as_deref() {
            Some(d) => parse_when("end", d)?,
            None => Timestamp(i64::MAX),
        };
        if end <= start {
            return Err("parameter `end` must be after `start`".into());
        }
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE_BARS,
            Some(raw) => match raw.parse::<usize>() {
                Ok(l) if (1..=MAX_PAGE_BARS).contains(&l) => l,
                _ => {
                    return Err(format!(
                        "parameter `limit`: {raw:?} is not a number from 1 to {MAX_PAGE_BARS}"
                    ));
                }
            },
        };
        let csv = match self.format.as_deref() {
            None | Some("json") => false,
            Some("csv") => true,
            Some(other) => return Err(format!("parameter `format`: {other:?}; use json or csv")),
        };
        Ok(BarsRequest {
            key,
            range: TimeRange::new(start, end),
            limit,
            csv,
        })
    }
}

/// One page of bars and the time the next page starts at, if there is one.
pub async fn read_page(
    store: &dyn BarStore,
    req: &BarsRequest,
) -> Result<(Vec<Bar>, Option<Timestamp>), StoreError> {
    // One bar more than the page tells whether another page follows.
    let mut page: Vec<Bar> = Vec::new();
    let mut stream = store.read_paged(&req.key, req.range, (req.limit + 1).min(10_000));
    while let Some(p) = stream.try_next().await? {
        page.extend(p);
        if page.len() > req.limit {
            break;
        }
    }
    let next = (page.len() > req.limit).then(|| page[req.limit].ts);
    page.truncate(req.limit);
    Ok((page, next))
}

/// A page as CSV with a header line.
pub fn bars_csv(page: &[Bar]) -> String {
    let mut out = String::from("ts,open,high,low,close,volume,adj_close,turnover,open_interest\n");
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for b in page {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            b.ts.to_rfc3339(),
            b.open,
            b.high,
            b.low,
            b.close,
            b.volume,
            opt(b.adj_close),
            opt(b.turnover),
            opt(b.open_interest)
        ));
    }
    out
}

/// A page as the JSON answer of `/api/data/bars`.
pub fn bars_json(key: &SeriesKey, page: &[Bar], next: Option<Timestamp>) -> Value {
    json!({
        "success": true,
        "symbol": key.symbol,
        "interval": key.interval,
        "count": page.len(),
        "next_start": next.map(|t| t.to_rfc3339()),
        "data": page.iter().map(Bar::to_json).collect::<Vec<_>>(),
    })
}

/// The totals of `/api/data/status` over a store's overview.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreTotals {
    /// Different symbols.
    pub symbols: u64,
    pub series: u64,
    /// Bars.
    pub records: u64,
    /// The first and the last bar of any series.
    pub earliest: Option<Timestamp>,
    pub latest: Option<Timestamp>,
}

impl StoreTotals {
    pub fn of(overview: &[SeriesOverview]) -> StoreTotals {
        let symbols: std::collections::BTreeSet<&str> =
            overview.iter().map(|o| o.key.symbol.as_str()).collect();
        StoreTotals {
            symbols: symbols.len() as u64,
            series: overview.len() as u64,
            records: overview.iter().map(|o| o.count).sum(),
            earliest: overview.iter().map(|o| o.first).min(),
            latest: overview.iter().map(|o| o.last).max(),
        }
    }
}

/// A date as `/api/data/status` shows it (`2024-01-31`).
pub fn date_of(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d").to_string()
}

/// The totals of `/api/data/status` over a store's overview; all `null` when the store could
/// not be read (`None`).
pub fn status_totals(overview: Option<&[SeriesOverview]>) -> Value {
    totals_json(overview.map(StoreTotals::of).as_ref())
}

/// [`StoreTotals`] as `/api/data/status` shows them; all `null` for `None`.
pub fn totals_json(totals: Option<&StoreTotals>) -> Value {
    let Some(t) = totals else {
        return json!({
            "total_stocks": null,
            "total_series": null,
            "total_records": null,
            "earliest_date": null,
            "latest_date": null,
            "record_count_millions": null,
        });
    };
    json!({
        "total_stocks": t.symbols,
        "total_series": t.series,
        "total_records": t.records,
        "earliest_date": t.earliest.map(date_of),
        "latest_date": t.latest.map(date_of),
        "record_count_millions": (t.records as f64 / 1e4).round() / 100.0,
    })
}
