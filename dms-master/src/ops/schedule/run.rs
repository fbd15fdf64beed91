//! One run of a schedule: the checks a fire goes through and what it starts.
//!
//! In order: the same job's previous task still pending or running → `skipped_overlap`; (task
//! kinds, fired by the schedule) the fire's local date is no trading day of any selected
//! series → `skipped_non_trading_day`; (update, fired by the schedule) every selected series
//! already holds its latest expected bar → `skipped_complete`; else the task is queued through
//! the [`TaskManager`] (`started`, with its id) or, for `verify_replicas`, the replicas are
//! verified (`completed`, `diverged` or `failed`). A manual trigger skips the calendar and
//! completeness checks: the operator asked for the run.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;
use dms_common::Timestamp;
use dms_common::store::SharedStore;
use serde::Serialize;

use super::complete::latest_expected_bar;
use super::config::{NodeSelection, ScheduleConfig, ScheduleKind};
use crate::pipeline::catalog::Catalog;
use crate::replication::api::NodesApi;
use crate::replication::nodes::NodeState;
use crate::tasks::manager::{SubmitError, TaskManager};
use crate::tasks::{TaskParams, TaskStatus};
use crate::universe::UniverseEntry;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    /// A task was queued (`task_id`; its progress is in `/api/data/tasks/{id}`).
    Started,
    /// Every selected series already held its latest expected bar.
    SkippedComplete,
    /// The job's previous task was still pending or running.
    SkippedOverlap,
    /// The fire's local date is not a trading day of the selected series.
    SkippedNonTradingDay,
    /// The fire fell while the master was down and was not caught up.
    Missed,
    /// The replicas verified equal to the master.
    Completed,
    /// A replica's digests differ from the master's.
    Diverged,
    /// The run could not start or the verify failed (`message` says why).
    Failed,
}

impl RunOutcome {
    const ALL: [RunOutcome; 8] = [
        RunOutcome::Started,
        RunOutcome::SkippedComplete,
        RunOutcome::SkippedOverlap,
        RunOutcome::SkippedNonTradingDay,
        RunOutcome::Missed,
        RunOutcome::Completed,
        RunOutcome::Diverged,
        RunOutcome::Failed,
    ];

    /// The name used in the API, the state file and the metric's `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Started => "started",
            RunOutcome::SkippedComplete => "skipped_complete",
            RunOutcome::SkippedOverlap => "skipped_overlap",
            RunOutcome::SkippedNonTradingDay => "skipped_non_trading_day",
            RunOutcome::Missed => "missed",
            RunOutcome::Completed => "completed",
            RunOutcome::Diverged => "diverged",
            RunOutcome::Failed => "failed",
        }
    }
}

impl FromStr for RunOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RunOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown run outcome {s:?}"))
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What made a run happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// Its fire time came.
    Schedule,
    /// A fire missed while the master was down, handled at start.
    CatchUp,
    /// `trigger` (REST, admin gRPC).
    Manual,
}

impl RunTrigger {
    /// The name used in the API and the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Schedule => "schedule",
            RunTrigger::CatchUp => "catch_up",
            RunTrigger::Manual => "manual",
        }
    }
}

impl FromStr for RunTrigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RunTrigger::Schedule,
            RunTrigger::CatchUp,
            RunTrigger::Manual,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("unknown run trigger {s:?}"))
    }
}

/// One run of a schedule, as the history and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The schedule's name.
    pub schedule: String,
    /// The fire time it ran for (RFC 3339 in the schedule's time zone); the trigger time for a
    /// manual run.
    pub scheduled_for: DateTime<FixedOffset>,
    /// When it was handled.
    pub started_at: DateTime<FixedOffset>,
    pub trigger: RunTrigger,
    pub outcome: RunOutcome,
    /// The task it queued (`started`), or the one that was still running (`skipped_overlap`).
    pub task_id: Option<String>,
    pub message: String,
    /// The task's status now, when the view was read (not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_status: Option<TaskStatus>,
}

impl RunRecord {
    pub(super) fn new(
        job: &ScheduleConfig,
        tz: Tz,
        scheduled_for: DateTime<Utc>,
        started_at: DateTime<Utc>,
        trigger: RunTrigger,
    ) -> RunRecord {
        RunRecord {
            schedule: job.name.clone(),
            scheduled_for: scheduled_for.with_timezone(&tz).fixed_offset(),
            started_at: started_at.with_timezone(&tz).fixed_offset(),
            trigger,
            outcome: RunOutcome::Failed,
            task_id: None,
            message: String::new(),
            task_status: None,
        }
    }

