//! The chart API's JSON (`/v8/finance/chart/{symbol}`) and its normalization: [`parse_chart`]
//! turns a body into a [`ParsedChart`] (bars on their normalized times, corporate actions, the
//! first provisional bar) or a [`ParseError`]; [`shortest_float32`] undoes Yahoo's float32
//! price noise.

use chrono::{Datelike, NaiveDate, TimeZone};
use dms_common::{Bar, Interval, Symbol, Timestamp};
use serde::Deserialize;

use crate::sources::{ActionKind, CorporateAction};

/// `v` as the shortest decimal that is the same float32, when `v` is exactly a float32
/// (127.58000183105469 → 127.58); any other value is returned as it is.
pub fn shortest_float32(v: f64) -> f64 {
    let f = v as f32;
    if f64::from(f) != v || !f.is_finite() {
        return v;
    }
    // Display of an f32 is the shortest text that parses back to the same f32.
    f.to_string().parse::<f64>().unwrap_or(v)
}

pub(super) fn shortest_float32_prices(b: &mut Bar) {
    for v in [&mut b.open, &mut b.high, &mut b.low, &mut b.close] {
        *v = shortest_float32(*v);
    }
    if let Some(a) = b.adj_close.as_mut() {
        *a = shortest_float32(*a);
    }
}

/// A chart answer, normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedChart {
    pub symbol: Option<Symbol>,
    pub timezone: Option<String>,
    pub bars: Vec<Bar>,
    pub actions: Vec<CorporateAction>,
    /// Bars from here on have not finished yet.
    pub provisional_from: Option<Timestamp>,
    /// Entries skipped because a price was `null`.
    pub skipped_nulls: usize,
}

/// Why a chart body could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("not chart JSON: {0}")]
    Json(String),
    /// The provider says it has no data for the symbol.
    #[error("{0}")]
    NoData(String),
    #[error("{0}")]
    Shape(String),
}

#[derive(Debug, Deserialize)]
struct ChartBody {
    chart: ChartInner,
}

