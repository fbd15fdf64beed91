//! The MySQL / MariaDB bar store: bars in an InnoDB database, through a sqlx connection pool.
//!
//! # Schema
//!
//! Created at open by embedded migrations, each recorded in `dms_schema(version)` and run under
//! a named lock (`GET_LOCK`) so that daemons opening the same database at once do not race.
//! InnoDB tables, utf8mb4 with binary collation (symbols compare byte for byte):
//!
//! - `dms_series(id AUTO_INCREMENT, symbol, interval, bar_count, first_ts, last_ts, hash_lo,
//!   hash_hi, UNIQUE(symbol, interval))`;
//! - `dms_bars(series_id, ts BIGINT, open .. open_interest DOUBLE, PRIMARY KEY(series_id, ts))`,
//!   clustered by the key, so a series is one contiguous run;
//! - `dms_bucket_digests(series_id, bucket, bar_count, hash_lo, hash_hi,
//!   PRIMARY KEY(series_id, bucket))`.
//!
//! # Guarantees
//!
//! The write path is the one of [`super::sql`]: a batch is one transaction (all series or none),
//! counts are exact, digests are kept current in the same transaction, concurrent writers of a
//! series take turns on its row lock. Connections run at `READ COMMITTED`, so a writer that got
//! the lock reads what the previous one committed, and each page of a read sees whole batches.
//! New and changed bars go in with multi-row `INSERT .. ON DUPLICATE KEY UPDATE` statements.
//! Prices are `DOUBLE` and travel in the binary protocol, so every f64 reads back bit-exact.
//! Commits are durable as `innodb_flush_log_at_trx_commit` says (1, the default: on disk).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, MySql, QueryBuilder, Row, Transaction};

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
        id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        symbol     VARCHAR(64) NOT NULL,
        `interval` VARCHAR(8) NOT NULL,
        bar_count  BIGINT NOT NULL DEFAULT 0,
        first_ts   BIGINT,
        last_ts    BIGINT,
        hash_lo    BIGINT NOT NULL DEFAULT 0,
        hash_hi    BIGINT NOT NULL DEFAULT 0,
        UNIQUE KEY series_key (symbol, `interval`)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS dms_bars (
        series_id     BIGINT NOT NULL,
        ts            BIGINT NOT NULL,
        open          DOUBLE NOT NULL,
        high          DOUBLE NOT NULL,
        low           DOUBLE NOT NULL,
        close         DOUBLE NOT NULL,
        volume        DOUBLE NOT NULL,
        adj_close     DOUBLE,
        turnover      DOUBLE,
        open_interest DOUBLE,
        PRIMARY KEY (series_id, ts)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS dms_bucket_digests (
        series_id BIGINT NOT NULL,
        bucket    BIGINT NOT NULL,
        bar_count BIGINT NOT NULL,
        hash_lo   BIGINT NOT NULL,
        hash_hi   BIGINT NOT NULL,
        PRIMARY KEY (series_id, bucket)
    ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
];

/// The named lock that serializes migrations.
const MIGRATION_LOCK: &str = "dms_schema_migration";

/// Rows per multi-row `INSERT` (ten placeholders a row, well under the protocol's 65,535).
const CHUNK_ROWS: usize = 1_000;

/// Times per `DELETE .. IN (..)` statement.
const CHUNK_KEYS: usize = 5_000;
const BAR_COLUMNS: &str = "ts, open, high, low, close, volume, adj_close, turnover, open_interest";

/// The MySQL bar store. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct MysqlStore {
    pool: MySqlPool,
    /// The server and database, without password, for errors.
    label: String,
}

impl MysqlStore {
    /// Connects to the configured server and prepares the schema.
    pub async fn open(config: &SqlServerConfig) -> Result<Self> {
        let label = config.url_redacted();
        let mut options = MySqlConnectOptions::from_str(&config.url).map_err(|e| {
            StoreError::Invalid(format!("store url {label} is not a MySQL url: {e}"))
        })?;
        if let Some(password) = config.resolve_password()? {
            options = options.password(password.expose());
        }
        Self::connect_with(options, config.max_connections, label).await
    }

