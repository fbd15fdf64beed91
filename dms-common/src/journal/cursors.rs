//! Consumers' positions: each [`Cursor`] is a row of `journal_cursors`, changed through the
//! writer connection; acknowledgements from [`Journal::ack_cursor`] wait in memory ([`Acks`])
//! until [`Journal::flush_acks`] writes them all in one transaction.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{HistoryId, Inner, Journal, JournalError, Result, Seq, Writer, now_ms};

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
    /// The history `seq` refers to: this journal's history id when the cursor was registered.
    pub history_id: HistoryId,
    /// When the consumer last acknowledged a position (Unix milliseconds; `None`: never).
    pub last_ack_ms: Option<i64>,
}

/// Columns `journal_cursors` gained after it was first released, with their definitions.
const ADDED_COLUMNS: [(&str, &str); 3] = [
    ("protected", "INTEGER NOT NULL DEFAULT 0"),
    ("history_id", "TEXT"),
    ("last_ack_ms", "INTEGER"),
];

const CURSOR_COLUMNS: &str =
    "name, seq, needs_repair, repair_reason, updated_at_ms, protected, history_id, last_ack_ms";

/// Adds the columns a state file made by an older version lacks.
pub(super) fn migrate(conn: &Connection, history: &HistoryId) -> rusqlite::Result<()> {
    for (column, definition) in ADDED_COLUMNS {
        let present = conn
            .prepare("SELECT 1 FROM pragma_table_info('journal_cursors') WHERE name = ?1")?
            .exists(params![column])?;
        if present {
            continue;
        }
        conn.execute_batch(&format!(
            "ALTER TABLE journal_cursors ADD COLUMN {column} {definition}"
        ))?;
        if column == "history_id" {
            // Positions stored so far are positions in this file's own journal.
            conn.execute(
                "UPDATE journal_cursors SET history_id = ?1",
                params![history.0],
            )?;
        }
    }
    Ok(())
}

/// Acknowledged positions not written yet, and the names they may be given for.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// Registered cursors, so an acknowledgement for an unknown one fails at once.
    registered: HashSet<String>,
    pending: HashMap<String, PendingAck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingAck {
    seq: Seq,
    at_ms: i64,
}

impl PendingAck {
    /// Shows this acknowledgement over a cursor as last written.
    fn overlay(self, c: &mut Cursor) {
        c.seq = c.seq.max(self.seq);
        c.last_ack_ms = Some(c.last_ack_ms.map_or(self.at_ms, |t| t.max(self.at_ms)));
    }
}

impl Acks {
    /// The registered cursors of the file, nothing pending.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Acks> {
        let mut stmt = conn.prepare("SELECT name FROM journal_cursors")?;
        let registered = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Acks {
            registered,
            pending: HashMap::new(),
        })
    }

    /// Cursors with a pending acknowledgement.
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

