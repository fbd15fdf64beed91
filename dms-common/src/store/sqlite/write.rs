//! The write path of the SQLite store: upserts, deletes, range replaces and the scrub, each one
//! transaction on the one writer connection, the series row and the bucket digests updated in
//! the same transaction as the bars. New bars after a series' last one go in by multi-row
//! `INSERT`s; the others are compared with the stored bar one by one.

use std::collections::HashMap;

use rusqlite::{Transaction, params};

use super::digests::BucketDeltas;
use super::{BAR_COLUMNS, SeriesMeta, Writer, bar_from_row, lookup_series_id, parse_key};
use crate::interval::Interval;
use crate::store::digest::{self, BucketDigest, Digest, DigestBucketing};
use crate::store::{
    Bar, ReplaceStats, Result, SeriesBars, SeriesKey, StoreError, TimeRange, Timestamp, UpsertStats,
};

const INSERT_BAR: &str = "INSERT INTO bars
    (series_id, ts, open, high, low, close, volume, adj_close, turnover, open_interest)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (series_id, ts) DO NOTHING";

const UPDATE_BAR: &str = "UPDATE bars SET
    open = ?3, high = ?4, low = ?5, close = ?6, volume = ?7,
    adj_close = ?8, turnover = ?9, open_interest = ?10
    WHERE series_id = ?1 AND ts = ?2";

/// Rows per multi-row insert statement on the append fast path.
const MULTI_ROWS: usize = 64;

fn multi_insert_sql() -> String {
    let rows: Vec<String> = (0..MULTI_ROWS)
        .map(|r| {
            let b = r * 10;
            format!(
                "(?{},?{},?{},?{},?{},?{},?{},?{},?{},?{})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10
            )
        })
        .collect();
    format!(
        "INSERT INTO bars (series_id, ts, open, high, low, close, volume, adj_close, turnover, open_interest) VALUES {} ON CONFLICT (series_id, ts) DO NOTHING",
        rows.join(",")
    )
}

impl Writer {
    pub(super) fn upsert(&mut self, batch: &[SeriesBars]) -> Result<UpsertStats> {
        let mut stats = UpsertStats::default();
        // Series metadata as it will be after the commit; applied only once it succeeded.
        let mut changed: HashMap<SeriesKey, SeriesMeta> = HashMap::new();
        let tx = self.conn.transaction()?;
        for series in batch {
            let meta = match changed.get(&series.key).or(self.series.get(&series.key)) {
                Some(meta) => *meta,
                None => SeriesMeta {
                    id: create_series(&tx, &series.key)?,
                    last_ts: None,
                },
            };
            let mut deltas = BucketDeltas::new(series.key.interval);
            let (s, last_ts) = upsert_series(&tx, meta, &series.bars, &mut deltas)?;
            deltas.apply(&tx, meta.id)?;
            stats.add(s);
            changed.insert(
                series.key.clone(),
                SeriesMeta {
                    id: meta.id,
                    last_ts,
                },
            );
        }
        tx.commit()?;
        self.series.extend(changed);
        Ok(stats)
    }

    pub(super) fn delete(&mut self, key: &SeriesKey, range: TimeRange) -> Result<u64> {
        let Some(&SeriesMeta { id, .. }) = self.series.get(key) else {
            return Ok(0);
        };
        if range.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        let (n, last_ts) = delete_in(&tx, id, key.interval, range)?;
        tx.commit()?;
        self.series.insert(key.clone(), SeriesMeta { id, last_ts });
        Ok(n)
    }

