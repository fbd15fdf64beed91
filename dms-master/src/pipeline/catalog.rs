//! `Catalog`: what the master knows about each series beyond its bars (which the store's
//! overview counts exactly): where it comes from, when it was last fetched and how that went,
//! from when its bars are provisional, the corporate actions seen for its symbol, and the
//! expected sessions the provider answered with no bar (provider-missing).

use std::path::Path;

use dms_common::{SeriesKey, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::sources::{ActionKind, CorporateAction};
use dms_common::state::{StateError, StateTables};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS catalog (
    symbol            TEXT NOT NULL,
    interval          TEXT NOT NULL,
    source            TEXT NOT NULL,
    last_fetch_at_ms  INTEGER,
    last_fetch_ok     INTEGER,
    last_error        TEXT,
    provisional_from  INTEGER,
    PRIMARY KEY (symbol, interval)
);
CREATE TABLE IF NOT EXISTS series_actions (
    symbol   TEXT NOT NULL,
    interval TEXT NOT NULL,
    date     INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    PRIMARY KEY (symbol, interval, date, kind)
);
CREATE TABLE IF NOT EXISTS actions_checked (
    symbol        TEXT NOT NULL,
    interval      TEXT NOT NULL,
    checked_at_ms INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval)
);
CREATE TABLE IF NOT EXISTS provider_missing (
    symbol         TEXT NOT NULL,
    interval       TEXT NOT NULL,
    ts             INTEGER NOT NULL,
    answered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (symbol, interval, ts)
);
CREATE TABLE IF NOT EXISTS corporate_actions (
    symbol        TEXT NOT NULL,
    date          INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    numerator     REAL,
    denominator   REAL,
    amount        REAL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (symbol, date, kind)
);
";

fn kind_name(kind: &ActionKind) -> &'static str {
    match kind {
        ActionKind::Split { .. } => "split",
        ActionKind::Dividend { .. } => "dividend",
    }
}

/// Writes the outcome of a fetch of `key` (a failure keeps the provisional start known).
fn write_fetch(
    c: &Connection,
    key: &SeriesKey,
    source: &str,
    outcome: Result<Option<Timestamp>, String>,
) -> rusqlite::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let (ok, error, provisional) = match outcome {
        Ok(p) => (true, None, p.map(|t| t.0)),
        Err(e) => (false, Some(e), None),
    };
    c.execute(
        "INSERT INTO catalog (symbol, interval, source, last_fetch_at_ms, last_fetch_ok, last_error, provisional_from)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (symbol, interval) DO UPDATE SET
            source = excluded.source, last_fetch_at_ms = excluded.last_fetch_at_ms,
            last_fetch_ok = excluded.last_fetch_ok, last_error = excluded.last_error,
            provisional_from = CASE WHEN excluded.last_fetch_ok = 1
                THEN excluded.provisional_from ELSE catalog.provisional_from END",
        params![key.symbol.as_str(), key.interval.to_string(), source, now, ok, error, provisional],
    )
    .map(|_| ())
}

/// Records `actions` (for listing) and marks them seen for `series`.
fn write_actions_seen(
    c: &Connection,
    series: &SeriesKey,
    actions: &[CorporateAction],
) -> rusqlite::Result<()> {
    let interval = series.interval.to_string();
    let now = chrono::Utc::now().timestamp_millis();
    let mut all = c.prepare_cached(
        "INSERT INTO corporate_actions (symbol, date, kind, numerator, denominator, amount, first_seen_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
    )?;
    let mut seen = c.prepare_cached(
        "INSERT INTO series_actions (symbol, interval, date, kind) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
    )?;
    for a in actions {
        let (num, den, amount) = match a.kind {
            ActionKind::Split {
                numerator,
                denominator,
            } => (Some(numerator), Some(denominator), None),
            ActionKind::Dividend { amount } => (None, None, Some(amount)),
        };
        let kind = kind_name(&a.kind);
        all.execute(params![
            a.symbol.as_str(),
            a.date.0,
            kind,
            num,
            den,
            amount,
            now
        ])?;
        seen.execute(params![a.symbol.as_str(), interval, a.date.0, kind])?;
    }
    Ok(())
}

/// The corporate actions over the whole stored history of `series` are known as of now.
fn write_actions_checked(c: &Connection, series: &SeriesKey) -> rusqlite::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    c.execute(
        "INSERT INTO actions_checked (symbol, interval, checked_at_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (symbol, interval) DO UPDATE SET checked_at_ms = excluded.checked_at_ms",
        params![series.symbol.as_str(), series.interval.to_string(), now],
    )
    .map(|_| ())
}

/// One series' catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogEntry {
    pub symbol: String,
    pub interval: String,
    pub source: String,
    pub last_fetch_at_ms: Option<i64>,
    pub last_fetch_ok: Option<bool>,
    pub last_error: Option<String>,
    pub provisional_from: Option<Timestamp>,
}

