//! One series brought up to date from its source: a chain of stages, each handing the series'
//! state (`Pass`) to the next, each reading the store at most once.
//!
//! 1. `Updater::fetch`: the range from the source; a failed fetch is recorded in the catalog.
//! 2. `Updater::actions`: the corporate actions over the whole stored history when that
//!    check is due (incremental updates; one cheap request), and which actions are new.
//! 3. `Updater::reconcile`: the stored bars over the fetched span, read once; a new action,
//!    or every bar off by one common ratio (an unreported split), fetches the whole history
//!    again; only new or changed bars go on.
//! 4. `Updater::journal`: the changed bars validated and journaled by the [`Ingestor`].
//! 5. `Updater::record`: the catalog, written once: the actions seen, whether the whole
//!    history was checked, and the fetch's outcome.
//!
//! Key types: [`Updater`], [`UpdateRequest`], [`SeriesOutcome`] with [`SeriesCounts`] or a
//! [`SeriesError`] that says whether the source, the store or the catalog failed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dms_common::journal::Origin;
use dms_common::store::{SharedStore, StoreError};
use dms_common::{Bar, SeriesBars, SeriesKey, TimeRange, Timestamp};
use futures::TryStreamExt;

use crate::pipeline::catalog::{Catalog, CatalogError};
use crate::pipeline::durable::{WriteWatch, until_written};
use crate::pipeline::ingest::Ingestor;
use crate::pipeline::reconcile::Reconciler;
use crate::sources::{CorporateAction, FetchStats, Fetched, Source, SourceError};

/// What the stages read and write.
#[derive(Debug, Clone)]
pub struct Updater {
    pub store: SharedStore,
    pub catalog: Catalog,
    pub ingestor: Ingestor,
    pub reconciler: Reconciler,
    /// How far back a series without stored bars is fetched (`tasks.default_history`).
    pub default_history: Duration,
    /// How often the whole history's corporate actions are asked for again
    /// (`tasks.actions_check_interval`).
    pub actions_check_interval: Duration,
}

/// One series to bring up to date.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    pub key: &'a SeriesKey,
    pub source: &'a Arc<dyn Source>,
    pub range: TimeRange,
    /// Whether the store held bars of the series before this update.
    pub had_data: bool,
    /// Whether the corporate actions over the whole stored history are asked for when that
    /// check is due (incremental updates, which fetch only the recent bars).
    pub check_history_actions: bool,
    /// Who the journal entries name.
    pub origin: &'a Origin,
}

/// How one series ended.
#[derive(Debug)]
pub enum SeriesOutcome {
    Done(SeriesCounts),
    Skipped,
    Failed(SeriesError),
}

/// What one series' update counted.
#[derive(Debug, Default)]
pub struct SeriesCounts {
    pub written: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub requests: u64,
    pub retries: u64,
    pub provider_nulls: u64,
    pub provider_missing: u64,
    pub new_actions: u64,
    pub unreported_actions: u64,
    pub gaps: u64,
    pub invalid: u64,
}

impl SeriesCounts {
    pub fn add(&mut self, c: &SeriesCounts) {
        self.written += c.written;
        self.unchanged += c.unchanged;
        self.rejected += c.rejected;
        self.requests += c.requests;
        self.retries += c.retries;
        self.provider_nulls += c.provider_nulls;
        self.provider_missing += c.provider_missing;
        self.new_actions += c.new_actions;
        self.unreported_actions += c.unreported_actions;
        self.gaps += c.gaps;
        self.invalid += c.invalid;
    }

    fn add_requests(&mut self, stats: FetchStats) {
        self.requests += stats.requests;
        self.retries += stats.retries;
    }

    fn add_fetch(&mut self, stats: FetchStats) {
        self.add_requests(stats);
        self.provider_nulls += stats.provider_nulls;
    }
}

/// Why a series failed: its source, or the master's own part (the store, the catalog).
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{series}: store: {source}")]
    Store {
        series: String,
        #[source]
        source: StoreError,
    },
    #[error("{series}: catalog: {source}")]
    Catalog {
        series: String,
        #[source]
        source: CatalogError,
    },
}

impl SeriesError {
    /// A store failure of `key`.
    pub fn store(key: &SeriesKey, source: StoreError) -> SeriesError {
        SeriesError::Store {
            series: key.to_string(),
            source,
        }
    }

    /// A catalog failure of `key`.
    pub fn catalog(key: &SeriesKey, source: CatalogError) -> SeriesError {
        SeriesError::Catalog {
            series: key.to_string(),
            source,
        }
    }

