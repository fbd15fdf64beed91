//! Bucket digests: a count and a hash of the bars in each time bucket of a series, used to
//! compare two stores (a master and a replica, two backends) without moving their bars.
//!
//! # Format (version 1)
//!
//! The canonical encoding of a bar is fixed: the version byte [`DIGEST_VERSION`], `ts` as i64
//! little-endian, then open, high, low, close, volume as f64 bits little-endian, then for
//! adj_close, turnover and open_interest a presence byte (0 or 1) followed by the value's bits
//! when present. `-0.0` is encoded as `0.0`. A bar's hash is XXH3-128 of its encoding.
//!
//! A [`Digest`] of a set of bars is its count and the wrapping sum (mod 2^128) of the bars'
//! hashes. The sum does not depend on order, and a bar can be taken out as easily as put in,
//! so a store keeps the digest of every bucket current as it writes ([`Digest::add`] for a new
//! bar, [`Digest::remove`] then `add` for a replaced one) and a full verify reads a few rows per
//! series instead of re-hashing every bar. The digest of a series is the sum of its buckets.
//!
//! # Buckets
//!
//! Each interval has one fixed bucket width ([`DigestBucketing::for_interval`]), aligned to the
//! Unix epoch: about a day of 1-minute bars, a quarter of daily bars. A bucket that differs is
//! repaired whole, so the width bounds what one changed bar costs to repair.

use xxhash_rust::xxh3::xxh3_128;

use crate::bar::Bar;
use crate::interval::Interval;
use crate::time::{TimeRange, Timestamp};

/// The version of the canonical encoding, its first byte. Two peers compare digests only when
/// they speak the same version.
pub const DIGEST_VERSION: u8 = 1;

/// How a series is cut into buckets: fixed widths aligned to the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestBucketing {
    /// Bucket width in seconds; positive.
    pub width_secs: i64,
}

impl DigestBucketing {
    /// Buckets of `width_secs` seconds (at least one second).
    pub fn new(width_secs: i64) -> Self {
        DigestBucketing {
            width_secs: width_secs.max(1),
        }
    }

    /// The bucketing every store uses for series of `interval`: wide enough that a series has
    /// tens to hundreds of buckets, narrow enough that repairing one is cheap.
    pub fn for_interval(interval: Interval) -> Self {
        const DAY: i64 = 86_400;
        DigestBucketing::new(match interval {
            Interval::M1 => DAY,
            Interval::M5 | Interval::M15 | Interval::M30 => 7 * DAY,
            Interval::H1 => 28 * DAY,
            Interval::D1 => 91 * DAY,
            Interval::W1 => 728 * DAY,
            Interval::Mo1 => 3_640 * DAY,
        })
    }

    /// Start of the bucket holding `ts` (the earliest time for the first partial bucket near
    /// `i64::MIN`, as in [`TimeRange::all`]).
    pub fn bucket_of(&self, ts: Timestamp) -> Timestamp {
        Timestamp(
            ts.0.div_euclid(self.width_secs)
                .checked_mul(self.width_secs)
                .unwrap_or(i64::MIN),
        )
    }

    /// The time range of the bucket starting at `start`.
    pub fn range_of(&self, start: Timestamp) -> TimeRange {
        TimeRange::new(start, Timestamp(start.0.saturating_add(self.width_secs)))
    }

    /// `range` widened to whole buckets.
    pub fn widen(&self, range: TimeRange) -> TimeRange {
        if range.is_empty() {
            return range;
        }
        let start = self.bucket_of(range.start);
        let last = self.bucket_of(Timestamp(range.end.0 - 1));
        TimeRange::new(start, Timestamp(last.0.saturating_add(self.width_secs)))
    }
}

/// The count and the order-independent hash of a set of bars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    pub count: u64,
    pub hash: u128,
}

impl Digest {
    /// Puts a bar in.
    pub fn add(&mut self, bar: &Bar) {
        self.add_hash(bar_hash(bar));
    }

    /// Takes a bar out (one that was put in).
    pub fn remove(&mut self, bar: &Bar) {
        self.count = self.count.wrapping_sub(1);
        self.hash = self.hash.wrapping_sub(bar_hash(bar));
    }

