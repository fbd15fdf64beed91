//! `StoreApplier`: follows the journal with the `store` cursor and applies every entry to the
//! primary bar store.
//!
//! Two tasks form a small pipeline: a reader decodes the next journal entries while the applier
//! writes the previous ones to the store. Several entries go to the store as one upsert batch
//! (one transaction), then the cursor moves past them. If the store fails with a transient
//! error (down, busy, out of disk), the same batch is retried with exponential backoff until it
//! succeeds: the data waits in the journal, and because upserts are idempotent a batch applied
//! twice (a crash between the store commit and the cursor update) changes nothing. A permanent
//! error (the store refuses the data itself) cannot be cured by retrying: the batch's entries
//! are then applied one by one, and each entry the store still refuses is set aside in the
//! [`DeadLetters`] with the reason, so one bad entry never halts the store.
//!
//! On shutdown the applier drains: it applies what was journaled before the shutdown began,
//! then stops. If the store does not come back in time, the caller's deadline cuts it off and
//! the entries stay in the journal for the next start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use dms_common::SeriesBars;
use dms_common::journal::{Change, ChangeBatch, Journal, JournalError, Seq};
use dms_common::store::{SharedStore, StoreError, UpsertStats};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::dead_letters::DeadLetters;

/// The journal cursor of the primary store.
pub const STORE_CURSOR: &str = "store";

/// Batching limits of the applier.
#[derive(Debug, Clone, Copy)]
pub struct ApplierOptions {
    /// Most journal entries applied in one store transaction.
    pub max_entries: usize,
    /// About the most journal payload bytes applied in one store transaction.
    pub max_bytes: u64,
    /// Shortest and longest wait between retries of a failing store.
    pub min_retry_delay: Duration,
    pub max_retry_delay: Duration,
}

impl Default for ApplierOptions {
    fn default() -> Self {
        ApplierOptions {
            max_entries: 64,
            max_bytes: 4 << 20,
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(10),
        }
    }
}

/// What the applier has done, for status pages and tests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplierStatus {
    /// The last journal seq applied to the store (the store cursor).
    pub applied_seq: Seq,
    /// Entries and bars applied since start.
    pub entries_applied: u64,
    pub bars: UpsertStats,
    /// Failed store attempts since start.
    pub retries: u64,
    /// The error of the last failed attempt, cleared by the next success.
    pub last_error: Option<String>,
    /// Times the store cursor had to skip entries removed by retention (their bars must be
    /// fetched again).
    pub skipped_gaps: u64,
    /// Entries the store refused for good, set aside as dead letters since start.
    pub dead_letters: u64,
}

/// Shared, readable status of an applier.
#[derive(Debug, Clone, Default)]
pub struct StatusCell(Arc<Mutex<ApplierStatus>>);

impl StatusCell {
    /// A snapshot.
    pub fn get(&self) -> ApplierStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ApplierStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A counter per series, bumped each time the applier changes the series in the store: read
/// caches compare it to know whether what they hold is still current.
#[derive(Debug, Clone, Default)]
pub struct SeriesVersions(Arc<Mutex<std::collections::HashMap<dms_common::SeriesKey, u64>>>);

impl SeriesVersions {
    /// The current version of a series (0 until it first changes).
    pub fn get(&self, key: &dms_common::SeriesKey) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn bump<'a>(&self, keys: impl Iterator<Item = &'a dms_common::SeriesKey>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            *map.entry(k.clone()).or_default() += 1;
        }
    }
}

/// A running applier.
#[derive(Debug)]
pub struct ApplierHandle {
    status: StatusCell,
    versions: SeriesVersions,
    applied: watch::Receiver<Seq>,
    join: JoinHandle<()>,
}

impl ApplierHandle {
    /// A snapshot of the applier's status.
    pub fn status(&self) -> ApplierStatus {
        self.status.get()
    }

    /// Per-series change counters.
    pub fn versions(&self) -> SeriesVersions {
        self.versions.clone()
    }

    /// A status reader that outlives the handle.
    pub fn status_cell(&self) -> StatusCell {
        self.status.clone()
    }

    /// The last applied seq, as a watch.
    pub fn applied(&self) -> watch::Receiver<Seq> {
        self.applied.clone()
    }

    /// Waits until everything up to `seq` is in the store.
    pub async fn wait_applied(&self, seq: Seq) {
        let mut rx = self.applied.clone();
        let _ = rx.wait_for(|s| *s >= seq).await;
    }

    /// Waits for the applier to stop (after its shutdown token fired and it drained), at most
    /// `timeout`. Returns false if it had to be cut off.
    pub async fn join(self, timeout: Duration) -> bool {
        let abort = self.join.abort_handle();
        match tokio::time::timeout(timeout, self.join).await {
            Ok(_) => true,
            Err(_) => {
                abort.abort();
                false
            }
        }
    }
}

