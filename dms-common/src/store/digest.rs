//! Bucket digests: a count and a hash of the canonical encoding of the bars in each time bucket,
//! used to compare two stores without moving their bars.
//!
//! The canonical encoding of a bar is fixed: `ts` as i64 little-endian, then open, high, low,
//! close, volume as f64 bits little-endian, then for adj_close, turnover and open_interest a
//! presence byte (0 or 1) followed by the value's bits when present. `-0.0` is encoded as `0.0`.
//! The bucket hash is XXH3-128 over the bars' encodings in ts order, so equal data gives equal
//! digests on every backend and any changed value changes the digest.

use xxhash_rust::xxh3::Xxh3;

use crate::bar::Bar;
use crate::time::Timestamp;

/// How a range is cut into buckets: fixed widths aligned to the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestBucketing {
    /// Bucket width in seconds; must be positive.
    pub width_secs: i64,
}

impl DigestBucketing {
    /// Buckets of `width_secs` seconds (at least one second).
    pub fn new(width_secs: i64) -> Self {
        DigestBucketing {
            width_secs: width_secs.max(1),
        }
    }

    /// Start of the bucket holding `ts`.
    pub fn bucket_of(&self, ts: Timestamp) -> Timestamp {
        Timestamp(ts.0.div_euclid(self.width_secs) * self.width_secs)
    }
}

/// Count and hash of the bars of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BucketDigest {
    /// Start of the bucket.
    pub start: Timestamp,
    pub count: u64,
    pub hash: u128,
}

/// Appends the canonical encoding of `bar` to `out`.
pub fn encode_canonical(bar: &Bar, out: &mut Vec<u8>) {
    fn f(v: f64) -> [u8; 8] {
        // -0.0 == 0.0, so the canonical form maps both to the bits of 0.0.
        let v = if v == 0.0 { 0.0 } else { v };
        v.to_bits().to_le_bytes()
    }
    out.extend_from_slice(&bar.ts.0.to_le_bytes());
    for v in [bar.open, bar.high, bar.low, bar.close, bar.volume] {
        out.extend_from_slice(&f(v));
    }
    for v in [bar.adj_close, bar.turnover, bar.open_interest] {
        match v {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&f(v));
            }
            None => out.push(0),
        }
    }
}

/// Builds digests from bars pushed in ts order.
pub struct DigestBuilder {
    bucketing: DigestBucketing,
    current: Option<(Timestamp, u64, Xxh3)>,
    done: Vec<BucketDigest>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for DigestBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestBuilder")
            .field("bucketing", &self.bucketing)
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

impl DigestBuilder {
    pub fn new(bucketing: DigestBucketing) -> Self {
        DigestBuilder {
            bucketing,
            current: None,
            done: Vec::new(),
            scratch: Vec::with_capacity(96),
        }
    }

    /// Adds the next bar (bars must come in ts order).
    pub fn push(&mut self, bar: &Bar) {
        let bucket = self.bucketing.bucket_of(bar.ts);
        if self.current.as_ref().is_some_and(|(b, _, _)| *b != bucket) {
            self.flush();
        }
        let (_, count, hasher) = self.current.get_or_insert_with(|| (bucket, 0, Xxh3::new()));
        self.scratch.clear();
        encode_canonical(bar, &mut self.scratch);
        hasher.update(&self.scratch);
        *count += 1;
    }

    fn flush(&mut self) {
        if let Some((start, count, hasher)) = self.current.take() {
            self.done.push(BucketDigest {
                start,
                count,
                hash: hasher.digest128(),
            });
        }
    }

    /// The digests of all buckets that received bars, in order.
    pub fn finish(mut self) -> Vec<BucketDigest> {
        self.flush();
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> Vec<Bar> {
        (0..10)
            .map(|i| Bar::ohlcv(Timestamp(i * 100), 1.0, 2.0, 0.5, 1.5, i as f64))
            .collect()
    }

    fn digests(bars: &[Bar]) -> Vec<BucketDigest> {
        let mut b = DigestBuilder::new(DigestBucketing::new(300));
        bars.iter().for_each(|x| b.push(x));
        b.finish()
    }

    #[test]
    fn buckets_split_on_width() {
        let d = digests(&bars());
        assert_eq!(d.iter().map(|d| d.count).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(d[1].start, Timestamp(300));
    }

    #[test]
    fn any_changed_value_changes_the_hash() {
        let base = digests(&bars());
        let mut changed = bars();
        changed[4].volume += 1.0;
        let d = digests(&changed);
        assert_ne!(d[1].hash, base[1].hash);
        assert_eq!(d[0], base[0]);
        let mut with_adj = bars();
        with_adj[0].adj_close = Some(1.5);
        assert_ne!(digests(&with_adj)[0].hash, base[0].hash);
        let mut neg_zero = bars();
        neg_zero[0].volume = -0.0;
        assert_eq!(digests(&neg_zero)[0], base[0]);
    }
}
