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
//! - A journal has one [`HistoryId`], created with it. A consumer that saw another history id
//!   (the journal was recreated) must repair by comparing data instead of trusting its cursor.
//! - Entries are stored as the protobuf `dms.v1.ChangeBatch` with a CRC-32 of the bytes, so the
//!   same bytes can be streamed to replicas and corruption is detected on read.
//! - Retention ([`Journal::apply_retention`]) removes entries every cursor has passed; beyond the
//!   configured size or age it removes older entries anyway and marks each cursor that still
//!   needed them as needing repair, except that it never removes what a *protected* cursor (the
//!   primary store's) has not applied: those entries exist nowhere else yet.
//! - A read never skips entries silently: if entries after the requested seq are gone, the read
//!   fails with [`JournalError::Truncated`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use crate::bar::{Bar, SeriesKey};
use crate::pb;
use crate::time::TimeRange;

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

/// A consumer's position in the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cursor {
    pub name: String,
    /// The highest seq the consumer has durably applied.
    pub seq: Seq,
    /// Set when entries the consumer had not applied yet were removed.
    pub needs_repair: bool,
    pub repair_reason: Option<String>,
    pub updated_at_ms: i64,
    /// Retention never removes entries a protected cursor has not applied, whatever the
    /// limits (the primary store's cursor: its data exists nowhere else yet).
    pub protected: bool,
}

