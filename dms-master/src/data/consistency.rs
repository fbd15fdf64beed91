//! The consistency check of two bar stores: every series of either is compared by its bucket
//! digests ([`dms_common::store::digest`]: count and hash of each bucket), computed from the bars
//! on both sides (digests a store keeps are not trusted, so a change made behind a store's back
//! is found); the buckets that differ are read on both
//! sides and every differing bar is listed: missing from the target, extra in the target, or
//! changed, field by field. Counts and lengths are compared, never zipped prefixes, so a store
//! holding one bar more or less never reads as equal.
//!
//! Key types: [`CompareReport`], [`BarDifference`], [`FieldDifference`].

use std::collections::{BTreeMap, BTreeSet};

use dms_common::store::{BarStore, StoreError, compute_bucket_digests};
use dms_common::{Bar, SeriesKey, TimeRange, Timestamp};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

/// How a bar differs between the source store and the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// The source holds it; the target does not.
    Missing,
    /// The target holds it; the source does not.
    Extra,
    /// Both hold it with different values.
    Changed,
}

/// One field of a changed bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDifference {
    pub field: String,
    pub source: Option<f64>,
    pub target: Option<f64>,
}

/// One differing bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BarDifference {
    pub series: String,
    pub ts: String,
    pub kind: DifferenceKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldDifference>,
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CompareReport {
    pub series_compared: u64,
    pub series_equal: u64,
    pub buckets_differing: u64,
    pub bars_missing: u64,
    pub bars_extra: u64,
    pub bars_changed: u64,
    /// The first differing bars (at most the listing limit).
    pub differences: Vec<BarDifference>,
}

impl CompareReport {
    /// Whether the two stores hold the same bars.
    pub fn equal(&self) -> bool {
        self.series_equal == self.series_compared
    }

    fn push(&mut self, d: BarDifference, limit: usize) {
        match d.kind {
            DifferenceKind::Missing => self.bars_missing += 1,
            DifferenceKind::Extra => self.bars_extra += 1,
            DifferenceKind::Changed => self.bars_changed += 1,
        }
        if self.differences.len() < limit {
            self.differences.push(d);
        }
    }
}

/// The fields of `a` and `b` whose values differ.
fn field_differences(a: &Bar, b: &Bar) -> Vec<FieldDifference> {
    let fields: [(&str, Option<f64>, Option<f64>); 8] = [
        ("open", Some(a.open), Some(b.open)),
        ("high", Some(a.high), Some(b.high)),
        ("low", Some(a.low), Some(b.low)),
        ("close", Some(a.close), Some(b.close)),
        ("volume", Some(a.volume), Some(b.volume)),
        ("adj_close", a.adj_close, b.adj_close),
        ("turnover", a.turnover, b.turnover),
        ("open_interest", a.open_interest, b.open_interest),
    ];
    fields
        .into_iter()
        .filter(|(_, x, y)| match (x, y) {
            (Some(x), Some(y)) => !(x == y || (x.is_nan() && y.is_nan())),
            (None, None) => false,
            _ => true,
        })
        .map(|(field, source, target)| FieldDifference {
            field: field.to_owned(),
            source,
            target,
        })
        .collect()
}

async fn bars_in(
    store: &dyn BarStore,
    key: &SeriesKey,
    range: TimeRange,
) -> Result<BTreeMap<i64, Bar>, StoreError> {
    let mut out = BTreeMap::new();
    let mut pages = store.read(key, range);
    while let Some(page) = pages.try_next().await? {
        out.extend(page.into_iter().map(|b| (b.ts.0, b)));
    }
    Ok(out)
}

