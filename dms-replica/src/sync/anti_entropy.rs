//! Repair and verification: the digest comparisons with the master.
//!
//! Anti-entropy runs between sessions: every `anti_entropy_interval` (or when asked over HTTP)
//! the stream is closed, the digests are compared with the master's and differing buckets
//! pulled; the cursor stays where it was, so the stream then re-applies whatever came after it.
//! It runs only while the master's store has applied at least the replica's cursor, so what it
//! pulls is never older than what the replica holds. It first re-reads the local bars
//! ([`BarStore::scrub`](dms_common::store::BarStore::scrub)) so that bars changed behind the
//! store's back (a damaged or edited file) show in the digests it compares.
//!
//! A repair the master asks for ([`pb::RepairRequired`]) runs the same digest repair, then
//! resumes from the seq the master names. A verify request ([`pb::VerifyRequest`]) is answered
//! with this replica's overview and the bucket digests asked for.

use dms_common::journal::Seq;
use dms_common::pb;
use dms_common::{SeriesKey, TimeRange};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LinkState, Replicator, SyncError};
use crate::client::MasterClient;
use crate::repair;
use crate::state::Position;

impl Replicator {
    /// When the next anti-entropy is due; `None` when `anti_entropy_interval` is zero.
    pub(super) fn anti_entropy_deadline(&self) -> Option<Instant> {
        let every = self.config.anti_entropy_interval.0;
        (!every.is_zero()).then(|| Instant::now() + every)
    }

    /// Runs a repair the master asked for, then stores the position it names.
    pub(super) async fn repair_now(
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
    pub(super) async fn anti_entropy(&self, stop: &CancellationToken) -> Result<(), SyncError> {
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

    pub(super) async fn verify_report(
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
