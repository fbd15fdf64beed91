//! Time as DMS stores it: `Timestamp` (Unix seconds, UTC) and the half-open `TimeRange`.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};

/// A point in time as Unix seconds in UTC. Bars are at least a minute long, so seconds are exact.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time, truncated to the second.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp())
    }

    /// Midnight UTC of a calendar date.
    pub fn from_date(date: NaiveDate) -> Self {
        Timestamp(
            date.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp(),
        )
    }

    /// Unix seconds.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// As a chrono UTC date-time (saturating at chrono's range).
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0, 0).unwrap_or(if self.0 < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
    }

    /// RFC 3339 text, e.g. `2020-08-31T00:00:00Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A half-open time range `[start, end)`. An empty range (`start >= end`) contains nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl TimeRange {
    /// `[start, end)`.
    pub fn new(start: Timestamp, end: Timestamp) -> Self {
        TimeRange { start, end }
    }

    /// Every representable time.
    pub fn all() -> Self {
        TimeRange {
            start: Timestamp(i64::MIN),
            end: Timestamp(i64::MAX),
        }
    }

    /// Whether `ts` lies inside the range.
    pub fn contains(&self, ts: Timestamp) -> bool {
        self.start <= ts && ts < self.end
    }

    /// Whether the range holds no instant.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
}

impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_is_half_open() {
        let r = TimeRange::new(Timestamp(10), Timestamp(20));
        assert!(r.contains(Timestamp(10)));
        assert!(r.contains(Timestamp(19)));
        assert!(!r.contains(Timestamp(20)));
        assert!(!r.contains(Timestamp(9)));
        assert!(TimeRange::new(Timestamp(5), Timestamp(5)).is_empty());
    }

    #[test]
    fn formats_as_rfc3339() {
        assert_eq!(Timestamp(1_598_832_000).to_string(), "2020-08-31T00:00:00Z");
    }
}
