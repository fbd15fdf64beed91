//! `Points`: reading, writing and deleting the points of one series over the client, and the
//! per-series state (`Overview`) the store keeps: loaded from aggregates at open, recomputed
//! from a full read of a series when needed.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{FIELDS, bar_fields, bars_of, series_key_of, series_tags};
use super::{InfluxClient, line_protocol, query};
use crate::bar::{Bar, SeriesKey};
use crate::store::digest::Digest;
use crate::store::{DEFAULT_PAGE_SIZE, Result, StoreError};
use crate::time::{TimeRange, Timestamp};

/// Times a page holding a point caught halfway through its write is read again.
const INCOMPLETE_READ_RETRIES: u32 = 5;

/// DELETE statements sent in one request.
const DELETES_PER_REQUEST: usize = 200;

/// What the store knows of one series.
#[derive(Debug, Clone, Copy)]
pub(super) struct SeriesState {
    pub(super) count: u64,
    pub(super) first: Timestamp,
    pub(super) last: Timestamp,
    /// `None` until computed by a read of the series.
    pub(super) digest: Option<Digest>,
}

/// The per-series state of the store, behind its writer lock.
#[derive(Debug, Default)]
pub(super) struct Overview {
    pub(super) series: BTreeMap<SeriesKey, SeriesState>,
    /// Series whose state may not match the server (a write failed halfway): re-read before use.
    pub(super) stale: BTreeSet<SeriesKey>,
}

/// The points of the bars measurement on one server.
#[derive(Debug)]
pub(super) struct Points {
    pub(super) client: InfluxClient,
    pub(super) measurement: String,
    pub(super) batch_size: usize,
}

/// Creates the database (a no-op when it exists) and the retention policy when missing, as the
/// default policy, kept forever, with `shard_duration` shards.
/// Line protocol being packed into write requests.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    chunks: Vec<String>,
    lines: String,
    points: usize,
}

impl Chunks {
    /// The requests' bodies.
    pub(super) fn finish(mut self) -> Vec<String> {
        if !self.lines.is_empty() {
            self.chunks.push(self.lines);
        }
        self.chunks
    }
}

pub(super) async fn create_database(
    client: &InfluxClient,
    database: &str,
    retention_policy: &str,
    shard_duration: &str,
) -> Result<()> {
    let db = query::ident(database);
    let results = client
        .query(&format!(
            "CREATE DATABASE {db}; SHOW RETENTION POLICIES ON {db}"
        ))
        .await?;
    let exists = results.get(1).is_some_and(|r| {
        r.series.iter().any(|s| {
            s.values
                .iter()
                .any(|row| row.first().and_then(|v| v.as_str()) == Some(retention_policy))
        })
    });
    if !exists {
        client
            .query(&format!(
                "CREATE RETENTION POLICY {} ON {db} DURATION INF REPLICATION 1 \
                 SHARD DURATION {shard_duration} DEFAULT",
                query::ident(retention_policy)
            ))
            .await?;
    }
    Ok(())
}

impl Points {
    pub(super) fn qualified_measurement(&self) -> String {
        query::measurement(self.client.retention_policy(), &self.measurement)
    }

    pub(super) fn select_fields(&self) -> String {
        FIELDS.map(query::ident).join(", ")
    }

