//! Task operations as the front ends ask for them, checked in one place: the REST API
//! (`POST /api/data/import` …) and admin gRPC (`dms.v1.Admin/StartTask` …) both hand the
//! request over as sent and get the same answers and the same error messages.
//!
//! - [`TaskRequest`]: the parameters of a task to start, as sent (strings, numbers); its
//!   [`TaskRequest::check`] turns it into [`TaskParams`] for one [`TaskKind`], refusing
//!   parameters that do not apply to that kind.
//! - [`start`], [`get`], [`list`] and [`cancel`]: the operations, with [`TaskApiError`] saying
//!   why one was refused (each front end maps it to its status codes).
//! - [`list_limit`] and [`parse_status`]: the listing's parameters.

use dms_common::read_api;
use dms_common::{Interval, Symbol, Timestamp};
use serde::Deserialize;

use super::manager::{SubmitError, TaskManager};
use super::store::TaskStoreError;
use super::{Task, TaskKind, TaskParams, TaskStatus};
use crate::pipeline::ingest::Backpressure;

/// Most series one request may select with `limit` (or skip with `skip`).
pub const MAX_TASK_LIMIT: usize = 1_000_000;
pub use super::MAX_DAYS;
pub use crate::universe::MAX_SYMBOLS;
/// Tasks one listing returns when the request does not say.
pub const DEFAULT_LIST_LIMIT: usize = 20;
/// Most tasks one listing returns.
pub const MAX_LIST_LIMIT: usize = 1_000;

/// Why a task operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskApiError {
    /// A parameter is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// Too many tasks wait already (429 with Retry-After, gRPC RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Busy(String),
    #[error("no task {0:?}")]
    NotFound(String),
    /// Cancelling a task that already ended.
    #[error("task {id} already ended ({status})")]
    AlreadyEnded { id: String, status: TaskStatus },
    #[error("task store: {0}")]
    Store(#[from] TaskStoreError),
}

impl From<SubmitError> for TaskApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(m) => TaskApiError::Invalid(m),
            SubmitError::Busy(m) => TaskApiError::Busy(m),
            SubmitError::Store(e) => TaskApiError::Store(e),
        }
    }
}

/// The parameters of a task to start, as a client sent them. Which apply depends on the kind
/// (see [`TaskRequest::check`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub symbols: Option<Vec<String>>,
    pub interval: Option<String>,
    pub source: Option<String>,
    /// Import: `YYYY-MM-DD` or RFC 3339.
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub skip: Option<usize>,
    pub limit: Option<usize>,
    /// Update: days before the last stored bar fetched again.
    pub days: Option<u32>,
    /// Update: leave series with nothing stored alone.
    #[serde(default)]
    pub only_existing: bool,
    /// Migrate and check: the other store, by its name under `targets:` in the config.
    pub target: Option<serde_json::Value>,
    /// Verify, restore and check: a backup's name (as listed).
    pub backup: Option<String>,
    /// Check: a replica, by its name under `targets:` in the config (`type: replica`).
    pub replica: Option<String>,
    /// Restore: report what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl TaskKind {
    /// The task's name as the API reports it ("full import queued as …").
    pub fn display_name(self) -> &'static str {
        match self {
            TaskKind::FullImport => "full import",
            TaskKind::IncrementalUpdate => "incremental update",
            TaskKind::Backfill => "gap backfill",
            TaskKind::Validate => "validation",
            TaskKind::SourceImport => "source import",
            TaskKind::Migrate => "migration",
            TaskKind::Check => "consistency check",
            TaskKind::FileImport => "file import",
            TaskKind::Backup => "backup",
            TaskKind::VerifyBackup => "backup verification",
            TaskKind::Restore => "restore",
        }
    }
}

fn date_of(t: Timestamp) -> String {
    t.to_datetime().format("%Y-%m-%d").to_string()
}