/// Why the catalog failed.
pub type CatalogError = StateError;

/// The catalog tables in the state file.
#[derive(Debug, Clone)]
pub struct Catalog {
    tables: StateTables,
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        Ok(Catalog {
            tables: StateTables::open(path, "catalog", SCHEMA)?,
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, CatalogError> {
        self.tables.with(f).await
    }

    /// Records the outcome of a fetch.
    pub async fn record_fetch(
        &self,
        key: &SeriesKey,
        source: &str,
        outcome: Result<Option<Timestamp>, String>,
    ) -> Result<(), CatalogError> {
        let (key, source) = (key.clone(), source.to_owned());
        self.with(move |c| write_fetch(c, &key, &source, outcome))
            .await
    }

    /// Records a successful update of `key` in one transaction: the actions it saw (for
    /// listing, and seen for the series), that the corporate actions over its whole history
    /// are known as of now when `history_checked`, and the fetch with its provisional start.
    pub async fn record_update(
        &self,
        key: &SeriesKey,
        source: &str,
        actions: &[CorporateAction],
        history_checked: bool,
        provisional_from: Option<Timestamp>,
    ) -> Result<(), CatalogError> {
        let (key, source, actions) = (key.clone(), source.to_owned(), actions.to_vec());
        self.with(move |c| {
            let tx = c.transaction()?;
            write_actions_seen(&tx, &key, &actions)?;
            if history_checked {
                write_actions_checked(&tx, &key)?;
            }
            write_fetch(&tx, &key, &source, Ok(provisional_from))?;
            tx.commit()
        })
        .await
    }

    pub async fn entries(&self) -> Result<Vec<CatalogEntry>, CatalogError> {
        self.with(|c| {
            c.prepare(
                "SELECT symbol, interval, source, last_fetch_at_ms, last_fetch_ok, last_error, provisional_from
                 FROM catalog ORDER BY symbol, interval",
            )?
            .query_map([], |r| {
                Ok(CatalogEntry {
                    symbol: r.get(0)?,
                    interval: r.get(1)?,
                    source: r.get(2)?,
                    last_fetch_at_ms: r.get(3)?,
                    last_fetch_ok: r.get::<_, Option<i64>>(4)?.map(|v| v != 0),
                    last_error: r.get(5)?,
                    provisional_from: r.get::<_, Option<i64>>(6)?.map(Timestamp),
                })
            })?
            .collect()
        })
        .await
    }

    /// The provisional start of a series, if its last fetch left one.
    pub async fn provisional_from(
        &self,
        key: &SeriesKey,
    ) -> Result<Option<Timestamp>, CatalogError> {
        let (symbol, interval) = (key.symbol.to_string(), key.interval.to_string());
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT provisional_from FROM catalog WHERE symbol = ?1 AND interval = ?2",
                params![symbol, interval],
                |r| r.get::<_, Option<i64>>(0),
            )
            .optional()?
            .flatten()
            .map(Timestamp))
        })
        .await
    }

    /// The actions in `actions` not yet marked seen for `series`.
    pub async fn unseen_actions(
        &self,
        series: &SeriesKey,
        actions: &[CorporateAction],
    ) -> Result<Vec<CorporateAction>, CatalogError> {
        if actions.is_empty() {
            return Ok(Vec::new());
        }
        let actions = actions.to_vec();
        let interval = series.interval.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT 1 FROM series_actions
                 WHERE symbol = ?1 AND interval = ?2 AND date = ?3 AND kind = ?4",
            )?;
            let mut out = Vec::new();
            for a in actions {
                let key = params![a.symbol.as_str(), interval, a.date.0, kind_name(&a.kind)];
                if !stmt.exists(key)? {
                    out.push(a);
                }
            }
            Ok(out)
        })
        .await
    }

    /// When the corporate actions over the whole stored history of `series` were last learned
    /// (ms since the epoch).
    pub async fn actions_checked_at(
        &self,
        series: &SeriesKey,
    ) -> Result<Option<i64>, CatalogError> {
        let (symbol, interval) = (series.symbol.to_string(), series.interval.to_string());
        self.with(move |c| {
            c.query_row(
                "SELECT checked_at_ms FROM actions_checked WHERE symbol = ?1 AND interval = ?2",
                params![symbol, interval],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    /// Remembers that the provider, asked now, had no bar for the sessions in `missing`, and
    /// forgets the sessions in `answered` (they have one now).
    pub async fn record_provider_answer(
        &self,
        series: &SeriesKey,
        missing: &[Timestamp],
        answered: &[Timestamp],
    ) -> Result<(), CatalogError> {
        if missing.is_empty() && answered.is_empty() {
            return Ok(());
        }
        let (symbol, interval) = (series.symbol.to_string(), series.interval.to_string());
        let (missing, answered) = (missing.to_vec(), answered.to_vec());
        let now = chrono::Utc::now().timestamp_millis();
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut put = tx.prepare(
                    "INSERT INTO provider_missing (symbol, interval, ts, answered_at_ms)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (symbol, interval, ts) DO UPDATE SET answered_at_ms = excluded.answered_at_ms",
                )?;
                for t in missing {
                    put.execute(params![symbol, interval, t.0, now])?;
                }
                let mut del = tx.prepare(
                    "DELETE FROM provider_missing WHERE symbol = ?1 AND interval = ?2 AND ts = ?3",
                )?;
                for t in answered {
                    del.execute(params![symbol, interval, t.0])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// The provider-missing sessions of `series`, with when the provider last answered so
    /// (ms since the epoch).
    pub async fn provider_missing(
        &self,
        series: &SeriesKey,
    ) -> Result<std::collections::BTreeMap<Timestamp, i64>, CatalogError> {
        let (symbol, interval) = (series.symbol.to_string(), series.interval.to_string());
        self.with(move |c| {
            c.prepare(
                "SELECT ts, answered_at_ms FROM provider_missing WHERE symbol = ?1 AND interval = ?2",
            )?
            .query_map(params![symbol, interval], |r| {
                Ok((Timestamp(r.get(0)?), r.get(1)?))
            })?
            .collect()
        })
        .await
    }

    /// The corporate actions recorded for `symbol` (all symbols when None), by date.
    pub async fn actions(
        &self,
        symbol: Option<String>,
    ) -> Result<Vec<serde_json::Value>, CatalogError> {
        self.with(move |c| {
            c.prepare(
                "SELECT symbol, date, kind, numerator, denominator, amount FROM corporate_actions
                 WHERE (?1 IS NULL OR symbol = ?1) ORDER BY symbol, date",
            )?
            .query_map(params![symbol], |r| {
                let date = Timestamp(r.get(1)?);
                Ok(serde_json::json!({
                    "symbol": r.get::<_, String>(0)?,
                    "date": date.to_datetime().format("%Y-%m-%d").to_string(),
                    "type": r.get::<_, String>(2)?,
                    "numerator": r.get::<_, Option<f64>>(3)?,
                    "denominator": r.get::<_, Option<f64>>(4)?,
                    "amount": r.get::<_, Option<f64>>(5)?,
                }))
            })?
            .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use dms_common::{Interval, Symbol};

    use super::*;

    #[tokio::test]
    async fn an_update_is_recorded_in_one_transaction_of_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let catalog = Catalog::open(&path).unwrap();
        let key = SeriesKey::new(Symbol::new("IBM").unwrap(), Interval::D1);
        let split = CorporateAction {
            symbol: key.symbol.clone(),
            date: Timestamp(1_700_006_400),
            kind: ActionKind::Split {
                numerator: 4.0,
                denominator: 1.0,
            },
        };
        catalog
            .record_update(
                &key,
                "yahoo",
                std::slice::from_ref(&split),
                true,
                Some(Timestamp(42)),
            )
            .await
            .unwrap();
        // Read back with SQLite itself, not through the catalog.
        let c = rusqlite::Connection::open(&path).unwrap();
        let (source, ok, provisional): (String, bool, Option<i64>) = c
            .query_row(
                "SELECT source, last_fetch_ok, provisional_from FROM catalog
                 WHERE symbol = 'IBM' AND interval = '1d'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (source.as_str(), ok, provisional),
            ("yahoo", true, Some(42))
        );
        let seen: i64 = c
            .query_row(
                "SELECT count(*) FROM series_actions WHERE symbol = 'IBM' AND interval = '1d'
                 AND date = 1700006400 AND kind = 'split'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seen, 1);
        let checked: i64 = c
            .query_row(
                "SELECT count(*) FROM actions_checked WHERE symbol = 'IBM' AND interval = '1d'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(checked, 1);

        // Without the history check, actions_checked is left as it was; a failed fetch keeps
        // the provisional start.
        let other = SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1);
        catalog
            .record_update(&other, "yahoo", &[], false, None)
            .await
            .unwrap();
        catalog
            .record_fetch(&key, "yahoo", Err("down".into()))
            .await
            .unwrap();
        let checked_other: i64 = c
            .query_row(
                "SELECT count(*) FROM actions_checked WHERE symbol = 'AAPL'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(checked_other, 0);
        let (ok, provisional, error): (bool, Option<i64>, Option<String>) = c
            .query_row(
                "SELECT last_fetch_ok, provisional_from, last_error FROM catalog
                 WHERE symbol = 'IBM'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (ok, provisional, error.as_deref()),
            (false, Some(42), Some("down"))
        );
    }
}
