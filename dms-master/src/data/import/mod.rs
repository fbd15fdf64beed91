//! The three ways bars come in whole, each through the pipeline (reconcile, validate, journal)
//! like a fetch, so an import run twice journals nothing the second time.
//!
//! # Layout
//!
//! - [`source`]: every file of a configured CSV source, once, read through
//!   [`source::SeriesFiles`].
//! - [`table`]: a SQL table source, page by page, resumable by its key, read through
//!   [`table::TablePages`].
//! - [`file`](mod@file): one CSV, JSON, xlsx or Parquet file, uploaded or inside an allowed directory,
//!   with a dry run.

pub mod file;
pub mod source;
pub mod table;
