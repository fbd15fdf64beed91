//! `Ingestor`: the front of the write path. Bars for a series are validated, the rejected ones
//! quarantined with their reason, and the valid rest appended to the journal, where the store
//! applier and the replicas pick them up. When `ingest` returns, the accepted bars are durable.

use dms_common::journal::{Change, Journal, JournalError, NewChange, Origin, Seq};
use dms_common::{SeriesBars, SeriesKey, Timestamp};

use crate::quarantine::{Quarantine, QuarantineError};
use crate::validate::{Rejection, Validator};

/// Most bars one journal entry carries; larger batches become several entries, so that an
/// entry stays well under gRPC's default 4 MiB message limit when it is streamed to replicas.
pub const MAX_BARS_PER_ENTRY: usize = 20_000;

/// What an ingest call did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    /// Bars that passed validation and are now in the journal.
    pub accepted: u64,
    /// Bars rejected by validation (and quarantined).
    pub rejected: u64,
    /// The journal entries written.
    pub seqs: Vec<Seq>,
    /// Per series: the first few rejections, for reports and logs.
    pub rejections: Vec<(SeriesKey, Vec<Rejection>)>,
}

/// Why an ingest failed. Nothing of a failed call is in the journal.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Quarantine(#[from] QuarantineError),
}

/// Validates and journals incoming bars.
#[derive(Debug, Clone)]
pub struct Ingestor {
    journal: Journal,
    quarantine: Quarantine,
    validator: Validator,
}

impl Ingestor {
    pub fn new(journal: Journal, quarantine: Quarantine) -> Self {
        Ingestor {
            journal,
            quarantine,
            validator: Validator,
        }
    }

    /// The journal this ingestor writes.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Validates every series of `batch` and appends the valid bars in one durable journal
    /// transaction; quarantines the rest.
    pub async fn ingest(
        &self,
        batch: Vec<SeriesBars>,
        origin: &Origin,
    ) -> Result<IngestReport, IngestError> {
        let now = Timestamp::now();
        let mut report = IngestReport::default();
        let mut changes = Vec::with_capacity(batch.len());
        for series in batch {
            let validated = self
                .validator
                .validate(series.key.interval, series.bars, now);
            if !validated.rejected.is_empty() {
                self.quarantine
                    .record(&series.key, &validated.rejected, origin)
                    .await?;
                report.rejected += validated.rejected.len() as u64;
                let mut shown = validated.rejected;
                shown.truncate(10);
                report.rejections.push((series.key.clone(), shown));
            }
            report.accepted += validated.valid.len() as u64;
            push_chunks(&mut changes, &series.key, validated.valid, origin);
        }
        report.seqs = self.journal.append_all(changes).await?;
        Ok(report)
    }
}

fn push_chunks(
    changes: &mut Vec<NewChange>,
    key: &SeriesKey,
    mut bars: Vec<dms_common::Bar>,
    origin: &Origin,
) {
    while !bars.is_empty() {
        let rest = if bars.len() > MAX_BARS_PER_ENTRY {
            bars.split_off(MAX_BARS_PER_ENTRY)
        } else {
            Vec::new()
        };
        changes.push(NewChange {
            series: key.clone(),
            change: Change::Upsert(bars),
            origin: origin.clone(),
        });
        bars = rest;
    }
}
