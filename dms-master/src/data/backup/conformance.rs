//! A backup read as a store ([`BackupStore`]) passes the `BarStore` conformance suite: each
//! case writes to a SQLite store, and every read goes to a backup written from it at that
//! moment (`dms_store_conformance::published`), so what a backup holds is held to the same
//! expectations as every store.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dms_common::store::SharedStore;
use dms_common::store::sqlite::SqliteStore;
use dms_store_conformance::published::{Publish, Published};
use tokio_util::sync::CancellationToken;

use super::store::BackupStore;
use super::write::{BackupSource, write_backup};

/// Writes a backup of the written store into a fresh directory and opens it.
#[derive(Debug)]
struct ToBackup {
    root: PathBuf,
    state: PathBuf,
    made: AtomicU64,
}

#[async_trait::async_trait]
impl Publish for ToBackup {
    async fn publish(&self, written: &SharedStore) -> SharedStore {
        let n = self.made.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(n.to_string());
        std::fs::create_dir_all(&dir).expect("backup directory");
        let source = BackupSource {
            store: written.clone(),
            sqlite_store: None,
            state: self.state.clone(),
            journal_head: 0,
        };
        let manifest = write_backup(
            &source,
            &dir,
            "conformance",
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .expect("the backup is written");
        Arc::new(BackupStore::open(&dir.join(&manifest.name)).expect("the backup opens"))
    }
}

async fn make(case: &'static str) -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let written: SharedStore =
        Arc::new(SqliteStore::open(dir.path().join(format!("{case}.db"))).expect("store"));
    let state = dir.path().join("state.db");
    rusqlite::Connection::open(&state)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x INTEGER)"))
        .expect("a state file");
    let publish = ToBackup {
        root: dir.path().join("backups"),
        state,
        made: AtomicU64::new(0),
    };
    (Arc::new(Published::new(written, publish)), dir)
}

dms_store_conformance::store_conformance_tests!(make);
