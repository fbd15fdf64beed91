//! `Universe`: every series the master keeps, with the source it comes from and the exchange
//! calendar used to find its gaps. Built from the config: each watchlist's symbols × intervals
//! from its source, plus every file of each CSV source.
//!
//! # Layout
//!
//! - this module: [`Universe`], the kept series.
//! - [`calendar`]: [`calendar::Calendar`], the bars an exchange should have.
//! - [`gaps`]: missing expected bars of a series.

pub mod calendar;
pub mod config;
pub mod gaps;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dms_common::{Interval, SeriesKey, Symbol};

use crate::sources::Source;
use crate::sources::config::SourceConfig;
use crate::sources::limiter::RateStatus;
use crate::sources::registry::{SourceSetupError, Sources};
use crate::universe::calendar::Calendar;
use crate::universe::config::WatchlistConfig;

/// Most different symbols one request (a task, an export) may name.
pub const MAX_SYMBOLS: usize = 20_000;

/// Which kept series a request selects: every one by default, narrowed by each field given.
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    /// Only these symbols; one no watchlist lists comes from `source` or the default source.
    pub symbols: Option<&'a [Symbol]>,
    pub interval: Option<Interval>,
    /// Only the series of this source.
    pub source: Option<&'a str>,
    /// Series left out from the start (in (symbol, interval) order), then at most `limit`.
    pub skip: Option<usize>,
    pub limit: Option<usize>,
}

/// One kept series.
#[derive(Debug, Clone)]
pub struct UniverseEntry {
    pub key: SeriesKey,
    pub source: Arc<dyn Source>,
    pub calendar: Calendar,
}

/// Every kept series, by key.
#[derive(Debug, Clone, Default)]
pub struct Universe {
    entries: BTreeMap<SeriesKey, UniverseEntry>,
    /// The sources, each built once; symbols asked for that no watchlist lists are fetched
    /// from the default one.
    sources: Arc<Sources>,
}

/// Why the kept series cannot be listed.
#[derive(Debug, thiserror::Error)]
pub enum UniverseError {
    #[error(transparent)]
    Source(#[from] SourceSetupError),
    /// A CSV source's directory cannot be listed.
    #[error("source {name}: dir: {message}")]
    CsvDir { name: String, message: String },
    /// A watchlist names no configured source.
    #[error("watchlist {watchlist}: no source named {source_name:?}")]
    UnknownSource {
        watchlist: String,
        source_name: String,
    },
    /// A watchlist's symbols file cannot be read.
    #[error("watchlist {watchlist}: {message}")]
    Symbols { watchlist: String, message: String },
}

/// The calendar a symbol most likely trades on: `-USD`/`-USDT` pairs are crypto, `=X` FX,
/// everything else NYSE.
pub fn guess_calendar(symbol: &Symbol) -> Calendar {
    let s = symbol.as_str();
    if s.ends_with("=X") {
        Calendar::Fx
    } else if s.ends_with("-USD") || s.ends_with("-USDT") || s.ends_with("-EUR") {
        Calendar::Always
    } else {
        Calendar::Nyse
    }
}

fn watchlist_calendar(w: &WatchlistConfig, symbol: &Symbol) -> Calendar {
    match w.calendar.as_deref() {
        None => guess_calendar(symbol),
        Some("weekdays") => Calendar::Weekdays {
            timezone: chrono_tz::UTC,
            open: chrono::NaiveTime::from_hms_opt(0, 0, 0).expect("midnight"),
            close: chrono::NaiveTime::from_hms_opt(23, 59, 59).expect("end of day"),
            holidays: w.holidays.iter().copied().collect(),
        },
        Some(name) => Calendar::from_name(name).unwrap_or_else(|| guess_calendar(symbol)),
    }
}

/// Reads a symbols file: one symbol per line, blank lines and `#` comments ignored.
pub fn read_symbols_file(path: &std::path::Path) -> Result<Vec<Symbol>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read symbols file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match Symbol::new(line) {
            Ok(s) => out.push(s),
            Err(e) => return Err(format!("{}:{}: {e}", path.display(), n + 1)),
        }
    }
    Ok(out)
}

