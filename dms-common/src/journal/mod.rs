//! The journal: the durable, ordered log of every change a daemon accepts.
//!
//! A fetched batch is durable here before anything else happens to it; the bar store and each
//! replica are consumers that follow the journal with a named [`Cursor`] (the highest sequence
//! number they have durably applied). If a consumer stops (the store is down, a replica is cut
//! off), its cursor stops and the entries wait; when it returns it resumes from its cursor.
//!
//! The journal lives in the daemon's local state file (SQLite, WAL, `synchronous=FULL`), apart
//! from the bar store. Its contract:
//!
//! - [`Journal::append`] / [`Journal::append_all`] return only once the entries are on disk; the
//!   [`Seq`]s they return are never reused within a history, and survive a crash at any point.
//! - [`Journal::head`] is the last committed seq. The watch from [`Journal::subscribe`] only
//!   moves forward: concurrent appends that finish out of order never publish a lower head
//!   after a higher one, so waiting for `head > n` cannot stall.
//! - A journal has one [`HistoryId`], created with it. A consumer that saw another history id
//!   (the journal was recreated) must repair by comparing data instead of trusting its cursor.
//! - Entries are stored as the protobuf `dms.v1.ChangeBatch` with a CRC-32 of the bytes, so the
//!   same bytes can be streamed to replicas and corruption is detected on read.
//! - Reads are served by a small pool of read-only connections (up to 8, opened on first
//!   need), so the store applier, the status page and every replica stream read concurrently;
//!   appends go through the one writer connection.
//! - A read never skips entries silently: if entries after the requested seq are gone, the read
//!   fails with [`JournalError::Truncated`].
//!
//! Cursors (`journal/cursors.rs`):
//!
//! - Moving a cursor past the head fails: [`Journal::advance_cursor`], [`Journal::ack_cursor`],
//!   [`Journal::mark_repaired`] and [`Journal::skip_gap`] return [`JournalError::CursorAhead`].
//!   Positions only move forward, except through `mark_repaired`.
//! - Each cursor records the [`HistoryId`] its position refers to (this journal's, when it was
//!   registered) and when its consumer last acknowledged a position.
//! - A cursor registered at a position retention has already passed is registered as needing
//!   repair, with a reason naming the missing entries: it is never silently moved forward.
//! - [`Journal::advance_cursor`] is durable when it returns and costs one write. Replicas
//!   acknowledge with [`Journal::ack_cursor`] instead: it only records the position in memory,
//!   and [`Journal::flush_acks`] writes every pending position in one transaction. The owner of
//!   the journal runs [`Journal::flush_acks_every`] (every 100–250 ms; it flushes once more at
//!   shutdown); dropping the last clone of a journal also flushes. A crash loses at most the
//!   acknowledgements since the last flush: those consumers are sent those entries again, which
//!   idempotent applies make harmless. [`Journal::cursor`] and [`Journal::cursors`] show pending
//!   acknowledgements over the written positions.
//!
//! Retention (`journal/retention.rs`):
//!
//! - [`Journal::apply_retention`] removes entries every cursor has passed; beyond the configured
//!   size or age it removes older entries anyway and marks each cursor that still needed them as
//!   needing repair, except that it never removes what a *protected* cursor (the primary
//!   store's) has not applied: those entries exist nowhere else yet.
//! - It writes pending acknowledgements first, then deletes in transactions of at most 10,000
//!   entries, releasing the writer between them so appends are not held up by a large pass.

mod cursors;
mod entry;
mod readers;
mod retention;

pub use cursors::Cursor;
pub use entry::{decode_entry, decode_streamed, encode_batch};
pub use retention::{RetentionPolicy, RetentionReport};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use crate::bar::{Bar, SeriesKey};
use crate::time::TimeRange;
use cursors::Acks;
use entry::encode_entry;
use readers::ReaderPool;

/// A journal sequence number. The first entry is 1; 0 means "before everything".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl std::fmt::Display for Seq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The identity of one journal's history. Sequence numbers are comparable only within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct HistoryId(pub String);

impl std::fmt::Display for HistoryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a journal entry does to its series.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Insert or replace these bars.
    Upsert(Vec<Bar>),
    /// Remove the bars in this range.
    Delete(TimeRange),
}

/// Where a change came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub task_id: String,
    pub source: String,
}