fn invalid(message: impl Into<String>) -> TaskApiError {
    TaskApiError::Invalid(message.into())
}

impl TaskRequest {
    /// The names of the parameters that were given.
    fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let mut add = |present: bool, name| {
            if present {
                given.push(name);
            }
        };
        add(self.symbols.is_some(), "symbols");
        add(self.interval.is_some(), "interval");
        add(self.source.is_some(), "source");
        add(self.start_date.is_some(), "start_date");
        add(self.end_date.is_some(), "end_date");
        add(self.skip.is_some(), "skip");
        add(self.limit.is_some(), "limit");
        add(self.days.is_some(), "days");
        add(self.only_existing, "only_existing");
        add(self.target.is_some(), "target");
        add(self.backup.is_some(), "backup");
        add(self.replica.is_some(), "replica");
        add(self.dry_run, "dry_run");
        given
    }

    /// The parameters `kind` takes.
    fn accepted(kind: TaskKind) -> &'static [&'static str] {
        const SELECT: &[&str] = &["symbols", "interval", "source"];
        match kind {
            TaskKind::FullImport => &[
                "symbols",
                "interval",
                "source",
                "start_date",
                "end_date",
                "skip",
                "limit",
            ],
            TaskKind::IncrementalUpdate => &[
                "symbols",
                "interval",
                "source",
                "skip",
                "limit",
                "days",
                "only_existing",
            ],
            TaskKind::Backfill | TaskKind::Validate => SELECT,
            TaskKind::SourceImport => &["source"],
            TaskKind::Migrate => &["target"],
            TaskKind::Check => &["target", "backup", "replica"],
            TaskKind::Backup => &[],
            TaskKind::VerifyBackup => &["backup"],
            TaskKind::Restore => &["backup", "dry_run"],
            // Queued by `import_file`, which takes its own request.
            TaskKind::FileImport => &[],
        }
    }

    /// Checks the request for a task of `kind`; errors name the field and what is wrong.
    pub fn check(self, kind: TaskKind) -> Result<TaskParams, TaskApiError> {
        let accepted = Self::accepted(kind);
        if let Some(field) = self.given().into_iter().find(|f| !accepted.contains(f)) {
            return Err(invalid(format!(
                "field `{field}` does not apply to a {}; it takes {}",
                kind.display_name(),
                accepted.join(", ")
            )));
        }
        if kind == TaskKind::FileImport {
            return Err(invalid(
                "a file import is started with POST /api/data/import-file (dmsctl import FILE)",
            ));
        }
        check_paging(self.limit, self.skip)?;
        if let Some(d) = self.days
            && !(1..=MAX_DAYS).contains(&d)
        {
            return Err(invalid(format!(
                "field `days`: {d} is out of range; use 1 to {MAX_DAYS}"
            )));
        }
        let when = |field, raw: Option<&str>| {
            raw.map(|d| read_api::parse_when(field, d).map_err(invalid))
                .transpose()
        };
        if matches!(kind, TaskKind::VerifyBackup | TaskKind::Restore) && self.backup.is_none() {
            return Err(invalid(
                "field `backup`: give the backup's name (see GET /api/data/backups) or its absolute path",
            ));
        }
        let others = [
            self.target.is_some(),
            self.backup.is_some(),
            self.replica.is_some(),
        ];
        if kind == TaskKind::Check && others.iter().filter(|o| **o).count() > 1 {
            return Err(invalid(
                "give one of `target` (a store), `backup` or `replica`: the check compares the store with one of them",
            ));
        }
        let target = match self.target {
            None if kind == TaskKind::Check
                && (self.backup.is_some() || self.replica.is_some()) =>
            {
                None
            }
            None if matches!(kind, TaskKind::Migrate | TaskKind::Check) => {
                return Err(invalid(
                    "field `target`: name the other store, as configured under `targets:`",
                ));
            }
            None => None,
            Some(v) => Some(parse_target(v)?),
        };
        let start = when("start_date", self.start_date.as_deref())?;
        let end = when("end_date", self.end_date.as_deref())?;
        if let (Some(a), Some(b)) = (start, end)
            && b <= a
        {
            return Err(invalid(format!(
                "field `end_date`: {} is not after start_date {}",
                date_of(b),
                date_of(a)
            )));
        }
        if let Some(a) = start
            && a > Timestamp::now()
        {
            return Err(invalid(format!(
                "field `start_date`: {} is in the future",
                date_of(a)
            )));
        }
        Ok(TaskParams {
            symbols: parse_symbols(self.symbols)?,
            interval: parse_interval(self.interval.as_deref())?,
            source: self.source,
            start,
            end,
            skip: self.skip,
            limit: self.limit,
            days: self.days,
            only_existing: self.only_existing,
            target,
            file: None,
            backup: self.backup,
            replica: self.replica,
            dry_run: self.dry_run,
        })
    }
}