    /// Connects with ready-made options (`label` names the server in errors) and prepares the
    /// schema. Fails at once, transiently, when the server cannot be reached.
    pub async fn connect_with(
        options: MySqlConnectOptions,
        max_connections: u32,
        label: String,
    ) -> Result<Self> {
        let context = |e: sqlx::Error| in_context(&label, sql_error(e));
        let mut conn = sqlx::MySqlConnection::connect_with(&options)
            .await
            .map_err(context)?;
        migrate(&mut conn)
            .await
            .map_err(|e| in_context(&label, e))?;
        conn.close().await.map_err(context)?;
        let pool = MySqlPoolOptions::new()
            .max_connections(max_connections.max(1))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(MysqlStore { pool, label })
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    async fn begin(&self) -> Result<MyWrite> {
        Ok(MyWrite(self.pool.begin().await.map_err(sql_error)?))
    }

    async fn series_id(&self, key: &SeriesKey) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT id FROM dms_series WHERE symbol = ? AND `interval` = ?")
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
            message: format!("MySQL store {label}: {message}"),
        },
        other => other,
    }
}

async fn migrate(conn: &mut sqlx::MySqlConnection) -> Result<()> {
    sqlx::query("SELECT GET_LOCK(?, 60)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(sql_error)?;
    let result = run_migrations(conn).await;
    let unlock = sqlx::query("SELECT RELEASE_LOCK(?)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(sql_error);
    result.and(unlock.map(|_| ()))
}

async fn run_migrations(conn: &mut sqlx::MySqlConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS dms_schema (version INTEGER NOT NULL PRIMARY KEY)
         ENGINE = InnoDB",
    )
    .execute(&mut *conn)
    .await
    .map_err(sql_error)?;
    let applied: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(version), 0) AS SIGNED) FROM dms_schema")
            .fetch_one(&mut *conn)
            .await
            .map_err(sql_error)?;
    for (i, statement) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= applied {
            continue;
        }
        // DDL commits on its own in MySQL; `IF NOT EXISTS` makes a repeated step harmless.
        sqlx::query(statement)
            .execute(&mut *conn)
            .await
            .map_err(sql_error)?;
        sqlx::query("INSERT INTO dms_schema (version) VALUES (?)")
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(sql_error)?;
    }
    Ok(())
}

/// A text column of binary collation (`utf8mb4_bin`), which the driver hands over as bytes.
fn text(r: &MySqlRow, i: usize) -> Result<String> {
    let bytes: Vec<u8> = r.try_get(i).map_err(sql_error)?;
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Invalid(format!("stored series name is not UTF-8: {e}")))
}

