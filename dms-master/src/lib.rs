//! # dms-master
//!
//! The master daemon: it takes bars from sources, validates them, makes them durable in the
//! journal and applies the journal to the primary store.
//!
//! # Layout
//!
//! - [`admin`]: the admin gRPC service `dms.v1.Admin` that `dmsctl` drives.
//! - [`auth`]: [`auth::Authorizer`], bearer tokens for admin gRPC and mutating REST calls.
//! - [`config`]: [`config::MasterConfig`], the YAML config and its validation.
//! - [`source`]: data sources behind the [`source::Source`] trait (Yahoo, CSV), SQL tables
//!   imported whole ([`source::sql`]), and the
//!   per-provider rate limiter.
//! - [`universe`]: every kept series with its source and exchange calendar.
//! - [`catalog`]: per-series fetch state and corporate actions.
//! - [`gaps`]: missing expected bars.
//! - [`schedule`]: [`schedule::Scheduler`], cron jobs (updates, imports, backfills,
//!   validations, replica verifies) with catch-up, pause, resume and trigger.
//! - [`tasks`]: background tasks (import, update, backfill, validate) with progress,
//!   checkpoints, cancel and resume.
//! - [`validate`]: [`validate::Validator`], the quality rules.
//! - [`calendar`]: [`calendar::Calendar`], the bars an exchange should have, for gap detection.
//! - [`quarantine`]: [`quarantine::Quarantine`], rejected bars with their reasons.
//! - [`reconcile`]: [`reconcile::Reconciler`], only new or changed bars go on to the journal.
//! - [`ingest`]: [`ingest::Ingestor`], validate then journal.
//! - [`applier`]: the store applier that follows the journal into the bar store.
//! - [`dead_letters`]: [`dead_letters::DeadLetters`], entries the store refused for good.
//! - [`delete`]: deleting a series or a range through the journal, with a dry run.
//! - [`import`]: importing a whole CSV source once.
//! - [`consistency`]: comparing two stores bar by bar (the check after a migration).
//! - [`table_import`]: importing a SQL table source page by page, resumable by its key.
//! - [`targets`]: the stores and replicas migrations and checks may name (config only).
//! - [`export`]: stored bars of selected series as a CSV, JSON, xlsx or Parquet file, streamed
//!   (`GET /api/data/export`, admin `Export`).
//! - [`replication`]: the `dms.v1.Replication` gRPC service, replica sessions and the node
//!   registry with its sync history.
//! - [`api_state`]: [`api_state::ApiState`], what the REST API and admin gRPC read.
//! - [`http`]: health, readiness and the REST API.
//! - [`views`]: what the REST API and admin gRPC both show (data status, catalog, gaps).
//! - [`reload`]: re-reading the config on SIGHUP (TLS certificates, schedules, alerts).
//! - [`metrics`]: the Prometheus figures on `/metrics`.
//! - [`alerts`]: [`alerts::Alerts`], webhook alerts with de-duplication, rate limits and
//!   resolution.
//! - [`server`]: wiring all of it into a running master with one shutdown.

pub mod admin;
pub mod alerts;
pub mod api_state;
pub mod applier;
pub mod backup;
pub use dms_common::auth;
pub mod calendar;
pub mod catalog;
pub mod config;
pub mod consistency;
pub mod dead_letters;
pub mod delete;
pub mod export;
pub mod file_import;
pub mod gaps;
pub mod http;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod migrate;
pub mod quarantine;
pub mod reconcile;
pub mod reload;
pub mod replica_store;
pub mod replication;
pub mod rows;
pub mod schedule;
pub mod server;
pub mod source;
pub mod table_import;
pub mod targets;
pub mod tasks;
pub mod universe;
pub mod validate;
pub mod views;
