//! `run`: the running replica. Opens its state file and store, starts the replication loop and
//! serves HTTP; on shutdown stops HTTP, then lets the loop finish the batch it is applying,
//! within `shutdown_timeout`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use dms_common::store::open_store;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ReplicaConfig;
use crate::http;
use crate::state::ReplicaState;
use crate::sync::{Replicator, StatusCell};

/// Runs the replica on an already-bound listener until `shutdown` fires.
pub async fn run(
    config: ReplicaConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let token = config
        .master
        .resolve_token()
        .map_err(|i| anyhow::anyhow!("{}: {}", i.key, i.message))?;
    let state = ReplicaState::open(&config.state.path)
        .with_context(|| format!("cannot open the state file {}", config.state.path.display()))?;
    let store = open_store(&config.store).await?;
    let position = state.position().await?;
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
    let sync_stop = CancellationToken::new();
    let sync = tokio::spawn(replicator.clone().run(sync_stop.clone()));
    tracing::info!(%addr, "HTTP listening");
    let serve_result = dms_common::daemon::serve_http(
        listener,
        http::router(replicator.clone()),
        &shutdown,
        replicator.config.shutdown_timeout.0,
        replicator.config.http.limits(),
    )
    .await;
    let started = Instant::now();
    tracing::info!("shutting down");
    sync_stop.cancel();
    let deadline = replicator.config.shutdown_timeout.0;
    if tokio::time::timeout(deadline.saturating_sub(started.elapsed()), sync)
        .await
        .is_err()
    {
        tracing::warn!(
            "replication did not stop in time; the next start resumes from the stored cursor"
        );
    }
    serve_result.context("HTTP server failed")
}
