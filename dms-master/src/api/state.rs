//! [`ApiState`]: what the master's read and task front ends (the REST API in [`crate::api::http`],
//! the admin service in [`crate::api::admin`], the views they share in [`crate::api::views`]) read, and
//! [`BarsCache`], the cache of `/api/data/bars` answers.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use dms_common::Timestamp;
use dms_common::journal::Journal;
use dms_common::store::SharedStore;

use crate::data::import::source::ImportSummary;
use crate::pipeline::applier::{SeriesVersions, StatusCell};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::quarantine::Quarantine;
use crate::tasks::manager::TaskManager;

/// What the REST handlers and the admin service read.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: SharedStore,
    pub journal: Journal,
    pub quarantine: Quarantine,
    pub dead_letters: crate::pipeline::dead_letters::DeadLetters,
    pub backpressure: crate::pipeline::ingest::Backpressure,
    pub catalog: Catalog,
    pub applier: StatusCell,
    pub versions: SeriesVersions,
    pub imports: Arc<Mutex<Vec<ImportSummary>>>,
    pub tasks: Arc<TaskManager>,
    pub bars_cache: Arc<BarsCache>,
    /// Journals deletions.
    pub ingestor: crate::pipeline::ingest::Ingestor,
    /// Where uploaded import files are kept until their import ends.
    pub uploads_dir: std::path::PathBuf,
    /// Where `path=` imports may read, how large an upload may be.
    pub file_import: crate::data::import::file::config::FileImportConfig,
}

/// An LRU cache of `/api/data/bars` answers, each valid while its series' version is unchanged
/// (every write the store applies to a series bumps the version), bounded by entries and by
/// bytes.
#[derive(Debug)]
pub struct BarsCache {
    entries: Mutex<lru::LruCache<String, (u64, Arc<CachedAnswer>)>>,
    max_bytes: usize,
    bytes: std::sync::atomic::AtomicUsize,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// A cached answer.
#[derive(Debug)]
pub struct CachedAnswer {
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    pub(crate) next_start: Option<Timestamp>,
}

impl BarsCache {
    /// At most `capacity` answers and `max_bytes` of bodies.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        BarsCache {
            entries: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("positive"),
            )),
            max_bytes,
            bytes: Default::default(),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    pub(crate) fn get(&self, key: &str, version: u64) -> Option<Arc<CachedAnswer>> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let hit = match entries.get(key) {
            Some((v, r)) if *v == version => Some(r.clone()),
            _ => None,
        };
        let counter = if hit.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        hit
    }

    pub(crate) fn put(&self, key: String, version: u64, response: Arc<CachedAnswer>) {
        use std::sync::atomic::Ordering::Relaxed;
        let size = response.body.len();
        if size > self.max_bytes / 4 {
            return; // too big to be worth keeping
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, (_, old))) = entries.push(key, (version, response)) {
            self.bytes.fetch_sub(old.body.len(), Relaxed);
        }
        self.bytes.fetch_add(size, Relaxed);
        while self.bytes.load(Relaxed) > self.max_bytes {
            match entries.pop_lru() {
                Some((_, (_, old))) => {
                    self.bytes.fetch_sub(old.body.len(), Relaxed);
                }
                None => break,
            }
        }
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}
