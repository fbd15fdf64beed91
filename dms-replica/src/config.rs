//! `ReplicaConfig`: the replica's YAML config. Every field's doc comment is its user
//! documentation (the README's config reference follows it).
//!
//! The defaults work against a master on its default config on the same machine: the master at
//! `http://127.0.0.1:11183`, the replica's HTTP API on port 11184, its files under `./data/`
//! beside (not in place of) the master's.

use std::path::{Path, PathBuf};

use dms_common::config::{self, ConfigDuration, ConfigError, ConfigIssue, Secret, Validate};
use dms_common::store::config::{SqliteStoreConfig, StoreConfig};
use serde::{Deserialize, Serialize};

/// The config file used when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/dms-replica.yaml";

/// The replica's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This replica's name at the master: 1-64 characters of letters, digits, `.`, `_`, `-`.
    /// The master keeps one journal cursor and one sync history per name.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// The master to follow.
    #[serde(default)]
    pub master: MasterLink,
    /// HTTP listener (health, status, the read API).
    #[serde(default)]
    pub http: HttpConfig,
    /// The local state file: the replica's cursor, history id and repair history (SQLite).
    #[serde(default)]
    pub state: StateConfig,
    /// The replica's own bar store.
    #[serde(default = "default_store")]
    pub store: StoreConfig,
    /// How often the replica compares its digests with the master's and pulls what differs,
    /// even when the stream reported nothing wrong. `0s` turns it off.
    #[serde(default = "default_anti_entropy")]
    pub anti_entropy_interval: ConfigDuration,
    /// `/readyz` answers ready while connected and no further behind the master than this.
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag: ConfigDuration,
    /// How long shutdown waits for the batch being applied.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: ConfigDuration,
    /// Bearer tokens for the replica's HTTP API: reads (status, bars) need the read-only or
    /// the full token, `POST /api/replica/pull` and `/api/replica/anti-entropy` the full one.
    /// Required when `http.listen` is not a loopback address.
    #[serde(default)]
    pub auth: dms_common::auth::AuthConfig,
}

/// How to reach the master.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterLink {
    /// The master's address (its `http.listen` port; gRPC is served there).
    #[serde(default = "default_master_url")]
    pub url: String,
    /// The bearer token the master requires (prefer `token_file`; also settable as
    /// `DMS_MASTER__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Timeout of one connection attempt.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// With no message from the master (the master heartbeats every second) for this long, the
    /// link is taken as dead and the replica reconnects.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// First wait before reconnecting; it doubles (with jitter) up to `reconnect_max_delay`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_delay: ConfigDuration,
    /// Longest wait before reconnecting.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_delay: ConfigDuration,
    /// Compression of the stream: `zstd` (default), `gzip` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// TLS to the master (with an `https://` url): the CA that signed the master's
    /// certificate and, when the master requires client certificates (mutual TLS), this
    /// replica's certificate and key. The files are read at every connection, so renewed ones
    /// are picked up at the next reconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MasterTlsConfig>,
}

/// `master.tls`: how the replica checks the master and proves who it is.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterTlsConfig {
    /// PEM file with the CA certificate(s) the master's certificate must be signed by.
    pub ca: PathBuf,
    /// PEM file with this replica's client certificate (mutual TLS); needs `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl MasterTlsConfig {
    /// Problems with the section: unreadable or invalid files, a certificate without its key.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        use dms_common::tls::{read_certs, read_key};
        let mut issues = Vec::new();
        if let Err(i) = read_certs("master.tls.ca", &self.ca) {
            issues.push(i);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                if let Err(i) = read_certs("master.tls.cert", cert) {
                    issues.push(i);
                }
                if let Err(i) = read_key("master.tls.key", key) {
                    issues.push(i);
                }
            }
            (Some(_), None) => issues.push(ConfigIssue::new(
                "master.tls.key",
                "master.tls.cert is set: give its private key too",
            )),
            (None, Some(_)) => issues.push(ConfigIssue::new(
                "master.tls.cert",
                "master.tls.key is set: give its certificate too",
            )),
            (None, None) => {}
        }
        issues
    }
}

