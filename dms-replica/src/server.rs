//! `run`: the running replica. Opens its state file and store, starts the replication loop and
//! serves HTTP; on shutdown stops HTTP, then lets the loop finish the batch it is applying,
//! within `shutdown_timeout`. Under systemd it sends `READY=1` once its state and store are
//! open and the listener serves; on SIGHUP it reloads the certificate of its own listener
//! (`http.tls`; its client certificate for the master is read at every connection anyway).

use std::sync::Arc;
use std::time::Instant;

use dms_common::daemon::{Daemon, ReloadSignal};
use dms_common::store::open_store;
use dms_common::tls::{ServerTlsConfig, TlsAcceptor};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use dms_common::config::ConfigIssue;
use dms_common::state::StateError;
use dms_common::store::StoreError;

use crate::config::ReplicaConfig;
use crate::http;
use crate::state::ReplicaState;
use crate::sync::{Replicator, StatusCell};

/// Why the replica could not start, or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A config value cannot be used (a TLS file, a token).
    #[error("{}: {}", .0.key, .0.message)]
    Config(ConfigIssue),
    /// The state file cannot be opened or read.
    #[error("cannot open the state file {path}: {source}")]
    State {
        path: std::path::PathBuf,
        #[source]
        source: StateError,
    },
    /// The store cannot be opened.
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    /// The listener or the HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the replica on an already-bound listener until `daemon.shutdown` fires.
pub async fn run(
    config: ReplicaConfig,
    listener: TcpListener,
    daemon: Daemon,
) -> Result<(), RunError> {
    let Daemon {
        shutdown,
        reload,
        notifier,
    } = daemon;
    let tls = config.http.tls_acceptor().map_err(RunError::Config)?;
    let token = config.master.resolve_token().map_err(RunError::Config)?;
    let state_error = |source| RunError::State {
        path: config.state.path.clone(),
        source,
    };
    let state = ReplicaState::open(&config.state.path).map_err(state_error)?;
    let store = open_store(&config.store).await?;
    let position = state.position().await.map_err(state_error)?;
    tracing::info!(
        node = %config.node_id,
        master = %config.master.url,
        store = store.backend(),
        history = %position.history_id,
        cursor = position.cursor,
        "replica state opened"
    );
    let addr = listener.local_addr()?;
    let replicator = Replicator {
        config: Arc::new(config),
        token,
        store,
        state,
        status: StatusCell::default(),
        anti_entropy_now: Arc::new(Notify::new()),
        apply_lock: Arc::default(),
        http_address: addr.to_string(),
    };
    let authorizer = dms_common::auth::Authorizer::from_config(&replicator.config.auth)
        .map_err(RunError::Config)?;
    replicator.config.http.warn_if_open(authorizer.enabled());
    let rules = replicator
        .config
        .http
        .rules(authorizer, replicator.config.auth.public_metrics);
    let sync_stop = CancellationToken::new();
    let sync = tokio::spawn(replicator.clone().run(sync_stop.clone()));
    let reloader = tokio::spawn(reload_tls(
        replicator.config.http.tls.clone(),
        tls.clone(),
        reload,
        sync_stop.clone(),
    ));
    tracing::info!(%addr, tls = tls.is_some(), "HTTP listening");
    notifier.ready(&format!(
        "ready: following the master at {}",
        replicator.config.master.url
    ));
    let serve_result = dms_common::daemon::serve_http(
        listener,
        rules.apply(http::router(replicator.clone())),
        &shutdown,
        replicator.config.shutdown_timeout.0,
        replicator.config.http.limits(),
        tls,
    )
    .await;
    let started = Instant::now();
    tracing::info!("shutting down");
    notifier.stopping();
    sync_stop.cancel();
    let _ = reloader.await;
    let deadline = replicator.config.shutdown_timeout.0;
    if tokio::time::timeout(deadline.saturating_sub(started.elapsed()), sync)
        .await
        .is_err()
    {
        tracing::warn!(
            "replication did not stop in time; the next start resumes from the stored cursor"
        );
    }
    Ok(serve_result?)
}

/// On every reload signal, reads the listener's certificate and key again (same paths) and
/// serves them to new connections; a file that cannot be used leaves the old ones in place.
async fn reload_tls(
    config: Option<ServerTlsConfig>,
    acceptor: Option<TlsAcceptor>,
    mut reload: ReloadSignal,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = reload.changed() => {}
            _ = stop.cancelled() => return,
        }
        let (Some(config), Some(acceptor)) = (&config, &acceptor) else {
            tracing::info!("reload: the listener has no TLS; nothing to reload");
            continue;
        };
        match config.server_config("http.tls") {
            Ok(c) => {
                acceptor.replace(c);
                tracing::info!(cert = %config.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            Err(i) => tracing::error!(
                "TLS reload refused, the running certificate stays: {}: {}",
                i.key,
                i.message
            ),
        }
    }
}
