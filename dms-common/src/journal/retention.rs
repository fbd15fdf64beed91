//! Retention: removing the entries every consumer has passed, and beyond the configured size or
//! age older ones too, in short transactions that let appends through between them.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior, params};

use super::{Inner, Journal, Result, Seq};

/// Entries removed per transaction; the writer is free between two of them.
const RETENTION_CHUNK: u64 = 10_000;

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

impl RetentionReport {
    fn add(&mut self, chunk: RetentionReport) {
        self.removed_entries += chunk.removed_entries;
        self.removed_bytes += chunk.removed_bytes;
        self.cursors_marked.extend(chunk.cursors_marked);
    }
}

impl Journal {
    /// Applies the retention policy; `now_ms` is the current time in Unix milliseconds.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.apply_retention(now_ms)).await?
    }
}

/// What one pass may remove at most, fixed when it starts.
#[derive(Debug, Clone, Copy)]
struct PassBounds {
    /// The head when the pass started: later entries are left to the next pass.
    end: Seq,
    /// The newest entry older than the age limit, if any.
    expired_through: Option<Seq>,
}

impl Inner {
    fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        // Yielding gives waiting appenders the writer before the next chunk takes it again.
        self.apply_retention_in_chunks(now_ms, RETENTION_CHUNK, std::thread::yield_now)
    }

    /// One retention pass, removing at most `chunk` entries per transaction and calling
    /// `between_chunks` with the writer released after each transaction that may be followed
    /// by another.
    fn apply_retention_in_chunks(
        &self,
        now_ms: i64,
        chunk: u64,
        mut between_chunks: impl FnMut(),
    ) -> Result<RetentionReport> {
        let _pass = self
            .retention_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Cursors at their latest acknowledged positions, so none is marked for entries its
        // consumer already has.
        self.flush_acks()?;
        let age_limit = now_ms.saturating_sub(self.retention.max_age.as_millis() as i64);
        let bounds = PassBounds {
            end: self.committed_head(),
            // On a read connection, before the writer is taken: the only unbounded scan.
            expired_through: self
                .with_reader(|c| expired_through(c, age_limit).map_err(|e| self.err(e)))?,
        };
        let mut report = RetentionReport::default();
        loop {
            let (removed, more) = self.retention_chunk(now_ms, bounds, chunk)?;
            report.add(removed);
            if !more {
                break;
            }
            between_chunks();
        }
        report.cursors_marked.sort();
        Ok(report)
    }

    /// Removes up to `chunk` entries in one transaction; returns what it did and whether the
    /// pass may have more to remove.
    fn retention_chunk(
        &self,
        now_ms: i64,
        bounds: PassBounds,
        chunk: u64,
    ) -> Result<(RetentionReport, bool)> {
        let mut guard = self.lock_writer();
        let w = &mut *guard;
        let pruned = w.pruned_through;
        let limit = Seq(bounds.end.0.min(pruned.0 + chunk));
        if limit <= pruned {
            return Ok((RetentionReport::default(), false));
        }
        let (head, total_bytes) = (w.head(), w.bytes);
        let err = |e| self.err(e);
        // Immediate: other connections write to this file between our read and our delete.
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let cut = self
            .cut(&tx, head, total_bytes, pruned, limit, bounds)
            .map_err(err)?;
        if cut <= pruned {
            return Ok((RetentionReport::default(), false));
        }
        let (removed_entries, removed_bytes): (i64, i64) = tx
            .query_row(
                "SELECT count(*), coalesce(sum(bytes), 0) FROM journal WHERE seq > ?1 AND seq <= ?2",
                params![pruned.0 as i64, cut.0 as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        tx.execute(
            "DELETE FROM journal WHERE seq > ?1 AND seq <= ?2",
            params![pruned.0 as i64, cut.0 as i64],
        )
        .map_err(err)?;
        tx.execute(
            "INSERT INTO journal_meta (key, value) VALUES ('pruned_through', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
            params![cut.0.to_string()],
        )
        .map_err(err)?;
        let cursors_marked = {
            let mut stmt = tx
                .prepare(
                    "UPDATE journal_cursors SET needs_repair = 1, updated_at_ms = ?2,
                        repair_reason = 'journal entries ' || (seq + 1) || '..=' || ?1
                            || ' were removed by retention before this consumer applied them'
                     WHERE needs_repair = 0 AND protected = 0 AND seq < ?1
                     RETURNING name",
                )
                .map_err(err)?;
            stmt.query_map(params![cut.0 as i64, now_ms], |r| r.get::<_, String>(0))
                .map_err(err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(err)?
        };
        tx.commit().map_err(err)?;
        w.pruned_through = cut;
        w.entries = w.entries.saturating_sub(removed_entries as u64);
        w.bytes = w.bytes.saturating_sub(removed_bytes as u64);
        let report = RetentionReport {
            removed_entries: removed_entries as u64,
            removed_bytes: removed_bytes as u64,
            cursors_marked,
        };
        Ok((report, cut == limit && limit < bounds.end))
    }

    /// Where this chunk cuts: every entry up to the returned seq goes. Reads at most the
    /// entries between `pruned` and `limit`.
    fn cut(
        &self,
        conn: &Connection,
        head: Seq,
        total_bytes: u64,
        pruned: Seq,
        limit: Seq,
        bounds: PassBounds,
    ) -> rusqlite::Result<Seq> {
        let policy = self.retention;
        // Everything every cursor has applied can go.
        let min_needed: Option<i64> =
            conn.query_row("SELECT min(seq) FROM journal_cursors", [], |r| r.get(0))?;
        let mut cut = min_needed.map_or(head, |s| Seq(s as u64));
        // Beyond the limits, older entries go too, needed or not.
        if let Some(expired) = bounds.expired_through {
            cut = cut.max(expired);
        }
        if cut < limit && total_bytes > policy.max_bytes {
            let below: i64 = conn.query_row(
                "SELECT coalesce(sum(bytes), 0) FROM journal WHERE seq > ?1 AND seq <= ?2",
                params![pruned.0 as i64, cut.0 as i64],
                |r| r.get(0),
            )?;
            let mut kept = total_bytes.saturating_sub(below as u64);
            if kept > policy.max_bytes {
                // Remove the oldest entries until what is left fits the budget.
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, bytes FROM journal WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
                )?;
                let mut rows = stmt.query(params![cut.max(pruned).0 as i64, limit.0 as i64])?;
                while let Some(row) = rows.next()? {
                    cut = Seq(row.get::<_, i64>(0)? as u64);
                    kept = kept.saturating_sub(row.get::<_, i64>(1)? as u64);
                    if kept <= policy.max_bytes {
                        break;
                    }
                }
            }
        }
        // Never past a protected cursor: its entries exist nowhere else.
        let protected_min: Option<i64> = conn.query_row(
            "SELECT min(seq) FROM journal_cursors WHERE protected = 1",
            [],
            |r| r.get(0),
        )?;
        if let Some(p) = protected_min {
            cut = cut.min(Seq(p as u64));
        }
        Ok(cut.min(limit))
    }
}

/// The newest seq among entries committed before `?1`. Without `INDEXED BY`, SQLite's shortcut
/// for `max(seq)` walks back from the newest entry through every entry still young enough.
const EXPIRED_THROUGH: &str =
    "SELECT max(seq) FROM journal INDEXED BY journal_committed_at WHERE committed_at_ms < ?1";

/// The newest seq among entries committed before `age_limit_ms` (an index range scan over
/// those entries only).
fn expired_through(conn: &Connection, age_limit_ms: i64) -> rusqlite::Result<Option<Seq>> {
    let seq: Option<i64> = conn.query_row(EXPIRED_THROUGH, params![age_limit_ms], |r| r.get(0))?;
    Ok(seq.map(|s| Seq(s as u64)))
}

#[cfg(test)]
mod tests {
    use super::super::tests::change;
    use super::super::{JournalError, now_ms};
    use super::*;

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
    async fn retention_removes_in_bounded_chunks_and_lets_appends_through_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RetentionPolicy {
            max_bytes: 1,
            max_age: Duration::from_secs(3600),
        };
        let j = Journal::open(dir.path().join("state.db"), policy).unwrap();
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        j.append_all((0..35).map(|_| change(2)).collect())
            .await
            .unwrap();
        let inner = &j.inner;
        let mut pruned_between = Vec::new();
        let report = inner
            .apply_retention_in_chunks(now_ms(), 10, || {
                let w = inner
                    .writer
                    .try_lock()
                    .expect("the writer is free between chunks");
                pruned_between.push(w.pruned_through);
                drop(w);
                inner.append_all(&[change(2)]).unwrap();
            })
            .unwrap();
        assert_eq!(pruned_between, [Seq(10), Seq(20), Seq(30)]);
        assert_eq!(report.removed_entries, 35, "{report:?}");
        assert_eq!(report.cursors_marked, ["replica"], "marked once");
        let reason = j.cursor("replica").await.unwrap().unwrap().repair_reason;
        assert_eq!(
            reason.as_deref(),
            Some(
                "journal entries 1..=10 were removed by retention before this consumer applied them"
            )
        );
        // Entries appended during the pass stay, dense after the removed ones.
        let stats = j.stats().await.unwrap();
        assert_eq!(
            (stats.pruned_through, stats.head, stats.entries),
            (Seq(35), Seq(38), 3)
        );
        let left = j.read_after(Seq(35), 10, u64::MAX).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [Seq(36), Seq(37), Seq(38)]
        );
    }

    #[tokio::test]
    async fn the_age_limit_is_found_through_the_committed_at_index() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        let plan: Vec<String> = j
            .inner
            .with_reader(|conn| {
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {EXPIRED_THROUGH}"))
                    .unwrap();
                let rows = stmt.query_map([1], |r| r.get::<_, String>(3)).unwrap();
                Ok(rows.map(|r| r.unwrap()).collect())
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|d| d.contains("journal_committed_at (committed_at_ms<?)")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn retention_counts_acknowledgements_not_yet_written() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RetentionPolicy {
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
        };
        let j = Journal::open(dir.path().join("state.db"), policy).unwrap();
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        for _ in 0..5 {
            j.append(change(1)).await.unwrap();
        }
        j.ack_cursor("replica", Seq(5)).unwrap();
        let r = j.apply_retention(now_ms()).await.unwrap();
        assert_eq!(r.removed_entries, 5);
        assert!(r.cursors_marked.is_empty());
        assert!(!j.cursor("replica").await.unwrap().unwrap().needs_repair);
    }
}
