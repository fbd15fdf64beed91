//! The PostgreSQL bar store: bars in a PostgreSQL database, through a sqlx connection pool.
//!
//! # Schema
//!
//! Created at open by embedded migrations, each recorded in `dms_schema(version)` and run under
//! an advisory lock so that daemons opening the same database at once do not race:
//!
//! - `dms_series(id BIGSERIAL, symbol, interval, bar_count, first_ts, last_ts, hash_lo,
//!   hash_hi, UNIQUE(symbol, interval))`;
//! - `dms_bars(series_id, ts BIGINT, open .. open_interest DOUBLE PRECISION,
//!   PRIMARY KEY(series_id, ts))`; a TimescaleDB hypertable (chunked by ts) when the
//!   `timescaledb` extension is available on the server, a plain table otherwise;
//! - `dms_bucket_digests(series_id, bucket, bar_count, hash_lo, hash_hi,
//!   PRIMARY KEY(series_id, bucket))`.
//!
//! # Guarantees
//!
//! The write path is the one of [`super::sql`]: a batch is one transaction (all series or none),
//! counts are exact, digests are kept current in the same transaction, concurrent writers of a
//! series take turns on its row lock. Bars of a series that overlap its stored span go in
//! with one `INSERT .. SELECT FROM UNNEST(arrays) ON CONFLICT DO UPDATE` per chunk; bars wholly
//! before or after it (an import, an append, a migration into an empty store), of every series
//! of the batch together, by one `COPY .. FROM STDIN` (from 500 bars; no conflict is possible
//! under the row locks). Prices are `DOUBLE PRECISION`: the insert binds them in binary, the
//! `COPY` writes each in its shortest text that reads back as the same double, so every f64
//! reads back bit-exact. Commits are
//! durable as the server's `synchronous_commit` says (on by default). Reads page by ts with
//! keyset pagination, each page one statement; the overview is answered from `dms_series`.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::config::SqlServerConfig;
use super::digest::{BucketDigest, Digest, DigestBucketing};
use super::sql::{
    self, SeriesRow, SqlScrub, SqlWrite, bar_from_row, bucket_from_row, parse_key, series_from_row,
    sql_error,
};
use super::{
    Bar, BarStore, BarStream, Capabilities, ReplaceStats, Result, SeriesBars, SeriesKey,
    SeriesOverview, StoreError, TimeRange, Timestamp, UpsertStats,
};

/// The schema, one statement per version.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS dms_series (
        id        BIGSERIAL PRIMARY KEY,
        symbol    TEXT NOT NULL,
        interval  TEXT NOT NULL,
        bar_count BIGINT NOT NULL DEFAULT 0,
        first_ts  BIGINT,
        last_ts   BIGINT,
        hash_lo   BIGINT NOT NULL DEFAULT 0,
        hash_hi   BIGINT NOT NULL DEFAULT 0,
        UNIQUE (symbol, interval)
    )",
    "CREATE TABLE IF NOT EXISTS dms_bars (
        series_id     BIGINT NOT NULL,
        ts            BIGINT NOT NULL,
        open          DOUBLE PRECISION NOT NULL,
        high          DOUBLE PRECISION NOT NULL,
        low           DOUBLE PRECISION NOT NULL,
        close         DOUBLE PRECISION NOT NULL,
        volume        DOUBLE PRECISION NOT NULL,
        adj_close     DOUBLE PRECISION,
        turnover      DOUBLE PRECISION,
        open_interest DOUBLE PRECISION,
        PRIMARY KEY (series_id, ts)
    )",
    "CREATE TABLE IF NOT EXISTS dms_bucket_digests (
        series_id BIGINT NOT NULL,
        bucket    BIGINT NOT NULL,
        bar_count BIGINT NOT NULL,
        hash_lo   BIGINT NOT NULL,
        hash_hi   BIGINT NOT NULL,
        PRIMARY KEY (series_id, bucket)
    )",
];

/// The advisory lock key that serializes migrations (any constant; "dms" in ASCII).
const MIGRATION_LOCK: i64 = 0x00646d73;

/// Chunk of a TimescaleDB hypertable, in seconds of ts (one year).
const HYPERTABLE_CHUNK_SECS: i64 = 365 * 86_400;

