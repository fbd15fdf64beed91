//! Background tasks: full imports, incremental updates, gap backfills and validation runs.
//!
//! A [`Task`] is persisted in the local state file ([`store::TaskStore`]) with its kind,
//! parameters, status (`pending`, `running`, `completed`, `failed`, `cancelled`), progress
//! 0–100 with a message, counters, and a checkpoint per finished series. The
//! [`manager::TaskManager`] runs one task at a time, oldest first; the others wait as pending.
//! A master killed mid-task finds the task `running` at its next start, puts it back in the
//! queue and resumes it without fetching the series its checkpoints say are done.

//!
//! # Layout
//!
//! - this module: [`Task`], its kind, parameters, status and counters.
//! - [`store`]: [`store::TaskStore`], the tasks and checkpoints in the state file.
//! - [`manager`]: [`manager::TaskManager`], the queue and the runner, with a module per task
//!   kind (update, backfill, validate, imports, backups, migrate and check).
//! - [`request`]: a task request as sent to the REST API or the admin service, checked.
//! - [`config`]: [`config::TasksConfig`], the `tasks:` section.
//!
//! May import `data`, `pipeline`, `universe`, `sources`, `alerts` and `metrics`.

pub mod config;
pub mod manager;
pub mod request;
pub mod store;

use crate::universe::Selection;
use std::fmt;
use std::str::FromStr;

use dms_common::{Interval, Symbol, Timestamp};
use serde::{Deserialize, Serialize};

/// Most days an update may re-fetch (and a scheduled job's window may span).
pub const MAX_DAYS: u32 = 36_500;

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Fetch a whole date range for every selected series.
    FullImport,
    /// Fetch from each series' last bar (minus a re-fetch window) to now.
    IncrementalUpdate,
    /// Fetch the expected bars that are missing (gaps).
    Backfill,
    /// Check stored bars against the quality rules; changes nothing.
    Validate,
    /// Read every file of a file source (the start-up import of a CSV directory); files whose
    /// bars the store already holds unchanged journal nothing.
    SourceImport,
    /// Copy every series into another store (`params.target`), then check the two agree.
    Migrate,
    /// Compare the store with another (`params.target`) and list every differing bar.
    Check,
    /// Read a file (`params.file`: CSV, JSON, xlsx or Parquet) into the store.
    FileImport,
    /// Write a backup of the bars and the state (`backup.dir`), then apply the retention.
    Backup,
    /// Check a backup's files (`params.backup`) against its manifest.
    VerifyBackup,
    /// Copy a backup's bars (`params.backup`) into the store through the journal, or with
    /// `params.dry_run` report what that would change.
    Restore,
}

impl TaskKind {
    /// Every kind.
    pub const ALL: [TaskKind; 11] = [
        TaskKind::FullImport,
        TaskKind::IncrementalUpdate,
        TaskKind::Backfill,
        TaskKind::Validate,
        TaskKind::SourceImport,
        TaskKind::Migrate,
        TaskKind::Check,
        TaskKind::FileImport,
        TaskKind::Backup,
        TaskKind::VerifyBackup,
        TaskKind::Restore,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::FullImport => "full_import",
            TaskKind::IncrementalUpdate => "incremental_update",
            TaskKind::Backfill => "backfill",
            TaskKind::Validate => "validate",
            TaskKind::SourceImport => "source_import",
            TaskKind::Migrate => "migrate",
            TaskKind::Check => "check",
            TaskKind::FileImport => "file_import",
            TaskKind::Backup => "backup",
            TaskKind::VerifyBackup => "verify_backup",
            TaskKind::Restore => "restore",
        }
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown task kind {s:?}"))
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    Running,
    /// Running, but waiting for its state (or its bars) to be writable again; never stored,
    /// only shown while it lasts.
    Paused,
    /// Every series done or skipped.
    Completed,
    /// Ended with some series failed (after their second pass) and others done.
    Partial,
    /// Could not run, or every series failed.
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Paused,
        TaskStatus::Completed,
        TaskStatus::Partial,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Paused => "paused",
            TaskStatus::Completed => "completed",
            TaskStatus::Partial => "partial",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Partial
                | TaskStatus::Failed
                | TaskStatus::Cancelled
        )
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskStatus::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown status {s:?}; use pending, running, paused, completed, partial, failed or cancelled"
                )
            })
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a task works on. Absent fields mean "everything configured" / defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// Only these symbols (default: every symbol of every watchlist and file source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<Symbol>>,
    /// Only this interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Only series of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Full import: first bar time (default: `tasks.default_history` ago).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Timestamp>,
    /// Full import: end of the range, exclusive (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
    /// Skip this many series of the selection (in symbol order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<usize>,
    /// Take at most this many series of the selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Update: days before the last stored bar to fetch again (default: `tasks.refetch_bars`
    /// bars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// Update: leave series with no stored bars alone.
    #[serde(default)]
    pub only_existing: bool,
    /// Migrate and check: the other store's name under `targets:` in the config (checked when
    /// the task is queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<serde_json::Value>,
    /// File import: the file and how to read it (checked when the task is queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::data::import::file::FileImportSpec>,
    /// Verify, restore and check: the backup's directory (resolved when the task is queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Check: a replica's name under `targets:`, read through its API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// Restore: report what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl TaskParams {
    /// The kept series these parameters select.
    pub fn selection(&self) -> Selection<'_> {
        Selection {
            symbols: self.symbols.as_deref(),
            interval: self.interval,
            source: self.source.as_deref(),
            skip: self.skip,
            limit: self.limit,
        }
    }
}

