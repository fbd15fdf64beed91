//! The backup tasks: writing a backup (then the retention), verifying one, restoring one into
//! the store through the journal (or reporting what that would change), and checking the store
//! against one. See [`crate::data::backup`] for what a backup holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dms_common::journal::Origin;
use dms_common::store::BarStore;
use dms_common::{SeriesBars, TimeRange};
use futures::TryStreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Run, Stop, TaskManager};
use crate::data::backup::store::BackupStore;
use crate::data::backup::verify::{VerifyReport, verify};
use crate::data::backup::write::{BackupSource, Progress, write_backup};
use crate::tasks::store::Checkpoint;
use crate::tasks::{Task, TaskCounters};

type Outcome = Result<TaskCounters, (Stop, TaskCounters)>;

/// Bars journaled at a time by a restore.
const RESTORE_PAGE: usize = 50_000;

/// The name of a backup directory.
fn name_of(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// "backup X is damaged: first problem (and N more); …".
fn damaged(name: &str, report: &VerifyReport) -> String {
    let more = match report.problems.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more problems)", n - 1),
    };
    format!(
        "backup {name} is damaged: {}{more}",
        report.problems.first().map_or("", String::as_str)
    )
}

impl TaskManager {
    /// Writes a backup into `backup.dir`, then removes the backups the retention lets go.
    pub(super) async fn backup(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Outcome {
        let source = BackupSource {
            store: self.ctx.store.clone(),
            sqlite_store: self.ctx.files.sqlite_store.clone(),
            state: self.ctx.files.state_path.clone(),
            journal_head: self.ctx.journal.head().0,
        };
        let dir = self.ctx.files.backup_dir.clone();
        tracing::info!(dir = %dir.display(), "backup begins");
        let (seen, mut progress) = watch::channel(Progress::default());
        let stop = CancellationToken::new();
        let write = write_backup(&source, &dir, &task.id, &stop, |p| {
            seen.send_replace(p);
        });
        tokio::pin!(write);
        let mut why = None;
        let result = loop {
            tokio::select! {
                r = &mut write => break r,
                Ok(()) = progress.changed() => {
                    let p = *progress.borrow_and_update();
                    counters.series_total = p.series_total;
                    counters.series_done = p.series_done;
                    counters.bars_written = p.bars;
                    run.stamp(&mut counters);
                    let message = format!(
                        "backup: {} of {} series, {} bars",
                        p.series_done, p.series_total, p.bars
                    );
                    self.report(task, &counters, message).await;
                }
                _ = cancel.cancelled(), if why.is_none() => {
                    why = Some(Stop::Cancelled);
                    stop.cancel();
                }
                _ = shutdown.cancelled(), if why.is_none() => {
                    why = Some(Stop::Shutdown);
                    stop.cancel();
                }
            }
        };
        let manifest = match (result, why) {
            (Ok(m), _) => m,
            (Err(_), Some(stop)) => return Err((stop, counters)),
            (Err(e), None) => return Err((Stop::Failed(e), counters)),
        };
        let done = dir.join(&manifest.name);
        counters.backup = Some(done.display().to_string());
        counters.series_done = manifest.series.len() as u64;
        counters.series_total = counters.series_done;
        counters.bars_written = manifest.bars;
        let removed = {
            let (dir, config, name) = (
                dir.clone(),
                self.ctx.files.backup.clone(),
                manifest.name.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::data::backup::retention::apply(&dir, &config, &name)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
        };
        let removed = match removed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the backup retention could not be applied");
                Vec::new()
            }
        };
        let bytes: u64 = manifest.series.iter().map(|s| s.bytes).sum::<u64>()
            + manifest.files.iter().map(|f| f.bytes).sum::<u64>();
        let removed_note = match removed.len() {
            0 => String::new(),
            n => format!("; {n} older backups removed by the retention"),
        };
        counters.outcome = Some(format!(
            "backup {} written: {} series, {} bars, {} bytes{removed_note}",
            manifest.name,
            manifest.series.len(),
            manifest.bars,
            bytes
        ));
        tracing::info!(backup = %done.display(), series = manifest.series.len(), bars = manifest.bars, removed = ?removed, "backup written");
        Ok(counters)
    }

