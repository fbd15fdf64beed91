//! `Ingestor`: the front of the write path. Bars for a series are validated, the rejected ones
//! quarantined with their reason, and the valid rest appended to the journal, where the store
//! applier and the replicas pick them up. When `ingest` returns, the accepted bars are durable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dms_common::journal::{Change, Journal, JournalError, NewChange, Origin, Seq};
use dms_common::{SeriesBars, SeriesKey, Timestamp};
use tokio::sync::watch;

use crate::pipeline::quarantine::{Quarantine, QuarantineError};
use crate::pipeline::validate::{Rejection, Validator};

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
    backpressure: Option<Backpressure>,
    /// The last entry journaled for each series (by this ingestor), so that a comparison with
    /// the store waits for exactly the entries of its series.
    journaled: Arc<Mutex<HashMap<SeriesKey, Seq>>>,
}

/// Holds writers back while the primary store is far behind the journal, so that a slow or
/// stopped store makes tasks wait instead of filling the disk with journal entries.
#[derive(Debug, Clone)]
pub struct Backpressure {
    /// The last journal seq the store applied.
    applied: watch::Receiver<Seq>,
    /// Most payload bytes the journal may hold beyond what the store applied.
    max_unapplied_bytes: u64,
    /// Why writers wait now, if they do (for status pages).
    waiting: Arc<Mutex<Option<String>>>,
}

impl Backpressure {
    pub fn new(applied: watch::Receiver<Seq>, max_unapplied_bytes: u64) -> Self {
        Backpressure {
            applied,
            max_unapplied_bytes,
            waiting: Arc::default(),
        }
    }

    /// Why writers are held back now, if they are.
    pub fn waiting(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `Some(reason)` while the store is more than the limit behind the journal.
    pub async fn over_limit(&self, journal: &Journal) -> Result<Option<String>, JournalError> {
        let applied = *self.applied.borrow();
        let behind = journal.bytes_after(applied).await?;
        Ok((behind > self.max_unapplied_bytes).then(|| {
            format!(
                "waiting for the store: it is {} MiB behind the journal (journal.max_unapplied is {} MiB)",
                behind >> 20,
                self.max_unapplied_bytes >> 20
            )
        }))
    }

    /// Returns once the store is within the limit, waiting as long as it takes.
    async fn wait_for_room(&self, journal: &Journal) -> Result<(), JournalError> {
        let mut applied = self.applied.clone();
        let mut logged = false;
        loop {
            let reason = self.over_limit(journal).await?;
            *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = reason.clone();
            let Some(reason) = reason else {
                if logged {
                    tracing::info!("the store caught up; writes go on");
                }
                return Ok(());
            };
            if !logged {
                tracing::warn!("{reason}");
                logged = true;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), applied.changed()).await;
        }
    }
}

impl Ingestor {
    pub fn new(journal: Journal, quarantine: Quarantine) -> Self {
        Ingestor {
            journal,
            quarantine,
            validator: Validator,
            backpressure: None,
            journaled: Arc::default(),
        }
    }

    /// The last journal entry this ingestor wrote for `key`, if any.
    pub fn last_journaled(&self, key: &SeriesKey) -> Option<Seq> {
        self.journaled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    /// Makes every ingest wait while the store is too far behind (see [`Backpressure`]).
    pub fn with_backpressure(mut self, backpressure: Backpressure) -> Self {
        self.backpressure = Some(backpressure);
        self
    }

    /// The backpressure in force, if any.
    pub fn backpressure(&self) -> Option<&Backpressure> {
        self.backpressure.as_ref()
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
        if let Some(bp) = &self.backpressure
            && !changes.is_empty()
        {
            bp.wait_for_room(&self.journal).await?;
        }
        let keys: Vec<SeriesKey> = changes.iter().map(|c| c.series.clone()).collect();
        report.seqs = self.journal.append_all(changes).await?;
        crate::metrics::bars_ingested(&origin.source, report.accepted, report.rejected);
        let mut journaled = self.journaled.lock().unwrap_or_else(|p| p.into_inner());
        for (key, seq) in keys.into_iter().zip(&report.seqs) {
            journaled.insert(key, *seq);
        }
        Ok(report)
    }
}

impl Ingestor {
    /// Journals the removal of the bars of `key` in `range`; returns its journal entry.
    pub async fn delete(
        &self,
        key: &SeriesKey,
        range: dms_common::TimeRange,
        origin: &Origin,
    ) -> Result<Seq, IngestError> {
        let seq = self
            .journal
            .append(NewChange {
                series: key.clone(),
                change: Change::Delete(range),
                origin: origin.clone(),
            })
            .await?;
        self.journaled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), seq);
        Ok(seq)
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
