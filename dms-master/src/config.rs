//! `MasterConfig`: the master's YAML config. Every field's doc comment is its user
//! documentation (the README's config reference follows it).
//!
//! Relative paths are resolved against the working directory the master is started in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dms_common::config::{self, ByteSize, ConfigDuration, ConfigError, ConfigIssue, Validate};
use dms_common::journal::RetentionPolicy;
pub use dms_common::store::config::{SqliteStoreConfig, StoreConfig};

pub use crate::data::import::file::config::FileImportConfig;
pub use crate::sources::config::{CsvFileConfig, CsvSourceConfig, SourceConfig};
pub use crate::sources::yahoo::YahooSourceConfig;
pub use crate::tasks::config::TasksConfig;
pub use crate::universe::config::WatchlistConfig;
use serde::{Deserialize, Serialize};

/// The config file used when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/dms-master.yaml";

/// The master's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// HTTP listener (health, REST API).
    #[serde(default)]
    pub http: HttpConfig,
    /// The local state file: journal, cursors, quarantine.
    #[serde(default)]
    pub state: StateConfig,
    /// How long journal entries are kept for consumers that fall behind.
    #[serde(default)]
    pub journal: JournalConfig,
    /// The primary bar store.
    #[serde(default)]
    pub store: StoreConfig,
    /// Data sources.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Groups of symbols kept up to date, each from one source.
    #[serde(default)]
    pub watchlists: Vec<WatchlistConfig>,
    /// Fetch task behaviour.
    #[serde(default)]
    pub tasks: TasksConfig,
    /// How long shutdown waits for in-flight work (the store applier draining the journal).
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfigDuration,
    /// Replication to replicas over gRPC (served on `http.listen`).
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Bearer tokens for the admin gRPC service and mutating REST requests.
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    /// Jobs the master runs by itself on cron schedules.
    #[serde(default)]
    pub schedules: Vec<crate::ops::schedule::config::ScheduleConfig>,
    /// Webhook alerts: receivers, rules and thresholds, rate limit, repeat interval.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
    /// Backups: where they go and how many are kept.
    #[serde(default)]
    pub backup: crate::data::backup::BackupConfig,
    /// Imports of files: where files named by path may be read from, how large an upload may be.
    #[serde(default)]
    pub file_import: FileImportConfig,
    /// The other stores and replicas migrations and checks may name (`target`, `replica`):
    /// requests name one of these, never an address or a path.
    #[serde(default)]
    pub targets: BTreeMap<String, crate::data::targets::TargetConfig>,
}

/// Replication settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The bearer token replicas present (prefer `token_file`; also settable as
    /// `DMS_REPLICATION__TOKEN`). The full `auth` token and `node_tokens` are accepted too;
    /// with no token configured anywhere (a loopback master), any client may replicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<config::Secret>,
    /// A file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Tokens of single replicas, by node id (`replica-1: {token_file: ...}`): a replica
    /// presenting its own token may subscribe only as itself, and a node id listed here may
    /// be taken only with its own token (not with the shared replication or admin token).
    #[serde(default)]
    pub node_tokens: BTreeMap<String, config::TokenConfig>,
    /// A heartbeat goes to an idle replica this often; replicas notice a dead link by their
    /// absence.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval: ConfigDuration,
    /// Most journal payload sent to one replica and not yet acknowledged (flow control).
    #[serde(default = "default_unacked")]
    pub max_unacked_bytes: ByteSize,
}

fn default_heartbeat() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(1))
}
fn default_unacked() -> ByteSize {
    ByteSize(64 << 20)
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            token: None,
            token_file: None,
            node_tokens: BTreeMap::new(),
            heartbeat_interval: default_heartbeat(),
            max_unacked_bytes: default_unacked(),
        }
    }
}

impl ReplicationConfig {
    /// The token replicas must present, if one is configured.
    pub fn resolve_token(&self) -> Result<Option<config::Secret>, ConfigIssue> {
        config::TokenConfig {
            token: self.token.clone(),
            token_file: self.token_file.clone(),
        }
        .resolve("replication")
    }
}

fn default_shutdown_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

/// HTTP listener settings (default port 11183).
pub type HttpConfig = dms_common::daemon::HttpConfig<11183>;

/// Local state settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite file holding the journal, cursors and quarantine; created if missing.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

