//! `Validator`: the quality rules a bar must pass before it is journaled.
//!
//! Rules, checked bar by bar; a failing bar is rejected with the first rule it breaks and the
//! rest of the batch goes on:
//! - every value finite; open, high, low, close (and adj_close) positive; volume, turnover and
//!   open interest not negative;
//! - `low <= min(open, close)` and `max(open, close) <= high`;
//! - `ts` can start a bar of the series' interval ([`Interval::is_bar_start`]: daily and longer
//!   bars at 00:00 UTC of their period, intraday bars on a multiple of the interval or of 15
//!   minutes, as sessions open at :00, :15, :30 or :45);
//! - no two bars of one batch share a `ts` (the later ones are rejected);
//! - `ts` is not in the future by more than one interval.

use std::collections::HashSet;

use dms_common::{Bar, Interval, Timestamp};

/// A bar that failed validation, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub bar: Bar,
    pub reason: String,
}

/// The outcome of validating one series' batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validated {
    /// Bars that passed, in the order given.
    pub valid: Vec<Bar>,
    pub rejected: Vec<Rejection>,
}

/// Checks bars against the quality rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validator;

impl Validator {
    /// Splits `bars` of a series at `interval` into valid and rejected, as of `now`.
    pub fn validate(&self, interval: Interval, bars: Vec<Bar>, now: Timestamp) -> Validated {
        let mut out = Validated {
            valid: Vec::with_capacity(bars.len()),
            rejected: Vec::new(),
        };
        let mut seen = HashSet::with_capacity(bars.len());
        let horizon = Timestamp(now.0.saturating_add(interval.nominal_secs()));
        for bar in bars {
            let problem = check_values(&bar)
                .or_else(|| check_time(interval, &bar, horizon))
                .or_else(|| {
                    (!seen.insert(bar.ts.0))
                        .then(|| format!("duplicate timestamp {} in the batch", bar.ts))
                });
            match problem {
                None => out.valid.push(bar),
                Some(reason) => out.rejected.push(Rejection { bar, reason }),
            }
        }
        out
    }
}

fn check_values(b: &Bar) -> Option<String> {
    let named = [
        ("open", Some(b.open)),
        ("high", Some(b.high)),
        ("low", Some(b.low)),
        ("close", Some(b.close)),
        ("volume", Some(b.volume)),
        ("adj_close", b.adj_close),
        ("turnover", b.turnover),
        ("open_interest", b.open_interest),
    ];
    for (name, v) in named {
        if let Some(v) = v
            && !v.is_finite()
        {
            return Some(format!("{name} is {v}, not a finite number"));
        }
    }
    for (name, v) in [
        ("open", Some(b.open)),
        ("high", Some(b.high)),
        ("low", Some(b.low)),
        ("close", Some(b.close)),
        ("adj_close", b.adj_close),
    ] {
        if let Some(v) = v
            && v <= 0.0
        {
            return Some(format!("{name} is {v}; prices must be positive"));
        }
    }
    for (name, v) in [
        ("volume", Some(b.volume)),
        ("turnover", b.turnover),
        ("open_interest", b.open_interest),
    ] {
        if let Some(v) = v
            && v < 0.0
        {
            return Some(format!("{name} is {v}; it must not be negative"));
        }
    }
    if b.low > b.open.min(b.close) {
        return Some(format!(
            "low {} is above min(open {}, close {})",
            b.low, b.open, b.close
        ));
    }
    if b.high < b.open.max(b.close) {
        return Some(format!(
            "high {} is below max(open {}, close {})",
            b.high, b.open, b.close
        ));
    }
    None
}

fn check_time(interval: Interval, b: &Bar, horizon: Timestamp) -> Option<String> {
    if !interval.is_bar_start(b.ts) {
        return Some(format!(
            "timestamp {} is not the start of a {interval} bar",
            b.ts
        ));
    }
    if b.ts > horizon {
        return Some(format!(
            "timestamp {} is in the future (more than one {interval} bar after now)",
            b.ts
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: Timestamp = Timestamp(1_700_000_000);

    fn good(day: i64) -> Bar {
        Bar::ohlcv(Timestamp(day * DAY), 10.0, 12.0, 9.0, 11.0, 500.0)
    }

    fn reason_for(bar: Bar) -> String {
        let v = Validator.validate(Interval::D1, vec![bar], NOW);
        assert!(v.valid.is_empty(), "{bar:?} should be rejected");
        v.rejected[0].reason.clone()
    }

    #[test]
    fn valid_bars_pass() {
        let bars: Vec<Bar> = (0..10).map(good).collect();
        let v = Validator.validate(Interval::D1, bars.clone(), NOW);
        assert_eq!(v.valid, bars);
        assert!(v.rejected.is_empty());
    }

    #[test]
    fn each_rule_rejects_with_a_reason() {
        let b = good(1);
        assert!(
            reason_for(Bar {
                open: f64::NAN,
                ..b
            })
            .contains("open is NaN")
        );
        assert!(
            reason_for(Bar {
                high: f64::INFINITY,
                ..b
            })
            .contains("high is inf")
        );
        assert!(
            reason_for(Bar { close: 0.0, ..b }).contains("close is 0; prices must be positive")
        );
        assert!(reason_for(Bar { low: -1.0, ..b }).contains("low is -1"));
        assert!(reason_for(Bar { volume: -5.0, ..b }).contains("volume is -5"));
        assert!(reason_for(Bar { low: 10.5, ..b }).contains("low 10.5 is above"));
        assert!(reason_for(Bar { high: 10.5, ..b }).contains("high 10.5 is below"));
        assert!(
            reason_for(Bar {
                ts: Timestamp(DAY + 3600),
                ..b
            })
            .contains("not the start of a 1d bar")
        );
        assert!(
            reason_for(Bar {
                ts: Timestamp(NOW.0 - NOW.0 % DAY + 2 * DAY),
                ..b
            })
            .contains("future")
        );
        assert!(
            reason_for(Bar {
                open_interest: Some(-1.0),
                ..b
            })
            .contains("open_interest")
        );
    }

    #[test]
    fn duplicates_after_the_first_are_rejected_and_the_rest_goes_on() {
        let bars = vec![
            good(1),
            good(2),
            Bar {
                close: 11.5,
                ..good(1)
            },
            good(3),
        ];
        let v = Validator.validate(Interval::D1, bars, NOW);
        assert_eq!(v.valid.len(), 3);
        assert_eq!(v.rejected.len(), 1);
        assert!(v.rejected[0].reason.contains("duplicate timestamp"));
        assert_eq!(v.rejected[0].bar.close, 11.5);
    }

    #[test]
    fn todays_bar_is_not_future() {
        let today = Timestamp(NOW.0 - NOW.0 % DAY);
        let v = Validator.validate(
            Interval::D1,
            vec![Bar {
                ts: today,
                ..good(0)
            }],
            NOW,
        );
        assert_eq!(v.valid.len(), 1);
    }
}
