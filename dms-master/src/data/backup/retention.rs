//! Which backups to keep: the newest `keep_last`, plus the newest of each of the last
//! `keep_daily` days (UTC) that has one, plus the newest of each of the last `keep_weekly` ISO
//! weeks that has one. The others are removed after each backup. Directories left by a
//! backup that did not finish (`.dms-backup-….partial`) are removed too.

use std::collections::HashSet;
use std::path::Path;

use chrono::Datelike;

use super::{BackupConfig, BackupInfo};

/// The names of the backups to remove, of `backups` (newest first).
pub fn to_remove(backups: &[BackupInfo], config: &BackupConfig) -> Vec<String> {
    let mut keep: HashSet<&str> = HashSet::new();
    for b in backups.iter().take(config.keep_last as usize) {
        keep.insert(&b.name);
    }
    let day = |b: &BackupInfo| {
        chrono::DateTime::from_timestamp_millis(b.created_at_ms)
            .unwrap_or_default()
            .date_naive()
    };
    let mut days = Vec::new();
    let mut weeks = Vec::new();
    for b in backups {
        let d = day(b);
        if !days.contains(&d) && days.len() < config.keep_daily as usize {
            days.push(d);
            keep.insert(&b.name);
        }
        let w = (d.iso_week().year(), d.iso_week().week());
        if !weeks.contains(&w) && weeks.len() < config.keep_weekly as usize {
            weeks.push(w);
            keep.insert(&b.name);
        }
    }
    backups
        .iter()
        .filter(|b| !keep.contains(b.name.as_str()))
        .map(|b| b.name.clone())
        .collect()
}

/// Applies the retention in `dir` (except to `current`); returns the names removed.
pub fn apply(dir: &Path, config: &BackupConfig, current: &str) -> Result<Vec<String>, String> {
    let backups = super::list(dir)?;
    let mut removed = Vec::new();
    for name in to_remove(&backups, config) {
        if name == current {
            continue;
        }
        match std::fs::remove_dir_all(dir.join(&name)) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!(backup = %name, error = %e, "an old backup cannot be removed"),
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!(".{}", super::PREFIX))
                && name.ends_with(".partial")
                && !name.contains(current)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(name: &str, at: &str) -> BackupInfo {
        let t = chrono::DateTime::parse_from_rfc3339(at).unwrap();
        BackupInfo {
            name: name.into(),
            path: String::new(),
            created_at: at.into(),
            created_at_ms: t.timestamp_millis(),
            series: 0,
            bars: 0,
            bytes: 0,
        }
    }

    #[test]
    fn keeps_the_last_and_one_per_day_and_week() {
        // Newest first: three on Wednesday 2024-01-10, one each on the 9th, 3rd and 2nd.
        let all = vec![
            backup("w3", "2024-01-10T18:00:00Z"),
            backup("w2", "2024-01-10T12:00:00Z"),
            backup("w1", "2024-01-10T06:00:00Z"),
            backup("t", "2024-01-09T06:00:00Z"),
            backup("old-wed", "2024-01-03T06:00:00Z"),
            backup("old-tue", "2024-01-02T06:00:00Z"),
        ];
        let config = BackupConfig {
            keep_last: 2,
            keep_daily: 2,
            keep_weekly: 2,
            ..BackupConfig::default()
        };
        // Kept: w3, w2 (last 2); w3, t (2 days); w3 and old-wed (2 weeks).
        assert_eq!(to_remove(&all, &config), vec!["w1", "old-tue"]);
        let only_last = BackupConfig {
            keep_last: 1,
            keep_daily: 0,
            keep_weekly: 0,
            ..BackupConfig::default()
        };
        assert_eq!(to_remove(&all, &only_last).len(), 5);
    }
}
