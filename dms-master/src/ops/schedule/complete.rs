//! Whether a series is complete for now: it holds the latest bar its exchange calendar says
//! has ended, and that bar was final when fetched. A scheduled update whose every series is
//! complete starts no task (several attempts a day: the later ones find the work done).
//!
//! A daily bar of trading date D has ended when D's session closes (NYSE 16:00 New York, FX
//! 17:00 New York, crypto and calendars without sessions at the end of the day); a weekly or
//! monthly bar is expected once a trading day of its period has closed (the provider serves
//! the running period's bar, marked provisional); an intraday bar once its interval has passed.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use dms_common::{Interval, TimeRange, Timestamp};

use crate::universe::calendar::Calendar;

const DAY: i64 = 86_400;
/// How far back the last closed session is looked for (longer than any exchange closure).
const DAILY_LOOKBACK_DAYS: i64 = 40;
/// How far back the last ended intraday bar is looked for (a long weekend and then some).
const INTRADAY_LOOKBACK_DAYS: i64 = 10;

/// The instant a wall-clock time in `tz` happens (the earlier one when it is ambiguous, the
/// time after the gap when it does not exist).
fn local_instant(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = date.and_time(time);
    match tz.from_local_datetime(&naive).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => tz
            .from_local_datetime(&(naive + chrono::Duration::hours(1)))
            .earliest()
            .map_or_else(|| naive.and_utc(), |t| t.with_timezone(&Utc)),
    }
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
}

/// When the session of trading date `date` closes.
fn session_close(calendar: &Calendar, date: NaiveDate) -> DateTime<Utc> {
    let next_midnight = |tz: Tz| {
        let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
        local_instant(tz, next, NaiveTime::MIN)
    };
    match calendar {
        Calendar::Nyse => local_instant(Tz::America__New_York, date, hm(16, 0)),
        Calendar::Fx => local_instant(Tz::America__New_York, date, hm(17, 0)),
        Calendar::Always => next_midnight(Tz::UTC),
        Calendar::Weekdays {
            timezone,
            open,
            close,
            ..
        } => {
            if close > open {
                local_instant(*timezone, date, *close)
            } else {
                next_midnight(*timezone)
            }
        }
    }
}

/// The start of the latest bar of `interval` a complete series on `calendar` holds at `now`;
/// None when the calendar has no such bar in the recent past.
pub fn latest_expected_bar(
    calendar: &Calendar,
    interval: Interval,
    now: DateTime<Utc>,
) -> Option<Timestamp> {
    let now_ts = Timestamp(now.timestamp());
    if interval.is_daily_or_longer() {
        let days = calendar.expected_bars(
            Interval::D1,
            TimeRange::new(
                Timestamp(now_ts.0 - DAILY_LOOKBACK_DAYS * DAY),
                Timestamp(now_ts.0 + DAY),
            ),
        );
        let last_closed = days.into_iter().rev().find(|ts| {
            let date = ts.to_datetime().date_naive();
            session_close(calendar, date) <= now
        })?;
        Some(interval.align(last_closed))
    } else {
        let step = interval.nominal_secs();
        calendar
            .expected_bars(
                interval,
                TimeRange::new(Timestamp(now_ts.0 - INTRADAY_LOOKBACK_DAYS * DAY), now_ts),
            )
            .into_iter()
            .rev()
            .find(|ts| ts.0 + step <= now_ts.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn day(s: &str) -> Option<Timestamp> {
        Some(Timestamp::from_date(s.parse().unwrap()))
    }

    #[test]
    fn a_nyse_daily_bar_is_due_once_the_session_closed() {
        let nyse = Calendar::Nyse;
        // Tuesday 2026-03-10, 15:59 New York (EDT): Monday's bar is the latest ended one.
        assert_eq!(
            latest_expected_bar(&nyse, Interval::D1, at("2026-03-10T19:59:00Z")),
            day("2026-03-09")
        );
        assert_eq!(
            latest_expected_bar(&nyse, Interval::D1, at("2026-03-10T20:00:00Z")),
            day("2026-03-10")
        );
        // Saturday 2026-07-04 after Independence Day observed on Friday the 3rd: Thursday's.
        assert_eq!(
            latest_expected_bar(&nyse, Interval::D1, at("2026-07-04T12:00:00Z")),
            day("2026-07-02")
        );
        // The week of Monday 2026-03-09 is expected once its first session closed.
        assert_eq!(
            latest_expected_bar(&nyse, Interval::W1, at("2026-03-10T12:00:00Z")),
            day("2026-03-09")
        );
    }

    #[test]
    fn crypto_days_end_at_midnight_utc_and_intraday_bars_when_their_interval_passed() {
        assert_eq!(
            latest_expected_bar(&Calendar::Always, Interval::D1, at("2026-03-10T23:59:00Z")),
            day("2026-03-09")
        );
        assert_eq!(
            latest_expected_bar(&Calendar::Always, Interval::H1, at("2026-03-10T10:59:00Z")),
            Some(Timestamp(at("2026-03-10T09:00:00Z").timestamp()))
        );
    }
}
