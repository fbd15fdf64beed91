//! The `BarStore` seam: where bars live, whatever the backend.
//!
//! Every backend (`sqlite`, `postgres`, `mysql`, `influx`) implements the same
//! async trait and passes the same conformance suite (the `dms-store-conformance` crate, run by
//! each backend's tests).
//!
//! # What every backend guarantees
//!
//! - Bars are keyed by (series, ts). [`BarStore::upsert`] is idempotent: writing the same bars
//!   twice changes nothing. It returns only after the batch is durable.
//! - Reads return exactly what was written (every f64 bit-exact, optional fields present or
//!   absent as written), half-open `[start, end)`, ordered by ts, streamed in pages so a reader
//!   never holds a whole series in memory.
//! - [`BarStore::delete`] removes a range; "delete a range, then write bars" leaves exactly those
//!   bars, and so does [`BarStore::replace_range`] (a bar rewritten without an optional field
//!   has no such field afterwards).
//! - [`BarStore::overview`] is exact: its counts equal the bars stored, however often bars were
//!   re-sent; it is answered from counts the backend keeps (or the daemon's catalog), never by a
//!   full scan per call.
//! - [`BarStore::bucket_digests`] and the digest in [`SeriesOverview`] equal those of any other
//!   backend holding the same bars ([`digest`]), so a master and a replica with different
//!   backends can compare their data series by series and bucket by bucket.
//! - Errors tell transient from permanent ([`StoreError::is_transient`]): a transient one may
//!   succeed if retried (the server is down, busy, locked); a permanent one will not (the data or
//!   the request cannot be handled) and the caller sets the entry aside instead of retrying it.
//!
//! # What a backend declares ([`Capabilities`])
//!
//! - `exact_upsert_counts`: `upsert` tells inserted, updated and unchanged bars apart. Without
//!   it, the counts add up to the bars sent but may report changed or unchanged bars as
//!   inserted.
//! - `atomic_batches`: a batch of several series is applied all or nothing.
//! - `maintained_digests`: digests are kept current on write, so reading them is cheap; without
//!   it they are computed from the bars on every call.

pub mod config;
pub mod digest;
pub mod influx;
pub mod mysql;
pub mod open;
pub mod postgres;
pub mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::bar::{Bar, SeriesBars, SeriesKey};
use crate::time::{TimeRange, Timestamp};
pub use digest::{BucketDigest, Digest, DigestBucketing};
pub use open::open_store;

/// Default number of bars in one page of a streamed read.
pub const DEFAULT_PAGE_SIZE: usize = 10_000;

/// What a backend guarantees beyond the contract every backend keeps (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// `upsert` reports inserted / updated / unchanged exactly.
    pub exact_upsert_counts: bool,
    /// A multi-series batch is applied all or nothing.
    pub atomic_batches: bool,
    /// Digests are kept current on write rather than computed from the bars on each call.
    pub maintained_digests: bool,
}

impl Capabilities {
    /// Nothing beyond the contract (a store read through files or another service).
    pub const NONE: Capabilities = Capabilities {
        exact_upsert_counts: false,
        atomic_batches: false,
        maintained_digests: false,
    };
}

/// What an upsert did, bar by bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpsertStats {
    /// Bars that were not stored before.
    pub inserted: u64,
    /// Bars that replaced a stored bar with different values.
    pub updated: u64,
    /// Bars identical to the stored ones.
    pub unchanged: u64,
}

impl UpsertStats {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: UpsertStats) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }

    /// All bars the upsert saw.
    pub fn total(&self) -> u64 {
        self.inserted + self.updated + self.unchanged
    }
}

/// What a [`BarStore::replace_range`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaceStats {
    /// The given bars, as an upsert reports them.
    pub written: UpsertStats,
    /// Bars in the range that were not among the given ones, removed.
    pub removed: u64,
}

/// What the store holds for one series.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeriesOverview {
    pub key: SeriesKey,
    pub count: u64,
    pub first: Timestamp,
    pub last: Timestamp,
    /// The digest of every bar of the series (the sum of its bucket digests).
    #[serde(skip)]
    pub digest: Digest,
}

/// A page of bars of one series, from [`BarStore::read_many`].
pub type SeriesPage = (SeriesKey, Vec<Bar>);

/// A stream of pages of bars, in ts order.
pub type BarStream = BoxStream<'static, Result<Vec<Bar>, StoreError>>;

/// A stream of pages of bars of several series: all pages of one series, then the next.
pub type SeriesPageStream = BoxStream<'static, Result<SeriesPage, StoreError>>;