/// Rows per `INSERT .. UNNEST` statement.
const CHUNK_ROWS: usize = 20_000;

/// New bars of one write from which they go by `COPY` instead of `INSERT`.
const COPY_MIN_ROWS: usize = 500;

/// Bytes per `COPY` message.
const COPY_CHUNK_BYTES: usize = 1 << 20;

const BAR_COLUMNS: &str = "ts, open, high, low, close, volume, adj_close, turnover, open_interest";

/// The PostgreSQL bar store. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The server and database, without password, for errors.
    label: String,
}

impl PostgresStore {
    /// Connects to the configured server and prepares the schema.
    pub async fn open(config: &SqlServerConfig) -> Result<Self> {
        let label = config.url_redacted();
        let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| {
            StoreError::Invalid(format!("store url {label} is not a PostgreSQL url: {e}"))
        })?;
        if let Some(password) = config.resolve_password()? {
            options = options.password(password.expose());
        }
        Self::connect_with(options, config.max_connections, label).await
    }

    /// Connects with ready-made options (`label` names the server in errors) and prepares the
    /// schema. Fails at once, transiently, when the server cannot be reached.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
        label: String,
    ) -> Result<Self> {
        let context = |e: sqlx::Error| in_context(&label, sql_error(e));
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(context)?;
        migrate(&mut conn)
            .await
            .map_err(|e| in_context(&label, e))?;
        conn.close().await.map_err(context)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(PostgresStore { pool, label })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> Result<PgWrite> {
        Ok(PgWrite(self.pool.begin().await.map_err(sql_error)?))
    }

    async fn series_id(&self, key: &SeriesKey) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM dms_series WHERE symbol = $1 AND interval = $2")
            .bind(key.symbol.as_str())
            .bind(key.interval.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)
    }
}

fn in_context(label: &str, e: StoreError) -> StoreError {
    match e {
        StoreError::Sql { transient, message } => StoreError::Sql {
            transient,
            message: format!("PostgreSQL store {label}: {message}"),
        },
        other => other,
    }
}

async fn migrate(conn: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    let result = run_migrations(conn).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(sql_error);
    result.and(unlock.map(|_| ()))
}

async fn run_migrations(conn: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS dms_schema (version INTEGER PRIMARY KEY)")
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    let applied: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM dms_schema")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql_error)?;
    for (i, statement) in MIGRATIONS.iter().enumerate() {
        let version = i as i32 + 1;
        if version <= applied {
            continue;
        }
        let mut tx = conn.begin().await.map_err(sql_error)?;
        sqlx::query(statement)
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
        sqlx::query("INSERT INTO dms_schema (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
        tx.commit().await.map_err(sql_error)?;
        if statement.contains("dms_bars (") {
            make_hypertable(conn).await;
        }
    }
    Ok(())
}

/// Makes `dms_bars` a TimescaleDB hypertable when the server offers the extension; a plain
/// table serves as well, so failing here only warns.
async fn make_hypertable(conn: &mut sqlx::PgConnection) {
    let available: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
            .fetch_optional(&mut *conn)
            .await
            .unwrap_or(None);
    if available.is_none() {
        return;
    }
    let made = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "SELECT create_hypertable('dms_bars', 'ts', chunk_time_interval => $1,
                if_not_exists => TRUE, migrate_data => TRUE)",
        )
        .bind(HYPERTABLE_CHUNK_SECS)
        .execute(&mut *conn)
        .await
    }
    .await;
    if let Err(e) = made {
        tracing::warn!(error = %e, "timescaledb is available but dms_bars stays a plain table");
    }
}

