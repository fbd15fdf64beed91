//! The write path of the SQL stores, over a transaction: a write ([`upsert`], [`delete`],
//! [`replace`]) locks the rows of the series it touches (`SELECT ... FOR UPDATE`, in id order,
//! so two writers of the same series take turns), reads the stored bars of the range it writes
//! in one query, tells inserted, updated and unchanged bars apart with [`digest::same_bar`],
//! writes only the new and changed bars, and updates the bucket digests and the series row in
//! the same transaction; [`scrub`] puts right a series row that disagrees with its bars. Each
//! backend implements [`SqlWrite`] (and [`SqlScrub`]), the statements.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;

use super::SeriesRow;
use crate::interval::Interval;
use crate::store::digest::{self, BucketDigest, Digest, DigestBucketing, DigestDelta};
use crate::store::{
    Bar, ReplaceStats, Result, SeriesBars, SeriesKey, StoreError, TimeRange, Timestamp, UpsertStats,
};

/// The statements of one write transaction of a backend.
#[async_trait]
pub(crate) trait SqlWrite: Send {
    /// The id of the series, its row created (empty) if missing.
    async fn series_id(&mut self, key: &SeriesKey) -> Result<i64>;
    /// Locks the series row until the transaction ends and returns it.
    async fn lock_series(&mut self, id: i64) -> Result<SeriesRow>;
    /// Bars of series `id` with `first <= ts <= last`, in any order.
    async fn bars_between(&mut self, id: i64, first: i64, last: i64) -> Result<Vec<Bar>>;
    /// Inserts or replaces bars (distinct ts).
    async fn write_bars(&mut self, id: i64, bars: &[Bar]) -> Result<()>;
    /// Inserts bars of several series (distinct ts within each) at times their series hold no
    /// bar at (their rows are locked): no conflict handling is needed, so a backend may take a
    /// faster way (PostgreSQL: one `COPY`).
    async fn insert_new_bars(&mut self, series: &[(i64, Vec<Bar>)]) -> Result<()> {
        for (id, bars) in series {
            self.write_bars(*id, bars).await?;
        }
        Ok(())
    }
    /// Deletes the bars of series `id` at the given times; returns how many went.
    async fn delete_bars(&mut self, id: i64, ts: &[i64]) -> Result<u64>;
    /// Deletes the bars of series `id` with `first <= ts <= last`; returns how many went.
    async fn delete_between(&mut self, id: i64, first: i64, last: i64) -> Result<u64>;
    /// Bucket digests of series `id` with `first <= bucket <= last`.
    async fn buckets_between(
        &mut self,
        id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<BucketDigest>>;
    /// Writes bucket digests (insert or replace) and removes the buckets left empty.
    async fn write_buckets(&mut self, id: i64, set: &[BucketDigest], remove: &[i64]) -> Result<()>;
    /// The lowest and highest ts of series `id`'s bars.
    async fn bounds(&mut self, id: i64) -> Result<(Option<i64>, Option<i64>)>;
    /// Writes count, bounds and digest of a series row.
    async fn update_series(&mut self, row: &SeriesRow) -> Result<()>;
    /// The rows of the series of `keys`, created (empty) where missing and locked until the
    /// transaction ends, existing ones in id order (so concurrent writers of several series
    /// cannot deadlock each other). A backend may do it in a few statements for all keys.
    async fn lock_series_rows(
        &mut self,
        keys: &[&SeriesKey],
    ) -> Result<HashMap<SeriesKey, SeriesRow>> {
        let mut ids = Vec::with_capacity(keys.len());
        for key in keys {
            ids.push(((*key).clone(), self.series_id(key).await?));
        }
        ids.sort_by_key(|(_, id)| *id);
        let mut rows = HashMap::with_capacity(ids.len());
        for (key, id) in ids {
            if let std::collections::hash_map::Entry::Vacant(slot) = rows.entry(key) {
                slot.insert(self.lock_series(id).await?);
            }
        }
        Ok(rows)
    }
    /// Writes the bucket digests of series that held no bar (so none is stored).
    async fn write_new_buckets(&mut self, series: &[(i64, Vec<BucketDigest>)]) -> Result<()> {
        for (id, set) in series {
            self.write_buckets(*id, set, &[]).await?;
        }
        Ok(())
    }
    /// Writes count, bounds and digest of several series rows.
    async fn update_series_rows(&mut self, rows: &[SeriesRow]) -> Result<()> {
        for row in rows {
            self.update_series(row).await?;
        }
        Ok(())
    }
}

/// Writes an upsert leaves for the end of its batch, done together: the bars of series
/// wholly outside their stored span, and the bucket digests of series that held no bar.
/// Flushed before anything reads what they would write.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    bars: Vec<(i64, Vec<Bar>)>,
    buckets: Vec<(i64, Vec<BucketDigest>)>,
}

