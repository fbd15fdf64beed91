//! [`SqlStore`]: the one [`BarStore`] of the SQL servers, over a [`Dialect`] that says what
//! differs between them: how a statement writes its placeholders and the `interval` column,
//! how a transaction begins and ends, the write statements ([`SqlWrite`], with each server's
//! bulk path), and the few reads that bind and decode through its own driver types.
//!
//! Every statement here is written once with `?` placeholders; [`Dialect::statement`] turns
//! it into the server's own text.

use std::time::Duration;

use async_trait::async_trait;

use super::{SqlScrub, paged_bars, parse_key};
use crate::bar::{Bar, SeriesBars, SeriesKey};
use crate::store::digest::{BucketDigest, Digest, DigestBucketing};
use crate::store::{
    BarStore, BarStream, Capabilities, ReplaceStats, Result, SeriesOverview, UpsertStats,
    check_in_range,
};
use crate::time::{TimeRange, Timestamp};

/// The columns of a bar row, in the order [`super::bar_from_row`] reads them.
pub(crate) const BAR_COLUMNS: &str =
    "ts, open, high, low, close, volume, adj_close, turnover, open_interest";

/// How long a connection may be waited for before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// What differs between the SQL servers a [`SqlStore`] runs on.
#[async_trait]
pub(crate) trait Dialect: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The backend's short name (`postgres`, `mysql`).
    const BACKEND: &'static str;
    /// The server's name in messages (`PostgreSQL`, `MySQL`).
    const SERVER: &'static str;
    /// A statement that answers one BIGINT row, to see that the server answers.
    const PING: &'static str;
    /// The statement that sums the bytes of `dms_series`, `dms_bars` and `dms_bucket_digests`.
    const SIZE_ON_DISK: &'static str;

    /// One write transaction.
    type Write: SqlScrub + Send;

    /// `sql`, written with `?` placeholders and a bare `interval` column, as this server takes
    /// it.
    fn statement(sql: &str) -> String;

    /// The server and database, without password, for errors.
    fn label(&self) -> &str;

    /// Begins a write transaction.
    async fn begin(&self) -> Result<Self::Write>;

    /// Commits a write transaction.
    async fn commit(write: Self::Write) -> Result<()>;

    /// The bars (rows of [`BAR_COLUMNS`]) `sql` selects with `params` bound in order.
    async fn bars(&self, sql: &str, params: &[i64]) -> Result<Vec<Bar>>;

    /// The rows of integer columns `sql` selects with `params` bound in order.
    async fn integer_rows(&self, sql: &str, params: &[i64]) -> Result<Vec<Vec<i64>>>;

    /// The rows `symbol, interval, <integers>` of `dms_series` that `sql` selects.
    async fn series_rows(&self, sql: &str) -> Result<Vec<(String, String, Vec<i64>)>>;

    /// The id of `key`'s row in `dms_series`.
    async fn series_id(&self, key: &SeriesKey) -> Result<Option<i64>>;
}

/// A bar store on a SQL server (`D`: [`super::super::postgres::PgServer`] or
/// [`super::super::mysql::MysqlServer`]). Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct SqlStore<D> {
    pub(crate) server: D,
}

/// `e` with `server` named before it.
fn named<D: Dialect>(server: &D, e: crate::store::StoreError) -> crate::store::StoreError {
    e.context(&format!("{} store {}", D::SERVER, server.label()))
}