    /// Puts in a bar by its hash.
    pub fn add_hash(&mut self, hash: u128) {
        self.count = self.count.wrapping_add(1);
        self.hash = self.hash.wrapping_add(hash);
    }

    /// Adds a whole other set.
    pub fn merge(&mut self, other: Digest) {
        self.count = self.count.wrapping_add(other.count);
        self.hash = self.hash.wrapping_add(other.hash);
    }

    /// Applies a change (`other` as a signed delta: what was added minus what was removed).
    pub fn apply(&mut self, delta: DigestDelta) {
        self.count = (self.count as i64).wrapping_add(delta.count) as u64;
        self.hash = self.hash.wrapping_add(delta.hash);
    }

    /// The hash split into two i64 halves (low, high), for stores without 128-bit integers.
    pub fn hash_halves(&self) -> (i64, i64) {
        (self.hash as u64 as i64, (self.hash >> 64) as u64 as i64)
    }

    /// A digest from its count and hash halves (see [`Digest::hash_halves`]).
    pub fn from_halves(count: u64, lo: i64, hi: i64) -> Digest {
        Digest {
            count,
            hash: (u128::from(hi as u64) << 64) | u128::from(lo as u64),
        }
    }

    /// The hash as 32 hex digits, for JSON and logs.
    pub fn hash_hex(&self) -> String {
        format!("{:032x}", self.hash)
    }
}

/// A change to a [`Digest`]: bars added minus bars removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestDelta {
    pub count: i64,
    pub hash: u128,
}

impl DigestDelta {
    /// A bar was added.
    pub fn add(&mut self, bar: &Bar) {
        self.count += 1;
        self.hash = self.hash.wrapping_add(bar_hash(bar));
    }

    /// A bar was removed.
    pub fn remove(&mut self, bar: &Bar) {
        self.count -= 1;
        self.hash = self.hash.wrapping_sub(bar_hash(bar));
    }

    /// Adds another delta.
    pub fn merge(&mut self, other: DigestDelta) {
        self.count += other.count;
        self.hash = self.hash.wrapping_add(other.hash);
    }

    /// Whether applying it changes nothing.
    pub fn is_zero(&self) -> bool {
        self.count == 0 && self.hash == 0
    }
}

/// Count and hash of the bars of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketDigest {
    /// Start of the bucket.
    pub start: Timestamp,
    pub digest: Digest,
}