/// How much of the journal to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Entries beyond this total payload size are removed even if a cursor still needs them.
    pub max_bytes: u64,
    /// Entries older than this are removed even if a cursor still needs them.
    pub max_age: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub removed_entries: u64,
    pub removed_bytes: u64,
    /// Cursors newly marked as needing repair.
    pub cursors_marked: Vec<String>,
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
CREATE TABLE IF NOT EXISTS journal_cursors (
    name          TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL,
    needs_repair  INTEGER NOT NULL DEFAULT 0,
    repair_reason TEXT,
    updated_at_ms INTEGER NOT NULL,
    protected     INTEGER NOT NULL DEFAULT 0
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
    reader: Mutex<Connection>,
    head: watch::Sender<Seq>,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    next_seq: Seq,
    bytes: u64,
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
        let conn = open_state_connection(&path).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // State files made before cursors could be protected.
        let has_protected: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('journal_cursors') WHERE name = 'protected'")
            .and_then(|mut s| s.exists([]))
            .map_err(err)?;
        if !has_protected {
            conn.execute_batch(
                "ALTER TABLE journal_cursors ADD COLUMN protected INTEGER NOT NULL DEFAULT 0",
            )
            .map_err(err)?;
        }
        let history_id = match meta(&conn, "history_id").map_err(err)? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                conn.execute(
                    "INSERT INTO journal_meta (key, value) VALUES ('history_id', ?1)",
                    params![id],
                )
                .map_err(err)?;
                id
            }
        };
        let pruned: u64 = meta(&conn, "pruned_through")
            .map_err(err)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (max_seq, bytes): (u64, u64) = conn
            .query_row(
                "SELECT coalesce(max(seq), 0), coalesce(sum(bytes), 0) FROM journal",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(err)?;
        let head = Seq(max_seq.max(pruned));
        let reader = open_state_connection(&path).map_err(err)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                path,
                history_id: HistoryId(history_id),
                retention,
                writer: Mutex::new(Writer {
                    conn,
                    next_seq: head.next(),
                    bytes,
                }),
                reader: Mutex::new(reader),
                head: watch::channel(head).0,
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
        *self.inner.head.borrow()
    }

    /// A watch that changes whenever entries are appended.
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
        tokio::task::spawn_blocking(move || inner.append_all(&changes)).await?
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

    /// Registers cursor `name` at `initial` if it does not exist; returns its state.
    pub async fn ensure_cursor(&self, name: &str, initial: Seq) -> Result<Cursor> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.ensure_cursor(&name, initial)).await?
    }

    /// Like [`Journal::ensure_cursor`], and marks the cursor protected: retention never removes
    /// entries it has not applied.
    pub async fn ensure_protected_cursor(&self, name: &str, initial: Seq) -> Result<Cursor> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            inner.ensure_cursor(&name, initial)?;
            let w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            w.conn
                .execute(
                    "UPDATE journal_cursors SET protected = 1 WHERE name = ?1",
                    params![name],
                )
                .map_err(|e| inner.err(e))?;
            load_cursor(&w.conn, &name)
                .map_err(|e| inner.err(e))?
                .ok_or_else(|| JournalError::UnknownCursor(name.clone()))
        })
        .await?
    }

    /// Moves cursor `name` past entries it can no longer read, keeping it marked as needing
    /// repair with `reason` so the loss stays visible.
    pub async fn skip_gap(&self, name: &str, to: Seq, reason: &str) -> Result<()> {
        let inner = self.inner.clone();
        let (name, reason) = (name.to_owned(), reason.to_owned());
        tokio::task::spawn_blocking(move || {
            let w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let n = w
                .conn
                .execute(
                    "UPDATE journal_cursors SET seq = max(seq, ?2), needs_repair = 1,
                        repair_reason = ?3, updated_at_ms = ?4 WHERE name = ?1",
                    params![name, to.0 as i64, reason, now_ms()],
                )
                .map_err(|e| inner.err(e))?;
            if n == 0 {
                return Err(JournalError::UnknownCursor(name));
            }
            Ok(())
        })
        .await?
    }

    /// The state of cursor `name`, if registered.
    pub async fn cursor(&self, name: &str) -> Result<Option<Cursor>> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            load_cursor(&conn, &name).map_err(|e| inner.err(e))
        })
        .await?
    }

    /// Every registered cursor.
    pub async fn cursors(&self) -> Result<Vec<Cursor>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name, seq, needs_repair, repair_reason, updated_at_ms, protected
                     FROM journal_cursors ORDER BY name",
                )
                .map_err(|e| inner.err(e))?;
            let rows = stmt
                .query_map([], cursor_from_row)
                .map_err(|e| inner.err(e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| inner.err(e))
        })
        .await?
    }

    /// Moves cursor `name` forward to `seq` (never backwards); durable when it returns.
    pub async fn advance_cursor(&self, name: &str, seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.set_cursor(&name, seq, false)).await?
    }

    /// Sets cursor `name` to `seq` and clears its repair flag, after the consumer repaired its
    /// data by other means.
    pub async fn mark_repaired(&self, name: &str, seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.set_cursor(&name, seq, true)).await?
    }

    /// Removes a cursor (a consumer that is gone for good).
    pub async fn remove_cursor(&self, name: &str) -> Result<bool> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let n = w
                .conn
                .execute("DELETE FROM journal_cursors WHERE name = ?1", params![name])
                .map_err(|e| inner.err(e))?;
            Ok(n > 0)
        })
        .await?
    }

    /// Applies the retention policy; `now_ms` is the current time in Unix milliseconds.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply_retention(now_ms)).await?
    }

    /// Size and bounds of the journal.
    pub async fn stats(&self) -> Result<JournalStats> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let w = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let err = |e| inner.err(e);
            let entries: i64 = w
                .conn
                .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
                .map_err(err)?;
            let pruned = meta(&w.conn, "pruned_through")
                .map_err(err)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Ok(JournalStats {
                pruned_through: Seq(pruned),
                head: Seq(w.next_seq.0 - 1),
                entries: entries as u64,
                bytes: w.bytes,
            })
        })
        .await?
    }

    /// Checks that the state file answers (for readiness probes).
    pub async fn check(&self) -> Result<()> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            conn.query_row("SELECT count(*) FROM journal_meta", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| inner.err(e))?;
            Ok(())
        })
        .await?
    }
}

fn meta(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM journal_meta WHERE key = ?1",
        params![key],
        |r| r.get(0),
    )
    .optional()
}

fn cursor_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Cursor> {
    Ok(Cursor {
        name: r.get(0)?,
        seq: Seq(r.get::<_, i64>(1)? as u64),
        needs_repair: r.get::<_, i64>(2)? != 0,
        repair_reason: r.get(3)?,
        updated_at_ms: r.get(4)?,
        protected: r.get::<_, i64>(5)? != 0,
    })
}