impl StateConfig {
    /// The directory of the state file (absolute), where the master keeps its other files.
    pub fn dir(&self) -> PathBuf {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// Uploaded import files, until their import ends.
    pub fn uploads_dir(&self) -> PathBuf {
        self.dir().join("uploads")
    }

    /// The rows of each file import that are not bars (`<task>.csv`).
    pub fn import_quarantine_dir(&self) -> PathBuf {
        crate::data::import::file::run::quarantine_dir(&self.dir())
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("./data/master-state.db")
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

/// Journal retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Entries every consumer has applied are removed right away; entries some consumer still
    /// needs are kept up to this total size. Beyond it, the oldest go and that consumer is
    /// marked as needing repair.
    #[serde(default = "default_journal_max_bytes")]
    pub max_bytes: ByteSize,
    /// Like `max_bytes`, by age.
    #[serde(default = "default_journal_max_age")]
    pub max_age: ConfigDuration,
    /// How often retention runs.
    #[serde(default = "default_retention_every")]
    pub retention_interval: ConfigDuration,
    /// Most journal payload the primary store may have left to apply: beyond it, tasks wait
    /// for the store (backpressure, shown in the task's message and in `/api/data/status`)
    /// instead of filling the disk while the store is down or slow.
    #[serde(default = "default_max_unapplied")]
    pub max_unapplied: ByteSize,
}

fn default_max_unapplied() -> ByteSize {
    ByteSize(256 << 20)
}

fn default_journal_max_bytes() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_journal_max_age() -> ConfigDuration {
    ConfigDuration::from_secs(7 * 86_400)
}
fn default_retention_every() -> ConfigDuration {
    ConfigDuration::from_secs(60)
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_bytes: default_journal_max_bytes(),
            max_age: default_journal_max_age(),
            retention_interval: default_retention_every(),
            max_unapplied: default_max_unapplied(),
        }
    }
}

impl JournalConfig {
    /// The retention policy these settings describe.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_bytes: self.max_bytes.0,
            max_age: self.max_age.0,
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            http: HttpConfig::default(),
            state: StateConfig::default(),
            journal: JournalConfig::default(),
            store: StoreConfig::default(),
            sources: Vec::new(),
            watchlists: Vec::new(),
            tasks: TasksConfig::default(),
            shutdown_timeout: default_shutdown_timeout(),
            replication: ReplicationConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            schedules: Vec::new(),
            alerts: crate::alerts::AlertsConfig::default(),
            backup: crate::data::backup::BackupConfig::default(),
            file_import: FileImportConfig::default(),
            targets: BTreeMap::new(),
        }
    }
}

