//! Running the suite on a read-only store (a backup, a replica read from outside): the cases
//! write to a writable store, and every read goes to the read-only store that [`Publish`]
//! makes of what the writable one holds at that moment, made again at the first read after
//! each write. The writes' answers (counts) are the writable store's; every answer the cases
//! read back (bars, pages, the latest bar, the overview, digests) is the read-only store's, so
//! the suite holds it to the same expectations as every other backend.

use std::sync::Arc;

use async_trait::async_trait;
use dms_common::store::digest::BucketDigest;
use dms_common::store::{
    BarStore, BarStream, Capabilities, ReplaceStats, Result, SeriesOverview, SharedStore,
    UpsertStats,
};
use dms_common::{Bar, SeriesBars, SeriesKey, TimeRange, Timestamp};
use futures::{StreamExt, TryStreamExt};

/// Makes the read-only store under test from what a writable store holds.
#[async_trait]
pub trait Publish: Send + Sync + std::fmt::Debug + 'static {
    /// A read-only store holding exactly what `written` holds now.
    async fn publish(&self, written: &SharedStore) -> SharedStore;
}

/// A writable store and the read-only store published from it, as one [`BarStore`].
#[derive(Debug, Clone)]
pub struct Published<P> {
    inner: Arc<Inner<P>>,
}

#[derive(Debug)]
struct Inner<P> {
    written: SharedStore,
    publish: P,
    /// The store published since the last write, made at the first read after it.
    current: tokio::sync::Mutex<Option<SharedStore>>,
}

impl<P: Publish> Published<P> {
    /// Writes go to `written`; reads to what `publish` makes of it.
    pub fn new(written: SharedStore, publish: P) -> Published<P> {
        Published {
            inner: Arc::new(Inner {
                written,
                publish,
                current: tokio::sync::Mutex::new(None),
            }),
        }
    }
}

impl<P: Publish> Inner<P> {
    /// The read-only store holding what was written so far.
    async fn reader(&self) -> SharedStore {
        let mut current = self.current.lock().await;
        if let Some(store) = &*current {
            return store.clone();
        }
        let store = self.publish.publish(&self.written).await;
        *current = Some(store.clone());
        store
    }

    /// A write happened: the next read publishes again.
    async fn wrote(&self) {
        *self.current.lock().await = None;
    }
}

#[async_trait]
impl<P: Publish> BarStore for Published<P> {
    fn backend(&self) -> &'static str {
        "published"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.written.capabilities()
    }

    async fn upsert(&self, batch: &[SeriesBars]) -> Result<UpsertStats> {
        let stats = self.inner.written.upsert(batch).await;
        self.inner.wrote().await;
        stats
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let (inner, series) = (self.inner.clone(), series.clone());
        futures::stream::once(async move {
            let reader = inner.reader().await;
            Ok::<_, dms_common::store::StoreError>(reader.read_paged(&series, range, page_size))
        })
        .try_flatten()
        .boxed()
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        self.inner.reader().await.latest(series).await
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        self.inner.reader().await.overview().await
    }

    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64> {
        let n = self.inner.written.delete(series, range).await;
        self.inner.wrote().await;
        n
    }

    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        let stats = self.inner.written.replace_range(series, range, bars).await;
        self.inner.wrote().await;
        stats
    }

    async fn bucket_digests(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<BucketDigest>> {
        self.inner
            .reader()
            .await
            .bucket_digests(series, range)
            .await
    }

    async fn scrub(&self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        let fixed = self.inner.written.scrub().await;
        self.inner.wrote().await;
        fixed
    }

    async fn check(&self) -> Result<()> {
        self.inner.reader().await.check().await
    }
}