enum Item {
    Entries(Vec<ChangeBatch>),
    /// Retention removed entries before the cursor reached them; continue after `to`.
    Gap {
        to: Seq,
        reason: String,
    },
}

/// Starts applying the journal to `store`. The applier stops after `shutdown` fires and it has
/// drained what was journaled by then.
pub async fn start(
    journal: Journal,
    store: SharedStore,
    options: ApplierOptions,
    shutdown: CancellationToken,
) -> Result<ApplierHandle, JournalError> {
    let cursor = journal
        .ensure_protected_cursor(STORE_CURSOR, Seq(0))
        .await?;
    let dead = DeadLetters::open(journal.path()).map_err(|e| JournalError::Corrupt {
        seq: 0,
        reason: format!("cannot open the dead-letter table: {e}"),
    })?;
    let status = StatusCell::default();
    status.update(|s| s.applied_seq = cursor.seq);
    let (applied_tx, applied_rx) = watch::channel(cursor.seq);
    let (tx, rx) = mpsc::channel(1);
    let reader = tokio::spawn(read_loop(
        journal.clone(),
        cursor.seq,
        options,
        tx,
        shutdown.clone(),
    ));
    let versions = SeriesVersions::default();
    let apply = apply_loop(
        journal,
        Sink {
            store,
            dead,
            options,
            status: status.clone(),
        },
        rx,
        applied_tx,
        versions.clone(),
    );
    let join = tokio::spawn(async move {
        apply.await;
        let _ = reader.await;
    });
    Ok(ApplierHandle {
        status,
        versions,
        applied: applied_rx,
        join,
    })
}