impl Validate for MasterConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.state.path.as_os_str().is_empty() {
            issues.push(ConfigIssue::new("state.path", "must not be empty"));
        }
        match &self.store {
            StoreConfig::Sqlite(SqliteStoreConfig { path, .. }) => {
                if path.as_os_str().is_empty() {
                    issues.push(ConfigIssue::new("store.path", "must not be empty"));
                } else if path == &self.state.path {
                    issues.push(ConfigIssue::new(
                        "store.path",
                        format!(
                            "{} is also state.path; the bar store and the state file must be different files",
                            path.display()
                        ),
                    ));
                }
            }
            StoreConfig::Postgres(_) | StoreConfig::Mysql(_) | StoreConfig::Influxdb(_) => {
                issues.extend(self.store.validate());
            }
        }
        if self.journal.max_bytes.0 < 1 << 20 {
            issues.push(ConfigIssue::new(
                "journal.max_bytes",
                format!("{} is too small; use at least 1MiB", self.journal.max_bytes),
            ));
        }
        if self.journal.max_unapplied.0 < 1 << 20 {
            issues.push(ConfigIssue::new(
                "journal.max_unapplied",
                format!(
                    "{} is too small; use at least 1MiB",
                    self.journal.max_unapplied
                ),
            ));
        }
        if self.journal.retention_interval.0.is_zero() {
            issues.push(ConfigIssue::new(
                "journal.retention_interval",
                "must be more than 0s",
            ));
        }
        issues.extend(self.http.validate());
        let auth_enabled = self.auth.token.is_some() || self.auth.token_file.is_some();
        issues.extend(self.http.exposure_issue(auth_enabled));
        issues.extend(crate::data::targets::validate(&self.targets));
        for (i, dir) in self.file_import.allowed_dirs.iter().enumerate() {
            if !dir.is_absolute() {
                issues.push(ConfigIssue::new(
                    format!("file_import.allowed_dirs[{i}]"),
                    format!("{} is not an absolute path", dir.display()),
                ));
            } else if !dir.is_dir() {
                issues.push(ConfigIssue::new(
                    format!("file_import.allowed_dirs[{i}]"),
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        if self.file_import.max_upload_bytes.0 == 0 {
            issues.push(ConfigIssue::new(
                "file_import.max_upload_bytes",
                "must be more than 0",
            ));
        }
        if self.tasks.max_pending == 0 {
            issues.push(ConfigIssue::new("tasks.max_pending", "must be at least 1"));
        }
        for (node, token) in &self.replication.node_tokens {
            let key = format!("replication.node_tokens.{node}");
            if let Err(e) = crate::replication::nodes::validate_node_id(node) {
                issues.push(ConfigIssue::new(&key, e));
            }
            match token.resolve(&key) {
                Ok(Some(_)) => {}
                Ok(None) => issues.push(ConfigIssue::new(&key, "give token_file (or token)")),
                Err(i) => issues.push(i),
            }
        }
        if self.shutdown_timeout.0.is_zero() {
            issues.push(ConfigIssue::new("shutdown_timeout", "must be more than 0s"));
        }
        issues.extend(self.auth.issues());
        issues.extend(self.alerts.issues());
        issues.extend(self.backup.validate());
        if let Err(issue) = self.replication.resolve_token() {
            issues.push(issue);
        }
        if self.replication.heartbeat_interval.0.is_zero() {
            issues.push(ConfigIssue::new(
                "replication.heartbeat_interval",
                "must be more than 0s",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            let name = source.name();
            if name.trim().is_empty() {
                issues.push(ConfigIssue::new(
                    format!("sources[{i}].name"),
                    "must not be empty",
                ));
            } else if !names.insert(name.to_owned()) {
                issues.push(ConfigIssue::new(
                    format!("sources[{i}].name"),
                    format!("{name:?} is used by another source"),
                ));
            }
            match source {
                SourceConfig::Yahoo(y) => {
                    if let Err(e) = reqwest::Url::parse(&y.base_url) {
                        issues.push(ConfigIssue::new(
                            format!("sources[{i}].base_url"),
                            format!("{:?} is not a URL: {e}", y.base_url),
                        ));
                    }
                    for (field, message) in y.rate_issues() {
                        issues.push(ConfigIssue::new(format!("sources[{i}].{field}"), message));
                    }
                    if y.max_concurrency == 0 {
                        issues.push(ConfigIssue::new(
                            format!("sources[{i}].max_concurrency"),
                            "must be at least 1",
                        ));
                    }
                }
                SourceConfig::Sql(c) => issues.extend(c.validate(&format!("sources[{i}]"))),
                SourceConfig::Csv(c) => {
                    if c.dir.as_os_str().is_empty() {
                        issues.push(ConfigIssue::new(
                            format!("sources[{i}].dir"),
                            "must not be empty",
                        ));
                    }
                    for file in c.files.keys() {
                        if file.contains('/') || !file.ends_with(".csv") {
                            issues.push(ConfigIssue::new(
                                format!("sources[{i}].files.{file}"),
                                format!("{file:?} must be a plain file name ending in .csv"),
                            ));
                        }
                    }
                }
            }
        }
        for (i, w) in self.watchlists.iter().enumerate() {
            if self
                .sources
                .iter()
                .any(|s| matches!(s, SourceConfig::Sql(_)) && s.name() == w.source)
            {
                issues.push(ConfigIssue::new(
                    format!("watchlists[{i}].source"),
                    format!(
                        "{:?} is a sql source, imported whole (POST /api/data/import with its name as `source`), not kept per symbol",
                        w.source
                    ),
                ));
            }
            if !names.contains(&w.source) {
                issues.push(ConfigIssue::new(
                    format!("watchlists[{i}].source"),
                    format!("no source is named {:?}", w.source),
                ));
            }
            if w.intervals.is_empty() {
                issues.push(ConfigIssue::new(
                    format!("watchlists[{i}].intervals"),
                    "must list at least one interval",
                ));
            }
            if let Some(c) = &w.calendar
                && c != "weekdays"
                && crate::universe::calendar::Calendar::from_name(c).is_none()
            {
                issues.push(ConfigIssue::new(
                    format!("watchlists[{i}].calendar"),
                    format!("unknown calendar {c:?}; use nyse, crypto, fx or weekdays"),
                ));
            }
            if w.symbols.is_empty() && w.symbols_file.is_none() {
                issues.push(ConfigIssue::new(
                    format!("watchlists[{i}].symbols"),
                    "list symbols or give a symbols_file",
                ));
            }
        }
        if self.tasks.concurrency == 0 {
            issues.push(ConfigIssue::new("tasks.concurrency", "must be at least 1"));
        }
        issues.extend(crate::ops::schedule::config::validate(
            &self.schedules,
            &self.watchlists.iter().map(|w| w.name.as_str()).collect(),
            &self.sources.iter().map(|s| s.name()).collect(),
        ));
        issues
    }
}

impl MasterConfig {
    /// Loads and validates the config at `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
        dms_common::config::load(path, std::env::vars())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<MasterConfig, ConfigError> {
        dms_common::config::load_str(Path::new("dms-master.yaml"), text, Vec::new())
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.http.listen.port(), 11183);
        assert!(matches!(c.store, StoreConfig::Sqlite { .. }));
        assert_eq!(c.shutdown_timeout, ConfigDuration::from_secs(5));
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dms-master.yaml");
        let c: MasterConfig =
            dms_common::config::load(&path, Vec::new()).expect("shipped config loads");
        assert_eq!(c.sources.len(), 1);
    }

    #[test]
    fn shipped_server_store_example_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c: MasterConfig =
            dms_common::config::load(&root.join("config/dms-master.postgres.yaml"), Vec::new())
                .expect("postgres example loads");
        assert!(matches!(c.store, StoreConfig::Postgres(_)), "{:?}", c.store);
        let c: MasterConfig =
            dms_common::config::load(&root.join("config/dms-master.mysql.yaml"), Vec::new())
                .expect("mysql example loads");
        assert!(matches!(c.store, StoreConfig::Mysql(_)), "{:?}", c.store);
    }

    #[test]
    fn shipped_influxdb_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dms-master.influxdb.yaml");
        let c: MasterConfig =
            dms_common::config::load(&path, Vec::new()).expect("shipped config loads");
        let StoreConfig::Influxdb(store) = &c.store else {
            panic!("expected an InfluxDB store, got {:?}", c.store);
        };
        assert_eq!(store.url, "http://127.0.0.1:8086");
        assert_eq!(
            (
                store.database.as_str(),
                store.shard_duration.as_str(),
                store.batch_size
            ),
            ("dms", "52w", 5000)
        );
    }

    #[test]
    fn shipped_yahoo_example_config_is_valid_and_its_watchlists_resolve() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path = root.join("config/dms-master.yahoo.yaml");
        let mut c: MasterConfig = dms_common::config::load(&path, Vec::new()).expect("loads");
        for w in &mut c.watchlists {
            if let Some(f) = &w.symbols_file {
                w.symbols_file = Some(root.join(f));
            }
        }
        let universe =
            crate::universe::Universe::build(&c.sources, &c.watchlists).expect("universe");
        // 7 inline + 3 from the file at 1d, 2 crypto at 1d and 1h, 2 FX.
        assert_eq!(universe.len(), 10 + 4 + 2);
    }

    #[test]
    fn errors_name_the_key() {
        let err = load("store:\n  type: sqlit\n").unwrap_err().to_string();
        assert!(err.contains("store") && err.contains("sqlit"), "{err}");
        let err = load("http:\n  listen: nowhere\n").unwrap_err().to_string();
        assert!(err.contains("http.listen"), "{err}");
        let err = load("sources:\n  - type: csv\n    name: a\n    dir: x\n    interval: 2d\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sources[0].interval") && err.contains("2d"),
            "{err}"
        );
        let err =
            load("sources:\n  - {type: csv, name: a, dir: x}\n  - {type: csv, name: a, dir: y}\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("sources[1].name"), "{err}");
        let err = load("state:\n  path: same.db\nstore:\n  type: sqlite\n  path: same.db\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.path"), "{err}");
        let err = load(
            "sources:\n  - {type: csv, name: a, dir: x, files: {GOOG.csv: {symbol: 'A B'}}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sources[0].files.GOOG.csv.symbol") && err.contains("whitespace"),
            "{err}"
        );
    }

    #[test]
    fn the_adaptive_rate_is_on_for_yahoo_with_bounds_around_its_start() {
        let c = load("sources:\n  - {type: yahoo, name: y}\n").unwrap();
        let SourceConfig::Yahoo(y) = &c.sources[0] else {
            panic!("a yahoo source: {:?}", c.sources[0]);
        };
        assert!(y.adaptive_rate);
        let b = y.rate_bounds();
        assert_eq!((y.requests_per_second, b.min, b.max), (2.0, 0.5, 50.0));
        // A start outside the default bounds widens them instead of being refused.
        let c = load("sources:\n  - {type: yahoo, name: y, requests_per_second: 80}\n").unwrap();
        let SourceConfig::Yahoo(y) = &c.sources[0] else {
            panic!();
        };
        assert_eq!(y.rate_bounds().max, 80.0);
    }

    #[test]
    fn bad_rate_bounds_are_refused_naming_the_field() {
        for (yaml, field, words) in [
            (
                "min_requests_per_second: 3",
                "sources[0].min_requests_per_second",
                "above requests_per_second",
            ),
            (
                "max_requests_per_second: 1",
                "sources[0].max_requests_per_second",
                "below requests_per_second",
            ),
            (
                "max_requests_per_second: -5",
                "sources[0].max_requests_per_second",
                "positive",
            ),
            (
                "min_requests_per_second: 0",
                "sources[0].min_requests_per_second",
                "positive",
            ),
            (
                "requests_per_second: 0",
                "sources[0].requests_per_second",
                "positive",
            ),
        ] {
            let err = load(&format!("sources:\n  - {{type: yahoo, name: y, {yaml}}}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field) && err.contains(words), "{yaml}: {err}");
        }
    }
}
