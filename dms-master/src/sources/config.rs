//! [`SourceConfig`]: one entry of the `sources:` section, tagged by `type` (`csv`, `yahoo`,
//! `sql`); the CSV source's settings ([`CsvSourceConfig`]) live here, the others beside their
//! source.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dms_common::config;
use dms_common::{Interval, Symbol};
use serde::{Deserialize, Serialize};

use super::sql::SqlSourceConfig;
use super::yahoo::YahooSourceConfig;

/// A data source, chosen by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A directory of CSV files, one series per file.
    Csv(CsvSourceConfig),
    /// Yahoo Finance's chart API.
    Yahoo(YahooSourceConfig),
    /// A table (or query) of a PostgreSQL or MySQL database, imported whole.
    Sql(Box<SqlSourceConfig>),
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        config::deserialize_tagged(
            value,
            "type",
            None,
            &["csv", "yahoo", "sql"],
            |kind, rest| match kind {
                "csv" => config::from_value_at(rest).map(SourceConfig::Csv),
                "sql" => config::from_value_at(rest).map(|c| SourceConfig::Sql(Box::new(c))),
                _ => config::from_value_at(rest).map(SourceConfig::Yahoo),
            },
        )
    }
}

impl SourceConfig {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Csv(c) => &c.name,
            SourceConfig::Yahoo(c) => &c.name,
            SourceConfig::Sql(c) => &c.name,
        }
    }
}

/// A directory of OHLCV CSV files.
///
/// Each `*.csv` file holds one series. The first row names the columns: the time column is the
/// first unnamed column or one named date/datetime/time/timestamp; price columns are matched by
/// name (`Open`, `open`, `open_price`, `o`, ...). Dates (`2024-01-31`, `2024/01/31`, `20240131`)
/// and date-times (`2024-01-31 09:30:00`, RFC 3339, Unix seconds or milliseconds) are detected
/// row by row; times without an offset are UTC. Daily and longer bars map to the start of their
/// period (a monthly bar dated 2024-01-31 is January's bar).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSourceConfig {
    /// Name of the source, recorded as the origin of its bars.
    pub name: String,
    /// Directory holding the files.
    pub dir: PathBuf,
    /// Import every file once when the master starts.
    #[serde(default = "default_true")]
    pub import_on_start: bool,
    /// Interval of files that have no entry in `files`; guessed from the spacing of the
    /// timestamps when absent.
    #[serde(default)]
    pub interval: Option<Interval>,
    /// Per-file settings, by file name: the symbol (default: the file name without `.csv`) and
    /// the interval.
    #[serde(default)]
    pub files: BTreeMap<String, CsvFileConfig>,
}

fn default_true() -> bool {
    true
}

/// Settings of one CSV file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CsvFileConfig {
    /// The symbol the file's bars belong to.
    #[serde(default)]
    pub symbol: Option<Symbol>,
    /// The file's bar interval.
    #[serde(default)]
    pub interval: Option<Interval>,
}
