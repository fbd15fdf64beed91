//! `TaskStore`: tasks and their per-series checkpoints in the local state file, so a task
//! survives a restart of the master and resumes where it stopped.
//!
//! What could not be written (the file's disk is full) is kept in memory and shown instead of
//! the stored row ([`Unsaved`]): a task waiting for writes is `paused` with the reason, and a
//! task that ended while its end could not be saved shows that end until a retry saves it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use dms_common::SeriesKey;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::watch;

use super::{Task, TaskCounters, TaskKind, TaskParams, TaskStatus};
use dms_common::state::{StateError, StateTables};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id               TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    params           TEXT NOT NULL,
    status           TEXT NOT NULL,
    progress         REAL NOT NULL DEFAULT 0,
    message          TEXT NOT NULL DEFAULT '',
    counters         TEXT NOT NULL DEFAULT '{}',
    error            TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    started_at_ms    INTEGER,
    completed_at_ms  INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, seq);
CREATE TABLE IF NOT EXISTS task_checkpoints (
    task_id  TEXT NOT NULL,
    symbol   TEXT NOT NULL,
    interval TEXT NOT NULL,
    state    TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, symbol, interval)
);
";

/// Why the task store failed.
pub type TaskStoreError = StateError;

/// How a series ended within a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    Done,
    /// Failed; `retryable` failures get a second pass.
    Failed {
        reason: String,
        retryable: bool,
    },
}

/// Tasks in the state file.
#[derive(Debug, Clone)]
pub struct TaskStore {
    tables: StateTables,
    /// Counts the writes to tasks, so watchers wake when one changed.
    changes: Arc<watch::Sender<u64>>,
    unsaved: Arc<Mutex<HashMap<String, Unsaved>>>,
}

/// A task's state as memory knows it while the state file cannot take it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsaved {
    pub status: TaskStatus,
    pub message: String,
    pub error: Option<String>,
    /// The final counters, for an end that could not be saved.
    pub counters: Option<TaskCounters>,
    pub completed_at_ms: Option<i64>,
}