#[derive(Debug, Deserialize)]
struct ChartInner {
    result: Option<Vec<ChartResult>>,
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ChartResult {
    meta: Meta,
    #[serde(default)]
    timestamp: Vec<i64>,
    #[serde(default)]
    events: Option<Events>,
    indicators: Indicators,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    symbol: Option<String>,
    exchange_timezone_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Events {
    #[serde(default)]
    splits: std::collections::BTreeMap<String, SplitEvent>,
    #[serde(default)]
    dividends: std::collections::BTreeMap<String, DividendEvent>,
}

#[derive(Debug, Deserialize)]
struct SplitEvent {
    date: i64,
    numerator: f64,
    denominator: f64,
}

#[derive(Debug, Deserialize)]
struct DividendEvent {
    date: i64,
    amount: f64,
}

#[derive(Debug, Deserialize)]
struct Indicators {
    #[serde(default)]
    quote: Vec<Quote>,
    #[serde(default)]
    adjclose: Vec<AdjClose>,
}

#[derive(Debug, Default, Deserialize)]
struct Quote {
    #[serde(default)]
    open: Vec<Option<f64>>,
    #[serde(default)]
    high: Vec<Option<f64>>,
    #[serde(default)]
    low: Vec<Option<f64>>,
    #[serde(default)]
    close: Vec<Option<f64>>,
    #[serde(default)]
    volume: Vec<Option<f64>>,
}

#[derive(Debug, Deserialize)]
struct AdjClose {
    #[serde(default)]
    adjclose: Vec<Option<f64>>,
}

/// Parses and normalizes a chart body for bars of `interval`, as of `now`.
pub fn parse_chart(
    body: &[u8],
    interval: Interval,
    now: Timestamp,
) -> Result<ParsedChart, ParseError> {
    let parsed: ChartBody =
        serde_json::from_slice(body).map_err(|e| ParseError::Json(e.to_string()))?;
    let result = match (parsed.chart.result, parsed.chart.error) {
        (Some(mut r), _) if !r.is_empty() => r.swap_remove(0),
        (_, Some(e)) if !e.is_null() => {
            let description = e
                .get("description")
                .and_then(|d| d.as_str())
                .unwrap_or("no result")
                .to_owned();
            return Err(ParseError::NoData(description));
        }
        _ => {
            return Err(ParseError::Shape(
                "chart has neither result nor error".into(),
            ));
        }
    };
    let tz: Option<chrono_tz::Tz> = result
        .meta
        .exchange_timezone_name
        .as_deref()
        .and_then(|n| n.parse().ok());
    let symbol = result
        .meta
        .symbol
        .as_deref()
        .and_then(|s| Symbol::new(s).ok());
    let quote = result
        .indicators
        .quote
        .into_iter()
        .next()
        .unwrap_or_default();
    let adj = result
        .indicators
        .adjclose
        .into_iter()
        .next()
        .map(|a| a.adjclose);
    let n = result.timestamp.len();
    for (name, len) in [
        ("open", quote.open.len()),
        ("high", quote.high.len()),
        ("low", quote.low.len()),
        ("close", quote.close.len()),
    ] {
        if n > 0 && len != n {
            return Err(ParseError::Shape(format!(
                "{n} timestamps but {len} {name} values"
            )));
        }
    }
    let mut bars = Vec::with_capacity(n);
    let mut skipped_nulls = 0;
    let mut provisional_from: Option<Timestamp> = None;
    for (i, &raw_ts) in result.timestamp.iter().enumerate() {
        let (Some(open), Some(high), Some(low), Some(close)) =
            (quote.open[i], quote.high[i], quote.low[i], quote.close[i])
        else {
            skipped_nulls += 1;
            continue;
        };
        let (ts, period_end) = normalize_time(raw_ts, interval, tz);
        if period_end > now && provisional_from.is_none() {
            provisional_from = Some(ts);
        }
        bars.push(Bar {
            ts,
            open,
            high,
            low,
            close,
            volume: quote.volume.get(i).copied().flatten().unwrap_or(0.0),
            adj_close: adj.as_ref().and_then(|a| a.get(i).copied().flatten()),
            turnover: None,
            open_interest: None,
        });
    }
    bars.sort_by_key(|b| b.ts);
    // Two entries for one period (a live bar next to a final one): keep the later.
    let mut unique: Vec<Bar> = Vec::with_capacity(bars.len());
    for b in bars {
        match unique.last_mut() {
            Some(last) if last.ts == b.ts => *last = b,
            _ => unique.push(b),
        }
    }
    let mut actions = Vec::new();
    if let (Some(events), Some(symbol)) = (result.events, symbol.clone()) {
        for s in events.splits.values() {
            actions.push(CorporateAction {
                symbol: symbol.clone(),
                date: local_date(s.date, tz),
                kind: ActionKind::Split {
                    numerator: s.numerator,
                    denominator: s.denominator,
                },
            });
        }
        for d in events.dividends.values() {
            actions.push(CorporateAction {
                symbol: symbol.clone(),
                date: local_date(d.date, tz),
                kind: ActionKind::Dividend { amount: d.amount },
            });
        }
        actions.sort_by_key(|a| a.date);
    }
    Ok(ParsedChart {
        symbol,
        timezone: result.meta.exchange_timezone_name,
        bars: unique,
        actions,
        provisional_from,
        skipped_nulls,
    })
}

/// 00:00 UTC of the exchange-local date of `ts`.
fn local_date(ts: i64, tz: Option<chrono_tz::Tz>) -> Timestamp {
    Timestamp::from_date(local_naive_date(ts, tz))
}

fn local_naive_date(ts: i64, tz: Option<chrono_tz::Tz>) -> NaiveDate {
    let utc = Timestamp(ts).to_datetime();
    match tz {
        Some(tz) => tz.from_utc_datetime(&utc.naive_utc()).date_naive(),
        None => utc.date_naive(),
    }
}

/// The stored bar start and the end of the bar's period, for a raw Yahoo timestamp.
fn normalize_time(
    raw: i64,
    interval: Interval,
    tz: Option<chrono_tz::Tz>,
) -> (Timestamp, Timestamp) {
    if !interval.is_daily_or_longer() {
        let ts = Timestamp(raw);
        return (ts, Timestamp(raw + interval.nominal_secs()));
    }
    let date = local_naive_date(raw, tz);
    let start = interval.align(Timestamp::from_date(date));
    let end_date = match interval {
        Interval::D1 => date.succ_opt().unwrap_or(date),
        Interval::W1 => NaiveDate::from_isoywd_opt(
            date.iso_week().year(),
            date.iso_week().week(),
            chrono::Weekday::Mon,
        )
        .and_then(|d| d.checked_add_days(chrono::Days::new(7)))
        .unwrap_or(date),
        _ => interval.next(start).to_datetime().date_naive(),
    };
    // The period ends at local midnight after its last day.
    let end = match tz {
        Some(tz) => tz
            .from_local_datetime(&end_date.and_hms_opt(0, 0, 0).expect("midnight"))
            .earliest()
            .map(|d| Timestamp(d.timestamp()))
            .unwrap_or(Timestamp::from_date(end_date)),
        None => Timestamp::from_date(end_date),
    };
    (start, end)
}

#[cfg(test)]
mod float32_tests {
    use super::shortest_float32;

    #[test]
    fn float32_noise_becomes_the_printed_price_and_other_values_stay() {
        assert_eq!(shortest_float32(104.05999755859375), 104.06);
        assert_eq!(shortest_float32(127.58000183105469), 127.58);
        assert_eq!(shortest_float32(125.82673645019531), 125.82674);
        // Not a float32: a double with more precision is kept as sent.
        assert_eq!(shortest_float32(104.06), 104.06);
        assert_eq!(shortest_float32(0.1 + 0.2), 0.1 + 0.2);
        assert_eq!(shortest_float32(1e300), 1e300);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/yahoo")
            .join(name);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        serde_json::to_vec(&v["body"]).unwrap()
    }

    const NOW: Timestamp = Timestamp(1_763_000_000);

    #[test]
    fn daily_bars_move_to_the_local_trading_date() {
        let c = parse_chart(
            &fixture("chart-AAPL-2020-08-31-to-2020-11-07.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        assert_eq!(c.bars.len(), 49);
        assert_eq!(c.bars[0].ts.to_string(), "2020-08-31T00:00:00Z");
        assert_eq!(c.bars[0].open, 127.58000183105469);
        assert_eq!(c.bars[0].adj_close, Some(125.82673645019531));
        assert_eq!(c.bars[0].volume, 225_702_700.0);
        assert!(c.provisional_from.is_none());
        assert_eq!(c.timezone.as_deref(), Some("America/New_York"));
        // Jakarta opens at 02:00Z, Oslo at 08:00Z: both are that day's bar.
        let jk = parse_chart(
            &fixture("chart-WSKT.JK-2020-01-01-to-2020-01-03.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        assert_eq!(jk.bars[0].ts.to_string(), "2020-01-02T00:00:00Z");
        let btc = parse_chart(
            &fixture("chart-BTC-USD-2020-01-01-to-2020-01-03.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        let days: Vec<String> = btc.bars.iter().map(|b| b.ts.to_string()).collect();
        assert_eq!(
            days,
            [
                "2020-01-01T00:00:00Z",
                "2020-01-02T00:00:00Z",
                "2020-01-03T00:00:00Z"
            ]
        );
    }

    #[test]
    fn split_and_dividend_become_corporate_actions() {
        let c = parse_chart(
            &fixture("chart-AAPL-2020-08-31-to-2020-11-07.json"),
            Interval::D1,
            NOW,
        )
        .unwrap();
        let shown: Vec<String> = c.actions.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            shown,
            [
                "AAPL split 4:1 on 2020-08-31",
                "AAPL dividend 0.205 on 2020-11-06"
            ]
        );
    }

    #[test]
    fn nulls_are_missing_bars_not_zeros() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&fixture("chart-AAPL-2020-08-31-to-2020-11-07.json")).unwrap();
        let q = &mut v["chart"]["result"][0]["indicators"]["quote"][0];
        q["close"][3] = serde_json::Value::Null;
        q["volume"][5] = serde_json::Value::Null;
        let c = parse_chart(&serde_json::to_vec(&v).unwrap(), Interval::D1, NOW).unwrap();
        assert_eq!(c.bars.len(), 48);
        assert_eq!(c.skipped_nulls, 1);
        assert!(c.bars.iter().all(|b| b.close > 0.0));
    }

    #[test]
    fn todays_bar_is_provisional() {
        let body = fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
        // "Now" is 2020-11-06 18:00Z: the 2020-11-06 bar has not finished.
        let c = parse_chart(&body, Interval::D1, Timestamp(1_604_685_600)).unwrap();
        assert_eq!(
            c.provisional_from.map(|t| t.to_string()).as_deref(),
            Some("2020-11-06T00:00:00Z")
        );
    }

    #[test]
    fn empty_and_error_answers() {
        let c = parse_chart(
            &fixture("chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json"),
            Interval::M1,
            NOW,
        )
        .unwrap();
        assert!(c.bars.is_empty());
        let err = parse_chart(
            br#"{"chart":{"result":null,"error":{"code":"Not Found","description":"No data found, symbol may be delisted"}}}"#,
            Interval::D1,
            NOW,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ParseError::NoData("No data found, symbol may be delisted".into())
        );
        let cut = fixture("chart-AAPL-2020-08-31-to-2020-11-07.json");
        assert!(matches!(
            parse_chart(&cut[..cut.len() / 2], Interval::D1, NOW),
            Err(ParseError::Json(_))
        ));
    }
}
