//! `SqlTable`: bars read from a table (or a read-only query) of another system's PostgreSQL or
//! MySQL/MariaDB database, the SQL-table import source (`sources[]` with `type: sql`).
//!
//! The config names the connection (the password from a file or the environment, never in the
//! URL), the table or query, a column mapping (source column → bar field), defaults for the
//! fields no column gives (e.g. every row is `1d`), the time zone of naive times, the import
//! mode (`upsert` overwrites stored bars, `insert_only` keeps them) and the page size.
//!
//! Rows are read in pages with keyset pagination: `WHERE (k1, k2) > (last) ORDER BY k1, k2
//! LIMIT n` over the `key` columns (a unique key; by default the mapped symbol, interval and
//! time columns), never `OFFSET`, so page 1,000 of a table of millions costs what page 1 does,
//! and the last key read is all a resumed import needs. Every page is read in a read-only
//! transaction. Values are cast by the database (prices to double, symbol and interval to
//! text) and times decoded by their column type: dates and naive date-times are in the
//! configured `timezone` (stored as UTC; a daily bar at 00:00 UTC of its local date),
//! time-zone-aware timestamps are taken as they are, integers are Unix seconds.
//!
//! Key types: [`SqlSourceConfig`], [`SqlTable`] (connection, discovery, pages, preview),
//! [`SqlRow`] (a row as a bar, or the reason it is not one), [`KeyValue`] (a typed key value,
//! saved in the task to resume).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use dms_common::config::{ConfigIssue, Secret};
use dms_common::{Bar, SeriesKey};

use crate::sources::rows::{Cell, Field, RowMapper};
use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// Most rows one page may hold.
pub const MAX_PAGE_SIZE: usize = 100_000;

/// A table of another database read as bars.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSourceConfig {
    pub name: String,
    /// `postgres://user@host:5432/db` or `mysql://user@host:3306/db`, without the password.
    #[serde(serialize_with = "redacted")]
    pub url: String,
    /// A file holding the password (its content without surrounding whitespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The table (`name` or `schema.name`); or give `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// A read-only `SELECT` whose result is read like a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Source column of each bar field.
    pub columns: ColumnMapping,
    /// Values of the fields no column gives.
    #[serde(default)]
    pub defaults: FieldDefaults,
    /// The unique key the pages follow (default: the symbol, interval and time columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Time zone of dates and naive date-times (IANA name).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `upsert` (stored bars are overwritten) or `insert_only` (stored bars are kept).
    #[serde(default)]
    pub mode: ImportMode,
    /// Rows per page.
    #[serde(default = "default_page_size")]
    pub page_size: usize,
}

fn redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&dms_common::store::sql::redact_url(url))
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_page_size() -> usize {
    10_000
}

pub use crate::sources::rows::{ColumnMapping, FieldDefaults, ImportMode};

impl SqlSourceConfig {
    /// What is wrong with the settings, keys under `at` (e.g. `sources[2]`).
    pub fn validate(&self, at: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut bad = |key: &str, message: String| {
            issues.push(ConfigIssue::new(format!("{at}.{key}"), message));
        };
        match self.url.split_once("://").map(|(s, _)| s) {
            Some("postgres" | "postgresql" | "mysql" | "mariadb") => {}
            _ => bad(
                "url",
                format!(
                    "{:?} must start with postgres:// or mysql://",
                    dms_common::store::sql::redact_url(&self.url)
                ),
            ),
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            bad(
                "password_file",
                "give either password_file or password_env, not both".into(),
            );
        }
        match (&self.table, &self.query) {
            (Some(_), Some(_)) => bad("table", "give either table or query, not both".into()),
            (None, None) => bad("table", "give the table to read (or a query)".into()),
            (Some(t), None) if t.trim().is_empty() => bad("table", "must not be empty".into()),
            (None, Some(q)) if !q.trim_start().to_ascii_lowercase().starts_with("select") => {
                bad("query", "must be a SELECT".into())
            }
            _ => {}
        }
        if self.columns.symbol.is_none() && self.defaults.symbol.is_none() {
            bad(
                "columns.symbol",
                "map a column to the symbol or give defaults.symbol".into(),
            );
        }
        if self.columns.interval.is_none() && self.defaults.interval.is_none() {
            bad(
                "columns.interval",
                "map a column to the interval or give defaults.interval (e.g. 1d)".into(),
            );
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            bad(
                "timezone",
                format!("{:?} is not an IANA time zone", self.timezone),
            );
        }
        if !(1..=MAX_PAGE_SIZE).contains(&self.page_size) {
            bad(
                "page_size",
                format!("{} is not between 1 and {MAX_PAGE_SIZE}", self.page_size),
            );
        }
        if self.key_columns().is_empty() {
            bad("key", "needs at least one column".into());
        }
        issues
    }

