//! `StateTables`: a connection to the daemon's local state file (the file that also holds the
//! journal) for one group of tables — the catalog, the quarantine, the tasks — with their
//! schema applied at open and every call run on tokio's blocking pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::journal::open_state_connection;
use rusqlite::Connection;

/// Why a state table could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{tables} in {path}: {message}")]
pub struct StateError {
    tables: &'static str,
    path: PathBuf,
    message: String,
}

/// One connection to the state file, shared by clones.
#[derive(Debug, Clone)]
pub struct StateTables {
    tables: &'static str,
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl StateError {
    /// An error of the `tables` group that is not SQLite's (e.g. a stored value that no longer
    /// decodes).
    pub fn new(tables: &'static str, message: impl Into<String>) -> Self {
        StateError {
            tables,
            path: PathBuf::new(),
            message: message.into(),
        }
    }
}

impl StateTables {
    /// Opens the state file at `path` and creates `schema` (named `tables` in errors).
    pub fn open(path: &Path, tables: &'static str, schema: &str) -> Result<Self, StateError> {
        let err = |e: rusqlite::Error| StateError {
            tables,
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let conn = open_state_connection(path).map_err(err)?;
        conn.execute_batch(schema).map_err(err)?;
        Ok(StateTables {
            tables,
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = self.conn.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            f(&mut conn.lock().unwrap_or_else(|p| p.into_inner()))
        })
        .await;
        let message = match outcome {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("task failed: {e}"),
        };
        Err(StateError {
            tables: self.tables,
            path: self.path.clone(),
            message,
        })
    }
}