/// Appends the canonical encoding of `bar` (see the module documentation) to `out`.
pub fn encode_canonical(bar: &Bar, out: &mut Vec<u8>) {
    fn f(v: f64) -> [u8; 8] {
        // -0.0 == 0.0, so the canonical form maps both to the bits of 0.0.
        let v = if v == 0.0 { 0.0 } else { v };
        v.to_bits().to_le_bytes()
    }
    out.push(DIGEST_VERSION);
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

/// The hash of one bar: XXH3-128 of its canonical encoding.
pub fn bar_hash(bar: &Bar) -> u128 {
    let mut buf = Vec::with_capacity(72);
    encode_canonical(bar, &mut buf);
    xxh3_128(&buf)
}

/// Whether two bars have the same canonical encoding (equal for digests and for storage).
pub fn same_bar(a: &Bar, b: &Bar) -> bool {
    let (mut x, mut y) = (Vec::with_capacity(72), Vec::with_capacity(72));
    encode_canonical(a, &mut x);
    encode_canonical(b, &mut y);
    x == y
}

/// Builds bucket digests from bars in any order.
#[derive(Debug, Clone)]
pub struct DigestBuilder {
    bucketing: DigestBucketing,
    buckets: std::collections::BTreeMap<Timestamp, Digest>,
}

impl DigestBuilder {
    pub fn new(bucketing: DigestBucketing) -> Self {
        DigestBuilder {
            bucketing,
            buckets: Default::default(),
        }
    }

    /// Adds a bar.
    pub fn push(&mut self, bar: &Bar) {
        self.buckets
            .entry(self.bucketing.bucket_of(bar.ts))
            .or_default()
            .add(bar);
    }

    /// The digests of all buckets that received bars, in order.
    pub fn finish(self) -> Vec<BucketDigest> {
        self.buckets
            .into_iter()
            .map(|(start, digest)| BucketDigest { start, digest })
            .collect()
    }
}

/// Pairs two bucket lists by start; a bucket missing on one side has an empty digest there.
pub fn compare_buckets(
    ours: &[BucketDigest],
    theirs: &[BucketDigest],
) -> std::collections::BTreeMap<Timestamp, (Digest, Digest)> {
    let mut all: std::collections::BTreeMap<Timestamp, (Digest, Digest)> = Default::default();
    for b in ours {
        all.entry(b.start).or_default().0 = b.digest;
    }
    for b in theirs {
        all.entry(b.start).or_default().1 = b.digest;
    }
    all
}

/// The starts of the buckets whose digests differ between two lists.
pub fn differing_buckets(ours: &[BucketDigest], theirs: &[BucketDigest]) -> Vec<Timestamp> {
    compare_buckets(ours, theirs)
        .into_iter()
        .filter(|(_, (a, b))| a != b)
        .map(|(start, _)| start)
        .collect()
}

/// The digest of a whole series: the sum of its buckets.
pub fn total(buckets: &[BucketDigest]) -> Digest {
    let mut d = Digest::default();
    buckets.iter().for_each(|b| d.merge(b.digest));
    d
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
        let counts: Vec<u64> = d.iter().map(|d| d.digest.count).collect();
        assert_eq!(counts, [3, 3, 3, 1]);
        assert_eq!(d[1].start, Timestamp(300));
        let b = DigestBucketing::new(300);
        assert_eq!(
            b.widen(TimeRange::new(Timestamp(310), Timestamp(601))),
            TimeRange::new(Timestamp(300), Timestamp(900))
        );
    }

    /// The format is a protocol between peers of different builds: these values must never
    /// change without a new [`DIGEST_VERSION`]. They were computed independently of this code
    /// (Python's `struct` and `xxhash.xxh3_128`) from the encoding in the module doc.
    #[test]
    fn version_1_hashes_are_pinned() {
        let mut bar = Bar::ohlcv(Timestamp(1_700_000_000), 1.5, 2.25, 1.0, 2.0, 1_000.0);
        assert_eq!(
            format!("{:032x}", bar_hash(&bar)),
            "845e65a5f9c69b5460ce95af0700233e"
        );
        bar.adj_close = Some(1.9);
        bar.open_interest = Some(7.0);
        assert_eq!(
            format!("{:032x}", bar_hash(&bar)),
            "fb11b24ff0e399661f0a4ee5450d5838"
        );
        let d = total(&digests(&bars()));
        assert_eq!(
            (d.count, d.hash_hex().as_str()),
            (10, "7da0c193d6eda7d746bc0ed2fa31ecbf")
        );
    }

    #[test]
    fn order_does_not_matter_and_bars_come_out_as_they_went_in() {
        let mut rev = bars();
        rev.reverse();
        assert_eq!(digests(&bars()), digests(&rev));
        let mut d = Digest::default();
        bars().iter().for_each(|b| d.add(b));
        bars()[..4].iter().for_each(|b| d.remove(b));
        let mut rest = Digest::default();
        bars()[4..].iter().for_each(|b| rest.add(b));
        assert_eq!(d, rest);
        let (lo, hi) = d.hash_halves();
        assert_eq!(Digest::from_halves(d.count, lo, hi), d);
    }

    #[test]
    fn any_changed_value_changes_the_hash() {
        let base = digests(&bars());
        let mut changed = bars();
        changed[4].volume += 1.0;
        let d = digests(&changed);
        assert_ne!(d[1].digest.hash, base[1].digest.hash);
        assert_eq!(d[0], base[0]);
        let mut with_adj = bars();
        with_adj[0].adj_close = Some(1.5);
        assert_ne!(digests(&with_adj)[0].digest.hash, base[0].digest.hash);
        let mut neg_zero = bars();
        neg_zero[0].volume = -0.0;
        assert_eq!(digests(&neg_zero)[0], base[0]);
    }
}
