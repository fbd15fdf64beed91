//! The read side of a migration: a task reads the series to copy from the source store, page
//! by page, and hands them over in batches of several series ([`CopyBatch`], about
//! [`BATCH_BARS`] bars: one call of the target's upsert, one transaction where it has them)
//! through a bounded channel, so the source is read while the target writes the batch before.
//! Each batch names the series whose last page it holds, for the copier to checkpoint once
//! the target has written it.

use dms_common::store::SharedStore;
use dms_common::{SeriesBars, SeriesKey, TimeRange};
use futures::TryStreamExt;
use tokio::sync::mpsc;

/// Bars of one batch (the target writes them in one call).
pub const BATCH_BARS: usize = 50_000;

/// Bars read from the source at a time.
const PAGE_BARS: usize = 50_000;

/// Pages of several series, to be written in one call.
#[derive(Debug, Default)]
pub struct CopyBatch {
    pub series: Vec<SeriesBars>,
    /// The series whose last page is in this batch (done once it is written).
    pub finished: Vec<SeriesKey>,
    pub bars: u64,
}

/// Batches read ahead of the writes.
#[derive(Debug)]
pub struct CopyBatches {
    rx: mpsc::Receiver<Result<CopyBatch, String>>,
}

impl CopyBatches {
    /// The next batch; None once every series was read.
    pub async fn next(&mut self) -> Option<Result<CopyBatch, String>> {
        self.rx.recv().await
    }
}

/// Starts reading `series` from `source` (in order), two batches ahead at most.
pub fn read_ahead(source: SharedStore, series: Vec<SeriesKey>) -> CopyBatches {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut batch = CopyBatch::default();
        for key in series {
            let mut pages = source.read_paged(&key, TimeRange::all(), PAGE_BARS);
            loop {
                let page = match pages.try_next().await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx
                            .send(Err(format!("{key}: the store cannot be read: {e}")))
                            .await;
                        return;
                    }
                };
                batch.bars += page.len() as u64;
                batch.series.push(SeriesBars::new(key.clone(), page));
                if batch.bars as usize >= BATCH_BARS
                    && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
                {
                    return;
                }
            }
            batch.finished.push(key);
        }
        if !batch.series.is_empty() || !batch.finished.is_empty() {
            let _ = tx.send(Ok(batch)).await;
        }
    });
    CopyBatches { rx }
}
