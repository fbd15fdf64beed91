//! Backups: a consistent, self-describing copy of the bars and of the master's state in a
//! directory of its own, which `verify` checks, `restore` reads back through the journal, and
//! the consistency check compares with a store.
//!
//! A backup is a directory `<backup.dir>/dms-backup-<UTC time>` holding:
//! - `series/<symbol>_<interval>.parquet`: every bar of each series, one Parquet file per
//!   series in the export's schema ([`crate::data::export::parquet::SCHEMA`]), readable by any
//!   Parquet reader; the portable part, whatever the store's backend;
//! - `store.sqlite`: for a SQLite store, a copy of the database made with SQLite's online
//!   backup API in one step over one read snapshot (WAL: writers go on meanwhile);
//! - `state.db`: the state file (journal, tasks, catalog, schedules), copied the same way;
//! - [`MANIFEST`]: a [`Manifest`], written last: per series its count, first and last bar,
//!   digest ([`dms_common::store::digest`], computed from the bars as written) and the file's
//!   SHA-256 and size; the same for the other files.
//!
//! A backup is written under `.<name>.partial` and renamed once its manifest is on disk: a
//! directory without the dot prefix and with a manifest is complete. Series are read one by
//! one in pages, so ingest is never held back (each page is one short read transaction).
//!
//! # Layout
//!
//! - this module: the [`Manifest`] and finding a backup by name.
//! - [`write`](mod@write): writing one (the backup task); [`verify`]: its files against the
//!   manifest; [`store`]: [`store::BackupStore`], a backup as a read-only bar store, for
//!   restore and the consistency check; [`retention`]: which backups are kept.

#[cfg(test)]
mod conformance;
pub mod retention;
pub mod store;
pub mod verify;
pub mod write;

use std::path::{Path, PathBuf};

use dms_common::SeriesKey;
use dms_common::config::ConfigIssue;
use serde::{Deserialize, Serialize};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// What a manifest's `format` says.
pub const FORMAT: &str = "dms-backup";
/// The manifest version written (and the newest read).
pub const VERSION: u32 = 1;
/// The prefix of a backup's directory name.
pub const PREFIX: &str = "dms-backup-";

/// `backup:` in the master's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Where backups are written (default: `backups/` beside the state file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The newest backups kept whatever their age.
    #[serde(default = "default_keep_last")]
    pub keep_last: u32,
    /// Besides: the newest backup of each of the last N days (UTC) that has one.
    #[serde(default = "default_keep_daily")]
    pub keep_daily: u32,
    /// Besides: the newest backup of each of the last N ISO weeks that has one.
    #[serde(default = "default_keep_weekly")]
    pub keep_weekly: u32,
}

fn default_keep_last() -> u32 {
    3
}

fn default_keep_daily() -> u32 {
    7
}

fn default_keep_weekly() -> u32 {
    4
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            dir: None,
            keep_last: default_keep_last(),
            keep_daily: default_keep_daily(),
            keep_weekly: default_keep_weekly(),
        }
    }
}

impl BackupConfig {
    /// What is wrong with the settings.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.keep_last == 0 {
            issues.push(ConfigIssue::new(
                "backup.keep_last",
                "must be at least 1 (the newest backup is always kept)",
            ));
        }
        if let Some(d) = &self.dir
            && d.as_os_str().is_empty()
        {
            issues.push(ConfigIssue::new("backup.dir", "must not be empty"));
        }
        issues
    }

    /// The backup directory (absolute), given the directory of the state file.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| state_dir.join("backups"));
        std::path::absolute(&dir).unwrap_or(dir)
    }
}

/// A backup's description, written last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    pub version: u32,
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_at_ms: i64,
    pub dms_version: String,
    pub task_id: String,
    /// The store's backend (`sqlite`, `postgres`, …).
    pub store_backend: String,
    /// The journal's head when the backup began: every entry up to it is in the bars.
    pub journal_head: u64,
    pub bars: u64,
    pub series: Vec<SeriesEntry>,
    /// The other files (`state.db`, `store.sqlite`).
    pub files: Vec<FileEntry>,
}

/// One series' file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesEntry {
    pub symbol: String,
    pub interval: String,
    /// Relative to the backup's directory.
    pub file: String,
    pub bars: u64,
    /// RFC 3339 of the first and the last bar.
    pub first: String,
    pub last: String,
    /// The digest of the series' bars ([`dms_common::store::digest::Digest::hash_hex`]).
    pub digest: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Another file of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the backup's directory.
    pub name: String,
    /// `state` or `store`.
    pub kind: String,
    pub sha256: String,
    pub bytes: u64,
}

impl SeriesEntry {
    /// The series the entry holds.
    pub fn key(&self) -> Result<SeriesKey, String> {
        let symbol = dms_common::Symbol::new(&self.symbol)
            .map_err(|e| format!("manifest: series {:?}: {e}", self.symbol))?;
        let interval = self.interval.parse().map_err(|_| {
            format!(
                "manifest: series {}: bad interval {:?}",
                self.symbol, self.interval
            )
        })?;
        Ok(SeriesKey::new(symbol, interval))
    }
}

/// The file of a series within a backup: `series/<symbol>_<interval>.parquet`, the symbol with
/// every byte other than letters, digits, `.` and `-` written `%XX` (so names are unique and
/// safe on every file system).
pub fn series_file(key: &SeriesKey) -> String {
    let mut name = String::from("series/");
    for b in key.symbol.as_str().bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push('_');
    name.push_str(key.interval.as_str());
    name.push_str(".parquet");
    name
}

