//! `Replicator`: follows the master's journal into the replica's store, and repairs.
//!
//! One loop, one session at a time: connect, say `Hello` with the stored position, then either
//! stream (apply each message's entries to the store, store the new cursor, ack) or, when the
//! master answers `RepairRequired`, run a digest [`repair`](crate::repair) and subscribe again
//! from the seq the master named. A broken link, a silent master (no message within
//! `master.idle_timeout`) or a refused call ends the session; the next one starts after a
//! backoff that doubles with jitter up to `master.reconnect_max_delay` and resets once a
//! session is established.
//!
//! Anti-entropy runs between sessions, every `anti_entropy_interval` or when asked over HTTP
//! (see `anti_entropy`).
//!
//! # Layout
//!
//! - `status`: [`LinkState`], [`ReplicaStatus`], [`StatusCell`], what `/api/replica/status`
//!   shows; imports none of its siblings.
//! - `session`: one session with the master (subscribe, read the stream, apply groups, ack);
//!   may import `status`, this module and `anti_entropy`'s `Replicator` methods.
//! - `anti_entropy`: repairs the master asks for, anti-entropy and verify reports; may import
//!   `status` and this module.
//! - this module: [`Replicator`], the main loop with its reconnects and backoff, and
//!   [`SyncError`]; may import all three.

mod anti_entropy;
mod session;
mod status;

use std::sync::Arc;
use std::time::Duration;

use dms_common::config::Secret;
use dms_common::store::SharedStore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::{self, MasterClient};
use crate::config::ReplicaConfig;
use crate::repair::RepairError;
use crate::state::ReplicaState;
use session::Next;
pub use status::{LinkState, ReplicaStatus, StatusCell};

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Connect(#[from] client::ConnectError),
    #[error("{}", refused_text(.0))]
    Refused(tonic::Status),
    #[error("the stream broke: {0}")]
    Stream(String),
    #[error("state file: {0}")]
    State(#[from] dms_common::state::StateError),
    #[error("store: {0}")]
    Store(#[from] dms_common::store::StoreError),
    #[error("repair: {0}")]
    Repair(#[from] RepairError),
    #[error("the master sent a bad message: {0}")]
    Protocol(String),
}

/// A status the master sent says why it refused; one made on this side (the call never got an
/// answer) carries the transport error, TLS errors included, as its source.
fn refused_text(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => format!(
            "the call to the master failed: {}: {}",
            status.message(),
            client::error_chain(source)
        ),
        None => format!("the master refused the subscription: {}", status.message()),
    }
}

impl SyncError {
    /// Whether the link itself failed (no answer from the master's gRPC service).
    fn is_transport(&self) -> bool {
        match self {
            SyncError::Connect(_) | SyncError::Stream(_) => true,
            SyncError::Refused(s) => std::error::Error::source(s).is_some(),
            _ => false,
        }
    }
}

/// The replication loop and what it shares with the HTTP API.
#[derive(Debug, Clone)]
pub struct Replicator {
    pub config: Arc<ReplicaConfig>,
    pub token: Option<Secret>,
    pub store: SharedStore,
    pub state: ReplicaState,
    pub status: StatusCell,
    /// Notified to run anti-entropy now.
    pub anti_entropy_now: Arc<Notify>,
    /// Held while a batch is applied and its cursor stored, and by a pull requested over HTTP
    /// for its whole run, so a pulled range never overwrites entries applied meanwhile.
    pub apply_lock: Arc<tokio::sync::Mutex<()>>,
    pub http_address: String,
}

/// `d` with up to half of it added at random.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl Replicator {
    /// Runs until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.check_store_matches_position().await {
            tracing::error!(error = %e, "cannot check the store against the stored position");
        }
        let link = &self.config.master;
        let mut delay = link.reconnect_min_delay.0;
        let mut next_anti_entropy = self.anti_entropy_deadline();
        loop {
            if stop.is_cancelled() {
                return;
            }
            let outcome = self.session(&stop, &mut delay, next_anti_entropy).await;
            let outcome = match outcome {
                Ok(Next::AntiEntropy) => {
                    next_anti_entropy = self.anti_entropy_deadline();
                    self.anti_entropy(&stop).await.map(|()| Next::Reconnect)
                }
                other => other,
            };
            match outcome {
                Ok(Next::Stop) => return,
                Ok(Next::Reconnect | Next::AntiEntropy) => {}
                Err(e) => {
                    let mut message = e.to_string();
                    if e.is_transport()
                        && link.url.starts_with("http://")
                        && client::speaks_tls(&link.url, link.connect_timeout.0).await
                    {
                        message.push_str(
                            "; the master's port speaks TLS: use an https:// master.url and set master.tls.ca",
                        );
                    }
                    match &e {
                        SyncError::Refused(s) if s.code() == tonic::Code::Unauthenticated => {
                            tracing::error!(
                                "the master refused this replica's token: {}",
                                s.message()
                            );
                        }
                        _ => {
                            tracing::warn!(error = %message, retry_in = ?delay, "replication session ended")
                        }
                    }
                    self.status.update(|s| {
                        s.state = LinkState::Disconnected;
                        s.connected_since_ms = None;
                        s.last_error = Some(message);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(jittered(delay)) => {}
                        _ = stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(link.reconnect_max_delay.0);
                }
            }
        }
    }

    /// A store that lost its bars (or holds bars from before the first sync) does not match
    /// the stored cursor: mark the position for repair.
    async fn check_store_matches_position(&self) -> Result<(), SyncError> {
        let mut pos = self.state.position().await?;
        let overview = self.store.overview().await?;
        let reason = if pos.needs_repair {
            None
        } else if pos.cursor > 0 && overview.is_empty() {
            Some(format!(
                "the store holds no bars but the replica had applied the journal up to {}",
                pos.cursor
            ))
        } else if pos.history_id.is_empty() && !overview.is_empty() {
            Some("the store holds bars from before this replica first synced".to_owned())
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::warn!(%reason, "the replica will repair");
            pos.needs_repair = true;
            pos.repair_reason = Some(reason);
            self.state.set_position(&pos).await?;
        }
        self.status.update(|s| {
            s.history_id = pos.history_id.clone();
            s.cursor = pos.cursor;
            s.needs_repair = pos.needs_repair;
            s.repair_reason = pos.repair_reason.clone();
        });
        Ok(())
    }

    async fn connect(&self) -> Result<MasterClient, SyncError> {
        Ok(client::connect(&self.config.master, self.token.as_ref()).await?)
    }
}