/// The other store of a migration or a check: a name under `targets:` in the config (checked
/// against the config when the task is queued). A store given inline (an address, a path, a
/// password file) is refused: a request never makes the master connect where the config does
/// not say, or read a file of the request's choosing.
fn parse_target(v: serde_json::Value) -> Result<serde_json::Value, TaskApiError> {
    match v {
        serde_json::Value::String(name) if !name.trim().is_empty() => {
            Ok(serde_json::Value::String(name.trim().to_owned()))
        }
        serde_json::Value::Object(_) => Err(invalid(
            "field `target`: give the name of a store configured under `targets:`, not the store itself (requests never name addresses, paths or secrets)",
        )),
        _ => Err(invalid(
            "field `target`: give the name of a store configured under `targets:`",
        )),
    }
}

fn check_paging(limit: Option<usize>, skip: Option<usize>) -> Result<(), TaskApiError> {
    if let Some(l) = limit
        && (l == 0 || l > MAX_TASK_LIMIT)
    {
        return Err(invalid(format!(
            "field `limit`: {l} is out of range; use 1 to {MAX_TASK_LIMIT}"
        )));
    }
    if let Some(k) = skip
        && k > MAX_TASK_LIMIT
    {
        return Err(invalid(format!(
            "field `skip`: {k} is out of range; use 0 to {MAX_TASK_LIMIT}"
        )));
    }
    Ok(())
}

