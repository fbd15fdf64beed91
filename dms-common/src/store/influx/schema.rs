//! How a bar maps to an InfluxDB point and back: the series tags, the float fields, the parsing
//! of query answers, and the comparison of a batch with the stored bars.

use std::collections::BTreeMap;

use super::StatementResult;
use crate::bar::{Bar, SeriesKey};
use crate::interval::Interval;
use crate::store::digest;
use crate::store::{Result, StoreError, UpsertStats};
use crate::symbol::Symbol;
use crate::time::Timestamp;

/// The fields of a bar point, in the order they are selected and written.
pub const FIELDS: [&str; 8] = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "adj_close",
    "turnover",
    "open_interest",
];

/// Upsert counts of `bars` over `stored` (a repeated time compares with the earlier bar of the
/// batch), and the bar each time ends with.
pub(super) fn compare(
    stored: &BTreeMap<Timestamp, Bar>,
    bars: &[Bar],
) -> (UpsertStats, BTreeMap<Timestamp, Bar>) {
    let mut stats = UpsertStats::default();
    let mut fin: BTreeMap<Timestamp, Bar> = BTreeMap::new();
    for b in bars {
        match fin.get(&b.ts).or_else(|| stored.get(&b.ts)) {
            None => stats.inserted += 1,
            Some(old) if digest::same_bar(old, b) => stats.unchanged += 1,
            Some(_) => stats.updated += 1,
        }
        fin.insert(b.ts, *b);
    }
    (stats, fin)
}

/// Whether writing `new` over `old` would leave an optional field of `old` behind.
pub(super) fn loses_a_field(old: &Bar, new: &Bar) -> bool {
    (old.adj_close.is_some() && new.adj_close.is_none())
        || (old.turnover.is_some() && new.turnover.is_none())
        || (old.open_interest.is_some() && new.open_interest.is_none())
}

pub(super) fn series_tags(key: &SeriesKey) -> [(&'static str, &str); 2] {
    [
        ("symbol", key.symbol.as_str()),
        ("interval", key.interval.as_str()),
    ]
}

pub(super) fn bar_fields(b: &Bar) -> [(&'static str, Option<f64>); 8] {
    [
        ("open", Some(b.open)),
        ("high", Some(b.high)),
        ("low", Some(b.low)),
        ("close", Some(b.close)),
        ("volume", Some(b.volume)),
        ("adj_close", b.adj_close),
        ("turnover", b.turnover),
        ("open_interest", b.open_interest),
    ]
}

/// The series a `GROUP BY symbol, interval` row belongs to; rows with tags DMS would not write
/// are skipped.
pub(super) fn series_key_of(tags: &BTreeMap<String, String>) -> Option<SeriesKey> {
    let symbol = Symbol::new(tags.get("symbol")?).ok()?;
    let interval: Interval = tags.get("interval")?.parse().ok()?;
    Some(SeriesKey::new(symbol, interval))
}

/// The bars of a `SELECT time, <FIELDS>` answer.
pub(super) fn bars_of(result: StatementResult) -> Result<Vec<Bar>> {
    let mut out = Vec::new();
    for s in result.series {
        let col = |name: &str| s.columns.iter().position(|c| c == name);
        let time = col("time").ok_or_else(|| StoreError::corrupt("no time column"))?;
        let cols = FIELDS.map(col);
        for row in &s.values {
            let value = |i: usize| -> Option<f64> { row.get(cols[i]?)?.as_f64() };
            let required = |i: usize| {
                value(i).ok_or_else(|| {
                    // InfluxDB stores each field apart and a reader can see a point that is
                    // still being written: transient, the read is tried again.
                    StoreError::unavailable(format!(
                        "a stored bar has no {} (a write in progress?): {row:?}",
                        FIELDS[i]
                    ))
                })
            };
            let ts = row.get(time).and_then(|v| v.as_i64()).ok_or_else(|| {
                StoreError::corrupt(format!("a stored bar has no time ({row:?})"))
            })?;
            out.push(Bar {
                ts: Timestamp(ts),
                open: required(0)?,
                high: required(1)?,
                low: required(2)?,
                close: required(3)?,
                volume: required(4)?,
                adj_close: value(5),
                turnover: value(6),
                open_interest: value(7),
            });
        }
    }
    Ok(out)
}
