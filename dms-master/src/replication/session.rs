//! `Session`: one replica's `Subscribe` stream.
//!
//! It first decides whether the replica's cursor can be served: a replica that never synced
//! (while the journal still holds everything), or one with this history and a cursor the
//! journal still holds, is streamed from its cursor; any other is told to repair
//! (`RepairRequired`, with the store's applied seq to resume from) and the session ends.
//!
//! While streaming, the session sends journal entries in messages of about
//! [`StreamOptions::message_bytes`](super::StreamOptions::message_bytes), never more than the unacknowledged window allows (a slow
//! replica holds the master to that window, not to an ever-growing buffer), heartbeats when
//! idle, and forwards verify requests. Acks move the replica's journal cursor.

use std::collections::{HashMap, VecDeque};

use dms_common::journal::{JournalError, Seq};
use dms_common::pb::{self, master_message, replica_message};
use dms_common::store::digest::DIGEST_VERSION;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::ReplicationContext;
use super::nodes::{NodeState, SessionStats, VerifyCall, cursor_name};

/// A replica sends at least an acknowledgement per heartbeat; after this long without any
/// message (or without taking a message from the master) it is taken as gone.
const REPLICA_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

type Outbound = mpsc::Sender<Result<pb::MasterMessage, Status>>;

/// One replica's stream.
#[derive(Debug)]
pub struct Session {
    ctx: ReplicationContext,
    hello: pb::Hello,
    inbound: Streaming<pb::ReplicaMessage>,
    tx: Outbound,
    /// This session's counters, published to the node registry.
    stats: SessionStats,
    /// Ends this session: master shutdown, a newer session of the node, or the node forgotten.
    cancel: CancellationToken,
}

/// Why a session ended, and the node's state after it.
struct End {
    reason: String,
    state: NodeState,
    repair_reason: Option<String>,
    error: Option<String>,
}

impl End {
    fn disconnected(reason: impl Into<String>) -> End {
        End {
            reason: reason.into(),
            state: NodeState::Disconnected,
            repair_reason: None,
            error: None,
        }
    }

    fn failed(reason: impl Into<String>) -> End {
        let reason = reason.into();
        End {
            error: Some(reason.clone()),
            ..End::disconnected(reason)
        }
    }

    fn repair(reason: String) -> End {
        End {
            reason: "repair required".into(),
            state: NodeState::Repairing,
            repair_reason: Some(reason),
            error: None,
        }
    }
}

fn msg(m: master_message::Msg) -> pb::MasterMessage {
    pb::MasterMessage { msg: Some(m) }
}

