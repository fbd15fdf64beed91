//! # dms-common
//!
//! What the DMS daemons share: the domain model, the bar stores, the durable journal, config
//! loading and log setup.
//!
//! # Layout
//!
//! - [`symbol`]: [`Symbol`], a validated provider ticker.
//! - [`interval`]: [`Interval`], bar sizes and alignment of times to bar starts.
//! - [`time`]: [`Timestamp`] (Unix seconds, UTC) and the half-open [`TimeRange`].
//! - [`bar`]: [`Bar`], [`SeriesKey`], [`SeriesBars`].
//! - [`pb`]: the `dms.v1` protobuf messages and their conversions to domain types.
//! - [`store`]: the [`store::BarStore`] trait, its backends (SQLite, PostgreSQL, MySQL,
//!   InfluxDB) and digests; every backend passes the conformance suite of the
//!   `dms-store-conformance` crate.
//! - [`journal`]: the durable change log with cursors and retention.
//! - [`state`]: [`state::StateTables`], a connection to a group of tables in the local state file.
//! - [`auth`]: bearer tokens (full and read-only) and what each request needs.
//! - [`http_rules`]: the rules every request to either daemon passes (gRPC only over HTTP/2,
//!   Host and Origin, tokens, JSON-only writes) and the bounded error envelope.
//! - [`read_api`]: parsing and answering the bar reads both daemons serve over HTTP.
//! - [`config`]: YAML + environment config loading with errors that name the key.
//! - [`telemetry`]: log setup.
//! - [`prometheus`]: the process's metrics recorder and the `/metrics` text.
//! - [`daemon`]: runtime, listener and signal handling around a daemon's server, its
//!   connection limits, and the request-framing guard.
//! - [`tls`]: rustls (aws-lc-rs) server config from PEM files, reloadable on SIGHUP.
//! - [`systemd`]: `sd_notify` readiness, status and watchdog pings.

pub mod auth;
pub mod bar;
pub mod config;
pub mod daemon;
pub mod http_rules;
pub mod interval;
pub mod journal;
pub mod pb;
pub mod prometheus;
pub mod read_api;
pub mod state;
pub mod store;
pub mod symbol;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use bar::{Bar, SeriesBars, SeriesKey};
pub use interval::Interval;
pub use symbol::Symbol;
pub use time::{TimeRange, Timestamp};
