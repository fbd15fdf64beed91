//! `InfluxStore`: bars in InfluxDB (1.x natively; 2.x and 3.x through `/api/v2/write` and the v1
//! compatibility `/query`).
//!
//! # Layout
//!
//! - [`InfluxStore`] (here): the [`BarStore`] implementation and its bookkeeping.
//! - `points`: reads, writes and deletes of a series' points; the per-series state.
//! - `schema`: how a bar maps to a point and back.
//! - [`client`]: HTTP, retries, transient vs permanent errors.
//! - [`line_protocol`], [`query`]: the text formats, escaped.
//!
//! # Schema
//!
//! One measurement (`bars` by default) with the tags `symbol` and `interval` and the float fields
//! open, high, low, close, volume and, when present, adj_close, turnover, open_interest; one
//! point per bar, timestamped in seconds. Writes are line protocol ([`line_protocol`]), gzip
//! compressed, in chunks of `batch_size` points; reads are InfluxQL ([`query`]) paged by time
//! (keyset: each page starts one second after the last bar of the previous one).
//!
//! # How the contract is kept on a store without transactions
//!
//! - Counts: an upsert first reads the stored bars in the time span of the batch (one query per
//!   series, skipped when the span lies outside the series) and compares canonically
//!   ([`digest::same_bar`]), so inserted / updated / unchanged are exact and only changed or new
//!   bars are written.
//! - Removed fields: writing a point over an existing one keeps the fields the new point lacks,
//!   so a bar rewritten without an optional field the stored bar has is deleted first (InfluxQL
//!   `DELETE ... WHERE time = ...`). `delete` and `replace_range` use `DELETE` over the range; a
//!   replace deletes then writes, so a reader may see the range empty for a moment.
//! - Overview: kept in memory per series (count, first, last, digest), built at open from three
//!   `GROUP BY symbol, interval` aggregates (count, first, last) and updated from what each
//!   upsert, delete and replace knows exactly. A series' digest is computed lazily by one read of
//!   that series on the first `overview` after open, then maintained bar by bar. A write that
//!   fails halfway marks its series for a reload (one read) before it is next used. Writers are
//!   serialized by the lock over this state; the state is exact only while this store is the
//!   server's only writer of the measurement.
//! - Errors: connection errors and 5xx answers are retried inside the call (5 attempts, doubling
//!   delay from 100 ms), then reported as transient; 4xx answers (a field type conflict, a
//!   partial write with its dropped points) and failed statements are permanent.
//! - Reads: InfluxDB keeps each field apart, so a read racing a write can catch a point with
//!   some fields missing; such a page is read again (a few times, then a transient error).
//!   A page the server cut short at its `max-row-limit` is followed by the next one.
//! - Bucket digests are computed from reads (the trait's default): `maintained_digests` is false.

pub mod client;
pub mod line_protocol;
mod points;
pub mod query;
mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

pub use client::{InfluxClient, InfluxTarget, QuerySeries, StatementResult};
use points::{Chunks, Overview, Points, SeriesState, create_database};
pub use schema::FIELDS;
use schema::{bars_of, compare, loses_a_field, series_tags};

use super::digest::{self, Digest};
use super::{
    BarStore, BarStream, Capabilities, ReplaceStats, Result, SeriesOverview, StoreError,
    UpsertStats, check_in_range,
};
use crate::bar::{Bar, SeriesBars, SeriesKey};
use crate::time::{TimeRange, Timestamp};

/// How to reach and lay out the store.
#[derive(Debug, Clone)]
pub struct InfluxOptions {
    /// The server, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    pub target: InfluxTarget,
    /// The measurement holding the bars.
    pub measurement: String,
    /// Points per write request.
    pub batch_size: usize,
    /// The shard duration of a retention policy created at open (v1), an InfluxQL duration such
    /// as `52w`.
    pub shard_duration: String,
}

