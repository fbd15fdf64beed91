//! What the REST API and admin gRPC both show, gathered in one place so the two front ends
//! report the same figures; each renders them its own way (JSON, protobuf).
//!
//! - [`DataStatus`]: the figures of `GET /api/data/status` (store totals, journal, applier,
//!   quarantine, dead letters, backpressure, start-up imports, the bars cache, the providers'
//!   request rates).
//! - [`catalog_rows`]: every stored series with its catalog state (`/api/data/series`).
//! - [`series_gaps`]: a series' missing expected bars by its exchange calendar
//!   (`/api/data/gaps`).

use dms_common::journal::{Cursor, JournalStats, Seq};
use dms_common::read_api::StoreTotals;
use dms_common::store::{SeriesOverview, StoreError};
use dms_common::{SeriesKey, Timestamp};

use crate::api::state::ApiState;
use crate::data::import::source::ImportSummary;
use crate::pipeline::applier::ApplierStatus;
use crate::pipeline::catalog::CatalogEntry;
use crate::sources::limiter::RateStatus;
use crate::universe::gaps::GapReport;

/// The figures of `/api/data/status`.
#[derive(Debug, Clone)]
pub struct DataStatus {
    /// `None` when the store could not be read; `store_error` says why.
    pub totals: Option<StoreTotals>,
    /// The store backend (`sqlite`, `influxdb`, …).
    pub store: &'static str,
    pub store_error: Option<String>,
    pub journal_head: Seq,
    /// `None` when the journal's size could not be read.
    pub journal: Option<JournalStats>,
    /// Why journal appends fail, while they do.
    pub append_error: Option<String>,
    pub applier: ApplierStatus,
    pub cursors: Vec<Cursor>,
    pub quarantined_bars: u64,
    /// Dead-letter entries and the bars in them.
    pub dead_letter_entries: u64,
    pub dead_letter_bars: u64,
    pub backpressure: Option<String>,
    pub kept_series: usize,
    pub imports: Vec<ImportSummary>,
    pub bars_cache_hits: u64,
    pub bars_cache_misses: u64,
    /// The request rate of every rate-limited source, in name order.
    pub providers: Vec<ProviderRate>,
}

/// The request rate of one rate-limited source.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderRate {
    pub source: String,
    #[serde(flatten)]
    pub rate: RateStatus,
}

impl DataStatus {
    /// Reads every figure. Never fails: a part that cannot be read shows as unknown.
    pub async fn gather(s: &ApiState) -> DataStatus {
        // Read in the order the write path moves (imports journal, the store applies, the
        // counts follow), so the answer is never torn the other way: an import shown done is
        // within the head, and the counts include everything shown applied.
        let imports = s.imports.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let journal_head = s.journal.head();
        let applier = s.applier.get();
        // With the store unreachable, the counts are unknown but the rest, the journal waiting
        // for the store above all, is what an operator needs to see.
        let (totals, store_error) = match s.store.overview().await {
            Ok(o) => (Some(StoreTotals::of(&o)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let journal = s.journal.stats().await.ok();
        let (dead_letter_entries, dead_letter_bars) =
            s.dead_letters.count().await.unwrap_or((0, 0));
        let (bars_cache_hits, bars_cache_misses) = s.bars_cache.stats();
        DataStatus {
            totals,
            store: s.store.backend(),
            store_error,
            journal_head,
            journal,
            append_error: s
                .journal
                .append_error()
                .or_else(|| s.tasks.tasks().write_error()),
            applier,
            cursors: s.journal.cursors().await.unwrap_or_default(),
            quarantined_bars: s.quarantine.count().await.unwrap_or(0),
            dead_letter_entries,
            dead_letter_bars,
            backpressure: s.backpressure.waiting(),
            kept_series: s.tasks.universe().len(),
            imports,
            bars_cache_hits,
            bars_cache_misses,
            providers: s
                .tasks
                .universe()
                .request_rates()
                .into_iter()
                .map(|(source, rate)| ProviderRate { source, rate })
                .collect(),
        }
    }

    /// Journal entries the store has not applied yet.
    pub fn store_lag(&self) -> u64 {
        self.journal_head
            .0
            .saturating_sub(self.applier.applied_seq.0)
    }

    /// The `data` of `GET /api/data/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut data = dms_common::read_api::totals_json(self.totals.as_ref());
        let rest = serde_json::json!({
            "store": self.store,
            "store_error": self.store_error,
            "journal": {
                "head": self.journal_head,
                "entries": self.journal.map(|j| j.entries),
                "bytes": self.journal.map(|j| j.bytes),
                "append_error": self.append_error,
                "store_applied": self.applier.applied_seq,
                "store_lag": self.store_lag(),
                "store_retries": self.applier.retries,
                "store_last_error": self.applier.last_error,
                "cursors": self.cursors,
            },
            "quarantined_bars": self.quarantined_bars,
            "dead_letters": {"entries": self.dead_letter_entries, "bars": self.dead_letter_bars},
            "backpressure": self.backpressure,
            "kept_series": self.kept_series,
            "imports": self.imports,
            "bars_cache": {"hits": self.bars_cache_hits, "misses": self.bars_cache_misses},
            "providers": self.providers,
        });
        if let (Some(data), serde_json::Value::Object(rest)) = (data.as_object_mut(), rest) {
            data.extend(rest);
        }
        data
    }
}

/// A stored series with what the catalog knows of it.
#[derive(Debug, Clone)]
pub struct CatalogRow {
    pub overview: SeriesOverview,
    /// The source its bars come from (the catalog's record, else the configured one).
    pub source: Option<String>,
    pub catalog: Option<CatalogEntry>,
}

/// Every stored series with its catalog state, in the store's order.
pub async fn catalog_rows(s: &ApiState) -> Result<Vec<CatalogRow>, StoreError> {
    let overview = s.store.overview().await?;
    let mut catalog: std::collections::HashMap<(String, String), CatalogEntry> = s
        .catalog
        .entries()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| ((c.symbol.clone(), c.interval.clone()), c))
        .collect();
    Ok(overview
        .iter()
        .map(|o| {
            let c = catalog.remove(&(
                o.key.symbol.as_str().to_owned(),
                o.key.interval.as_str().to_owned(),
            ));
            let source = c.as_ref().map(|c| c.source.clone()).or_else(|| {
                s.tasks
                    .universe()
                    .get(&o.key)
                    .map(|e| e.source.name().to_owned())
            });
            CatalogRow {
                overview: o.clone(),
                source,
                catalog: c,
            }
        })
        .collect())
}

/// A series' gaps and the calendar they were found with.
#[derive(Debug, Clone)]
pub struct SeriesGaps {
    pub report: GapReport,
    /// The calendar's name (`Nyse`, `Weekdays`, …).
    pub calendar: String,
}

/// The missing expected bars of `key` by its exchange calendar (the configured one, else one
/// guessed from the symbol), up to now.
pub async fn series_gaps(s: &ApiState, key: &SeriesKey) -> Result<SeriesGaps, StoreError> {
    let (calendar, limit) = match s.tasks.universe().get(key) {
        Some(e) => (e.calendar.clone(), e.source.history_limit(key.interval)),
        None => (crate::universe::guess_calendar(&key.symbol), None),
    };
    // A catalog that cannot be read hides nothing: its sessions are then shown as gaps.
    let known: std::collections::BTreeSet<Timestamp> = match s.catalog.provider_missing(key).await {
        Ok(m) => m.into_keys().collect(),
        Err(e) => {
            tracing::warn!(series = %key, error = %e, "cannot read the provider-missing sessions");
            Default::default()
        }
    };
    let report = crate::universe::gaps::find_gaps(
        &*s.store,
        key,
        &calendar,
        limit,
        Timestamp::now(),
        &known,
    )
    .await?;
    let name = format!("{calendar:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or("")
        .to_owned();
    Ok(SeriesGaps {
        report,
        calendar: name,
    })
}

/// Most series whose gaps an overview counts unless asked to (each count reads the series).
pub const OVERVIEW_GAPS_LIMIT: usize = 500;

/// The overview's filter.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// Only symbols starting with this (case-sensitive, as stored).
    pub prefix: Option<String>,
    /// Only this interval.
    pub interval: Option<String>,
    /// Count each series' missing bars (default: when at most [`OVERVIEW_GAPS_LIMIT`] series
    /// are selected).
    pub gaps: Option<bool>,
}

/// One series in the overview.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OverviewRow {
    pub symbol: String,
    pub interval: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    /// Expected bars missing by the series' exchange calendar; `None` when not counted.
    pub missing: Option<u64>,
    pub source: Option<String>,
    /// The series' share of the store's size on disk (the store's bytes shared out by bar
    /// count: an estimate); None where the backend cannot tell.
    pub size_bytes: Option<u64>,
}