impl Journal {
    /// Registers cursor `name` at `initial` if it does not exist; returns its state.
    ///
    /// A new cursor whose `initial` is below what retention already removed is registered as
    /// needing repair: the entries after `initial` it would need are gone.
    pub async fn ensure_cursor(&self, name: &str, initial: Seq) -> Result<Cursor> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.ensure_cursor(&name, initial, false)).await?
    }

    /// Like [`Journal::ensure_cursor`], and marks the cursor protected: retention never removes
    /// entries it has not applied.
    pub async fn ensure_protected_cursor(&self, name: &str, initial: Seq) -> Result<Cursor> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.ensure_cursor(&name, initial, true)).await?
    }

    /// Moves cursor `name` past entries it can no longer read, keeping it marked as needing
    /// repair with `reason` so the loss stays visible.
    pub async fn skip_gap(&self, name: &str, to: Seq, reason: &str) -> Result<()> {
        let inner = self.inner.clone();
        let (name, reason) = (name.to_owned(), reason.to_owned());
        tokio::task::spawn_blocking(move || inner.skip_gap(&name, to, &reason)).await?
    }

    /// The state of cursor `name`, if registered, including an acknowledgement not written yet.
    pub async fn cursor(&self, name: &str) -> Result<Option<Cursor>> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.cursor(&name)).await?
    }

    /// Every registered cursor, including acknowledgements not written yet.
    pub async fn cursors(&self) -> Result<Vec<Cursor>> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.cursors()).await?
    }

    /// Moves cursor `name` forward to `seq` (never backwards); durable when it returns.
    /// Fails with [`JournalError::CursorAhead`] if `seq` is beyond the head.
    pub async fn advance_cursor(&self, name: &str, seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.set_cursor(&name, seq, false)).await?
    }

    /// Records that the consumer of cursor `name` has applied everything up to `seq`, in
    /// memory only: the position is written by the next [`Journal::flush_acks`]. An
    /// acknowledgement below the cursor's position changes only its `last_ack_ms`.
    /// Fails with [`JournalError::CursorAhead`] if `seq` is beyond the head.
    pub fn ack_cursor(&self, name: &str, seq: Seq) -> Result<()> {
        self.inner.ack_cursor(name, seq)
    }

    /// Writes every pending acknowledgement in one transaction; returns how many cursors it
    /// wrote. Run by [`Journal::flush_acks_every`], or by the owner of the journal itself.
    pub async fn flush_acks(&self) -> Result<usize> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.flush_acks()).await?
    }

    /// Writes pending acknowledgements every `every` (100–250 ms suits replica acks) until
    /// `shutdown` completes, then once more. The owner of the journal runs this for as long as
    /// consumers acknowledge with [`Journal::ack_cursor`].
    pub async fn flush_acks_every(&self, every: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut shutdown => break,
            }
            if let Err(e) = self.flush_acks().await {
                tracing::error!(error = %e, "cannot write cursor acknowledgements; will retry");
            }
        }
        if let Err(e) = self.flush_acks().await {
            tracing::error!(error = %e, "cannot write the last cursor acknowledgements");
        }
    }

    /// Sets cursor `name` to `seq` and clears its repair flag, after the consumer repaired its
    /// data by other means. A pending acknowledgement for it is dropped.
    pub async fn mark_repaired(&self, name: &str, seq: Seq) -> Result<()> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.set_cursor(&name, seq, true)).await?
    }

    /// Removes a cursor (a consumer that is gone for good).
    pub async fn remove_cursor(&self, name: &str) -> Result<bool> {
        let inner = self.inner.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || inner.remove_cursor(&name)).await?
    }
}

impl Inner {
    fn ensure_cursor(&self, name: &str, initial: Seq, protect: bool) -> Result<Cursor> {
        let w = self.lock_writer();
        let pruned = w.pruned_through;
        let gone = (initial < pruned).then(|| {
            format!(
                "journal entries {}..={} were removed by retention before this consumer registered",
                initial.0 + 1,
                pruned.0
            )
        });
        w.conn
            .execute(
                "INSERT INTO journal_cursors
                     (name, seq, needs_repair, repair_reason, updated_at_ms, protected, history_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (name) DO UPDATE SET protected = 1
                     WHERE excluded.protected = 1 AND protected = 0",
                params![
                    name,
                    initial.0 as i64,
                    gone.is_some(),
                    gone,
                    now_ms(),
                    protect,
                    self.history_id.0
                ],
            )
            .map_err(|e| self.err(e))?;
        let mut acks = self.lock_acks();
        acks.registered.insert(name.to_owned());
        let pending = acks.pending.get(name).copied();
        drop(acks);
        let mut cursor = load_cursor(&w.conn, name)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| JournalError::UnknownCursor(name.to_owned()))?;
        if let Some(p) = pending {
            p.overlay(&mut cursor);
        }
        Ok(cursor)
    }

    /// Fails if `seq` is beyond the committed head.
    fn check_not_ahead(&self, w: &Writer, name: &str, seq: Seq) -> Result<()> {
        if seq > w.head() {
            return Err(JournalError::CursorAhead {
                name: name.to_owned(),
                seq,
                head: w.head(),
            });
        }
        Ok(())
    }

    fn skip_gap(&self, name: &str, to: Seq, reason: &str) -> Result<()> {
        let w = self.lock_writer();
        self.check_not_ahead(&w, name, to)?;
        let n = w
            .conn
            .execute(
                "UPDATE journal_cursors SET seq = max(seq, ?2), needs_repair = 1,
                    repair_reason = ?3, updated_at_ms = ?4 WHERE name = ?1",
                params![name, to.0 as i64, reason, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(JournalError::UnknownCursor(name.to_owned()));
        }
        Ok(())
    }

    fn set_cursor(&self, name: &str, seq: Seq, repaired: bool) -> Result<()> {
        let w = self.lock_writer();
        self.check_not_ahead(&w, name, seq)?;
        let now = now_ms();
        let n = if repaired {
            w.conn.execute(
                "UPDATE journal_cursors SET seq = ?2, needs_repair = 0, repair_reason = NULL,
                 updated_at_ms = ?3 WHERE name = ?1",
                params![name, seq.0 as i64, now],
            )
        } else {
            w.conn.execute(
                "UPDATE journal_cursors SET seq = max(seq, ?2), updated_at_ms = ?3,
                 last_ack_ms = ?3 WHERE name = ?1",
                params![name, seq.0 as i64, now],
            )
        }
        .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(JournalError::UnknownCursor(name.to_owned()));
        }
        let mut acks = self.lock_acks();
        // A repair sets the position outright; an advance makes lower pending acks moot.
        if repaired || acks.pending.get(name).is_some_and(|p| p.seq <= seq) {
            acks.pending.remove(name);
        }
        Ok(())
    }

