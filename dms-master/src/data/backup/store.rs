//! [`BackupStore`]: a backup read as a bar store, read-only. Its overview comes from the
//! manifest; its bars from the series' Parquet files (read with the file import's Parquet
//! reader). It lets the consistency check compare a store with a backup, and a restore copy a
//! backup's series into the store through the journal, with the same code as a migration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use dms_common::store::digest::Digest;
use dms_common::store::{
    BarStore, BarStream, Capabilities, Result, SeriesOverview, StoreError, UpsertStats,
};
use dms_common::{Bar, SeriesBars, SeriesKey, TimeRange, Timestamp};
use futures::StreamExt;

use super::{Manifest, SeriesEntry};
use crate::data::import::file::read::{self, FileFormat, Item, ReadOptions};
use crate::sources::rows::{ColumnMapping, Field, FieldDefaults, RowMapper};

/// A series file and its bars.
type SeriesRead = (PathBuf, Arc<Vec<Bar>>);

/// A backup as a read-only store.
#[derive(Debug, Clone)]
pub struct BackupStore {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    /// The series file read last, with its bars: the check reads a series whole and then the
    /// buckets that differ, which would otherwise read the file again for each.
    last_read: Arc<std::sync::Mutex<Option<SeriesRead>>>,
}

impl BackupStore {
    /// Opens the backup in `dir` (reads its manifest).
    pub fn open(dir: &Path) -> std::result::Result<BackupStore, String> {
        Ok(BackupStore {
            dir: dir.to_owned(),
            manifest: Arc::new(super::read_manifest(dir)?),
            last_read: Arc::default(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, key: &SeriesKey) -> Option<&SeriesEntry> {
        self.manifest
            .series
            .iter()
            .find(|s| s.symbol == key.symbol.as_str() && s.interval == key.interval.as_str())
    }
}

/// Every bar of a series' file, in time order; an error names the file and the row.
pub fn read_series_file(path: &Path) -> std::result::Result<Vec<Bar>, String> {
    let columns: Vec<String> = Field::ALL
        .iter()
        .map(|f| match f {
            Field::Time => "ts".to_owned(),
            f => f.as_str().to_owned(),
        })
        .collect();
    let mapping = ColumnMapping {
        symbol: Some("symbol".into()),
        interval: Some("interval".into()),
        time: "ts".into(),
        open: "open".into(),
        high: "high".into(),
        low: "low".into(),
        close: "close".into(),
        volume: Some("volume".into()),
        adj_close: Some("adj_close".into()),
        turnover: Some("turnover".into()),
        open_interest: Some("open_interest".into()),
    };
    let mapper = RowMapper::new(mapping, FieldDefaults::default(), "UTC")?;
    let options = ReadOptions {
        columns,
        ..ReadOptions::default()
    };
    let mut reader = read::open(path, FileFormat::Parquet, &options).map_err(|e| e.to_string())?;
    let mut bars = Vec::new();
    let mut items = Vec::new();
    while reader
        .next_batch(65_536, &mut items)
        .map_err(|e| e.to_string())?
    {
        for item in items.drain(..) {
            match item {
                Item::Record(r) => {
                    let row = r.row;
                    let (_, bar) = mapper
                        .bar(&r.cells)
                        .map_err(|e| format!("{}: row {row}: {e}", path.display()))?;
                    bars.push(bar);
                }
                Item::Problem { row, message, .. } => {
                    return Err(format!("{}: row {row}: {message}", path.display()));
                }
            }
        }
    }
    Ok(bars)
}

fn read_only() -> StoreError {
    StoreError::refused("a backup is read-only")
}

fn parse_time(raw: &str) -> Timestamp {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| Timestamp(t.timestamp()))
        .unwrap_or(Timestamp(0))
}

#[async_trait]
impl BarStore for BackupStore {
    fn backend(&self) -> &'static str {
        "backup"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::NONE
    }

    async fn upsert(&self, _batch: &[SeriesBars]) -> Result<UpsertStats> {
        Err(read_only())
    }

    fn read_paged(&self, series: &SeriesKey, range: TimeRange, page_size: usize) -> BarStream {
        let path = self.entry(series).map(|e| self.dir.join(&e.file));
        let page_size = page_size.max(1);
        let last_read = self.last_read.clone();
        let read = async move {
            let Some(path) = path else {
                return Ok(Arc::new(Vec::new()));
            };
            let cached = last_read
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|(p, _)| *p == path)
                .map(|(_, bars)| bars.clone());
            if let Some(bars) = cached {
                return Ok(bars);
            }
            let file = path.clone();
            let bars = Arc::new(
                tokio::task::spawn_blocking(move || read_series_file(&file))
                    .await
                    .map_err(|e| StoreError::refused(e.to_string()))?
                    .map_err(StoreError::refused)?,
            );
            *last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some((path, bars.clone()));
            Ok(bars)
        };
        futures::stream::once(read)
            .map(move |bars: Result<Arc<Vec<Bar>>>| {
                let pages: Vec<Result<Vec<Bar>>> = match bars {
                    Ok(bars) => bars
                        .iter()
                        .copied()
                        .filter(|b| range.contains(b.ts))
                        .collect::<Vec<_>>()
                        .chunks(page_size)
                        .map(|c| Ok(c.to_vec()))
                        .collect(),
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(pages)
            })
            .flatten()
            .boxed()
    }

    async fn latest(&self, series: &SeriesKey) -> Result<Option<Bar>> {
        dms_common::store::latest_by_reading(self, series).await
    }

    async fn overview(&self) -> Result<Vec<SeriesOverview>> {
        self.manifest
            .series
            .iter()
            .map(|s| {
                let key = s.key().map_err(StoreError::refused)?;
                let hash = u128::from_str_radix(&s.digest, 16).map_err(|_| {
                    StoreError::corrupt(format!("manifest: {key}: bad digest {:?}", s.digest))
                })?;
                Ok(SeriesOverview {
                    key,
                    count: s.bars,
                    first: parse_time(&s.first),
                    last: parse_time(&s.last),
                    digest: Digest {
                        count: s.bars,
                        hash,
                    },
                })
            })
            .collect()
    }

    async fn delete(&self, _series: &SeriesKey, _range: TimeRange) -> Result<u64> {
        Err(read_only())
    }

    async fn check(&self) -> Result<()> {
        if self.dir.join(super::MANIFEST).is_file() {
            Ok(())
        } else {
            Err(StoreError::refused(format!(
                "{}: the backup is gone",
                self.dir.display()
            )))
        }
    }
}
