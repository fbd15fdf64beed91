//! `CronSchedule`: a cron expression read in an IANA time zone, and the fire times it gives.
//!
//! Fire times are computed by `croner` on wall-clock times of the job's zone (chrono-tz), so a
//! daily 18:00 job fires at 18:00 local time on both sides of a daylight saving change; the
//! instants are handed out in UTC. (Not tokio-cron-scheduler: its timezone jobs drift by an
//! hour after a DST change, its issue #107.)

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How many missed fires [`CronSchedule::due`] counts at most.
const MAX_COUNTED: u64 = 1_000;

/// Parses a cron expression of 5 fields, or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; use 5 (minute hour day-of-month month day-of-week) \
             or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// Parses an IANA time zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("{name:?} is not an IANA time zone (e.g. UTC, America/New_York, Asia/Shanghai)")
    })
}

/// The fires that fell due in a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The earliest of them.
    pub first: DateTime<Utc>,
    /// The latest of them.
    pub latest: DateTime<Utc>,
    /// How many (counted up to 1,000).
    pub count: u64,
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` read in time zone `timezone`.
    pub fn new(expr: &str, timezone: &str) -> Result<CronSchedule, String> {
        Ok(CronSchedule {
            cron: parse_cron(expr)?,
            tz: parse_timezone(timezone)?,
        })
    }

    /// The time zone.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|f| f.with_timezone(&Utc))
    }

    /// The next `n` fires strictly after `t`, in the job's time zone.
    pub fn next_fires(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Tz>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            out.push(next.with_timezone(&self.tz));
            at = next;
        }
        out
    }

    /// The fires in `(after, until]`, if any.
    pub fn due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<Due> {
        let latest = self
            .cron
            .find_previous_occurrence(&until.with_timezone(&self.tz), true)
            .ok()?
            .with_timezone(&Utc);
        if latest <= after {
            return None;
        }
        let mut count = 0;
        let mut at = after;
        let mut first = latest;
        while count < MAX_COUNTED {
            match self.next_after(at) {
                Some(next) if next <= latest => {
                    if count == 0 {
                        first = next;
                    }
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        Some(Due {
            first,
            latest,
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_new_york_evening_job_stays_at_18_local_across_both_dst_changes() {
        let s = CronSchedule::new("0 18 * * *", "America/New_York").unwrap();
        let fires: Vec<String> = s
            .next_fires(utc("2026-03-06T12:00:00Z"), 4)
            .into_iter()
            .map(|f| f.with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(
            fires,
            [
                "2026-03-06T23:00:00+00:00",
                "2026-03-07T23:00:00+00:00",
                "2026-03-08T22:00:00+00:00",
                "2026-03-09T22:00:00+00:00"
            ]
        );
        let fires: Vec<String> = s
            .next_fires(utc("2026-10-30T12:00:00Z"), 4)
            .into_iter()
            .map(|f| f.to_rfc3339())
            .collect();
        assert_eq!(
            fires,
            [
                "2026-10-30T18:00:00-04:00",
                "2026-10-31T18:00:00-04:00",
                "2026-11-01T18:00:00-05:00",
                "2026-11-02T18:00:00-05:00"
            ]
        );
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let s = CronSchedule::new("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:00:02Z"))
        );
        let s = CronSchedule::new("30 0 9 * * 1-5", "UTC").unwrap();
        // 2026-01-03 is a Saturday: the next fire is Monday 09:00:30.
        assert_eq!(
            s.next_after(utc("2026-01-02T10:00:00Z")),
            Some(utc("2026-01-05T09:00:30Z"))
        );
    }

    #[test]
    fn due_finds_the_latest_fire_and_counts_them() {
        let s = CronSchedule::new("0 20,22 * * *", "UTC").unwrap();
        assert_eq!(
            s.due(utc("2026-01-01T20:00:00Z"), utc("2026-01-01T21:59:59Z")),
            None
        );
        assert_eq!(
            s.due(utc("2026-01-01T20:00:00Z"), utc("2026-01-03T21:00:00Z")),
            Some(Due {
                first: utc("2026-01-01T22:00:00Z"),
                latest: utc("2026-01-03T20:00:00Z"),
                count: 4
            })
        );
        assert_eq!(
            s.due(utc("2026-01-01T20:00:00Z"), utc("2026-01-01T22:00:00Z")),
            Some(Due {
                first: utc("2026-01-01T22:00:00Z"),
                latest: utc("2026-01-01T22:00:00Z"),
                count: 1
            })
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        assert!(parse_cron("0 18 * *").unwrap_err().contains("4 fields"));
        assert!(
            parse_cron("0 0 18 * * * 2026")
                .unwrap_err()
                .contains("7 fields")
        );
        assert!(parse_cron("0 25 * * *").is_err());
        assert!(parse_timezone("Europe/Nowhere").is_err());
        assert!(parse_timezone("Europe/Berlin").is_ok());
    }
}