    fn remove_cursor(&self, name: &str) -> Result<bool> {
        let w = self.lock_writer();
        let n = w
            .conn
            .execute("DELETE FROM journal_cursors WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?;
        let mut acks = self.lock_acks();
        acks.registered.remove(name);
        acks.pending.remove(name);
        Ok(n > 0)
    }

    fn ack_cursor(&self, name: &str, seq: Seq) -> Result<()> {
        let head = self.committed_head();
        let mut acks = self.lock_acks();
        if !acks.registered.contains(name) {
            return Err(JournalError::UnknownCursor(name.to_owned()));
        }
        if seq > head {
            return Err(JournalError::CursorAhead {
                name: name.to_owned(),
                seq,
                head,
            });
        }
        let at_ms = now_ms();
        match acks.pending.get_mut(name) {
            Some(p) => {
                p.seq = p.seq.max(seq);
                p.at_ms = p.at_ms.max(at_ms);
            }
            None => {
                acks.pending
                    .insert(name.to_owned(), PendingAck { seq, at_ms });
            }
        }
        Ok(())
    }

    pub(super) fn flush_acks(&self) -> Result<usize> {
        if self.lock_acks().pending.is_empty() {
            return Ok(0);
        }
        // The writer lock is held from the snapshot to the end, so a repair cannot fall between
        // them and be overwritten by an older acknowledgement.
        let mut w = self.lock_writer();
        let batch: Vec<(String, PendingAck)> = self
            .lock_acks()
            .pending
            .iter()
            .map(|(n, p)| (n.clone(), *p))
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let err = |e| self.err(e);
        let now = now_ms();
        let tx = w.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE journal_cursors SET seq = max(seq, ?2), updated_at_ms = ?3,
                     last_ack_ms = max(coalesce(last_ack_ms, ?4), ?4) WHERE name = ?1",
                )
                .map_err(err)?;
            for (name, p) in &batch {
                stmt.execute(params![name, p.seq.0 as i64, now, p.at_ms])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        // Written: no longer pending, unless acknowledged again meanwhile.
        let mut acks = self.lock_acks();
        for (name, p) in &batch {
            if acks.pending.get(name) == Some(p) {
                acks.pending.remove(name);
            }
        }
        Ok(batch.len())
    }

    fn cursor(&self, name: &str) -> Result<Option<Cursor>> {
        // Pending first: once a flush has dropped an entry, its row is already written.
        let pending = self.lock_acks().pending.get(name).copied();
        let cursor = self.with_reader(|conn| load_cursor(conn, name).map_err(|e| self.err(e)))?;
        Ok(cursor.map(|mut c| {
            if let Some(p) = pending {
                p.overlay(&mut c);
            }
            c
        }))
    }

    fn cursors(&self) -> Result<Vec<Cursor>> {
        let pending = self.lock_acks().pending.clone();
        let mut cursors = self.with_reader(|conn| {
            let err = |e| self.err(e);
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CURSOR_COLUMNS} FROM journal_cursors ORDER BY name"
                ))
                .map_err(err)?;
            let rows = stmt.query_map([], cursor_from_row).map_err(err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(err)
        })?;
        for c in &mut cursors {
            if let Some(p) = pending.get(&c.name) {
                p.overlay(c);
            }
        }
        Ok(cursors)
    }
}

fn cursor_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Cursor> {
    Ok(Cursor {
        name: r.get(0)?,
        seq: Seq(r.get::<_, i64>(1)? as u64),
        needs_repair: r.get::<_, i64>(2)? != 0,
        repair_reason: r.get(3)?,
        updated_at_ms: r.get(4)?,
        protected: r.get::<_, i64>(5)? != 0,
        history_id: HistoryId(r.get(6)?),
        last_ack_ms: r.get(7)?,
    })
}