    pub(super) fn ended(
        mut self,
        outcome: RunOutcome,
        task_id: Option<String>,
        message: impl Into<String>,
    ) -> RunRecord {
        self.outcome = outcome;
        self.task_id = task_id;
        self.message = message.into();
        self
    }
}

/// What runs need from the rest of the master.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub tasks: Arc<TaskManager>,
    /// The primary store, for the completeness check.
    pub store: SharedStore,
    /// The catalog (which bars were provisional when fetched).
    pub catalog: Catalog,
    /// The replicas, for `verify_replicas` (None: such jobs fail saying so).
    pub nodes: Option<NodesApi>,
    /// The symbols of each watchlist, by name.
    pub watchlists: Arc<std::collections::HashMap<String, Vec<dms_common::Symbol>>>,
    /// Where a missed run is raised as a `missed_run` alert.
    pub alerts: crate::alerts::Alerts,
}

impl RunContext {
    /// The task parameters a job's selection maps to; `fired` is the fire time (an import's
    /// `days` count back from it).
    pub fn task_params(&self, job: &ScheduleConfig, fired: DateTime<Utc>) -> TaskParams {
        let mut symbols: Vec<dms_common::Symbol> = job
            .watchlists
            .iter()
            .filter_map(|w| self.watchlists.get(w))
            .flatten()
            .chain(job.symbols.iter())
            .cloned()
            .collect();
        symbols.sort();
        symbols.dedup();
        let days_back = job
            .days
            .map(|d| Timestamp(fired.timestamp() - i64::from(d) * 86_400));
        TaskParams {
            symbols: (!symbols.is_empty() || !job.watchlists.is_empty()).then_some(symbols),
            interval: job.interval,
            source: job.source.clone(),
            start: if job.kind == ScheduleKind::Import {
                days_back
            } else {
                None
            },
            days: if job.kind == ScheduleKind::Update {
                job.days
            } else {
                None
            },
            only_existing: job.only_existing,
            ..TaskParams::default()
        }
    }

    /// The task of the job's previous run, if it has not ended.
    pub async fn unfinished_task(&self, task_id: Option<&str>) -> Option<(String, TaskStatus)> {
        let id = task_id?;
        match self.tasks.tasks().get(id).await {
            Ok(Some(t)) if !t.status.is_final() => Some((t.id, t.status)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(task = id, error = %e, "cannot read the previous run's task");
                None
            }
        }
    }

    /// Runs a task job: the calendar and completeness checks (not for a manual run), then
    /// the task. Returns the outcome, the task id and a message.
    pub async fn run_task(
        &self,
        job: &ScheduleConfig,
        tz: Tz,
        scheduled_for: DateTime<Utc>,
        trigger: RunTrigger,
        now: DateTime<Utc>,
    ) -> (RunOutcome, Option<String>, String) {
        let Some(kind) = job.kind.task_kind() else {
            return (RunOutcome::Failed, None, "not a task job".into());
        };
        if job.kind == ScheduleKind::Backup {
            // A backup copies the whole store, trading day or not.
            return self.queue(job, kind, TaskParams::default()).await;
        }
        let params = self.task_params(job, scheduled_for);
        // An import of a SQL source reads its whole table: no series, no calendar to judge.
        if job.kind == ScheduleKind::Import
            && let Some(source) = params.source.as_deref()
            && self.tasks.sql_source(source).is_some()
        {
            let params = TaskParams {
                source: params.source.clone(),
                ..TaskParams::default()
            };
            return self.queue(job, kind, params).await;
        }
        let entries = match self.tasks.universe().select(&params.selection()) {
            Ok(e) if e.is_empty() => {
                return (RunOutcome::Failed, None, "the job selects no series".into());
            }
            Ok(e) => e,
            Err(e) => return (RunOutcome::Failed, None, e),
        };
        if trigger != RunTrigger::Manual {
            let date = scheduled_for.with_timezone(&tz).date_naive();
            let trading_day = entries.iter().any(|e| e.calendar.is_trading_day(date));
            let not_trading = || {
                (
                    RunOutcome::SkippedNonTradingDay,
                    None,
                    format!(
                        "{date} is not a trading day for any of the {} series",
                        entries.len()
                    ),
                )
            };
            if job.skip_non_trading_days && !trading_day && job.kind != ScheduleKind::Update {
                return not_trading();
            }
            // An update checks completeness on every day: on a non-trading day (Saturday
            // 08:00, the morning after a holiday eve) it is the retry for the last session and
            // runs only while that session's bar is missing.
            if job.kind == ScheduleKind::Update {
                match self.first_incomplete(&entries, now).await {
                    Ok(None) if job.skip_non_trading_days && !trading_day => return not_trading(),
                    Ok(None) => {
                        return (
                            RunOutcome::SkippedComplete,
                            None,
                            format!(
                                "all {} series hold their latest expected bar",
                                entries.len()
                            ),
                        );
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        tracing::warn!(schedule = %job.name, error = %e, "cannot check completeness; updating")
                    }
                }
            }
        }
        self.queue(job, kind, params).await
    }