    /// Line protocol for `bars` of `key`, in requests of at most `batch_size` points.
    pub(super) fn encode<'a>(
        &self,
        key: &SeriesKey,
        bars: impl Iterator<Item = &'a Bar>,
    ) -> Result<Vec<String>> {
        let mut chunks = Chunks::default();
        self.encode_into(&mut chunks, key, bars)?;
        Ok(chunks.finish())
    }

    /// Adds the line protocol for `bars` of `key` to `out`, so that the points of several
    /// series share requests.
    pub(super) fn encode_into<'a>(
        &self,
        out: &mut Chunks,
        key: &SeriesKey,
        bars: impl Iterator<Item = &'a Bar>,
    ) -> Result<()> {
        let tags = series_tags(key);
        for b in bars {
            if !query::storable(b.ts) {
                return Err(StoreError::refused(format!(
                    "{key}: bar at {} is outside the times InfluxDB stores",
                    b.ts.0
                )));
            }
            line_protocol::encode_point(
                &mut out.lines,
                &self.measurement,
                &tags,
                &bar_fields(b),
                b.ts.0,
            )
            .map_err(|e| StoreError::refused(format!("{key} at {}: {e}", b.ts.0)))?;
            out.points += 1;
            if out.points == self.batch_size {
                out.chunks.push(std::mem::take(&mut out.lines));
                out.points = 0;
            }
        }
        Ok(())
    }

    pub(super) async fn write_chunks(&self, chunks: &[String]) -> Result<()> {
        for chunk in chunks {
            self.client.write(chunk).await?;
        }
        Ok(())
    }

    /// Deletes the points of `key` in `range`: InfluxQL `DELETE` on 1.x, `/api/v2/delete` on
    /// 2.x (whose `/query` only reads).
    pub(super) async fn delete_range(&self, key: &SeriesKey, range: TimeRange) -> Result<()> {
        if self.client.is_v2() {
            let predicate = query::delete_predicate(&self.measurement, &series_tags(key));
            return self.client.delete_v2(range, &predicate).await;
        }
        self.client
            .query(&self.delete_statement(key, range))
            .await
            .map(|_| ())
    }

    /// Deletes single points of `key`.
    pub(super) async fn delete_points(&self, key: &SeriesKey, times: &[Timestamp]) -> Result<()> {
        if self.client.is_v2() {
            for ts in times {
                self.delete_range(key, TimeRange::new(*ts, Timestamp(ts.0 + 1)))
                    .await?;
            }
            return Ok(());
        }
        for part in times.chunks(DELETES_PER_REQUEST) {
            let statements: Vec<String> = part
                .iter()
                .map(|ts| self.delete_statement(key, TimeRange::new(*ts, Timestamp(ts.0 + 1))))
                .collect();
            self.client.query(&statements.join("; ")).await?;
        }
        Ok(())
    }

    pub(super) fn delete_statement(&self, key: &SeriesKey, range: TimeRange) -> String {
        // DELETE takes no retention policy: it applies to the whole database.
        format!(
            "DELETE FROM {} WHERE {}",
            query::ident(&self.measurement),
            query::series_in_range(&series_tags(key), range)
        )
    }

    /// One page: at most `limit` bars of `key` in `range`, in ts order, and whether more may
    /// follow (a full page, or one the server cut short at its own row limit).
    pub(super) async fn read_page(
        &self,
        key: &SeriesKey,
        range: TimeRange,
        limit: usize,
    ) -> Result<(Vec<Bar>, bool)> {
        if range.is_empty() || range.start.0 > query::MAX_SECS || range.end.0 <= query::MIN_SECS {
            return Ok((Vec::new(), false));
        }
        let q = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY time ASC LIMIT {}",
            self.select_fields(),
            self.qualified_measurement(),
            query::series_in_range(&series_tags(key), range),
            limit.max(1)
        );
        let mut attempt = 0;
        loop {
            let result = self
                .client
                .query(&q)
                .await?
                .into_iter()
                .next()
                .unwrap_or_default();
            let cut = result.partial || result.series.iter().any(|s| s.partial);
            match bars_of(result) {
                Ok(bars) => {
                    let more = !bars.is_empty() && (cut || bars.len() >= limit);
                    return Ok((bars, more));
                }
                // A point caught halfway through its write: read again once it is whole.
                Err(e) if e.is_transient() && attempt < INCOMPLETE_READ_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every bar of `key` in `range`, by time.
    pub(super) async fn read_map(
        &self,
        key: &SeriesKey,
        range: TimeRange,
    ) -> Result<BTreeMap<Timestamp, Bar>> {
        let mut out = BTreeMap::new();
        let mut start = range.start;
        loop {
            let (page, more) = self
                .read_page(key, TimeRange::new(start, range.end), DEFAULT_PAGE_SIZE)
                .await?;
            let Some(last) = page.last() else { break };
            start = Timestamp(last.ts.0 + 1);
            out.extend(page.into_iter().map(|b| (b.ts, b)));
            if !more {
                break;
            }
        }
        Ok(out)
    }

    /// The first and last ts of a series that has bars.
    pub(super) async fn bounds(&self, key: &SeriesKey) -> Result<(Timestamp, Timestamp)> {
        let cond = query::series_in_range(&series_tags(key), TimeRange::all());
        let from = self.qualified_measurement();
        let results = self
            .client
            .query(&format!(
                "SELECT first(\"close\") FROM {from} WHERE {cond}; \
                 SELECT last(\"close\") FROM {from} WHERE {cond}"
            ))
            .await?;
        let time_of = |i: usize| {
            results
                .get(i)
                .and_then(|r| r.series.first())
                .and_then(|s| s.values.first())
                .and_then(|row| row.first())
                .and_then(|v| v.as_i64())
                .map(Timestamp)
                .ok_or_else(|| StoreError::refused(format!("{key}: no first/last bar")))
        };
        Ok((time_of(0)?, time_of(1)?))
    }

    /// Recomputes a series' state from all its bars.
    pub(super) async fn reload(
        &self,
        series: &mut BTreeMap<SeriesKey, SeriesState>,
        key: &SeriesKey,
    ) -> Result<()> {
        let bars = self.read_map(key, TimeRange::all()).await?;
        match (bars.keys().next(), bars.keys().next_back()) {
            (Some(first), Some(last)) => {
                let mut d = Digest::default();
                bars.values().for_each(|b| d.add(b));
                series.insert(
                    key.clone(),
                    SeriesState {
                        count: bars.len() as u64,
                        first: *first,
                        last: *last,
                        digest: Some(d),
                    },
                );
            }
            _ => {
                series.remove(key);
            }
        }
        Ok(())
    }

    /// Count, first and last of every series, from three aggregates grouped by series.
    pub(super) async fn load_overview(&self) -> Result<BTreeMap<SeriesKey, SeriesState>> {
        let from = self.qualified_measurement();
        let all = query::series_in_range(&[], TimeRange::all());
        let group = "GROUP BY \"symbol\", \"interval\"";
        let results = self
            .client
            .query(&format!(
                "SELECT count(\"close\") FROM {from} WHERE {all} {group}; \
                 SELECT first(\"close\") FROM {from} WHERE {all} {group}; \
                 SELECT last(\"close\") FROM {from} WHERE {all} {group}"
            ))
            .await?;
        let mut out = BTreeMap::new();
        let per_series = |i: usize, col: usize| -> Vec<(SeriesKey, i64)> {
            let Some(r) = results.get(i) else {
                return Vec::new();
            };
            r.series
                .iter()
                .filter_map(|s| {
                    let key = series_key_of(&s.tags)?;
                    let v = s.values.first()?.get(col)?.as_i64()?;
                    Some((key, v))
                })
                .collect()
        };
        for (key, count) in per_series(0, 1) {
            if count > 0 {
                out.insert(
                    key,
                    SeriesState {
                        count: count as u64,
                        first: Timestamp(i64::MIN),
                        last: Timestamp(i64::MIN),
                        digest: None,
                    },
                );
            }
        }
        for (key, t) in per_series(1, 0) {
            if let Some(s) = out.get_mut(&key) {
                s.first = Timestamp(t);
            }
        }
        for (key, t) in per_series(2, 0) {
            if let Some(s) = out.get_mut(&key) {
                s.last = Timestamp(t);
            }
        }
        Ok(out)
    }
}
