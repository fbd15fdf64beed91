//! The stages a bar passes on its way into the store, in order.
//!
//! # Layout
//!
//! - [`catalog`]: what the master knows of each series (last fetch, corporate actions); read
//!   before a fetch, written once per series after it.
//! - [`reconcile`]: [`reconcile::Reconciler`], only new or changed bars go on.
//! - [`validate`]: [`validate::Validator`], the quality rules.
//! - [`quarantine`]: [`quarantine::Quarantine`], rejected bars with their reasons.
//! - [`ingest`]: [`ingest::Ingestor`], validate, quarantine the rejects, journal the rest.
//! - [`applier`]: follows the journal into the bar store.
//! - [`dead_letters`]: [`dead_letters::DeadLetters`], entries the store refused for good.
//! - [`delete`]: deleting a series or a range through the journal, with a dry run.
//! - [`update`]: one series brought up to date from its source, the stages above in order:
//!   fetch → corporate actions → reconcile → validate and journal → catalog.
//! - [`durable`]: state writes tried again until they succeed, the task shown paused.
//!
//! May import `universe`, `sources` (their bar and corporate-action types) and the crate
//! root's `metrics`; nothing above it.

pub mod applier;
pub mod catalog;
pub mod dead_letters;
pub mod delete;
pub mod durable;
pub mod ingest;
pub mod quarantine;
pub mod reconcile;
pub mod update;
pub mod validate;
