//! `StoreConfig`: the bar store a daemon writes, chosen by `type` in its config, and
//! [`open_store`], which opens it. Shared by the master and the replica.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::SharedStore;
use super::sqlite::{SqliteOptions, SqliteStore};
use crate::config::{self, ByteSize};

/// The primary bar store, chosen by `type` (default `sqlite`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Embedded SQLite file (the default).
    Sqlite(SqliteStoreConfig),
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

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        // One backend so far; the tag still selects it, so configs stay valid as more come.
        config::deserialize_tagged(value, "type", Some("sqlite"), &["sqlite"], |_, rest| {
            config::from_value_at(rest).map(StoreConfig::Sqlite)
        })
    }
}

/// The default store file of a daemon whose data lives in `./data`.
pub fn default_store_path() -> PathBuf {
    PathBuf::from("./data/bars.db")
}
fn default_store_cache() -> ByteSize {
    ByteSize(64 << 20)
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
    }
}