/// Compares `source` with `target`, listing at most `limit` differing bars (all are counted).
pub async fn compare(
    source: &dyn BarStore,
    target: &dyn BarStore,
    limit: usize,
) -> Result<CompareReport, StoreError> {
    let a: BTreeMap<SeriesKey, _> = source
        .overview()
        .await?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let b: BTreeMap<SeriesKey, _> = target
        .overview()
        .await?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect();
    let keys: BTreeSet<&SeriesKey> = a.keys().chain(b.keys()).collect();
    let mut report = CompareReport::default();
    for key in keys {
        report.series_compared += 1;
        // Digests computed from the bars, not the ones a store keeps: a change made behind a
        // store's back (another program, a restored file) is found too.
        let all = TimeRange::all();
        let da = match a.contains_key(key) {
            true => compute_bucket_digests(source, key, all).await?,
            false => Vec::new(),
        };
        let db = match b.contains_key(key) {
            true => compute_bucket_digests(target, key, all).await?,
            false => Vec::new(),
        };
        if da == db {
            report.series_equal += 1;
            continue;
        }
        let da: BTreeMap<i64, _> = da.into_iter().map(|d| (d.start.0, d.digest)).collect();
        let db: BTreeMap<i64, _> = db.into_iter().map(|d| (d.start.0, d.digest)).collect();
        let width =
            dms_common::store::digest::DigestBucketing::for_interval(key.interval).width_secs;
        let starts: BTreeSet<i64> = da.keys().chain(db.keys()).copied().collect();
        for start in starts {
            if da.get(&start) == db.get(&start) {
                continue;
            }
            report.buckets_differing += 1;
            let range = TimeRange::new(Timestamp(start), Timestamp(start + width));
            let xs = bars_in(source, key, range).await?;
            let ys = bars_in(target, key, range).await?;
            let times: BTreeSet<i64> = xs.keys().chain(ys.keys()).copied().collect();
            for t in times {
                let d = |kind, fields| BarDifference {
                    series: key.to_string(),
                    ts: Timestamp(t).to_rfc3339(),
                    kind,
                    fields,
                };
                match (xs.get(&t), ys.get(&t)) {
                    (Some(_), None) => report.push(d(DifferenceKind::Missing, vec![]), limit),
                    (None, Some(_)) => report.push(d(DifferenceKind::Extra, vec![]), limit),
                    (Some(x), Some(y)) => {
                        let fields = field_differences(x, y);
                        if !fields.is_empty() {
                            report.push(d(DifferenceKind::Changed, fields), limit);
                        }
                    }
                    (None, None) => {}
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dms_common::store::sqlite::SqliteStore;
    use dms_common::{Interval, SeriesBars, Symbol};

    fn bars(n: i64) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                Bar::ohlcv(
                    Timestamp(1_700_006_400 + i * 86_400),
                    1.0,
                    2.0,
                    0.5,
                    1.5,
                    10.0,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn lists_exactly_the_missing_extra_and_changed_bars() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(dir.path().join("a.db")).unwrap();
        let b = SqliteStore::open(dir.path().join("b.db")).unwrap();
        let key = SeriesKey::new(Symbol::new("X").unwrap(), Interval::D1);
        let all = bars(400);
        a.upsert(&[SeriesBars::new(key.clone(), all.clone())])
            .await
            .unwrap();
        b.upsert(&[SeriesBars::new(key.clone(), all.clone())])
            .await
            .unwrap();
        let same = compare(&a, &b, 10).await.unwrap();
        assert!(same.equal(), "{same:?}");
        assert_eq!(same.series_compared, 1);

        // One bar gone from the target, one changed, one extra (a longer target).
        b.delete(
            &key,
            TimeRange::new(all[10].ts, Timestamp(all[10].ts.0 + 1)),
        )
        .await
        .unwrap();
        let mut changed = all[200];
        changed.close = 1.75;
        let extra = Bar::ohlcv(Timestamp(all[399].ts.0 + 86_400), 1.0, 1.0, 1.0, 1.0, 1.0);
        b.upsert(&[SeriesBars::new(key.clone(), vec![changed, extra])])
            .await
            .unwrap();
        let r = compare(&a, &b, 10).await.unwrap();
        assert!(!r.equal());
        assert_eq!(
            (r.bars_missing, r.bars_extra, r.bars_changed),
            (1, 1, 1),
            "{r:?}"
        );
        assert_eq!(r.differences.len(), 3);
        let c = r
            .differences
            .iter()
            .find(|d| d.kind == DifferenceKind::Changed)
            .unwrap();
        assert_eq!(c.ts, all[200].ts.to_rfc3339());
        assert_eq!(
            c.fields,
            vec![FieldDifference {
                field: "close".into(),
                source: Some(1.5),
                target: Some(1.75)
            }]
        );
        // A series only one side holds is all missing (or extra).
        let other = SeriesKey::new(Symbol::new("Y").unwrap(), Interval::D1);
        a.upsert(&[SeriesBars::new(other, bars(3))]).await.unwrap();
        let r = compare(&a, &b, 1).await.unwrap();
        assert_eq!(r.bars_missing, 4, "{r:?}");
        assert_eq!(
            r.differences.len(),
            1,
            "the listing is capped, the counts are not"
        );
    }
}