/// HTTP listener settings (default port 11184).
pub type HttpConfig = dms_common::daemon::HttpConfig<11184>;

/// Local state settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// SQLite file holding the cursor, history id and repair history; created if missing.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
}

/// This machine's host name as a node id, so two replicas on two machines never share one
/// by default: characters outside `A-Za-z0-9._-` become `-`, cut to 64. Empty when the host
/// name cannot be read (validation then asks for `node_id`).
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    node_id_of(host.trim())
}

/// `host` as a node id (see [`default_node_id`]).
fn node_id_of(host: &str) -> String {
    host.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '-',
        })
        .take(64)
        .collect()
}
fn default_master_url() -> String {
    "http://127.0.0.1:11183".into()
}
fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_idle_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_reconnect_min() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_millis(200))
}
fn default_reconnect_max() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_compression() -> String {
    "zstd".into()
}
fn default_state_path() -> PathBuf {
    PathBuf::from("./data/replica-state.db")
}
fn default_store() -> StoreConfig {
    StoreConfig::Sqlite(SqliteStoreConfig {
        path: PathBuf::from("./data/replica-bars.db"),
        cache: config::ByteSize(64 << 20),
    })
}
fn default_anti_entropy() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}
fn default_ready_max_lag() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_shutdown_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

impl Default for MasterLink {
    fn default() -> Self {
        MasterLink {
            url: default_master_url(),
            token: None,
            token_file: None,
            connect_timeout: default_connect_timeout(),
            idle_timeout: default_idle_timeout(),
            reconnect_min_delay: default_reconnect_min(),
            reconnect_max_delay: default_reconnect_max(),
            compression: default_compression(),
            tls: None,
        }
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            path: default_state_path(),
        }
    }
}

impl MasterLink {
    /// The token to present, if one is configured.
    pub fn resolve_token(&self) -> Result<Option<Secret>, ConfigIssue> {
        config::TokenConfig {
            token: self.token.clone(),
            token_file: self.token_file.clone(),
        }
        .resolve("master")
    }
}

impl Validate for ReplicaConfig {
    fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = self.auth.issues();
        let auth_enabled = self.auth.token.is_some() || self.auth.token_file.is_some();
        issues.extend(self.http.exposure_issue(auth_enabled));
        let id = &self.node_id;
        if id.is_empty() {
            issues.push(ConfigIssue::new(
                "node_id",
                "is empty and this machine's host name could not be read: set the replica's name",
            ));
        } else if id.len() > 64
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            issues.push(ConfigIssue::new(
                "node_id",
                format!("{id:?} must be 1-64 characters of letters, digits, '.', '_' and '-'"),
            ));
        }
        if !(self.master.url.starts_with("http://") || self.master.url.starts_with("https://")) {
            issues.push(ConfigIssue::new(
                "master.url",
                format!("{:?} must start with http:// or https://", self.master.url),
            ));
        } else if tonic::transport::Endpoint::from_shared(self.master.url.clone()).is_err() {
            issues.push(ConfigIssue::new(
                "master.url",
                format!("{:?} is not a valid URL", self.master.url),
            ));
        }
        if let Err(issue) = self.master.resolve_token() {
            issues.push(issue);
        }
        let https = self.master.url.starts_with("https://");
        match &self.master.tls {
            Some(tls) if https => issues.extend(tls.issues()),
            Some(_) => issues.push(ConfigIssue::new(
                "master.tls",
                format!(
                    "is set but master.url {:?} is plaintext: use https://",
                    self.master.url
                ),
            )),
            None if https => issues.push(ConfigIssue::new(
                "master.tls.ca",
                "an https:// master url needs the CA that signed the master's certificate",
            )),
            None => {}
        }
        if !matches!(self.master.compression.as_str(), "zstd" | "gzip" | "none") {
            issues.push(ConfigIssue::new(
                "master.compression",
                format!("{:?}; use zstd, gzip or none", self.master.compression),
            ));
        }
        for (key, d) in [
            ("master.connect_timeout", self.master.connect_timeout),
            ("master.idle_timeout", self.master.idle_timeout),
            (
                "master.reconnect_min_delay",
                self.master.reconnect_min_delay,
            ),
            ("shutdown_timeout", self.shutdown_timeout),
        ] {
            if d.0.is_zero() {
                issues.push(ConfigIssue::new(key, "must be more than 0s"));
            }
        }
        issues.extend(self.http.validate());
        if self.master.reconnect_max_delay < self.master.reconnect_min_delay {
            issues.push(ConfigIssue::new(
                "master.reconnect_max_delay",
                "must not be less than master.reconnect_min_delay",
            ));
        }
        match &self.store {
            StoreConfig::Sqlite(s) => {
                if s.path == self.state.path {
                    issues.push(ConfigIssue::new(
                        "store.path",
                        "must differ from state.path (the store and the state are separate files)",
                    ));
                }
            }
            StoreConfig::Postgres(_) | StoreConfig::Mysql(_) | StoreConfig::Influxdb(_) => {}
        }
        issues.extend(self.store.validate());
        issues
    }
}