/// The overview and the store's size on disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Overview {
    pub rows: Vec<OverviewRow>,
    /// Bytes the store takes on disk, where the backend can tell.
    pub store_bytes: Option<u64>,
}

/// The bar overview (seed 003): count, first, last, missing bars and source of every stored
/// series the filter selects, in symbol and interval order.
pub async fn overview(s: &ApiState, q: &OverviewQuery) -> Result<Overview, String> {
    let interval = match q.interval.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<dms_common::Interval>().map_err(|_| {
            format!("field `interval`: {raw:?} is not one of 1m 5m 15m 30m 1h 1d 1wk 1mo")
        })?),
    };
    let all = catalog_rows(s)
        .await
        .map_err(|e| format!("the store cannot be read: {e}"))?;
    let store_bytes = match s.store.size_on_disk().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "the store's size on disk cannot be read");
            None
        }
    };
    let all_bars: u64 = all.iter().map(|r| r.overview.count).sum();
    let share = |count: u64| {
        store_bytes.map(|b| (b as u128 * count as u128 / u128::from(all_bars.max(1))) as u64)
    };
    let mut rows: Vec<CatalogRow> = all
        .into_iter()
        .filter(|r| {
            q.prefix
                .as_deref()
                .is_none_or(|p| r.overview.key.symbol.as_str().starts_with(p))
                && interval.is_none_or(|i| r.overview.key.interval == i)
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.overview.key.symbol.as_str(), a.overview.key.interval)
            .cmp(&(b.overview.key.symbol.as_str(), b.overview.key.interval))
    });
    let count_gaps = q.gaps.unwrap_or(rows.len() <= OVERVIEW_GAPS_LIMIT);
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let missing = if count_gaps {
            let g = series_gaps(s, &r.overview.key)
                .await
                .map_err(|e| format!("the store cannot be read: {e}"))?;
            Some(g.report.missing)
        } else {
            None
        };
        out.push(OverviewRow {
            symbol: r.overview.key.symbol.to_string(),
            interval: r.overview.key.interval.to_string(),
            count: r.overview.count,
            first: r.overview.first.to_rfc3339(),
            last: r.overview.last.to_rfc3339(),
            missing,
            source: r.source,
            size_bytes: share(r.overview.count),
        });
    }
    Ok(Overview {
        rows: out,
        store_bytes,
    })
}
