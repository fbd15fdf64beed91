//! The commands' handlers, one module per group: each makes its calls through the
//! [`crate::client::Client`] and prints with [`crate::output`].
//!
//! # Layout
//!
//! - [`task`]: tasks (start, list, show, cancel, follow) and how a task is printed.
//! - [`data`]: the data views' printers (status, series, gaps, bars, journal).
//! - [`sources`], [`nodes`], [`schedules`]: the commands of those names.
//!
//! May import `cli`, `client`, `output` and `follow`; never `main`.

pub(crate) mod data;
pub(crate) mod nodes;
pub(crate) mod schedules;
pub(crate) mod sources;
pub(crate) mod task;

pub(crate) use data::*;
pub(crate) use nodes::*;
pub(crate) use schedules::*;
pub(crate) use sources::*;
pub(crate) use task::*;

use crate::client::{CliError, Client};

/// Awaits a call; a refusal becomes one line.
pub(crate) async fn call<T>(
    c: &Client,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    f.await
        .map(tonic::Response::into_inner)
        .map_err(|s| c.error(&s))
}
