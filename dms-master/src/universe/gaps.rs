//! Gap detection: an expected bar (a session of the series' exchange calendar) with no bar
//! stored, between the series' first stored bar (or the oldest bar the provider still serves,
//! whichever is later) and the last finished bar. Holidays and weekends are not gaps, and
//! neither is history the provider cannot have. Sessions a backfill asked the provider for and
//! it answered with no bar (provider-missing, remembered in the catalog) are listed apart.

use dms_common::store::{BarStore, StoreError};
use dms_common::{Interval, SeriesKey, TimeRange, Timestamp};
use futures::TryStreamExt;
use serde::Serialize;

use crate::universe::calendar::Calendar;

/// A run of consecutive missing bars: `[start, end)` where `end` is the next expected bar
/// that is present (or the end of the checked range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub start: Timestamp,
    pub end: Timestamp,
    /// Expected bars missing in the run.
    pub missing: u64,
}

impl Gap {
    pub fn range(&self) -> TimeRange {
        TimeRange::new(self.start, self.end)
    }
}

/// The gaps of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapReport {
    pub series: SeriesKey,
    /// The range that was checked (empty when the series has no bars).
    pub checked: Option<(Timestamp, Timestamp)>,
    pub expected: u64,
    pub stored: u64,
    pub missing: u64,
    pub gaps: Vec<Gap>,
    /// Missing sessions the provider is known to have no bar for (not in `missing`/`gaps`).
    pub provider_missing: Vec<Timestamp>,
}

/// The start of the last bar that has finished by `now`.
fn finished_until(interval: Interval, now: Timestamp) -> Timestamp {
    // Bars that start at or after the current bar's start are not finished.
    if interval.is_daily_or_longer() {
        interval.align(Interval::D1.align(now))
    } else {
        interval.align(now)
    }
}

/// Finds the gaps of `series` as of `now`; missing sessions in `provider_missing` are listed
/// apart and do not count as gaps.
pub async fn find_gaps(
    store: &dyn BarStore,
    series: &SeriesKey,
    calendar: &Calendar,
    history_limit: Option<std::time::Duration>,
    now: Timestamp,
    provider_missing: &std::collections::BTreeSet<Timestamp>,
) -> Result<GapReport, StoreError> {
    let mut report = GapReport {
        series: series.clone(),
        checked: None,
        expected: 0,
        stored: 0,
        missing: 0,
        gaps: Vec::new(),
        provider_missing: Vec::new(),
    };
    let Some(first) = store
        .read_paged(series, TimeRange::all(), 1)
        .try_next()
        .await?
        .and_then(|p| p.first().map(|b| b.ts))
    else {
        return Ok(report);
    };
    let mut start = first;
    if let Some(limit) = history_limit {
        start = start.max(Timestamp(now.0 - limit.as_secs() as i64));
    }
    let end = finished_until(series.interval, now);
    if start >= end {
        return Ok(report);
    }
    report.checked = Some((start, end));
    let expected = calendar.expected_bars(series.interval, TimeRange::new(start, end));
    let mut stored = Vec::new();
    let mut pages = store.read(series, TimeRange::new(start, end));
    while let Some(page) = pages.try_next().await? {
        stored.extend(page.iter().map(|b| b.ts));
    }
    report.expected = expected.len() as u64;
    report.stored = stored.len() as u64;
    let mut s = stored.iter().peekable();
    let mut open: Option<(Timestamp, u64)> = None;
    for &t in &expected {
        while s.peek().is_some_and(|x| **x < t) {
            s.next();
        }
        let present = s.peek().is_some_and(|x| **x == t);
        if !present && provider_missing.contains(&t) {
            report.provider_missing.push(t);
            // The session is accounted for: it ends a run of real gaps.
            if let Some((g, n)) = open.take() {
                report.gaps.push(Gap {
                    start: g,
                    end: t,
                    missing: n,
                });
            }
            continue;
        }
        match (present, open) {
            (false, None) => open = Some((t, 1)),
            (false, Some((g, n))) => open = Some((g, n + 1)),
            (true, Some((g, n))) => {
                report.gaps.push(Gap {
                    start: g,
                    end: t,
                    missing: n,
                });
                open = None;
            }
            (true, None) => {}
        }
    }
    if let Some((g, n)) = open {
        report.gaps.push(Gap {
            start: g,
            end,
            missing: n,
        });
    }
    report.missing = report.gaps.iter().map(|g| g.missing).sum();
    Ok(report)
}
