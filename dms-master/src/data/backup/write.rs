//! Writing a backup: every series to its Parquet file (read from the store in pages, encoded
//! on a blocking thread, hashed as written), the SQLite files copied with the online backup
//! API, the manifest last, then the directory renamed from `.<name>.partial` to `<name>` and
//! the retention applied.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dms_common::store::SharedStore;
use dms_common::store::digest::Digest;
use dms_common::{Bar, SeriesKey, TimeRange};
use futures::TryStreamExt;
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use super::{FORMAT, FileEntry, MANIFEST, Manifest, PREFIX, SeriesEntry, VERSION, hex};
use crate::data::export::parquet::{ParquetEncoder, ROW_GROUP_ROWS};
use crate::data::export::{Encoder, ParquetCompression};

/// Bars read from the store at a time.
const PAGE_BARS: usize = 50_000;

/// What a backup copies.
#[derive(Debug, Clone)]
pub struct BackupSource {
    pub store: SharedStore,
    /// The SQLite store's file, copied whole beside the Parquet files.
    pub sqlite_store: Option<PathBuf>,
    /// The master's state file.
    pub state: PathBuf,
    pub journal_head: u64,
}

/// How far a backup is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub series_total: u64,
    pub series_done: u64,
    pub bars: u64,
}

/// A writer that hashes and counts what goes through.
struct Hashing<W: Write> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The name of a backup begun at `at_ms`.
pub fn backup_name(at_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
    format!("{PREFIX}{}", t.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// Writes a backup of `source` into `dir`; returns its manifest. Stops (removing what it
/// wrote) when `cancel` fires between series.
pub async fn write_backup(
    source: &BackupSource,
    dir: &Path,
    task_id: &str,
    cancel: &CancellationToken,
    mut progress: impl FnMut(Progress),
) -> Result<Manifest, String> {
    let now = chrono::Utc::now();
    let name = backup_name(now.timestamp_millis());
    let partial = dir.join(format!(".{name}.partial"));
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(partial.join("series")).map_err(|e| io(&partial, e))?;
    let result = async {
        let overview = source
            .store
            .overview()
            .await
            .map_err(|e| format!("the store cannot be read: {e}"))?;
        let mut state = Progress {
            series_total: overview.len() as u64,
            ..Progress::default()
        };
        progress(state);
        let mut series = Vec::with_capacity(overview.len());
        for o in overview {
            if cancel.is_cancelled() {
                return Err("cancelled".to_owned());
            }
            let entry = write_series(&source.store, &o.key, &partial).await?;
            state.bars += entry.bars;
            state.series_done += 1;
            series.push(entry);
            progress(state);
        }
        let mut files = Vec::new();
        if let Some(store) = &source.sqlite_store {
            files.push(copy_sqlite(store, &partial, "store.sqlite", "store").await?);
        }
        files.push(copy_sqlite(&source.state, &partial, "state.db", "state").await?);
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            name: name.clone(),
            created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            created_at_ms: now.timestamp_millis(),
            dms_version: env!("CARGO_PKG_VERSION").into(),
            task_id: task_id.into(),
            store_backend: source.store.backend().into(),
            journal_head: source.journal_head,
            bars: state.bars,
            series,
            files,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        let path = partial.join(MANIFEST);
        let mut f = File::create(&path).map_err(|e| io(&path, e))?;
        f.write_all(&text).map_err(|e| io(&path, e))?;
        f.sync_all().map_err(|e| io(&path, e))?;
        sync_dir(&partial.join("series"))?;
        sync_dir(&partial)?;
        Ok(manifest)
    }
    .await;
    match result {
        Ok(manifest) => {
            let done = dir.join(&name);
            std::fs::rename(&partial, &done).map_err(|e| io(&done, e))?;
            sync_dir(dir)?;
            Ok(manifest)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes one series' Parquet file, page by page.
async fn write_series(
    store: &SharedStore,
    key: &SeriesKey,
    dir: &Path,
) -> Result<SeriesEntry, String> {
    let file_name = super::series_file(key);
    let path = dir.join(&file_name);
    let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let mut encoder = Some(
        ParquetEncoder::new(out, ParquetCompression::Zstd, ROW_GROUP_ROWS)
            .map_err(|e| format!("{}: {e}", path.display()))?,
    );
    let mut digest = Digest::default();
    let (mut first, mut last): (Option<Bar>, Option<Bar>) = (None, None);
    let mut pages = store.read_paged(key, TimeRange::all(), PAGE_BARS);
    while let Some(page) = pages
        .try_next()
        .await
        .map_err(|e| format!("{key}: the store cannot be read: {e}"))?
    {
        for b in &page {
            digest.add(b);
        }
        first = first.or(page.first().copied());
        last = page.last().copied().or(last);
        let mut enc = encoder.take().expect("put back after each page");
        let key = key.clone();
        let enc = tokio::task::spawn_blocking(move || enc.write(&key, &page).map(|()| enc))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{}: {e}", path.display()))?;
        encoder = Some(enc);
    }
    let enc = encoder.take().expect("put back after each page");
    let path2 = path.clone();
    let (sha256, bytes) = tokio::task::spawn_blocking(move || {
        let mut out = enc.into_inner()?;
        out.flush()?;
        let sha = hex(&out.hasher.finalize_reset());
        let bytes = out.bytes;
        let file = out
            .inner
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        file.sync_all()?;
        Ok::<_, crate::data::export::ExportError>((sha, bytes))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{}: {e}", path2.display()))?;
    let time = |b: Option<Bar>| {
        b.map(|b| {
            b.ts.to_datetime()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
    };
    Ok(SeriesEntry {
        symbol: key.symbol.to_string(),
        interval: key.interval.to_string(),
        file: file_name,
        bars: digest.count,
        first: time(first),
        last: time(last),
        digest: digest.hash_hex(),
        sha256,
        bytes,
    })
}

/// Copies a SQLite database with the online backup API, all pages in one step (one read
/// snapshot: a consistent copy, and in WAL mode writers are not held back).
async fn copy_sqlite(from: &Path, dir: &Path, name: &str, kind: &str) -> Result<FileEntry, String> {
    let (from, to) = (from.to_owned(), dir.join(name));
    let (sha256, bytes) = tokio::task::spawn_blocking(move || {
        let err = |e: rusqlite::Error| format!("copy of {}: {e}", from.display());
        let src = rusqlite::Connection::open_with_flags(
            &from,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        src.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        let mut dst = rusqlite::Connection::open(&to).map_err(err)?;
        {
            let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(err)?;
            loop {
                match backup.step(-1).map_err(err)? {
                    rusqlite::backup::StepResult::Done => break,
                    rusqlite::backup::StepResult::More => continue,
                    rusqlite::backup::StepResult::Busy | rusqlite::backup::StepResult::Locked => {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    _ => continue,
                }
            }
        }
        dst.pragma_update(None, "journal_mode", "DELETE")
            .map_err(err)?;
        drop(dst);
        File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("{}: {e}", to.display()))?;
        super::file_sha256(&to).map_err(|e| format!("{}: {e}", to.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(FileEntry {
        name: name.into(),
        kind: kind.into(),
        sha256,
        bytes,
    })
}