/// The error a backend's own client raised, kept as the source of a [`StoreError`].
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed: what happened, whatever the backend, with the backend's own
/// error kept as its [`cause`](StoreError::cause) where there is one. The message already
/// says what the cause says, so the cause is not also handed out as the error's `source()`
/// (an error chain would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached, is busy, locked, shutting down or out of room: the same
    /// operation may succeed later.
    #[error("store unavailable: {message}")]
    Unavailable {
        message: String,
        cause: Option<BackendError>,
    },
    /// The operation met another writer (a deadlock, a serialization failure): trying it again
    /// succeeds.
    #[error("store conflict: {message}")]
    Conflict {
        message: String,
        cause: Option<BackendError>,
    },
    /// The backend refused the request or its data (a bad address or setting, a constraint, a
    /// type conflict, a read-only store): retrying will not help.
    #[error("store refused: {message}")]
    Refused {
        message: String,
        cause: Option<BackendError>,
    },
    /// What the store holds cannot be read as bars (a bad symbol, a damaged row, file or
    /// answer): retrying will not help.
    #[error("store data corrupt: {message}")]
    Corrupt {
        message: String,
        cause: Option<BackendError>,
    },
}

impl StoreError {
    /// [`StoreError::Unavailable`] without a source.
    pub fn unavailable(message: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            message: message.into(),
            cause: None,
        }
    }

    /// [`StoreError::Conflict`] without a source.
    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError::Conflict {
            message: message.into(),
            cause: None,
        }
    }

    /// [`StoreError::Refused`] without a source.
    pub fn refused(message: impl Into<String>) -> StoreError {
        StoreError::Refused {
            message: message.into(),
            cause: None,
        }
    }

    /// [`StoreError::Corrupt`] without a source.
    pub fn corrupt(message: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            message: message.into(),
            cause: None,
        }
    }

    /// Unavailable when `transient`, refused otherwise.
    pub fn classified(transient: bool, message: impl Into<String>) -> StoreError {
        match transient {
            true => StoreError::unavailable(message),
            false => StoreError::refused(message),
        }
    }

    /// The same error with `error`, the backend's own, as its cause.
    pub fn with_cause(mut self, error: impl Into<BackendError>) -> StoreError {
        let (StoreError::Unavailable { cause, .. }
        | StoreError::Conflict { cause, .. }
        | StoreError::Refused { cause, .. }
        | StoreError::Corrupt { cause, .. }) = &mut self;
        *cause = Some(error.into());
        self
    }

    /// The backend's own error behind this one, when there is one.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            StoreError::Unavailable { cause, .. }
            | StoreError::Conflict { cause, .. }
            | StoreError::Refused { cause, .. }
            | StoreError::Corrupt { cause, .. } => cause.as_deref(),
        }
    }

    /// The same error with `context` before its message (`PostgreSQL store X: ...`).
    pub fn context(mut self, context: &str) -> StoreError {
        let (StoreError::Unavailable { message, .. }
        | StoreError::Conflict { message, .. }
        | StoreError::Refused { message, .. }
        | StoreError::Corrupt { message, .. }) = &mut self;
        *message = format!("{context}: {message}");
        self
    }

    /// What happened, without the kind.
    pub fn message(&self) -> &str {
        match self {
            StoreError::Unavailable { message, .. }
            | StoreError::Conflict { message, .. }
            | StoreError::Refused { message, .. }
            | StoreError::Corrupt { message, .. } => message,
        }
    }

    /// Whether the same operation may succeed later (busy, locked, unreachable, a conflict).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Conflict { .. }
        )
    }
}

/// An error of the embedded SQLite engine: unavailable when busy, locked, out of disk or I/O,
/// corrupt when the file or a value cannot be read, refused otherwise.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as Code;
        let message = format!("sqlite: {e}");
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                Code::DatabaseBusy
                | Code::DatabaseLocked
                | Code::SystemIoFailure
                | Code::DiskFull
                | Code::CannotOpen => StoreError::unavailable(message),
                Code::DatabaseCorrupt | Code::NotADatabase => StoreError::corrupt(message),
                _ => StoreError::refused(message),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::corrupt(message),
            _ => StoreError::refused(message),
        };
        kind.with_cause(e)
    }
}