    /// The columns the pages are ordered and resumed by.
    pub fn key_columns(&self) -> Vec<String> {
        if !self.key.is_empty() {
            return self.key.clone();
        }
        let c = &self.columns;
        [c.symbol.clone(), c.interval.clone(), Some(c.time.clone())]
            .into_iter()
            .flatten()
            .collect()
    }

    fn password(&self) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read password_file {}: {e}", path.display()))?;
            return Ok(Some(Secret::new(text.trim())));
        }
        if let Some(var) = &self.password_env {
            let value = std::env::var(var)
                .map_err(|_| format!("password_env: the variable {var} is not set"))?;
            return Ok(Some(Secret::new(value)));
        }
        Ok(None)
    }
}

/// A typed value of a key column, as read and as bound again to resume after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum KeyValue {
    Int(i64),
    Text(String),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Timestamp(DateTime<Utc>),
}

/// One row: its series and bar, or why it is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlRow {
    Bar(SeriesKey, Bar),
    Problem(String),
}

/// A page of rows and the key of its last row (None when the page is empty).
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<SqlRow>,
    pub last_key: Option<Vec<KeyValue>>,
}

/// A column of a table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// A table and its columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<ColumnInfo>,
}

#[derive(Debug, Clone)]
enum Pool {
    Pg(PgPool),
    My(MySqlPool),
}

/// A connected SQL-table source.
#[derive(Debug, Clone)]
pub struct SqlTable {
    config: SqlSourceConfig,
    pool: Pool,
    mapper: RowMapper,
}

