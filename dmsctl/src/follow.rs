//! `task follow` and `--follow`: the task's progress, live, from the master's `WatchTask`
//! stream, then its outcome; the exit status says how it ended.
//!
//! On a terminal, one line on stderr is redrawn in place: a bar, series done/total, bars
//! written, the rate and an ETA. Elsewhere (a pipe, a file, CI), the same figures are printed
//! as plain lines, at most one a second, plus every change of status.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use dms_common::pb;

use crate::cli::Output;
use crate::client::{CliError, Client};
use crate::output;

/// Exit status of a followed task that was cancelled.
pub(crate) const EXIT_CANCELLED: u8 = 3;
/// Exit status of a followed task that ended `partial` (some series failed).
pub(crate) const EXIT_PARTIAL: u8 = 4;

/// How often a plain progress line is printed at most.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// How often the terminal line is redrawn at most.
const DRAW_EVERY: Duration = Duration::from_millis(100);

/// Follows task `id` until it ends; prints its outcome; returns the exit status.
pub(crate) async fn follow(client: &mut Client, id: &str, out: Output) -> Result<u8, CliError> {
    let mut stream = client
        .admin
        .watch_task(pb::WatchTaskRequest {
            task_id: id.to_owned(),
        })
        .await
        .map_err(|s| client.error(&s))?
        .into_inner();
    let mut progress = Progress::new(std::io::stderr().is_terminal());
    let mut last: Option<pb::Task> = None;
    loop {
        match stream.message().await {
            Ok(Some(task)) => {
                progress.show(&task);
                last = Some(task);
            }
            Ok(None) => break,
            Err(s) => {
                progress.clear();
                return Err(client.error(&s));
            }
        }
    }
    progress.clear();
    let task = last.ok_or_else(|| CliError::failed("the master sent nothing about the task"))?;
    crate::commands::print_task(&task, out);
    match pb::TaskStatus::try_from(task.status) {
        Ok(pb::TaskStatus::Completed) => Ok(0),
        Ok(pb::TaskStatus::Failed) => Ok(1),
        Ok(pb::TaskStatus::Partial) => Ok(EXIT_PARTIAL),
        Ok(pb::TaskStatus::Cancelled) => Ok(EXIT_CANCELLED),
        _ => Err(CliError::failed(format!(
            "the master stopped reporting task {id} before it ended"
        ))),
    }
}

/// The progress display.
#[derive(Debug)]
struct Progress {
    terminal: bool,
    drawn: bool,
    last_print: Option<Instant>,
    last_status: i32,
}

impl Progress {
    fn new(terminal: bool) -> Progress {
        Progress {
            terminal,
            drawn: false,
            last_print: None,
            last_status: -1,
        }
    }

    fn show(&mut self, task: &pb::Task) {
        let status_changed = task.status != self.last_status;
        self.last_status = task.status;
        let every = if self.terminal {
            DRAW_EVERY
        } else {
            PLAIN_EVERY
        };
        let due = self.last_print.is_none_or(|t| t.elapsed() >= every);
        if !(due || status_changed) {
            return;
        }
        self.last_print = Some(Instant::now());
        let line = line(task, chrono::Utc::now().timestamp_millis());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let width = 30usize;
            let filled = ((task.progress.clamp(0.0, 100.0) / 100.0) * width as f64) as usize;
            let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled));
            let _ = write!(err, "\r\x1b[2K{bar} {line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Ends the redrawn line, so what follows starts on a fresh one.
    fn clear(&mut self) {
        if self.terminal && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

/// One progress line: status, percent, series done/total, bars written, rate, ETA, message.
fn line(task: &pb::Task, now_ms: i64) -> String {
    let c = task.counters.clone().unwrap_or_default();
    let status = pb::TaskStatus::try_from(task.status)
        .map(pb::TaskStatus::label)
        .unwrap_or_default();
    let ended = c.series_done + c.series_failed + c.series_skipped;
    let elapsed = task
        .started_at_ms
        .map(|s| (task.completed_at_ms.unwrap_or(now_ms) - s).max(0) as f64 / 1000.0);
    let rate = match elapsed {
        Some(e) if e > 0.0 => format!(
            "{} bars/s",
            output::count((c.bars_written as f64 / e) as u64)
        ),
        _ => "- bars/s".into(),
    };
    let eta = match elapsed {
        _ if task.completed_at_ms.is_some() => "done".to_owned(),
        Some(e) if ended > 0 && c.series_total > ended => {
            let left = (c.series_total - ended) as f64 * e / ended as f64;
            format!("ETA {}", output::duration(left))
        }
        _ => "ETA -".into(),
    };
    format!(
        "{} {status} {:.1}%  series {}/{}{}  bars {} written  {rate}  {eta}  {}",
        task.task_id,
        task.progress,
        ended,
        c.series_total,
        if c.series_failed > 0 {
            format!(" ({} failed)", c.series_failed)
        } else {
            String::new()
        },
        output::count(c.bars_written),
        task.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_has_series_bars_rate_and_eta() {
        let task = pb::Task {
            task_id: "incremental_update-000007".into(),
            status: pb::TaskStatus::Running.into(),
            progress: 25.0,
            message: "fetching".into(),
            started_at_ms: Some(10_000),
            counters: Some(pb::TaskCounters {
                series_total: 8,
                series_done: 2,
                bars_written: 5_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = line(&task, 20_000);
        assert!(
            l.starts_with("incremental_update-000007 running 25.0%"),
            "{l}"
        );
        assert!(l.contains("series 2/8"), "{l}");
        assert!(l.contains("bars 5,000 written"), "{l}");
        assert!(l.contains("500 bars/s"), "{l}");
        assert!(l.contains("ETA 30s"), "{l}");
    }
}
