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

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

mod write;

pub(crate) use write::PgWrite;

use super::config::SqlServerConfig;
use super::sql::{
    Dialect, SqlStore, bars_of, connect, integers_of, numbered_placeholders, sql_error,
};
use super::{Bar, Result, SeriesKey, StoreError};

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

/// A PostgreSQL server, the [`Dialect`] of [`PostgresStore`]. Cheap to clone; clones share
/// the pool.
#[derive(Debug, Clone)]
pub struct PgServer {
    pool: PgPool,
    /// The server and database, without password, for errors.
    label: String,
}

/// The PostgreSQL bar store.
pub type PostgresStore = SqlStore<PgServer>;

impl PostgresStore {
    /// Connects to the configured server and prepares the schema.
    pub async fn open(config: &SqlServerConfig) -> Result<Self> {
        let label = config.url_redacted();
        let mut options = PgConnectOptions::from_str(&config.url).map_err(|e| {
            StoreError::refused(format!("store url {label} is not a PostgreSQL url: {e}"))
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
        let context = format!("PostgreSQL store {label}");
        let pool = connect(
            options,
            PgPoolOptions::new(),
            max_connections,
            &context,
            migrate,
        )
        .await?;
        Ok(SqlStore {
            server: PgServer { pool, label },
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.server.pool
    }
}

#[async_trait]
impl Dialect for PgServer {
    const BACKEND: &'static str = "postgres";
    const SERVER: &'static str = "PostgreSQL";
    const PING: &'static str = "SELECT 1::BIGINT";
    const SIZE_ON_DISK: &'static str =
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
           AND c.relname IN ('dms_series', 'dms_bars', 'dms_bucket_digests')";

    type Write = PgWrite;

    fn statement(sql: &str) -> String {
        numbered_placeholders(sql)
    }

    fn label(&self) -> &str {
        &self.label
    }

    async fn begin(&self) -> Result<PgWrite> {
        Ok(PgWrite(self.pool.begin().await.map_err(sql_error)?))
    }

    async fn commit(write: PgWrite) -> Result<()> {
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
        let text =
            |r: &sqlx::postgres::PgRow, i: usize| r.try_get::<String, _>(i).map_err(sql_error);
        let numbers = integers_of(&rows, 2)?;
        rows.iter()
            .zip(numbers)
            .map(|(r, n)| Ok((text(r, 0)?, text(r, 1)?, n)))
            .collect()
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

impl PgServer {
    /// The rows `sql` selects with `params` bound in order.
    async fn fetch(&self, sql: &str, params: &[i64]) -> Result<Vec<sqlx::postgres::PgRow>> {
        let mut query = sqlx::query(sql);
        for p in params {
            query = query.bind(*p);
        }
        query.fetch_all(&self.pool).await.map_err(sql_error)
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
