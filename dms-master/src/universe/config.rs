//! [`WatchlistConfig`]: one entry of the `watchlists:` section, a group of symbols kept up to
//! date from one source.

use std::path::PathBuf;

use dms_common::{Interval, Symbol};
use serde::{Deserialize, Serialize};

/// A group of symbols kept up to date from one source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchlistConfig {
    /// Name of the group.
    pub name: String,
    /// The source (by name) its bars come from.
    pub source: String,
    /// Intervals kept for every symbol.
    #[serde(default = "default_intervals")]
    pub intervals: Vec<Interval>,
    /// Symbols, inline.
    #[serde(default)]
    pub symbols: Vec<Symbol>,
    /// A file with more symbols: one per line, `#` starts a comment.
    #[serde(default)]
    pub symbols_file: Option<PathBuf>,
    /// Exchange calendar for gap detection: `nyse`, `crypto`, `fx`, or `weekdays`
    /// (Mon–Fri with `holidays`). Default: guessed per symbol (`-USD` pairs crypto, `=X` FX,
    /// others NYSE).
    #[serde(default)]
    pub calendar: Option<String>,
    /// Extra non-trading dates for a `weekdays` calendar.
    #[serde(default)]
    pub holidays: Vec<chrono::NaiveDate>,
}

fn default_intervals() -> Vec<Interval> {
    vec![Interval::D1]
}
