//! `dmsctl schedules …`: list, trigger, pause and resume scheduled jobs.

use dms_common::pb;

use super::*;
use crate::cli::{Output, SchedulesCommand};
use crate::client::{CliError, Client};
use crate::output::{Table, opt, outln, print_json, time_ms};

pub(crate) fn print_schedule_rows(list: &[pb::Schedule]) {
    let mut t = Table::new(&[
        "NAME", "CRON", "TIMEZONE", "KIND", "PAUSED", "NEXT", "LAST RUN", "OUTCOME",
    ]);
    for s in list {
        let last = s.last_run.as_ref();
        t.row(vec![
            s.name.clone(),
            s.cron.clone(),
            s.timezone.clone(),
            s.kind.clone(),
            if s.paused { "yes".into() } else { "no".into() },
            time_ms(s.next_fires_ms.first().copied()),
            time_ms(last.map(|r| r.started_at_ms)),
            opt(last.map(|r| r.outcome.clone())),
        ]);
    }
    t.print();
}

pub(crate) async fn schedules(
    c: &mut Client,
    cmd: SchedulesCommand,
    out: Output,
) -> Result<u8, CliError> {
    let admin = || c.admin.clone();
    match cmd {
        SchedulesCommand::List => {
            let r = call(c, admin().list_schedules(pb::ListSchedulesRequest {})).await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => print_schedule_rows(&r.schedules),
            }
        }
        SchedulesCommand::Trigger { name, follow } => {
            let r = call(
                c,
                admin().trigger_schedule(pb::ScheduleRequest { name: name.clone() }),
            )
            .await?;
            let line = format!(
                "{name}: {}{} {}",
                r.outcome,
                r.task_id
                    .as_ref()
                    .map(|t| format!(" (task {t})"))
                    .unwrap_or_default(),
                r.message
            );
            if follow && let Some(task) = &r.task_id {
                eprintln!("{line}");
                return crate::follow::follow(c, task, out).await;
            }
            match out {
                Output::Json => print_json(&r),
                Output::Table => outln!("{line}"),
            }
        }
        SchedulesCommand::Pause { name } => {
            let s = call(c, admin().pause_schedule(pb::ScheduleRequest { name })).await?;
            match out {
                Output::Json => print_json(&s),
                Output::Table => print_schedule_rows(std::slice::from_ref(&s)),
            }
        }
        SchedulesCommand::Resume { name } => {
            let s = call(c, admin().resume_schedule(pb::ScheduleRequest { name })).await?;
            match out {
                Output::Json => print_json(&s),
                Output::Table => print_schedule_rows(std::slice::from_ref(&s)),
            }
        }
    }
    Ok(0)
}
