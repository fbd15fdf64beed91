//! The configured sources, each built once and found by name.
//!
//! - [`Sources`]: the sources bars are fetched from, as `Arc<dyn Source>` (Yahoo, CSV), with
//!   the CSV sources also as the directories a source import reads whole. Built from the config
//!   before the runtime starts (`check-config` builds them too: a CSV directory that cannot be
//!   listed is a config error).
//! - [`SqlTables`]: the SQL-table sources, imported whole. Each holds a connection pool, which
//!   needs the runtime, so they are opened when the master starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Source;
use super::config::SourceConfig;
use super::csv::CsvSource;
use super::limiter::RateStatus;
use super::sql::SqlTable;
use super::yahoo::YahooSource;

/// Why a source cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("source {name}: {message}")]
pub struct SourceSetupError {
    /// The source's configured name.
    pub name: String,
    pub message: String,
}

impl SourceSetupError {
    fn new(name: &str, message: impl std::fmt::Display) -> SourceSetupError {
        SourceSetupError {
            name: name.to_owned(),
            message: message.to_string(),
        }
    }
}

/// The sources bars are fetched from, by name.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    fetchers: BTreeMap<String, Arc<dyn Source>>,
    csv: BTreeMap<String, Arc<CsvSource>>,
    /// Where symbols no watchlist lists are fetched from: the first Yahoo source, if any.
    default_fetcher: Option<String>,
}

impl Sources {
    /// Builds every CSV and Yahoo source of `configs` (SQL tables are [`SqlTables`]).
    pub fn build(configs: &[SourceConfig]) -> Result<Sources, SourceSetupError> {
        let mut sources = Sources::default();
        for config in configs {
            match config {
                SourceConfig::Csv(c) => {
                    let csv = Arc::new(CsvSource::new(c.clone()));
                    sources.fetchers.insert(c.name.clone(), csv.clone());
                    sources.csv.insert(c.name.clone(), csv);
                }
                SourceConfig::Yahoo(y) => {
                    let yahoo = YahooSource::new(y.clone())
                        .map_err(|e| SourceSetupError::new(&y.name, e))?;
                    sources.fetchers.insert(y.name.clone(), Arc::new(yahoo));
                    if sources.default_fetcher.is_none() {
                        sources.default_fetcher = Some(y.name.clone());
                    }
                }
                SourceConfig::Sql(_) => {}
            }
        }
        Ok(sources)
    }

    /// The source named `name` that bars are fetched from.
    pub fn fetcher(&self, name: &str) -> Option<&Arc<dyn Source>> {
        self.fetchers.get(name)
    }

    /// Where symbols no watchlist lists are fetched from.
    pub fn default_fetcher(&self) -> Option<&str> {
        self.default_fetcher.as_deref()
    }

    /// The CSV source named `name`.
    pub fn csv(&self, name: &str) -> Option<&Arc<CsvSource>> {
        self.csv.get(name)
    }

    /// Every CSV source, by name.
    pub fn csv_sources(&self) -> impl Iterator<Item = &Arc<CsvSource>> {
        self.csv.values()
    }

    /// The request rate of every rate-limited source, by source name in name order.
    pub fn request_rates(&self) -> Vec<(String, RateStatus)> {
        self.fetchers
            .iter()
            .filter_map(|(name, s)| s.request_rate().map(|r| (name.clone(), r)))
            .collect()
    }
}

/// The SQL-table sources, imported whole, by name.
#[derive(Debug, Clone, Default)]
pub struct SqlTables {
    tables: BTreeMap<String, Arc<SqlTable>>,
}

impl SqlTables {
    /// Opens (lazily: nothing connects yet) every SQL-table source of `configs`. Needs the
    /// runtime.
    pub fn open(configs: &[SourceConfig]) -> Result<SqlTables, SourceSetupError> {
        let mut tables = BTreeMap::new();
        for config in configs {
            if let SourceConfig::Sql(c) = config {
                let table =
                    SqlTable::new((**c).clone()).map_err(|e| SourceSetupError::new(&c.name, e))?;
                tables.insert(c.name.clone(), Arc::new(table));
            }
        }
        Ok(SqlTables { tables })
    }

    /// The SQL-table source named `name`.
    pub fn get(&self, name: &str) -> Option<&SqlTable> {
        self.tables.get(name).map(|t| &**t)
    }
}
