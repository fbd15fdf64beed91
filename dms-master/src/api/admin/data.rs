//! The admin service's operations on the data as a whole: exports (streamed chunks of
//! [`crate::data::export`], the producer behind `GET /api/data/export`), deletes through the
//! journal, file imports, and the list of backups. Each takes the request's message once
//! [`super::AdminService`] has checked the caller's access.

use dms_common::pb;
use tonic::Status;

use super::errors::{store_status, task_status};
use super::{AdminContext, BoxStream, convert};
use crate::tasks::request;

/// `Export`: the plan's info first, then the file's chunks as they are written.
pub(super) async fn export(
    ctx: &AdminContext,
    req: pb::ExportRequest,
) -> Result<BoxStream<pb::ExportChunk>, Status> {
    use crate::data::export::{self, ExportQuery, PlanError};
    let query = ExportQuery {
        format: Some(req.format),
        symbols: Some(req.symbols.join(",")),
        interval: req.interval,
        start: req.start,
        end: req.end,
        compression: req.compression,
    };
    let request = query.check().map_err(Status::invalid_argument)?;
    let plan = export::plan(&*ctx.api.store, request)
        .await
        .map_err(|e| match e {
            PlanError::Invalid(m) => Status::invalid_argument(m),
            PlanError::Store(e) => store_status(e),
        })?;
    let info = pb::ExportInfo {
        file_name: plan.file_name.clone(),
        content_type: plan.content_type().to_owned(),
        series: plan.series.len() as u64,
        bars_estimate: plan.bars_estimate,
    };
    let stream = export::start(ctx.api.store.clone(), &plan);
    Ok(Box::pin(convert::export_chunks(stream, info)))
}

/// `DeleteBars`: a series' bars in a range deleted through the journal (or counted, on a dry
/// run).
pub(super) async fn delete_bars(
    ctx: &AdminContext,
    req: pb::DeleteBarsRequest,
) -> Result<pb::DeleteBarsResponse, Status> {
    use crate::pipeline::delete::{self, DeleteError, DeleteRequest};
    let request = DeleteRequest {
        symbol: Some(req.symbol),
        interval: (!req.interval.is_empty()).then_some(req.interval),
        start: req.start,
        end: req.end,
        dry_run: req.dry_run,
    };
    let d = delete::delete(&ctx.api.store, &ctx.api.ingestor, &request)
        .await
        .map_err(|e| match e {
            DeleteError::Invalid(m) => Status::invalid_argument(m),
            DeleteError::Store(e) => store_status(e),
            e @ DeleteError::Journal(_) => Status::internal(e.to_string()),
        })?;
    Ok(pb::DeleteBarsResponse {
        series: Some((&d.series).into()),
        bars: d.bars,
        dry_run: d.dry_run,
        journal_seq: d.journal_seq,
        start: d.start,
        end: d.end,
    })
}

/// `ListBackups`: the complete backups in the backup directory.
pub(super) async fn list_backups(ctx: &AdminContext) -> Result<pb::ListBackupsResponse, Status> {
    let dir = ctx.api.tasks.backup_dir().to_owned();
    let list = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || crate::data::backup::list(&dir))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::unavailable)?
    };
    Ok(pb::ListBackupsResponse {
        dir: dir.display().to_string(),
        backups: list
            .into_iter()
            .map(|b| pb::BackupInfo {
                name: b.name,
                path: b.path,
                created_at: b.created_at,
                series: b.series,
                bars: b.bars,
                bytes: b.bytes,
            })
            .collect(),
    })
}

/// `ImportFile`: a file on the master's machine imported (queued as a task) or dry-run.
pub(super) async fn import_file(
    ctx: &AdminContext,
    r: pb::ImportFileRequest,
) -> Result<pb::ImportFileResponse, Status> {
    let text = |s: String| (!s.is_empty()).then_some(s);
    let query = crate::data::import::file::FileImportQuery {
        path: Some(r.path),
        format: text(r.format),
        columns: r.columns.into_iter().collect(),
        symbol: r.symbol,
        interval: r.interval,
        volume: r.volume,
        timezone: text(r.timezone),
        mode: text(r.mode),
        delimiter: text(r.delimiter),
        dry_run: r.dry_run,
        preview_rows: (r.preview_rows > 0).then_some(r.preview_rows as usize),
        name: text(r.name),
    };
    let answer = request::import_file(
        &ctx.api.tasks,
        query,
        None,
        &ctx.api.file_import.allowed_dirs,
    )
    .await
    .map_err(task_status)?;
    let result = match answer {
        request::FileImportAnswer::Queued(task) => {
            pb::import_file_response::Result::Task(convert::task(&task))
        }
        request::FileImportAnswer::DryRun(report) => pb::import_file_response::Result::DryRunJson(
            serde_json::to_string(&report).map_err(|e| Status::internal(e.to_string()))?,
        ),
    };
    Ok(pb::ImportFileResponse {
        result: Some(result),
    })
}