fn load_cursor(conn: &Connection, name: &str) -> rusqlite::Result<Option<Cursor>> {
    conn.query_row(
        "SELECT name, seq, needs_repair, repair_reason, updated_at_ms, protected
         FROM journal_cursors WHERE name = ?1",
        params![name],
        cursor_from_row,
    )
    .optional()
}

/// Encodes a change as the protobuf the journal stores.
fn encode_entry(seq: Seq, history: &HistoryId, c: &NewChange, at_ms: i64) -> Vec<u8> {
    let change = match &c.change {
        Change::Upsert(bars) => pb::change_batch::Change::Upsert(pb::UpsertBars {
            bars: bars.iter().map(pb::Bar::from).collect(),
        }),
        Change::Delete(range) => pb::change_batch::Change::Delete(pb::DeleteRange {
            range: Some((*range).into()),
        }),
    };
    pb::ChangeBatch {
        seq: seq.0,
        history_id: history.0.clone(),
        series: Some((&c.series).into()),
        change: Some(change),
        origin: Some(pb::Origin {
            task_id: c.origin.task_id.clone(),
            source: c.origin.source.clone(),
        }),
        committed_at_ms: at_ms,
    }
    .encode_to_vec()
}

/// Decodes a stored or streamed `dms.v1.ChangeBatch`.
pub fn decode_entry(seq: Seq, bytes: &[u8]) -> Result<ChangeBatch> {
    let corrupt = |reason: String| JournalError::Corrupt { seq: seq.0, reason };
    let msg = pb::ChangeBatch::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    if msg.seq != seq.0 {
        return Err(corrupt(format!("payload carries seq {}", msg.seq)));
    }
    let series = msg
        .series
        .as_ref()
        .ok_or_else(|| corrupt("no series".into()))?;
    let series = SeriesKey::try_from(series).map_err(|e| corrupt(e.to_string()))?;
    let change = match msg.change {
        Some(pb::change_batch::Change::Upsert(u)) => {
            Change::Upsert(u.bars.iter().map(Bar::from).collect())
        }
        Some(pb::change_batch::Change::Delete(d)) => Change::Delete(
            d.range
                .as_ref()
                .map(TimeRange::from)
                .ok_or_else(|| corrupt("delete without range".into()))?,
        ),
        None => return Err(corrupt("no change".into())),
    };
    let origin = msg.origin.unwrap_or_default();
    Ok(ChangeBatch {
        seq,
        history_id: HistoryId(msg.history_id),
        series,
        change,
        origin: Origin {
            task_id: origin.task_id,
            source: origin.source,
        },
        committed_at_ms: msg.committed_at_ms,
    })
}

impl Inner {
    fn err(&self, source: rusqlite::Error) -> JournalError {
        JournalError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn append_all(&self, changes: &[NewChange]) -> Result<Vec<Seq>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
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
        w.bytes += added;
        drop(w);
        self.head.send_replace(last);
        Ok(seqs)
    }

    fn read_raw_after(
        &self,
        after: Seq,
        max_entries: usize,
        max_bytes: u64,
    ) -> Result<Vec<(Seq, Vec<u8>)>> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        // One snapshot for the bound and the entries, so retention cannot slip in between.
        let snapshot = conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let pruned: u64 = meta(&snapshot, "pruned_through")
            .map_err(|e| self.err(e))?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if after.0 < pruned {
            return Err(JournalError::Truncated {
                requested: after,
                oldest: Seq(pruned + 1),
            });
        }
        let mut stmt = snapshot
            .prepare_cached(
                "SELECT seq, crc, payload FROM journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![after.0 as i64, max_entries.max(1) as i64])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let seq = Seq(row.get::<_, i64>(0).map_err(|e| self.err(e))? as u64);
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
            let crc: u32 = row.get(1).map_err(|e| self.err(e))?;
            let payload: Vec<u8> = row.get(2).map_err(|e| self.err(e))?;
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
        snapshot.finish().map_err(|e| self.err(e))?;
        Ok(out)
    }

    fn ensure_cursor(&self, name: &str, initial: Seq) -> Result<Cursor> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.conn
            .execute(
                "INSERT INTO journal_cursors (name, seq, updated_at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, initial.0 as i64, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        load_cursor(&w.conn, name)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| JournalError::UnknownCursor(name.to_owned()))
    }

