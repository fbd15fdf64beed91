//! Queuing a task: its request checked (targets, replica, backup, source, dates, the series it
//! selects) and the queue bounded (`tasks.max_pending`).

use dms_common::Timestamp;

use super::TaskManager;
use crate::tasks::store::TaskStoreError;
use crate::tasks::{Task, TaskKind, TaskParams, TaskStatus};

impl TaskManager {
    /// Queues a task after checking that its selection resolves.
    pub async fn submit(
        &self,
        kind: TaskKind,
        name: String,
        params: TaskParams,
    ) -> Result<Task, SubmitError> {
        let mut params = params;
        let max = self.ctx.config.max_pending;
        if self
            .ctx
            .tasks
            .list(Some(TaskStatus::Pending), max)
            .await?
            .len()
            >= max
        {
            return Err(SubmitError::Busy(format!(
                "{max} tasks are already waiting to run (tasks.max_pending): try again once some have run"
            )));
        }
        if let Some(target) = &params.target {
            let name = target.as_str().unwrap_or_default();
            self.ctx
                .targets
                .store(name)
                .map_err(|e| SubmitError::Invalid(format!("field `target`: {e}")))?;
        }
        if let Some(name) = &params.replica {
            self.ctx
                .targets
                .replica(name)
                .map_err(|e| SubmitError::Invalid(format!("field `replica`: {e}")))?;
        }
        if let Some(name) = &params.backup {
            let files = &self.ctx.files;
            let dir = crate::data::backup::resolve(&files.backup_dir, name, &files.allowed_dirs)
                .map_err(|e| SubmitError::Invalid(format!("field `backup`: {e}")))?;
            params.backup = Some(dir.display().to_string());
        }
        let source = params.source.as_deref().unwrap_or_default();
        let is_table = self.sql_source(source).is_some();
        if kind == TaskKind::FullImport && is_table {
            // A SQL table is imported whole: the import of that source is a source import.
            let only_source = TaskParams {
                source: params.source.clone(),
                ..TaskParams::default()
            };
            if params != only_source {
                return Err(SubmitError::Invalid(format!(
                    "source {source:?} is a SQL table, imported whole: give only `source`"
                )));
            }
            return Box::pin(self.submit(TaskKind::SourceImport, name, params)).await;
        }
        if matches!(
            kind,
            TaskKind::Migrate
                | TaskKind::Check
                | TaskKind::FileImport
                | TaskKind::Backup
                | TaskKind::VerifyBackup
                | TaskKind::Restore
        ) {
            // They work on what the store (or the file) holds, not on the kept series.
            let task = self.ctx.tasks.create(kind, name, params).await?;
            self.wake.notify_one();
            return Ok(task);
        }
        if kind == TaskKind::SourceImport {
            if !is_table && self.ctx.universe.sources().csv(source).is_none() {
                return Err(SubmitError::Invalid(format!(
                    "field `source`: {source:?} is not a CSV or SQL source; a source import reads the files or the table of one"
                )));
            }
            let task = self.ctx.tasks.create(kind, name, params).await?;
            self.wake.notify_one();
            return Ok(task);
        }
        if kind == TaskKind::FullImport {
            let now = Timestamp::now();
            let start = params.start.unwrap_or(Timestamp(
                now.0 - self.ctx.config.default_history.0.as_secs() as i64,
            ));
            if let Some(end) = params.end
                && end <= start
            {
                return Err(SubmitError::Invalid(format!(
                    "field `end_date`: {} is not after the import's start {} (give start_date, or see tasks.default_history)",
                    end.to_datetime().format("%Y-%m-%d"),
                    start.to_datetime().format("%Y-%m-%d")
                )));
            }
        }
        let selected = self
            .ctx
            .universe
            .select(&params.selection())
            .map_err(SubmitError::Invalid)?;
        if selected.is_empty() {
            return Err(SubmitError::Invalid(
                "the request selects no series (check symbols, interval, source, skip and limit)"
                    .into(),
            ));
        }
        let task = self.ctx.tasks.create(kind, name, params).await?;
        self.wake.notify_one();
        Ok(task)
    }
}

/// Why a task was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request names something that does not exist or selects nothing.
    #[error("{0}")]
    Invalid(String),
    /// Too many tasks are waiting (`tasks.max_pending`): try again later.
    #[error("{0}")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] TaskStoreError),
}