/// One write transaction.
struct PgWrite(Transaction<'static, Postgres>);

impl PgWrite {
    async fn commit(self) -> Result<()> {
        self.0.commit().await.map_err(sql_error)
    }
}

#[async_trait]
impl SqlWrite for PgWrite {
    async fn series_id(&mut self, key: &SeriesKey) -> Result<i64> {
        let lookup = || {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM dms_series WHERE symbol = $1 AND interval = $2",
            )
            .bind(key.symbol.as_str())
            .bind(key.interval.as_str())
        };
        // Known series (the usual case) cost one statement; a new one is created first.
        if let Some(id) = lookup()
            .fetch_optional(&mut *self.0)
            .await
            .map_err(sql_error)?
        {
            return Ok(id);
        }
        sqlx::query(
            "INSERT INTO dms_series (symbol, interval) VALUES ($1, $2)
             ON CONFLICT (symbol, interval) DO NOTHING",
        )
        .bind(key.symbol.as_str())
        .bind(key.interval.as_str())
        .execute(&mut *self.0)
        .await
        .map_err(sql_error)?;
        lookup().fetch_one(&mut *self.0).await.map_err(sql_error)
    }

    async fn lock_series(&mut self, id: i64) -> Result<SeriesRow> {
        let row = sqlx::query(
            "SELECT id, bar_count, first_ts, last_ts, hash_lo, hash_hi FROM dms_series
             WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(sql_error)?;
        series_from_row(&row).map_err(sql_error)
    }

    async fn bars_between(&mut self, id: i64, first: i64, last: i64) -> Result<Vec<Bar>> {
        let rows = sqlx::query(&format!(
            "SELECT {BAR_COLUMNS} FROM dms_bars WHERE series_id = $1 AND ts >= $2 AND ts <= $3"
        ))
        .bind(id)
        .bind(first)
        .bind(last)
        .fetch_all(&mut *self.0)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(bar_from_row)
            .collect::<std::result::Result<_, _>>()
            .map_err(sql_error)
    }

    async fn write_bars(&mut self, id: i64, bars: &[Bar]) -> Result<()> {
        for chunk in bars.chunks(CHUNK_ROWS) {
            let column = |f: fn(&Bar) -> f64| chunk.iter().map(f).collect::<Vec<f64>>();
            let optional =
                |f: fn(&Bar) -> Option<f64>| chunk.iter().map(f).collect::<Vec<Option<f64>>>();
            sqlx::query(
                "INSERT INTO dms_bars
                    (series_id, ts, open, high, low, close, volume, adj_close, turnover,
                     open_interest)
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::FLOAT8[], $4::FLOAT8[],
                    $5::FLOAT8[], $6::FLOAT8[], $7::FLOAT8[], $8::FLOAT8[], $9::FLOAT8[],
                    $10::FLOAT8[])
                 ON CONFLICT (series_id, ts) DO UPDATE SET
                    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low,
                    close = EXCLUDED.close, volume = EXCLUDED.volume,
                    adj_close = EXCLUDED.adj_close, turnover = EXCLUDED.turnover,
                    open_interest = EXCLUDED.open_interest",
            )
            .bind(id)
            .bind(chunk.iter().map(|b| b.ts.0).collect::<Vec<i64>>())
            .bind(column(|b| b.open))
            .bind(column(|b| b.high))
            .bind(column(|b| b.low))
            .bind(column(|b| b.close))
            .bind(column(|b| b.volume))
            .bind(optional(|b| b.adj_close))
            .bind(optional(|b| b.turnover))
            .bind(optional(|b| b.open_interest))
            .execute(&mut *self.0)
            .await
            .map_err(sql_error)?;
        }
        Ok(())
    }

    /// Many bars go by one `COPY … FROM STDIN` in CSV (numbers in their shortest form that
    /// reads back as the same double, absent values empty: NULL), the server's bulk path; a
    /// few by the insert.
    async fn insert_new_bars(&mut self, series: &[(i64, Vec<Bar>)]) -> Result<()> {
        use std::fmt::Write as _;
        let rows: usize = series.iter().map(|(_, b)| b.len()).sum();
        if rows < COPY_MIN_ROWS {
            for (id, bars) in series {
                self.write_bars(*id, bars).await?;
            }
            return Ok(());
        }
        let mut copy = self
            .0
            .copy_in_raw(
                "COPY dms_bars (series_id, ts, open, high, low, close, volume, adj_close,
                    turnover, open_interest) FROM STDIN WITH (FORMAT csv)",
            )
            .await
            .map_err(sql_error)?;
        let mut text = String::with_capacity(COPY_CHUNK_BYTES + 4096);
        for (id, bars) in series {
            for b in bars {
                let _ = write!(
                    text,
                    "{id},{},{},{},{},{},{}",
                    b.ts.0, b.open, b.high, b.low, b.close, b.volume
                );
                for v in [b.adj_close, b.turnover, b.open_interest] {
                    text.push(',');
                    if let Some(v) = v {
                        let _ = write!(text, "{v}");
                    }
                }
                text.push('\n');
                if text.len() >= COPY_CHUNK_BYTES {
                    copy.send(text.as_bytes()).await.map_err(sql_error)?;
                    text.clear();
                }
            }
        }
        if !text.is_empty() {
            copy.send(text.as_bytes()).await.map_err(sql_error)?;
        }
        copy.finish().await.map_err(sql_error)?;
        Ok(())
    }

    async fn delete_bars(&mut self, id: i64, ts: &[i64]) -> Result<u64> {
        if ts.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query("DELETE FROM dms_bars WHERE series_id = $1 AND ts = ANY($2)")
            .bind(id)
            .bind(ts)
            .execute(&mut *self.0)
            .await
            .map_err(sql_error)?;
        Ok(done.rows_affected())
    }

    async fn delete_between(&mut self, id: i64, first: i64, last: i64) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM dms_bars WHERE series_id = $1 AND ts >= $2 AND ts <= $3")
                .bind(id)
                .bind(first)
                .bind(last)
                .execute(&mut *self.0)
                .await
                .map_err(sql_error)?;
        Ok(done.rows_affected())
    }

    async fn buckets_between(
        &mut self,
        id: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<BucketDigest>> {
        let rows = sqlx::query(
            "SELECT bucket, bar_count, hash_lo, hash_hi FROM dms_bucket_digests
             WHERE series_id = $1 AND bucket >= $2 AND bucket <= $3 ORDER BY bucket",
        )
        .bind(id)
        .bind(first)
        .bind(last)
        .fetch_all(&mut *self.0)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(bucket_from_row)
            .collect::<std::result::Result<_, _>>()
            .map_err(sql_error)
    }

    async fn write_buckets(&mut self, id: i64, set: &[BucketDigest], remove: &[i64]) -> Result<()> {
        if !set.is_empty() {
            let halves: Vec<(i64, i64)> = set.iter().map(|b| b.digest.hash_halves()).collect();
            sqlx::query(
                "INSERT INTO dms_bucket_digests (series_id, bucket, bar_count, hash_lo, hash_hi)
                 SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[])
                 ON CONFLICT (series_id, bucket) DO UPDATE SET
                    bar_count = EXCLUDED.bar_count, hash_lo = EXCLUDED.hash_lo,
                    hash_hi = EXCLUDED.hash_hi",
            )
            .bind(id)
            .bind(set.iter().map(|b| b.start.0).collect::<Vec<i64>>())
            .bind(
                set.iter()
                    .map(|b| b.digest.count as i64)
                    .collect::<Vec<i64>>(),
            )
            .bind(halves.iter().map(|h| h.0).collect::<Vec<i64>>())
            .bind(halves.iter().map(|h| h.1).collect::<Vec<i64>>())
            .execute(&mut *self.0)
            .await
            .map_err(sql_error)?;
        }
        if !remove.is_empty() {
            sqlx::query("DELETE FROM dms_bucket_digests WHERE series_id = $1 AND bucket = ANY($2)")
                .bind(id)
                .bind(remove)
                .execute(&mut *self.0)
                .await
                .map_err(sql_error)?;
        }
        Ok(())
    }

    /// One statement for the buckets of every series.
    async fn write_new_buckets(&mut self, series: &[(i64, Vec<BucketDigest>)]) -> Result<()> {
        let mut ids = Vec::new();
        let (mut starts, mut counts, mut los, mut his) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, set) in series {
            for b in set {
                let (lo, hi) = b.digest.hash_halves();
                ids.push(*id);
                starts.push(b.start.0);
                counts.push(b.digest.count as i64);
                los.push(lo);
                his.push(hi);
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO dms_bucket_digests (series_id, bucket, bar_count, hash_lo, hash_hi)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
                $5::BIGINT[])
             ON CONFLICT (series_id, bucket) DO UPDATE SET
                bar_count = EXCLUDED.bar_count, hash_lo = EXCLUDED.hash_lo,
                hash_hi = EXCLUDED.hash_hi",
        )
        .bind(ids)
        .bind(starts)
        .bind(counts)
        .bind(los)
        .bind(his)
        .execute(&mut *self.0)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn bounds(&mut self, id: i64) -> Result<(Option<i64>, Option<i64>)> {
        sqlx::query_as("SELECT MIN(ts), MAX(ts) FROM dms_bars WHERE series_id = $1")
            .bind(id)
            .fetch_one(&mut *self.0)
            .await
            .map_err(sql_error)
    }

    /// Two statements for every key (three when some series are new): the existing rows
    /// locked in id order, the missing ones created, then locked.
    async fn lock_series_rows(
        &mut self,
        keys: &[&SeriesKey],
    ) -> Result<HashMap<SeriesKey, SeriesRow>> {
        let mut rows = HashMap::with_capacity(keys.len());
        let mut wanted: Vec<&SeriesKey> = keys.to_vec();
        wanted.sort();
        wanted.dedup();
        let lock = |keys: &[&SeriesKey]| {
            sqlx::query(
                "SELECT id, bar_count, first_ts, last_ts, hash_lo, hash_hi, symbol, interval
                 FROM dms_series
                 WHERE (symbol, interval) IN (SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[]))
                 ORDER BY id FOR UPDATE",
            )
            .bind(
                keys.iter()
                    .map(|k| k.symbol.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                keys.iter()
                    .map(|k| k.interval.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
        };
        let take = |found: Vec<sqlx::postgres::PgRow>,
                    rows: &mut HashMap<SeriesKey, SeriesRow>|
         -> Result<()> {
            for r in &found {
                let symbol: String = r.try_get(6).map_err(sql_error)?;
                let interval: String = r.try_get(7).map_err(sql_error)?;
                rows.insert(
                    parse_key(&symbol, &interval)?,
                    series_from_row(r).map_err(sql_error)?,
                );
            }
            Ok(())
        };
        take(
            lock(&wanted)
                .fetch_all(&mut *self.0)
                .await
                .map_err(sql_error)?,
            &mut rows,
        )?;
        let missing: Vec<&SeriesKey> = wanted
            .into_iter()
            .filter(|k| !rows.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            sqlx::query(
                "INSERT INTO dms_series (symbol, interval)
                 SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[])
                 ON CONFLICT (symbol, interval) DO NOTHING",
            )
            .bind(
                missing
                    .iter()
                    .map(|k| k.symbol.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                missing
                    .iter()
                    .map(|k| k.interval.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *self.0)
            .await
            .map_err(sql_error)?;
            take(
                lock(&missing)
                    .fetch_all(&mut *self.0)
                    .await
                    .map_err(sql_error)?,
                &mut rows,
            )?;
        }
        if let Some(k) = keys.iter().find(|k| !rows.contains_key(**k)) {
            return Err(StoreError::Invalid(format!(
                "series {k} has no row after its insert"
            )));
        }
        Ok(rows)
    }

    async fn update_series_rows(&mut self, rows: &[SeriesRow]) -> Result<()> {
        if rows.len() == 1 {
            return self.update_series(&rows[0]).await;
        }
        sqlx::query(
            "UPDATE dms_series AS s SET bar_count = u.c, first_ts = u.f, last_ts = u.l,
                hash_lo = u.lo, hash_hi = u.hi
             FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[],
                $6::BIGINT[]) AS u(id, c, f, l, lo, hi)
             WHERE s.id = u.id",
        )
        .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.count).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.first).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.last).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash_lo).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash_hi).collect::<Vec<_>>())
        .execute(&mut *self.0)
        .await
        .map_err(sql_error)?;
        Ok(())
    }

    async fn update_series(&mut self, row: &SeriesRow) -> Result<()> {
        sqlx::query(
            "UPDATE dms_series SET bar_count = $2, first_ts = $3, last_ts = $4, hash_lo = $5,
                hash_hi = $6 WHERE id = $1",
        )
        .bind(row.id)
        .bind(row.count)
        .bind(row.first)
        .bind(row.last)
        .bind(row.hash_lo)
        .bind(row.hash_hi)
        .execute(&mut *self.0)
        .await
        .map_err(sql_error)?;
        Ok(())
    }
}

