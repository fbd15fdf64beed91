//! The embedded SQLite bar store: the default primary store and a replica's default store.
//!
//! One file, WAL mode, `synchronous=FULL` (an upsert returns after its transaction is on disk).
//! Bars live in a `WITHOUT ROWID` table keyed by (series_id, ts), so a series is one contiguous
//! run of the B-tree; a small `series` table maps (symbol, interval) to its id and keeps the exact
//! count and first/last ts, updated in the same transaction as the bars, so the overview never
//! scans bars.
//!
//! Digests are kept current the same way: `bucket_digests` holds the count and hash sum of each
//! bucket (see [`super::digest`]) and `series` the sum over the whole series, both updated in
//! the transaction that changes the bars. A replaced bar is read first so that its old hash can
//! be taken out. A file written before digests were kept (no `digest_version` in `store_meta`)
//! has them rebuilt from its bars once, when it is opened.
//!
//! Writes go through one connection behind a mutex; reads use a pool of read-only connections,
//! which WAL lets run while a write is in progress. All SQLite calls run on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use super::digest::{self, BucketDigest, Digest, DigestBucketing, DigestDelta};
use super::{
    Bar, BarStore, BarStream, ReplaceStats, Result, SeriesBars, SeriesKey, SeriesOverview,
    StoreError, TimeRange, Timestamp, UpsertStats,
};
use crate::interval::Interval;
use crate::symbol::Symbol;

/// The schema of a bar store file. Public so that tools (the benchmark's raw-engine scenario)
/// can write exactly the same tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS series (
    id        INTEGER PRIMARY KEY,
    symbol    TEXT NOT NULL,
    interval  TEXT NOT NULL,
    bar_count INTEGER NOT NULL DEFAULT 0,
    first_ts  INTEGER,
    last_ts   INTEGER,
    hash_lo   INTEGER NOT NULL DEFAULT 0,
    hash_hi   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (symbol, interval)
);
CREATE TABLE IF NOT EXISTS bars (
    series_id     INTEGER NOT NULL,
    ts            INTEGER NOT NULL,
    open          REAL NOT NULL,
    high          REAL NOT NULL,
    low           REAL NOT NULL,
    close         REAL NOT NULL,
    volume        REAL NOT NULL,
    adj_close     REAL,
    turnover      REAL,
    open_interest REAL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bucket_digests (
    series_id INTEGER NOT NULL,
    bucket    INTEGER NOT NULL,
    bar_count INTEGER NOT NULL,
    hash_lo   INTEGER NOT NULL,
    hash_hi   INTEGER NOT NULL,
    PRIMARY KEY (series_id, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

const INSERT_BAR: &str = "INSERT INTO bars
    (series_id, ts, open, high, low, close, volume, adj_close, turnover, open_interest)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (series_id, ts) DO NOTHING";

const UPDATE_BAR: &str = "UPDATE bars SET
    open = ?3, high = ?4, low = ?5, close = ?6, volume = ?7,
    adj_close = ?8, turnover = ?9, open_interest = ?10
    WHERE series_id = ?1 AND ts = ?2";

const BAR_COLUMNS: &str = "ts, open, high, low, close, volume, adj_close, turnover, open_interest";

/// Tuning of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Page cache per connection, in KiB.
    pub cache_kib: u32,
    /// How long a statement waits for a lock held by another process before failing, in ms.
    pub busy_timeout_ms: u32,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            cache_kib: 64 * 1024,
            busy_timeout_ms: 5_000,
        }
    }
}

/// Applies the pragmas every bar-store connection uses.
pub fn apply_pragmas(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_millis(
        options.busy_timeout_ms.into(),
    ))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))?;
    Ok(())
}

/// The SQLite bar store. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    series: HashMap<SeriesKey, SeriesMeta>,
}