    fn set_cursor(&self, name: &str, seq: Seq, repaired: bool) -> Result<()> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let n = if repaired {
            w.conn.execute(
                "UPDATE journal_cursors SET seq = ?2, needs_repair = 0, repair_reason = NULL,
                 updated_at_ms = ?3 WHERE name = ?1",
                params![name, seq.0 as i64, now_ms()],
            )
        } else {
            w.conn.execute(
                "UPDATE journal_cursors SET seq = max(seq, ?2), updated_at_ms = ?3 WHERE name = ?1",
                params![name, seq.0 as i64, now_ms()],
            )
        }
        .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(JournalError::UnknownCursor(name.to_owned()));
        }
        Ok(())
    }

    fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let policy = self.retention;
        let head = w.next_seq.0 as i64 - 1;
        // Immediate: other connections write to this file between our read and our delete.
        let tx = w
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let err = |e| self.err(e);
        // Everything every cursor has applied can go.
        let min_needed: Option<i64> = tx
            .query_row("SELECT min(seq) FROM journal_cursors", [], |r| r.get(0))
            .map_err(err)?;
        let mut cut = min_needed.unwrap_or(head);
        // Beyond the limits, older entries go too, needed or not.
        let age_cut: Option<i64> = tx
            .query_row(
                "SELECT max(seq) FROM journal WHERE committed_at_ms < ?1",
                params![now_ms - policy.max_age.as_millis() as i64],
                |r| r.get(0),
            )
            .map_err(err)?;
        if let Some(a) = age_cut {
            cut = cut.max(a);
        }
        let kept_bytes: i64 = tx
            .query_row(
                "SELECT coalesce(sum(bytes), 0) FROM journal WHERE seq > ?1",
                params![cut],
                |r| r.get(0),
            )
            .map_err(err)?;
        if kept_bytes as u64 > policy.max_bytes {
            // Walk from the newest entry back until the budget is used; cut below that.
            let mut stmt = tx
                .prepare("SELECT seq, bytes FROM journal WHERE seq > ?1 ORDER BY seq DESC")
                .map_err(err)?;
            let mut rows = stmt.query(params![cut]).map_err(err)?;
            let mut total = 0u64;
            while let Some(row) = rows.next().map_err(err)? {
                let seq: i64 = row.get(0).map_err(err)?;
                total += row.get::<_, i64>(1).map_err(err)? as u64;
                if total > policy.max_bytes {
                    cut = cut.max(seq);
                    break;
                }
            }
        }
        // Never past a protected cursor: its entries exist nowhere else.
        let protected_min: Option<i64> = tx
            .query_row(
                "SELECT min(seq) FROM journal_cursors WHERE protected = 1",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if let Some(p) = protected_min {
            cut = cut.min(p);
        }
        let (removed_entries, removed_bytes): (i64, i64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM journal WHERE seq <= ?1",
                params![cut],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        let mut report = RetentionReport {
            removed_entries: removed_entries as u64,
            removed_bytes: removed_bytes as u64,
            cursors_marked: Vec::new(),
        };
        if removed_entries > 0 {
            tx.execute("DELETE FROM journal WHERE seq <= ?1", params![cut])
                .map_err(err)?;
            tx.execute(
                "INSERT INTO journal_meta (key, value) VALUES ('pruned_through', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                params![cut.to_string()],
            )
            .map_err(err)?;
            let mut stmt = tx
                .prepare(
                    "SELECT name FROM journal_cursors WHERE needs_repair = 0 AND protected = 0 AND seq < ?1",
                )
                .map_err(err)?;
            report.cursors_marked = stmt
                .query_map(params![cut], |r| r.get::<_, String>(0))
                .map_err(err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err)?;
            drop(stmt);
            tx.execute(
                "UPDATE journal_cursors SET needs_repair = 1, repair_reason = ?2, updated_at_ms = ?3
                 WHERE needs_repair = 0 AND protected = 0 AND seq < ?1",
                params![
                    cut,
                    format!("journal entries through {cut} were removed by retention before this consumer applied them"),
                    now_ms
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        w.bytes = w.bytes.saturating_sub(report.removed_bytes);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::Interval;
    use crate::symbol::Symbol;
    use crate::time::Timestamp;

    fn change(n: i64) -> NewChange {
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
    }

    #[tokio::test]
    async fn cursors_persist_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        j.ensure_cursor("store", Seq(0)).await.unwrap();
        j.advance_cursor("store", Seq(5)).await.unwrap();
        j.advance_cursor("store", Seq(3)).await.unwrap();
        assert!(matches!(
            j.advance_cursor("nobody", Seq(1)).await,
            Err(JournalError::UnknownCursor(_))
        ));
        drop(j);
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        let c = j.ensure_cursor("store", Seq(0)).await.unwrap();
        assert_eq!(c.seq, Seq(5));
        assert!(!c.needs_repair);
    }

    #[tokio::test]
    async fn retention_keeps_what_cursors_need_and_marks_those_it_cannot_serve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let policy = RetentionPolicy {
            max_bytes: 10_000,
            max_age: Duration::from_secs(3600),
        };
        let j = Journal::open(&path, policy).unwrap();
        j.ensure_cursor("store", Seq(0)).await.unwrap();
        j.ensure_cursor("replica-a", Seq(0)).await.unwrap();
        for _ in 0..10 {
            j.append(change(10)).await.unwrap();
        }
        j.advance_cursor("store", Seq(10)).await.unwrap();
        j.advance_cursor("replica-a", Seq(4)).await.unwrap();
        let r = j.apply_retention(now_ms()).await.unwrap();
        assert_eq!(r.removed_entries, 4, "only what every cursor applied");
        assert!(r.cursors_marked.is_empty());
        assert!(matches!(
            j.read_after(Seq(2), 10, u64::MAX).await,
            Err(JournalError::Truncated { oldest: Seq(5), .. })
        ));
        assert_eq!(j.read_after(Seq(4), 100, u64::MAX).await.unwrap().len(), 6);

        // Grow past max_bytes: the lagging replica loses entries and is marked.
        for _ in 0..40 {
            j.append(change(10)).await.unwrap();
        }
        j.advance_cursor("store", Seq(50)).await.unwrap();
        let r = j.apply_retention(now_ms()).await.unwrap();
        assert!(r.removed_entries > 0);
        assert_eq!(r.cursors_marked, ["replica-a"]);
        let stats = j.stats().await.unwrap();
        assert!(stats.bytes <= policy.max_bytes, "{stats:?}");
        let c = j.cursor("replica-a").await.unwrap().unwrap();
        assert!(c.needs_repair && c.repair_reason.unwrap().contains("retention"));
        // Age: everything older than max_age goes.
        let r = j.apply_retention(now_ms() + 2 * 3_600_000).await.unwrap();
        assert_eq!(j.stats().await.unwrap().entries, 0, "{r:?}");
        // Sequence numbers continue after the journal was emptied and reopened.
        drop(j);
        let j = Journal::open(&path, policy).unwrap();
        assert_eq!(j.append(change(1)).await.unwrap(), Seq(51));
    }

    #[tokio::test]
    async fn retention_never_removes_what_a_protected_cursor_needs() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RetentionPolicy {
            max_bytes: 1,
            max_age: Duration::from_secs(1),
        };
        let j = Journal::open(dir.path().join("state.db"), policy).unwrap();
        j.ensure_protected_cursor("store", Seq(0)).await.unwrap();
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        for _ in 0..5 {
            j.append(change(10)).await.unwrap();
        }
        j.advance_cursor("store", Seq(2)).await.unwrap();
        // Far over both limits, twice: only what the store applied goes, whatever the limits.
        for _ in 0..2 {
            let r = j.apply_retention(now_ms() + 3_600_000).await.unwrap();
            assert!(r.removed_entries <= 2, "{r:?}");
        }
        assert_eq!(j.read_after(Seq(2), 10, u64::MAX).await.unwrap().len(), 3);
        let replica = j.cursor("replica").await.unwrap().unwrap();
        assert!(
            replica.needs_repair,
            "the unprotected lagging cursor is marked"
        );
        assert!(!j.cursor("store").await.unwrap().unwrap().needs_repair);
        // A read that would skip removed entries fails instead.
        assert!(matches!(
            j.read_after(Seq(0), 10, u64::MAX).await,
            Err(JournalError::Truncated { oldest: Seq(3), .. })
        ));
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