/// Reads a backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        format!(
            "{}: {e} (not a complete backup: the manifest is written last)",
            path.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not a backup manifest: {e}", path.display()))?;
    if manifest.format != FORMAT || manifest.version > VERSION {
        return Err(format!(
            "{}: format {:?} version {} is not one this master reads ({FORMAT} up to {VERSION})",
            path.display(),
            manifest.format,
            manifest.version
        ));
    }
    Ok(manifest)
}

/// A backup as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub path: String,
    pub created_at: String,
    pub created_at_ms: i64,
    pub series: u64,
    pub bars: u64,
    /// Bytes of its files.
    pub bytes: u64,
}

/// The complete backups in `dir`, newest first (an unreadable manifest is logged and left out).
pub fn list(dir: &Path) -> Result<Vec<BackupInfo>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) || !entry.path().is_dir() {
            continue;
        }
        match read_manifest(&entry.path()) {
            Ok(m) => found.push(BackupInfo {
                name,
                path: entry.path().display().to_string(),
                created_at: m.created_at,
                created_at_ms: m.created_at_ms,
                series: m.series.len() as u64,
                bars: m.bars,
                bytes: m.series.iter().map(|s| s.bytes).sum::<u64>()
                    + m.files.iter().map(|f| f.bytes).sum::<u64>(),
            }),
            Err(e) => tracing::warn!(backup = %name, error = %e, "not listed"),
        }
    }
    found.sort_by(|a, b| {
        b.created_at_ms
            .cmp(&a.created_at_ms)
            .then(b.name.cmp(&a.name))
    });
    Ok(found)
}

/// The directory of the backup `name` (a name in `dir`, or an absolute path inside `dir` or
/// one of `allowed`, after symlinks and `..` are resolved), checked to hold a manifest.
pub fn resolve(dir: &Path, name: &str, allowed: &[PathBuf]) -> Result<PathBuf, String> {
    let name = name.trim();
    let shown = dms_common::http_rules::excerpt(name);
    let path = if Path::new(name).is_absolute() {
        let inside = |real: &Path| {
            std::iter::once(dir)
                .chain(allowed.iter().map(PathBuf::as_path))
                .filter_map(|d| d.canonicalize().ok())
                .any(|d| real.starts_with(&d) && real != d)
        };
        match Path::new(name).canonicalize() {
            Ok(real) if inside(&real) => real,
            _ => {
                return Err(format!(
                    "{shown:?} is not a backup in backup.dir or file_import.allowed_dirs"
                ));
            }
        }
    } else if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!(
            "{shown:?} is not a backup name (give a name as listed)"
        ));
    } else {
        dir.join(name)
    };
    if !path.join(MANIFEST).is_file() {
        return Err(format!(
            "no backup {shown:?}: {} has no {MANIFEST}",
            path.display()
        ));
    }
    Ok(path)
}

/// The SHA-256 of a file (hex) and its size.
pub fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((hex(&hasher.finalize()), bytes))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_files_are_unique_and_safe() {
        let key = |s: &str, i: &str| {
            SeriesKey::new(dms_common::Symbol::new(s).unwrap(), i.parse().unwrap())
        };
        assert_eq!(series_file(&key("GOOG", "1d")), "series/GOOG_1d.parquet");
        assert_eq!(
            series_file(&key("EURUSD=X", "1h")),
            "series/EURUSD%3DX_1h.parquet"
        );
        assert_eq!(
            series_file(&key("^GSPC", "1d")),
            "series/%5EGSPC_1d.parquet"
        );
        assert_eq!(series_file(&key("A_B", "1d")), "series/A%5FB_1d.parquet");
    }

    #[test]
    fn names_resolve_within_the_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("dms-backup-x");
        std::fs::create_dir_all(&b).unwrap();
        assert!(
            resolve(dir.path(), "dms-backup-x", &[])
                .unwrap_err()
                .contains("no manifest.json")
        );
        std::fs::write(b.join(MANIFEST), "{}").unwrap();
        assert_eq!(resolve(dir.path(), "dms-backup-x", &[]).unwrap(), b);
        assert!(
            resolve(dir.path(), "../etc", &[])
                .unwrap_err()
                .contains("not a backup name")
        );
        // By absolute path: inside the backup directory, or an allowed one, only.
        let real = b.canonicalize().unwrap();
        assert_eq!(resolve(dir.path(), b.to_str().unwrap(), &[]).unwrap(), real);
        let elsewhere = tempfile::tempdir().unwrap();
        let other = elsewhere.path().join("dms-backup-y");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join(MANIFEST), "{}").unwrap();
        let outside = resolve(dir.path(), other.to_str().unwrap(), &[]).unwrap_err();
        assert!(outside.contains("not a backup in backup.dir"), "{outside}");
        let allowed = [elsewhere.path().to_path_buf()];
        assert!(resolve(dir.path(), other.to_str().unwrap(), &allowed).is_ok());
        let dotdot = format!("{}/../../etc", b.display());
        assert!(resolve(dir.path(), &dotdot, &[]).is_err());
        assert!(
            read_manifest(&b)
                .unwrap_err()
                .contains("not a backup manifest")
        );
    }
}
