//! One replication session with the master: subscribe with the stored position, read the
//! stream, apply entries to the store in groups, store the cursor and ack.
//!
//! [`Replicator::session`] runs it and says what comes next ([`Next`]); a reader task
//! ([`read_stream`]) decodes the master's messages off the apply path into [`Incoming`] items
//! and reports a silent or broken link.

use std::time::Duration;

use dms_common::SeriesBars;
use dms_common::journal::{Change, ChangeBatch, Seq, decode_streamed};
use dms_common::pb::{self, master_message, replica_message};
use dms_common::store::digest::DIGEST_VERSION;
use dms_common::store::{SharedStore, UpsertStats};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{LinkState, Replicator, SyncError};
use crate::state::RepairRecord;

/// About the most bars applied in one store transaction when several messages are waiting.
const GROUP_BARS: usize = 200_000;

/// What the main loop does after a session.
pub(super) enum Next {
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

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Replicator {
    pub(super) async fn session(
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
                    check_group(cursor, &history, &batches).map_err(SyncError::Protocol)?;
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

/// Checks that a group of entries (several stream messages merged) follows `cursor` without a
/// gap or a repeat, every entry of `history`: a group that does not is refused before any of
/// it is applied, and the session ends (the next one resumes from the cursor).
fn check_group(cursor: Seq, history: &str, batches: &[ChangeBatch]) -> Result<(), String> {
    let mut expected = cursor.next();
    for b in batches {
        if b.seq != expected {
            return Err(format!("expected entry {expected} next, got {}", b.seq));
        }
        if b.history_id.0 != history {
            return Err(format!(
                "entry {} belongs to history {}, not {history}",
                b.seq, b.history_id
            ));
        }
        expected = expected.next();
    }
    Ok(())
}

fn decode_all(entries: &[Vec<u8>]) -> Result<Vec<ChangeBatch>, String> {
    entries
        .iter()
        .map(|bytes| decode_streamed(bytes).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use dms_common::journal::{HistoryId, Origin};
    use dms_common::{Interval, SeriesKey, Symbol};

    use super::*;

    fn entry(seq: u64, history: &str) -> ChangeBatch {
        ChangeBatch {
            seq: Seq(seq),
            history_id: HistoryId(history.into()),
            series: SeriesKey::new(Symbol::new("IBM").unwrap(), Interval::D1),
            change: Change::Upsert(Vec::new()),
            origin: Origin {
                task_id: String::new(),
                source: "test".into(),
            },
            committed_at_ms: 0,
        }
    }

    #[test]
    fn a_group_must_follow_the_cursor_without_gaps_or_repeats() {
        let group = |seqs: &[u64]| seqs.iter().map(|&s| entry(s, "h")).collect::<Vec<_>>();
        assert!(check_group(Seq(4), "h", &group(&[5, 6, 7])).is_ok());
        let gap = check_group(Seq(4), "h", &group(&[5, 6, 8])).unwrap_err();
        assert!(gap.contains("expected entry 7 next, got 8"), "{gap}");
        let repeat = check_group(Seq(4), "h", &group(&[5, 5])).unwrap_err();
        assert!(repeat.contains("expected entry 6 next, got 5"), "{repeat}");
        let late = check_group(Seq(4), "h", &group(&[6])).unwrap_err();
        assert!(late.contains("expected entry 5 next, got 6"), "{late}");
    }

    #[test]
    fn a_group_from_another_history_is_refused() {
        let group = vec![entry(5, "h"), entry(6, "other")];
        let e = check_group(Seq(4), "h", &group).unwrap_err();
        assert!(e.contains("entry 6 belongs to history other, not h"), "{e}");
    }
}
