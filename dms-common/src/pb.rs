//! The `dms.v1` protobuf types, and the one place where they convert to and from domain types.
//!
//! Conversions from protobuf are `TryFrom`: a message from the wire or the journal can carry a
//! bad symbol or interval, and that is an error naming the field, never a panic.

use crate::bar as domain;
use crate::interval::Interval;
use crate::symbol::Symbol;
use crate::time::{self, Timestamp};

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/dms.v1.rs"));
}
pub use generated::*;

/// The encoded descriptor set of every `dms.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dms_descriptor.bin"));

impl TaskKind {
    /// The kind's short name: `import`, `update`, `backfill`, `validate` (`unspecified`).
    pub fn label(self) -> String {
        enum_label(self.as_str_name(), "TASK_KIND_")
    }
}

impl TaskStatus {
    /// The status's short name: `pending`, `running`, `completed`, `failed`, `cancelled`.
    pub fn label(self) -> String {
        enum_label(self.as_str_name(), "TASK_STATUS_")
    }
}

fn enum_label(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// Serializes a `TaskKind` field (an `i32` in the message) by its short name.
pub fn serialize_task_kind<S: serde::Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    match TaskKind::try_from(*v) {
        Ok(k) => s.serialize_str(&k.label()),
        Err(_) => s.serialize_i32(*v),
    }
}

/// Serializes a `TaskStatus` field (an `i32` in the message) by its short name.
pub fn serialize_task_status<S: serde::Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
    match TaskStatus::try_from(*v) {
        Ok(k) => s.serialize_str(&k.label()),
        Err(_) => s.serialize_i32(*v),
    }
}

/// A protobuf message that does not make a valid domain value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `symbol`: {0}")]
    Symbol(#[from] crate::symbol::SymbolError),
    #[error("field `interval`: {0}")]
    Interval(#[from] crate::interval::IntervalError),
}

impl From<&domain::SeriesKey> for generated::SeriesKey {
    fn from(k: &domain::SeriesKey) -> Self {
        generated::SeriesKey {
            symbol: k.symbol.as_str().to_owned(),
            interval: k.interval.as_str().to_owned(),
        }
    }
}

impl TryFrom<&generated::SeriesKey> for domain::SeriesKey {
    type Error = ConvertError;
    fn try_from(k: &generated::SeriesKey) -> Result<Self, ConvertError> {
        Ok(domain::SeriesKey {
            symbol: Symbol::new(&k.symbol)?,
            interval: k.interval.parse::<Interval>()?,
        })
    }
}

impl From<&domain::Bar> for generated::Bar {
    fn from(b: &domain::Bar) -> Self {
        generated::Bar {
            ts: b.ts.0,
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
            adj_close: b.adj_close,
            turnover: b.turnover,
            open_interest: b.open_interest,
        }
    }
}

impl From<&generated::Bar> for domain::Bar {
    fn from(b: &generated::Bar) -> Self {
        domain::Bar {
            ts: Timestamp(b.ts),
            open: b.open,
            high: b.high,
            low: b.low,
            close: b.close,
            volume: b.volume,
            adj_close: b.adj_close,
            turnover: b.turnover,
            open_interest: b.open_interest,
        }
    }
}

impl From<time::TimeRange> for generated::TimeRange {
    fn from(r: time::TimeRange) -> Self {
        generated::TimeRange {
            start: r.start.0,
            end: r.end.0,
        }
    }
}

impl From<&generated::TimeRange> for time::TimeRange {
    fn from(r: &generated::TimeRange) -> Self {
        time::TimeRange::new(Timestamp(r.start), Timestamp(r.end))
    }
}

impl From<crate::store::Digest> for generated::Digest {
    fn from(d: crate::store::Digest) -> Self {
        let (lo, hi) = d.hash_halves();
        generated::Digest {
            count: d.count,
            hash_lo: lo as u64,
            hash_hi: hi as u64,
        }
    }
}

impl From<&generated::Digest> for crate::store::Digest {
    fn from(d: &generated::Digest) -> Self {
        crate::store::Digest::from_halves(d.count, d.hash_lo as i64, d.hash_hi as i64)
    }
}

impl From<&crate::store::SeriesOverview> for generated::SeriesSummary {
    fn from(o: &crate::store::SeriesOverview) -> Self {
        generated::SeriesSummary {
            series: Some((&o.key).into()),
            count: o.count,
            first: o.first.0,
            last: o.last.0,
            digest: Some(o.digest.into()),
        }
    }
}

impl TryFrom<&generated::SeriesSummary> for crate::store::SeriesOverview {
    type Error = ConvertError;
    fn try_from(s: &generated::SeriesSummary) -> Result<Self, ConvertError> {
        Ok(crate::store::SeriesOverview {
            key: domain::SeriesKey::try_from(
                s.series.as_ref().ok_or(ConvertError::Missing("series"))?,
            )?,
            count: s.count,
            first: Timestamp(s.first),
            last: Timestamp(s.last),
            digest: s.digest.as_ref().map(Into::into).unwrap_or_default(),
        })
    }
}

impl From<&crate::store::BucketDigest> for generated::BucketDigest {
    fn from(b: &crate::store::BucketDigest) -> Self {
        generated::BucketDigest {
            start: b.start.0,
            digest: Some(b.digest.into()),
        }
    }
}

impl From<&generated::BucketDigest> for crate::store::BucketDigest {
    fn from(b: &generated::BucketDigest) -> Self {
        crate::store::BucketDigest {
            start: Timestamp(b.start),
            digest: b.digest.as_ref().map(Into::into).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_round_trips_through_protobuf() {
        let mut bar = domain::Bar::ohlcv(Timestamp(1_600_000_000), 1.5, 2.0, 1.0, 1.75, 1e6);
        bar.adj_close = Some(1.7);
        bar.open_interest = Some(42.0);
        let pb = generated::Bar::from(&bar);
        assert_eq!(domain::Bar::from(&pb), bar);
    }

    #[test]
    fn bad_series_key_names_the_field() {
        let bad = generated::SeriesKey {
            symbol: "A B".into(),
            interval: "1d".into(),
        };
        let err = domain::SeriesKey::try_from(&bad).unwrap_err().to_string();
        assert!(err.starts_with("field `symbol`"), "{err}");
        let bad = generated::SeriesKey {
            symbol: "AAPL".into(),
            interval: "7d".into(),
        };
        let err = domain::SeriesKey::try_from(&bad).unwrap_err().to_string();
        assert!(err.starts_with("field `interval`"), "{err}");
    }
}
