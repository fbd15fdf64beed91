//! What the PostgreSQL and MySQL bar stores share: one [`SqlStore`] over a dialect, the write
//! path over a transaction ([`write`]), the schema's shape, reading rows and the mapping of sqlx
//! errors to [`StoreError`].
//!
//! Both backends keep the same three tables:
//!
//! - `dms_series(id, symbol, interval, bar_count, first_ts, last_ts, hash_lo, hash_hi)`: one row
//!   per (symbol, interval) with its exact count, bounds and digest (the hash split in two
//!   `BIGINT` halves, see [`Digest::hash_halves`]);
//! - `dms_bars(series_id, ts, open, high, low, close, volume, adj_close, turnover,
//!   open_interest)`, keyed by (series_id, ts), prices as 64-bit floats;
//! - `dms_bucket_digests(series_id, bucket, bar_count, hash_lo, hash_hi)`, one row per bucket
//!   that holds bars (see [`super::digest`]).
//!
//! # Layout
//!
//! - [`store`]: [`SqlStore`], the one `BarStore` of both servers, over their [`store::Dialect`].
//! - [`write`]: a write in one transaction, its rows locked, its digests kept; the backends
//!   implement [`SqlWrite`], the statements.
//! - this module: the rows (series, bars, bucket digests), keyset paging, the key of a stored
//!   series, redacting urls and classifying sqlx errors.

mod store;
mod write;

pub(crate) use super::parse_key;
pub use store::SqlStore;
pub(crate) use store::{BAR_COLUMNS, Dialect, connect, numbered_placeholders, quoted_interval};
pub(crate) use write::{SqlScrub, SqlWrite, delete, replace, scrub, upsert};

use super::digest::{BucketDigest, Digest};
use super::{Bar, Result, StoreError, TimeRange, Timestamp};

/// What a store keeps of a series in `dms_series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeriesRow {
    pub(crate) id: i64,
    pub(crate) count: i64,
    pub(crate) first: Option<i64>,
    pub(crate) last: Option<i64>,
    pub(crate) hash_lo: i64,
    pub(crate) hash_hi: i64,
}

/// The bars of rows of [`BAR_COLUMNS`].
pub(crate) fn bars_of<R>(rows: &[R]) -> Result<Vec<Bar>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(bar_from_row)
        .collect::<std::result::Result<_, _>>()
        .map_err(sql_error)
}

/// The integer columns of each row, from column `from` on.
pub(crate) fn integers_of<R>(rows: &[R], from: usize) -> Result<Vec<Vec<i64>>>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| (from..r.len()).map(|i| r.try_get::<i64, _>(i)).collect())
        .collect::<std::result::Result<_, _>>()
        .map_err(sql_error)
}

/// The bar of a row of `ts, open, high, low, close, volume, adj_close, turnover, open_interest`.
pub(crate) fn bar_from_row<'r, R>(r: &'r R) -> std::result::Result<Bar, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Bar {
        ts: Timestamp(r.try_get(0)?),
        open: r.try_get(1)?,
        high: r.try_get(2)?,
        low: r.try_get(3)?,
        close: r.try_get(4)?,
        volume: r.try_get(5)?,
        adj_close: r.try_get(6)?,
        turnover: r.try_get(7)?,
        open_interest: r.try_get(8)?,
    })
}

/// The digest of a row of `bucket, bar_count, hash_lo, hash_hi`.
pub(crate) fn bucket_from_row<'r, R>(r: &'r R) -> std::result::Result<BucketDigest, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(BucketDigest {
        start: Timestamp(r.try_get(0)?),
        digest: Digest::from_halves(r.try_get::<i64, _>(1)? as u64, r.try_get(2)?, r.try_get(3)?),
    })
}

/// A series row of `id, bar_count, first_ts, last_ts, hash_lo, hash_hi`.
pub(crate) fn series_from_row<'r, R>(r: &'r R) -> std::result::Result<SeriesRow, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SeriesRow {
        id: r.try_get(0)?,
        count: r.try_get(1)?,
        first: r.try_get(2)?,
        last: r.try_get(3)?,
        hash_lo: r.try_get(4)?,
        hash_hi: r.try_get(5)?,
    })
}