impl Deferred {
    async fn flush<W: SqlWrite + ?Sized>(&mut self, tx: &mut W) -> Result<()> {
        if !self.bars.is_empty() {
            tx.insert_new_bars(&self.bars).await?;
            self.bars.clear();
        }
        if !self.buckets.is_empty() {
            tx.write_new_buckets(&self.buckets).await?;
            self.buckets.clear();
        }
        Ok(())
    }
}

/// Digest changes of one series, by bucket.
#[derive(Debug)]
pub(crate) struct BucketDeltas {
    bucketing: DigestBucketing,
    buckets: BTreeMap<i64, DigestDelta>,
}

impl BucketDeltas {
    pub(crate) fn new(interval: Interval) -> Self {
        BucketDeltas {
            bucketing: DigestBucketing::for_interval(interval),
            buckets: BTreeMap::new(),
        }
    }

    pub(crate) fn add(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().add(bar);
    }

    pub(crate) fn remove(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().remove(bar);
    }

    /// Writes the changes into the bucket digests and `row`'s digest. A series that held no
    /// bar before (`was_empty`) has no stored bucket to read; with `deferred`, its buckets are
    /// written with the batch's others at its end. Otherwise the stored buckets are read first
    /// (after what is deferred is written).
    async fn apply<W: SqlWrite + ?Sized>(
        self,
        tx: &mut W,
        row: &mut SeriesRow,
        was_empty: bool,
        mut deferred: Option<&mut Deferred>,
    ) -> Result<()> {
        let changed: BTreeMap<i64, DigestDelta> = self
            .buckets
            .into_iter()
            .filter(|(_, d)| !d.is_zero())
            .collect();
        let (Some(&first), Some(&last)) = (changed.keys().next(), changed.keys().next_back())
        else {
            return Ok(());
        };
        let stored: HashMap<i64, Digest> = if was_empty {
            HashMap::new()
        } else {
            if let Some(d) = deferred.as_deref_mut() {
                d.flush(tx).await?;
            }
            tx.buckets_between(row.id, first, last)
                .await?
                .into_iter()
                .map(|b| (b.start.0, b.digest))
                .collect()
        };
        let mut total = DigestDelta::default();
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        for (bucket, delta) in changed {
            total.merge(delta);
            let mut d = stored.get(&bucket).copied().unwrap_or_default();
            d.apply(delta);
            if d.count == 0 {
                remove.push(bucket);
            } else {
                set.push(BucketDigest {
                    start: Timestamp(bucket),
                    digest: d,
                });
            }
        }
        match deferred {
            Some(d) if was_empty => d.buckets.push((row.id, set)),
            _ => tx.write_buckets(row.id, &set, &remove).await?,
        }
        let mut d = Digest::from_halves(0, row.hash_lo, row.hash_hi);
        d.apply(total);
        (row.hash_lo, row.hash_hi) = d.hash_halves();
        Ok(())
    }
}

/// What to write for a batch of one series, given the bars stored in its ts range.
#[derive(Debug, Default)]
struct UpsertPlan {
    stats: UpsertStats,
    /// The new and changed bars, one per ts, as they end up.
    write: Vec<Bar>,
}

/// Goes through `bars` in order as if each were written alone (a later bar with the same ts
/// wins and counts as updating the earlier one), against the `stored` bars of their range.
fn plan_upsert(stored: Vec<Bar>, bars: &[Bar], deltas: &mut BucketDeltas) -> UpsertPlan {
    let before: HashMap<i64, Bar> = stored.into_iter().map(|b| (b.ts.0, b)).collect();
    let mut now: HashMap<i64, Bar> = HashMap::with_capacity(bars.len());
    let mut plan = UpsertPlan::default();
    for b in bars {
        match now.get(&b.ts.0).or_else(|| before.get(&b.ts.0)) {
            None => {
                plan.stats.inserted += 1;
                deltas.add(b);
            }
            Some(old) if digest::same_bar(old, b) => {
                plan.stats.unchanged += 1;
                continue;
            }
            Some(old) => {
                plan.stats.updated += 1;
                deltas.remove(old);
                deltas.add(b);
            }
        }
        now.insert(b.ts.0, *b);
    }
    plan.write = now
        .into_values()
        .filter(|b| {
            before
                .get(&b.ts.0)
                .is_none_or(|old| !digest::same_bar(old, b))
        })
        .collect();
    plan.write.sort_by_key(|b| b.ts);
    plan
}

