//! `Calendar`: which bars a complete series of an exchange has, for gap detection.
//!
//! A gap is an expected bar with no bar stored. [`Calendar::expected_bars`] says which bar start
//! times (UTC) a complete series has inside a half-open [`TimeRange`]:
//! - daily bars (`1d`) start at 00:00 UTC of every exchange-local trading date;
//! - weekly bars (`1wk`) start at Monday 00:00 UTC of every week with at least one trading day,
//!   monthly bars (`1mo`) at 00:00 UTC of the 1st of every month with at least one trading day;
//! - intraday bars (`1m` … `1h`) start at the session open and every interval after it while the
//!   start is before the session close, in exchange-local time converted to UTC (DST-correct).
//!   [`Calendar::Always`] has every multiple of the interval since 00:00 UTC, and
//!   [`Calendar::Fx`] every multiple outside the weekend closure.
//!
//! NYSE holidays are rule-based ([`nyse_holidays`]), and the one-off closures (national days
//! of mourning, 2001-09-11 to 09-14, Hurricane Sandy) are listed; early closes count as full
//! days.
//! Time zones follow chrono-tz, whose tables end with 2099: later years get no daylight time.

use std::collections::BTreeSet;

use chrono::{
    Datelike, Days, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Weekday,
};
use chrono_tz::Tz;
use dms_common::{Interval, TimeRange, Timestamp};

/// The most bar times one [`Calendar::expected_bars`] call returns; a range that holds more
/// gives its earliest `MAX_EXPECTED_BARS`.
pub const MAX_EXPECTED_BARS: usize = 10_000_000;

const DAY: i64 = 86_400;
/// Times further than this from 1970 (about 190 000 years) are outside every range, which keeps
/// every date chrono can hold and the arithmetic on them far from overflow.
const LIMIT_SECS: i64 = 6_000_000_000_000;
/// When FX trading stops on Friday and starts again on Sunday, New York time.
const FX_ROLL_HOUR: u32 = 17;

/// Which sessions an exchange trades.
#[derive(Debug, Clone, PartialEq)]
pub enum Calendar {
    /// NYSE / Nasdaq: Mon–Fri, 09:30–16:00 America/New_York, minus the rule-based US holidays.
    Nyse,
    /// Mon–Fri in `timezone`, sessions `open`..`close` local time, minus the listed holidays.
    /// A session must close after it opens on the same local day; when `close <= open` the
    /// calendar has daily and longer bars but no intraday ones.
    Weekdays {
        timezone: Tz,
        open: NaiveTime,
        close: NaiveTime,
        holidays: BTreeSet<NaiveDate>,
    },
    /// Crypto: every day, 24 hours (UTC days).
    Always,
    /// FX: 24 hours from Sunday 17:00 to Friday 17:00 America/New_York; daily bars Mon–Fri.
    Fx,
}

impl Calendar {
    /// Whether `date` (exchange-local) is a trading day.
    pub fn is_trading_day(&self, date: NaiveDate) -> bool {
        match self {
            Calendar::Nyse => is_weekday(date) && !nyse_closures(date.year()).contains(&date),
            Calendar::Weekdays { holidays, .. } => is_weekday(date) && !holidays.contains(&date),
            Calendar::Always => true,
            Calendar::Fx => is_weekday(date),
        }
    }

    /// The bar start times (UTC) a complete series of `interval` has inside the half-open
    /// `range`, in order. An empty or reversed range gives none; a range holding more than
    /// [`MAX_EXPECTED_BARS`] gives the earliest that many.
    pub fn expected_bars(&self, interval: Interval, range: TimeRange) -> Vec<Timestamp> {
        let range = clamp(range);
        let mut out = Collector::default();
        if range.is_empty() {
            return out.bars;
        }
        let mut days = TradingDays::new(self);
        match interval {
            Interval::D1 => daily(&mut out, &mut days, range),
            Interval::W1 => weekly(&mut out, &mut days, range),
            Interval::Mo1 => monthly(&mut out, &mut days, range),
            intraday => {
                let step = intraday.nominal_secs();
                match self {
                    Calendar::Nyse => {
                        let (open, close) = nyse_session();
                        let session = Session {
                            tz: Tz::America__New_York,
                            open,
                            close,
                        };
                        session_bars(&mut out, &mut days, &session, step, range);
                    }
                    Calendar::Weekdays {
                        timezone,
                        open,
                        close,
                        ..
                    } => {
                        let session = Session {
                            tz: *timezone,
                            open: *open,
                            close: *close,
                        };
                        session_bars(&mut out, &mut days, &session, step, range);
                    }
                    Calendar::Always => every_multiple(&mut out, step, range),
                    Calendar::Fx => fx_bars(&mut out, step, range),
                }
            }
        }
        out.bars
    }

    /// Parses a calendar name used in config: "nyse" (also "nasdaq", "us"), "crypto"/"always",
    /// "fx"/"forex", ignoring case and surrounding blanks. Weekdays calendars are built by code,
    /// not by name.
    pub fn from_name(name: &str) -> Option<Calendar> {
        match name.trim().to_ascii_lowercase().as_str() {
            "nyse" | "nasdaq" | "us" => Some(Calendar::Nyse),
            "crypto" | "always" => Some(Calendar::Always),
            "fx" | "forex" => Some(Calendar::Fx),
            _ => None,
        }
    }
}

