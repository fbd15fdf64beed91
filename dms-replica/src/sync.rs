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
//! Anti-entropy runs between sessions: every `anti_entropy_interval` (or when asked over HTTP)
//! the stream is closed, the digests are compared with the master's and differing buckets
//! pulled; the cursor stays where it was, so the stream then re-applies whatever came after it.
//! It runs only while the master's store has applied at least the replica's cursor, so what it
//! pulls is never older than what the replica holds. It first re-reads the local bars
//! ([`BarStore::scrub`](dms_common::store::BarStore::scrub)) so that bars changed behind the
//! store's back (a damaged or edited file) show in the digests it compares.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dms_common::config::Secret;
use dms_common::journal::{Change, ChangeBatch, Seq, decode_streamed};
use dms_common::pb::{self, master_message, replica_message};
use dms_common::store::digest::DIGEST_VERSION;
use dms_common::store::{SharedStore, UpsertStats};
use dms_common::{SeriesBars, SeriesKey, TimeRange};
use serde::Serialize;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::client::{self, MasterClient};
use crate::config::ReplicaConfig;
use crate::repair::{self, RepairError};
use crate::state::{Position, RepairRecord, ReplicaState};

/// The link to the master as the replica sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    #[default]
    Connecting,
    Repairing,
    CatchingUp,
    InSync,
    Disconnected,
}

/// What `/api/replica/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaStatus {
    pub node_id: String,
    pub master: String,
    pub state: LinkState,
    pub history_id: String,
    pub cursor: u64,
    /// The master's journal head, as last heard.
    pub master_head: u64,
    pub lag_seq: u64,
    /// How old the newest applied change was when the replica was last behind (0 in sync).
    pub lag_seconds: f64,
    pub needs_repair: bool,
    pub repair_reason: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub last_contact_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_repair: Option<RepairRecord>,
    pub sessions: u64,
    pub batches_applied: u64,
    pub bars_applied: u64,
}

/// The shared, readable status.
#[derive(Debug, Clone, Default)]
pub struct StatusCell(Arc<Mutex<ReplicaStatus>>);

impl StatusCell {
    /// A snapshot.
    pub fn get(&self) -> ReplicaStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReplicaStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

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

/// About the most bars applied in one store transaction when several messages are waiting.
const GROUP_BARS: usize = 200_000;

enum Next {
    Reconnect,
    AntiEntropy,
    Stop,
}

enum Incoming {
    Welcome(pb::Welcome),
    Entries(Vec<ChangeBatch>),
    Heartbeat(pb::Heartbeat),
    Verify(pb::VerifyRequest),
    Repair(pb::RepairRequired),
    Failed(String),
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
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