/// Upserts the bars of one series whose row is locked; updates `row` (not yet written). Bars
/// wholly outside the stored span are not written but added to `new` (written together by
/// the caller).
async fn upsert_series<W: SqlWrite + ?Sized>(
    tx: &mut W,
    row: &mut SeriesRow,
    interval: Interval,
    bars: &[Bar],
    deferred: &mut Deferred,
) -> Result<UpsertStats> {
    let (Some(lo), Some(hi)) = (
        bars.iter().map(|b| b.ts.0).min(),
        bars.iter().map(|b| b.ts.0).max(),
    ) else {
        return Ok(UpsertStats::default());
    };
    // Bars wholly before or after the stored ones (an import, an append) need no read.
    let overlaps =
        row.count > 0 && row.first.is_some_and(|f| hi >= f) && row.last.is_some_and(|l| lo <= l);
    let stored = if overlaps {
        // Bars of this batch not written yet may be among them.
        deferred.flush(tx).await?;
        tx.bars_between(row.id, lo, hi).await?
    } else {
        Vec::new()
    };
    let mut deltas = BucketDeltas::new(interval);
    let plan = plan_upsert(stored, bars, &mut deltas);
    let was_empty = row.count == 0;
    if overlaps {
        tx.write_bars(row.id, &plan.write).await?;
    } else if !plan.write.is_empty() {
        deferred.bars.push((row.id, plan.write));
    }
    if plan.stats.inserted > 0 {
        row.count += plan.stats.inserted as i64;
        row.first = Some(row.first.map_or(lo, |f| f.min(lo)));
        row.last = Some(row.last.map_or(hi, |l| l.max(hi)));
    }
    deltas.apply(tx, row, was_empty, Some(deferred)).await?;
    Ok(plan.stats)
}

/// Resolves and locks the series rows of `keys` (in id order, so concurrent writers of several
/// series cannot deadlock each other).
async fn lock_all<W: SqlWrite + ?Sized>(
    tx: &mut W,
    keys: &[&SeriesKey],
) -> Result<HashMap<SeriesKey, SeriesRow>> {
    tx.lock_series_rows(keys).await
}

/// Writes back the series rows that changed.
async fn write_rows<W: SqlWrite + ?Sized>(
    tx: &mut W,
    before: &HashMap<SeriesKey, SeriesRow>,
    after: &HashMap<SeriesKey, SeriesRow>,
) -> Result<()> {
    let mut changed: Vec<SeriesRow> = after
        .iter()
        .filter(|(key, row)| before.get(*key) != Some(*row))
        .map(|(_, row)| *row)
        .collect();
    changed.sort_by_key(|r| r.id);
    if !changed.is_empty() {
        tx.update_series_rows(&changed).await?;
    }
    Ok(())
}

/// Upserts a batch inside `tx` (the caller commits).
pub(crate) async fn upsert<W: SqlWrite + ?Sized>(
    tx: &mut W,
    batch: &[SeriesBars],
) -> Result<UpsertStats> {
    let keys: Vec<&SeriesKey> = batch
        .iter()
        .filter(|s| !s.bars.is_empty())
        .map(|s| &s.key)
        .collect();
    let before = lock_all(tx, &keys).await?;
    let mut rows = before.clone();
    let mut stats = UpsertStats::default();
    let mut deferred = Deferred::default();
    for series in batch.iter().filter(|s| !s.bars.is_empty()) {
        let row = rows
            .get_mut(&series.key)
            .ok_or_else(|| StoreError::refused(format!("series {} not locked", series.key)))?;
        stats.add(upsert_series(tx, row, series.key.interval, &series.bars, &mut deferred).await?);
    }
    deferred.flush(tx).await?;
    write_rows(tx, &before, &rows).await?;
    Ok(stats)
}

/// The last ts inside `range` (its end is exclusive).
fn last_in(range: TimeRange) -> i64 {
    range.end.0.saturating_sub(1)
}

/// Deletes the bars of `key` in `range` inside `tx`, which must not create the series.
pub(crate) async fn delete<W: SqlWrite + ?Sized>(
    tx: &mut W,
    id: i64,
    interval: Interval,
    range: TimeRange,
) -> Result<u64> {
    let mut row = tx.lock_series(id).await?;
    let before = row;
    let gone = tx.bars_between(id, range.start.0, last_in(range)).await?;
    if gone.is_empty() {
        return Ok(0);
    }
    let n = tx.delete_between(id, range.start.0, last_in(range)).await?;
    if n != gone.len() as u64 {
        return Err(StoreError::refused(format!(
            "deleted {n} bars of series {id} where {} were read",
            gone.len()
        )));
    }
    let mut deltas = BucketDeltas::new(interval);
    gone.iter().for_each(|b| deltas.remove(b));
    deltas.apply(tx, &mut row, false, None).await?;
    row.count -= n as i64;
    (row.first, row.last) = tx.bounds(id).await?;
    if row != before {
        tx.update_series(&row).await?;
    }
    Ok(n)
}

