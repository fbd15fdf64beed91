//! Tasks over the kept series (imports of a range, updates, backfills, validations): the
//! series the task selects, less those its checkpoints say are done, processed up to
//! `tasks.concurrency` at a time, each checkpointed; the ones that failed retryably get a
//! second pass after `tasks.second_pass_delay`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Run, Stop, TaskManager, rates_note};
use crate::pipeline::update::{SeriesCounts, SeriesOutcome};
use crate::sources::Source;
use crate::tasks::store::Checkpoint;
use crate::tasks::{FailedSeries, Task, TaskCounters, TaskKind};
use crate::universe::UniverseEntry;

impl TaskManager {
    /// Runs every selected series of the task not yet checkpointed, then a second pass over
    /// the ones that failed retryably.
    pub(super) async fn run_series(
        &self,
        task: &Task,
        run: &Run,
        mut counters: TaskCounters,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Result<TaskCounters, (Stop, TaskCounters)> {
        let entries = match self.ctx.universe.select(&task.params.selection()) {
            Ok(e) => e,
            // The config changed since the task was queued (a source or symbol is gone).
            Err(e) => return Err((Stop::Invalid(e), counters)),
        };
        counters.series_total = entries.len() as u64;
        let checkpoints = self
            .ctx
            .tasks
            .checkpoints(&task.id)
            .await
            .unwrap_or_default();
        let finished: HashSet<(String, String)> = checkpoints
            .iter()
            .filter(|(_, _, state, _)| state == "done" || state == "failed")
            .map(|(s, i, _, _)| (s.clone(), i.clone()))
            .collect();
        let todo: Vec<UniverseEntry> = entries
            .into_iter()
            .filter(|e| !finished.contains(&(e.key.symbol.to_string(), e.key.interval.to_string())))
            .collect();
        counters.series_resumed = finished.len() as u64;
        if !finished.is_empty() {
            tracing::info!(task = %task.id, done_before = finished.len(), left = todo.len(), "resuming from checkpoints");
        }
        let mut retry = Vec::new();
        self.pass(
            task,
            run,
            todo,
            &mut counters,
            &mut retry,
            false,
            (cancel, shutdown),
        )
        .await?;
        if !retry.is_empty() {
            let delay = self.ctx.config.second_pass_delay.0;
            tracing::info!(task = %task.id, series = retry.len(), ?delay, "second pass over failed series");
            self.report(
                task,
                &counters,
                format!(
                    "second pass over {} failed series in {delay:?}",
                    retry.len()
                ),
            )
            .await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err((Stop::Cancelled, counters)),
                _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters)),
            }
            let mut still = Vec::new();
            self.pass(
                task,
                run,
                retry,
                &mut counters,
                &mut still,
                true,
                (cancel, shutdown),
            )
            .await?;
        }
        Ok(counters)
    }

    /// One pass over `entries`; series that fail retryably go to `retry` (first pass only).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pass(
        &self,
        task: &Task,
        run: &Run,
        entries: Vec<UniverseEntry>,
        counters: &mut TaskCounters,
        retry: &mut Vec<UniverseEntry>,
        last_pass: bool,
        (cancel, shutdown): (&CancellationToken, &CancellationToken),
    ) -> Result<(), (Stop, TaskCounters)> {
        let concurrency = self.ctx.config.concurrency.max(1);
        let limited = rate_limited_sources(task, &entries);
        let mut results = futures::stream::iter(entries.into_iter().map(|entry| async move {
            let outcome = self.process(task, &entry).await;
            (entry, outcome)
        }))
        .buffer_unordered(concurrency);
        let mut last_report = Instant::now();
        loop {
            let next = tokio::select! {
                n = results.next() => n,
                _ = cancel.cancelled() => return Err((Stop::Cancelled, counters.clone())),
                _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters.clone())),
            };
            let Some((entry, outcome)) = next else { break };
            let checkpoint = match outcome {
                SeriesOutcome::Done(c) => {
                    counters.series_done += 1;
                    add_counts(&c, counters);
                    Some(Checkpoint::Done)
                }
                SeriesOutcome::Skipped => {
                    counters.series_skipped += 1;
                    Some(Checkpoint::Done)
                }
                SeriesOutcome::Failed(e) => {
                    let stats = e.stats();
                    counters.requests += stats.requests;
                    counters.retries += stats.retries;
                    counters.failed_requests += stats.retries + u64::from(stats.requests > 0);
                    let reason = e.to_string();
                    if e.is_retryable() && !last_pass {
                        retry.push(entry.clone());
                        Some(Checkpoint::Failed {
                            reason,
                            retryable: true,
                        })
                    } else {
                        counters.series_failed += 1;
                        if counters.failed.len() < 100 {
                            counters.failed.push(FailedSeries {
                                series: entry.key.to_string(),
                                reason: reason.clone(),
                            });
                        }
                        tracing::warn!(task = %task.id, series = %entry.key, %reason, "series failed");
                        Some(Checkpoint::Failed {
                            reason,
                            retryable: false,
                        })
                    }
                }
            };
            for source in &limited {
                if let Some(rate) = source.request_rate() {
                    counters
                        .request_rates
                        .insert(source.name().to_owned(), rate.requests_per_second);
                }
            }
            if let Some(c) = checkpoint {
                run.stamp(counters);
                let tasks = &self.ctx.tasks;
                let snapshot = counters.clone();
                let save = self.until_written(task, "the task's checkpoint", || {
                    tasks.checkpoint(&task.id, &entry.key, c.clone(), &snapshot)
                });
                tokio::select! {
                    _ = save => {}
                    _ = cancel.cancelled() => return Err((Stop::Cancelled, counters.clone())),
                    _ = shutdown.cancelled() => return Err((Stop::Shutdown, counters.clone())),
                }
            }
            if last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                let message = format!(
                    "{} of {} series done, {} failed, {} bars written{}",
                    counters.series_done + counters.series_skipped,
                    counters.series_total,
                    counters.series_failed,
                    counters.bars_written,
                    rates_note(counters),
                );
                run.stamp(counters);
                self.report(task, counters, message).await;
            }
        }
        Ok(())
    }

    /// One series of a task.
    pub(super) async fn process(&self, task: &Task, entry: &UniverseEntry) -> SeriesOutcome {
        match task.kind {
            TaskKind::Validate => self.validate_stored(entry).await,
            TaskKind::Backfill => self.backfill(task, entry).await,
            _ => self.update(task, entry).await,
        }
    }
}

/// The rate-limited sources `entries` fetch from (none for a task that fetches nothing).
fn rate_limited_sources(task: &Task, entries: &[UniverseEntry]) -> Vec<Arc<dyn Source>> {
    if task.kind == TaskKind::Validate {
        return Vec::new();
    }
    let mut out: Vec<Arc<dyn Source>> = Vec::new();
    for e in entries {
        if !out.iter().any(|s| s.name() == e.source.name()) && e.source.request_rate().is_some() {
            out.push(e.source.clone());
        }
    }
    out
}

/// Adds what one series counted to the task's counters.
fn add_counts(c: &SeriesCounts, t: &mut TaskCounters) {
    t.bars_written += c.written;
    t.bars_unchanged += c.unchanged;
    t.bars_rejected += c.rejected;
    t.requests += c.requests;
    t.retries += c.retries;
    t.failed_requests += c.retries;
    t.provider_null_bars += c.provider_nulls;
    t.provider_missing += c.provider_missing;
    t.new_actions += c.new_actions;
    t.unreported_actions += c.unreported_actions;
    t.gaps_found += c.gaps;
    t.invalid_stored_bars += c.invalid;
}