/// The InfluxDB bar store. See the module documentation.
#[derive(Debug)]
pub struct InfluxStore {
    inner: Arc<Points>,
    /// Held by every writer for its whole write, and by `overview`.
    state: tokio::sync::Mutex<Overview>,
}

/// Whether `text` is an InfluxQL shard duration DMS accepts (`52w`, `30d`, `168h`).
pub fn valid_shard_duration(text: &str) -> bool {
    text.strip_suffix(['h', 'd', 'w'])
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One series of a batch, compared with what is stored and ready to write.
#[derive(Debug)]
struct Plan {
    key: SeriesKey,
    stats: UpsertStats,
    lo: Timestamp,
    hi: Timestamp,
    stored: BTreeMap<Timestamp, Bar>,
    changed: Vec<Bar>,
    losing_fields: Vec<Timestamp>,
}

impl InfluxStore {
    /// Connects, creates the database and retention policy when missing (v1; a v2 bucket must
    /// exist), and loads the overview of the stored series.
    pub async fn open(options: InfluxOptions) -> Result<Self> {
        if !valid_shard_duration(&options.shard_duration) {
            return Err(StoreError::refused(format!(
                "shard duration {:?}: expected a number followed by h, d or w, e.g. 52w",
                options.shard_duration
            )));
        }
        let client = InfluxClient::new(&options.url, options.target.clone())?;
        client.ping().await?;
        if let InfluxTarget::V1 {
            database,
            retention_policy,
            ..
        } = &options.target
        {
            create_database(&client, database, retention_policy, &options.shard_duration).await?;
        }
        let store = InfluxStore {
            inner: Arc::new(Points {
                client,
                measurement: options.measurement,
                batch_size: options.batch_size.max(1),
            }),
            state: tokio::sync::Mutex::new(Overview::default()),
        };
        let series = store.inner.load_overview().await?;
        store.state.lock().await.series = series;
        Ok(store)
    }

    /// The HTTP client, for statements beyond the bar API (administration, tests).
    pub fn client(&self) -> &InfluxClient {
        &self.inner.client
    }

    /// Brings a stale series' state back in line with the server.
    async fn refresh(&self, state: &mut Overview, key: &SeriesKey) -> Result<()> {
        if state.stale.contains(key) {
            self.inner.reload(&mut state.series, key).await?;
            state.stale.remove(key);
        }
        Ok(())
    }

    /// What writing `sb` takes: the stored bars of its span, compared (its points are added
    /// to `chunks`).
    async fn plan_series(
        &self,
        state: &mut Overview,
        sb: &SeriesBars,
        chunks: &mut Chunks,
    ) -> Result<Option<Plan>> {
        let key = &sb.key;
        if sb.bars.is_empty() {
            return Ok(None);
        }
        self.refresh(state, key).await?;
        let lo = sb.bars.iter().map(|b| b.ts).min().expect("non-empty");
        let hi = sb.bars.iter().map(|b| b.ts).max().expect("non-empty");
        let stored = match state.series.get(key) {
            Some(s) if lo <= s.last && hi >= s.first => {
                self.inner
                    .read_map(key, TimeRange::new(lo, Timestamp(hi.0.saturating_add(1))))
                    .await?
            }
            _ => BTreeMap::new(),
        };
        let (stats, fin) = compare(&stored, &sb.bars);
        let changed: Vec<Bar> = fin
            .values()
            .filter(|b| !stored.get(&b.ts).is_some_and(|s| digest::same_bar(s, b)))
            .copied()
            .collect();
        self.inner.encode_into(chunks, key, changed.iter())?;
        let losing_fields: Vec<Timestamp> = changed
            .iter()
            .filter(|b| stored.get(&b.ts).is_some_and(|s| loses_a_field(s, b)))
            .map(|b| b.ts)
            .collect();
        Ok(Some(Plan {
            key: key.clone(),
            stats,
            lo,
            hi,
            stored,
            changed,
            losing_fields,
        }))
    }

    /// Counts, bounds and digest of a series after its plan was written.
    fn apply_plan(state: &mut Overview, plan: &Plan) {
        if plan.changed.is_empty() {
            return;
        }
        let entry = state.series.entry(plan.key.clone()).or_insert(SeriesState {
            count: 0,
            first: plan.lo,
            last: plan.hi,
            digest: Some(Digest::default()),
        });
        entry.first = entry.first.min(plan.lo);
        entry.last = entry.last.max(plan.hi);
        entry.count += plan.stats.inserted;
        if let Some(d) = &mut entry.digest {
            for b in &plan.changed {
                if let Some(old) = plan.stored.get(&b.ts) {
                    d.remove(old);
                }
                d.add(b);
            }
        }
    }

    /// Writes the series of `batch` (each series once) with their points packed into shared
    /// requests; on a failure every series of the batch is read again before its next use.
    async fn write_batch(&self, state: &mut Overview, batch: &[SeriesBars]) -> Result<UpsertStats> {
        let mut chunks = Chunks::default();
        let mut plans = Vec::with_capacity(batch.len());
        for sb in batch {
            if let Some(plan) = self.plan_series(state, sb, &mut chunks).await? {
                plans.push(plan);
            }
        }
        let result = async {
            for plan in &plans {
                self.inner
                    .delete_points(&plan.key, &plan.losing_fields)
                    .await?;
            }
            self.inner.write_chunks(&chunks.finish()).await
        }
        .await;
        if let Err(e) = result {
            for plan in &plans {
                state.stale.insert(plan.key.clone());
            }
            return Err(e);
        }
        let mut total = UpsertStats::default();
        for plan in &plans {
            Self::apply_plan(state, plan);
            total.add(plan.stats);
        }
        Ok(total)
    }

    /// After bars in `range` of `key` went (and `written` bars came), fixes the series' count,
    /// bounds and digest; `removed` are the bars that went.
    async fn after_removal(
        &self,
        state: &mut Overview,
        key: &SeriesKey,
        range: TimeRange,
        removed: &BTreeMap<Timestamp, Bar>,
        written: &BTreeMap<Timestamp, Bar>,
    ) -> Result<()> {
        let Some(s) = state.series.get_mut(key) else {
            if !written.is_empty() {
                state.stale.insert(key.clone());
            }
            return Ok(());
        };
        s.count = s.count.saturating_sub(removed.len() as u64) + written.len() as u64;
        if let Some(d) = &mut s.digest {
            removed.values().for_each(|b| d.remove(b));
            written.values().for_each(|b| d.add(b));
        }
        if s.count == 0 {
            state.series.remove(key);
        } else if range.contains(s.first) || range.contains(s.last) {
            let (first, last) = self.inner.bounds(key).await?;
            s.first = first;
            s.last = last;
        }
        Ok(())
    }
}

#[async_trait]
impl BarStore for InfluxStore {
    fn backend(&self) -> &'static str {
        "influxdb"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            exact_upsert_counts: true,
            atomic_batches: false,
            maintained_digests: false,
        }
    }

    async fn upsert(&self, batch: &[SeriesBars]) -> Result<UpsertStats> {
        let mut state = self.state.lock().await;
        // Series of one batch share write requests. A series named twice is written in turns,
        // so that its second part is compared with what the first wrote.
        let mut total = UpsertStats::default();
        let mut start = 0;
        let mut seen = std::collections::HashSet::new();
        for (i, sb) in batch.iter().enumerate() {
            if !seen.insert(&sb.key) {
                total.add(self.write_batch(&mut state, &batch[start..i]).await?);
                start = i;
                seen.clear();
                seen.insert(&sb.key);
            }
        }
        total.add(self.write_batch(&mut state, &batch[start..]).await?);
        Ok(total)
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let inner = self.inner.clone();
        let key = series.clone();
        let page_size = page_size.max(1);
        futures::stream::try_unfold(Some(range.start), move |start| {
            let inner = inner.clone();
            let key = key.clone();
            async move {
                let Some(start) = start else {
                    return Ok(None);
                };
                let (page, more) = inner
                    .read_page(&key, TimeRange::new(start, range.end), page_size)
                    .await?;
                let Some(last) = page.last() else {
                    return Ok(None);
                };
                let next = more.then(|| Timestamp(last.ts.0 + 1));
                Ok(Some((page, next)))
            }
        })
        .boxed()
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        let q = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY time DESC LIMIT 1",
            self.inner.select_fields(),
            self.inner.qualified_measurement(),
            query::series_in_range(&series_tags(series), TimeRange::all()),
        );
        let results = self.inner.client.query(&q).await?;
        Ok(bars_of(results.into_iter().next().unwrap_or_default())?
            .into_iter()
            .next())
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        let mut state = self.state.lock().await;
        let pending: Vec<SeriesKey> = state
            .series
            .iter()
            .filter(|(_, s)| s.digest.is_none())
            .map(|(k, _)| k.clone())
            .chain(state.stale.iter().cloned())
            .collect();
        for key in pending {
            self.inner.reload(&mut state.series, &key).await?;
            state.stale.remove(&key);
        }
        Ok(state
            .series
            .iter()
            .map(|(key, s)| SeriesOverview {
                key: key.clone(),
                count: s.count,
                first: s.first,
                last: s.last,
                digest: s.digest.unwrap_or_default(),
            })
            .collect())
    }

    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64> {
        let mut state = self.state.lock().await;
        self.refresh(&mut state, series).await?;
        if range.is_empty() || !state.series.contains_key(series) {
            return Ok(0);
        }
        let removed = self.inner.read_map(series, range).await?;
        if removed.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.inner.delete_range(series, range).await {
            state.stale.insert(series.clone());
            return Err(e);
        }
        self.after_removal(&mut state, series, range, &removed, &BTreeMap::new())
            .await
            .inspect_err(|_| {
                state.stale.insert(series.clone());
            })?;
        Ok(removed.len() as u64)
    }

    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        check_in_range(series, range, &bars)?;
        let mut state = self.state.lock().await;
        self.refresh(&mut state, series).await?;
        let stored = if state.series.contains_key(series) {
            self.inner.read_map(series, range).await?
        } else {
            BTreeMap::new()
        };
        let (written, fin) = compare(&stored, &bars);
        let removed = stored.keys().filter(|ts| !fin.contains_key(ts)).count() as u64;
        let lines = self.inner.encode(series, fin.values())?;
        let result = async {
            if !stored.is_empty() {
                self.inner.delete_range(series, range).await?;
            }
            self.inner.write_chunks(&lines).await
        }
        .await;
        if let Err(e) = result {
            state.stale.insert(series.clone());
            return Err(e);
        }
        if !state.series.contains_key(series) {
            // A new series: its state is what was written.
            if let (Some(first), Some(last)) = (fin.keys().next(), fin.keys().next_back()) {
                let mut d = Digest::default();
                fin.values().for_each(|b| d.add(b));
                state.series.insert(
                    series.clone(),
                    SeriesState {
                        count: fin.len() as u64,
                        first: *first,
                        last: *last,
                        digest: Some(d),
                    },
                );
            }
        } else {
            if let (Some(s), Some(first), Some(last)) = (
                state.series.get_mut(series),
                fin.keys().next(),
                fin.keys().next_back(),
            ) {
                s.first = s.first.min(*first);
                s.last = s.last.max(*last);
            }
            self.after_removal(&mut state, series, range, &stored, &fin)
                .await
                .inspect_err(|_| {
                    state.stale.insert(series.clone());
                })?;
        }
        Ok(ReplaceStats { written, removed })
    }

    async fn check(&self) -> Result<()> {
        self.inner.client.ping().await
    }
}