impl SqlTable {
    /// Connects lazily (the first page or discovery call opens the connection).
    pub fn new(config: SqlSourceConfig) -> Result<SqlTable, String> {
        let mapper = RowMapper::new(
            config.columns.clone(),
            config.defaults.clone(),
            &config.timezone,
        )?;
        let password = config.password()?;
        let label = dms_common::store::sql::redact_url(&config.url);
        let pool = if config.url.starts_with("postgres") {
            let mut o = PgConnectOptions::from_str(&config.url)
                .map_err(|e| format!("{label} is not a PostgreSQL url: {e}"))?;
            if let Some(p) = &password {
                o = o.password(p.expose());
            }
            Pool::Pg(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect_lazy_with(o),
            )
        } else {
            let url = config.url.replacen("mariadb://", "mysql://", 1);
            let mut o = MySqlConnectOptions::from_str(&url)
                .map_err(|e| format!("{label} is not a MySQL url: {e}"))?;
            if let Some(p) = &password {
                o = o.password(p.expose());
            }
            Pool::My(
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect_lazy_with(o),
            )
        };
        Ok(SqlTable {
            config,
            pool,
            mapper,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &SqlSourceConfig {
        &self.config
    }

    fn quote(&self, ident: &str) -> String {
        let q = match self.pool {
            Pool::Pg(_) => '"',
            Pool::My(_) => '`',
        };
        ident
            .split('.')
            .map(|part| {
                let escaped = part.replace(q, &format!("{q}{q}"));
                format!("{q}{escaped}{q}")
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// What the pages read from: the quoted table, or the query as a derived table.
    fn source_clause(&self) -> String {
        match (&self.config.table, &self.config.query) {
            (Some(t), _) => self.quote(t),
            (None, Some(q)) => format!("({}) AS dms_source", q.trim().trim_end_matches(';')),
            (None, None) => "dms_no_table".into(),
        }
    }

    fn select_list(&self) -> String {
        let c = &self.config.columns;
        let (text, double) = match self.pool {
            Pool::Pg(_) => ("TEXT", "DOUBLE PRECISION"),
            Pool::My(_) => ("CHAR", "DOUBLE"),
        };
        let cast = |col: &Option<String>, ty: &str| match col {
            Some(col) => format!("CAST({} AS {ty})", self.quote(col)),
            None => "NULL".into(),
        };
        let mut list = vec![
            cast(&c.symbol, text),
            cast(&c.interval, text),
            self.quote(&c.time),
        ];
        for f in &Field::ALL[3..] {
            list.push(cast(&c.column(*f).map(str::to_owned), double));
        }
        list.extend(self.config.key_columns().iter().map(|k| self.quote(k)));
        list.join(", ")
    }

    /// The rows after `after` (from the start when None), at most `page_size`.
    pub async fn page(&self, after: Option<&[KeyValue]>) -> Result<Page, String> {
        self.read(after, self.config.page_size).await
    }

    /// The first `limit` rows as they would be imported.
    pub async fn preview(&self, limit: usize) -> Result<Vec<SqlRow>, String> {
        Ok(self.read(None, limit.clamp(1, 1000)).await?.rows)
    }

    async fn read(&self, after: Option<&[KeyValue]>, limit: usize) -> Result<Page, String> {
        let keys = self.config.key_columns();
        let key_list = keys
            .iter()
            .map(|k| self.quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = format!(
            "SELECT {} FROM {}",
            self.select_list(),
            self.source_clause()
        );
        if let Some(after) = after {
            let marks: Vec<String> = (1..=after.len())
                .map(|i| match self.pool {
                    Pool::Pg(_) => format!("${i}"),
                    Pool::My(_) => "?".into(),
                })
                .collect();
            sql.push_str(&format!(" WHERE ({key_list}) > ({})", marks.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY {key_list} LIMIT {limit}"));
        let label = dms_common::store::sql::redact_url(&self.config.url);
        let err = |e: sqlx::Error| format!("source {} ({label}): {e}", self.config.name);
        // The same steps on either driver: a read-only transaction, the key bound with its
        // own type, every value decoded by its column type.
        macro_rules! read_page {
            ($pool:expr, $decode:ident) => {{
                let mut conn = $pool.acquire().await.map_err(err)?;
                sqlx::query("START TRANSACTION READ ONLY")
                    .execute(&mut *conn)
                    .await
                    .map_err(err)?;
                let mut q = sqlx::query(&sql);
                for v in after.unwrap_or_default() {
                    q = match v.clone() {
                        KeyValue::Int(i) => q.bind(i),
                        KeyValue::Text(s) => q.bind(s),
                        KeyValue::Date(d) => q.bind(d),
                        KeyValue::DateTime(t) => q.bind(t),
                        KeyValue::Timestamp(t) => q.bind(t),
                    };
                }
                let rows = q.fetch_all(&mut *conn).await;
                let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
                rows.map_err(err)?
                    .iter()
                    .map(|r| (0..r.len()).map(|i| $decode(r, i)).collect())
                    .collect::<Result<Vec<Vec<Cell>>, String>>()?
            }};
        }
        let raw: Vec<Vec<Cell>> = match &self.pool {
            Pool::Pg(pool) => read_page!(pool, pg_value),
            Pool::My(pool) => read_page!(pool, my_value),
        };
        let mut last_key = None;
        let rows = raw
            .into_iter()
            .map(|values| {
                let key: Result<Vec<KeyValue>, String> = values[Field::ALL.len()..]
                    .iter()
                    .cloned()
                    .map(key_value)
                    .collect();
                let key = key.map_err(|e| format!("key column: {e}"))?;
                let row = self.to_bar(&values[..Field::ALL.len()], &key);
                last_key = Some(key);
                Ok(row)
            })
            .collect::<Result<Vec<SqlRow>, String>>()?;
        Ok(Page { rows, last_key })
    }

    /// A row's mapped values (one per [`Field::ALL`]) as a bar, or the reason it is not one.
    fn to_bar(&self, v: &[Cell], key: &[KeyValue]) -> SqlRow {
        match self.mapper.bar(v) {
            Ok((key, bar)) => SqlRow::Bar(key, bar),
            Err(m) => {
                let at = key
                    .iter()
                    .map(|k| match k {
                        KeyValue::Int(i) => i.to_string(),
                        KeyValue::Text(s) => s.clone(),
                        KeyValue::Date(d) => d.to_string(),
                        KeyValue::DateTime(t) => t.to_string(),
                        KeyValue::Timestamp(t) => t.to_rfc3339(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                SqlRow::Problem(format!("row ({at}): {m}"))
            }
        }
    }

    /// Rows in the source (for progress).
    pub async fn count(&self) -> Result<u64, String> {
        let sql = format!("SELECT COUNT(*) FROM {}", self.source_clause());
        let err = |e: sqlx::Error| format!("source {}: {e}", self.config.name);
        let n: i64 = match &self.pool {
            Pool::Pg(p) => sqlx::query_scalar(&sql).fetch_one(p).await.map_err(err)?,
            Pool::My(p) => sqlx::query_scalar(&sql).fetch_one(p).await.map_err(err)?,
        };
        Ok(n.max(0) as u64)
    }

    /// The tables of the source's database (its current schema) with their columns and types.
    pub async fn tables(&self) -> Result<Vec<TableInfo>, String> {
        let err = |e: sqlx::Error| format!("source {}: {e}", self.config.name);
        let rows: Vec<(String, String, String)> = match &self.pool {
            Pool::Pg(p) => sqlx::query_as(
                "SELECT table_name::text, column_name::text, data_type::text
                 FROM information_schema.columns WHERE table_schema = current_schema()
                 ORDER BY table_name, ordinal_position",
            )
            .fetch_all(p)
            .await
            .map_err(err)?,
            Pool::My(p) => sqlx::query_as(
                "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(column_type AS CHAR)
                 FROM information_schema.columns WHERE table_schema = DATABASE()
                 ORDER BY table_name, ordinal_position",
            )
            .fetch_all(p)
            .await
            .map_err(err)?,
        };
        let mut tables: BTreeMap<String, Vec<ColumnInfo>> = BTreeMap::new();
        for (table, column, data_type) in rows {
            tables.entry(table).or_default().push(ColumnInfo {
                name: column,
                data_type,
            });
        }
        Ok(tables
            .into_iter()
            .map(|(name, columns)| TableInfo { name, columns })
            .collect())
    }
}

fn key_value(v: Cell) -> Result<KeyValue, String> {
    Ok(match v {
        Cell::Int(i) => KeyValue::Int(i),
        Cell::Text(s) => KeyValue::Text(s),
        Cell::Date(d) => KeyValue::Date(d),
        Cell::DateTime(t) => KeyValue::DateTime(t),
        Cell::Timestamp(t) => KeyValue::Timestamp(t),
        Cell::Null => {
            return Err("a key value is NULL; the key must be a unique, non-null key".into());
        }
        Cell::Float(_) | Cell::Bool(_) => {
            return Err(
                "a key column holds decimals or booleans; use an integer, text, date or timestamp key".into(),
            );
        }
    })
}

fn pg_value(row: &PgRow, i: usize) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let ty = row.column(i).type_info().name().to_ascii_uppercase();
    let e = |e: sqlx::Error| format!("column {}: {e}", row.column(i).name());
    Ok(match ty.as_str() {
        "INT2" => Cell::Int(row.try_get::<i16, _>(i).map_err(e)?.into()),
        "INT4" => Cell::Int(row.try_get::<i32, _>(i).map_err(e)?.into()),
        "INT8" => Cell::Int(row.try_get::<i64, _>(i).map_err(e)?),
        "FLOAT4" => Cell::Float(row.try_get::<f32, _>(i).map_err(e)?.into()),
        "FLOAT8" => Cell::Float(row.try_get::<f64, _>(i).map_err(e)?),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Cell::Text(row.try_get(i).map_err(e)?),
        "DATE" => Cell::Date(row.try_get(i).map_err(e)?),
        "TIMESTAMP" => Cell::DateTime(row.try_get(i).map_err(e)?),
        "TIMESTAMPTZ" => Cell::Timestamp(row.try_get(i).map_err(e)?),
        other => {
            return Err(format!(
                "column {} has type {other}, which is not read (use an integer, text, date or timestamp column)",
                row.column(i).name()
            ));
        }
    })
}

fn my_value(row: &MySqlRow, i: usize) -> Result<Cell, String> {
    let raw = row.try_get_raw(i).map_err(|e| e.to_string())?;
    if raw.is_null() {
        return Ok(Cell::Null);
    }
    let ty = row.column(i).type_info().name().to_ascii_uppercase();
    let e = |e: sqlx::Error| format!("column {}: {e}", row.column(i).name());
    Ok(match ty.as_str() {
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            Cell::Int(row.try_get::<i64, _>(i).map_err(e)?)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => {
            let u: u64 = row.try_get(i).map_err(e)?;
            Cell::Int(i64::try_from(u).map_err(|_| format!("{u} is too large"))?)
        }
        "FLOAT" => Cell::Float(row.try_get::<f32, _>(i).map_err(e)?.into()),
        "DOUBLE" => Cell::Float(row.try_get::<f64, _>(i).map_err(e)?),
        "CHAR" | "VARCHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" => {
            Cell::Text(row.try_get(i).map_err(e)?)
        }
        "DATE" => Cell::Date(row.try_get(i).map_err(e)?),
        "DATETIME" => Cell::DateTime(row.try_get(i).map_err(e)?),
        "TIMESTAMP" => Cell::Timestamp(row.try_get(i).map_err(e)?),
        other => {
            return Err(format!(
                "column {} has type {other}, which is not read (use an integer, text, date or timestamp column)",
                row.column(i).name()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use dms_common::{Interval, Timestamp};

    fn config(json: &str) -> SqlSourceConfig {
        serde_json::from_str(json).unwrap()
    }

    fn base() -> SqlSourceConfig {
        config(
            r#"{"name": "legacy", "url": "postgres://u@127.0.0.1/db", "table": "bars",
                "columns": {"symbol": "code", "time": "day", "open": "o", "high": "h",
                            "low": "l", "close": "c", "volume": "v"},
                "defaults": {"interval": "1d"}, "timezone": "Asia/Shanghai"}"#,
        )
    }

    #[test]
    fn the_key_defaults_to_the_mapped_symbol_interval_and_time() {
        assert_eq!(base().key_columns(), vec!["code", "day"]);
        assert!(base().validate("sources[0]").is_empty());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = base();
        c.table = None;
        c.defaults.interval = None;
        c.timezone = "Mars/Base".into();
        c.page_size = 0;
        c.url = "sqlite://x".into();
        let keys: Vec<String> = c
            .validate("sources[1]")
            .into_iter()
            .map(|i| i.key)
            .collect();
        for k in ["url", "table", "columns.interval", "timezone", "page_size"] {
            assert!(keys.contains(&format!("sources[1].{k}")), "{k} in {keys:?}");
        }
        let mut q = base();
        q.table = None;
        q.query = Some("DELETE FROM bars".into());
        let keys: Vec<String> = q.validate("s").into_iter().map(|i| i.key).collect();
        assert_eq!(keys, vec!["s.query"]);
    }

    #[tokio::test]
    async fn identifiers_are_quoted_and_naive_times_are_local() {
        let t = SqlTable::new(base()).unwrap();
        assert_eq!(t.quote(r#"we"ird.t"#), r#""we""ird"."t""#);
        // 2024-01-02 09:30 in Shanghai is 01:30Z; as a daily bar, 2024-01-02.
        let naive = NaiveDate::from_ymd_opt(2024, 1, 2)
            .unwrap()
            .and_hms_opt(9, 30, 0)
            .unwrap();
        assert_eq!(
            t.mapper.time(&Cell::DateTime(naive), Interval::H1).unwrap(),
            Timestamp(naive.and_utc().timestamp() - 8 * 3600)
        );
        assert_eq!(
            t.mapper.time(&Cell::DateTime(naive), Interval::D1).unwrap(),
            Timestamp::from_date(NaiveDate::from_ymd_opt(2024, 1, 2).unwrap())
        );
        // An empty price or a bad interval is a row problem naming the column.
        let key = [KeyValue::Text("X".into())];
        let row = |interval: Cell, close: Cell| {
            t.to_bar(
                &[
                    Cell::Text("X".into()),
                    interval,
                    Cell::Date(NaiveDate::from_ymd_opt(2024, 1, 2).unwrap()),
                    Cell::Float(1.0),
                    Cell::Float(2.0),
                    Cell::Float(0.5),
                    close,
                    Cell::Float(10.0),
                    Cell::Null,
                    Cell::Null,
                    Cell::Null,
                ],
                &key,
            )
        };
        match row(Cell::Null, Cell::Null) {
            SqlRow::Problem(p) => assert!(p.contains("column c is empty"), "{p}"),
            other => panic!("{other:?}"),
        }
        match row(Cell::Text("2d".into()), Cell::Float(1.5)) {
            SqlRow::Problem(p) => assert!(p.contains("\"2d\" is not one of"), "{p}"),
            other => panic!("{other:?}"),
        }
        match row(Cell::Null, Cell::Float(1.5)) {
            SqlRow::Bar(k, b) => {
                assert_eq!(k.interval, Interval::D1);
                assert_eq!(b.close, 1.5);
            }
            other => panic!("{other:?}"),
        }
    }
}