/// One write transaction.
struct MyWrite(Transaction<'static, MySql>);

impl MyWrite {
    async fn commit(self) -> Result<()> {
        self.0.commit().await.map_err(sql_error)
    }
}

#[async_trait]
impl SqlWrite for MyWrite {
    async fn series_id(&mut self, key: &SeriesKey) -> Result<i64> {
        let lookup = || {
            sqlx::query_scalar::<_, i64>(
                "SELECT id FROM dms_series WHERE symbol = ? AND `interval` = ?",
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
            "INSERT INTO dms_series (symbol, `interval`) VALUES (?, ?)
             ON DUPLICATE KEY UPDATE id = id",
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
             WHERE id = ? FOR UPDATE",
        )
        .bind(id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(sql_error)?;
        series_from_row(&row).map_err(sql_error)
    }

    async fn bars_between(&mut self, id: i64, first: i64, last: i64) -> Result<Vec<Bar>> {
        let rows = sqlx::query(&format!(
            "SELECT {BAR_COLUMNS} FROM dms_bars WHERE series_id = ? AND ts >= ? AND ts <= ?"
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
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO dms_bars (series_id, ts, open, high, low, close, volume, adj_close,
                    turnover, open_interest) ",
            );
            q.push_values(chunk, |mut row, b| {
                row.push_bind(id)
                    .push_bind(b.ts.0)
                    .push_bind(b.open)
                    .push_bind(b.high)
                    .push_bind(b.low)
                    .push_bind(b.close)
                    .push_bind(b.volume)
                    .push_bind(b.adj_close)
                    .push_bind(b.turnover)
                    .push_bind(b.open_interest);
            });
            q.push(
                " ON DUPLICATE KEY UPDATE open = VALUES(open), high = VALUES(high),
                    low = VALUES(low), close = VALUES(close), volume = VALUES(volume),
                    adj_close = VALUES(adj_close), turnover = VALUES(turnover),
                    open_interest = VALUES(open_interest)",
            );
            q.build().execute(&mut *self.0).await.map_err(sql_error)?;
        }
        Ok(())
    }

    async fn delete_bars(&mut self, id: i64, ts: &[i64]) -> Result<u64> {
        let mut n = 0;
        for chunk in ts.chunks(CHUNK_KEYS) {
            let mut q = QueryBuilder::<MySql>::new("DELETE FROM dms_bars WHERE series_id = ");
            q.push_bind(id).push(" AND ts IN (");
            let mut list = q.separated(", ");
            for t in chunk {
                list.push_bind(*t);
            }
            q.push(")");
            n += q
                .build()
                .execute(&mut *self.0)
                .await
                .map_err(sql_error)?
                .rows_affected();
        }
        Ok(n)
    }

    async fn delete_between(&mut self, id: i64, first: i64, last: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM dms_bars WHERE series_id = ? AND ts >= ? AND ts <= ?")
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
             WHERE series_id = ? AND bucket >= ? AND bucket <= ? ORDER BY bucket",
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
        for chunk in set.chunks(CHUNK_ROWS) {
            let mut q = QueryBuilder::<MySql>::new(
                "INSERT INTO dms_bucket_digests (series_id, bucket, bar_count, hash_lo, hash_hi) ",
            );
            q.push_values(chunk, |mut row, b| {
                let (lo, hi) = b.digest.hash_halves();
                row.push_bind(id)
                    .push_bind(b.start.0)
                    .push_bind(b.digest.count as i64)
                    .push_bind(lo)
                    .push_bind(hi);
            });
            q.push(
                " ON DUPLICATE KEY UPDATE bar_count = VALUES(bar_count),
                    hash_lo = VALUES(hash_lo), hash_hi = VALUES(hash_hi)",
            );
            q.build().execute(&mut *self.0).await.map_err(sql_error)?;
        }
        for chunk in remove.chunks(CHUNK_KEYS) {
            let mut q =
                QueryBuilder::<MySql>::new("DELETE FROM dms_bucket_digests WHERE series_id = ");
            q.push_bind(id).push(" AND bucket IN (");
            let mut list = q.separated(", ");
            for b in chunk {
                list.push_bind(*b);
            }
            q.push(")");
            q.build().execute(&mut *self.0).await.map_err(sql_error)?;
        }
        Ok(())
    }

    async fn bounds(&mut self, id: i64) -> Result<(Option<i64>, Option<i64>)> {
        sqlx::query_as("SELECT MIN(ts), MAX(ts) FROM dms_bars WHERE series_id = ?")
            .bind(id)
            .fetch_one(&mut *self.0)
            .await
            .map_err(sql_error)
    }

    async fn update_series(&mut self, row: &SeriesRow) -> Result<()> {
        sqlx::query(
            // Placeholders bind in order: the id comes last.
            "UPDATE dms_series SET bar_count = ?, first_ts = ?, last_ts = ?, hash_lo = ?,
                hash_hi = ? WHERE id = ?",
        )
        .bind(row.count)
        .bind(row.first)
        .bind(row.last)
        .bind(row.hash_lo)
        .bind(row.hash_hi)
        .bind(row.id)
        .execute(&mut *self.0)
        .await
        .map_err(sql_error)?;
        Ok(())
    }
}

#[async_trait]
impl SqlScrub for MyWrite {
    async fn all_series(&mut self) -> Result<Vec<(SeriesKey, SeriesRow)>> {
        let rows = sqlx::query(
            "SELECT id, bar_count, first_ts, last_ts, hash_lo, hash_hi, symbol, `interval`
             FROM dms_series ORDER BY id",
        )
        .fetch_all(&mut *self.0)
        .await
        .map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let symbol = text(r, 6)?;
            let interval = text(r, 7)?;
            out.push((
                parse_key(&symbol, &interval)?,
                series_from_row(r).map_err(sql_error)?,
            ));
        }
        Ok(out)
    }
}

#[async_trait]
impl BarStore for MysqlStore {
    fn backend(&self) -> &'static str {
        "mysql"
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
                         WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?"
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
            "SELECT {BAR_COLUMNS} FROM dms_bars WHERE series_id = ? ORDER BY ts DESC LIMIT 1"
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
            "SELECT symbol, `interval`, bar_count, first_ts, last_ts, hash_lo, hash_hi
             FROM dms_series WHERE bar_count > 0 ORDER BY symbol, `interval`",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let get = |i: usize| r.try_get::<i64, _>(i).map_err(sql_error);
            let symbol = text(r, 0)?;
            let interval = text(r, 1)?;
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
             WHERE series_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
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
            "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED)
             FROM information_schema.tables
             WHERE table_schema = DATABASE()
               AND table_name IN ('dms_series', 'dms_bars', 'dms_bucket_digests')",
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
