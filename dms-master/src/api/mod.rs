//! The master's front ends: what operators and programs call.
//!
//! # Layout
//!
//! - [`state`]: [`state::ApiState`], what every front end reads (stores, journal, tasks,
//!   catalog, config sections).
//! - [`views`]: what the REST API and admin gRPC both show (data status, catalog, gaps).
//! - [`http`]: health, readiness and the REST API on the master's HTTP port.
//! - [`admin`]: the admin gRPC service `dms.v1.Admin` that `dmsctl` drives.
//! - [`grpc`]: the gRPC services (replication, admin, health, reflection) as routes beside
//!   the REST API.
//! - [`metrics`]: `GET /metrics`, the Prometheus figures with the gauges read at scrape time.
//!
//! May import every folder below it (`ops`, `replication`, `tasks`, `data`, `pipeline`,
//! `universe`, `sources`); nothing below imports `api`.

pub mod admin;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod state;
pub mod views;
