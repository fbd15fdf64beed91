//! Background tasks: full imports, incremental updates, gap backfills and validation runs.
//!
//! A [`Task`] is persisted in the local state file ([`store::TaskStore`]) with its kind,
//! parameters, status (`pending`, `running`, `completed`, `failed`, `cancelled`), progress
//! 0–100 with a message, counters, and a checkpoint per finished series. The
//! [`manager::TaskManager`] runs one task at a time, oldest first; the others wait as pending.
//! A master killed mid-task finds the task `running` at its next start, puts it back in the
//! queue and resumes it without fetching the series its checkpoints say are done.

pub mod manager;
pub mod request;
pub mod store;

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
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::FullImport => "full_import",
            TaskKind::IncrementalUpdate => "incremental_update",
            TaskKind::Backfill => "backfill",
            TaskKind::Validate => "validate",
        }
    }
}

impl FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            TaskKind::FullImport,
            TaskKind::IncrementalUpdate,
            TaskKind::Backfill,
            TaskKind::Validate,
        ]
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
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the task will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
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
                    "unknown status {s:?}; use pending, running, completed, failed or cancelled"
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
    pub series_done: u64,
    pub series_failed: u64,
    /// Series left alone (e.g. `only_existing` and nothing stored).
    pub series_skipped: u64,
    /// Bars journaled (new or changed).
    pub bars_written: u64,
    /// Bars fetched that were identical to the stored ones.
    pub bars_unchanged: u64,
    /// Bars rejected by validation (quarantined).
    pub bars_rejected: u64,
    /// Provider requests and retries.
    pub requests: u64,
    pub retries: u64,
    /// Provider requests that failed: every retried attempt, and the last attempt of each
    /// series whose fetch failed (the provider success rate alert reads it).
    pub failed_requests: u64,
    /// Bars the provider listed with null prices (skipped).
    pub provider_null_bars: u64,
    /// Corporate actions seen for the first time.
    pub new_actions: u64,
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