/// A series that failed within a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedSeries {
    pub series: String,
    pub reason: String,
}

/// What a task has done so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskCounters {
    pub series_total: u64,
    /// Series done, in this run of the process and in earlier ones.
    pub series_done: u64,
    pub series_failed: u64,
    /// Series left alone (e.g. `only_existing` and nothing stored).
    pub series_skipped: u64,
    /// Series a resumed task did not process again because an earlier run of the process had
    /// finished them (they are counted in `series_done` or `series_failed` as they ended).
    pub series_resumed: u64,
    /// How many times the task was started: 1, plus one per resume after a restart.
    pub runs: u64,
    /// Seconds the task actually ran, summed over its runs (the wall time from `started_at`
    /// also counts the time the master was down).
    pub worked_secs: f64,
    /// Bars journaled (new or changed).
    pub bars_written: u64,
    /// Bars fetched that were identical to the stored ones.
    pub bars_unchanged: u64,
    /// Bars rejected by validation (quarantined).
    pub bars_rejected: u64,
    /// Source import: rows that could not be read (skipped, with the first problems in the
    /// status page's `imports` for files, in `row_problems` for tables).
    pub rows_skipped: u64,
    /// SQL-table and file import: rows in the table (the file), rows read, pages (batches)
    /// read.
    pub rows_total: u64,
    pub rows_read: u64,
    pub pages: u64,
    /// SQL-table import: the key of the last row journaled; a resumed import reads on after
    /// it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<Vec<crate::sources::sql::KeyValue>>,
    /// SQL-table and file import: the first rows that are not bars, with their key (row
    /// number) and the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub row_problems: Vec<String>,
    /// File import: the file listing every row that is not a bar (row, sheet, reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine_file: Option<String>,
    /// Backup: the backup written (its directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Verify (and restore, which verifies first): what the files' check found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::data::backup::verify::VerifyReport>,
    /// What a task that is not about series did, said as its completion message instead of
    /// the series counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Migrate and check: what the comparison of the two stores found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<crate::data::consistency::CompareReport>,
    /// Provider requests and retries, counted when their series' outcome is recorded: the
    /// requests of a series in flight when the process died are not counted (it is fetched
    /// again after the restart, and those requests are).
    pub requests: u64,
    pub retries: u64,
    /// Provider requests that failed: every retried attempt, and the last attempt of each
    /// series whose fetch failed (the provider success rate alert reads it).
    pub failed_requests: u64,
    /// Bars the provider listed with null prices (skipped).
    pub provider_null_bars: u64,
    /// Corporate actions seen for the first time.
    pub new_actions: u64,
    /// Series whose re-fetched bars all differed from the stored ones by one common ratio
    /// with no action reported (treated as an unreported split: the whole history fetched
    /// again).
    pub unreported_actions: u64,
    /// Backfill: expected sessions the provider answered with no bar (remembered per series;
    /// asked for again only after `tasks.provider_missing_retry`).
    pub provider_missing: u64,
    /// Gaps found (backfill) and bars found invalid (validate).
    pub gaps_found: u64,
    pub invalid_stored_bars: u64,
    /// Series that failed, with the reason (at most 100 listed).
    pub failed: Vec<FailedSeries>,
    /// Request starts per second of each rate-limited source the task fetches from, as of
    /// the last finished series (with `adaptive_rate`, the rate learned so far).
    pub request_rates: std::collections::BTreeMap<String, f64>,
}

/// A background task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub name: String,
    pub params: TaskParams,
    pub status: TaskStatus,
    pub progress: f64,
    pub message: String,
    pub counters: TaskCounters,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub completed_at_ms: Option<i64>,
}

impl Task {
    /// The task as the REST API shows it.
    pub fn to_json(&self) -> serde_json::Value {
        let time = |ms: Option<i64>| {
            ms.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        };
        serde_json::json!({
            "task_id": self.id,
            "task_name": self.name,
            "kind": self.kind,
            "status": self.status,
            "progress": (self.progress * 10.0).round() / 10.0,
            "message": self.message,
            "created_at": time(Some(self.created_at_ms)),
            "started_at": time(self.started_at_ms),
            "completed_at": time(self.completed_at_ms),
            "error": self.error,
            "is_running": self.status == TaskStatus::Running,
            "cancel_requested": self.cancel_requested,
            "params": self.params,
            "counters": self.counters,
        })
    }
}