/// The worker a blocking store call ran on failed (it panicked or was cancelled).
impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> StoreError {
        StoreError::unavailable(format!("store task failed: {e}")).with_cause(e)
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where bars live. See the module documentation for the contract.
#[async_trait]
pub trait BarStore: Send + Sync + std::fmt::Debug + 'static {
    /// A short name of the backend for logs and status (`sqlite`, `influxdb`, ...).
    fn backend(&self) -> &'static str;

    /// What this backend guarantees beyond the common contract.
    fn capabilities(&self) -> Capabilities;

    /// Inserts or replaces bars, all series of the batch in one transaction where the backend
    /// has them. Returns after the batch is durable.
    async fn upsert(&self, batch: &[SeriesBars]) -> Result<UpsertStats>;

    /// Bars of `series` in `range`, in ts order, in pages of at most `page_size` bars.
    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream;

    /// Bars of `series` in `range`, in ts order, in pages of [`DEFAULT_PAGE_SIZE`].
    fn read(&self, series: &SeriesKey, range: TimeRange) -> BarStream {
        self.read_paged(series, range, DEFAULT_PAGE_SIZE)
    }

    /// Bars of several series in `range`: every page of the first series, then the next.
    fn read_many(&self, series: &[SeriesKey], range: TimeRange) -> SeriesPageStream {
        let streams: Vec<SeriesPageStream> = series
            .iter()
            .map(|key| {
                let key = key.clone();
                self.read(&key, range)
                    .map_ok(move |page| (key.clone(), page))
                    .boxed()
            })
            .collect();
        futures::stream::iter(streams).flatten().boxed()
    }

    /// The bar with the highest ts of `series`, if any.
    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>>;

    /// Count, first and last ts of every series that holds at least one bar.
    async fn overview(&self) -> Result<Vec<SeriesOverview>>;

    /// Removes the bars of `series` in `range`; returns how many were removed.
    async fn delete(&self, series: &SeriesKey, range: TimeRange) -> Result<u64>;

    /// Makes `bars` exactly what `series` holds in `range`: bars in the range that are not in
    /// `bars` go, the others are upserted. Bars outside the range are an error. A backend with
    /// transactions does it in one, so readers never see the range empty, and reports exactly
    /// what changed; the default deletes then upserts (every bar counts as inserted).
    async fn replace_range(
        &self,
        series: &SeriesKey,
        range: TimeRange,
        bars: Vec<Bar>,
    ) -> Result<ReplaceStats> {
        check_in_range(series, range, &bars)?;
        let removed = self.delete(series, range).await?;
        let written = self
            .upsert(&[SeriesBars::new(series.clone(), bars)])
            .await?;
        Ok(ReplaceStats {
            written,
            removed: removed.saturating_sub(written.total()),
        })
    }

    /// The digests of the buckets of `series` that overlap `range` (whole buckets, as cut by
    /// [`DigestBucketing::for_interval`]), in order. Buckets without bars are left out. The
    /// default reads the bars and hashes them; a backend that keeps digests current answers
    /// from them, with the same result.
    async fn bucket_digests(
        &self,
        series: &SeriesKey,
        range: TimeRange,
    ) -> Result<Vec<BucketDigest>> {
        compute_bucket_digests(self, series, range).await
    }

    /// Re-reads every bar and recomputes the counts, bounds and digests the store keeps,
    /// correcting those that no longer match the bars (a file changed behind the store's back,
    /// a lost write). Returns the buckets corrected. Backends that compute digests from the bars
    /// on every call have nothing to correct.
    async fn scrub(&self) -> Result<Vec<(SeriesKey, Timestamp)>> {
        Ok(Vec::new())
    }

    /// Bytes the store's bars take on disk, where the backend can tell (its files, or its
    /// tables with their indexes); None where it cannot.
    async fn size_on_disk(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Checks that the store answers (for readiness probes).
    async fn check(&self) -> Result<()>;
}

/// A shared handle to some store.
pub type SharedStore = Arc<dyn BarStore>;

/// The bucket digests of `series` over `range`, computed from the bars `store` returns: the
/// reference every backend's [`BarStore::bucket_digests`] must equal.
pub async fn compute_bucket_digests<S: BarStore + ?Sized>(
    store: &S,
    series: &SeriesKey,
    range: TimeRange,
) -> Result<Vec<BucketDigest>> {
    let bucketing = DigestBucketing::for_interval(series.interval);
    let mut builder = digest::DigestBuilder::new(bucketing);
    let mut pages = store.read(series, bucketing.widen(range));
    while let Some(page) = pages.try_next().await? {
        for bar in &page {
            builder.push(bar);
        }
    }
    Ok(builder.finish())
}

/// The last bar of `series`, found by reading all of it: [`BarStore::latest`] for a store that
/// has no quicker way (a backup's files, a replica's read API).
pub async fn latest_by_reading<S: BarStore + ?Sized>(
    store: &S,
    series: &SeriesKey,
) -> Result<Option<Bar>> {
    let mut last = None;
    let mut pages = store.read(series, TimeRange::all());
    while let Some(page) = pages.try_next().await? {
        last = page.last().copied().or(last);
    }
    Ok(last)
}

/// The key of a series from its stored columns; a column that is not a symbol or an interval
/// is corrupt data.
pub(crate) fn parse_key(symbol: &str, interval: &str) -> Result<SeriesKey> {
    let symbol = crate::symbol::Symbol::new(symbol)
        .map_err(|e| StoreError::corrupt(format!("stored series has a bad symbol: {e}")))?;
    let interval = interval
        .parse::<crate::interval::Interval>()
        .map_err(|e| StoreError::corrupt(format!("stored series has a bad interval: {e}")))?;
    Ok(SeriesKey::new(symbol, interval))
}

/// Checks that every bar of a [`BarStore::replace_range`] lies in its range.
pub fn check_in_range(series: &SeriesKey, range: TimeRange, bars: &[Bar]) -> Result<()> {
    match bars.iter().find(|b| !range.contains(b.ts)) {
        Some(b) => Err(StoreError::refused(format!(
            "replace of {series} in {range}: bar at {} is outside the range",
            b.ts
        ))),
        None => Ok(()),
    }
}