async fn read_loop(
    journal: Journal,
    mut pos: Seq,
    options: ApplierOptions,
    tx: mpsc::Sender<Item>,
    shutdown: CancellationToken,
) {
    let mut head = journal.subscribe();
    // The head at the moment shutdown began: drain up to it, then stop.
    let mut drain_to: Option<Seq> = None;
    let mut backoff = retry_delays(&options);
    loop {
        if drain_to.is_none() && shutdown.is_cancelled() {
            drain_to = Some(journal.head());
        }
        if drain_to.is_some_and(|d| pos >= d) {
            return;
        }
        match journal
            .read_after(pos, options.max_entries, options.max_bytes)
            .await
        {
            Ok(entries) if entries.is_empty() => {
                if drain_to.is_some() {
                    return;
                }
                tokio::select! {
                    changed = head.wait_for(|h| *h > pos) => if changed.is_err() { return },
                    _ = shutdown.cancelled() => {}
                }
            }
            Ok(entries) => {
                backoff = retry_delays(&options);
                pos = entries.last().map(|e| e.seq).unwrap_or(pos);
                if tx.send(Item::Entries(entries)).await.is_err() {
                    return;
                }
            }
            Err(JournalError::Truncated { oldest, .. }) => {
                let to = Seq(oldest.0 - 1);
                let reason = format!(
                    "journal entries {}..={} were removed by retention before the store applied them",
                    pos.0 + 1,
                    to.0
                );
                pos = to;
                if tx.send(Item::Gap { to, reason }).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let delay = backoff.next().unwrap_or(options.max_retry_delay);
                tracing::error!(error = %e, retry_in = ?delay, "cannot read the journal");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn retry_delays(options: &ApplierOptions) -> impl Iterator<Item = Duration> + use<> {
    ExponentialBuilder::default()
        .with_min_delay(options.min_retry_delay)
        .with_max_delay(options.max_retry_delay)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Where applied entries go: the store, and the dead letters for what it refuses for good.
struct Sink {
    store: SharedStore,
    dead: DeadLetters,
    options: ApplierOptions,
    status: StatusCell,
}

async fn apply_loop(
    journal: Journal,
    sink: Sink,
    mut rx: mpsc::Receiver<Item>,
    applied: watch::Sender<Seq>,
    versions: SeriesVersions,
) {
    let (options, set) = (&sink.options, &sink.status);
    while let Some(item) = rx.recv().await {
        let last = match item {
            Item::Gap { to, reason } => {
                tracing::error!(%reason, "store cursor skips a gap; run a backfill to fetch the missing bars again");
                until_ok(options, set, || journal.skip_gap(STORE_CURSOR, to, &reason)).await;
                set.update(|s| s.skipped_gaps += 1);
                to
            }
            Item::Entries(entries) => {
                let last = entries.last().map(|e| e.seq).unwrap_or_default();
                let touched: Vec<dms_common::SeriesKey> =
                    entries.iter().map(|e| e.series.clone()).collect();
                let started = std::time::Instant::now();
                let (stats, count) = sink.apply_entries(entries).await;
                crate::metrics::store_applied(count, started.elapsed());
                versions.bump(touched.iter());
                until_ok(options, set, || journal.advance_cursor(STORE_CURSOR, last)).await;
                set.update(|s| {
                    s.bars.add(stats);
                    s.entries_applied += count;
                });
                last
            }
        };
        set.update(|s| s.applied_seq = last);
        applied.send_replace(last);
    }
}

impl Sink {
    /// Applies entries in order: consecutive upserts as one batch, deletes one by one between
    /// them. Returns the upsert stats and the number of entries applied or set aside.
    async fn apply_entries(&self, entries: Vec<ChangeBatch>) -> (UpsertStats, u64) {
        let count = entries.len() as u64;
        let mut stats = UpsertStats::default();
        let mut pending: Vec<ChangeBatch> = Vec::new();
        for entry in entries {
            match &entry.change {
                Change::Upsert(_) => pending.push(entry),
                Change::Delete(range) => {
                    let range = *range;
                    stats.add(self.upsert(std::mem::take(&mut pending)).await);
                    let outcome = retry_transient(&self.options, &self.status, || {
                        self.store.delete(&entry.series, range)
                    })
                    .await;
                    if let Err(e) = outcome {
                        self.set_aside(&entry, &e).await;
                    }
                }
            }
        }
        stats.add(self.upsert(pending).await);
        (stats, count)
    }

    /// Upserts the entries as one batch; on a permanent error, one by one, setting aside those
    /// the store still refuses.
    async fn upsert(&self, entries: Vec<ChangeBatch>) -> UpsertStats {
        if entries.is_empty() {
            return UpsertStats::default();
        }
        let batch: Vec<SeriesBars> = entries
            .iter()
            .map(|e| match &e.change {
                Change::Upsert(bars) => SeriesBars::new(e.series.clone(), bars.clone()),
                Change::Delete(_) => SeriesBars::new(e.series.clone(), Vec::new()),
            })
            .collect();
        let err = match retry_transient(&self.options, &self.status, || self.store.upsert(&batch))
            .await
        {
            Ok(stats) => return stats,
            Err(e) => e,
        };
        tracing::warn!(error = %err, entries = entries.len(), "the store refused a batch; applying its entries one by one");
        let mut stats = UpsertStats::default();
        for (entry, one) in entries.iter().zip(batch.chunks(1)) {
            match retry_transient(&self.options, &self.status, || self.store.upsert(one)).await {
                Ok(s) => stats.add(s),
                Err(e) => self.set_aside(entry, &e).await,
            }
        }
        stats
    }

    /// Keeps `entry` as a dead letter with the store's error.
    async fn set_aside(&self, entry: &ChangeBatch, error: &StoreError) {
        let reason = error.to_string();
        crate::metrics::store_error("permanent");
        tracing::error!(seq = %entry.seq, series = %entry.series, error = %reason, "the store refused an entry for good; it is set aside as a dead letter");
        until_ok(&self.options, &self.status, || {
            self.dead.record(entry, &reason)
        })
        .await;
        self.status.update(|s| {
            s.dead_letters += 1;
            s.last_error = Some(format!("entry {} set aside: {reason}", entry.seq));
        });
    }
}

/// Runs a store operation until it succeeds or fails with a permanent error, waiting longer
/// after each transient failure.
async fn retry_transient<T, F, Fut>(
    options: &ApplierOptions,
    set: &StatusCell,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delays = retry_delays(options);
    let mut attempt = 0u64;
    loop {
        match op().await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(
                        attempts = attempt + 1,
                        "store write succeeded after retries"
                    );
                    set.update(|s| s.last_error = None);
                }
                return Ok(v);
            }
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                attempt += 1;
                crate::metrics::store_error("transient");
                let delay = delays.next().unwrap_or(options.max_retry_delay);
                let msg = e.to_string();
                tracing::warn!(error = %msg, attempt, retry_in = ?delay, "store write failed; the data waits in the journal");
                set.update(|s| {
                    s.retries += 1;
                    s.last_error = Some(msg.clone());
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs `op` until it succeeds, waiting longer after each failure.
async fn until_ok<T, E, F, Fut>(options: &ApplierOptions, set: &StatusCell, mut op: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delays = retry_delays(options);
    let mut attempt = 0u64;
    loop {
        match op().await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(
                        attempts = attempt + 1,
                        "store write succeeded after retries"
                    );
                    set.update(|s| s.last_error = None);
                }
                return v;
            }
            Err(e) => {
                attempt += 1;
                let delay = delays.next().unwrap_or(options.max_retry_delay);
                let msg = e.to_string();
                tracing::warn!(error = %msg, attempt, retry_in = ?delay, "store write failed; the data waits in the journal");
                set.update(|s| {
                    s.retries += 1;
                    s.last_error = Some(msg.clone());
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}
