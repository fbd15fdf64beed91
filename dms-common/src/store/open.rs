//! [`open_store`]: from a [`StoreConfig`] to a running store of its backend. Kept apart from
//! the config types so that backends can use those types without depending on each other.

use std::sync::Arc;

use super::config::{SqliteStoreConfig, StoreConfig};
use super::influx::{InfluxOptions, InfluxStore};
use super::mysql::MysqlStore;
use super::postgres::PostgresStore;
use super::sqlite::{SqliteOptions, SqliteStore};
use super::{SharedStore, StoreError};

/// Opens the configured bar store (a network backend connects and prepares its schema).
pub async fn open_store(config: &StoreConfig) -> Result<SharedStore, StoreError> {
    match config {
        StoreConfig::Sqlite(SqliteStoreConfig { path, cache }) => {
            let options = SqliteOptions {
                cache_kib: (cache.0 / 1024).clamp(1024, u32::MAX as u64) as u32,
                ..SqliteOptions::default()
            };
            let store = SqliteStore::open_with(path, options).map_err(|e| {
                StoreError::unavailable(format!(
                    "cannot open the SQLite store {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Arc::new(store))
        }
        StoreConfig::Postgres(server) => Ok(Arc::new(PostgresStore::open(server).await?)),
        StoreConfig::Mysql(server) => Ok(Arc::new(MysqlStore::open(server).await?)),
        StoreConfig::Influxdb(c) => {
            let target = c
                .target()
                .map_err(|e| StoreError::refused(format!("{}: {}", e.key, e.message)))?;
            let store = InfluxStore::open(InfluxOptions {
                url: c.url.clone(),
                target,
                measurement: c.measurement.clone(),
                batch_size: c.batch_size,
                shard_duration: c.shard_duration.clone(),
            })
            .await?;
            Ok(Arc::new(store))
        }
    }
}