/// A change to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange {
    pub series: SeriesKey,
    pub change: Change,
    pub origin: Origin,
}

/// A journal entry as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    pub seq: Seq,
    pub history_id: HistoryId,
    pub series: SeriesKey,
    pub change: Change,
    pub origin: Origin,
    /// When the entry was appended, Unix milliseconds.
    pub committed_at_ms: i64,
}

impl ChangeBatch {
    /// The number of bars the entry carries (0 for a delete).
    pub fn bar_count(&self) -> usize {
        match &self.change {
            Change::Upsert(b) => b.len(),
            Change::Delete(_) => 0,
        }
    }
}

/// Size and bounds of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    /// Entries up to this seq have been removed by retention (0: none).
    pub pruned_through: Seq,
    /// The last appended seq (0: none yet).
    pub head: Seq,
    pub entries: u64,
    pub bytes: u64,
    /// Cursors with an acknowledged position not written yet (see [`Journal::flush_acks`]).
    pub pending_acks: usize,
}

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("journal entry {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
    #[error("journal entries after {requested} were removed by retention (oldest kept: {oldest})")]
    Truncated { requested: Seq, oldest: Seq },
    #[error("journal cursor {0:?} is not registered")]
    UnknownCursor(String),
    #[error("journal cursor {name:?} cannot move to {seq}: the journal head is {head}")]
    CursorAhead { name: String, seq: Seq, head: Seq },
    #[error("journal task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Result of journal operations.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    seq             INTEGER PRIMARY KEY,
    symbol          TEXT NOT NULL,
    interval        TEXT NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    crc             INTEGER NOT NULL,
    payload         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_committed_at ON journal (committed_at_ms);
CREATE TABLE IF NOT EXISTS journal_cursors (
    name          TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    needs_repair  INTEGER NOT NULL DEFAULT 0,
    repair_reason TEXT,
    updated_at_ms INTEGER NOT NULL,
    protected     INTEGER NOT NULL DEFAULT 0,
    history_id    TEXT,
    last_ack_ms   INTEGER
);
";

/// The durable journal. Cheap to clone; clones share the file and the head watch.
#[derive(Debug, Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    history_id: HistoryId,
    retention: RetentionPolicy,
    writer: Mutex<Writer>,
    readers: ReaderPool,
    /// The last committed seq, set under the writer lock as soon as an append commits.
    committed: AtomicU64,
    /// The head as published to watchers; it only moves forward.
    head: watch::Sender<Seq>,
    /// Cursor acknowledgements not written yet. Lock order: `writer` before `acks`.
    acks: Mutex<Acks>,
    /// Held for a whole retention pass, so passes do not overlap.
    retention_pass: Mutex<()>,
    /// The error of the last append, while appends fail (a full disk, a lost file).
    append_error: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    next_seq: Seq,
    /// Entries in the journal table and their payload bytes.
    entries: u64,
    bytes: u64,
    /// Entries up to this seq were removed by retention.
    pruned_through: Seq,
}