    /// Whether a later attempt (a task's second pass) may succeed: the master's own failures
    /// always may.
    pub fn is_retryable(&self) -> bool {
        match self {
            SeriesError::Source(e) => e.is_retryable(),
            SeriesError::Store { .. } | SeriesError::Catalog { .. } => true,
        }
    }

    /// Counters of the requests made before the error.
    pub fn stats(&self) -> FetchStats {
        match self {
            SeriesError::Source(e) => e.stats(),
            SeriesError::Store { .. } | SeriesError::Catalog { .. } => FetchStats::default(),
        }
    }
}

/// A series' state, handed from stage to stage.
struct Pass {
    fetched: Fetched,
    /// The series' first stored bar (when it had bars).
    first_stored: Option<Timestamp>,
    /// Whether the corporate actions over the whole stored history are known after this pass.
    history_checked: bool,
    /// The actions seen; they count as seen only once the bars are journaled, so a failed
    /// re-fetch is tried again, and each interval of a symbol re-fetches on its own.
    seen_actions: Vec<CorporateAction>,
    /// A new action changed the adjusted history: fetch it whole again.
    refetch: bool,
    /// The changed bars, for the journal.
    changed: Vec<Bar>,
    counts: SeriesCounts,
}

impl Updater {
    /// Brings one series up to date; the times of the bars the provider answered with go to
    /// `answered` when given. Writes wait for the state file through `watch`.
    pub async fn update(
        &self,
        req: UpdateRequest<'_>,
        watch: &dyn WriteWatch,
        answered: Option<&mut Vec<Timestamp>>,
    ) -> SeriesOutcome {
        let result = async {
            let mut pass = self.fetch(&req).await?;
            self.actions(&req, &mut pass).await?;
            self.reconcile(&req, &mut pass).await?;
            if let Some(answered) = answered {
                answered.extend(pass.fetched.bars.iter().map(|b| b.ts));
            }
            self.journal(&req, &mut pass, watch).await;
            self.record(&req, &pass, watch).await;
            Ok(pass.counts)
        }
        .await;
        match result {
            Ok(counts) => SeriesOutcome::Done(counts),
            Err(e) => SeriesOutcome::Failed(e),
        }
    }

    /// Stage 1: the requested range from the source, and the series' first stored bar.
    async fn fetch(&self, req: &UpdateRequest<'_>) -> Result<Pass, SeriesError> {
        let fetched = match req.source.fetch(req.key, req.range).await {
            Ok(f) => f,
            Err(e) => {
                let _ = self
                    .catalog
                    .record_fetch(req.key, req.source.name(), Err(e.to_string()))
                    .await;
                return Err(e.into());
            }
        };
        let first_stored = match req.had_data {
            true => self
                .store
                .read_paged(req.key, TimeRange::all(), 1)
                .try_next()
                .await
                .ok()
                .flatten()
                .and_then(|p| p.first().map(|b| b.ts)),
            false => None,
        };
        Ok(Pass {
            // A fetch from the first stored bar on saw every action of the stored history.
            history_checked: first_stored.is_none_or(|first| req.range.start <= first),
            fetched,
            first_stored,
            seen_actions: Vec::new(),
            refetch: false,
            changed: Vec::new(),
            counts: SeriesCounts::default(),
        })
    }

    /// Stage 2: the whole history's actions when due, and which of the actions seen are new.
    async fn actions(&self, req: &UpdateRequest<'_>, pass: &mut Pass) -> Result<(), SeriesError> {
        if let Some(first) = pass.first_stored
            && req.check_history_actions
            && !pass.history_checked
            && self.actions_check_due(req.key).await
        {
            match req.source.actions(&req.key.symbol, first).await {
                Ok(Some((actions, stats))) => {
                    pass.counts.add_requests(stats);
                    for a in actions {
                        if !pass.fetched.actions.contains(&a) {
                            pass.fetched.actions.push(a);
                        }
                    }
                    pass.history_checked = true;
                }
                Ok(None) => {}
                Err(e) => {
                    pass.counts.add_requests(e.stats());
                    tracing::warn!(series = %req.key, error = %e, "cannot learn the corporate actions of the whole history; the next update tries again");
                }
            }
        }
        pass.seen_actions = pass.fetched.actions.clone();
        let new_actions = self
            .catalog
            .unseen_actions(req.key, &pass.fetched.actions)
            .await
            .map_err(|e| SeriesError::catalog(req.key, e))?;
        pass.counts.new_actions = new_actions.len() as u64;
        pass.refetch = !new_actions.is_empty() && req.had_data;
        if req.had_data {
            for a in &new_actions {
                tracing::info!(series = %req.key, action = %a, "new corporate action; fetching the whole history again");
            }
        }
        Ok(())
    }