impl Universe {
    /// Builds the sources (each once) and the series list from the config's `sources` and
    /// `watchlists`.
    pub fn build(
        sources: &[SourceConfig],
        watchlists: &[WatchlistConfig],
    ) -> Result<Universe, UniverseError> {
        let sources = Arc::new(Sources::build(sources)?);
        let mut u = Universe {
            entries: BTreeMap::new(),
            sources: sources.clone(),
        };
        for csv in sources.csv_sources() {
            let series = csv.series().map_err(|e| UniverseError::CsvDir {
                name: csv.name().to_owned(),
                message: e.to_string(),
            })?;
            let source: Arc<dyn Source> = csv.clone();
            for key in series {
                let calendar = guess_calendar(&key.symbol);
                u.entries.insert(
                    key.clone(),
                    UniverseEntry {
                        key,
                        source: source.clone(),
                        calendar,
                    },
                );
            }
        }
        for w in watchlists {
            let source = sources.fetcher(&w.source).cloned().ok_or_else(|| {
                UniverseError::UnknownSource {
                    watchlist: w.name.clone(),
                    source_name: w.source.clone(),
                }
            })?;
            let mut symbols = w.symbols.clone();
            if let Some(file) = &w.symbols_file {
                symbols.extend(read_symbols_file(file).map_err(|message| {
                    UniverseError::Symbols {
                        watchlist: w.name.clone(),
                        message,
                    }
                })?);
            }
            for symbol in symbols {
                for &interval in &w.intervals {
                    let key = SeriesKey::new(symbol.clone(), interval);
                    u.entries.insert(
                        key.clone(),
                        UniverseEntry {
                            key,
                            source: source.clone(),
                            calendar: watchlist_calendar(w, &symbol),
                        },
                    );
                }
            }
        }
        Ok(u)
    }

    /// Number of kept series.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no series is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a series, if kept.
    pub fn get(&self, key: &SeriesKey) -> Option<&UniverseEntry> {
        self.entries.get(key)
    }

    /// A source bars are fetched from, by name.
    pub fn source(&self, name: &str) -> Option<Arc<dyn Source>> {
        self.sources.fetcher(name).cloned()
    }

    /// The sources, each built once.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// The request rate of every rate-limited source, by source name in name order.
    pub fn request_rates(&self) -> Vec<(String, RateStatus)> {
        self.sources.request_rates()
    }

    /// The series a task works on, in (symbol, interval) order, after `skip` and `limit`.
    /// Symbols no watchlist lists come from the default source at the requested interval
    /// (1d by default); without a default source they are an error naming the symbol.
    pub fn select(&self, params: &Selection<'_>) -> Result<Vec<UniverseEntry>, String> {
        let wanted_interval = |i: Interval| params.interval.is_none_or(|w| w == i);
        let wanted_source = |e: &UniverseEntry| params.source.is_none_or(|s| e.source.name() == s);
        if let Some(s) = params.source
            && self.sources.fetcher(s).is_none()
        {
            return Err(format!("no source is named {s:?}"));
        }
        let mut out: Vec<UniverseEntry> = match params.symbols {
            None => self
                .entries
                .values()
                .filter(|e| wanted_interval(e.key.interval) && wanted_source(e))
                .cloned()
                .collect(),
            Some(symbols) => {
                let mut out = Vec::new();
                for symbol in symbols {
                    let known: Vec<&UniverseEntry> = self
                        .entries
                        .values()
                        .filter(|e| {
                            &e.key.symbol == symbol
                                && wanted_interval(e.key.interval)
                                && wanted_source(e)
                        })
                        .collect();
                    if !known.is_empty() {
                        out.extend(known.into_iter().cloned());
                        continue;
                    }
                    let source_name = params.source.or(self.sources.default_fetcher());
                    let Some(source) = source_name.and_then(|n| self.sources.fetcher(n)) else {
                        return Err(format!(
                            "symbol {symbol} is in no watchlist and no source can fetch it"
                        ));
                    };
                    out.push(UniverseEntry {
                        key: SeriesKey::new(
                            symbol.clone(),
                            params.interval.unwrap_or(Interval::D1),
                        ),
                        source: source.clone(),
                        calendar: guess_calendar(symbol),
                    });
                }
                out.sort_by(|a, b| a.key.cmp(&b.key));
                out.dedup_by(|a, b| a.key == b.key);
                out
            }
        };
        let skip = params.skip.unwrap_or(0).min(out.len());
        out.drain(..skip);
        if let Some(limit) = params.limit {
            out.truncate(limit);
        }
        Ok(out)
    }
}

/// The symbols of every watchlist (inline and from its file), by watchlist name.
pub fn watchlist_symbols(
    watchlists: &[WatchlistConfig],
) -> Result<HashMap<String, Vec<Symbol>>, UniverseError> {
    let mut out = HashMap::new();
    for w in watchlists {
        let mut symbols = w.symbols.clone();
        if let Some(file) = &w.symbols_file {
            symbols.extend(
                read_symbols_file(file).map_err(|message| UniverseError::Symbols {
                    watchlist: w.name.clone(),
                    message,
                })?,
            );
        }
        out.insert(w.name.clone(), symbols);
    }
    Ok(out)
}
