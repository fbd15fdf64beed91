//! The PostgreSQL statements of the SQL write path ([`SqlWrite`]): row locks, reads of the
//! stored span, bars by `INSERT .. SELECT FROM UNNEST(arrays)` per chunk, and bars wholly
//! before or after the stored span, of every series of a batch together, by one
//! `COPY .. FROM STDIN` (each price in its shortest text that reads back as the same double).

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};

use crate::store::digest::BucketDigest;
use crate::store::sql::{
    BAR_COLUMNS, SeriesRow, SqlScrub, SqlWrite, bar_from_row, bucket_from_row, parse_key,
    series_from_row, sql_error,
};
use crate::store::{Bar, Result, SeriesKey, StoreError};

/// Rows per `INSERT .. UNNEST` statement.
const CHUNK_ROWS: usize = 20_000;

/// New bars of one write from which they go by `COPY` instead of `INSERT`.
const COPY_MIN_ROWS: usize = 500;

/// Bytes per `COPY` message.
const COPY_CHUNK_BYTES: usize = 1 << 20;

/// One write transaction.
pub(crate) struct PgWrite(pub(super) Transaction<'static, Postgres>);

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
            return Err(StoreError::refused(format!(
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
