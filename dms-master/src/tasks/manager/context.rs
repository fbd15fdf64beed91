//! [`TaskContext`]: what the runner and every task kind work with; [`TaskFiles`]: the files
//! tasks write and read beside the store.

use std::sync::{Arc, Mutex};

use dms_common::journal::{Journal, Seq};
use dms_common::store::SharedStore;
use dms_common::store::config::StoreConfig;
use tokio::sync::watch;

use crate::alerts::Alerts;
use crate::data::import::source::ImportSummary;
use crate::pipeline::catalog::Catalog;
use crate::pipeline::ingest::Ingestor;
use crate::sources::registry::SqlTables;
use crate::tasks::config::TasksConfig;
use crate::tasks::store::TaskStore;
use crate::universe::Universe;

/// What the runner needs.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub tasks: TaskStore,
    pub universe: Arc<Universe>,
    pub ingestor: Ingestor,
    pub journal: Journal,
    pub store: SharedStore,
    pub catalog: Catalog,
    /// The last journal seq the store applied.
    pub applied: watch::Receiver<Seq>,
    pub config: TasksConfig,
    /// Where task failures and poor provider success rates are reported.
    pub alerts: Alerts,
    /// The SQL-table sources, for source imports (the CSV sources are the universe's).
    pub tables: Arc<SqlTables>,
    /// What each source import did, for the status page (newest last).
    pub imports: Arc<Mutex<Vec<ImportSummary>>>,
    /// The files tasks write and read beside the state file.
    pub files: TaskFiles,
    /// The stores and replicas migrations and checks may name.
    pub targets: crate::data::targets::Targets,
}

/// The files tasks write and read besides the store: file import quarantines, backups.
#[derive(Debug, Clone)]
pub struct TaskFiles {
    /// Where file imports write the rows that are not bars (`<task>.csv`).
    pub import_quarantine_dir: std::path::PathBuf,
    /// Backups: the settings, their directory, and what a backup copies besides the series.
    pub backup: crate::data::backup::BackupConfig,
    pub backup_dir: std::path::PathBuf,
    pub state_path: std::path::PathBuf,
    /// The SQLite store's file (copied whole into backups).
    pub sqlite_store: Option<std::path::PathBuf>,
    /// Directories besides `backup_dir` a backup may be named in by absolute path
    /// (`file_import.allowed_dirs`).
    pub allowed_dirs: Vec<std::path::PathBuf>,
}

impl TaskFiles {
    /// The same, with `dirs` as the directories outside `backup_dir` backups may be read from.
    pub fn with_allowed_dirs(mut self, dirs: &[std::path::PathBuf]) -> TaskFiles {
        self.allowed_dirs = dirs.to_vec();
        self
    }

    /// The files of a master whose state file is `state_path` in the directory `state_dir`
    /// (absolute), with these settings.
    pub fn new(
        state_path: &std::path::Path,
        state_dir: &std::path::Path,
        backup: &crate::data::backup::BackupConfig,
        store: &StoreConfig,
    ) -> TaskFiles {
        TaskFiles {
            import_quarantine_dir: crate::data::import::file::run::quarantine_dir(state_dir),
            backup: backup.clone(),
            backup_dir: backup.dir(state_dir),
            state_path: state_path.to_owned(),
            sqlite_store: match store {
                StoreConfig::Sqlite(s) => Some(s.path.clone()),
                _ => None,
            },
            allowed_dirs: Vec::new(),
        }
    }
}
