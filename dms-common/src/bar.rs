//! `Bar` (one OHLCV bar), `SeriesKey` (symbol + interval) and `SeriesBars` (bars of one series).

use std::fmt;

use crate::interval::Interval;
use crate::symbol::Symbol;
use crate::time::Timestamp;

/// A series: one symbol at one interval. Bars are keyed by (series, ts) everywhere.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeriesKey {
    pub symbol: Symbol,
    pub interval: Interval,
}

impl SeriesKey {
    pub fn new(symbol: Symbol, interval: Interval) -> Self {
        SeriesKey { symbol, interval }
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.symbol, self.interval)
    }
}

/// One OHLCV bar. `ts` is the start of the bar in UTC; daily and longer bars start at 00:00 UTC
/// of the exchange-local trading date.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bar {
    pub ts: Timestamp,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adj_close: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turnover: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_interest: Option<f64>,
}

impl Bar {
    /// A bar with only the OHLCV values.
    pub fn ohlcv(ts: Timestamp, open: f64, high: f64, low: f64, close: f64, volume: f64) -> Self {
        Bar {
            ts,
            open,
            high,
            low,
            close,
            volume,
            adj_close: None,
            turnover: None,
            open_interest: None,
        }
    }

    /// The bar as a JSON object, as the APIs show it: `ts` in RFC 3339, the values as numbers,
    /// absent optional values left out, and non-finite values (which JSON numbers cannot hold;
    /// only rejected bars have them) as text such as `"NaN"`.
    pub fn to_json(&self) -> serde_json::Value {
        fn num(v: f64) -> serde_json::Value {
            serde_json::Number::from_f64(v)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
        }
        let mut m = serde_json::Map::new();
        m.insert("ts".into(), self.ts.to_rfc3339().into());
        for (k, v) in [
            ("open", Some(self.open)),
            ("high", Some(self.high)),
            ("low", Some(self.low)),
            ("close", Some(self.close)),
            ("volume", Some(self.volume)),
            ("adj_close", self.adj_close),
            ("turnover", self.turnover),
            ("open_interest", self.open_interest),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), num(v));
            }
        }
        serde_json::Value::Object(m)
    }

    /// Whether every value is bit-for-bit the same, `-0.0` and `0.0` counted equal. Stores use
    /// this notion of "unchanged".
    pub fn same_values(&self, other: &Bar) -> bool {
        fn eq(a: f64, b: f64) -> bool {
            a == b || (a.is_nan() && b.is_nan())
        }
        fn eq_opt(a: Option<f64>, b: Option<f64>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => eq(a, b),
                _ => false,
            }
        }
        self.ts == other.ts
            && eq(self.open, other.open)
            && eq(self.high, other.high)
            && eq(self.low, other.low)
            && eq(self.close, other.close)
            && eq(self.volume, other.volume)
            && eq_opt(self.adj_close, other.adj_close)
            && eq_opt(self.turnover, other.turnover)
            && eq_opt(self.open_interest, other.open_interest)
    }
}

/// Bars of one series, the unit of writes and journal entries.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBars {
    pub key: SeriesKey,
    pub bars: Vec<Bar>,
}

impl SeriesBars {
    pub fn new(key: SeriesKey, bars: Vec<Bar>) -> Self {
        SeriesBars { key, bars }
    }
}
