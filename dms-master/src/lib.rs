//! # dms-master
//!
//! The master daemon: it takes bars from sources, validates them, makes them durable in the
//! journal and applies the journal to the primary store.
//!
//! # Layout
//!
//! Folders are the architecture; each may import only the folders listed after it (its
//! `//! # Layout` names the exceptions):
//!
//! - [`server`]: wiring all of it into a running master with one shutdown; [`reload`]:
//!   re-reading the config on SIGHUP (TLS certificates, schedules, alerts).
//! - [`config`]: [`config::MasterConfig`], the YAML config and its validation: each section's
//!   type lives in the folder it configures, this module puts them together (so it stands
//!   above them, and only `server`, `reload` and `main` read the whole).
//! - [`api`]: REST, admin gRPC and the views and state they share.
//! - [`ops`]: the scheduler and the watcher of alert conditions.
//! - [`replication`]: the `dms.v1.Replication` gRPC service, replica sessions and the node
//!   registry with its sync history.
//! - [`tasks`]: the task runner and queue, and a module per task kind.
//! - [`data`]: imports, exports, backups, migrations and consistency checks.
//! - [`pipeline`]: the stages a bar passes: catalog, reconcile, validate, quarantine, ingest
//!   into the journal, the applier into the store.
//! - [`universe`]: every kept series with its source and exchange calendar; gap detection.
//! - [`sources`]: data sources behind the [`sources::Source`] trait (Yahoo, CSV), SQL tables,
//!   the rows of other systems, and the per-provider rate limiter.
//! - [`alerts`]: [`alerts::Alerts`], webhook alerts every layer raises (a sink, like metrics).
//! - [`metrics`]: the Prometheus figures every layer records into.
//! - [`auth`]: bearer tokens (from `dms-common`).

pub mod alerts;
pub mod api;
pub use dms_common::auth;
pub mod config;
pub mod data;
pub mod metrics;
pub mod ops;
pub mod pipeline;
pub mod reload;
pub mod replication;
pub mod server;
pub mod sources;
pub mod tasks;
pub mod universe;
