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

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{MySql, QueryBuilder, Row, Transaction};

use super::config::SqlServerConfig;
use super::digest::BucketDigest;
use super::sql::{
    BAR_COLUMNS, Dialect, SeriesRow, SqlScrub, SqlStore, SqlWrite, bar_from_row, bars_of,
    bucket_from_row, connect, integers_of, parse_key, quoted_interval, series_from_row, sql_error,
};
use super::{Bar, Result, SeriesKey, StoreError};

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
/// A MySQL (or MariaDB) server, the [`Dialect`] of [`MysqlStore`]. Cheap to clone; clones
/// share the pool.
#[derive(Debug, Clone)]
pub struct MysqlServer {
    pool: MySqlPool,
    /// The server and database, without password, for errors.
    label: String,
}

/// The MySQL bar store.
pub type MysqlStore = SqlStore<MysqlServer>;

impl MysqlStore {
    /// Connects to the configured server and prepares the schema.
    pub async fn open(config: &SqlServerConfig) -> Result<Self> {
        let label = config.url_redacted();
        let mut options = MySqlConnectOptions::from_str(&config.url).map_err(|e| {
            StoreError::refused(format!("store url {label} is not a MySQL url: {e}"))
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
        let pool = MySqlPoolOptions::new().after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        });
        let context = format!("MySQL store {label}");
        let pool = connect(options, pool, max_connections, &context, migrate).await?;
        Ok(SqlStore {
            server: MysqlServer { pool, label },
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &MySqlPool {
        &self.server.pool
    }
}

#[async_trait]
impl Dialect for MysqlServer {
    const BACKEND: &'static str = "mysql";
    const SERVER: &'static str = "MySQL";
    const PING: &'static str = "SELECT CAST(1 AS SIGNED)";
    const SIZE_ON_DISK: &'static str =
        "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED)
         FROM information_schema.tables
         WHERE table_schema = DATABASE()
           AND table_name IN ('dms_series', 'dms_bars', 'dms_bucket_digests')";

    type Write = MyWrite;

    fn statement(sql: &str) -> String {
        quoted_interval(sql)
    }

    fn label(&self) -> &str {
        &self.label
    }

    async fn begin(&self) -> Result<MyWrite> {
        Ok(MyWrite(self.pool.begin().await.map_err(sql_error)?))
    }

    async fn commit(write: MyWrite) -> Result<()> {
        write.0.commit().await.map_err(sql_error)
    }

    async fn bars(&self, sql: &str, params: &[i64]) -> Result<Vec<Bar>> {
        bars_of(&self.fetch(sql, params).await?)
    }

    async fn integer_rows(&self, sql: &str, params: &[i64]) -> Result<Vec<Vec<i64>>> {
        integers_of(&self.fetch(sql, params).await?, 0)
    }

    async fn series_rows(&self, sql: &str) -> Result<Vec<(String, String, Vec<i64>)>> {
        let rows = self.fetch(sql, &[]).await?;
        let text = text;
        let numbers = integers_of(&rows, 2)?;
        rows.iter()
            .zip(numbers)
            .map(|(r, n)| Ok((text(r, 0)?, text(r, 1)?, n)))
            .collect()
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

impl MysqlServer {
    /// The rows `sql` selects with `params` bound in order.
    async fn fetch(&self, sql: &str, params: &[i64]) -> Result<Vec<MySqlRow>> {
        let mut query = sqlx::query(sql);
        for p in params {
            query = query.bind(*p);
        }
        query.fetch_all(&self.pool).await.map_err(sql_error)
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
        .map_err(|e| StoreError::corrupt(format!("stored series name is not UTF-8: {e}")))
}

/// One write transaction.
pub(crate) struct MyWrite(Transaction<'static, MySql>);

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
