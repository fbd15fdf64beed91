//! The admin gRPC service `dms.v1.Admin` (`proto/dms/v1/admin.proto`): what an operator does
//! with `dmsctl`. It serves on the master's listener beside `dms.v1.Replication`.
//!
//! It is a second front end over the same operations as the REST API, never a copy of them:
//! task requests are checked by [`crate::tasks::request`], the figures come from
//! [`crate::api::views`], replicas from [`crate::replication::api::NodesApi`]. So both front ends
//! refuse the same requests with the same messages.
//!
//! - [`AdminService`]: the service; every call is checked by the master's
//!   [`Authorizer`] first (reads need [`Access::Read`], calls that change something
//!   [`Access::Write`]).
//! - [`AdminContext`]: what it reads and drives.
//! - [`convert`]: domain values as protobuf messages.
//! - Errors become gRPC statuses here only: an invalid parameter is `InvalidArgument` naming the
//!   field, an unknown task or replica `NotFound`, an operation that does not fit the current
//!   state `FailedPrecondition`, a store that cannot be read `Unavailable`.
//! - `Export` streams the chunks of [`crate::data::export`], the producer behind
//!   `GET /api/data/export`, so both give the same bytes.
//! - `WatchTask` sends the task at once and again after each change the task store announces
//!   ([`crate::tasks::store::TaskStore::changes`]), until the task has ended.
//!
//! # Layout
//!
//! - this module: [`AdminContext`], [`AdminService`] and its `Admin` impl: every call's access
//!   check, the task, status, series, replica, schedule, journal and source calls, and the
//!   task watch.
//! - `data`: the calls on the data as a whole: export, delete, file import, backups.
//! - `errors`: refused operations as gRPC statuses ([`task_status`], [`node_status`]).
//! - [`convert`]: domain values as protobuf messages.
//!
//! `data` imports `errors`, `convert` and this module's context; `errors` and `convert` import
//! no sibling.

pub mod convert;
mod data;
mod errors;

use std::pin::Pin;
use std::time::Duration;

use dms_common::pb::admin_server::{Admin, AdminServer};
use dms_common::pb::{self};
use dms_common::read_api::{self, SeriesQuery};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::api::state::ApiState;
use crate::api::views::{self, DataStatus};
use crate::auth::{Access, Authorizer};
use crate::replication::api::{NodesApi, history_limit};
use crate::tasks::request;
use errors::{schedule_status, store_status};

pub use errors::{node_status, task_status};

/// How often a watched task is looked at even without a change announced (its message can
/// change without a write, e.g. while it waits for the store).
const WATCH_REFRESH: Duration = Duration::from_secs(1);

/// What the admin service reads and drives.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// What the REST API reads: store, journal, tasks, catalog, …
    pub api: ApiState,
    /// The replicas.
    pub nodes: NodesApi,
    pub auth: Authorizer,
    /// The scheduled jobs.
    pub scheduler: crate::ops::schedule::Scheduler,
    /// Fires when the master shuts down: open watches end.
    pub shutdown: CancellationToken,
}

/// The `dms.v1.Admin` service.
#[derive(Debug, Clone)]
pub struct AdminService {
    ctx: AdminContext,
}

impl AdminService {
    pub fn new(ctx: AdminContext) -> Self {
        AdminService { ctx }
    }

    /// The tonic server for this service, accepting compressed requests.
    pub fn into_server(self) -> AdminServer<AdminService> {
        AdminServer::new(self)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
    }

    /// The SQL-table source `name`, or NOT_FOUND naming it.
    fn sql_source(&self, name: &str) -> Result<&crate::sources::sql::SqlTable, Status> {
        self.ctx.api.tasks.sql_source(name).ok_or_else(|| {
            Status::not_found(format!(
                "no SQL source named {name:?} (see sources[] with type: sql)"
            ))
        })
    }

