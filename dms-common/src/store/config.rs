//! `StoreConfig`: the bar store a daemon writes, chosen by `type` in its config (opened by
//! [`super::open_store`]). Shared by the master and the replica.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::influx::InfluxTarget;
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
    /// An InfluxDB server.
    Influxdb(Box<InfluxStoreConfig>),
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
            |m: String| StoreError::refused(format!("store {}: {m}", self.url_redacted()));
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
            &["sqlite", "postgres", "mysql", "influxdb"],
            |tag, rest| match tag {
                "postgres" => config::from_value_at(rest).map(StoreConfig::Postgres),
                "mysql" => config::from_value_at(rest).map(StoreConfig::Mysql),
                "influxdb" => {
                    config::from_value_at(rest).map(|c| StoreConfig::Influxdb(Box::new(c)))
                }
                _ => config::from_value_at(rest).map(StoreConfig::Sqlite),
            },
        )
    }
}

/// Which InfluxDB write API the server speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// InfluxDB 1.x: `/write` with database, retention policy, user and password.
    #[default]
    V1,
    /// InfluxDB 2.x / 3.x: `/api/v2/write` with org, bucket and token.
    V2,
}

/// An InfluxDB server.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxStoreConfig {
    /// The server, e.g. `http://127.0.0.1:8086`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// `v1` (InfluxDB 1.x) or `v2` (2.x, 3.x).
    #[serde(default)]
    pub api: InfluxApi,
    /// (v1) The database; created at start if missing.
    #[serde(default = "default_influx_database")]
    pub database: String,
    /// (v1) The retention policy written to; created at start if missing, as the default
    /// policy, kept forever, with `shard_duration` shards.
    #[serde(default = "default_influx_retention_policy")]
    pub retention_policy: String,
    /// (v1) Shard duration of a created retention policy (`52w`: a shard per year; InfluxDB's
    /// default of a week spreads long histories over hundreds of shards and slows writes).
    #[serde(default = "default_influx_shard_duration")]
    pub shard_duration: String,
    /// (v1) User name, when the server requires authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// (v1) Password inline (prefer `password_file`); never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<config::Secret>,
    /// (v1) A file holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// (v2) The organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// (v2) The bucket; must exist, with a DBRP mapping for InfluxQL reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// (v2) The API token inline (prefer `token_file`); never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<config::Secret>,
    /// (v2) A file holding the API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The measurement holding the bars.
    #[serde(default = "default_influx_measurement")]
    pub measurement: String,
    /// Points per write request.
    #[serde(default = "default_influx_batch_size")]
    pub batch_size: usize,
}

fn default_influx_database() -> String {
    "dms".into()
}
fn default_influx_retention_policy() -> String {
    "dms".into()
}
fn default_influx_shard_duration() -> String {
    "52w".into()
}
fn default_influx_measurement() -> String {
    "bars".into()
}
fn default_influx_batch_size() -> usize {
    5_000
}

impl InfluxStoreConfig {
    /// The write target with its credentials resolved (files read).
    pub fn target(&self) -> Result<InfluxTarget, config::ConfigIssue> {
        // The same rules as a token: inline or from a file, not both, not empty.
        let secret = |inline: &Option<config::Secret>, file: &Option<PathBuf>, key: &str| {
            config::TokenConfig {
                token: inline.clone(),
                token_file: file.clone(),
            }
            .resolve_secret("store")
            .map_err(|e| {
                let k = e
                    .key
                    .replace("store.token_file", &format!("store.{key}_file"))
                    .replace("store.token", &format!("store.{key}"));
                let m = e
                    .message
                    .replace("`token_file`", &format!("`{key}_file`"))
                    .replace("`token`", &format!("`{key}`"));
                config::ConfigIssue::new(k, m)
            })
        };
        match self.api {
            InfluxApi::V1 => Ok(InfluxTarget::V1 {
                database: self.database.clone(),
                retention_policy: self.retention_policy.clone(),
                username: self.username.clone(),
                password: secret(&self.password, &self.password_file, "password")?,
            }),
            InfluxApi::V2 => {
                let required = |v: &Option<String>, key: &str| {
                    v.clone().ok_or_else(|| {
                        config::ConfigIssue::new(format!("store.{key}"), "required with api: v2")
                    })
                };
                Ok(InfluxTarget::V2 {
                    org: required(&self.org, "org")?,
                    bucket: required(&self.bucket, "bucket")?,
                    token: secret(&self.token, &self.token_file, "token")?.ok_or_else(|| {
                        config::ConfigIssue::new("store.token", "required with api: v2")
                    })?,
                })
            }
        }
    }
}