    fn anti_entropy_deadline(&self) -> Option<Instant> {
        let every = self.config.anti_entropy_interval.0;
        (!every.is_zero()).then(|| Instant::now() + every)
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

    async fn session(
        &self,
        stop: &CancellationToken,
        delay: &mut Duration,
        anti_entropy_at: Option<Instant>,
    ) -> Result<Next, SyncError> {
        self.status.update(|s| s.state = LinkState::Connecting);
        let mut client = self.connect().await?;
        let mut pos = self.state.position().await?;
        let last_repair = self.state.unreported_repair().await?;
        let hello = pb::Hello {
            node_id: self.config.node_id.clone(),
            history_id: pos.history_id.clone(),
            cursor: pos.cursor,
            needs_repair: pos.needs_repair,
            digest_version: DIGEST_VERSION.into(),
            http_address: self.http_address.clone(),
            last_repair: last_repair.as_ref().map(RepairRecord::to_pb),
        };
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let _ = out_tx.send(pb::ReplicaMessage {
            msg: Some(replica_message::Msg::Hello(hello)),
        });
        let inbound = client
            .subscribe(UnboundedReceiverStream::new(out_rx))
            .await
            .map_err(SyncError::Refused)?
            .into_inner();
        let idle = self.config.master.idle_timeout.0;
        let (in_tx, mut in_rx) = mpsc::channel(16);
        let reader = tokio::spawn(read_stream(inbound, in_tx, idle));
        let _reader_guard = AbortOnDrop(reader);
        let welcome = match in_rx.recv().await {
            Some(Incoming::Repair(r)) => {
                *delay = self.config.master.reconnect_min_delay.0;
                self.repair_now(&mut client, &mut pos, r, stop).await?;
                return Ok(Next::Reconnect);
            }
            Some(Incoming::Welcome(w)) => w,
            Some(Incoming::Failed(e)) => return Err(SyncError::Stream(e)),
            Some(_) => {
                return Err(SyncError::Protocol(
                    "the first message was neither Welcome nor RepairRequired".into(),
                ));
            }
            None => return Err(SyncError::Stream("the master closed the stream".into())),
        };
        if last_repair.is_some() {
            self.state.mark_repairs_reported().await?;
        }
        if welcome.start_after != pos.cursor
            || (!pos.history_id.is_empty() && pos.history_id != welcome.history_id)
        {
            return Err(SyncError::Protocol(format!(
                "the master welcomed history {} after {}, the replica is at {} after {}",
                welcome.history_id, welcome.start_after, pos.history_id, pos.cursor
            )));
        }
        // A first sync from the start of the journal adopts the master's history.
        let history = welcome.history_id.clone();
        pos.history_id = history.clone();
        let mut cursor = Seq(pos.cursor);
        let mut master_head = welcome.head;
        self.status.update(|s| {
            s.state = if cursor.0 >= master_head {
                LinkState::InSync
            } else {
                LinkState::CatchingUp
            };
            s.history_id = history.clone();
            s.connected_since_ms = Some(now_ms());
            s.last_contact_ms = Some(now_ms());
            s.last_error = None;
            s.sessions += 1;
            s.master_head = master_head;
            s.lag_seq = master_head.saturating_sub(cursor.0);
        });
        tracing::info!(cursor = %cursor, master_head, "subscribed to the master");
        // A message taken from the reader while grouping entries, handled next.
        let mut stash: Option<Incoming> = None;
        loop {
            let anti_entropy = async {
                match anti_entropy_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let item = match stash.take() {
                Some(item) => Some(item),
                None => tokio::select! {
                    _ = stop.cancelled() => return Ok(Next::Stop),
                    _ = anti_entropy => return Ok(Next::AntiEntropy),
                    _ = self.anti_entropy_now.notified() => return Ok(Next::AntiEntropy),
                    item = in_rx.recv() => item,
                },
            };
            let now = now_ms();
            match item {
                Some(Incoming::Entries(mut batches)) => {
                    // Messages already received go into the same store transaction.
                    let mut bars: usize = batches.iter().map(ChangeBatch::bar_count).sum();
                    while bars < GROUP_BARS {
                        match in_rx.try_recv() {
                            Ok(Incoming::Entries(more)) => {
                                bars += more.iter().map(ChangeBatch::bar_count).sum::<usize>();
                                batches.extend(more);
                            }
                            Ok(other) => {
                                stash = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let Some(last) = batches.last() else { continue };
                    let (last_seq, last_ms) = (last.seq, last.committed_at_ms);
                    if batches[0].seq != cursor.next() {
                        return Err(SyncError::Protocol(format!(
                            "expected entry {} next, got {}",
                            cursor.next(),
                            batches[0].seq
                        )));
                    }
                    if let Some(b) = batches.iter().find(|b| b.history_id.0 != history) {
                        return Err(SyncError::Protocol(format!(
                            "entry {} belongs to history {}, not {history}",
                            b.seq, b.history_id
                        )));
                    }
                    let guard = self.apply_lock.lock().await;
                    let (n, stats) = match apply(&self.store, batches).await {
                        Ok(applied) => applied,
                        Err(e) => {
                            if !e.is_transient() {
                                // Retrying the same entry cannot help: repair from digests.
                                pos.needs_repair = true;
                                pos.repair_reason =
                                    Some(format!("applying entries after {cursor} failed: {e}"));
                                self.state.set_position(&pos).await?;
                            }
                            return Err(e.into());
                        }
                    };
                    cursor = last_seq;
                    pos.cursor = cursor.0;
                    self.state.set_position(&pos).await?;
                    drop(guard);
                    // The link works: the next reconnect starts from the shortest delay.
                    *delay = self.config.master.reconnect_min_delay.0;
                    let _ = out_tx.send(pb::ReplicaMessage {
                        msg: Some(replica_message::Msg::Ack(pb::Ack {
                            seq: cursor.0,
                            bars: stats.total(),
                        })),
                    });
                    master_head = master_head.max(cursor.0);
                    self.status.update(|s| {
                        s.cursor = cursor.0;
                        s.batches_applied += n;
                        s.bars_applied += stats.total();
                        s.lag_seq = master_head.saturating_sub(cursor.0);
                        s.lag_seconds = if cursor.0 >= master_head {
                            0.0
                        } else {
                            (now - last_ms).max(0) as f64 / 1000.0
                        };
                        s.state = if cursor.0 >= master_head {
                            LinkState::InSync
                        } else {
                            LinkState::CatchingUp
                        };
                        s.last_contact_ms = Some(now);
                    });
                }
                Some(Incoming::Heartbeat(h)) => {
                    // Answering each heartbeat tells the master this replica is alive.
                    let _ = out_tx.send(pb::ReplicaMessage {
                        msg: Some(replica_message::Msg::Ack(pb::Ack {
                            seq: cursor.0,
                            bars: 0,
                        })),
                    });
                    master_head = h.head;
                    if cursor.0 >= master_head {
                        *delay = self.config.master.reconnect_min_delay.0;
                    }
                    self.status.update(|s| {
                        s.master_head = master_head;
                        s.lag_seq = master_head.saturating_sub(cursor.0);
                        if cursor.0 >= master_head {
                            s.lag_seconds = 0.0;
                            s.state = LinkState::InSync;
                        } else {
                            s.state = LinkState::CatchingUp;
                        }
                        s.last_contact_ms = Some(now);
                    });
                }
                Some(Incoming::Verify(req)) => {
                    let report = self.verify_report(req, cursor).await?;
                    let _ = out_tx.send(pb::ReplicaMessage {
                        msg: Some(replica_message::Msg::Verify(report)),
                    });
                }
                Some(Incoming::Repair(r)) => {
                    tracing::warn!(reason = %r.reason, "the master asks for a repair");
                    pos.needs_repair = true;
                    pos.repair_reason = Some(r.reason.clone());
                    self.state.set_position(&pos).await?;
                    return Ok(Next::Reconnect);
                }
                Some(Incoming::Welcome(_)) => {
                    return Err(SyncError::Protocol("a second Welcome".into()));
                }
                Some(Incoming::Failed(e)) => return Err(SyncError::Stream(e)),
                None => return Err(SyncError::Stream("the master closed the stream".into())),
            }
        }
    }

    /// Runs a repair the master asked for, then stores the position it names.
    async fn repair_now(
        &self,
        client: &mut MasterClient,
        pos: &mut Position,
        r: pb::RepairRequired,
        stop: &CancellationToken,
    ) -> Result<(), SyncError> {
        tracing::warn!(reason = %r.reason, resume_after = r.resume_after, "repairing");
        pos.needs_repair = true;
        pos.repair_reason = Some(r.reason.clone());
        self.state.set_position(pos).await?;
        self.status.update(|s| {
            s.state = LinkState::Repairing;
            s.needs_repair = true;
            s.repair_reason = Some(r.reason.clone());
        });
        let outcome = repair::repair(client, &self.store, &r.reason, stop).await?;
        if outcome.master_history != r.history_id {
            return Err(SyncError::Protocol(format!(
                "the master's history changed during the repair ({} -> {})",
                r.history_id, outcome.master_history
            )));
        }
        self.state.record_repair(&outcome.record).await?;
        *pos = Position {
            history_id: r.history_id,
            cursor: r.resume_after,
            needs_repair: false,
            repair_reason: None,
        };
        self.state.set_position(pos).await?;
        let (cursor, history) = (pos.cursor, pos.history_id.clone());
        self.status.update(|s| {
            s.needs_repair = false;
            s.repair_reason = None;
            s.cursor = cursor;
            s.history_id = history;
            s.last_repair = Some(outcome.record.clone());
        });
        crate::repair::counted("required", &outcome.record);
        Ok(())
    }

    /// Compares digests with the master and pulls what differs, keeping the cursor.
    async fn anti_entropy(&self, stop: &CancellationToken) -> Result<(), SyncError> {
        let pos = self.state.position().await?;
        if pos.needs_repair || pos.history_id.is_empty() {
            return Ok(());
        }
        let mut client = self.connect().await?;
        let list = client
            .list_series(pb::ListSeriesRequest {})
            .await
            .map_err(SyncError::Refused)?
            .into_inner();
        if list.history_id != pos.history_id {
            let mut pos = pos;
            pos.needs_repair = true;
            pos.repair_reason = Some(format!(
                "the master's history is now {}, the replica followed {}",
                list.history_id, pos.history_id
            ));
            self.state.set_position(&pos).await?;
            return Ok(());
        }
        if list.store_applied < pos.cursor {
            tracing::info!(
                master_store_applied = list.store_applied,
                cursor = pos.cursor,
                "anti-entropy deferred: the master's store is behind this replica"
            );
            return Ok(());
        }
        self.status.update(|s| s.state = LinkState::Repairing);
        // The store's digests must describe its bars before they are compared: re-read them.
        let scrubbed = self.store.scrub().await?;
        if !scrubbed.is_empty() {
            tracing::warn!(
                buckets = scrubbed.len(),
                "the store's bars had changed behind its back; their digests were corrected"
            );
        }
        let outcome = repair::repair(&mut client, &self.store, "anti-entropy", stop).await?;
        if outcome.record.buckets_pulled > 0 || outcome.record.series_removed > 0 {
            tracing::warn!(
                buckets = outcome.record.buckets_pulled,
                bars = outcome.record.bars_pulled,
                "anti-entropy repaired buckets that differed from the master"
            );
        }
        self.state.record_repair(&outcome.record).await?;
        self.status
            .update(|s| s.last_repair = Some(outcome.record.clone()));
        crate::repair::counted("anti_entropy", &outcome.record);
        Ok(())
    }

    async fn verify_report(
        &self,
        req: pb::VerifyRequest,
        cursor: Seq,
    ) -> Result<pb::VerifyReport, SyncError> {
        let overview = self.store.overview().await?;
        let mut buckets = Vec::new();
        for k in &req.bucket_series {
            let key = SeriesKey::try_from(k).map_err(|e| SyncError::Protocol(e.to_string()))?;
            let b = self.store.bucket_digests(&key, TimeRange::all()).await?;
            buckets.push(pb::SeriesDigests {
                series: Some((&key).into()),
                bucket_secs: dms_common::store::DigestBucketing::for_interval(key.interval)
                    .width_secs,
                buckets: b.iter().map(pb::BucketDigest::from).collect(),
            });
        }
        Ok(pb::VerifyReport {
            request_id: req.request_id,
            cursor: cursor.0,
            series: overview.iter().map(pb::SeriesSummary::from).collect(),
            buckets,
        })
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Applies journal entries in order: consecutive upserts go to the store as one batch.
async fn apply(
    store: &SharedStore,
    batches: Vec<ChangeBatch>,
) -> Result<(u64, UpsertStats), dms_common::store::StoreError> {
    let n = batches.len() as u64;
    let mut stats = UpsertStats::default();
    let mut pending: Vec<SeriesBars> = Vec::new();
    for b in batches {
        match b.change {
            Change::Upsert(bars) => pending.push(SeriesBars::new(b.series, bars)),
            Change::Delete(range) => {
                if !pending.is_empty() {
                    stats.add(store.upsert(&std::mem::take(&mut pending)).await?);
                }
                store.delete(&b.series, range).await?;
            }
        }
    }
    if !pending.is_empty() {
        stats.add(store.upsert(&pending).await?);
    }
    Ok((n, stats))
}

/// Reads the master's stream, decodes entries off the apply path, and reports a silent or
/// broken link.
async fn read_stream(
    mut inbound: tonic::Streaming<pb::MasterMessage>,
    tx: mpsc::Sender<Incoming>,
    idle: Duration,
) {
    loop {
        let item = match tokio::time::timeout(idle, inbound.message()).await {
            Err(_) => Incoming::Failed(format!("no message from the master for {idle:?}")),
            Ok(Err(status)) => Incoming::Failed(status.message().to_owned()),
            Ok(Ok(None)) => Incoming::Failed("the master closed the stream".into()),
            Ok(Ok(Some(pb::MasterMessage { msg: Some(m) }))) => match m {
                master_message::Msg::Entries(e) => {
                    let decoded = tokio::task::spawn_blocking(move || decode_all(&e.entries)).await;
                    match decoded {
                        Ok(Ok(batches)) => Incoming::Entries(batches),
                        Ok(Err(e)) => Incoming::Failed(e),
                        Err(e) => Incoming::Failed(e.to_string()),
                    }
                }
                master_message::Msg::Heartbeat(h) => Incoming::Heartbeat(h),
                master_message::Msg::Welcome(w) => Incoming::Welcome(w),
                master_message::Msg::Repair(r) => Incoming::Repair(r),
                master_message::Msg::Verify(v) => Incoming::Verify(v),
            },
            Ok(Ok(Some(pb::MasterMessage { msg: None }))) => {
                Incoming::Failed("the master sent an empty message".into())
            }
        };
        let last = matches!(item, Incoming::Failed(_));
        if tx.send(item).await.is_err() || last {
            return;
        }
    }
}

fn decode_all(entries: &[Vec<u8>]) -> Result<Vec<ChangeBatch>, String> {
    entries
        .iter()
        .map(|bytes| decode_streamed(bytes).map_err(|e| e.to_string()))
        .collect()
}