impl Writer {
    fn head(&self) -> Seq {
        Seq(self.next_seq.0 - 1)
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Opens a connection to a local state file with the settings every state connection uses.
pub fn open_state_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl Journal {
    /// Opens (creating if needed) the journal in the state file at `path`.
    pub fn open(path: impl AsRef<Path>, retention: RetentionPolicy) -> Result<Journal> {
        let path = path.as_ref().to_path_buf();
        let err = |source| JournalError::Sqlite {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let mut conn = open_state_connection(&path).map_err(err)?;
        let history_id = init_schema(&mut conn).map_err(err)?;
        let pruned = pruned_through(&conn).map_err(err)?;
        let (max_seq, entries, bytes): (u64, u64, u64) = conn
            .query_row(
                "SELECT coalesce(max(seq), 0), count(*), coalesce(sum(bytes), 0) FROM journal",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                },
            )
            .map_err(err)?;
        let head = Seq(max_seq.max(pruned.0));
        let acks = Acks::load(&conn).map_err(err)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                readers: ReaderPool::new(&path),
                path,
                history_id,
                retention,
                writer: Mutex::new(Writer {
                    conn,
                    next_seq: head.next(),
                    entries,
                    bytes,
                    pruned_through: pruned,
                }),
                committed: AtomicU64::new(head.0),
                append_error: Mutex::new(None),
                head: watch::channel(head).0,
                acks: Mutex::new(acks),
                retention_pass: Mutex::new(()),
            }),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// This journal's history id.
    pub fn history_id(&self) -> &HistoryId {
        &self.inner.history_id
    }

    /// The last appended seq.
    pub fn head(&self) -> Seq {
        self.inner.committed_head()
    }

    /// A watch of the head: it changes after entries are appended, and never goes back.
    pub fn subscribe(&self) -> watch::Receiver<Seq> {
        self.inner.head.subscribe()
    }

    /// Appends one change; returns once it is durable.
    pub async fn append(&self, change: NewChange) -> Result<Seq> {
        let seqs = self.append_all(vec![change]).await?;
        Ok(seqs[0])
    }

    /// Appends changes in one transaction; returns their seqs once all are durable.
    pub async fn append_all(&self, changes: Vec<NewChange>) -> Result<Vec<Seq>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = inner.append_all(&changes);
            *inner.append_error.lock().unwrap_or_else(|p| p.into_inner()) =
                outcome.as_ref().err().map(|e| e.to_string());
            outcome
        })
        .await?
    }

    /// While appends fail (the last one did), why: readiness and status show the journal as
    /// unwritable until an append succeeds again.
    pub fn append_error(&self) -> Option<String> {
        self.inner
            .append_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Entries with seq greater than `after`, in order, up to `max_entries` entries or about
    /// `max_bytes` of payload (at least one entry if there is one).
    pub async fn read_after(
        &self,
        after: Seq,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<ChangeBatch>> {
        let raw = self.read_raw_after(after, max_entries, max_bytes).await?;
        raw.into_iter()
            .map(|(seq, bytes)| decode_entry(seq, &bytes))
            .collect()
    }

    /// Like [`Journal::read_after`], but the entries' encoded `dms.v1.ChangeBatch` bytes, checked
    /// against their CRC.
    pub async fn read_raw_after(
        &self,
        after: Seq,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<(Seq, Vec<u8>)>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.read_raw_after(after, max_entries, max_bytes))
            .await?
    }

    /// Size and bounds of the journal.
    pub async fn stats(&self) -> Result<JournalStats> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let w = inner.lock_writer();
            let pending_acks = inner.lock_acks().pending_len();
            Ok(JournalStats {
                pruned_through: w.pruned_through,
                head: w.head(),
                entries: w.entries,
                bytes: w.bytes,
                pending_acks,
            })
        })
        .await?
    }

    /// Payload bytes of the entries after `seq` (e.g. what a consumer at `seq` has yet to
    /// apply).
    pub async fn bytes_after(&self, seq: Seq) -> Result<u64> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.with_reader(|conn| {
                conn.query_row(
                    "SELECT coalesce(sum(bytes), 0) FROM journal WHERE seq > ?1",
                    params![seq.0 as i64],
                    |r| r.get::<_, i64>(0),
                )
                .map(|b| b as u64)
                .map_err(|e| inner.err(e))
            })
        })
        .await?
    }

    /// When the first entry after `seq` was committed (Unix ms), if there is one: how long a
    /// consumer at `seq` has been behind (the age of the oldest change it has not applied).
    pub async fn committed_after(&self, seq: Seq) -> Result<Option<i64>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.with_reader(|conn| {
                conn.query_row(
                    "SELECT committed_at_ms FROM journal WHERE seq > ?1 ORDER BY seq LIMIT 1",
                    params![seq.0 as i64],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(|e| inner.err(e))
            })
        })
        .await?
    }

    /// Checks that the state file answers (for readiness probes).
    pub async fn check(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.with_reader(|conn| {
                conn.query_row("SELECT count(*) FROM journal_meta", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(|e| inner.err(e))?;
                Ok(())
            })
        })
        .await?
    }
}

/// Creates the tables or brings an older file up to date, in one transaction; returns the
/// history id.
fn init_schema(conn: &mut Connection) -> rusqlite::Result<HistoryId> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    let history_id = match meta(&tx, "history_id")? {
        Some(id) => HistoryId(id),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            tx.execute(
                "INSERT INTO journal_meta (key, value) VALUES ('history_id', ?1)",
                params![id],
            )?;
            HistoryId(id)
        }
    };
    cursors::migrate(&tx, &history_id)?;
    tx.commit()?;
    Ok(history_id)
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM journal_meta WHERE key = ?1",
        params![key],
        |r| r.get(0),
    )
    .optional()
}

