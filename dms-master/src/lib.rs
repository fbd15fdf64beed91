//! # dms-master
//!
//! The master daemon: it takes bars from sources, validates them, makes them durable in the
//! journal and applies the journal to the primary store.
//!
//! # Layout
//!
//! - [`config`]: [`config::MasterConfig`], the YAML config and its validation.
//! - [`source`]: data sources ([`source::csv::CsvSource`]).
//! - [`validate`]: [`validate::Validator`], the quality rules.
//! - [`quarantine`]: [`quarantine::Quarantine`], rejected bars with their reasons.
//! - [`ingest`]: [`ingest::Ingestor`], validate then journal.
//! - [`applier`]: the store applier that follows the journal into the bar store.
//! - [`import`]: importing a whole source once.
//! - [`http`]: health, readiness and the REST API.
//! - [`server`]: wiring all of it into a running master with one shutdown.

pub mod applier;
pub mod config;
pub mod http;
pub mod import;
pub mod ingest;
pub mod quarantine;
pub mod server;
pub mod source;
pub mod validate;
