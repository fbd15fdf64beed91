//! `Interval`: the bar sizes DMS keeps (`1m 5m 15m 30m 1h 1d 1wk 1mo`) and how a time is aligned
//! to the start of its bar.

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

use crate::time::Timestamp;

const DAY: i64 = 86_400;
/// 1970-01-01 was a Thursday; weeks start on Monday, 4 days later in the week's cycle.
const MONDAY_OFFSET: i64 = 4 * DAY;

/// A bar interval. Daily and longer bars start at 00:00 UTC of their trading date; weeks start
/// on Monday; months on the 1st.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    M1,
    M5,
    M15,
    M30,
    H1,
    D1,
    W1,
    Mo1,
}

/// Text that is not one of the known intervals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown interval {0:?}; expected one of 1m 5m 15m 30m 1h 1d 1wk 1mo")]
pub struct IntervalError(pub String);

impl Interval {
    /// All intervals, shortest first.
    pub const ALL: [Interval; 8] = [
        Interval::M1,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::D1,
        Interval::W1,
        Interval::Mo1,
    ];

    /// The provider-style name (`1m` … `1mo`).
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::D1 => "1d",
            Interval::W1 => "1wk",
            Interval::Mo1 => "1mo",
        }
    }

    /// Nominal length in seconds (31 days for a month: an upper bound, used for tolerances).
    pub fn nominal_secs(self) -> i64 {
        match self {
            Interval::M1 => 60,
            Interval::M5 => 300,
            Interval::M15 => 900,
            Interval::M30 => 1_800,
            Interval::H1 => 3_600,
            Interval::D1 => DAY,
            Interval::W1 => 7 * DAY,
            Interval::Mo1 => 31 * DAY,
        }
    }

    /// Whether bars of this interval are labelled by a trading date rather than a clock time.
    pub fn is_daily_or_longer(self) -> bool {
        matches!(self, Interval::D1 | Interval::W1 | Interval::Mo1)
    }

    /// The start of the bar that contains `ts`.
    pub fn align(self, ts: Timestamp) -> Timestamp {
        let t = ts.0;
        match self {
            Interval::W1 => {
                Timestamp((t - MONDAY_OFFSET).div_euclid(7 * DAY) * 7 * DAY + MONDAY_OFFSET)
            }
            Interval::Mo1 => {
                let d = ts.to_datetime().date_naive();
                Timestamp::from_date(
                    NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("first of month"),
                )
            }
            other => {
                let w = other.nominal_secs();
                Timestamp(t.div_euclid(w) * w)
            }
        }
    }

    /// Whether `ts` is the start of a bar.
    pub fn is_aligned(self, ts: Timestamp) -> bool {
        self.align(ts) == ts
    }

    /// Whether `ts` can start a bar of this interval. Daily and longer bars start exactly on
    /// their period ([`Interval::align`]). Intraday bars start at the session open and every
    /// interval after it, and exchanges open on the hour or at :15, :30 or :45 (New York 09:30,
    /// Mumbai 09:15), so an intraday start only has to be a multiple of the interval or of
    /// 15 minutes, whichever is smaller (a 1h bar may start at 14:30Z).
    pub fn is_bar_start(self, ts: Timestamp) -> bool {
        if self.is_daily_or_longer() {
            return self.is_aligned(ts);
        }
        let step = self.nominal_secs().min(900);
        ts.0.rem_euclid(step) == 0
    }

    /// The start of the bar after the one that starts at (or contains) `ts`.
    pub fn next(self, ts: Timestamp) -> Timestamp {
        let start = self.align(ts);
        match self {
            Interval::Mo1 => {
                let d = start.to_datetime().date_naive();
                let (y, m) = if d.month() == 12 {
                    (d.year() + 1, 1)
                } else {
                    (d.year(), d.month() + 1)
                };
                Timestamp::from_date(NaiveDate::from_ymd_opt(y, m, 1).expect("first of month"))
            }
            other => Timestamp(start.0 + other.nominal_secs()),
        }
    }

    /// The interval whose bars are spaced `secs` apart, for guessing the interval of a file.
    /// Weekend and holiday gaps are longer than a bar, so callers pass the most common spacing.
    pub fn from_spacing(secs: i64) -> Option<Interval> {
        match secs {
            s if s >= 27 * DAY => Some(Interval::Mo1),
            s if s >= 6 * DAY => Some(Interval::W1),
            s if s >= DAY => Some(Interval::D1),
            s => Interval::ALL
                .into_iter()
                .find(|i| !i.is_daily_or_longer() && i.nominal_secs() == s),
        }
    }
}

