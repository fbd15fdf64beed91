//! The journal entry format: each entry is the protobuf `dms.v1.ChangeBatch`, the same bytes
//! that are streamed to replicas, stored with a CRC-32 of those bytes.

use prost::Message;

use super::{Change, ChangeBatch, HistoryId, JournalError, NewChange, Origin, Result, Seq};
use crate::bar::{Bar, SeriesKey};
use crate::pb;
use crate::time::TimeRange;

/// Encodes an entry read back (e.g. to keep it outside the journal) as the same protobuf.
pub fn encode_batch(b: &ChangeBatch) -> Vec<u8> {
    let change = NewChange {
        series: b.series.clone(),
        change: b.change.clone(),
        origin: b.origin.clone(),
    };
    encode_entry(b.seq, &b.history_id, &change, b.committed_at_ms)
}

/// Encodes a change as the protobuf the journal stores.
pub(super) fn encode_entry(seq: Seq, history: &HistoryId, c: &NewChange, at_ms: i64) -> Vec<u8> {
    let change = match &c.change {
        Change::Upsert(bars) => pb::change_batch::Change::Upsert(pb::UpsertBars {
            bars: bars.iter().map(pb::Bar::from).collect(),
        }),
        Change::Delete(range) => pb::change_batch::Change::Delete(pb::DeleteRange {
            range: Some((*range).into()),
        }),
    };
    pb::ChangeBatch {
        seq: seq.0,
        history_id: history.0.clone(),
        series: Some((&c.series).into()),
        change: Some(change),
        origin: Some(pb::Origin {
            task_id: c.origin.task_id.clone(),
            source: c.origin.source.clone(),
        }),
        committed_at_ms: at_ms,
    }
    .encode_to_vec()
}

/// Decodes a stored or streamed `dms.v1.ChangeBatch` that must carry `seq`.
pub fn decode_entry(seq: Seq, bytes: &[u8]) -> Result<ChangeBatch> {
    let corrupt = |reason: String| JournalError::Corrupt { seq: seq.0, reason };
    let msg = pb::ChangeBatch::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    if msg.seq != seq.0 {
        return Err(corrupt(format!("payload carries seq {}", msg.seq)));
    }
    from_message(msg)
}

/// Decodes a streamed `dms.v1.ChangeBatch`, taking its seq from the payload (the receiver
/// checks that seqs follow each other).
pub fn decode_streamed(bytes: &[u8]) -> Result<ChangeBatch> {
    let msg = pb::ChangeBatch::decode(bytes).map_err(|e| JournalError::Corrupt {
        seq: 0,
        reason: format!("undecodable streamed entry: {e}"),
    })?;
    from_message(msg)
}

fn from_message(msg: pb::ChangeBatch) -> Result<ChangeBatch> {
    let seq = Seq(msg.seq);
    let corrupt = |reason: String| JournalError::Corrupt { seq: seq.0, reason };
    let series = msg
        .series
        .as_ref()
        .ok_or_else(|| corrupt("no series".into()))?;
    let series = SeriesKey::try_from(series).map_err(|e| corrupt(e.to_string()))?;
    let change = match msg.change {
        Some(pb::change_batch::Change::Upsert(u)) => {
            Change::Upsert(u.bars.iter().map(Bar::from).collect())
        }
        Some(pb::change_batch::Change::Delete(d)) => Change::Delete(
            d.range
                .as_ref()
                .map(TimeRange::from)
                .ok_or_else(|| corrupt("delete without range".into()))?,
        ),
        None => return Err(corrupt("no change".into())),
    };
    let origin = msg.origin.unwrap_or_default();
    Ok(ChangeBatch {
        seq,
        history_id: HistoryId(msg.history_id),
        series,
        change,
        origin: Origin {
            task_id: origin.task_id,
            source: origin.source,
        },
        committed_at_ms: msg.committed_at_ms,
    })
}