#[async_trait]
impl<D: Dialect> BarStore for SqlStore<D> {
    fn backend(&self) -> &'static str {
        D::BACKEND
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
        let mut tx = self.server.begin().await?;
        let stats = super::upsert(&mut tx, batch).await?;
        D::commit(tx).await?;
        Ok(stats)
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let (server, key) = (self.server.clone(), series.clone());
        let pages = self.server.clone();
        let sql = D::statement(&format!(
            "SELECT {BAR_COLUMNS} FROM dms_bars
             WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?"
        ));
        paged_bars(
            range,
            page_size,
            move || {
                let (server, key) = (server.clone(), key.clone());
                async move { server.series_id(&key).await }
            },
            move |id, from, end, limit| {
                let (server, sql) = (pages.clone(), sql.clone());
                async move { server.bars(&sql, &[id, from, end, limit]).await }
            },
        )
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        let Some(id) = self.server.series_id(series).await? else {
            return Ok(None);
        };
        let sql = D::statement(&format!(
            "SELECT {BAR_COLUMNS} FROM dms_bars WHERE series_id = ? ORDER BY ts DESC LIMIT 1"
        ));
        Ok(self.server.bars(&sql, &[id]).await?.into_iter().next())
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        let sql = D::statement(
            "SELECT symbol, interval, bar_count, first_ts, last_ts, hash_lo, hash_hi
             FROM dms_series WHERE bar_count > 0 ORDER BY symbol, interval",
        );
        let rows = self.server.series_rows(&sql).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (symbol, interval, n) in rows {
            let &[count, first, last, lo, hi] = n.as_slice() else {
                return Err(crate::store::StoreError::corrupt(format!(
                    "a dms_series row of {symbol} {interval} has {} number columns, not 5",
                    n.len()
                )));
            };
            out.push(SeriesOverview {
                key: parse_key(&symbol, &interval)?,
                count: count as u64,
                first: Timestamp(first),
                last: Timestamp(last),
                digest: Digest::from_halves(count as u64, lo, hi),
            });
        }
        Ok(out)
    }

    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64> {
        if range.is_empty() {
            return Ok(0);
        }
        let Some(id) = self.server.series_id(series).await? else {
            return Ok(0);
        };
        let mut tx = self.server.begin().await?;
        let n = super::delete(&mut tx, id, series.interval, range).await?;
        D::commit(tx).await?;
        Ok(n)
    }

    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        check_in_range(series, range, &bars)?;
        let mut tx = self.server.begin().await?;
        let stats = super::replace(&mut tx, series, range, &bars).await?;
        D::commit(tx).await?;
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
        let Some(id) = self.server.series_id(series).await? else {
            return Ok(Vec::new());
        };
        let sql = D::statement(
            "SELECT bucket, bar_count, hash_lo, hash_hi FROM dms_bucket_digests
             WHERE series_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
        );
        let rows = self
            .server
            .integer_rows(&sql, &[id, range.start.0, range.end.0])
            .await?;
        rows.into_iter()
            .map(|r| match r.as_slice() {
                &[start, count, lo, hi] => Ok(BucketDigest {
                    start: Timestamp(start),
                    digest: Digest::from_halves(count as u64, lo, hi),
                }),
                other => Err(crate::store::StoreError::corrupt(format!(
                    "a dms_bucket_digests row has {} columns, not 4",
                    other.len()
                ))),
            })
            .collect()
    }

    async fn scrub(&self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        let mut tx = self.server.begin().await?;
        let fixed = super::scrub(&mut tx).await?;
        D::commit(tx).await?;
        Ok(fixed)
    }

    async fn size_on_disk(&self) -> Result<Option<u64>> {
        let rows = self
            .server
            .integer_rows(D::SIZE_ON_DISK, &[])
            .await
            .map_err(|e| named(&self.server, e))?;
        let bytes = rows.first().and_then(|r| r.first()).copied().unwrap_or(0);
        Ok(Some(bytes.max(0) as u64))
    }

    async fn check(&self) -> Result<()> {
        self.server
            .integer_rows(D::PING, &[])
            .await
            .map(|_| ())
            .map_err(|e| named(&self.server, e))
    }
}

/// Connects once with `options` to run `migrate` (the schema ready before the pool is used;
/// a server that cannot be reached fails here, transiently), then makes the pool from
/// `pool` (at most `max_connections`, waiting [`ACQUIRE_TIMEOUT`] for one), connecting
/// lazily. `context` names the server in errors.
pub(crate) async fn connect<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    pool: sqlx::pool::PoolOptions<DB>,
    max_connections: u32,
    context: &str,
    migrate: impl AsyncFnOnce(&mut DB::Connection) -> Result<()>,
) -> Result<sqlx::Pool<DB>> {
    use sqlx::Connection;
    let named = |e: crate::store::StoreError| e.context(context);
    let mut conn = DB::Connection::connect_with(&options)
        .await
        .map_err(|e| named(super::sql_error(e)))?;
    migrate(&mut conn).await.map_err(named)?;
    conn.close().await.map_err(|e| named(super::sql_error(e)))?;
    Ok(pool
        .max_connections(max_connections.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options))
}

/// `sql` with its `?` placeholders numbered `$1`, `$2`, ... (PostgreSQL's way).
pub(crate) fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `sql` with the `interval` column quoted as a MySQL identifier (`interval` is a keyword
/// there).
pub(crate) fn quoted_interval(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 4);
    let mut rest = sql;
    while let Some(i) = rest.find("interval") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + "interval".len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        if word(before) || word(after) || before == Some('`') {
            out.push_str("interval");
        } else {
            out.push_str("`interval`");
        }
        rest = &rest[i + "interval".len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(
            numbered_placeholders("a = ? AND b >= ? LIMIT ?"),
            "a = $1 AND b >= $2 LIMIT $3"
        );
        assert_eq!(numbered_placeholders("SELECT 1"), "SELECT 1");
    }

    #[test]
    fn only_the_interval_column_is_quoted() {
        assert_eq!(
            quoted_interval("SELECT symbol, interval FROM t WHERE interval = ? ORDER BY interval"),
            "SELECT symbol, `interval` FROM t WHERE `interval` = ? ORDER BY `interval`"
        );
        assert_eq!(
            quoted_interval("bar_interval, interval_s, `interval`"),
            "bar_interval, interval_s, `interval`"
        );
    }
}
