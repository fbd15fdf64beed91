//! `targets:`: the other stores and replicas a migration or a check may name. A request names a
//! target by its key in the config and never gives an address, a path or a secret itself, so
//! nobody who can reach the API can make the master connect somewhere else, read a file of its
//! choice as a password, or send the master's bars to a host of its choosing.
//!
//! ```yaml
//! targets:
//!   pg-copy:                    # a store, as under `store:`
//!     type: postgres
//!     url: postgres://dms@db.internal:5432/dms
//!     password_file: /etc/dms/pg-password
//!   replica-b:                  # a replica's read API, for checks
//!     type: replica
//!     url: https://replica-b.internal:11184
//!     token_file: /etc/dms/replica-b-token
//!     ca_file: /etc/dms/ca.pem
//! ```
//!
//! Key types: [`TargetConfig`], [`ReplicaTargetConfig`], [`Targets`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use dms_common::config::{self, ConfigIssue, Secret, TokenConfig};
use dms_common::store::config::StoreConfig;
use serde::{Deserialize, Serialize};

/// One entry of `targets:`: a store (`type: sqlite|postgres|mysql|influxdb`, the keys of
/// `store:`) or a replica (`type: replica`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TargetConfig {
    Store(StoreConfig),
    Replica(ReplicaTargetConfig),
}

impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        if value.get("type").and_then(|t| t.as_str()) == Some("replica") {
            let mut rest = value;
            if let Some(m) = rest.as_object_mut() {
                m.remove("type");
            }
            return config::from_value_at(rest).map(TargetConfig::Replica);
        }
        config::from_value_at(value).map(TargetConfig::Store)
    }
}

/// A replica's HTTP read API, compared bar by bar by a check.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaTargetConfig {
    /// The replica's HTTP address (`http://host:11184` or `https://…`).
    #[serde(serialize_with = "redacted")]
    pub url: String,
    /// The replica's read-only (or full) token, when it has `auth` (prefer `token_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding that token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) the replica's TLS certificate is checked against, for an
    /// `https://` URL signed by a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

fn redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&dms_common::store::sql::redact_url(url))
}

impl ReplicaTargetConfig {
    /// The token, its file read.
    pub fn resolve_token(&self, key: &str) -> Result<Option<Secret>, ConfigIssue> {
        TokenConfig {
            token: self.token.clone(),
            token_file: self.token_file.clone(),
        }
        .resolve(key)
    }
}

/// The configured targets by name. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Targets(Arc<BTreeMap<String, TargetConfig>>);

impl Targets {
    pub fn new(targets: BTreeMap<String, TargetConfig>) -> Targets {
        Targets(Arc::new(targets))
    }

    /// The store named `name`, or why there is none.
    pub fn store(&self, name: &str) -> Result<&StoreConfig, String> {
        match self.0.get(name) {
            Some(TargetConfig::Store(s)) => Ok(s),
            Some(TargetConfig::Replica(_)) => Err(format!(
                "target {:?} is a replica: name it as `replica` (a check), not `target`",
                dms_common::http_rules::excerpt(name)
            )),
            None => Err(self.unknown("store")),
        }
    }

    /// The replica named `name`, or why there is none.
    pub fn replica(&self, name: &str) -> Result<&ReplicaTargetConfig, String> {
        match self.0.get(name) {
            Some(TargetConfig::Replica(r)) => Ok(r),
            Some(TargetConfig::Store(_)) => Err(format!(
                "target {:?} is a store: name it as `target`, not `replica`",
                dms_common::http_rules::excerpt(name)
            )),
            None => Err(self.unknown("replica")),
        }
    }

    /// Why a name is not a target; the name itself is not repeated (a request may have put
    /// an address with a password where a name belongs).
    fn unknown(&self, kind: &str) -> String {
        let names: Vec<&str> = self
            .0
            .iter()
            .filter(|(_, t)| match t {
                TargetConfig::Store(_) => kind == "store",
                TargetConfig::Replica(_) => kind == "replica",
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let known = if names.is_empty() {
            format!("none is configured (add one under `targets:` with type {kind})")
        } else {
            format!("configured: {}", names.join(", "))
        };
        format!("no {kind} target has that name in the config's `targets:` ({known})")
    }
}

/// Problems with the `targets:` section.
pub fn validate(targets: &BTreeMap<String, TargetConfig>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (name, target) in targets {
        let key = format!("targets.{name}");
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            issues.push(ConfigIssue::new(
                &key,
                "a target's name is 1-64 letters, digits, '.', '_' and '-'",
            ));
        }
        match target {
            TargetConfig::Store(s) => {
                for mut issue in s.validate() {
                    issue.key = issue.key.replacen("store", &key, 1);
                    issues.push(issue);
                }
            }
            TargetConfig::Replica(r) => {
                if !(r.url.starts_with("http://") || r.url.starts_with("https://"))
                    || reqwest::Url::parse(&r.url).is_err()
                {
                    issues.push(ConfigIssue::new(
                        format!("{key}.url"),
                        format!("{:?} is not a replica's http:// or https:// address", r.url),
                    ));
                }
                if let Err(i) = r.resolve_token(&key) {
                    issues.push(i);
                }
                if let Some(ca) = &r.ca_file
                    && let Err(e) = std::fs::read(ca)
                {
                    issues.push(ConfigIssue::new(
                        format!("{key}.ca_file"),
                        format!("cannot read {}: {e}", ca.display()),
                    ));
                }
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> BTreeMap<String, TargetConfig> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn stores_and_replicas_are_told_apart_and_named() {
        let t = parse(serde_json::json!({
            "copy": {"type": "sqlite", "path": "/tmp/copy.db"},
            "rep": {"type": "replica", "url": "http://10.0.0.2:11184"},
        }));
        assert!(validate(&t).is_empty(), "{:?}", validate(&t));
        let t = Targets::new(t);
        assert!(matches!(t.store("copy"), Ok(StoreConfig::Sqlite(_))));
        assert_eq!(t.replica("rep").unwrap().url, "http://10.0.0.2:11184");
        assert!(t.store("rep").unwrap_err().contains("is a replica"));
        let unknown = t.store("/etc/passwd").unwrap_err();
        assert!(unknown.contains("configured: copy"), "{unknown}");
    }

    #[test]
    fn bad_entries_are_named() {
        let t = parse(serde_json::json!({"x": {"type": "replica", "url": "ftp://a"}}));
        assert_eq!(validate(&t)[0].key, "targets.x.url");
        let inline_password = serde_json::json!({
            "x": {"type": "replica", "url": "http://a", "password": "p"}
        });
        assert!(serde_json::from_value::<BTreeMap<String, TargetConfig>>(inline_password).is_err());
    }
}