    fn check<T>(&self, req: &Request<T>, need: Access) -> Result<(), Status> {
        self.ctx.auth.check_grpc(req.metadata(), need)
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type WatchTaskStream = BoxStream<pb::Task>;
    type ExportStream = BoxStream<pb::ExportChunk>;

    async fn start_task(
        &self,
        req: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.check(&req, Access::Write)?;
        let req = req.into_inner();
        let kind = convert::kind_from_pb(req.kind).ok_or_else(|| {
            Status::invalid_argument(
                "field `kind`: give one of import, update, backfill or validate",
            )
        })?;
        let params = convert::task_request(req.params);
        let task = request::start(&self.ctx.api.tasks, kind, params)
            .await
            .map_err(task_status)?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.check(&req, Access::Read)?;
        let task = request::get(&self.ctx.api.tasks, &req.get_ref().task_id)
            .await
            .map_err(task_status)?;
        let task = request::shown(task, &self.ctx.api.backpressure);
        Ok(Response::new(convert::task(&task)))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.check(&req, Access::Read)?;
        let req = req.into_inner();
        let status = convert::status_from_pb(req.status).map_err(Status::invalid_argument)?;
        let limit = (req.limit != 0).then(|| req.limit.to_string());
        let limit = request::list_limit(limit.as_deref()).map_err(task_status)?;
        let tasks = request::list(&self.ctx.api.tasks, status, limit)
            .await
            .map_err(task_status)?;
        let bp = &self.ctx.api.backpressure;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks
                .into_iter()
                .map(|t| convert::task(&request::shown(t, bp)))
                .collect(),
        }))
    }

    async fn cancel_task(
        &self,
        req: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        self.check(&req, Access::Write)?;
        let task = request::cancel(&self.ctx.api.tasks, &req.get_ref().task_id)
            .await
            .map_err(task_status)?;
        Ok(Response::new(convert::task(&task)))
    }

    async fn watch_task(
        &self,
        req: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        self.check(&req, Access::Read)?;
        let id = req.into_inner().task_id;
        // Subscribe before the first read, so no change after it is missed.
        let changes = self.ctx.api.tasks.tasks().changes();
        let first = request::get(&self.ctx.api.tasks, &id)
            .await
            .map_err(task_status)?;
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(watch(self.ctx.clone(), first, changes, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::DataStatus>, Status> {
        self.check(&req, Access::Read)?;
        let status = DataStatus::gather(&self.ctx.api).await;
        Ok(Response::new(convert::data_status(&status)))
    }

    async fn list_series(
        &self,
        req: Request<pb::AdminListSeriesRequest>,
    ) -> Result<Response<pb::AdminListSeriesResponse>, Status> {
        self.check(&req, Access::Read)?;
        let rows = views::catalog_rows(&self.ctx.api)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::AdminListSeriesResponse {
            series: rows.iter().map(convert::catalog_series).collect(),
        }))
    }

    async fn get_gaps(
        &self,
        req: Request<pb::GetGapsRequest>,
    ) -> Result<Response<pb::GapReport>, Status> {
        self.check(&req, Access::Read)?;
        let req = req.into_inner();
        let query = SeriesQuery {
            symbol: Some(req.symbol),
            interval: req.interval,
            ..Default::default()
        };
        let key = query.series_key().map_err(Status::invalid_argument)?;
        let gaps = views::series_gaps(&self.ctx.api, &key)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::gap_report(&gaps)))
    }

    async fn get_bars(
        &self,
        req: Request<pb::GetBarsRequest>,
    ) -> Result<Response<pb::BarsPage>, Status> {
        self.check(&req, Access::Read)?;
        let req = req.into_inner();
        let query = SeriesQuery {
            symbol: Some(req.symbol),
            interval: req.interval,
            start: req.start,
            end: req.end,
            limit: req.limit.map(|l| l.to_string()),
            format: None,
        };
        let bars = query.bars_request().map_err(Status::invalid_argument)?;
        let (page, next) = read_api::read_page(&*self.ctx.api.store, &bars)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::BarsPage {
            series: Some((&bars.key).into()),
            bars: page.iter().map(pb::Bar::from).collect(),
            next_start: next.map(|t| t.0),
        }))
    }

    async fn get_overview(
        &self,
        req: Request<pb::OverviewRequest>,
    ) -> Result<Response<pb::OverviewResponse>, Status> {
        self.check(&req, Access::Read)?;
        let req = req.into_inner();
        let query = crate::api::views::OverviewQuery {
            prefix: req.prefix,
            interval: req.interval,
            gaps: req.gaps,
        };
        let rows = crate::api::views::overview(&self.ctx.api, &query)
            .await
            .map_err(|e| {
                if e.starts_with("field") {
                    Status::invalid_argument(e)
                } else {
                    Status::unavailable(e)
                }
            })?;
        Ok(Response::new(pb::OverviewResponse {
            store_bytes: rows.store_bytes,
            series: rows
                .rows
                .into_iter()
                .map(|r| pb::OverviewRow {
                    symbol: r.symbol,
                    interval: r.interval,
                    count: r.count,
                    first: r.first,
                    last: r.last,
                    missing: r.missing,
                    source: r.source,
                    size_bytes: r.size_bytes,
                })
                .collect(),
        }))
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        self.check(&req, Access::Read)?;
        data::export(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_bars(
        &self,
        req: Request<pb::DeleteBarsRequest>,
    ) -> Result<Response<pb::DeleteBarsResponse>, Status> {
        self.check(&req, Access::Write)?;
        data::delete_bars(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        self.check(&req, Access::Read)?;
        let nodes = self.ctx.nodes.list().await.map_err(node_status)?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: nodes.iter().map(convert::node).collect(),
        }))
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        self.check(&req, Access::Read)?;
        let node = self
            .ctx
            .nodes
            .get(&req.get_ref().node_id)
            .await
            .map_err(node_status)?;
        Ok(Response::new(convert::node(&node)))
    }

    async fn get_node_history(
        &self,
        req: Request<pb::GetNodeHistoryRequest>,
    ) -> Result<Response<pb::NodeHistory>, Status> {
        self.check(&req, Access::Read)?;
        let req = req.into_inner();
        let limit = (req.limit != 0).then(|| req.limit.to_string());
        let limit = history_limit(limit.as_deref()).map_err(node_status)?;
        let sessions = self
            .ctx
            .nodes
            .history(&req.node_id, limit)
            .await
            .map_err(node_status)?;
        Ok(Response::new(pb::NodeHistory {
            node_id: req.node_id,
            sessions: sessions.iter().map(convert::session).collect(),
        }))
    }

    async fn verify_node(
        &self,
        req: Request<pb::VerifyNodeRequest>,
    ) -> Result<Response<pb::NodeVerifyReport>, Status> {
        self.check(&req, Access::Write)?;
        let report = self
            .ctx
            .nodes
            .verify(&req.get_ref().node_id)
            .await
            .map_err(node_status)?;
        Ok(Response::new(convert::verify_report(&report)))
    }

    async fn forget_node(
        &self,
        req: Request<pb::ForgetNodeRequest>,
    ) -> Result<Response<pb::ForgetNodeResponse>, Status> {
        self.check(&req, Access::Write)?;
        let message = self
            .ctx
            .nodes
            .forget(&req.get_ref().node_id)
            .await
            .map_err(node_status)?;
        Ok(Response::new(pb::ForgetNodeResponse { message }))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        self.check(&req, Access::Read)?;
        let schedules = self.ctx.scheduler.list().await;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(convert::schedule).collect(),
        }))
    }

    async fn trigger_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::ScheduleRun>, Status> {
        self.check(&req, Access::Write)?;
        self.ctx
            .scheduler
            .trigger(&req.get_ref().name)
            .await
            .map(|r| Response::new(convert::schedule_run(&r)))
            .map_err(|e| schedule_status(&e))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.check(&req, Access::Write)?;
        self.ctx
            .scheduler
            .pause(&req.get_ref().name)
            .await
            .map(|r| Response::new(convert::schedule(&r)))
            .map_err(|e| schedule_status(&e))
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.check(&req, Access::Write)?;
        self.ctx
            .scheduler
            .resume(&req.get_ref().name)
            .await
            .map(|r| Response::new(convert::schedule(&r)))
            .map_err(|e| schedule_status(&e))
    }

    async fn journal_stats(
        &self,
        req: Request<pb::JournalStatsRequest>,
    ) -> Result<Response<pb::JournalStatsResponse>, Status> {
        self.check(&req, Access::Read)?;
        let journal = &self.ctx.api.journal;
        let stats = journal
            .stats()
            .await
            .map_err(|e| Status::unavailable(format!("the journal cannot be read: {e}")))?;
        let cursors = journal
            .cursors()
            .await
            .map_err(|e| Status::unavailable(format!("the journal cannot be read: {e}")))?;
        Ok(Response::new(pb::JournalStatsResponse {
            history_id: journal.history_id().0.clone(),
            head: stats.head.0,
            pruned_through: stats.pruned_through.0,
            entries: stats.entries,
            bytes: stats.bytes,
            pending_acks: stats.pending_acks as u64,
            store_applied: self.ctx.api.applier.get().applied_seq.0,
            append_error: journal.append_error(),
            cursors: cursors.iter().map(convert::cursor).collect(),
        }))
    }

    async fn list_source_tables(
        &self,
        req: Request<pb::SourceRequest>,
    ) -> Result<Response<pb::SourceTables>, Status> {
        self.check(&req, Access::Read)?;
        let table = self.sql_source(&req.get_ref().source)?;
        let tables = table.tables().await.map_err(Status::unavailable)?;
        Ok(Response::new(pb::SourceTables {
            tables: tables
                .into_iter()
                .map(|t| pb::SourceTable {
                    name: t.name,
                    columns: t
                        .columns
                        .into_iter()
                        .map(|c| pb::SourceColumn {
                            name: c.name,
                            r#type: c.data_type,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn preview_source(
        &self,
        req: Request<pb::PreviewSourceRequest>,
    ) -> Result<Response<pb::SourcePreview>, Status> {
        self.check(&req, Access::Read)?;
        let limit = req.get_ref().limit.unwrap_or(20);
        if !(1..=1000).contains(&limit) {
            return Err(Status::invalid_argument(format!(
                "field `limit`: {limit} is not between 1 and 1000"
            )));
        }
        let table = self.sql_source(&req.get_ref().source)?;
        let rows = table
            .preview(limit as usize)
            .await
            .map_err(Status::unavailable)?;
        let mut preview = pb::SourcePreview {
            mode: table.config().mode.as_str().into(),
            key: table.config().key_columns(),
            ..Default::default()
        };
        for row in rows {
            match row {
                crate::sources::sql::SqlRow::Bar(key, bar) => preview.rows.push(pb::PreviewRow {
                    series: Some((&key).into()),
                    bar: Some(pb::Bar::from(&bar)),
                }),
                crate::sources::sql::SqlRow::Problem(p) => preview.problems.push(p),
            }
        }
        Ok(Response::new(preview))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        self.check(&req, Access::Read)?;
        data::list_backups(&self.ctx).await.map(Response::new)
    }

    async fn import_file(
        &self,
        req: Request<pb::ImportFileRequest>,
    ) -> Result<Response<pb::ImportFileResponse>, Status> {
        // A file on the master's machine: even a dry run reads it, so it needs the full token.
        self.check(&req, Access::Write)?;
        data::import_file(&self.ctx, req.into_inner())
            .await
            .map(Response::new)
    }
}

/// Sends `first`, then the task again each time it changed, until it has ended, the client
/// went away or the master shuts down.
async fn watch(
    ctx: AdminContext,
    first: crate::tasks::Task,
    mut changes: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<Result<pb::Task, Status>>,
) {
    let tasks = &ctx.api.tasks;
    let mut task = first;
    let mut last_sent: Option<pb::Task> = None;
    loop {
        let shown = convert::task(&request::shown(task.clone(), &ctx.api.backpressure));
        if last_sent.as_ref() != Some(&shown) {
            if tx.send(Ok(shown.clone())).await.is_err() {
                return;
            }
            last_sent = Some(shown);
        }
        if task.status.is_final() {
            return;
        }
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(WATCH_REFRESH) => {}
            _ = tx.closed() => return,
            _ = ctx.shutdown.cancelled() => {
                let _ = tx.send(Err(Status::unavailable("the master is shutting down"))).await;
                return;
            }
        }
        task = match request::get(tasks, &task.id).await {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.send(Err(task_status(e))).await;
                return;
            }
        };
    }
}