/// Full-day NYSE closures that no rule gives (national days of mourning, storms, 9/11), since
/// 1985. The `Nyse` calendar skips them along with [`nyse_holidays`].
pub const NYSE_SPECIAL_CLOSURES: &[(i32, u32, u32)] = &[
    (1985, 9, 27), // Hurricane Gloria
    (1994, 4, 27), // President Nixon's funeral
    (2001, 9, 11), // September 11 attacks, through Sept. 14
    (2001, 9, 12),
    (2001, 9, 13),
    (2001, 9, 14),
    (2004, 6, 11),  // President Reagan's funeral
    (2007, 1, 2),   // President Ford's day of mourning
    (2012, 10, 29), // Hurricane Sandy
    (2012, 10, 30),
    (2018, 12, 5), // President G. H. W. Bush's day of mourning
    (2025, 1, 9),  // President Carter's day of mourning
];

/// Every weekday of `year` the NYSE does not trade: [`nyse_holidays`] and the
/// [`NYSE_SPECIAL_CLOSURES`] of that year.
pub fn nyse_closures(year: i32) -> Vec<NaiveDate> {
    let mut out = nyse_holidays(year);
    out.extend(
        NYSE_SPECIAL_CLOSURES
            .iter()
            .filter(|(y, _, _)| *y == year)
            .filter_map(|&(y, m, d)| NaiveDate::from_ymd_opt(y, m, d)),
    );
    out.sort_unstable();
    out
}

/// The NYSE full-day holidays of `year` (observed dates), in order.
///
/// Today's rules, applied to every year: New Year's Day (a Sunday is observed on Monday, a
/// Saturday is not made up), Martin Luther King Jr. Day (3rd Monday of January, since 1998),
/// Washington's Birthday (3rd Monday of February), Good Friday, Memorial Day (last Monday of
/// May), Juneteenth (June 19, since 2022), Independence Day (July 4), Labor Day (1st Monday of
/// September), Thanksgiving (4th Thursday of November) and Christmas (December 25). The
/// fixed-date ones falling on a Saturday are observed the Friday before, on a Sunday the Monday
/// after. A year outside chrono's range has none.
pub fn nyse_holidays(year: i32) -> Vec<NaiveDate> {
    let ymd = |month, day| NaiveDate::from_ymd_opt(year, month, day);
    let mut out = Vec::with_capacity(10);
    if let Some(new_year) = ymd(1, 1) {
        match new_year.weekday() {
            Weekday::Sat => {}
            Weekday::Sun => out.extend(new_year.succ_opt()),
            _ => out.push(new_year),
        }
    }
    if year >= 1998 {
        out.extend(NaiveDate::from_weekday_of_month_opt(
            year,
            1,
            Weekday::Mon,
            3,
        ));
    }
    out.extend(NaiveDate::from_weekday_of_month_opt(
        year,
        2,
        Weekday::Mon,
        3,
    ));
    out.extend(easter_sunday(year).and_then(|easter| easter.checked_sub_days(Days::new(2))));
    out.extend(last_weekday_of_month(year, 5, Weekday::Mon));
    if year >= 2022 {
        out.extend(ymd(6, 19).and_then(observed));
    }
    out.extend(ymd(7, 4).and_then(observed));
    out.extend(NaiveDate::from_weekday_of_month_opt(
        year,
        9,
        Weekday::Mon,
        1,
    ));
    out.extend(NaiveDate::from_weekday_of_month_opt(
        year,
        11,
        Weekday::Thu,
        4,
    ));
    out.extend(ymd(12, 25).and_then(observed));
    out.sort_unstable();
    out.dedup();
    out
}

/// Easter Sunday of `year` in the Gregorian calendar (the anonymous Gregorian algorithm), or
/// `None` for a year outside chrono's range.
pub fn easter_sunday(year: i32) -> Option<NaiveDate> {
    let y = i64::from(year);
    let a = y.rem_euclid(19);
    let b = y.div_euclid(100);
    let c = y.rem_euclid(100);
    let d = b.div_euclid(4);
    let e = b.rem_euclid(4);
    let f = (b + 8).div_euclid(25);
    let g = (b - f + 1).div_euclid(3);
    let h = (19 * a + b - d - g + 15).rem_euclid(30);
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k).rem_euclid(7);
    let m = (a + 11 * h + 22 * l) / 451;
    let n = h + l - 7 * m + 114;
    let month = u32::try_from(n / 31).ok()?;
    let day = u32::try_from(n % 31 + 1).ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

fn is_weekday(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// A fixed-date holiday moved off the weekend: Saturday to Friday, Sunday to Monday.
fn observed(date: NaiveDate) -> Option<NaiveDate> {
    match date.weekday() {
        Weekday::Sat => date.pred_opt(),
        Weekday::Sun => date.succ_opt(),
        _ => Some(date),
    }
}

fn last_weekday_of_month(year: i32, month: u32, weekday: Weekday) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let last = first
        .checked_add_months(chrono::Months::new(1))?
        .pred_opt()?;
    let back = (7 + last.weekday().num_days_from_monday() - weekday.num_days_from_monday()) % 7;
    last.checked_sub_days(Days::new(u64::from(back)))
}

fn nyse_session() -> (NaiveTime, NaiveTime) {
    (
        NaiveTime::from_hms_opt(9, 30, 0).unwrap_or(NaiveTime::MIN),
        NaiveTime::from_hms_opt(16, 0, 0).unwrap_or(NaiveTime::MIN),
    )
}

