//! # dms-replica
//!
//! The replica daemon: it keeps a full copy of a master's bars in its own store, follows the
//! master's journal over gRPC, repairs by comparing digests and pulling only what differs, and
//! serves the same read API as the master.
//!
//! # Layout
//!
//! - [`config`]: [`config::ReplicaConfig`], the YAML config and its validation.
//! - [`state`]: [`state::ReplicaState`], the cursor, history id and repair history.
//! - [`client`]: the gRPC connection to the master with its token and compression.
//! - [`sync`]: [`sync::Replicator`], the subscribe/apply/ack loop with reconnects and
//!   anti-entropy, and [`sync::StatusCell`], the link status it keeps.
//! - [`repair`]: digest comparison and range pulls.
//! - [`http`]: health, status, pulls on demand and the read API.
//! - [`metrics`]: the Prometheus figures on `/metrics`.
//! - [`server`]: wiring it together with one shutdown.

pub mod client;
pub mod config;
pub mod http;
pub mod metrics;
pub mod repair;
pub mod server;
pub mod state;
pub mod sync;