impl FromStr for Interval {
    type Err = IntervalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| IntervalError(s.to_owned()))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp(chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    }

    #[test]
    fn parses_and_displays_every_interval() {
        for i in Interval::ALL {
            assert_eq!(i.as_str().parse::<Interval>().unwrap(), i);
            assert_eq!(i.to_string(), i.as_str());
        }
        let err = "2h".parse::<Interval>().unwrap_err().to_string();
        assert!(err.contains("\"2h\"") && err.contains("1wk"), "{err}");
    }

    #[test]
    fn aligns_to_bar_starts() {
        let t = ts("2020-08-31T14:37:12Z");
        assert_eq!(Interval::M1.align(t), ts("2020-08-31T14:37:00Z"));
        assert_eq!(Interval::M5.align(t), ts("2020-08-31T14:35:00Z"));
        assert_eq!(Interval::M15.align(t), ts("2020-08-31T14:30:00Z"));
        assert_eq!(Interval::M30.align(t), ts("2020-08-31T14:30:00Z"));
        assert_eq!(Interval::H1.align(t), ts("2020-08-31T14:00:00Z"));
        assert_eq!(Interval::D1.align(t), ts("2020-08-31T00:00:00Z"));
        // 2020-08-31 is a Monday; 2020-09-06 the Sunday after.
        assert_eq!(Interval::W1.align(t), ts("2020-08-31T00:00:00Z"));
        assert_eq!(
            Interval::W1.align(ts("2020-09-06T23:59:59Z")),
            ts("2020-08-31T00:00:00Z")
        );
        assert_eq!(Interval::Mo1.align(t), ts("2020-08-01T00:00:00Z"));
        assert_eq!(
            Interval::D1.align(ts("1969-12-31T12:00:00Z")),
            ts("1969-12-31T00:00:00Z")
        );
    }

    #[test]
    fn next_steps_one_bar() {
        assert_eq!(
            Interval::Mo1.next(ts("2020-12-15T00:00:00Z")),
            ts("2021-01-01T00:00:00Z")
        );
        assert_eq!(
            Interval::Mo1.next(ts("2020-02-01T00:00:00Z")),
            ts("2020-03-01T00:00:00Z")
        );
        assert_eq!(
            Interval::H1.next(ts("2020-01-01T10:30:00Z")),
            ts("2020-01-01T11:00:00Z")
        );
        assert!(Interval::D1.is_aligned(ts("2020-01-01T00:00:00Z")));
        assert!(!Interval::D1.is_aligned(ts("2020-01-01T14:30:00Z")));
    }

    #[test]
    fn intraday_bars_may_start_at_the_session_open() {
        assert!(Interval::H1.is_bar_start(ts("2024-03-01T14:30:00Z")));
        assert!(Interval::M30.is_bar_start(ts("2024-03-01T03:45:00Z")));
        assert!(!Interval::H1.is_bar_start(ts("2024-03-01T14:37:00Z")));
        assert!(!Interval::M5.is_bar_start(ts("2024-03-01T14:31:00Z")));
        assert!(Interval::M1.is_bar_start(ts("2024-03-01T14:31:00Z")));
        assert!(!Interval::D1.is_bar_start(ts("2024-03-01T14:30:00Z")));
        assert!(Interval::D1.is_bar_start(ts("2024-03-01T00:00:00Z")));
    }

    #[test]
    fn guesses_interval_from_spacing() {
        assert_eq!(Interval::from_spacing(3_600), Some(Interval::H1));
        assert_eq!(Interval::from_spacing(86_400), Some(Interval::D1));
        assert_eq!(Interval::from_spacing(7 * 86_400), Some(Interval::W1));
        assert_eq!(Interval::from_spacing(29 * 86_400), Some(Interval::Mo1));
        assert_eq!(Interval::from_spacing(31 * 86_400), Some(Interval::Mo1));
        assert_eq!(Interval::from_spacing(120), None);
    }
}