impl Unsaved {
    fn apply(&self, task: &mut Task) {
        task.status = self.status;
        task.message.clone_from(&self.message);
        task.error.clone_from(&self.error);
        if let Some(c) = &self.counters {
            task.counters = c.clone();
        }
        if self.completed_at_ms.is_some() {
            task.completed_at_ms = self.completed_at_ms;
            if self.status == TaskStatus::Completed {
                task.progress = 100.0;
            }
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl TaskStore {
    pub fn open(path: &Path) -> Result<TaskStore, TaskStoreError> {
        Ok(TaskStore {
            tables: StateTables::open(path, "task store", SCHEMA)?,
            changes: Arc::new(watch::channel(0).0),
            unsaved: Arc::default(),
        })
    }

    /// Shows `task_id` as `state` instead of its stored row until [`TaskStore::saved`].
    pub fn keep_unsaved(&self, task_id: &str, state: Unsaved) {
        let changed = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id.to_owned(), state.clone())
            != Some(state);
        if changed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The stored row of `task_id` is current again.
    pub fn saved(&self, task_id: &str) {
        let removed = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id)
            .is_some();
        if removed {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn shown(&self, mut task: Task) -> Task {
        if let Some(u) = self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&task.id)
        {
            u.apply(&mut task);
        }
        task
    }

    /// The reason a task is paused for, while one waits for the state file to take writes.
    pub fn write_error(&self) -> Option<String> {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|u| u.status == TaskStatus::Paused)
            .and_then(|u| u.error.clone())
    }

    fn any_unsaved(&self) -> bool {
        !self
            .unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TaskStoreError> {
        self.tables.with(f).await
    }

    /// Like `with`, for a change to tasks: watchers are woken after it.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, TaskStoreError> {
        let result = self.tables.with(f).await;
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
        result
    }

    /// A receiver that sees a change each time a task is written (created, started, its
    /// progress, its end, a cancel request): watchers re-read the task then.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Creates a pending task.
    pub async fn create(
        &self,
        kind: TaskKind,
        name: String,
        params: TaskParams,
    ) -> Result<Task, TaskStoreError> {
        let params_json = serde_json::to_string(&params).expect("params serialize");
        let created = now_ms();
        self.write(move |c| {
            let seq: i64 = c.query_row("SELECT coalesce(max(seq), 0) + 1 FROM tasks", [], |r| {
                r.get(0)
            })?;
            let id = format!("{}-{seq:06}", kind.as_str());
            c.execute(
                "INSERT INTO tasks (id, seq, kind, name, params, status, message, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 'waiting to start', ?6)",
                params![id, seq, kind.as_str(), name, params_json, created],
            )?;
            // Read back under the same lock: the runner may start it right after.
            c.query_row(
                &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
                params![id],
                task_from_row,
            )
        })
        .await
    }

    /// One task.
    pub async fn get(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        let id = id.to_owned();
        let stored = self
            .with(move |c| {
                c.query_row(
                    &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
                    params![id],
                    task_from_row,
                )
                .optional()
            })
            .await?;
        Ok(stored.map(|t| self.shown(t)))
    }

    /// Tasks newest first, optionally only of one status.
    pub async fn list(
        &self,
        status: Option<TaskStatus>,
        limit: usize,
    ) -> Result<Vec<Task>, TaskStoreError> {
        // A task shown from memory may have another status than its row: filter after that.
        let filter_in_memory = status.is_some() && self.any_unsaved();
        let (sql_status, sql_limit) = match filter_in_memory {
            true => (None, i64::MAX),
            false => (status, i64::try_from(limit).unwrap_or(i64::MAX)),
        };
        let rows = self
            .with(move |c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM tasks WHERE (?1 IS NULL OR status = ?1) ORDER BY seq DESC LIMIT ?2"
                ))?;
                let rows = stmt.query_map(
                    params![sql_status.map(|s| s.as_str()), sql_limit],
                    task_from_row,
                )?;
                rows.collect::<rusqlite::Result<Vec<Task>>>()
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|t| self.shown(t))
            .filter(|t| status.is_none_or(|s| t.status == s))
            .take(limit)
            .collect())
    }

    /// The oldest pending task.
    pub async fn next_pending(&self) -> Result<Option<Task>, TaskStoreError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM tasks WHERE status = 'pending' ORDER BY seq LIMIT 1"
                ),
                [],
                task_from_row,
            )
            .optional()
        })
        .await
    }

    /// Tasks that were running when the master stopped go back to pending, to resume.
    pub async fn requeue_interrupted(&self) -> Result<Vec<String>, TaskStoreError> {
        self.write(|c| {
            let ids: Vec<String> = c
                .prepare("SELECT id FROM tasks WHERE status = 'running' ORDER BY seq")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            c.execute(
                "UPDATE tasks SET status = 'pending', message = 'resuming after a restart' WHERE status = 'running'",
                [],
            )?;
            Ok(ids)
        })
        .await
    }

    /// Marks a pending task running; false if it is no longer pending (cancelled meanwhile).
    pub async fn start(&self, id: &str) -> Result<bool, TaskStoreError> {
        let id = id.to_owned();
        let now = now_ms();
        self.write(move |c| {
            c.execute(
                "UPDATE tasks SET status = 'running', started_at_ms = coalesce(started_at_ms, ?2)
                 WHERE id = ?1 AND status = 'pending' AND cancel_requested = 0",
                params![id, now],
            )
            .map(|n| n == 1)
        })
        .await
    }

    /// Records progress.
    pub async fn progress(
        &self,
        id: &str,
        progress: f64,
        message: String,
        counters: &TaskCounters,
    ) -> Result<(), TaskStoreError> {
        let id = id.to_owned();
        let counters = serde_json::to_string(counters).expect("counters serialize");
        self.write(move |c| {
            c.execute(
                "UPDATE tasks SET progress = ?2, message = ?3, counters = ?4 WHERE id = ?1",
                params![id, progress, message, counters],
            )
            .map(|_| ())
        })
        .await
    }

    /// Ends a task with a final status.
    pub async fn finish(
        &self,
        id: &str,
        status: TaskStatus,
        message: String,
        error: Option<String>,
        counters: &TaskCounters,
    ) -> Result<(), TaskStoreError> {
        let id = id.to_owned();
        let key = id.clone();
        // Completed: 100. Failed: the share of series that ended (done or failed), so a task
        // that failed on every series reads 100 too. Cancelled: where it stopped.
        let ended = counters.series_done + counters.series_skipped + counters.series_failed;
        let progress = match status {
            TaskStatus::Completed => 100.0,
            TaskStatus::Failed | TaskStatus::Partial if counters.series_total > 0 => {
                100.0 * ended as f64 / counters.series_total as f64
            }
            _ => -1.0,
        };
        let counters = serde_json::to_string(counters).expect("counters serialize");
        let now = now_ms();
        self.write(move |c| {
            c.execute(
                "UPDATE tasks SET status = ?2, message = ?3, error = ?4, counters = ?5,
                    completed_at_ms = ?6,
                    progress = CASE WHEN ?7 >= 0 THEN ?7 ELSE progress END
                 WHERE id = ?1",
                params![id, status.as_str(), message, error, counters, now, progress],
            )
            .map(|_| ())
        })
        .await?;
        self.saved(&key);
        Ok(())
    }

    /// Asks a task to stop. A pending task is cancelled at once; returns the task after.
    pub async fn request_cancel(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        let key = id.to_owned();
        let now = now_ms();
        self.write(move |c| {
            c.execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE id = ?1 AND status IN ('pending', 'running')",
                params![key],
            )?;
            c.execute(
                "UPDATE tasks SET status = 'cancelled', message = 'cancelled before it started',
                    completed_at_ms = ?2 WHERE id = ?1 AND status = 'pending'",
                params![key, now],
            )?;
            Ok(())
        })
        .await?;
        self.get(id).await
    }

    /// Records how a series ended within a task, and the task's counters with it (one
    /// transaction: a resumed task counts every series it skips).
    pub async fn checkpoint(
        &self,
        task_id: &str,
        series: &SeriesKey,
        checkpoint: Checkpoint,
        counters: &TaskCounters,
    ) -> Result<(), TaskStoreError> {
        let counters = serde_json::to_string(counters).expect("counters serialize");
        let (task_id, symbol, interval) = (
            task_id.to_owned(),
            series.symbol.to_string(),
            series.interval.to_string(),
        );
        let (state, detail) = match checkpoint {
            Checkpoint::Done => ("done", String::new()),
            Checkpoint::Failed { reason, retryable } => {
                (if retryable { "retry" } else { "failed" }, reason)
            }
        };
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO task_checkpoints (task_id, symbol, interval, state, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (task_id, symbol, interval) DO UPDATE SET state = excluded.state, detail = excluded.detail",
                params![task_id, symbol, interval, state, detail],
            )?;
            tx.execute(
                "UPDATE tasks SET counters = ?2 WHERE id = ?1",
                params![task_id, counters],
            )?;
            tx.commit()
        })
        .await
    }

    /// Every checkpoint of a task: (symbol, interval) → (state, detail).
    pub async fn checkpoints(
        &self,
        task_id: &str,
    ) -> Result<Vec<(String, String, String, String)>, TaskStoreError> {
        let task_id = task_id.to_owned();
        self.with(move |c| {
            c.prepare(
                "SELECT symbol, interval, state, detail FROM task_checkpoints WHERE task_id = ?1",
            )?
            .query_map(params![task_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })
        .await
    }
}

const COLUMNS: &str = "id, kind, name, params, status, progress, message, counters, error,
    cancel_requested, created_at_ms, started_at_ms, completed_at_ms";

fn task_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let kind: String = r.get(1)?;
    let status: String = r.get(4)?;
    let params: String = r.get(3)?;
    let counters: String = r.get(7)?;
    Ok(Task {
        id: r.get(0)?,
        kind: kind.parse().map_err(|e: String| bad(1, e))?,
        name: r.get(2)?,
        params: serde_json::from_str(&params).map_err(|e| bad(3, e.to_string()))?,
        status: status.parse().map_err(|e: String| bad(4, e))?,
        progress: r.get(5)?,
        message: r.get(6)?,
        counters: serde_json::from_str(&counters).unwrap_or_default(),
        error: r.get(8)?,
        cancel_requested: r.get::<_, i64>(9)? != 0,
        created_at_ms: r.get(10)?,
        started_at_ms: r.get(11)?,
        completed_at_ms: r.get(12)?,
    })
}
