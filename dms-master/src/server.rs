//! `run`: the running master. Opens the state file (journal, quarantine) and the bar store,
//! starts the store applier, the journal retention loop, the writer of cursor acknowledgements,
//! the start-up imports and the scheduler's jobs, serves HTTP, and on shutdown stops them in
//! order: HTTP, imports and scheduled jobs first, then the applier drains the journal into the
//! store, all within `shutdown_timeout`.
//!
//! Under systemd it reports what it does (`STATUS=`), `READY=1` once the state and the store
//! are open and the listener serves; on SIGHUP it re-reads its config file ([`reload`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dms_common::config::ConfigIssue;
use dms_common::daemon::Daemon;
use dms_common::journal::{Journal, JournalError};
use dms_common::state::StateError;
use dms_common::store::{StoreError, open_store};
use dms_common::systemd::Notifier;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::api::admin::{AdminContext, AdminService};
use crate::api::http;
use crate::api::metrics::{MetricsSource, RequestRates};
use crate::api::state::{ApiState, BarsCache};
use crate::config::{MasterConfig, SourceConfig};
use crate::data::import::source::ImportSummary;
use crate::ops::schedule::{self, RunContext, Scheduler, SystemClock};
use crate::ops::watcher::{self, Watched};
use crate::pipeline::applier::{self, ApplierOptions};
use crate::pipeline::catalog::Catalog;
use crate::pipeline::dead_letters::{self, DeadLetters};
use crate::pipeline::ingest::{Backpressure, Ingestor};
use crate::pipeline::quarantine::Quarantine;
use crate::reload;
use crate::replication::api::NodesApi;
use crate::replication::nodes::NodeRegistry;
use crate::replication::{self, ReplicationContext, ReplicationService, StreamOptions};
use crate::sources::registry::{SourceSetupError, SqlTables};
use crate::tasks::manager::{TaskContext, TaskFiles, TaskManager};
use crate::tasks::store::TaskStore;
use crate::tasks::{TaskKind, TaskParams, TaskStatus};
use crate::universe::{Universe, UniverseError};