/// What the writer remembers of a series: its id and last stored ts (as committed).
#[derive(Debug, Clone, Copy)]
struct SeriesMeta {
    id: i64,
    last_ts: Option<i64>,
}

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

impl SqliteStore {
    /// Opens (creating if needed) the store file at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store file at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut conn = Connection::open(&path)?;
        apply_pragmas(&conn, &options)?;
        conn.execute_batch(SCHEMA)?;
        migrate_digests(&mut conn)?;
        let mut series = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT id, symbol, interval, last_ts FROM series")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })?;
            for row in rows {
                let (id, symbol, interval, last_ts) = row?;
                series.insert(parse_key(&symbol, &interval)?, SeriesMeta { id, last_ts });
            }
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                options,
                writer: Mutex::new(Writer { conn, series }),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn with_writer<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut w)
        })
        .await?
    }

    async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f)).await?
    }
}

impl Inner {
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_millis(
                    self.options.busy_timeout_ms.into(),
                ))?;
                c.pragma_update(None, "cache_size", -i64::from(self.options.cache_kib / 4))?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }
}

fn parse_key(symbol: &str, interval: &str) -> Result<SeriesKey> {
    let symbol = Symbol::new(symbol)
        .map_err(|e| StoreError::Invalid(format!("stored series has a bad symbol: {e}")))?;
    let interval = interval
        .parse::<Interval>()
        .map_err(|e| StoreError::Invalid(format!("stored series has a bad interval: {e}")))?;
    Ok(SeriesKey::new(symbol, interval))
}

fn lookup_series_id(conn: &Connection, key: &SeriesKey) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM series WHERE symbol = ?1 AND interval = ?2")?
        .query_row(params![key.symbol.as_str(), key.interval.as_str()], |r| {
            r.get(0)
        })
        .optional()?)
}

fn bar_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Bar> {
    Ok(Bar {
        ts: Timestamp(r.get(0)?),
        open: r.get(1)?,
        high: r.get(2)?,
        low: r.get(3)?,
        close: r.get(4)?,
        volume: r.get(5)?,
        adj_close: r.get(6)?,
        turnover: r.get(7)?,
        open_interest: r.get(8)?,
    })
}