fn pruned_through(conn: &Connection) -> rusqlite::Result<Seq> {
    Ok(Seq(meta(conn, "pruned_through")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)))
}

impl Inner {
    fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn committed_head(&self) -> Seq {
        Seq(self.committed.load(Ordering::Acquire))
    }

    /// Runs `f` on a pooled read connection.
    fn with_reader<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.readers.get().map_err(|e| self.err(e))?;
        f(&conn)
    }

    fn append_all(&self, changes: &[NewChange]) -> Result<Vec<Seq>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = self.lock_writer();
        let at_ms = now_ms();
        let first = w.next_seq;
        let mut seqs = Vec::with_capacity(changes.len());
        let mut added = 0u64;
        let tx = w.conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO journal (seq, symbol, interval, committed_at_ms, bytes, crc, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| self.err(e))?;
            let mut seq = first;
            for c in changes {
                let payload = encode_entry(seq, &self.history_id, c, at_ms);
                stmt.execute(params![
                    seq.0 as i64,
                    c.series.symbol.as_str(),
                    c.series.interval.as_str(),
                    at_ms,
                    payload.len() as i64,
                    crc32fast::hash(&payload),
                    payload
                ])
                .map_err(|e| self.err(e))?;
                added += payload.len() as u64;
                seqs.push(seq);
                seq = seq.next();
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        let last = *seqs.last().expect("non-empty");
        w.next_seq = last.next();
        w.entries += seqs.len() as u64;
        w.bytes += added;
        self.committed.store(last.0, Ordering::Release);
        drop(w);
        self.publish_head(last);
        Ok(seqs)
    }

    /// Publishes `last` as the head unless a later append already published a higher one.
    fn publish_head(&self, last: Seq) {
        self.head.send_if_modified(|h| {
            if last > *h {
                *h = last;
                true
            } else {
                false
            }
        });
    }

    fn read_raw_after(
        &self,
        after: Seq,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<(Seq, Vec<u8>)>> {
        self.with_reader(|conn| {
            let err = |e| self.err(e);
            // One snapshot for the bound and the entries, so retention cannot slip in between.
            let snapshot = conn.unchecked_transaction().map_err(err)?;
            let pruned = pruned_through(&snapshot).map_err(err)?;
            if after < pruned {
                return Err(JournalError::Truncated {
                    requested: after,
                    oldest: pruned.next(),
                });
            }
            let mut stmt = snapshot
                .prepare_cached(
                    "SELECT seq, crc, payload FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(err)?;
            let mut rows = stmt
                .query(params![after.0 as i64, max_entries.max(1) as i64])
                .map_err(err)?;
            let mut out = Vec::new();
            let mut bytes = 0u64;
            while let Some(row) = rows.next().map_err(err)? {
                let seq = Seq(row.get::<_, i64>(0).map_err(err)? as u64);
                // Sequence numbers are dense: a jump means entries in between are gone.
                let expected = out
                    .last()
                    .map_or(after.next(), |(s, _): &(Seq, Vec<u8>)| s.next());
                if seq != expected {
                    return Err(JournalError::Truncated {
                        requested: after,
                        oldest: seq,
                    });
                }
                let crc: u32 = row.get(1).map_err(err)?;
                let payload: Vec<u8> = row.get(2).map_err(err)?;
                if crc32fast::hash(&payload) != crc {
                    return Err(JournalError::Corrupt {
                        seq: seq.0,
                        reason: "CRC mismatch".into(),
                    });
                }
                bytes += payload.len() as u64;
                out.push((seq, payload));
                if bytes >= max_bytes {
                    break;
                }
            }
            drop(rows);
            drop(stmt);
            snapshot.finish().map_err(err)?;
            Ok(out)
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.flush_acks() {
            tracing::error!(error = %e, "cannot write the last cursor acknowledgements");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::Interval;
    use crate::symbol::Symbol;
    use crate::time::Timestamp;

    /// An upsert of `n` daily bars.
    pub(super) fn change(n: i64) -> NewChange {
        NewChange {
            series: SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1),
            change: Change::Upsert(
                (0..n)
                    .map(|i| Bar::ohlcv(Timestamp(i * 86_400), 1.0, 2.0, 0.5, 1.5, 10.0))
                    .collect(),
            ),
            origin: Origin {
                task_id: "t1".into(),
                source: "test".into(),
            },
        }
    }

    #[tokio::test]
    async fn committed_after_is_the_time_of_the_first_entry_a_consumer_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        assert_eq!(j.committed_after(Seq(0)).await.unwrap(), None);
        let before = chrono::Utc::now().timestamp_millis();
        j.append_all(vec![change(1), change(2)]).await.unwrap();
        let after = chrono::Utc::now().timestamp_millis();
        let first = j.committed_after(Seq(0)).await.unwrap().unwrap();
        assert!(
            (before..=after).contains(&first),
            "{before} {first} {after}"
        );
        assert!(j.committed_after(Seq(1)).await.unwrap().unwrap() >= first);
        assert_eq!(j.committed_after(Seq(2)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn appends_survive_reopen_with_the_same_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        let history = j.history_id().clone();
        let seqs = j.append_all(vec![change(3), change(5)]).await.unwrap();
        assert_eq!(seqs, [Seq(1), Seq(2)]);
        assert_eq!(j.append(change(1)).await.unwrap(), Seq(3));
        drop(j);
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        assert_eq!(j.history_id(), &history);
        assert_eq!(j.head(), Seq(3));
        let entries = j.read_after(Seq(1), 10, u64::MAX).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].seq, Seq(2));
        assert_eq!(entries[0].bar_count(), 5);
        assert_eq!(entries[0].origin.source, "test");
        assert_eq!(entries[0].change, change(5).change);
        assert_eq!(j.append(change(1)).await.unwrap(), Seq(4));
        let stats = j.stats().await.unwrap();
        assert_eq!((stats.head, stats.entries), (Seq(4), 4));
    }

    #[tokio::test]
    async fn a_late_publish_of_a_lower_head_does_not_move_the_watch_back() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        let mut head = j.subscribe();
        // Two appenders that committed 3 and then 4 publish in the opposite order.
        j.inner.publish_head(Seq(4));
        j.inner.publish_head(Seq(3));
        assert_eq!(*head.borrow(), Seq(4));
        tokio::time::timeout(Duration::from_secs(1), head.wait_for(|h| *h > Seq(3)))
            .await
            .expect("a consumer waiting for head > 3 is not stalled")
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_publish_a_head_that_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        let mut head = j.subscribe();
        let watcher = tokio::spawn(async move {
            let mut seen = vec![*head.borrow_and_update()];
            while head.changed().await.is_ok() {
                seen.push(*head.borrow_and_update());
                if seen.last() == Some(&Seq(200)) {
                    break;
                }
            }
            seen
        });
        let appenders: Vec<_> = (0..8)
            .map(|_| {
                let j = j.clone();
                tokio::spawn(async move {
                    for _ in 0..25 {
                        j.append(change(1)).await.unwrap();
                    }
                })
            })
            .collect();
        for a in appenders {
            a.await.unwrap();
        }
        let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the watch reaches the last seq")
            .unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert_eq!(*j.subscribe().borrow(), Seq(200));
        assert_eq!(j.head(), Seq(200));
    }

    #[tokio::test]
    async fn a_failing_append_shows_until_an_append_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        j.append(change(1)).await.unwrap();
        assert!(j.append_error().is_none());
        // Another program takes the table away: appends fail, and say so.
        let other = Connection::open(&path).unwrap();
        other
            .execute_batch("ALTER TABLE journal RENAME TO journal_away")
            .unwrap();
        assert!(j.append(change(1)).await.is_err());
        let e = j.append_error().expect("the failure is kept");
        assert!(e.contains("journal"), "{e}");
        // Once writes work again, the error clears with the next append.
        other
            .execute_batch("ALTER TABLE journal_away RENAME TO journal")
            .unwrap();
        j.append(change(1)).await.unwrap();
        assert!(j.append_error().is_none());
    }

    #[tokio::test]
    async fn corrupt_payload_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        j.append(change(3)).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE journal SET payload = zeroblob(length(payload)) WHERE seq = 1",
            [],
        )
        .unwrap();
        let err = j.read_after(Seq(0), 10, u64::MAX).await.unwrap_err();
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
    }
}
