//! Bars moved in bulk, in and out of the master: imports, exports, backups, migrations and the
//! checks that compare two copies.
//!
//! # Layout
//!
//! - [`import`]: the three ways bars come in whole: a CSV source, a SQL table, an uploaded or
//!   server-side file; each goes through the pipeline like a fetch.
//! - [`export`]: stored bars of selected series as a CSV, JSON, xlsx or Parquet file, streamed.
//! - [`backup`]: a consistent, self-describing copy of the bars and the state, verified and
//!   restored.
//! - [`targets`]: the other stores and replicas migrations and checks may name;
//!   [`replica_store`] reads a replica as such a store; [`migrate`] is the read side of a
//!   migration; [`consistency`] compares two stores bar by bar.
//!
//! May import `pipeline`, `universe` and `sources`; never `tasks`, `api` or `ops`.

pub mod backup;
pub mod consistency;
pub mod export;
pub mod import;
pub mod migrate;
pub mod replica_store;
pub mod targets;