/// How often acknowledged cursor positions are written to the state file.
const ACK_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// Why the master could not start, or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A config value cannot be used (a TLS file, a token, a source).
    #[error("{}: {}", .0.key, .0.message)]
    Config(ConfigIssue),
    /// The state file cannot be opened.
    #[error("cannot open the state file {path}: {source}")]
    StateFile {
        path: std::path::PathBuf,
        #[source]
        source: JournalError,
    },
    /// A table of the state file cannot be opened or read.
    #[error("the state file: {0}")]
    State(#[from] StateError),
    /// The journal cannot be read.
    #[error("the journal: {0}")]
    Journal(#[from] JournalError),
    /// The store cannot be opened or read.
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    /// A source cannot be built.
    #[error(transparent)]
    Source(#[from] SourceSetupError),
    /// A watchlist cannot be read.
    #[error(transparent)]
    Universe(#[from] UniverseError),
    /// The scheduler cannot start.
    #[error("the scheduler: {0}")]
    Schedule(#[from] crate::ops::schedule::ScheduleError),
    /// The gRPC routes cannot be built.
    #[error("the gRPC services: {0}")]
    Grpc(#[from] tonic_reflection::server::Error),
    /// Something the master starts with failed.
    #[error("{0}")]
    Startup(String),
    /// The listener or the HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the master on an already-bound listener until `daemon.shutdown` fires. `universe` is
/// the series list built from `config` (built by the caller, which checks it with the config);
/// `config_path` is the file `config` came from, re-read on SIGHUP (`None`: reloads are
/// refused).
pub async fn run(
    config: MasterConfig,
    config_path: Option<std::path::PathBuf>,
    universe: Universe,
    listener: TcpListener,
    daemon: Daemon,
) -> Result<(), RunError> {
    let Daemon {
        shutdown,
        reload: reload_signal,
        notifier,
    } = daemon;
    let authorizer =
        crate::auth::Authorizer::from_config(&config.auth).map_err(RunError::Config)?;
    config.http.warn_if_open(authorizer.enabled());
    let tls = config.http.tls_acceptor().map_err(RunError::Config)?;
    crate::metrics::install();
    let alerts = Alerts::start(config.alerts.clone(), &shutdown);
    let journal = Journal::open(&config.state.path, config.journal.policy()).map_err(|source| {
        RunError::StateFile {
            path: config.state.path.clone(),
            source,
        }
    })?;
    let quarantine = Quarantine::open(&config.state.path)?;
    let store = open_store(&config.store).await?;
    // Before anything is journaled: does this journal hold every change of the store?
    let nodes = NodeRegistry::open(&config.state.path)?;
    let journal_covers_store = {
        let stats = journal.stats().await?;
        let fresh = stats.head.0 == 0 && stats.pruned_through.0 == 0;
        let store_empty = store.overview().await?.is_empty();
        nodes
            .record_journal_coverage(&journal.history_id().0, fresh, store_empty)
            .await?
    };
    tracing::info!(
        state = %config.state.path.display(),
        store = store.backend(),
        history = %journal.history_id(),
        head = %journal.head(),
        "state opened"
    );
    notifier.status("state opened; starting the applier, tasks and imports");

    let applier_stop = CancellationToken::new();
    let applier = applier::start(
        journal.clone(),
        store.clone(),
        ApplierOptions::default(),
        applier_stop.clone(),
    )
    .await?;

    let work_stop = shutdown.child_token();
    let retention = tokio::spawn(retention_loop(
        journal.clone(),
        config.journal.retention_interval.0,
        work_stop.clone(),
    ));

    let ack_flusher = tokio::spawn({
        let (journal, stop) = (journal.clone(), work_stop.clone());
        async move {
            journal
                .flush_acks_every(ACK_FLUSH_INTERVAL, stop.cancelled_owned())
                .await
        }
    });

    let backpressure = Backpressure::new(applier.applied(), config.journal.max_unapplied.0);
    let backpressure_for_api = backpressure.clone();
    let ingestor =
        Ingestor::new(journal.clone(), quarantine.clone()).with_backpressure(backpressure.clone());
    let universe = Arc::new(universe);
    let catalog = Catalog::open(&config.state.path)?;
    let imports: Arc<Mutex<Vec<ImportSummary>>> = Arc::default();
    let tasks = TaskManager::new(TaskContext {
        tasks: TaskStore::open(&config.state.path)?,
        universe: universe.clone(),
        ingestor: ingestor.clone(),
        journal: journal.clone(),
        store: store.clone(),
        catalog: catalog.clone(),
        applied: applier.applied(),
        config: config.tasks.clone(),
        alerts: alerts.clone(),
        tables: Arc::new(SqlTables::open(&config.sources)?),
        imports: imports.clone(),
        files: TaskFiles::new(
            &config.state.path,
            &config.state.dir(),
            &config.backup,
            &config.store,
        )
        .with_allowed_dirs(&config.file_import.allowed_dirs),
        targets: crate::data::targets::Targets::new(config.targets.clone()),
    });
    remove_orphan_uploads(&config.state.uploads_dir(), &tasks).await;
    tracing::info!(series = universe.len(), "series kept");
    let startup = queue_startup_imports(&config.sources, &tasks).await?;
    let task_runner = tokio::spawn(tasks.clone().run(work_stop.clone()));
    let import_task = tokio::spawn({
        let (tasks, ids) = (tasks.clone(), startup.clone());
        let (store, notifier) = (store.clone(), notifier.clone());
        let (journal, mut applied, stop) = (journal.clone(), applier.applied(), work_stop.clone());
        async move {
            if ids.is_empty() {
                return;
            }
            tokio::select! {
                _ = until_ended(tasks.tasks(), &ids, &notifier) => {}
                _ = stop.cancelled() => return,
            }
            // Count the series once the store holds what the imports journaled.
            let head = journal.head();
            tokio::select! {
                _ = applied.wait_for(|s| *s >= head) => {}
                _ = stop.cancelled() => return,
            }
            notifier.status(&ready_status(&store).await);
        }
    });

    let nodes_api = NodesApi {
        nodes: nodes.clone(),
        journal: journal.clone(),
        store: store.clone(),
        store_applied: applier.applied(),
    };
    let scheduler = Scheduler::start(
        RunContext {
            tasks: tasks.clone(),
            store: store.clone(),
            catalog: catalog.clone(),
            nodes: Some(nodes_api.clone()),
            watchlists: Arc::new(crate::universe::watchlist_symbols(&config.watchlists)?),
            alerts: alerts.clone(),
        },
        config.schedules.clone(),
        &config.state.path,
        Arc::new(SystemClock),
        work_stop.clone(),
    )
    .await?;

    let watcher = watcher::spawn(
        alerts.clone(),
        Watched {
            journal: journal.clone(),
            nodes: nodes.clone(),
            store: store.clone(),
            applier: applier.status_cell(),
        },
        work_stop.clone(),
    );

    let dead = DeadLetters::open(&config.state.path)?;
    let state = ApiState {
        store: store.clone(),
        journal: journal.clone(),
        quarantine,
        dead_letters: dead.clone(),
        backpressure: backpressure.clone(),
        catalog,
        applier: applier.status_cell(),
        versions: applier.versions(),
        imports: imports.clone(),
        tasks,
        bars_cache: Arc::new(BarsCache::new(256, 64 << 20)),
        ingestor,
        uploads_dir: config.state.uploads_dir(),
        file_import: config.file_import.clone(),
    };
    let token = config
        .replication
        .resolve_token()
        .map_err(RunError::Config)?;
    let mut node_tokens = Vec::new();
    for (node, t) in &config.replication.node_tokens {
        let key = format!("replication.node_tokens.{node}");
        if let Some(t) = t.resolve(&key).map_err(RunError::Config)? {
            node_tokens.push((node.clone(), t.expose().to_owned()));
        }
    }
    let replication_auth = replication::ReplicationAuth::new(
        token.as_ref().map(|t| t.expose()),
        authorizer.full_token(),
        node_tokens,
    );
    let replication = ReplicationService::new(ReplicationContext {
        journal: journal.clone(),
        store: store.clone(),
        store_applied: applier.applied(),
        nodes: nodes.clone(),
        auth: replication_auth,
        journal_covers_store,
        options: StreamOptions {
            heartbeat: config.replication.heartbeat_interval.0,
            max_unacked_bytes: config.replication.max_unacked_bytes.0,
            ..StreamOptions::default()
        },
        shutdown: shutdown.clone(),
    });
    let admin = AdminService::new(AdminContext {
        api: state.clone(),
        nodes: nodes_api.clone(),
        auth: authorizer.clone(),
        scheduler: scheduler.clone(),
        shutdown: shutdown.clone(),
    });
    let extra = crate::api::grpc::grpc_router(replication, Some(admin))
        .await?
        .merge(dead_letters::router(
            dead.clone(),
            journal.clone(),
            backpressure_for_api,
        ))
        .merge(crate::api::metrics::router(MetricsSource {
            journal: journal.clone(),
            applied: applier.applied(),
            nodes: nodes.clone(),
            request_rates: RequestRates({
                let universe = universe.clone();
                Arc::new(move || {
                    universe
                        .request_rates()
                        .into_iter()
                        .map(|(source, r)| (source, r.requests_per_second))
                        .collect()
                })
            }),
        }))
        .merge(replication::api::router(nodes_api))
        .merge(schedule::router(scheduler.clone()));
    let scheduler_for_reload = scheduler;
    let addr = listener.local_addr()?;
    let router = config
        .http
        .rules(authorizer, config.auth.public_metrics)
        .apply(http::router(state, extra));
    let reloader = tokio::spawn(reload::run(
        reload::Reloadable {
            config_path,
            current: config.clone(),
            tls: tls.clone(),
            scheduler: scheduler_for_reload,
            alerts: alerts.clone(),
            notifier: notifier.clone(),
            ready_status: {
                let store = store.clone();
                Arc::new(move || {
                    let store = store.clone();
                    Box::pin(async move { ready_status(&store).await })
                })
            },
        },
        reload_signal,
        work_stop.clone(),
    ));
    tracing::info!(%addr, tls = tls.is_some(), "HTTP and gRPC listening");
    // The listener is bound: connections made from now on are served.
    notifier.ready(&match startup.is_empty() {
        false => format!("ready; start-up import queued as {}", startup.join(", ")),
        true => ready_status(&store).await,
    });
    let serve_result = dms_common::daemon::serve_http(
        listener,
        router,
        &shutdown,
        config.shutdown_timeout.0,
        config.http.limits(),
        tls,
    )
    .await;
    notifier.stopping();
    let started = Instant::now();
    tracing::info!("shutting down");

    work_stop.cancel();
    let deadline = config.shutdown_timeout.0;
    let remaining = || deadline.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(remaining(), import_task).await;
    // Background loops stop at `work_stop`; none may hold shutdown past its deadline.
    let loops = async {
        let _ = retention.await;
        let _ = watcher.await;
        let _ = ack_flusher.await;
        let _ = reloader.await;
    };
    if tokio::time::timeout(remaining(), loops).await.is_err() {
        tracing::warn!("background loops did not stop in time");
    }
    if tokio::time::timeout(remaining(), task_runner)
        .await
        .is_err()
    {
        tracing::warn!("the running task did not stop in time; it resumes at the next start");
    }
    applier_stop.cancel();
    let head = journal.head();
    let drained = applier.join(remaining()).await;
    if drained {
        tracing::info!(journal_head = %head, "store applier drained; shutdown complete");
    } else {
        tracing::warn!(
            journal_head = %head,
            "store applier did not drain in time; the rest stays in the journal for the next start"
        );
    }
    serve_result.map_err(RunError::Http)
}

/// Removes uploaded files no pending or running import will read (left by a master that was
/// killed, or that crashed, while an upload or its import was under way).
async fn remove_orphan_uploads(dir: &std::path::Path, tasks: &TaskManager) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let mut kept = std::collections::HashSet::new();
    for status in [TaskStatus::Pending, TaskStatus::Running] {
        if let Ok(list) = tasks.tasks().list(Some(status), usize::MAX).await {
            kept.extend(
                list.into_iter()
                    .filter_map(|t| t.params.file.filter(|f| f.uploaded).map(|f| f.path)),
            );
        }
    }
    while let Ok(Some(e)) = entries.next_entry().await {
        let path = e.path();
        if !kept.contains(&path) && e.file_type().await.is_ok_and(|t| t.is_file()) {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed an upload no import reads")
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove an orphaned upload")
                }
            }
        }
    }
}

/// Returns once every task of `ids` has ended; tells systemd when each begins.
async fn until_ended(tasks: &TaskStore, ids: &[String], notifier: &Notifier) {
    let mut changes = tasks.changes();
    let mut told = std::collections::HashSet::new();
    loop {
        let mut open = false;
        for id in ids {
            let Ok(Some(t)) = tasks.get(id).await else {
                continue;
            };
            // A task seen only once it ended is still reported: it ran.
            if t.started_at_ms.is_some() && told.insert(id.clone()) {
                let source = t.params.source.unwrap_or_default();
                notifier.status(&format!("importing from source {source} (task {id})"));
            }
            open |= !t.status.is_final();
        }
        if !open || changes.changed().await.is_err() {
            return;
        }
    }
}

/// `ready: N series` (the series the store holds).
async fn ready_status(store: &dms_common::store::SharedStore) -> String {
    match store.overview().await {
        Ok(o) => format!("ready: {} series", o.len()),
        Err(e) => format!("ready; the store cannot list its series: {e}"),
    }
}

async fn retention_loop(journal: Journal, every: std::time::Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match journal
            .apply_retention(chrono::Utc::now().timestamp_millis())
            .await
        {
            Ok(r) if r.removed_entries > 0 => {
                tracing::debug!(
                    entries = r.removed_entries,
                    bytes = r.removed_bytes,
                    "journal retention"
                );
                for c in r.cursors_marked {
                    tracing::error!(cursor = %c, "journal retention removed entries this consumer had not applied; it needs repair");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal retention failed"),
        }
    }
}

/// Queues a source import of each CSV source that imports on start, unless one left by an
/// earlier run of the master is still pending or running (it resumes instead). Returns the
/// tasks' ids.
async fn queue_startup_imports(
    sources: &[SourceConfig],
    tasks: &TaskManager,
) -> Result<Vec<String>, RunError> {
    let mut open = tasks
        .tasks()
        .list(Some(TaskStatus::Pending), usize::MAX)
        .await?;
    open.extend(
        tasks
            .tasks()
            .list(Some(TaskStatus::Running), usize::MAX)
            .await?,
    );
    let mut ids = Vec::new();
    for source in sources {
        let SourceConfig::Csv(c) = source else {
            continue;
        };
        if !c.import_on_start {
            continue;
        }
        let earlier = open.iter().find(|t| {
            t.kind == TaskKind::SourceImport && t.params.source.as_deref() == Some(&c.name)
        });
        let id = match earlier {
            Some(t) => t.id.clone(),
            None => {
                let params = TaskParams {
                    source: Some(c.name.clone()),
                    ..TaskParams::default()
                };
                let name = format!("start-up import of source {}", c.name);
                tasks
                    .submit(TaskKind::SourceImport, name, params)
                    .await
                    .map_err(|e| {
                        RunError::Startup(format!("cannot queue the start-up import: {e}"))
                    })?
                    .id
            }
        };
        tracing::info!(source = %c.name, task = %id, "start-up import queued");
        ids.push(id);
    }
    Ok(ids)
}