impl StoreConfig {
    /// Problems with the backend's own keys (a server's URL, credentials, sizes), named under
    /// `store.`; a file store's path is checked by the daemon, which knows its other files.
    pub fn validate(&self) -> Vec<config::ConfigIssue> {
        match self {
            StoreConfig::Sqlite(_) => Vec::new(),
            StoreConfig::Influxdb(c) => c.validate(),
            StoreConfig::Postgres(_) | StoreConfig::Mysql(_) => self.validate_server("store"),
        }
    }
}

impl InfluxStoreConfig {
    fn validate(&self) -> Vec<config::ConfigIssue> {
        let mut issues = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            issues.push(config::ConfigIssue::new(
                "store.url",
                format!(
                    "{:?}: expected http://host:port or https://host:port",
                    self.url
                ),
            ));
        }
        if self.batch_size == 0 {
            issues.push(config::ConfigIssue::new(
                "store.batch_size",
                "must be at least 1",
            ));
        }
        if !super::influx::valid_shard_duration(&self.shard_duration) {
            issues.push(config::ConfigIssue::new(
                "store.shard_duration",
                format!(
                    "{:?}: expected a number followed by h, d or w, e.g. 52w",
                    self.shard_duration
                ),
            ));
        }
        for (key, value) in [
            ("store.database", &self.database),
            ("store.retention_policy", &self.retention_policy),
            ("store.measurement", &self.measurement),
        ] {
            if value.is_empty() {
                issues.push(config::ConfigIssue::new(key, "must not be empty"));
            }
        }
        if let Err(issue) = self.target() {
            issues.push(issue);
        }
        issues
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
            StoreConfig::Sqlite(_) | StoreConfig::Influxdb(_) => Vec::new(),
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

    #[test]
    fn influxdb_keys_have_defaults_and_secrets_are_never_printed() {
        let c =
            parse("type: influxdb\nurl: http://db:8086\nusername: u\npassword: hunter2\n").unwrap();
        let StoreConfig::Influxdb(c) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(c.api, InfluxApi::V1);
        assert_eq!(
            (c.database.as_str(), c.retention_policy.as_str()),
            ("dms", "dms")
        );
        assert_eq!(
            (c.shard_duration.as_str(), c.measurement.as_str()),
            ("52w", "bars")
        );
        assert_eq!(c.batch_size, 5_000);
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let shown = format!("{c:?} {}", serde_json::to_string(&c).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        let InfluxTarget::V1 { password, .. } = c.target().unwrap() else {
            panic!("v1")
        };
        assert_eq!(password.unwrap().expose(), "hunter2");
    }

    #[test]
    fn influxdb_config_problems_name_their_keys() {
        let c = parse("type: influxdb\nurl: db:8086\napi: v2\nshard_duration: 1y\nbatch_size: 0\n")
            .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.key).collect();
        assert_eq!(
            keys,
            [
                "store.url",
                "store.batch_size",
                "store.shard_duration",
                "store.org"
            ]
        );
        let c = parse("type: influxdb\nurl: http://db\npassword: a\npassword_file: /x\n").unwrap();
        let issues = c.validate();
        assert_eq!(issues.len(), 1);
        assert!(issues[0].message.contains("`password_file`"), "{issues:?}");
        assert!(parse("type: influxdb\nurl: http://db\nbogus: 1\n").is_err());
        let c = parse("type: influxdb\nurl: http://db\napi: v2\norg: o\nbucket: b\ntoken: t\n")
            .unwrap();
        assert!(c.validate().is_empty());
    }
}