fn parse_symbols(raw: Option<Vec<String>>) -> Result<Option<Vec<Symbol>>, TaskApiError> {
    let Some(list) = raw else { return Ok(None) };
    if list.is_empty() {
        return Err(invalid(
            "field `symbols`: the list is empty; leave it out to select every kept series",
        ));
    }
    // The same symbol twice selects it once.
    let mut seen = std::collections::HashSet::new();
    let list: Vec<String> = list
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect();
    if list.len() > MAX_SYMBOLS {
        return Err(invalid(format!(
            "field `symbols`: at most {MAX_SYMBOLS} different symbols"
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| Symbol::new(s).map_err(|e| invalid(format!("field `symbols[{i}]`: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_interval(raw: Option<&str>) -> Result<Option<Interval>, TaskApiError> {
    raw.map(|r| {
        r.parse()
            .map_err(|e| invalid(format!("field `interval`: {e}")))
    })
    .transpose()
}

/// The `limit` of a task listing: absent means [`DEFAULT_LIST_LIMIT`]; otherwise a number from
/// 1 to [`MAX_LIST_LIMIT`].
pub fn list_limit(raw: Option<&str>) -> Result<usize, TaskApiError> {
    match raw {
        None => Ok(DEFAULT_LIST_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(l) if (1..=MAX_LIST_LIMIT).contains(&l) => Ok(l),
            _ => Err(invalid(format!(
                "parameter `limit`: {raw:?} is not a number from 1 to {MAX_LIST_LIMIT}"
            ))),
        },
    }
}

/// The `status` filter of a task listing; absent or empty means every status.
pub fn parse_status(raw: Option<&str>) -> Result<Option<TaskStatus>, TaskApiError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(raw) => raw
            .parse::<TaskStatus>()
            .map(Some)
            .map_err(|e| invalid(format!("parameter `status`: {e}"))),
    }
}

/// A task as clients see it: a running task held back by backpressure says so in its message.
pub fn shown(mut task: Task, backpressure: &Backpressure) -> Task {
    if task.status == TaskStatus::Running
        && let Some(reason) = backpressure.waiting()
    {
        task.message = reason;
    }
    task
}

/// Checks `request` for `kind` and queues the task.
pub async fn start(
    tasks: &TaskManager,
    kind: TaskKind,
    request: TaskRequest,
) -> Result<Task, TaskApiError> {
    let params = request.check(kind)?;
    Ok(tasks
        .submit(kind, kind.display_name().to_owned(), params)
        .await?)
}

/// What a file import request gave: a queued task, or a dry run's report.
#[derive(Debug)]
pub enum FileImportAnswer {
    Queued(Box<Task>),
    DryRun(Box<crate::data::import::file::DryRunReport>),
}

/// Checks a file import (the file at `upload`, an upload's spooled copy and the name the client
/// gave it, or the query's `path`) and queues it, or answers its dry run. An upload that is not
/// queued is removed.
pub async fn import_file(
    tasks: &TaskManager,
    query: crate::data::import::file::FileImportQuery,
    upload: Option<(std::path::PathBuf, String)>,
    allowed_dirs: &[std::path::PathBuf],
) -> Result<FileImportAnswer, TaskApiError> {
    let spooled = upload.as_ref().map(|(p, _)| p.clone());
    let answer = async {
        let spec = query.check(upload, allowed_dirs).await.map_err(invalid)?;
        if query.dry_run {
            let rows = query
                .preview_rows
                .unwrap_or(crate::data::import::file::DEFAULT_PREVIEW_ROWS);
            let report = crate::data::import::file::dry_run(&spec, rows, &tasks.reconciler())
                .await
                .map_err(invalid)?;
            return Ok(FileImportAnswer::DryRun(Box::new(report)));
        }
        let name = query
            .name
            .clone()
            .unwrap_or_else(|| format!("file import of {}", spec.file_name));
        let params = TaskParams {
            file: Some(spec),
            ..TaskParams::default()
        };
        Ok(FileImportAnswer::Queued(Box::new(
            tasks.submit(TaskKind::FileImport, name, params).await?,
        )))
    }
    .await;
    if let Some(path) = spooled
        && !matches!(answer, Ok(FileImportAnswer::Queued(_)))
    {
        let _ = tokio::fs::remove_file(&path).await;
    }
    answer
}

/// One task.
pub async fn get(tasks: &TaskManager, id: &str) -> Result<Task, TaskApiError> {
    tasks
        .tasks()
        .get(id)
        .await?
        .ok_or_else(|| TaskApiError::NotFound(id.to_owned()))
}

/// Tasks newest first, optionally only of one status.
pub async fn list(
    tasks: &TaskManager,
    status: Option<TaskStatus>,
    limit: usize,
) -> Result<Vec<Task>, TaskApiError> {
    Ok(tasks.tasks().list(status, limit).await?)
}

/// Asks task `id` to stop; returns it after the request (a pending task is then cancelled, a
/// running one stops within 2 s). Refused for a task that already ended.
pub async fn cancel(tasks: &TaskManager, id: &str) -> Result<Task, TaskApiError> {
    let task = get(tasks, id).await?;
    if task.status.is_final() {
        return Err(TaskApiError::AlreadyEnded {
            id: task.id,
            status: task.status,
        });
    }
    tasks
        .cancel(id)
        .await?
        .ok_or_else(|| TaskApiError::NotFound(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<TaskParams, TaskApiError>) -> String {
        match r {
            Err(TaskApiError::Invalid(m)) => m,
            other => panic!("expected an invalid request, got {other:?}"),
        }
    }

    #[test]
    fn parameters_that_do_not_apply_to_the_kind_are_named() {
        let req = TaskRequest {
            days: Some(3),
            ..Default::default()
        };
        let m = err(req.check(TaskKind::FullImport));
        assert!(
            m.starts_with("field `days` does not apply to a full import"),
            "{m}"
        );
        let req = TaskRequest {
            start_date: Some("2024-01-01".into()),
            ..Default::default()
        };
        let m = err(req.check(TaskKind::Backfill));
        assert!(m.starts_with("field `start_date` does not apply"), "{m}");
        let req = TaskRequest {
            only_existing: true,
            days: Some(3),
            ..Default::default()
        };
        assert!(req.check(TaskKind::IncrementalUpdate).is_ok());
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                TaskRequest {
                    limit: Some(0),
                    ..Default::default()
                },
                "field `limit`",
            ),
            (
                TaskRequest {
                    symbols: Some(vec![]),
                    ..Default::default()
                },
                "field `symbols`: the list is empty",
            ),
            (
                TaskRequest {
                    symbols: Some(vec!["AAPL".into(), "bad symbol!".into()]),
                    ..Default::default()
                },
                "field `symbols[1]`",
            ),
            (
                TaskRequest {
                    interval: Some("7m".into()),
                    ..Default::default()
                },
                "field `interval`",
            ),
            (
                TaskRequest {
                    start_date: Some("2024-13-01".into()),
                    ..Default::default()
                },
                "field `start_date`",
            ),
            (
                TaskRequest {
                    start_date: Some("2024-02-01".into()),
                    end_date: Some("2024-01-01".into()),
                    ..Default::default()
                },
                "field `end_date`: 2024-01-01 is not after start_date 2024-02-01",
            ),
            (
                TaskRequest {
                    start_date: Some("2999-01-01".into()),
                    ..Default::default()
                },
                "field `start_date`: 2999-01-01 is in the future",
            ),
        ];
        for (req, want) in cases {
            let m = err(req.check(TaskKind::FullImport));
            assert!(m.starts_with(want), "{m:?} should start with {want:?}");
        }
        let days = TaskRequest {
            days: Some(0),
            ..Default::default()
        };
        assert!(err(days.check(TaskKind::IncrementalUpdate)).starts_with("field `days`"));
    }

    #[test]
    fn a_good_request_becomes_params() {
        let req = TaskRequest {
            symbols: Some(vec!["AAPL".into(), "AAPL".into(), "^GSPC".into()]),
            interval: Some("1d".into()),
            start_date: Some("2024-01-02".into()),
            end_date: Some("2024-02-01T00:00:00Z".into()),
            limit: Some(10),
            ..Default::default()
        };
        let p = req.check(TaskKind::FullImport).unwrap();
        assert_eq!(p.symbols.as_ref().map(Vec::len), Some(2));
        assert_eq!(p.interval, Some(Interval::D1));
        assert_eq!(p.start.unwrap().0, 1_704_153_600);
        assert_eq!(p.end.unwrap().0, 1_706_745_600);
        assert_eq!(p.limit, Some(10));
    }

    #[test]
    fn listing_parameters() {
        assert_eq!(list_limit(None).unwrap(), DEFAULT_LIST_LIMIT);
        assert_eq!(list_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "x"] {
            let e = list_limit(Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("parameter `limit`"), "{e}");
        }
        assert_eq!(parse_status(Some("")).unwrap(), None);
        assert_eq!(
            parse_status(Some("running")).unwrap(),
            Some(TaskStatus::Running)
        );
        let e = parse_status(Some("done")).unwrap_err().to_string();
        assert!(e.starts_with("parameter `status`: unknown status"), "{e}");
    }
}
