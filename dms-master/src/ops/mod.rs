//! What the master does by itself, beside the requests it answers.
//!
//! # Layout
//!
//! - [`schedule`]: [`schedule::Scheduler`], cron jobs (updates, imports, backfills,
//!   validations, replica verifies) with catch-up, pause, resume and trigger.
//! - [`watcher`]: every `alerts.check_interval`, the state conditions (replica lag, store
//!   errors) checked and their alerts raised or resolved.
//!
//! May import every folder below `api`; nothing below imports `ops`.

pub mod schedule;
pub mod watcher;