#[async_trait]
impl SqlScrub for PgWrite {
    async fn all_series(&mut self) -> Result<Vec<(SeriesKey, SeriesRow)>> {
        let rows = sqlx::query(
            "SELECT id, bar_count, first_ts, last_ts, hash_lo, hash_hi, symbol, interval
             FROM dms_series ORDER BY id",
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let symbol: String = r.try_get(6).map_err(sql_error)?;
            let interval: String = r.try_get(7).map_err(sql_error)?;
            out.push((
                parse_key(&symbol, &interval)?,
                series_from_row(r).map_err(sql_error)?,
            ));
        }
        Ok(out)
    }
}

#[async_trait]
impl BarStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exact_upsert_counts: true,
            atomic_batches: true,
            maintained_digests: true,
        }
    }

    async fn upsert(&self, batch: &[SeriesBars]) -> Result<UpsertStats> {
        if batch.iter().all(|s| s.bars.is_empty()) {
            return Ok(UpsertStats::default());
        }
        let mut tx = self.begin().await?;
        let stats = sql::upsert(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(stats)
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let (store, key) = (self.clone(), series.clone());
        let pool = self.pool.clone();
        sql::paged_bars(
            range,
            page_size,
            move || {
                let (store, key) = (store.clone(), key.clone());
                async move { store.series_id(&key).await }
            },
            move |id, from, end, limit| {
                let pool = pool.clone();
                async move {
                    sqlx::query(&format!(
                        "SELECT {BAR_COLUMNS} FROM dms_bars
                         WHERE series_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts LIMIT $4"
                    ))
                    .bind(id)
                    .bind(from)
                    .bind(end)
                    .bind(limit)
                    .fetch_all(&pool)
                    .await
                    .map_err(sql_error)?
                    .iter()
                    .map(bar_from_row)
                    .collect::<std::result::Result<Vec<Bar>, _>>()
                    .map_err(sql_error)
                }
            },
        )
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        let Some(id) = self.series_id(series).await? else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {BAR_COLUMNS} FROM dms_bars WHERE series_id = $1 ORDER BY ts DESC LIMIT 1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        row.as_ref()
            .map(bar_from_row)
            .transpose()
            .map_err(sql_error)
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        let rows = sqlx::query(
            "SELECT symbol, interval, bar_count, first_ts, last_ts, hash_lo, hash_hi
             FROM dms_series WHERE bar_count > 0 ORDER BY symbol, interval",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let get = |i: usize| r.try_get::<i64, _>(i).map_err(sql_error);
            let symbol: String = r.try_get(0).map_err(sql_error)?;
            let interval: String = r.try_get(1).map_err(sql_error)?;
            let count = get(2)?;
            out.push(SeriesOverview {
                key: parse_key(&symbol, &interval)?,
                count: count as u64,
                first: Timestamp(get(3)?),
                last: Timestamp(get(4)?),
                digest: Digest::from_halves(count as u64, get(5)?, get(6)?),
            });
        }
        Ok(out)
    }

    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64> {
        if range.is_empty() {
            return Ok(0);
        }
        let Some(id) = self.series_id(series).await? else {
            return Ok(0);
        };
        let mut tx = self.begin().await?;
        let n = sql::delete(&mut tx, id, series.interval, range).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        super::check_in_range(series, range, &bars)?;
        let mut tx = self.begin().await?;
        let stats = sql::replace(&mut tx, series, range, &bars).await?;
        tx.commit().await?;
        Ok(stats)
    }

    async fn bucket_digests(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<BucketDigest>> {
        let range = DigestBucketing::for_interval(series.interval).widen(range);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let Some(id) = self.series_id(series).await? else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT bucket, bar_count, hash_lo, hash_hi FROM dms_bucket_digests
             WHERE series_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
        )
        .bind(id)
        .bind(range.start.0)
        .bind(range.end.0)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        rows.iter()
            .map(bucket_from_row)
            .collect::<std::result::Result<_, _>>()
            .map_err(sql_error)
    }

    async fn scrub(&self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        let mut tx = self.begin().await?;
        let fixed = sql::scrub(&mut tx).await?;
        tx.commit().await?;
        Ok(fixed)
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r'
               AND c.relname IN ('dms_series', 'dms_bars', 'dms_bucket_digests')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(|e| in_context(&self.label, sql_error(e)))?;
        Ok(Some(bytes.max(0) as u64))
    }

    async fn check(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| in_context(&self.label, sql_error(e)))
    }
}