    /// Queues the job's task.
    async fn queue(
        &self,
        job: &ScheduleConfig,
        kind: crate::tasks::TaskKind,
        params: TaskParams,
    ) -> (RunOutcome, Option<String>, String) {
        let name = format!("schedule {}", job.name);
        match self.tasks.submit(kind, name, params).await {
            Ok(task) => (
                RunOutcome::Started,
                Some(task.id.clone()),
                format!("{} task {} queued", task.kind.as_str(), task.id),
            ),
            Err(SubmitError::Invalid(m) | SubmitError::Busy(m)) => (RunOutcome::Failed, None, m),
            Err(e @ SubmitError::Store(_)) => (RunOutcome::Failed, None, e.to_string()),
        }
    }

    /// The first of `entries` that lacks its latest expected bar (or holds it provisional),
    /// as of `now`; None when all are complete.
    pub async fn first_incomplete(
        &self,
        entries: &[UniverseEntry],
        now: DateTime<Utc>,
    ) -> Result<Option<dms_common::SeriesKey>, String> {
        for e in entries {
            let Some(expected) = latest_expected_bar(&e.calendar, e.key.interval, now) else {
                continue;
            };
            let latest = self
                .store
                .latest(&e.key)
                .await
                .map_err(|err| err.to_string())?;
            let provisional = self
                .catalog
                .provisional_from(&e.key)
                .await
                .map_err(|err| err.to_string())?;
            let has_it = latest.is_some_and(|b| b.ts >= expected);
            let final_bar = provisional.is_none_or(|p| p > expected);
            if !(has_it && final_bar) {
                return Ok(Some(e.key.clone()));
            }
        }
        Ok(None)
    }

    /// Verifies the selected replicas.
    pub async fn verify(&self, selection: &NodeSelection) -> (RunOutcome, String) {
        let Some(api) = &self.nodes else {
            return (
                RunOutcome::Failed,
                "replica verification is not available on this master".into(),
            );
        };
        let ids = match selection {
            NodeSelection::Nodes(ids) => ids.clone(),
            NodeSelection::All => match api.nodes.list().await {
                Ok(nodes) => nodes
                    .into_iter()
                    .filter(|n| n.state != NodeState::Disconnected)
                    .map(|n| n.node_id)
                    .collect(),
                Err(e) => return (RunOutcome::Failed, e.to_string()),
            },
        };
        if ids.is_empty() {
            return (RunOutcome::Completed, "no replica is connected".into());
        }
        let (mut equal, mut diverged, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for id in &ids {
            match api.verify(id).await {
                Ok(r) if r.equal => equal.push(id.clone()),
                Ok(r) => diverged.push(format!("{id}: {} buckets differ", r.buckets_diverged)),
                Err(e) => failed.push(e.to_string()),
            }
        }
        let mut parts = Vec::new();
        if !equal.is_empty() {
            parts.push(format!("equal: {}", equal.join(", ")));
        }
        if !diverged.is_empty() {
            parts.push(format!("diverged: {}", diverged.join("; ")));
        }
        if !failed.is_empty() {
            parts.push(format!("failed: {}", failed.join("; ")));
        }
        let outcome = if !failed.is_empty() {
            RunOutcome::Failed
        } else if !diverged.is_empty() {
            RunOutcome::Diverged
        } else {
            RunOutcome::Completed
        };
        (outcome, parts.join(" | "))
    }
}