fn load_cursor(conn: &Connection, name: &str) -> rusqlite::Result<Option<Cursor>> {
    conn.query_row(
        &format!("SELECT {CURSOR_COLUMNS} FROM journal_cursors WHERE name = ?1"),
        params![name],
        cursor_from_row,
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::super::RetentionPolicy;
    use super::super::tests::change;
    use super::*;

    async fn journal_with(path: &std::path::Path, entries: usize) -> Journal {
        let j = Journal::open(path, RetentionPolicy::default()).unwrap();
        for _ in 0..entries {
            j.append(change(1)).await.unwrap();
        }
        j
    }

    #[tokio::test]
    async fn cursors_persist_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = journal_with(&path, 5).await;
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
    async fn a_cursor_cannot_move_past_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with(&dir.path().join("state.db"), 3).await;
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        let ahead = |r: Result<()>| matches!(r, Err(JournalError::CursorAhead { name, seq: Seq(4), head: Seq(3) }) if name == "replica");
        assert!(ahead(j.advance_cursor("replica", Seq(4)).await));
        assert!(ahead(j.ack_cursor("replica", Seq(4))));
        assert!(ahead(j.mark_repaired("replica", Seq(4)).await));
        assert!(ahead(j.skip_gap("replica", Seq(4), "test").await));
        assert!(matches!(
            j.ack_cursor("nobody", Seq(1)),
            Err(JournalError::UnknownCursor(_))
        ));
        assert_eq!(j.cursor("replica").await.unwrap().unwrap().seq, Seq(0));
        j.advance_cursor("replica", Seq(3)).await.unwrap();
        assert_eq!(j.cursor("replica").await.unwrap().unwrap().seq, Seq(3));
    }

    #[tokio::test]
    async fn a_cursor_records_its_history_and_its_last_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with(&dir.path().join("state.db"), 2).await;
        let c = j.ensure_cursor("replica", Seq(0)).await.unwrap();
        assert_eq!(&c.history_id, j.history_id());
        assert_eq!(c.last_ack_ms, None, "never acknowledged");
        j.advance_cursor("replica", Seq(1)).await.unwrap();
        let acked = j.cursor("replica").await.unwrap().unwrap().last_ack_ms;
        assert!(acked.is_some());
        j.ack_cursor("replica", Seq(2)).unwrap();
        let c = j.cursor("replica").await.unwrap().unwrap();
        assert_eq!(c.seq, Seq(2));
        assert!(c.last_ack_ms >= acked);
    }

    #[tokio::test]
    async fn a_cursor_registered_behind_retention_is_marked_for_repair() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with(&dir.path().join("state.db"), 10).await;
        j.ensure_cursor("store", Seq(0)).await.unwrap();
        j.advance_cursor("store", Seq(10)).await.unwrap();
        let r = j.apply_retention(now_ms()).await.unwrap();
        assert_eq!(r.removed_entries, 10);

        let late = j.ensure_cursor("late", Seq(3)).await.unwrap();
        assert!(late.needs_repair);
        assert_eq!(late.seq, Seq(3), "not moved past the missing entries");
        assert_eq!(
            late.repair_reason.as_deref(),
            Some(
                "journal entries 4..=10 were removed by retention before this consumer registered"
            )
        );
        let current = j.ensure_protected_cursor("current", Seq(10)).await.unwrap();
        assert!(!current.needs_repair && current.protected);
        // An existing cursor keeps its state whatever `initial` says.
        let store = j.ensure_cursor("store", Seq(0)).await.unwrap();
        assert_eq!((store.seq, store.needs_repair), (Seq(10), false));
    }

    #[tokio::test]
    async fn an_old_state_file_gains_the_new_cursor_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO journal_meta VALUES ('history_id', 'old-history');
                 CREATE TABLE journal_cursors (
                     name TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                     needs_repair INTEGER NOT NULL DEFAULT 0, repair_reason TEXT,
                     updated_at_ms INTEGER NOT NULL);
                 INSERT INTO journal_cursors (name, seq, updated_at_ms) VALUES ('store', 0, 1);",
            )
            .unwrap();
        }
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        assert_eq!(j.history_id().0, "old-history");
        let c = j.cursor("store").await.unwrap().unwrap();
        assert_eq!(c.history_id, HistoryId("old-history".into()));
        assert_eq!((c.protected, c.last_ack_ms), (false, None));
        j.ack_cursor("store", Seq(0)).unwrap();
        drop(j);
        // Reopening an up-to-date file changes nothing.
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        let c = j.cursor("store").await.unwrap().unwrap();
        assert_eq!(c.history_id, HistoryId("old-history".into()));
        assert!(
            c.last_ack_ms.is_some(),
            "written when the journal was dropped"
        );
    }

    #[tokio::test]
    async fn acknowledgements_wait_in_memory_and_are_written_in_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = journal_with(&path, 100).await;
        let names: Vec<String> = (0..10).map(|i| format!("replica-{i}")).collect();
        for n in &names {
            j.ensure_cursor(n, Seq(0)).await.unwrap();
        }
        let wal =
            |p: &std::path::Path| std::fs::metadata(p.with_extension("db-wal")).unwrap().len();
        let observer = Connection::open(&path).unwrap();
        let data_version = || -> i64 {
            observer
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .unwrap()
        };
        let written = |name: &str| -> (i64, Option<i64>) {
            observer
                .query_row(
                    "SELECT seq, last_ack_ms FROM journal_cursors WHERE name = ?1",
                    params![name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        let (version, wal_before) = (data_version(), wal(&path));

        // 1,000 acks across 10 cursors, some late and out of order.
        for k in 0..100u64 {
            for (i, n) in names.iter().enumerate() {
                let late = (k + i as u64).is_multiple_of(7) && k < 99;
                let seq = if late { k / 2 } else { k + 1 };
                j.ack_cursor(n, Seq(seq)).unwrap();
            }
        }
        assert_eq!(data_version(), version, "an ack writes nothing");
        assert_eq!(written("replica-3"), (0, None));
        assert_eq!(j.stats().await.unwrap().pending_acks, 10);
        let c = j.cursor("replica-3").await.unwrap().unwrap();
        assert_eq!(c.seq, Seq(100), "the pending position is shown");
        assert!(c.last_ack_ms.is_some());
        assert!(j.cursors().await.unwrap().iter().all(|c| c.seq == Seq(100)));

        assert_eq!(j.flush_acks().await.unwrap(), 10);
        assert_ne!(data_version(), version);
        let frame = 4096 + 24;
        assert!(
            wal(&path) - wal_before < 10 * frame,
            "fewer WAL frames than one write per cursor"
        );
        assert_eq!(j.stats().await.unwrap().pending_acks, 0);
        assert_eq!(j.flush_acks().await.unwrap(), 0, "nothing left to write");
        for n in &names {
            let (seq, last_ack) = written(n);
            assert_eq!(seq, 100);
            assert!(last_ack.is_some());
        }
        drop(observer);
        drop(j);
        let j = Journal::open(&path, RetentionPolicy::default()).unwrap();
        for c in j.cursors().await.unwrap() {
            assert_eq!(c.seq, Seq(100), "{c:?}");
            assert!(c.last_ack_ms.is_some());
        }
    }

    #[tokio::test]
    async fn a_repair_drops_an_older_pending_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal_with(&dir.path().join("state.db"), 10).await;
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        j.ack_cursor("replica", Seq(8)).unwrap();
        j.mark_repaired("replica", Seq(5)).await.unwrap();
        j.flush_acks().await.unwrap();
        assert_eq!(j.cursor("replica").await.unwrap().unwrap().seq, Seq(5));
        j.ack_cursor("replica", Seq(9)).unwrap();
        assert!(j.remove_cursor("replica").await.unwrap());
        assert_eq!(j.flush_acks().await.unwrap(), 0);
        assert!(matches!(
            j.ack_cursor("replica", Seq(9)),
            Err(JournalError::UnknownCursor(_))
        ));
    }

    #[tokio::test]
    async fn the_ack_flusher_writes_periodically_and_once_more_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let j = journal_with(&path, 3).await;
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let flusher = tokio::spawn({
            let j = j.clone();
            async move {
                j.flush_acks_every(Duration::from_millis(20), async {
                    let _ = stopped.await;
                })
                .await;
            }
        });
        let observer = Connection::open(&path).unwrap();
        let written = || -> i64 {
            observer
                .query_row(
                    "SELECT seq FROM journal_cursors WHERE name = 'replica'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        j.ack_cursor("replica", Seq(2)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while written() != 2 {
            assert!(std::time::Instant::now() < deadline, "not flushed in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        j.ack_cursor("replica", Seq(3)).unwrap();
        stop.send(()).unwrap();
        flusher.await.unwrap();
        assert_eq!(written(), 3);
    }
}
