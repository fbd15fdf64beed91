//! Digest upkeep of the SQLite store: the changes of one write to each bucket's count and hash
//! sum, applied in the write's transaction, and the one-time rebuild of the digests of a file
//! written before they were kept.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{BAR_COLUMNS, bar_from_row, parse_key};
use crate::interval::Interval;
use crate::store::digest::{self, Digest, DigestBucketing, DigestDelta};
use crate::store::{Bar, Result};

/// Digest changes of one series in one transaction, by bucket.
#[derive(Debug)]
pub(super) struct BucketDeltas {
    bucketing: DigestBucketing,
    buckets: BTreeMap<i64, DigestDelta>,
}

impl BucketDeltas {
    pub(super) fn new(interval: Interval) -> Self {
        BucketDeltas {
            bucketing: DigestBucketing::for_interval(interval),
            buckets: BTreeMap::new(),
        }
    }

    pub(super) fn add(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().add(bar);
    }

    pub(super) fn remove(&mut self, bar: &Bar) {
        let b = self.bucketing.bucket_of(bar.ts).0;
        self.buckets.entry(b).or_default().remove(bar);
    }

    /// Writes the changes into `bucket_digests` and the series' total.
    pub(super) fn apply(self, tx: &Transaction<'_>, id: i64) -> Result<()> {
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
pub(super) fn migrate_digests(conn: &mut Connection) -> Result<()> {
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
