//! Deleting a series, or a range of it, through the journal: the store applies the deletion
//! like any other change, and replicas receive it and delete too. A dry run counts what would
//! go and changes nothing.
//!
//! Key types: [`DeleteRequest`] (what REST and admin gRPC take, checked once for both),
//! [`Deletion`] (what was, or would be, deleted) and [`DeleteError`].

use dms_common::journal::Origin;
use dms_common::read_api::SeriesQuery;
use dms_common::store::{SharedStore, StoreError};
use dms_common::{SeriesKey, TimeRange};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::pipeline::ingest::{IngestError, Ingestor};

/// What to delete: one series (`symbol` and `interval`, both required), all of it or the bars
/// in `[start, end)` (dates or RFC 3339 date-times).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub symbol: Option<String>,
    pub interval: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// Count what would go; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a delete did (or, with `dry_run`, would do).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deletion {
    /// The series (`symbol` and `interval` in JSON).
    #[serde(flatten)]
    pub series: SeriesKey,
    /// The range deleted, `[start, end)` in Unix seconds; `None` for an open end.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Bars the store held in the range when the request was made.
    pub bars: u64,
    pub dry_run: bool,
    /// The journal entry that carries the deletion (none for a dry run or when nothing was
    /// there): the store and the replicas have applied it once they pass this seq.
    pub journal_seq: Option<u64>,
}

/// Why a delete was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// The request names no series or a bad one; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("the store cannot be read: {0}")]
    Store(#[from] StoreError),
    #[error("the deletion could not be journaled: {0}")]
    Journal(#[from] IngestError),
}

impl DeleteRequest {
    /// The series and the range it names.
    pub fn check(&self) -> Result<(SeriesKey, TimeRange), DeleteError> {
        if self.interval.is_none() {
            // Deleting is not undone: the interval is never assumed.
            return Err(DeleteError::Invalid(
                "field `interval` is required (1m 5m 15m 30m 1h 1d 1wk 1mo)".into(),
            ));
        }
        let query = SeriesQuery {
            symbol: self.symbol.clone(),
            interval: self.interval.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            ..SeriesQuery::default()
        };
        let request = query
            .bars_request()
            .map_err(|e| DeleteError::Invalid(e.replace("parameter `", "field `")))?;
        Ok((request.key, request.range))
    }
}

/// Counts the bars `request` names and, unless it is a dry run, journals their deletion.
pub async fn delete(
    store: &SharedStore,
    ingestor: &Ingestor,
    request: &DeleteRequest,
) -> Result<Deletion, DeleteError> {
    let (key, range) = request.check()?;
    // Counted page by page: a series of millions of bars is never held in memory.
    let bars = store
        .read(&key, range)
        .try_fold(0u64, |n, page| async move { Ok(n + page.len() as u64) })
        .await?;
    let journal_seq = if request.dry_run || bars == 0 {
        None
    } else {
        let origin = Origin {
            task_id: String::new(),
            source: "delete".into(),
        };
        let seq = ingestor.delete(&key, range, &origin).await?;
        tracing::info!(series = %key, bars, journal_seq = seq.0, "deletion journaled");
        Some(seq.0)
    };
    let open = |t: i64| (t != i64::MIN && t != i64::MAX).then_some(t);
    Ok(Deletion {
        series: key,
        start: open(range.start.0),
        end: open(range.end.0),
        bars,
        dry_run: request.dry_run,
        journal_seq,
    })
}
