//! [`ReaderPool`]: the journal's read-only connections, so concurrent readers (the store
//! applier, the status page, each replica stream) do not wait for one another.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Read connections open at most at once; a reader beyond that waits for one to be returned.
pub(super) const MAX_READERS: usize = 8;

/// Read-only connections to the state file, opened on first need and reused.
#[derive(Debug)]
pub(super) struct ReaderPool {
    path: PathBuf,
    state: Mutex<PoolState>,
    returned: Condvar,
}

#[derive(Debug, Default)]
struct PoolState {
    idle: Vec<Connection>,
    /// Connections that exist, idle or lent out.
    open: usize,
}

impl ReaderPool {
    pub(super) fn new(path: &Path) -> ReaderPool {
        ReaderPool {
            path: path.to_path_buf(),
            state: Mutex::default(),
            returned: Condvar::new(),
        }
    }

    /// A connection for the caller alone until the returned guard is dropped.
    pub(super) fn get(&self) -> rusqlite::Result<PooledReader<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(self.lend(conn));
            }
            if state.open < MAX_READERS {
                state.open += 1;
                break;
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        drop(state);
        // Opened outside the lock; the slot is reserved above and given back if opening fails.
        match open_reader(&self.path) {
            Ok(conn) => Ok(self.lend(conn)),
            Err(e) => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).open -= 1;
                self.returned.notify_one();
                Err(e)
            }
        }
    }

    fn lend(&self, conn: Connection) -> PooledReader<'_> {
        PooledReader {
            pool: self,
            conn: Some(conn),
        }
    }

    #[cfg(test)]
    pub(super) fn open_connections(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).open
    }
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// A connection lent by a [`ReaderPool`]; goes back to the pool when dropped.
#[derive(Debug)]
pub(super) struct PooledReader<'a> {
    pool: &'a ReaderPool,
    conn: Option<Connection>,
}

impl Deref for PooledReader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for PooledReader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut state = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
            state.idle.push(conn);
            drop(state);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::change;
    use super::super::{Journal, RetentionPolicy, Seq};
    use super::*;

    #[tokio::test]
    async fn a_reader_in_use_does_not_hold_up_other_reads() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        j.append(change(3)).await.unwrap();
        j.ensure_cursor("replica", Seq(0)).await.unwrap();
        // A slow reader (a replica stream) keeps its connection in the middle of a read.
        let held = j.inner.readers.get().unwrap();
        held.execute_batch("BEGIN; SELECT count(*) FROM journal;")
            .unwrap();
        let others = async {
            j.read_after(Seq(0), 10, u64::MAX).await.unwrap();
            j.cursors().await.unwrap();
            j.check().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(5), others)
            .await
            .expect("other reads proceed while one reader is busy");
        held.execute_batch("COMMIT").unwrap();
    }

    #[tokio::test]
    async fn the_reader_pool_is_bounded_and_reuses_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        j.append(change(1)).await.unwrap();
        let pool = &j.inner.readers;
        let mut held: Vec<_> = (0..MAX_READERS).map(|_| pool.get().unwrap()).collect();
        let waiting = tokio::spawn({
            let j = j.clone();
            async move { j.read_after(Seq(0), 10, u64::MAX).await.unwrap().len() }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "a reader beyond the limit waits");
        held.pop();
        let read = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a returned connection serves the waiting reader")
            .unwrap();
        assert_eq!(read, 1);
        drop(held);
        for _ in 0..20 {
            j.read_after(Seq(0), 10, u64::MAX).await.unwrap();
        }
        assert_eq!(pool.open_connections(), MAX_READERS);
    }
}