    /// Recomputes every series' count, bounds and bucket digests from its bars and corrects the
    /// rows that differ; returns the corrected buckets.
    pub(super) fn scrub(&mut self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        let tx = self.conn.transaction()?;
        let series: Vec<(i64, String, String)> = tx
            .prepare("SELECT id, symbol, interval FROM series")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut fixed = Vec::new();
        let mut corrected = Vec::new();
        for (id, symbol, interval) in series {
            let key = parse_key(&symbol, &interval)?;
            let mut builder =
                digest::DigestBuilder::new(DigestBucketing::for_interval(key.interval));
            let (mut count, mut first, mut last) = (0i64, None::<i64>, None::<i64>);
            {
                let sql =
                    format!("SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 ORDER BY ts");
                let mut stmt = tx.prepare_cached(&sql)?;
                let mut rows = stmt.query(params![id])?;
                while let Some(row) = rows.next()? {
                    let bar = bar_from_row(row)?;
                    count += 1;
                    first.get_or_insert(bar.ts.0);
                    last = Some(bar.ts.0);
                    builder.push(&bar);
                }
            }
            let computed = builder.finish();
            let kept: Vec<BucketDigest> = tx
                .prepare_cached(
                    "SELECT bucket, bar_count, hash_lo, hash_hi FROM bucket_digests
                     WHERE series_id = ?1 ORDER BY bucket",
                )?
                .query_map(params![id], |r| {
                    Ok(BucketDigest {
                        start: Timestamp(r.get(0)?),
                        digest: Digest::from_halves(
                            r.get::<_, i64>(1)? as u64,
                            r.get(2)?,
                            r.get(3)?,
                        ),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let wrong = digest::differing_buckets(&computed, &kept);
            let total = digest::total(&computed);
            let (lo, hi) = total.hash_halves();
            let row: (i64, Option<i64>, Option<i64>, i64, i64) = tx.query_row(
                "SELECT bar_count, first_ts, last_ts, hash_lo, hash_hi FROM series WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?;
            if wrong.is_empty() && row == (count, first, last, lo, hi) {
                continue;
            }
            tracing::warn!(
                series = %key,
                buckets = wrong.len(),
                "stored counts or digests did not match the bars; corrected"
            );
            tx.execute(
                "DELETE FROM bucket_digests WHERE series_id = ?1",
                params![id],
            )?;
            for b in &computed {
                let (lo, hi) = b.digest.hash_halves();
                tx.execute(
                    "INSERT INTO bucket_digests (series_id, bucket, bar_count, hash_lo, hash_hi)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, b.start.0, b.digest.count as i64, lo, hi],
                )?;
            }
            tx.execute(
                "UPDATE series SET bar_count = ?2, first_ts = ?3, last_ts = ?4, hash_lo = ?5,
                    hash_hi = ?6 WHERE id = ?1",
                params![id, count, first, last, lo, hi],
            )?;
            corrected.push((key.clone(), SeriesMeta { id, last_ts: last }));
            fixed.extend(wrong.into_iter().map(|b| (key.clone(), b)));
        }
        tx.commit()?;
        self.series.extend(corrected);
        Ok(fixed)
    }

    /// Removes the bars of `range` that are not in `bars` and upserts `bars`, in one
    /// transaction.
    pub(super) fn replace(
        &mut self,
        key: &SeriesKey,
        range: TimeRange,
        bars: &[Bar],
    ) -> Result<ReplaceStats> {
        let tx = self.conn.transaction()?;
        let id = match self.series.get(key) {
            Some(meta) => meta.id,
            None => create_series(&tx, key)?,
        };
        let keep: std::collections::HashSet<i64> = bars.iter().map(|b| b.ts.0).collect();
        let mut deltas = BucketDeltas::new(key.interval);
        let mut gone = Vec::new();
        if !range.is_empty() {
            let sql = format!(
                "SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3"
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(params![id, range.start.0, range.end.0])?;
            while let Some(row) = rows.next()? {
                let bar = bar_from_row(row)?;
                if !keep.contains(&bar.ts.0) {
                    deltas.remove(&bar);
                    gone.push(bar.ts.0);
                }
            }
        }
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM bars WHERE series_id = ?1 AND ts = ?2")?;
            for ts in &gone {
                delete.execute(params![id, ts])?;
            }
        }
        let last_ts = shrink_series(&tx, id, gone.len() as u64)?;
        let (written, last_ts) = upsert_series(&tx, SeriesMeta { id, last_ts }, bars, &mut deltas)?;
        deltas.apply(&tx, id)?;
        tx.commit()?;
        self.series.insert(key.clone(), SeriesMeta { id, last_ts });
        Ok(ReplaceStats {
            written,
            removed: gone.len() as u64,
        })
    }
}

/// Deletes the bars of series `id` in `range` inside `tx`, keeping counts, bounds and digests;
/// returns how many went and the series' last ts afterwards.
fn delete_in(
    tx: &Transaction<'_>,
    id: i64,
    interval: Interval,
    range: TimeRange,
) -> Result<(u64, Option<i64>)> {
    // The removed bars' hashes come out of their buckets' digests.
    let mut deltas = BucketDeltas::new(interval);
    if !range.is_empty() {
        let sql =
            format!("SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3");
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![id, range.start.0, range.end.0])?;
        while let Some(row) = rows.next()? {
            deltas.remove(&bar_from_row(row)?);
        }
    }
    let n = tx.execute(
        "DELETE FROM bars WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3",
        params![id, range.start.0, range.end.0],
    )?;
    deltas.apply(tx, id)?;
    let last_ts = shrink_series(tx, id, n as u64)?;
    Ok((n as u64, last_ts))
}

/// Takes `removed` bars off series `id`'s count and recomputes its bounds; returns its last ts.
fn shrink_series(tx: &Transaction<'_>, id: i64, removed: u64) -> Result<Option<i64>> {
    if removed > 0 {
        tx.execute(
            "UPDATE series SET bar_count = bar_count - ?2,
                first_ts = (SELECT min(ts) FROM bars WHERE series_id = ?1),
                last_ts = (SELECT max(ts) FROM bars WHERE series_id = ?1)
             WHERE id = ?1",
            params![id, removed as i64],
        )?;
    }
    Ok(tx.query_row(
        "SELECT last_ts FROM series WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )?)
}

fn create_series(tx: &Transaction<'_>, key: &SeriesKey) -> Result<i64> {
    tx.execute(
        "INSERT INTO series (symbol, interval) VALUES (?1, ?2)
         ON CONFLICT (symbol, interval) DO NOTHING",
        params![key.symbol.as_str(), key.interval.as_str()],
    )?;
    lookup_series_id(tx, key)?
        .ok_or_else(|| StoreError::refused(format!("series {key} vanished while created")))
}

/// Upserts the bars of one series; returns the stats and the series' last ts afterwards.
///
/// Bars after the last stored one, in strictly increasing order (an import, or the new part of
/// an update), cannot exist yet: they go in with multi-row inserts. The others take the
/// per-bar path that tells inserted, updated and unchanged apart.
fn upsert_series(
    tx: &Transaction<'_>,
    meta: SeriesMeta,
    bars: &[Bar],
    deltas: &mut BucketDeltas,
) -> Result<(UpsertStats, Option<i64>)> {
    let after_last = |b: &Bar| meta.last_ts.is_none_or(|last| b.ts.0 > last);
    // The longest suffix that is strictly increasing and entirely after the stored bars.
    let mut split = bars.len();
    while split > 0
        && after_last(&bars[split - 1])
        && (split == bars.len() || bars[split - 1].ts < bars[split].ts)
    {
        split -= 1;
    }
    // The appended part must also come after every bar of the other part (a batch may repeat
    // a time; the later bar wins, through the per-bar path).
    let max_old = bars[..split].iter().map(|b| b.ts).max();
    while split < bars.len() && max_old.is_some_and(|m| bars[split].ts <= m) {
        split += 1;
    }
    let (old, new) = bars.split_at(split);
    let mut stats = upsert_one_by_one(tx, meta.id, old, deltas)?;
    stats.inserted += insert_appended(tx, meta.id, new)?;
    new.iter().for_each(|b| deltas.add(b));
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for b in old.iter().chain(new) {
        first = first.min(b.ts.0);
        last = last.max(b.ts.0);
    }
    if stats.inserted > 0 {
        tx.prepare_cached(
            "UPDATE series SET bar_count = bar_count + ?2,
                first_ts = min(coalesce(first_ts, ?3), ?3),
                last_ts = max(coalesce(last_ts, ?4), ?4)
             WHERE id = ?1",
        )?
        .execute(params![meta.id, stats.inserted as i64, first, last])?;
    }
    let last_ts = match (meta.last_ts, bars.is_empty()) {
        (l, true) => l,
        (Some(l), false) => Some(l.max(last)),
        (None, false) => Some(last),
    };
    Ok((stats, last_ts))
}

/// Binds the ten `bars` columns of `b` (series `id`) to parameters `at..at + 10` of `stmt`, in
/// table order. Public so that tools writing the same schema bind exactly the same way.
pub fn bind_bar(
    stmt: &mut rusqlite::Statement<'_>,
    at: usize,
    id: i64,
    b: &Bar,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(at, id)?;
    stmt.raw_bind_parameter(at + 1, b.ts.0)?;
    stmt.raw_bind_parameter(at + 2, b.open)?;
    stmt.raw_bind_parameter(at + 3, b.high)?;
    stmt.raw_bind_parameter(at + 4, b.low)?;
    stmt.raw_bind_parameter(at + 5, b.close)?;
    stmt.raw_bind_parameter(at + 6, b.volume)?;
    stmt.raw_bind_parameter(at + 7, b.adj_close)?;
    stmt.raw_bind_parameter(at + 8, b.turnover)?;
    stmt.raw_bind_parameter(at + 9, b.open_interest)?;
    Ok(())
}

/// Inserts bars known to be new; returns how many were inserted (all of them).
fn insert_appended(tx: &Transaction<'_>, id: i64, bars: &[Bar]) -> Result<u64> {
    let mut inserted = 0usize;
    let mut chunks = bars.chunks_exact(MULTI_ROWS);
    if bars.len() >= MULTI_ROWS {
        static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let mut multi = tx.prepare_cached(SQL.get_or_init(multi_insert_sql))?;
        for chunk in &mut chunks {
            for (r, b) in chunk.iter().enumerate() {
                bind_bar(&mut multi, r * 10 + 1, id, b)?;
            }
            inserted += multi.raw_execute()?;
        }
    }
    let mut single = tx.prepare_cached(INSERT_BAR)?;
    for b in chunks.remainder() {
        bind_bar(&mut single, 1, id, b)?;
        inserted += single.raw_execute()?;
    }
    if inserted != bars.len() {
        return Err(StoreError::refused(format!(
            "{} of {} bars after the last stored one already existed; the series metadata is out of date",
            bars.len() - inserted,
            bars.len()
        )));
    }
    Ok(inserted as u64)
}

/// Upserts bars one by one, telling inserted, updated and unchanged apart. A bar already
/// stored is read first: unchanged if equal, else replaced, its old hash taken out of the digest.
fn upsert_one_by_one(
    tx: &Transaction<'_>,
    id: i64,
    bars: &[Bar],
    deltas: &mut BucketDeltas,
) -> Result<UpsertStats> {
    let mut stats = UpsertStats::default();
    if bars.is_empty() {
        return Ok(stats);
    }
    let mut insert = tx.prepare_cached(INSERT_BAR)?;
    let mut select = tx.prepare_cached(&format!(
        "SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 AND ts = ?2"
    ))?;
    let mut update = tx.prepare_cached(UPDATE_BAR)?;
    for b in bars {
        bind_bar(&mut insert, 1, id, b)?;
        if insert.raw_execute()? == 1 {
            stats.inserted += 1;
            deltas.add(b);
            continue;
        }
        let old = select.query_row(params![id, b.ts.0], bar_from_row)?;
        if digest::same_bar(&old, b) {
            stats.unchanged += 1;
            continue;
        }
        bind_bar(&mut update, 1, id, b)?;
        update.raw_execute()?;
        stats.updated += 1;
        deltas.remove(&old);
        deltas.add(b);
    }
    Ok(stats)
}