    /// Checks a backup's files against its manifest (sizes, SHA-256, and each series' bars
    /// against its count and digest). A damaged backup fails the task, naming the files.
    pub(super) async fn verify_backup(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
    ) -> Outcome {
        let dir = PathBuf::from(task.params.backup.clone().unwrap_or_default());
        let name = name_of(&dir);
        let backup = match BackupStore::open(&dir) {
            Ok(b) => b,
            Err(e) => return Err((Stop::Failed(e), counters)),
        };
        let manifest = backup.manifest().clone();
        counters.series_total = manifest.series.len() as u64;
        let (seen, mut progress) = watch::channel((0u64, 0u64));
        let check = tokio::task::spawn_blocking(move || {
            verify(&dir, &manifest, true, |done, total| {
                seen.send_replace((done, total));
            })
        });
        tokio::pin!(check);
        let report = loop {
            tokio::select! {
                r = &mut check => break r,
                Ok(()) = progress.changed() => {
                    let (done, total) = *progress.borrow_and_update();
                    run.stamp(&mut counters);
                    self.report(task, &counters, format!("verifying {name}: {done} of {total} files")).await;
                }
            }
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => return Err((Stop::Failed(e.to_string()), counters)),
        };
        counters.series_done = report.series_checked;
        counters.bars_unchanged = report.bars_checked;
        let ok = report.ok();
        let message = damaged(&name, &report);
        counters.outcome = Some(format!(
            "backup {name}: {} files checked, {} bars, {}",
            report.files_checked,
            report.bars_checked,
            if ok {
                "every file matches the manifest".to_owned()
            } else {
                format!("{} problems", report.problems.len())
            }
        ));
        counters.verify = Some(report);
        if ok {
            Ok(counters)
        } else {
            Err((Stop::Failed(message), counters))
        }
    }