impl Writer {
    fn upsert(&mut self, batch: &[SeriesBars]) -> Result<UpsertStats> {
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

    fn delete(&mut self, key: &SeriesKey, range: TimeRange) -> Result<u64> {
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
    fn scrub(&mut self) -> Result<Vec<(SeriesKey, Timestamp)>> {
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
    fn replace(&mut self, key: &SeriesKey, range: TimeRange, bars: &[Bar]) -> Result<ReplaceStats> {
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
        .ok_or_else(|| StoreError::Invalid(format!("series {key} vanished while created")))
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
        return Err(StoreError::Invalid(format!(
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

/// Digest changes of one series in one transaction, by bucket.
#[derive(Debug)]
struct BucketDeltas {
    bucketing: DigestBucketing,
    buckets: BTreeMap<i64, DigestDelta>,
}

impl BucketDeltas {
    fn new(interval: Interval) -> Self {
        BucketDeltas {
            bucketing: DigestBucketing::for_interval(interval),
            buckets: BTreeMap::new(),
        }
    }

    fn add(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().add(bar);
    }

    fn remove(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().remove(bar);
    }

    /// Writes the changes into `bucket_digests` and the series' total.
    fn apply(self, tx: &Transaction<'_>, id: i64) -> Result<()> {
        let mut total = DigestDelta::default();
        let mut select = tx.prepare_cached(
            "SELECT bar_count, hash_lo, hash_hi FROM bucket_digests
             WHERE series_id = ?1 AND bucket = ?2",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO bucket_digests (series_id, bucket, bar_count, hash_lo, hash_hi)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                bar_count = excluded.bar_count, hash_lo = excluded.hash_lo,
                hash_hi = excluded.hash_hi",
        )?;
        let mut remove =
            tx.prepare_cached("DELETE FROM bucket_digests WHERE series_id = ?1 AND bucket = ?2")?;
        for (bucket, delta) in self.buckets {
            if delta.is_zero() {
                continue;
            }
            total.merge(delta);
            let mut d = select
                .query_row(params![id, bucket], |r| {
                    Ok(Digest::from_halves(
                        r.get::<_, i64>(0)? as u64,
                        r.get(1)?,
                        r.get(2)?,
                    ))
                })
                .optional()?
                .unwrap_or_default();
            d.apply(delta);
            if d.count == 0 {
                remove.execute(params![id, bucket])?;
            } else {
                let (lo, hi) = d.hash_halves();
                upsert.execute(params![id, bucket, d.count as i64, lo, hi])?;
            }
        }
        if !total.is_zero() {
            let (lo, hi): (i64, i64) = tx
                .prepare_cached("SELECT hash_lo, hash_hi FROM series WHERE id = ?1")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let mut d = Digest::from_halves(0, lo, hi);
            d.apply(total);
            let (lo, hi) = d.hash_halves();
            tx.prepare_cached("UPDATE series SET hash_lo = ?2, hash_hi = ?3 WHERE id = ?1")?
                .execute(params![id, lo, hi])?;
        }
        Ok(())
    }
}

/// Brings the digest tables of a file up to the current [`digest::DIGEST_VERSION`]: a file
/// written before digests were kept (or with another version) has them rebuilt from its bars.
fn migrate_digests(conn: &mut Connection) -> Result<()> {
    let has_hash: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('series') WHERE name = 'hash_lo'")?
        .exists([])?;
    if !has_hash {
        conn.execute_batch(
            "ALTER TABLE series ADD COLUMN hash_lo INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE series ADD COLUMN hash_hi INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    let version: Option<String> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'digest_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let current = digest::DIGEST_VERSION.to_string();
    if version.as_deref() == Some(current.as_str()) {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM bucket_digests", [])?;
    tx.execute("UPDATE series SET hash_lo = 0, hash_hi = 0", [])?;
    let series: Vec<(i64, String, String)> = tx
        .prepare("SELECT id, symbol, interval FROM series")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, symbol, interval) in series {
        let key = parse_key(&symbol, &interval)?;
        let mut deltas = BucketDeltas::new(key.interval);
        {
            let sql = format!("SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1");
            let mut stmt = tx.prepare(&sql)?;
            let mut rows = stmt.query(params![id])?;
            while let Some(row) = rows.next()? {
                deltas.add(&bar_from_row(row)?);
            }
        }
        deltas.apply(&tx, id)?;
    }
    tx.execute(
        "INSERT INTO store_meta (key, value) VALUES ('digest_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![current],
    )?;
    tx.commit()?;
    Ok(())
}

/// One page of bars of series `id` after `after` (exclusive) or from `start` (inclusive).
fn read_page(
    conn: &Connection,
    id: i64,
    from: PageFrom,
    end: Timestamp,
    limit: usize,
) -> Result<Vec<Bar>> {
    let (sql, lower) = match from {
        PageFrom::Start(t) => (
            format!(
                "SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4"
            ),
            t.0,
        ),
        PageFrom::After(t) => (
            format!(
                "SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 AND ts > ?2 AND ts < ?3 ORDER BY ts LIMIT ?4"
            ),
            t.0,
        ),
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![id, lower, end.0, limit as i64], bar_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[derive(Debug, Clone, Copy)]
enum PageFrom {
    Start(Timestamp),
    After(Timestamp),
}

#[async_trait]
impl BarStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> super::Capabilities {
        super::Capabilities {
            exact_upsert_counts: true,
            atomic_batches: true,
            maintained_digests: true,
        }
    }

    async fn upsert(&self, batch: &[SeriesBars]) -> Result<UpsertStats> {
        if batch.iter().all(|s| s.bars.is_empty()) {
            return Ok(UpsertStats::default());
        }
        // On a multi-threaded runtime, write in place: no copy of a batch that can hold
        // hundreds of thousands of bars. Elsewhere, copy it to the blocking pool.
        if tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::MultiThread
        {
            let inner = &self.inner;
            return tokio::task::block_in_place(|| {
                inner
                    .writer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .upsert(batch)
            });
        }
        let batch = batch.to_vec();
        self.with_writer(move |w| w.upsert(&batch)).await
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let inner = self.inner.clone();
        let key = series.clone();
        let page_size = page_size.max(1);
        // State: the series id once looked up, and where the next page starts (None: done).
        let state = (None::<i64>, Some(PageFrom::Start(range.start)));
        futures::stream::try_unfold(state, move |(id, from)| {
            let inner = inner.clone();
            let key = key.clone();
            async move {
                let Some(from) = from else { return Ok(None) };
                if range.is_empty() {
                    return Ok(None);
                }
                let (id, page) = tokio::task::spawn_blocking(move || {
                    inner.with_reader(|conn| {
                        let id = match id {
                            Some(id) => Some(id),
                            None => lookup_series_id(conn, &key)?,
                        };
                        match id {
                            Some(id) => {
                                Ok((Some(id), read_page(conn, id, from, range.end, page_size)?))
                            }
                            None => Ok((None, Vec::new())),
                        }
                    })
                })
                .await??;
                if page.is_empty() {
                    return Ok(None);
                }
                let next = (page.len() == page_size)
                    .then(|| PageFrom::After(page.last().map(|b| b.ts).unwrap_or_default()));
                Ok(Some((page, (id, next))))
            }
        })
        .boxed()
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        let key = series.clone();
        self.with_reader(move |conn| {
            let Some(id) = lookup_series_id(conn, &key)? else {
                return Ok(None);
            };
            let sql = format!(
                "SELECT {BAR_COLUMNS} FROM bars WHERE series_id = ?1 ORDER BY ts DESC LIMIT 1"
            );
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![id], bar_from_row)
                .optional()?)
        })
        .await
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT symbol, interval, bar_count, first_ts, last_ts, hash_lo, hash_hi
                 FROM series WHERE bar_count > 0 ORDER BY symbol, interval",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (symbol, interval, count, first, last, lo, hi) = row?;
                out.push(SeriesOverview {
                    key: parse_key(&symbol, &interval)?,
                    count: count as u64,
                    first: Timestamp(first),
                    last: Timestamp(last),
                    digest: Digest::from_halves(count as u64, lo, hi),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64> {
        let key = series.clone();
        self.with_writer(move |w| w.delete(&key, range)).await
    }

    async fn bucket_digests(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<BucketDigest>> {
        let key = series.clone();
        let bucketing = DigestBucketing::for_interval(key.interval);
        let range = bucketing.widen(range);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.with_reader(move |conn| {
            let Some(id) = lookup_series_id(conn, &key)? else {
                return Ok(Vec::new());
            };
            let mut stmt = conn.prepare_cached(
                "SELECT bucket, bar_count, hash_lo, hash_hi FROM bucket_digests
                 WHERE series_id = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
            )?;
            let rows = stmt.query_map(params![id, range.start.0, range.end.0], |r| {
                Ok(BucketDigest {
                    start: Timestamp(r.get(0)?),
                    digest: Digest::from_halves(r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn scrub(&self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        self.with_writer(|w| w.scrub()).await
    }

    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        super::check_in_range(series, range, &bars)?;
        let key = series.clone();
        self.with_writer(move |w| w.replace(&key, range, &bars))
            .await
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        let path = &self.inner.path;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
        Ok(Some(size(path) + size(std::path::Path::new(&wal))))
    }

    async fn check(&self) -> Result<()> {
        self.with_reader(|conn| {
            conn.query_row("SELECT count(*) FROM series", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}
