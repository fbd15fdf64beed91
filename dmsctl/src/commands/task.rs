//! `dmsctl task …`: start, list, show, cancel and follow tasks; how a task is printed.

use dms_common::pb;

use super::*;
use crate::cli::{Kind, Output, Status, TaskCommand};
use crate::client::{CliError, Client};
use crate::output::{Table, count, outln, print_fields, print_json, time_ms};

pub(crate) async fn task(c: &mut Client, cmd: TaskCommand, out: Output) -> Result<u8, CliError> {
    match cmd {
        TaskCommand::Start(a) => {
            let kind = match a.kind {
                Kind::Import => pb::TaskKind::Import,
                Kind::Update => pb::TaskKind::Update,
                Kind::Backfill => pb::TaskKind::Backfill,
                Kind::Validate => pb::TaskKind::Validate,
                Kind::Migrate => pb::TaskKind::Migrate,
                Kind::Check => pb::TaskKind::Check,
            };
            let req = pb::StartTaskRequest {
                kind: kind.into(),
                params: Some(pb::TaskParams {
                    symbols: a.symbols,
                    interval: a.interval,
                    source: a.source,
                    start_date: a.start,
                    end_date: a.end,
                    skip: a.skip,
                    limit: a.limit,
                    days: a.days,
                    only_existing: a.only_existing,
                    target: a.target,
                    backup: a.backup,
                    replica: a.replica,
                    dry_run: false,
                }),
            };
            let t = call(c, c.admin.clone().start_task(req)).await?;
            if a.follow {
                eprintln!("{} queued as {}", t.name, t.task_id);
                return crate::follow::follow(c, &t.task_id, out).await;
            }
            match out {
                Output::Json => print_json(&t),
                Output::Table => outln!("{} queued as {}", t.name, t.task_id),
            }
            Ok(0)
        }
        TaskCommand::Get { id } => {
            let t = call(
                c,
                c.admin.clone().get_task(pb::GetTaskRequest { task_id: id }),
            )
            .await?;
            print_task(&t, out);
            Ok(0)
        }
        TaskCommand::List { status, limit } => {
            let status = status.map(|s| match s {
                Status::Pending => pb::TaskStatus::Pending,
                Status::Running => pb::TaskStatus::Running,
                Status::Paused => pb::TaskStatus::Paused,
                Status::Completed => pb::TaskStatus::Completed,
                Status::Partial => pb::TaskStatus::Partial,
                Status::Failed => pb::TaskStatus::Failed,
                Status::Cancelled => pb::TaskStatus::Cancelled,
            });
            let req = pb::ListTasksRequest {
                status: status.unwrap_or(pb::TaskStatus::Unspecified).into(),
                limit: limit.unwrap_or(0),
            };
            let r = call(c, c.admin.clone().list_tasks(req)).await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => {
                    let mut t = Table::new(&[
                        "ID", "KIND", "STATUS", "PROGRESS", "SERIES", "BARS", "CREATED", "MESSAGE",
                    ]);
                    for task in &r.tasks {
                        let c = task.counters.clone().unwrap_or_default();
                        t.row(vec![
                            task.task_id.clone(),
                            kind_label(task.kind),
                            status_label(task.status),
                            format!("{:.1}%", task.progress),
                            format!("{}/{}", c.series_done, c.series_total),
                            count(c.bars_written),
                            time_ms(Some(task.created_at_ms)),
                            task.message.clone(),
                        ]);
                    }
                    t.print();
                }
            }
            Ok(0)
        }
        TaskCommand::Cancel { id } => {
            let t = call(
                c,
                c.admin
                    .clone()
                    .cancel_task(pb::CancelTaskRequest { task_id: id }),
            )
            .await?;
            match out {
                Output::Json => print_json(&t),
                Output::Table => {
                    if t.status == i32::from(pb::TaskStatus::Cancelled) {
                        outln!("task {} cancelled", t.task_id);
                    } else {
                        outln!("cancel requested; task {} stops within 2 s", t.task_id);
                    }
                }
            }
            Ok(0)
        }
        TaskCommand::Follow { id } => crate::follow::follow(c, &id, out).await,
    }
}

pub(crate) fn kind_label(raw: i32) -> String {
    pb::TaskKind::try_from(raw)
        .map(pb::TaskKind::label)
        .unwrap_or_else(|_| raw.to_string())
}

pub(crate) fn status_label(raw: i32) -> String {
    pb::TaskStatus::try_from(raw)
        .map(pb::TaskStatus::label)
        .unwrap_or_else(|_| raw.to_string())
}

/// One task, in detail.
pub(crate) fn print_task(t: &pb::Task, out: Output) {
    if out == Output::Json {
        return print_json(t);
    }
    let c = t.counters.clone().unwrap_or_default();
    let p = t.params.clone().unwrap_or_default();
    let mut params = Vec::new();
    if !p.symbols.is_empty() {
        params.push(format!("symbols={}", p.symbols.join(",")));
    }
    let mut add = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            params.push(format!("{k}={v}"));
        }
    };
    add("interval", p.interval.clone());
    add("source", p.source.clone());
    add("start", p.start_ms.map(|m| time_ms(Some(m))));
    add("end", p.end_ms.map(|m| time_ms(Some(m))));
    add("skip", p.skip.map(|n| n.to_string()));
    add("limit", p.limit.map(|n| n.to_string()));
    add("days", p.days.map(|n| n.to_string()));
    if p.only_existing {
        params.push("only_existing".into());
    }
    let mut fields = vec![
        ("task", t.task_id.clone()),
        ("kind", format!("{} ({})", kind_label(t.kind), t.name)),
        ("status", status_label(t.status)),
        ("progress", format!("{:.1}%", t.progress)),
        ("message", t.message.clone()),
        (
            "params",
            if params.is_empty() {
                "-".into()
            } else {
                params.join(" ")
            },
        ),
        ("created", time_ms(Some(t.created_at_ms))),
        ("started", time_ms(t.started_at_ms)),
        ("completed", time_ms(t.completed_at_ms)),
        (
            "series",
            format!(
                "{} total, {} done, {} failed, {} skipped",
                c.series_total, c.series_done, c.series_failed, c.series_skipped
            ),
        ),
        (
            "bars",
            format!(
                "{} written, {} unchanged, {} rejected",
                count(c.bars_written),
                count(c.bars_unchanged),
                count(c.bars_rejected)
            ),
        ),
        (
            "requests",
            format!("{} ({} retries)", count(c.requests), count(c.retries)),
        ),
    ];
    let mut rates: Vec<(&String, &f64)> = c.request_rates.iter().collect();
    rates.sort_by(|a, b| a.0.cmp(b.0));
    for (source, rate) in rates {
        fields.push(("request rate", format!("{source} {rate:.2}/s")));
    }
    if c.gaps_found > 0 || c.invalid_stored_bars > 0 {
        fields.push((
            "found",
            format!(
                "{} gaps, {} invalid stored bars",
                c.gaps_found, c.invalid_stored_bars
            ),
        ));
    }
    if let Some(e) = &t.error {
        fields.push(("error", e.clone()));
    }
    for f in &c.failed {
        fields.push(("failed", format!("{}: {}", f.series, f.reason)));
    }
    print_fields(&fields);
}