    /// Restores a backup into the store through the journal (replicas receive it): each
    /// series' bars that the store does not hold with the same values are journaled; bars the
    /// store holds beyond the backup are kept. The backup's files are checked first: a damaged
    /// backup is refused, naming the file. Resumes past the series restored before a restart.
    /// With `dry_run`, only reports what a restore would change.
    pub(super) async fn restore(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Outcome {
        let dir = PathBuf::from(task.params.backup.clone().unwrap_or_default());
        let name = name_of(&dir);
        let backup = match BackupStore::open(&dir) {
            Ok(b) => b,
            Err(e) => return Err((Stop::Failed(e), counters)),
        };
        self.report(task, &counters, format!("checking the files of {name}"))
            .await;
        let report = {
            let (dir, manifest) = (dir.clone(), backup.manifest().clone());
            tokio::task::spawn_blocking(move || verify(&dir, &manifest, false, |_, _| {})).await
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => return Err((Stop::Failed(e.to_string()), counters)),
        };
        if !report.ok() {
            let message = format!("{}; nothing was restored", damaged(&name, &report));
            counters.verify = Some(report);
            return Err((Stop::Failed(message), counters));
        }
        if task.params.dry_run {
            return compared(&backup, &*self.ctx.store, counters, |r| {
                format!(
                    "dry run of restoring {name}: {} bars would be added, {} changed; {} of {} series already equal; {} stored bars that the backup does not hold would be kept",
                    r.bars_missing, r.bars_changed, r.series_equal, r.series_compared, r.bars_extra
                )
            })
            .await;
        }
        let series = match backup.overview().await {
            Ok(s) => s,
            Err(e) => return Err((Stop::Failed(e.to_string()), counters)),
        };
        counters.series_total = series.len() as u64;
        let done = self.done_series(&task.id).await;
        counters.series_resumed = done.len() as u64;
        let origin = Origin {
            task_id: task.id.clone(),
            source: format!("backup {name}"),
        };
        let reconciler = self.reconciler();
        for o in series {
            let key = o.key;
            if done.contains(&(key.symbol.to_string(), key.interval.to_string())) {
                continue;
            }
            if cancel.is_cancelled() {
                return Err((Stop::Cancelled, counters));
            }
            if shutdown.is_cancelled() {
                return Err((Stop::Shutdown, counters));
            }
            let mut pages = backup.read_paged(&key, TimeRange::all(), RESTORE_PAGE);
            loop {
                let page = match pages.try_next().await {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => return Err((Stop::Failed(format!("{key}: {e}")), counters)),
                };
                let read = page.len() as u64;
                let keep = reconciler.changed(&key, &page).await;
                counters.bars_unchanged += read - keep.len() as u64;
                if keep.is_empty() {
                    continue;
                }
                let batch = vec![SeriesBars::new(key.clone(), keep)];
                let report = self
                    .until_written(task, "the restored bars", || {
                        self.ctx.ingestor.ingest(batch.clone(), &origin)
                    })
                    .await;
                counters.bars_written += report.accepted;
                counters.bars_rejected += report.rejected;
            }
            counters.series_done += 1;
            run.stamp(&mut counters);
            let tasks = &self.ctx.tasks;
            let snapshot = counters.clone();
            self.until_written(task, "the task's checkpoint", || {
                tasks.checkpoint(&task.id, &key, Checkpoint::Done, &snapshot)
            })
            .await;
            let message = format!(
                "restoring {name}: {} of {} series, {} bars written, {} unchanged",
                counters.series_done,
                counters.series_total,
                counters.bars_written,
                counters.bars_unchanged
            );
            self.report(task, &counters, message).await;
        }
        // The store holds what was journaled before it is compared with the backup.
        let head = self.ctx.journal.head();
        let mut applied = self.ctx.applied.clone();
        self.report(
            task,
            &counters,
            "waiting for the store to apply the restored bars".into(),
        )
        .await;
        loop {
            if *applied.borrow_and_update() >= head {
                break;
            }
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters)),
            }
        }
        let report = match crate::data::consistency::compare(&backup, &*self.ctx.store, 1000).await
        {
            Ok(r) => r,
            Err(e) => {
                return Err((
                    Stop::Failed(format!("the check after the restore: {e}")),
                    counters,
                ));
            }
        };
        let complete = report.bars_missing == 0 && report.bars_changed == 0;
        counters.outcome = Some(format!(
            "restored {name}: {} of {} series, {} bars written, {} already stored{}",
            counters.series_done,
            counters.series_total,
            counters.bars_written,
            counters.bars_unchanged,
            if report.bars_extra > 0 {
                format!(
                    "; the store also holds {} bars the backup does not (kept)",
                    report.bars_extra
                )
            } else {
                String::new()
            }
        ));
        let summary = format!(
            "{} bars of the backup missing from the store, {} different",
            report.bars_missing, report.bars_changed
        );
        counters.check = Some(report);
        if complete {
            Ok(counters)
        } else {
            Err((
                Stop::Failed(format!("after the restore, {summary}")),
                counters,
            ))
        }
    }

    /// Compares the store with a backup: every series by its bucket digests, every differing
    /// bar listed (the store is the source, the backup the target).
    pub(super) async fn check_backup(&self, dir: &str, counters: TaskCounters) -> Outcome {
        let backup = match BackupStore::open(Path::new(dir)) {
            Ok(b) => b,
            Err(e) => return Err((Stop::Failed(e), counters)),
        };
        let what = format!("backup {}", name_of(Path::new(dir)));
        self.check_other(&backup, &what, counters).await
    }

    /// Compares the store with what a replica serves through its read API, bar by bar.
    pub(super) async fn check_replica(&self, name: &str, counters: TaskCounters) -> Outcome {
        let replica = match self
            .ctx
            .targets
            .replica(name)
            .and_then(crate::data::replica_store::ReplicaStore::new)
        {
            Ok(r) => r,
            Err(e) => return Err((Stop::Invalid(e), counters)),
        };
        self.check_other(&replica, &format!("replica {name}"), counters)
            .await
    }

    /// Compares the store (the source) with `other` (the target), every differing bar listed.
    async fn check_other(
        &self,
        other: &dyn BarStore,
        what: &str,
        counters: TaskCounters,
    ) -> Outcome {
        compared(&*self.ctx.store, other, counters, |r| {
            format!(
                "store vs {what}: {} series compared, {} equal; {} bars missing from it, {} extra in it, {} changed",
                r.series_compared, r.series_equal, r.bars_missing, r.bars_extra, r.bars_changed
            )
        })
        .await
    }
}

/// Compares `source` with `target` (every differing bar listed) into the task's counters, with
/// the outcome `say` gives.
async fn compared(
    source: &dyn BarStore,
    target: &dyn BarStore,
    mut counters: TaskCounters,
    say: impl FnOnce(&crate::data::consistency::CompareReport) -> String,
) -> Outcome {
    let report = match crate::data::consistency::compare(source, target, 1000).await {
        Ok(r) => r,
        Err(e) => {
            return Err((
                Stop::Failed(format!("the check cannot read: {e}")),
                counters,
            ));
        }
    };
    counters.series_total = report.series_compared;
    counters.series_done = report.series_compared;
    counters.outcome = Some(say(&report));
    counters.check = Some(report);
    Ok(counters)
}