/// The pages of one series in `range`, keyset-paged on `ts`: `series_id` looks the series up
/// once (`None`: no such series, no pages), `page(id, from, end, limit)` reads the bars with
/// `from <= ts < end` in ts order, at most `limit` of them. A short page is the last.
pub(crate) fn paged_bars<I, IF, P, PF>(
    range: TimeRange,
    page_size: usize,
    series_id: I,
    page: P,
) -> super::BarStream
where
    I: Fn() -> IF + Send + Sync + 'static,
    IF: std::future::Future<Output = Result<Option<i64>>> + Send,
    P: Fn(i64, i64, i64, i64) -> PF + Send + Sync + 'static,
    PF: std::future::Future<Output = Result<Vec<Bar>>> + Send,
{
    use futures::StreamExt;
    let limit = page_size.max(1) as i64;
    let ops = std::sync::Arc::new((series_id, page));
    // State: the series id once looked up, and the first ts the next page may hold.
    let state = (None::<i64>, Some(range.start.0));
    futures::stream::try_unfold(state, move |(id, from)| {
        let ops = ops.clone();
        async move {
            let Some(from) = from else { return Ok(None) };
            if range.is_empty() {
                return Ok(None);
            }
            let id = match id {
                Some(id) => id,
                None => match (ops.0)().await? {
                    Some(id) => id,
                    None => return Ok(None),
                },
            };
            let bars = (ops.1)(id, from, range.end.0, limit).await?;
            if bars.is_empty() {
                return Ok(None);
            }
            let next = (bars.len() as i64 == limit)
                .then(|| bars.last().map(|b| b.ts.0.saturating_add(1)))
                .flatten();
            Ok(Some((bars, (Some(id), next))))
        }
    })
    .boxed()
}

/// `url` without the secrets it may carry (the password of `user:password@`, and the values
/// of `password=`, `pwd=`, `token=`, `secret=` and `sslpassword=` query parameters), for
/// errors, logs, task parameters and `check-config`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query
                .split_once('#')
                .map_or((query, None), |(q, f)| (q, Some(f)));
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _))
                        if ["password", "pwd", "token", "secret", "sslpassword", "pass"]
                            .contains(&k.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{k}=<redacted>")
                    }
                    _ => p.to_owned(),
                })
                .collect();
            match fragment {
                Some(f) => format!("{path}?{}#{f}", params.join("&")),
                None => format!("{path}?{}", params.join("&")),
            }
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Maps a sqlx error to a [`StoreError`], transient where retrying may help: the server is
/// unreachable, closed the connection, is shutting down or out of connections, the pool timed
/// out, or the transaction lost a deadlock or serialization conflict. Constraint, data and
/// syntax errors are permanent.
#[allow(clippy::needless_pass_by_value)] // by value, as `map_err` hands it over
pub(crate) fn sql_error(e: sqlx::Error) -> StoreError {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => database_error_is_transient(db.as_ref()),
        _ => false,
    };
    let corrupt = matches!(
        e,
        sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
    );
    let message = format!("sql: {e}");
    let kind = match (transient, corrupt) {
        (true, _) => StoreError::unavailable(message),
        (false, true) => StoreError::corrupt(message),
        (false, false) => StoreError::refused(message),
    };
    kind.with_cause(e)
}

fn database_error_is_transient(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // Deadlock, lock wait timeout, too many connections, server shutdown, lost connection,
        // read-only (a failover in progress), query interrupted.
        return matches!(
            my.number(),
            1213 | 1205 | 1040 | 1053 | 2006 | 2013 | 1290 | 1317 | 1927 | 1969
        );
    }
    let code = db.code().unwrap_or_default();
    // PostgreSQL SQLSTATE classes: 08 connection, 40001 serialization, 40P01 deadlock,
    // 53 insufficient resources, 55P03 lock not available, 57P0x shutdown/crash/starting up.
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code.as_ref(),
            "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "57014"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_drops_query_secrets() {
        assert_eq!(
            redact_url("mysql://u@h:3306/db?ssl-mode=required&password=hunter2&PWD=x#f"),
            "mysql://u@h:3306/db?ssl-mode=required&password=<redacted>&PWD=<redacted>#f"
        );
        assert_eq!(
            redact_url("http://a:b@h/x?token=t"),
            "http://a@h/x?token=<redacted>"
        );
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn redact_url_drops_the_password_only() {
        assert_eq!(
            redact_url("postgres://dms:s3cret@db.example:5432/dms?sslmode=require"),
            "postgres://dms@db.example:5432/dms?sslmode=require"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1:3306/test"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert_eq!(redact_url("postgres:///dms"), "postgres:///dms");
    }
}