    /// Whether the corporate actions over the series' whole history are to be asked for again
    /// (`tasks.actions_check_interval` has passed since that was last done).
    async fn actions_check_due(&self, key: &SeriesKey) -> bool {
        let every = self.actions_check_interval.as_millis() as i64;
        match self.catalog.actions_checked_at(key).await {
            Ok(Some(at)) => chrono::Utc::now().timestamp_millis() - at >= every,
            Ok(None) | Err(_) => true,
        }
    }

    /// Stage 3: the stored bars over the fetched span, read once (for the ratio check and the
    /// comparison); the whole history fetched again when the adjusted values changed; the
    /// bars that differ from the store.
    async fn reconcile(&self, req: &UpdateRequest<'_>, pass: &mut Pass) -> Result<(), SeriesError> {
        let mut stored = match req.had_data {
            true => self.reconciler.stored(req.key, &pass.fetched.bars).await,
            false => Some(HashMap::new()),
        };
        if req.had_data
            && !pass.refetch
            && let Some(ratio) = stored
                .as_ref()
                .and_then(|s| common_ratio(s, &pass.fetched.bars))
        {
            tracing::warn!(
                series = %req.key,
                ratio,
                "every re-fetched bar differs from the stored one by one common ratio, with no corporate action reported: treated as an unreported one; fetching the whole history again"
            );
            pass.counts.unreported_actions += 1;
            pass.refetch = true;
        }
        if pass.refetch {
            // Adjusted values before the action changed: fetch the whole history again.
            let default_start =
                Timestamp(Timestamp::now().0 - self.default_history.as_secs() as i64);
            let first = pass.first_stored.unwrap_or(default_start);
            let full = TimeRange::new(first.min(req.range.start), req.range.end);
            pass.history_checked = true;
            let again = req.source.fetch(req.key, full).await?;
            pass.counts.add_fetch(pass.fetched.stats);
            pass.fetched = again;
            stored = self.reconciler.stored(req.key, &pass.fetched.bars).await;
        }
        pass.counts.add_fetch(pass.fetched.stats);
        pass.changed = Reconciler::changed_from(stored.as_ref(), &pass.fetched.bars);
        pass.counts.unchanged = (pass.fetched.bars.len() - pass.changed.len()) as u64;
        Ok(())
    }

    /// Stage 4: the changed bars validated and journaled in one append.
    async fn journal(&self, req: &UpdateRequest<'_>, pass: &mut Pass, watch: &dyn WriteWatch) {
        if pass.changed.is_empty() {
            return;
        }
        let changed = std::mem::take(&mut pass.changed);
        let report = until_written(watch, "the series' bars to the journal", || {
            self.ingestor.ingest(
                vec![SeriesBars::new(req.key.clone(), changed.clone())],
                req.origin,
            )
        })
        .await;
        pass.counts.written = report.accepted;
        pass.counts.rejected = report.rejected;
    }

    /// Stage 5: the catalog, written once per series.
    async fn record(&self, req: &UpdateRequest<'_>, pass: &Pass, watch: &dyn WriteWatch) {
        let provisional = pass.fetched.provisional_from;
        until_written(watch, "the catalog", || {
            self.catalog.record_update(
                req.key,
                req.source.name(),
                &pass.seen_actions,
                pass.history_checked,
                provisional,
            )
        })
        .await;
    }
}

/// The ratio stored / fetched when every fetched bar that is also stored (at least two)
/// differs from it by one common ratio in open, high, low and close: the mark of a split or an
/// adjustment the provider applied without reporting it. `stored` is by time.
fn common_ratio(stored: &HashMap<i64, Bar>, fetched: &[Bar]) -> Option<f64> {
    let mut ratio: Option<f64> = None;
    let mut pairs = 0;
    for f in fetched {
        let Some(s) = stored.get(&f.ts.0) else {
            continue;
        };
        pairs += 1;
        for (a, b) in [
            (s.open, f.open),
            (s.high, f.high),
            (s.low, f.low),
            (s.close, f.close),
        ] {
            if !(a > 0.0 && b > 0.0) {
                return None;
            }
            let r = a / b;
            match ratio {
                None => ratio = Some(r),
                Some(q) if ((r - q) / q).abs() <= 1e-4 => {}
                Some(_) => return None,
            }
        }
    }
    let r = ratio?;
    (pairs >= 2 && (r - 1.0).abs() > 1e-3).then_some(r)
}
