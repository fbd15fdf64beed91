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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::digest::{BucketDigest, Digest, DigestBucketing};
use super::{
    Bar, BarStore, BarStream, ReplaceStats, Result, SeriesBars, SeriesKey, SeriesOverview,
    StoreError, TimeRange, Timestamp, UpsertStats,
};

mod digests;
mod write;

use super::parse_key;

use digests::migrate_digests;
pub use write::bind_bar;

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
                StoreError::unavailable(format!("cannot create {}: {e}", dir.display()))
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