/// `range` cut to ±[`LIMIT_SECS`].
fn clamp(range: TimeRange) -> TimeRange {
    let cut = |t: Timestamp| Timestamp(t.0.clamp(-LIMIT_SECS, LIMIT_SECS));
    TimeRange::new(cut(range.start), cut(range.end))
}

/// The UTC date of `ts`.
fn date_of(ts: Timestamp) -> NaiveDate {
    ts.to_datetime().date_naive()
}

/// The smallest multiple of `step` at or after `t`.
fn ceil_to(t: i64, step: i64) -> i64 {
    let down = t.div_euclid(step) * step;
    if down < t { down + step } else { down }
}

/// The UTC instant of a wall-clock time in `tz`. An ambiguous time (DST ending) is the earlier
/// instant; a time in a DST gap is read with the offset in force before the gap, so it lands as
/// far after the gap as it was into it.
fn local_to_utc(tz: Tz, local: NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) | MappedLocalTime::Ambiguous(t, _) => Some(t.timestamp()),
        MappedLocalTime::None => {
            let before = local.checked_sub_days(Days::new(1))?;
            let offset = tz.offset_from_utc_datetime(&before).fix().local_minus_utc();
            Some(local.and_utc().timestamp() - i64::from(offset))
        }
    }
}

/// The output, strictly increasing and at most [`MAX_EXPECTED_BARS`] long.
#[derive(Debug, Default)]
struct Collector {
    bars: Vec<Timestamp>,
}

impl Collector {
    /// Adds `ts` unless it is not after the last one; false once the output is full.
    fn push(&mut self, ts: Timestamp) -> bool {
        if self.bars.len() >= MAX_EXPECTED_BARS {
            return false;
        }
        if self.bars.last().is_none_or(|last| *last < ts) {
            self.bars.push(ts);
        }
        self.bars.len() < MAX_EXPECTED_BARS
    }
}

/// `Calendar::is_trading_day`, remembering the NYSE holidays of the last year asked about.
#[derive(Debug)]
struct TradingDays<'a> {
    calendar: &'a Calendar,
    year: Option<i32>,
    holidays: Vec<NaiveDate>,
}

impl<'a> TradingDays<'a> {
    fn new(calendar: &'a Calendar) -> Self {
        TradingDays {
            calendar,
            year: None,
            holidays: Vec::new(),
        }
    }

    fn is_trading(&mut self, date: NaiveDate) -> bool {
        match self.calendar {
            Calendar::Nyse => {
                if !is_weekday(date) {
                    return false;
                }
                if self.year != Some(date.year()) {
                    self.holidays = nyse_closures(date.year());
                    self.year = Some(date.year());
                }
                !self.holidays.contains(&date)
            }
            other => other.is_trading_day(date),
        }
    }
}

/// 00:00 UTC of every trading date inside `range`.
fn daily(out: &mut Collector, days: &mut TradingDays<'_>, range: TimeRange) {
    let last = date_of(Timestamp(range.end.0 - 1));
    for date in date_of(range.start).iter_days().take_while(|d| *d <= last) {
        let ts = Timestamp::from_date(date);
        if ts >= range.start && days.is_trading(date) && !out.push(ts) {
            return;
        }
    }
}

/// Monday 00:00 UTC of every week inside `range` with a trading day.
fn weekly(out: &mut Collector, days: &mut TradingDays<'_>, range: TimeRange) {
    let mut week = Interval::W1.align(range.start);
    if week < range.start {
        week = Timestamp(week.0 + 7 * DAY);
    }
    while week < range.end {
        let trades = date_of(week)
            .iter_days()
            .take(7)
            .any(|d| days.is_trading(d));
        if trades && !out.push(week) {
            return;
        }
        week = Timestamp(week.0 + 7 * DAY);
    }
}

/// 00:00 UTC of the 1st of every month inside `range` with a trading day.
fn monthly(out: &mut Collector, days: &mut TradingDays<'_>, range: TimeRange) {
    let mut month = Interval::Mo1.align(range.start);
    if month < range.start {
        month = Interval::Mo1.next(month);
    }
    while month < range.end {
        let first = date_of(month);
        let trades = first
            .iter_days()
            .take_while(|d| d.month() == first.month())
            .any(|d| days.is_trading(d));
        if trades && !out.push(month) {
            return;
        }
        month = Interval::Mo1.next(month);
    }
}

/// Every multiple of `step` seconds inside `range`.
fn every_multiple(out: &mut Collector, step: i64, range: TimeRange) {
    let mut t = ceil_to(range.start.0, step);
    while t < range.end.0 && out.push(Timestamp(t)) {
        t += step;
    }
}

/// One trading day's session in local time.
#[derive(Debug)]
struct Session {
    tz: Tz,
    open: NaiveTime,
    close: NaiveTime,
}

/// Session open and every `step` after it before the close, on every trading day, inside `range`.
fn session_bars(
    out: &mut Collector,
    days: &mut TradingDays<'_>,
    session: &Session,
    step: i64,
    range: TimeRange,
) {
    if session.open >= session.close {
        return;
    }
    // A local date's session can fall on the UTC date before or after it.
    let margin = Days::new(2);
    let first = date_of(range.start);
    let first = first.checked_sub_days(margin).unwrap_or(first);
    let last = date_of(range.end);
    let last = last.checked_add_days(margin).unwrap_or(last);
    for date in first.iter_days().take_while(|d| *d <= last) {
        if !days.is_trading(date) {
            continue;
        }
        let (Some(open), Some(close)) = (
            local_to_utc(session.tz, date.and_time(session.open)),
            local_to_utc(session.tz, date.and_time(session.close)),
        ) else {
            continue;
        };
        let mut t = open;
        if t < range.start.0 {
            t = open + ceil_to(range.start.0 - open, step);
        }
        let stop = close.min(range.end.0);
        while t < stop {
            if !out.push(Timestamp(t)) {
                return;
            }
            t += step;
        }
    }
}