/// Makes `bars` exactly what `key` holds in `range`, inside `tx`.
pub(crate) async fn replace<W: SqlWrite + ?Sized>(
    tx: &mut W,
    key: &SeriesKey,
    range: TimeRange,
    bars: &[Bar],
) -> Result<ReplaceStats> {
    let before = lock_all(tx, &[key]).await?;
    let mut row = before[key];
    let keep: HashSet<i64> = bars.iter().map(|b| b.ts.0).collect();
    let mut deltas = BucketDeltas::new(key.interval);
    let mut gone = Vec::new();
    if !range.is_empty() && row.count > 0 {
        for bar in tx
            .bars_between(row.id, range.start.0, last_in(range))
            .await?
        {
            if !keep.contains(&bar.ts.0) {
                deltas.remove(&bar);
                gone.push(bar.ts.0);
            }
        }
    }
    let removed = tx.delete_bars(row.id, &gone).await?;
    if removed != gone.len() as u64 {
        return Err(StoreError::refused(format!(
            "deleted {removed} bars of {key} where {} were read",
            gone.len()
        )));
    }
    let was_empty = row.count == 0;
    deltas.apply(tx, &mut row, was_empty, None).await?;
    if removed > 0 {
        row.count -= removed as i64;
        (row.first, row.last) = tx.bounds(row.id).await?;
    }
    let mut deferred = Deferred::default();
    let written = upsert_series(tx, &mut row, key.interval, bars, &mut deferred).await?;
    deferred.flush(tx).await?;
    if row != before[key] {
        tx.update_series(&row).await?;
    }
    Ok(ReplaceStats { written, removed })
}

/// What [`scrub`] needs besides [`SqlWrite`]: every series and all the bars of one.
#[async_trait]
pub(crate) trait SqlScrub: SqlWrite {
    /// Every series row with its key.
    async fn all_series(&mut self) -> Result<Vec<(SeriesKey, SeriesRow)>>;
}

/// Recomputes every series' count, bounds and bucket digests from its bars inside `tx` and
/// corrects the rows that differ; returns the corrected buckets.
pub(crate) async fn scrub<W: SqlScrub + ?Sized>(tx: &mut W) -> Result<Vec<(SeriesKey, Timestamp)>> {
    let mut fixed = Vec::new();
    for (key, listed) in tx.all_series().await? {
        let row = tx.lock_series(listed.id).await?;
        let mut bars = tx.bars_between(row.id, i64::MIN, i64::MAX).await?;
        bars.sort_by_key(|b| b.ts);
        let mut builder = digest::DigestBuilder::new(DigestBucketing::for_interval(key.interval));
        bars.iter().for_each(|b| builder.push(b));
        let computed = builder.finish();
        let kept = tx.buckets_between(row.id, i64::MIN, i64::MAX).await?;
        let wrong = digest::differing_buckets(&computed, &kept);
        let (hash_lo, hash_hi) = digest::total(&computed).hash_halves();
        let correct = SeriesRow {
            id: row.id,
            count: bars.len() as i64,
            first: bars.first().map(|b| b.ts.0),
            last: bars.last().map(|b| b.ts.0),
            hash_lo,
            hash_hi,
        };
        if wrong.is_empty() && row == correct {
            continue;
        }
        tracing::warn!(
            series = %key,
            buckets = wrong.len(),
            "stored counts or digests did not match the bars; corrected"
        );
        let stale: Vec<i64> = kept
            .iter()
            .map(|b| b.start.0)
            .filter(|b| !computed.iter().any(|c| c.start.0 == *b))
            .collect();
        tx.write_buckets(row.id, &computed, &stale).await?;
        tx.update_series(&correct).await?;
        fixed.extend(wrong.into_iter().map(|b| (key.clone(), b)));
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_a_repeated_time_as_an_update_of_the_earlier_bar() {
        let bar = |ts: i64, close: f64| Bar::ohlcv(Timestamp(ts), 1.0, 2.0, 0.5, close, 1.0);
        let mut deltas = BucketDeltas::new(Interval::D1);
        let plan = plan_upsert(
            vec![bar(0, 1.0), bar(86_400, 1.0)],
            &[
                bar(0, 1.0),
                bar(86_400, 1.5),
                bar(172_800, 1.0),
                bar(172_800, 1.2),
            ],
            &mut deltas,
        );
        assert_eq!(
            (
                plan.stats.inserted,
                plan.stats.updated,
                plan.stats.unchanged
            ),
            (1, 2, 1)
        );
        let written: Vec<(i64, f64)> = plan.write.iter().map(|b| (b.ts.0, b.close)).collect();
        assert_eq!(written, vec![(86_400, 1.5), (172_800, 1.2)]);
    }
}
