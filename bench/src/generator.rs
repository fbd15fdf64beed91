//! `BarGenerator`: deterministic daily bars for benchmark symbols, one series at a time, so a
//! scenario never holds the whole data set in memory.

use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, Timestamp};

const DAY: i64 = 86_400;

/// Generates `bars` weekday bars per symbol, ending on the last weekday before 2025-01-01.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BarGenerator {
    pub(crate) bars: usize,
}

impl BarGenerator {
    /// The series key of symbol number `i`.
    pub(crate) fn key(i: usize) -> SeriesKey {
        SeriesKey::new(
            Symbol::new(&format!("SYM{i:05}")).expect("generated symbols are valid"),
            Interval::D1,
        )
    }

    /// The weekday timestamps shared by every series, oldest first.
    pub(crate) fn dates(&self) -> Vec<Timestamp> {
        // 2025-01-01 (a Wednesday), walking back over weekdays.
        let mut t = 1_735_689_600 - DAY;
        let mut out = Vec::with_capacity(self.bars);
        while out.len() < self.bars {
            // 1970-01-01 was a Thursday: day index 0 = Thu ... 2 = Sat, 3 = Sun.
            let weekday = (t / DAY).rem_euclid(7);
            if weekday != 2 && weekday != 3 {
                out.push(Timestamp(t));
            }
            t -= DAY;
        }
        out.reverse();
        out
    }

    /// The bars of symbol `i` (a seeded random walk).
    pub(crate) fn series(&self, i: usize, dates: &[Timestamp]) -> SeriesBars {
        let mut rng =
            XorShift(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut price = 20.0 + (rng.next() % 50_000) as f64 / 100.0;
        let bars = dates
            .iter()
            .map(|&ts| {
                let open = price;
                let change = (rng.unit() - 0.5) * 0.04;
                let close = (open * (1.0 + change)).max(0.01);
                let high = open.max(close) * (1.0 + rng.unit() * 0.01);
                let low = open.min(close) * (1.0 - rng.unit() * 0.01);
                price = close;
                Bar::ohlcv(
                    ts,
                    round2(open),
                    round2(high).max(round2(open)).max(round2(close)),
                    round2(low).min(round2(open)).min(round2(close)),
                    round2(close),
                    (rng.next() % 10_000_000) as f64,
                )
            })
            .collect();
        SeriesBars::new(Self::key(i), bars)
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[derive(Debug)]
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