impl ReplicaConfig {
    /// Loads and validates the config at `path` with overrides from the process environment.
    pub fn load(path: &Path) -> Result<ReplicaConfig, ConfigError> {
        config::load(path, std::env::vars())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ReplicaConfig, ConfigError> {
        config::load_str(Path::new("dms-replica.yaml"), text, Vec::new())
    }

    #[test]
    fn empty_config_follows_a_local_master() {
        let c = load("").unwrap();
        assert_eq!(c.master.url, "http://127.0.0.1:11183");
        assert_eq!(c.http.listen.port(), 11184);
        assert_eq!(
            c.node_id,
            node_id_of(
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .unwrap()
                    .trim()
            )
        );
        assert!(!c.node_id.is_empty());
    }

    #[test]
    fn a_host_name_becomes_a_valid_node_id() {
        assert_eq!(node_id_of("db-01.example.com"), "db-01.example.com");
        assert_eq!(node_id_of("büro pc"), "b-ro-pc");
        assert_eq!(node_id_of(&"x".repeat(100)).len(), 64);
        assert!(load(&format!("node_id: {}\n", node_id_of("büro pc"))).is_ok());
    }

    #[test]
    fn shipped_default_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dms-replica.yaml");
        let c: ReplicaConfig = config::load(&path, Vec::new()).expect("shipped config loads");
        assert_eq!(c.http.listen.port(), 11184);
    }

    #[test]
    fn errors_name_the_key_and_secrets_are_never_printed() {
        let err = load("node_id: 'a b'\n").unwrap_err().to_string();
        assert!(err.contains("node_id"), "{err}");
        let err = load("master:\n  url: 127.0.0.1:11183\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("master.url"), "{err}");
        let err = load("master:\n  compression: lz4\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("master.compression"), "{err}");
        let c = load("master:\n  token: s3cret-value-0123456789abcdef0123456789\n").unwrap();
        let printed = serde_json::to_string(&c).unwrap();
        assert!(!printed.contains("s3cret-value"), "{printed}");
        assert!(!format!("{c:?}").contains("s3cret-value"));
        let err = load("master:\n  token: s3cret-short\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(!err.contains("s3cret-short"), "{err}");
        let err = load("http:\n  listen: 0.0.0.0:11184\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.listen") && err.contains("auth.token_file"),
            "{err}"
        );
    }

    #[test]
    fn master_tls_must_fit_the_url_and_name_its_files() {
        let err = load("master:\n  url: https://127.0.0.1:11183\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("master.tls.ca"), "{err}");
        let err = load("master:\n  tls:\n    ca: /nonexistent/ca.pem\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("master.tls") && err.contains("https://"),
            "{err}"
        );
        let err = load(
            "master:\n  url: https://127.0.0.1:11183\n  tls:\n    ca: /nonexistent/ca.pem\n    cert: /nonexistent/c.pem\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("master.tls.ca") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        assert!(err.contains("master.tls.key"), "{err}");
    }
}