/// The FX weekend closure that starts on `friday`: Friday 17:00 to Sunday 17:00 New York, UTC.
fn fx_closure(friday: NaiveDate) -> Option<(i64, i64)> {
    let roll = NaiveTime::from_hms_opt(FX_ROLL_HOUR, 0, 0)?;
    let sunday = friday.checked_add_days(Days::new(2))?;
    Some((
        local_to_utc(Tz::America__New_York, friday.and_time(roll))?,
        local_to_utc(Tz::America__New_York, sunday.and_time(roll))?,
    ))
}

/// Every multiple of `step` seconds inside `range` outside the FX weekend closures.
fn fx_bars(out: &mut Collector, step: i64, range: TimeRange) {
    // Start a week early so the closure that may cover `range.start` is the first one seen.
    let early = date_of(range.start);
    let early = early.checked_sub_days(Days::new(8)).unwrap_or(early);
    let to_friday =
        (7 + Weekday::Fri.num_days_from_monday() - early.weekday().num_days_from_monday()) % 7;
    let Some(mut friday) = early.checked_add_days(Days::new(u64::from(to_friday))) else {
        return;
    };
    let Some((mut closes, mut opens)) = fx_closure(friday) else {
        return;
    };
    let mut t = ceil_to(range.start.0, step);
    while t < range.end.0 {
        if t >= opens {
            let Some(next) = friday
                .checked_add_days(Days::new(7))
                .and_then(|f| Some((f, fx_closure(f)?)))
            else {
                return;
            };
            (friday, (closes, opens)) = next;
        } else if t >= closes {
            t = ceil_to(opens, step);
        } else {
            if !out.push(Timestamp(t)) {
                return;
            }
            t += step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        Timestamp(chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    }

    fn range(start: &str, end: &str) -> TimeRange {
        TimeRange::new(ts(start), ts(end))
    }

    fn texts(bars: &[Timestamp]) -> Vec<String> {
        bars.iter().map(|t| t.to_string()).collect()
    }

    fn london(holidays: &[&str]) -> Calendar {
        Calendar::Weekdays {
            timezone: Tz::Europe__London,
            open: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            close: NaiveTime::from_hms_opt(16, 30, 0).unwrap(),
            holidays: holidays.iter().map(|d| date(d)).collect(),
        }
    }

    fn all_calendars() -> Vec<Calendar> {
        vec![
            Calendar::Nyse,
            london(&["2024-12-25"]),
            Calendar::Always,
            Calendar::Fx,
        ]
    }

    #[test]
    fn nyse_holidays_match_the_published_dates_2020_to_2026() {
        let published: [(i32, [&str; 10]); 7] = [
            (
                2020,
                [
                    "2020-01-01",
                    "2020-01-20",
                    "2020-02-17",
                    "2020-04-10",
                    "2020-05-25",
                    "2020-07-03",
                    "2020-09-07",
                    "2020-11-26",
                    "2020-12-25",
                    "",
                ],
            ),
            (
                2021,
                [
                    "2021-01-01",
                    "2021-01-18",
                    "2021-02-15",
                    "2021-04-02",
                    "2021-05-31",
                    "2021-07-05",
                    "2021-09-06",
                    "2021-11-25",
                    "2021-12-24",
                    "",
                ],
            ),
            (
                2022,
                [
                    "2022-01-17",
                    "2022-02-21",
                    "2022-04-15",
                    "2022-05-30",
                    "2022-06-20",
                    "2022-07-04",
                    "2022-09-05",
                    "2022-11-24",
                    "2022-12-26",
                    "",
                ],
            ),
            (
                2023,
                [
                    "2023-01-02",
                    "2023-01-16",
                    "2023-02-20",
                    "2023-04-07",
                    "2023-05-29",
                    "2023-06-19",
                    "2023-07-04",
                    "2023-09-04",
                    "2023-11-23",
                    "2023-12-25",
                ],
            ),
            (
                2024,
                [
                    "2024-01-01",
                    "2024-01-15",
                    "2024-02-19",
                    "2024-03-29",
                    "2024-05-27",
                    "2024-06-19",
                    "2024-07-04",
                    "2024-09-02",
                    "2024-11-28",
                    "2024-12-25",
                ],
            ),
            (
                // The one-off closure of 2025-01-09 is in NYSE_SPECIAL_CLOSURES, not a rule.
                2025,
                [
                    "2025-01-01",
                    "2025-01-20",
                    "2025-02-17",
                    "2025-04-18",
                    "2025-05-26",
                    "2025-06-19",
                    "2025-07-04",
                    "2025-09-01",
                    "2025-11-27",
                    "2025-12-25",
                ],
            ),
            (
                2026,
                [
                    "2026-01-01",
                    "2026-01-19",
                    "2026-02-16",
                    "2026-04-03",
                    "2026-05-25",
                    "2026-06-19",
                    "2026-07-03",
                    "2026-09-07",
                    "2026-11-26",
                    "2026-12-25",
                ],
            ),
        ];
        for (year, days) in published {
            let want: Vec<NaiveDate> = days
                .iter()
                .filter(|d| !d.is_empty())
                .map(|d| date(d))
                .collect();
            assert_eq!(nyse_holidays(year), want, "{year}");
        }
    }

    #[test]
    fn new_year_on_a_saturday_is_not_made_up_on_the_friday_before() {
        // 2022-01-01 was a Saturday; the NYSE traded on Friday 2021-12-31.
        assert!(!nyse_holidays(2021).contains(&date("2021-12-31")));
        assert!(Calendar::Nyse.is_trading_day(date("2021-12-31")));
        assert!(nyse_holidays(2022).iter().all(|d| *d != date("2022-01-01")));
        // 2023-01-01 was a Sunday: observed on Monday the 2nd.
        assert!(!Calendar::Nyse.is_trading_day(date("2023-01-02")));
    }

    #[test]
    fn good_friday_is_two_days_before_the_gregorian_easter() {
        for (year, easter) in [
            (1818, "1818-03-22"),
            (1943, "1943-04-25"),
            (2000, "2000-04-23"),
            (2019, "2019-04-21"),
            (2038, "2038-04-25"),
            (2285, "2285-03-22"),
        ] {
            assert_eq!(easter_sunday(year), Some(date(easter)), "{year}");
        }
        for good_friday in ["2020-04-10", "2024-03-29", "2025-04-18"] {
            let d = date(good_friday);
            assert!(nyse_holidays(d.year()).contains(&d), "{good_friday}");
            assert!(!Calendar::Nyse.is_trading_day(d));
        }
    }

    #[test]
    fn mlk_day_and_juneteenth_start_in_their_first_years() {
        assert!(Calendar::Nyse.is_trading_day(date("1997-01-20")));
        assert!(!Calendar::Nyse.is_trading_day(date("1998-01-19")));
        assert!(Calendar::Nyse.is_trading_day(date("2021-06-18")));
        // 2027-06-19 is a Saturday: observed on Friday the 18th.
        assert!(!Calendar::Nyse.is_trading_day(date("2027-06-18")));
    }

    #[test]
    fn trading_days_skip_weekends_and_holidays() {
        let nyse = Calendar::Nyse;
        assert!(nyse.is_trading_day(date("2024-07-03")));
        assert!(!nyse.is_trading_day(date("2024-07-04")));
        assert!(!nyse.is_trading_day(date("2024-07-06")));
        assert!(!nyse.is_trading_day(date("2024-07-07")));
        assert!(nyse.is_trading_day(date("2025-11-28")));
        assert!(!nyse.is_trading_day(date("2025-11-27")));
        assert!(Calendar::Always.is_trading_day(date("2024-07-06")));
        assert!(Calendar::Always.is_trading_day(date("2024-12-25")));
        assert!(!Calendar::Fx.is_trading_day(date("2024-07-06")));
        assert!(Calendar::Fx.is_trading_day(date("2024-07-04")));
    }

    #[test]
    fn daily_bars_skip_weekends_and_holidays() {
        let bars = Calendar::Nyse.expected_bars(
            Interval::D1,
            range("2021-12-20T00:00:00Z", "2022-01-05T00:00:00Z"),
        );
        let want: Vec<Timestamp> = [
            "2021-12-20",
            "2021-12-21",
            "2021-12-22",
            "2021-12-23",
            "2021-12-27",
            "2021-12-28",
            "2021-12-29",
            "2021-12-30",
            "2021-12-31",
            "2022-01-03",
            "2022-01-04",
        ]
        .iter()
        .map(|d| Timestamp::from_date(date(d)))
        .collect();
        assert_eq!(bars, want);

        let thanksgiving_week = Calendar::Nyse.expected_bars(
            Interval::D1,
            range("2025-11-24T00:00:00Z", "2025-12-01T00:00:00Z"),
        );
        assert_eq!(
            texts(&thanksgiving_week),
            [
                "2025-11-24T00:00:00Z",
                "2025-11-25T00:00:00Z",
                "2025-11-26T00:00:00Z",
                "2025-11-28T00:00:00Z",
            ]
        );
    }

    #[test]
    fn daily_bars_are_only_those_whose_midnight_is_in_the_range() {
        // Starts after Tuesday's midnight and ends exactly at Thursday's: only Wednesday.
        let bars = Calendar::Nyse.expected_bars(
            Interval::D1,
            range("2024-01-09T12:00:00Z", "2024-01-11T00:00:00Z"),
        );
        assert_eq!(texts(&bars), ["2024-01-10T00:00:00Z"]);
        let every_day = Calendar::Always.expected_bars(
            Interval::D1,
            range("2024-01-06T00:00:00Z", "2024-01-09T00:00:00Z"),
        );
        assert_eq!(every_day.len(), 3);
        let fx = Calendar::Fx.expected_bars(
            Interval::D1,
            range("2024-01-06T00:00:00Z", "2024-01-09T00:00:00Z"),
        );
        assert_eq!(texts(&fx), ["2024-01-08T00:00:00Z"]);
    }

    #[test]
    fn nyse_hourly_bars_start_at_the_half_hour_in_winter_and_summer() {
        let winter = Calendar::Nyse.expected_bars(
            Interval::H1,
            range("2024-01-10T00:00:00Z", "2024-01-11T00:00:00Z"),
        );
        assert_eq!(
            texts(&winter),
            [
                "2024-01-10T14:30:00Z",
                "2024-01-10T15:30:00Z",
                "2024-01-10T16:30:00Z",
                "2024-01-10T17:30:00Z",
                "2024-01-10T18:30:00Z",
                "2024-01-10T19:30:00Z",
                "2024-01-10T20:30:00Z",
            ]
        );
        let summer = Calendar::Nyse.expected_bars(
            Interval::H1,
            range("2024-07-10T00:00:00Z", "2024-07-11T00:00:00Z"),
        );
        assert_eq!(summer.len(), 7);
        assert_eq!(summer[0], ts("2024-07-10T13:30:00Z"));
        assert_eq!(summer[6], ts("2024-07-10T19:30:00Z"));
        // The Monday after the switch to daylight time is already on summer hours.
        let after_switch = Calendar::Nyse.expected_bars(
            Interval::H1,
            range("2024-03-08T00:00:00Z", "2024-03-12T00:00:00Z"),
        );
        assert_eq!(after_switch.len(), 14);
        assert_eq!(after_switch[0], ts("2024-03-08T14:30:00Z"));
        assert_eq!(after_switch[7], ts("2024-03-11T13:30:00Z"));
    }

    #[test]
    fn nyse_intraday_bars_cover_the_session_for_every_interval() {
        let day = range("2024-01-10T00:00:00Z", "2024-01-11T00:00:00Z");
        for (interval, count, last) in [
            (Interval::M1, 390, "2024-01-10T20:59:00Z"),
            (Interval::M5, 78, "2024-01-10T20:55:00Z"),
            (Interval::M15, 26, "2024-01-10T20:45:00Z"),
            (Interval::M30, 13, "2024-01-10T20:30:00Z"),
            (Interval::H1, 7, "2024-01-10T20:30:00Z"),
        ] {
            let bars = Calendar::Nyse.expected_bars(interval, day);
            assert_eq!(bars.len(), count, "{interval}");
            assert_eq!(bars[0], ts("2024-01-10T14:30:00Z"), "{interval}");
            assert_eq!(*bars.last().unwrap(), ts(last), "{interval}");
            assert!(
                bars.windows(2)
                    .all(|w| w[0].0 + interval.nominal_secs() == w[1].0)
            );
        }
        // A holiday has no session.
        let holiday = range("2024-07-04T00:00:00Z", "2024-07-05T00:00:00Z");
        assert!(
            Calendar::Nyse
                .expected_bars(Interval::M1, holiday)
                .is_empty()
        );
    }

    #[test]
    fn intraday_bars_keep_to_the_session_grid_inside_a_partial_range() {
        let bars = Calendar::Nyse.expected_bars(
            Interval::H1,
            range("2024-01-10T15:00:00Z", "2024-01-10T17:30:00Z"),
        );
        assert_eq!(
            texts(&bars),
            ["2024-01-10T15:30:00Z", "2024-01-10T16:30:00Z"]
        );
    }

    #[test]
    fn always_has_every_multiple_of_the_interval() {
        let three_days = range("2024-03-09T00:00:00Z", "2024-03-12T00:00:00Z");
        let hours = Calendar::Always.expected_bars(Interval::H1, three_days);
        assert_eq!(hours.len(), 72);
        assert_eq!(hours[0], ts("2024-03-09T00:00:00Z"));
        assert_eq!(hours[71], ts("2024-03-11T23:00:00Z"));
        let minutes = Calendar::Always.expected_bars(Interval::M1, three_days);
        assert_eq!(minutes.len(), 3 * 1440);
        let partial = Calendar::Always.expected_bars(
            Interval::M15,
            range("2024-03-09T00:01:00Z", "2024-03-09T01:00:00Z"),
        );
        assert_eq!(
            texts(&partial),
            [
                "2024-03-09T00:15:00Z",
                "2024-03-09T00:30:00Z",
                "2024-03-09T00:45:00Z",
            ]
        );
    }

    #[test]
    fn fx_is_closed_from_friday_to_sunday_five_pm_new_york() {
        // Winter: New York is UTC-5, so the closure is Fri 22:00Z to Sun 22:00Z.
        let winter = Calendar::Fx.expected_bars(
            Interval::H1,
            range("2024-01-05T00:00:00Z", "2024-01-08T00:00:00Z"),
        );
        assert_eq!(winter.len(), 22 + 2);
        assert_eq!(winter[21], ts("2024-01-05T21:00:00Z"));
        assert_eq!(winter[22], ts("2024-01-07T22:00:00Z"));
        // Summer: UTC-4, Fri 21:00Z to Sun 21:00Z.
        let summer = Calendar::Fx.expected_bars(
            Interval::H1,
            range("2024-07-05T00:00:00Z", "2024-07-08T00:00:00Z"),
        );
        assert_eq!(summer.len(), 21 + 3);
        assert_eq!(summer[20], ts("2024-07-05T20:00:00Z"));
        assert_eq!(summer[21], ts("2024-07-07T21:00:00Z"));
        // Daylight time starts on Sunday 2024-03-10: closes at 22:00Z, reopens at 21:00Z.
        let spring = Calendar::Fx.expected_bars(
            Interval::H1,
            range("2024-03-08T00:00:00Z", "2024-03-11T00:00:00Z"),
        );
        assert_eq!(spring.len(), 22 + 3);
        assert_eq!(spring[22], ts("2024-03-10T21:00:00Z"));
        // It ends on Sunday 2024-11-03: closes at 21:00Z, reopens at 22:00Z.
        let autumn = Calendar::Fx.expected_bars(
            Interval::H1,
            range("2024-11-01T00:00:00Z", "2024-11-04T00:00:00Z"),
        );
        assert_eq!(autumn.len(), 21 + 2);
        assert_eq!(autumn[21], ts("2024-11-03T22:00:00Z"));
        // Nothing inside the closure, even for a range that starts in it.
        let inside = range("2024-01-06T00:00:00Z", "2024-01-07T22:00:00Z");
        for interval in [Interval::M1, Interval::M30, Interval::H1] {
            assert!(Calendar::Fx.expected_bars(interval, inside).is_empty());
        }
        // Over four weeks: 24 hours a day, five days a week.
        let month = Calendar::Fx.expected_bars(
            Interval::H1,
            range("2024-01-01T00:00:00Z", "2024-01-29T00:00:00Z"),
        );
        assert_eq!(month.len(), 4 * 5 * 24);
    }

    #[test]
    fn weekly_bars_start_on_mondays_of_weeks_with_a_trading_day() {
        let weeks = Calendar::Nyse.expected_bars(
            Interval::W1,
            range("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
        );
        assert_eq!(
            texts(&weeks),
            [
                "2024-01-01T00:00:00Z",
                "2024-01-08T00:00:00Z",
                "2024-01-15T00:00:00Z",
                "2024-01-22T00:00:00Z",
                "2024-01-29T00:00:00Z",
            ]
        );
        // A range starting mid-week leaves that week's bar out.
        let late = Calendar::Nyse.expected_bars(
            Interval::W1,
            range("2024-01-03T00:00:00Z", "2024-01-16T00:00:00Z"),
        );
        assert_eq!(
            texts(&late),
            ["2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z"]
        );
        // A week of holidays has no bar.
        let shut = london(&[
            "2024-12-23",
            "2024-12-24",
            "2024-12-25",
            "2024-12-26",
            "2024-12-27",
        ]);
        let weeks = shut.expected_bars(
            Interval::W1,
            range("2024-12-16T00:00:00Z", "2025-01-06T00:00:00Z"),
        );
        assert_eq!(
            texts(&weeks),
            ["2024-12-16T00:00:00Z", "2024-12-30T00:00:00Z"]
        );
    }

    #[test]
    fn monthly_bars_start_on_the_first_of_months_with_a_trading_day() {
        let months = Calendar::Nyse.expected_bars(
            Interval::Mo1,
            range("2024-01-01T00:00:00Z", "2024-07-01T00:00:00Z"),
        );
        assert_eq!(
            texts(&months),
            [
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
                "2024-04-01T00:00:00Z",
                "2024-05-01T00:00:00Z",
                "2024-06-01T00:00:00Z",
            ]
        );
        let late = Calendar::Always.expected_bars(
            Interval::Mo1,
            range("2024-01-15T00:00:00Z", "2024-03-01T00:00:01Z"),
        );
        assert_eq!(
            texts(&late),
            ["2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"]
        );
        // February 2021 has 20 weekdays: make them all holidays.
        let feb: Vec<String> = date("2021-02-01")
            .iter_days()
            .take(28)
            .map(|d| d.to_string())
            .collect();
        let shut = london(&feb.iter().map(String::as_str).collect::<Vec<_>>());
        let months = shut.expected_bars(
            Interval::Mo1,
            range("2021-01-01T00:00:00Z", "2021-04-01T00:00:00Z"),
        );
        assert_eq!(
            texts(&months),
            ["2021-01-01T00:00:00Z", "2021-03-01T00:00:00Z"]
        );
    }

    #[test]
    fn weekdays_calendar_keeps_local_sessions_and_configured_holidays() {
        let cal = london(&["2024-12-26"]);
        assert!(!cal.is_trading_day(date("2024-12-26")));
        assert!(cal.is_trading_day(date("2024-12-27")));
        assert!(!cal.is_trading_day(date("2024-12-28")));
        let days = cal.expected_bars(
            Interval::D1,
            range("2024-12-23T00:00:00Z", "2024-12-30T00:00:00Z"),
        );
        // The configured holidays are the only ones: 2024-12-25 is not listed here.
        assert_eq!(
            texts(&days),
            [
                "2024-12-23T00:00:00Z",
                "2024-12-24T00:00:00Z",
                "2024-12-25T00:00:00Z",
                "2024-12-27T00:00:00Z",
            ]
        );
        // 08:00–16:30 London: 07:00Z in summer, 08:00Z in winter; 17 half hours.
        let summer = cal.expected_bars(
            Interval::M30,
            range("2024-07-10T00:00:00Z", "2024-07-11T00:00:00Z"),
        );
        assert_eq!(summer.len(), 17);
        assert_eq!(summer[0], ts("2024-07-10T07:00:00Z"));
        assert_eq!(summer[16], ts("2024-07-10T15:00:00Z"));
        let winter = cal.expected_bars(
            Interval::H1,
            range("2024-12-24T00:00:00Z", "2024-12-28T00:00:00Z"),
        );
        assert_eq!(
            texts(&winter[..3]),
            [
                "2024-12-24T08:00:00Z",
                "2024-12-24T09:00:00Z",
                "2024-12-24T10:00:00Z"
            ]
        );
        // 9 hourly bars (08:00 … 16:00) on each of the 24th, 25th and 27th.
        assert_eq!(winter.len(), 27);
    }

    #[test]
    fn a_session_east_of_utc_can_start_on_the_utc_day_before() {
        let sydney = Calendar::Weekdays {
            timezone: Tz::Australia__Sydney,
            open: NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
            close: NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
            holidays: BTreeSet::new(),
        };
        // Monday 2024-01-08 10:00 in Sydney (UTC+11) is Sunday 23:00Z.
        let bars = sydney.expected_bars(
            Interval::H1,
            range("2024-01-07T00:00:00Z", "2024-01-08T03:00:00Z"),
        );
        assert_eq!(
            texts(&bars),
            [
                "2024-01-07T23:00:00Z",
                "2024-01-08T00:00:00Z",
                "2024-01-08T01:00:00Z",
                "2024-01-08T02:00:00Z",
            ]
        );
    }

    #[test]
    fn a_session_that_does_not_close_after_it_opens_has_no_intraday_bars() {
        let cal = Calendar::Weekdays {
            timezone: Tz::UTC,
            open: NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
            close: NaiveTime::from_hms_opt(9, 0, 0).unwrap(),
            holidays: BTreeSet::new(),
        };
        assert!(cal.expected_bars(Interval::H1, TimeRange::all()).is_empty());
        let week = range("2024-01-08T00:00:00Z", "2024-01-15T00:00:00Z");
        assert_eq!(cal.expected_bars(Interval::D1, week).len(), 5);
    }

    #[test]
    fn empty_and_reversed_ranges_give_nothing() {
        let t = ts("2024-01-10T14:30:00Z");
        let empty = TimeRange::new(t, t);
        let reversed = range("2024-02-01T00:00:00Z", "2024-01-01T00:00:00Z");
        let extreme = TimeRange::new(Timestamp(i64::MAX), Timestamp(i64::MIN));
        for cal in all_calendars() {
            for interval in Interval::ALL {
                for r in [empty, reversed, extreme] {
                    assert!(
                        cal.expected_bars(interval, r).is_empty(),
                        "{cal:?} {interval} {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn huge_ranges_are_capped_and_extreme_inputs_do_not_panic() {
        let bars = Calendar::Always.expected_bars(Interval::M1, TimeRange::all());
        assert_eq!(bars.len(), MAX_EXPECTED_BARS);
        assert!(bars.windows(2).all(|w| w[0] < w[1]));
        let nyse = Calendar::Nyse.expected_bars(Interval::M1, TimeRange::all());
        assert_eq!(nyse.len(), MAX_EXPECTED_BARS);
        assert!(nyse.windows(2).all(|w| w[0] < w[1]));
        for cal in all_calendars() {
            for interval in Interval::ALL {
                for r in [
                    TimeRange::new(Timestamp(i64::MIN), Timestamp(i64::MIN + 86_400 * 30)),
                    TimeRange::new(Timestamp(i64::MAX - 86_400 * 30), Timestamp(i64::MAX)),
                    TimeRange::new(
                        Timestamp(-LIMIT_SECS - 1),
                        Timestamp(-LIMIT_SECS + 60 * DAY),
                    ),
                    TimeRange::new(Timestamp(LIMIT_SECS - 60 * DAY), Timestamp(LIMIT_SECS + 1)),
                ] {
                    let bars = cal.expected_bars(interval, r);
                    assert!(bars.windows(2).all(|w| w[0] < w[1]), "{cal:?} {interval}");
                    assert!(bars.iter().all(|t| r.contains(*t)), "{cal:?} {interval}");
                }
            }
        }
        for year in [i32::MIN, -300_000, -1, 0, 300_000, i32::MAX] {
            let _ = nyse_holidays(year);
            let _ = easter_sunday(year);
        }
        for d in [NaiveDate::MIN, NaiveDate::MAX] {
            for cal in all_calendars() {
                let _ = cal.is_trading_day(d);
            }
        }
    }

    #[test]
    fn config_names_parse_to_calendars() {
        for name in ["nyse", "nasdaq", "us", " NYSE "] {
            assert_eq!(Calendar::from_name(name), Some(Calendar::Nyse), "{name}");
        }
        for name in ["crypto", "always"] {
            assert_eq!(Calendar::from_name(name), Some(Calendar::Always));
        }
        for name in ["fx", "forex", "FX"] {
            assert_eq!(Calendar::from_name(name), Some(Calendar::Fx));
        }
        for name in ["", "lse", "weekdays"] {
            assert_eq!(Calendar::from_name(name), None, "{name}");
        }
    }

    #[test]
    fn nyse_one_off_closures_are_not_trading_days() {
        for (y, m, d) in [(2007, 1, 2), (2012, 10, 29), (2012, 10, 30), (2025, 1, 9)] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert!(!Calendar::Nyse.is_trading_day(date), "{date}");
        }
        let range = TimeRange::new(
            Timestamp::from_date(NaiveDate::from_ymd_opt(2012, 10, 26).unwrap()),
            Timestamp::from_date(NaiveDate::from_ymd_opt(2012, 11, 1).unwrap()),
        );
        // Fri 26th and Wed 31st only.
        assert_eq!(Calendar::Nyse.expected_bars(Interval::D1, range).len(), 2);
    }
}
