//! `ScheduleStore`: what the scheduler keeps in the master's state file so that it survives
//! restarts: per schedule its pause override, the last fire it handled (for catch-up) and the
//! task its last run started (for the overlap check); and the history of runs, the newest
//! [`RUNS_KEPT`] per schedule.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use dms_common::state::{StateError, StateTables};
use rusqlite::params;

use super::run::{RunOutcome, RunRecord, RunTrigger};

/// Runs kept per schedule; older ones are removed as new ones are recorded.
pub const RUNS_KEPT: usize = 200;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedule_state (
    name           TEXT PRIMARY KEY,
    paused         INTEGER,
    enabled_seen   INTEGER NOT NULL,
    last_fire_ms   INTEGER NOT NULL,
    last_task_id   TEXT
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    scheduled_for_ms INTEGER NOT NULL,
    started_at_ms    INTEGER NOT NULL,
    run_trigger      TEXT NOT NULL,
    outcome          TEXT NOT NULL,
    task_id          TEXT,
    message          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_runs_by_name ON schedule_runs (name, id);
";

/// The persisted state of one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// An operator's pause (true) or resume (false) at run time; None follows the config.
    pub paused: Option<bool>,
    /// The config's `enabled` when the row was written: a changed `enabled` clears `paused`.
    pub enabled_seen: bool,
    /// The last fire handled (run, skipped or recorded missed), Unix ms.
    pub last_fire_ms: i64,
    /// The task the last run started.
    pub last_task_id: Option<String>,
}

/// The scheduler's tables in the state file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    tables: StateTables,
}

fn ms_to_time(ms: i64, tz: Tz) -> DateTime<chrono::FixedOffset> {
    let utc = Utc
        .timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    utc.with_timezone(&tz).fixed_offset()
}

impl ScheduleStore {
    /// Opens the tables in the state file at `path`.
    pub fn open(path: &Path) -> Result<ScheduleStore, StateError> {
        Ok(ScheduleStore {
            tables: StateTables::open(path, "schedules", SCHEMA)?,
        })
    }

    /// Every schedule's persisted state, by name.
    pub async fn rows(&self) -> Result<HashMap<String, JobRow>, StateError> {
        self.tables
            .with(|c| {
                c.prepare(
                    "SELECT name, paused, enabled_seen, last_fire_ms, last_task_id FROM schedule_state",
                )?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        JobRow {
                            paused: r.get::<_, Option<bool>>(1)?,
                            enabled_seen: r.get(2)?,
                            last_fire_ms: r.get(3)?,
                            last_task_id: r.get(4)?,
                        },
                    ))
                })?
                .collect()
            })
            .await
    }

    /// Writes one schedule's state.
    pub async fn save(&self, name: &str, row: &JobRow) -> Result<(), StateError> {
        let (name, row) = (name.to_owned(), row.clone());
        self.tables
            .with(move |c| {
                c.execute(
                    "INSERT INTO schedule_state (name, paused, enabled_seen, last_fire_ms, last_task_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET paused = excluded.paused,
                        enabled_seen = excluded.enabled_seen, last_fire_ms = excluded.last_fire_ms,
                        last_task_id = excluded.last_task_id",
                    params![name, row.paused, row.enabled_seen, row.last_fire_ms, row.last_task_id],
                )
                .map(|_| ())
            })
            .await
    }

    /// Records a run and removes that schedule's runs beyond the newest [`RUNS_KEPT`].
    pub async fn record_run(&self, run: &RunRecord) -> Result<(), StateError> {
        let run = run.clone();
        self.tables
            .with(move |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "INSERT INTO schedule_runs
                        (name, scheduled_for_ms, started_at_ms, run_trigger, outcome, task_id, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        run.schedule,
                        run.scheduled_for.timestamp_millis(),
                        run.started_at.timestamp_millis(),
                        run.trigger.as_str(),
                        run.outcome.as_str(),
                        run.task_id,
                        run.message
                    ],
                )?;
                tx.execute(
                    "DELETE FROM schedule_runs WHERE name = ?1 AND id <=
                        (SELECT id FROM schedule_runs WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    params![run.schedule, RUNS_KEPT as i64],
                )?;
                tx.commit()
            })
            .await
    }

    /// The newest `limit` runs of schedule `name`, newest first, with times in `tz`.
    pub async fn runs(
        &self,
        name: &str,
        limit: usize,
        tz: Tz,
    ) -> Result<Vec<RunRecord>, StateError> {
        let name = name.to_owned();
        self.tables
            .with(move |c| {
                c.prepare(
                    "SELECT scheduled_for_ms, started_at_ms, run_trigger, outcome, task_id, message
                     FROM schedule_runs WHERE name = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![name, limit as i64], |r| {
                    let text = |i: usize| r.get::<_, String>(i);
                    let decode = |i: usize, e: String| {
                        rusqlite::Error::FromSqlConversionFailure(
                            i,
                            rusqlite::types::Type::Text,
                            e.into(),
                        )
                    };
                    Ok(RunRecord {
                        schedule: name.clone(),
                        scheduled_for: ms_to_time(r.get(0)?, tz),
                        started_at: ms_to_time(r.get(1)?, tz),
                        trigger: text(2)?.parse::<RunTrigger>().map_err(|e| decode(2, e))?,
                        outcome: text(3)?.parse::<RunOutcome>().map_err(|e| decode(3, e))?,
                        task_id: r.get(4)?,
                        message: r.get(5)?,
                        task_status: None,
                    })
                })?
                .collect()
            })
            .await
    }
}