/// A replica's repair report as stored in its sync history.
fn repair_json(r: &pb::RepairSummary) -> serde_json::Value {
    serde_json::json!({
        "reason": r.reason,
        "started_ms": r.started_ms,
        "finished_ms": r.finished_ms,
        "series_compared": r.series_compared,
        "series_differing": r.series_differing,
        "buckets_compared": r.buckets_compared,
        "buckets_pulled": r.buckets_pulled,
        "bars_pulled": r.bars_pulled,
        "series_removed": r.series_removed,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Session {
    pub fn new(
        ctx: ReplicationContext,
        hello: pb::Hello,
        inbound: Streaming<pb::ReplicaMessage>,
        tx: Outbound,
    ) -> Session {
        let cancel = ctx.shutdown.child_token();
        Session {
            ctx,
            hello,
            inbound,
            tx,
            stats: SessionStats::default(),
            cancel,
        }
    }

    /// Why `cancel` fired.
    fn cancelled(&self) -> End {
        if self.ctx.shutdown.is_cancelled() {
            End::disconnected("the master is shutting down")
        } else {
            End::disconnected("ended by a newer session of this node, or the node was forgotten")
        }
    }

    /// Sends `m` unless the session is cancelled first or the replica does not take it within
    /// the idle timeout (a stalled replica); returns whether it was sent.
    async fn send(&self, m: pb::MasterMessage) -> bool {
        tokio::select! {
            sent = self.tx.send_timeout(Ok(m), REPLICA_IDLE) => sent.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Runs the session to its end and records it in the node's history.
    pub async fn run(mut self) {
        let node = self.hello.node_id.clone();
        let repair = self.hello.last_repair.as_ref().map(repair_json);
        let (verify_tx, verify_rx) = mpsc::channel(4);
        match self
            .ctx
            .nodes
            .session_started(
                &node,
                &self.hello.http_address,
                self.hello.cursor,
                repair,
                verify_tx,
                self.cancel.clone(),
            )
            .await
        {
            Ok(stats) => self.stats = stats,
            Err(e) => {
                tracing::error!(node = %node, error = %e, "cannot record a replica session");
                let _ = self.tx.try_send(Err(Status::unavailable(format!(
                    "the master cannot record the session: {e}"
                ))));
                return;
            }
        }
        let end = match self.admit().await {
            Ok(None) => self.stream(verify_rx).await,
            Ok(Some(reason)) => self.send_repair(reason).await,
            Err(e) => End::failed(format!("journal error: {e}")),
        };
        tracing::info!(node = %node, reason = %end.reason, "replica session ended");
        self.ctx
            .nodes
            .session_ended(
                &node,
                self.stats.clone(),
                &end.reason,
                end.state,
                end.repair_reason,
                end.error,
            )
            .await;
    }

    /// Whether the replica's cursor can be served: `None` if so, else why it must repair.
    async fn admit(&self) -> Result<Option<String>, JournalError> {
        let h = &self.hello;
        let journal = &self.ctx.journal;
        let stats = journal.stats().await?;
        let ours = &journal.history_id().0;
        let cursor = Seq(h.cursor);
        let reason = if h.needs_repair {
            Some("the replica reports that its store does not match its cursor".to_owned())
        } else if h.history_id.is_empty() {
            if !self.ctx.journal_covers_store {
                Some(
                    "new replica; the master's store holds bars from before its journal began"
                        .to_owned(),
                )
            } else {
                (stats.pruned_through.0 > 0 || h.cursor > 0).then(|| {
                    format!(
                        "new replica; the journal no longer holds entries 1..={}",
                        stats.pruned_through
                    )
                })
            }
        } else if &h.history_id != ours {
            Some(format!(
                "the replica follows history {}, the master's is {ours}",
                h.history_id
            ))
        } else if cursor > stats.head {
            Some(format!(
                "the replica's cursor {cursor} is ahead of the master's journal head {}",
                stats.head
            ))
        } else if cursor < stats.pruned_through {
            Some(format!(
                "journal entries after {cursor} up to {} were removed by retention",
                stats.pruned_through
            ))
        } else {
            None
        };
        let name = cursor_name(&h.node_id);
        if reason.is_none() {
            journal.ensure_cursor(&name, cursor).await?;
            journal.mark_repaired(&name, cursor).await?;
        }
        Ok(reason)
    }

    /// Tells the replica to repair. The replica's cursor is set to what the store has applied,
    /// so the journal keeps what the replica needs after its repair.
    async fn send_repair(&mut self, reason: String) -> End {
        let resume_after = *self.ctx.store_applied.borrow();
        let name = cursor_name(&self.hello.node_id);
        let registered = async {
            self.ctx.journal.ensure_cursor(&name, resume_after).await?;
            self.ctx.journal.mark_repaired(&name, resume_after).await
        };
        if let Err(e) = registered.await {
            return End::failed(format!("journal error: {e}"));
        }
        tracing::warn!(node = %self.hello.node_id, %reason, %resume_after, "replica must repair");
        let m = msg(master_message::Msg::Repair(pb::RepairRequired {
            reason: reason.clone(),
            history_id: self.ctx.journal.history_id().0.clone(),
            resume_after: resume_after.0,
        }));
        if !self.send(m).await {
            return if self.cancel.is_cancelled() {
                self.cancelled()
            } else {
                End::disconnected("the replica did not take the repair request")
            };
        }
        End::repair(reason)
    }

    async fn stream(&mut self, mut verify_rx: mpsc::Receiver<VerifyCall>) -> End {
        let node = self.hello.node_id.clone();
        let name = cursor_name(&node);
        let opts = self.ctx.options;
        let journal = self.ctx.journal.clone();
        let mut head_rx = journal.subscribe();
        let start = Seq(self.hello.cursor);
        tracing::info!(node = %node, cursor = %start, head = %journal.head(), "replica subscribed");
        let welcome = msg(master_message::Msg::Welcome(pb::Welcome {
            history_id: journal.history_id().0.clone(),
            head: journal.head().0,
            start_after: start.0,
            digest_version: DIGEST_VERSION.into(),
        }));
        let mut pending = Some(welcome);
        let (mut sent, mut acked) = (start, start);
        // Sent and unacknowledged: (seq, payload bytes).
        let mut inflight: VecDeque<(Seq, u64)> = VecDeque::new();
        let mut inflight_bytes = 0u64;
        // Since when the replica has been behind the head (for lag in seconds).
        let mut behind_since: Option<i64> = None;
        let mut verifies: HashMap<u64, oneshot::Sender<pb::VerifyReport>> = HashMap::new();
        let mut next_verify_id = 1u64;
        let mut verify_open = true;
        let mut last_send = Instant::now();
        let mut last_inbound = Instant::now();
        loop {
            let head = *head_rx.borrow_and_update();
            if acked >= head {
                behind_since = None;
            } else if behind_since.is_none() {
                behind_since = Some(now_ms());
            }
            let state = if acked >= head {
                NodeState::InSync
            } else {
                NodeState::CatchingUp
            };
            self.ctx
                .nodes
                .publish(&node, &self.stats, state, behind_since);
            let window_open = (sent.0 - acked.0) < opts.max_unacked_entries
                && inflight_bytes < opts.max_unacked_bytes;
            if pending.is_none() && window_open && head > sent {
                let entries = match journal
                    .read_raw_after(sent, 1_024, opts.message_bytes)
                    .await
                {
                    Ok(e) => e,
                    Err(JournalError::Truncated { .. }) => {
                        return self
                            .send_repair(format!(
                                "journal entries after {sent} were removed by retention while streaming"
                            ))
                            .await;
                    }
                    Err(e) => return End::failed(format!("journal read failed: {e}")),
                };
                let bytes: u64 = entries.iter().map(|(_, b)| b.len() as u64).sum();
                if let Some((last, _)) = entries.last() {
                    sent = *last;
                    inflight.push_back((*last, bytes));
                    inflight_bytes += bytes;
                }
                self.stats.last_sent_seq = sent.0;
                self.stats.batches += entries.len() as u64;
                self.stats.bytes += bytes;
                pending = Some(msg(master_message::Msg::Entries(pb::Entries {
                    entries: entries.into_iter().map(|(_, b)| b).collect(),
                })));
            }
            let heartbeat_at = last_send + opts.heartbeat;
            let idle_at = last_inbound + REPLICA_IDLE.max(opts.heartbeat * 5);
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return self.cancelled(),
                _ = tokio::time::sleep_until(idle_at) => {
                    return End::disconnected(format!(
                        "no message from the replica for {:?}",
                        REPLICA_IDLE.max(opts.heartbeat * 5)
                    ));
                }
                m = self.inbound.message() => match m {
                    Ok(Some(pb::ReplicaMessage { msg: Some(replica_message::Msg::Ack(a)) })) => {
                        let seq = Seq(a.seq);
                        if seq > sent {
                            return End::failed(format!("the replica acknowledged {seq}, beyond the {sent} sent"));
                        }
                        if seq > acked {
                            acked = seq;
                            while inflight.front().is_some_and(|(s, _)| *s <= acked) {
                                let (_, b) = inflight.pop_front().expect("front exists");
                                inflight_bytes -= b;
                            }
                            if let Err(e) = journal.ack_cursor(&name, acked) {
                                return End::failed(format!("cannot move the replica's cursor: {e}"));
                            }
                            self.stats.last_acked_seq = acked.0;
                        }
                        self.stats.bars += a.bars;
                        last_inbound = Instant::now();
                    }
                    Ok(Some(pb::ReplicaMessage { msg: Some(replica_message::Msg::Verify(r)) })) => {
                        last_inbound = Instant::now();
                        if let Some(reply) = verifies.remove(&r.request_id) {
                            let _ = reply.send(r);
                        }
                    }
                    Ok(Some(_)) => return End::failed("the replica sent an unexpected message"),
                    Ok(None) => return End::disconnected("the replica closed the stream"),
                    Err(status) => return End::disconnected(format!("the link broke: {}", status.message())),
                },
                permit = self.tx.reserve(), if pending.is_some() => match permit {
                    Ok(p) => {
                        p.send(Ok(pending.take().expect("pending is some")));
                        last_send = Instant::now();
                    }
                    Err(_) => return End::disconnected("the replica went away"),
                },
                changed = head_rx.changed(), if pending.is_none() && window_open && head <= sent => {
                    if changed.is_err() {
                        return End::disconnected("the journal closed");
                    }
                }
                _ = tokio::time::sleep_until(heartbeat_at), if pending.is_none() => {
                    pending = Some(msg(master_message::Msg::Heartbeat(pb::Heartbeat {
                        head: head.0,
                        at_ms: now_ms(),
                    })));
                }
                call = verify_rx.recv(), if pending.is_none() && verify_open => match call {
                    Some(mut call) => {
                        call.request.request_id = next_verify_id;
                        verifies.insert(next_verify_id, call.reply);
                        next_verify_id += 1;
                        pending = Some(msg(master_message::Msg::Verify(call.request)));
                    }
                    None => verify_open = false,
                },
            }
        }
    }
}
