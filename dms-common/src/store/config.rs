//! `StoreConfig`: the bar store a daemon writes, chosen by `type` in its config, and
//! [`open_store`], which opens it. Shared by the master and the replica.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::mysql::MysqlStore;
use super::postgres::PostgresStore;
use super::sqlite::{SqliteOptions, SqliteStore};
use super::{SharedStore, StoreError};
use crate::config::{self, ByteSize, Secret};

/// The primary bar store, chosen by `type` (default `sqlite`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Embedded SQLite file (the default).
    Sqlite(SqliteStoreConfig),
    /// A PostgreSQL server (`type: postgres`).
    Postgres(SqlServerConfig),
    /// A MySQL or MariaDB server (`type: mysql`).
    Mysql(SqlServerConfig),
}

/// The embedded SQLite store.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteStoreConfig {
    /// The store file; created if missing.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Page cache per connection.
    #[serde(default = "default_store_cache")]
    pub cache: ByteSize,
}

/// A PostgreSQL or MySQL/MariaDB server holding the bar tables (created at open).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqlServerConfig {
    /// The database: `postgres://user@host:5432/dms` or `mysql://user@host:3306/dms` (URL
    /// parameters such as `sslmode=require` or `ssl-mode=required` select TLS). Give the
    /// password in `password` or `password_file` rather than here.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// The password. Prefer `password_file`; never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (its content without surrounding whitespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connections the store keeps open at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::sql::redact_url(url))
}

impl SqlServerConfig {
    /// A server at `url` with the defaults and no password.
    pub fn new(url: impl Into<String>) -> Self {
        SqlServerConfig {
            url: url.into(),
            password: None,
            password_file: None,
            max_connections: default_max_connections(),
        }
    }

    /// The password from `password` or `password_file`, if either is given.
    pub fn resolve_password(&self) -> Result<Option<Secret>, StoreError> {
        let invalid =
            |m: String| StoreError::Invalid(format!("store {}: {m}", self.url_redacted()));
        match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => Err(invalid(
                "give either `password` or `password_file`, not both".into(),
            )),
            (Some(p), None) => Ok(Some(p.clone())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(format!("cannot read password_file {}: {e}", path.display()))
                })?;
                Ok(Some(Secret::new(text.trim())))
            }
            (None, None) => Ok(None),
        }
    }

    /// What is wrong with this server's settings, keys under `key` (e.g. `store`); `schemes`
    /// are the url schemes the backend takes.
    pub fn validate(&self, key: &str, schemes: &[&str]) -> Vec<config::ConfigIssue> {
        let mut issues = Vec::new();
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        if !scheme.is_some_and(|s| schemes.contains(&s)) {
            issues.push(config::ConfigIssue::new(
                format!("{key}.url"),
                format!(
                    "{} must start with {}",
                    self.url_redacted(),
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            issues.push(config::ConfigIssue::new(
                key,
                "give either `password` or `password_file`, not both",
            ));
        }
        if self.max_connections == 0 {
            issues.push(config::ConfigIssue::new(
                format!("{key}.max_connections"),
                "must be at least 1",
            ));
        }
        issues
    }

    /// The url without a password, for errors and logs.
    pub fn url_redacted(&self) -> String {
        super::sql::redact_url(&self.url)
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        config::deserialize_tagged(
            value,
            "type",
            Some("sqlite"),
            &["sqlite", "postgres", "mysql"],
            |tag, rest| match tag {
                "postgres" => config::from_value_at(rest).map(StoreConfig::Postgres),
                "mysql" => config::from_value_at(rest).map(StoreConfig::Mysql),
                _ => config::from_value_at(rest).map(StoreConfig::Sqlite),
            },
        )
    }
}

/// The default store file of a daemon whose data lives in `./data`.
pub fn default_store_path() -> PathBuf {
    PathBuf::from("./data/bars.db")
}
fn default_store_cache() -> ByteSize {
    ByteSize(64 << 20)
}

impl StoreConfig {
    /// What is wrong with the settings of a server store, keys under `key`; a file store's path
    /// is checked by the daemon, which knows its other files.
    pub fn validate_server(&self, key: &str) -> Vec<config::ConfigIssue> {
        match self {
            StoreConfig::Sqlite(_) => Vec::new(),
            StoreConfig::Postgres(server) => server.validate(key, &["postgres", "postgresql"]),
            StoreConfig::Mysql(server) => server.validate(key, &["mysql", "mariadb"]),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Sqlite(SqliteStoreConfig {
            path: default_store_path(),
            cache: default_store_cache(),
        })
    }
}

/// Opens the configured bar store (a network backend connects and prepares its schema).
pub async fn open_store(config: &StoreConfig) -> Result<SharedStore, super::StoreError> {
    match config {
        StoreConfig::Sqlite(SqliteStoreConfig { path, cache }) => {
            let options = SqliteOptions {
                cache_kib: (cache.0 / 1024).clamp(1024, u32::MAX as u64) as u32,
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open_with(path, options).map_err(|e| {
                super::StoreError::Unavailable(format!(
                    "cannot open the SQLite store {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Postgres(server) => Ok(Arc::new(PostgresStore::open(server).await?)),
        StoreConfig::Mysql(server) => Ok(Arc::new(MysqlStore::open(server).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<StoreConfig, String> {
        let value: serde_json::Value = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn server_stores_are_chosen_by_type_and_never_print_the_password() {
        let c = parse("type: postgres\nurl: postgres://dms:pw@db:5432/dms\npassword: s3cret\n")
            .unwrap();
        let StoreConfig::Postgres(server) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(server.max_connections, 8);
        assert_eq!(
            server.resolve_password().unwrap().unwrap().expose(),
            "s3cret"
        );
        assert!(c.validate_server("store").is_empty());
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            serde_json::to_string(&c)
                .unwrap()
                .contains("postgres://dms@db:5432/dms")
        );
        let c = parse("type: mysql\nurl: postgres://x@db/dms\nmax_connections: 0\n").unwrap();
        let issues = c.validate_server("store");
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(parse("type: mysql\nurl: mysql://x@db/dms\nuser: x\n").is_err());
    }
}
