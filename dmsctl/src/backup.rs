//! `dmsctl backup create|list|verify|restore`: backups written, listed, verified and restored
//! by the master (tasks, like every import; `--follow` shows them live).

use dms_common::pb;

use crate::cli::{BackupCommand, Output};
use crate::client::{CliError, Client};
use crate::output::{Table, count, outln, print_json};

/// `dmsctl backup create|list|verify|restore`.
pub(crate) async fn run(c: &mut Client, cmd: BackupCommand, out: Output) -> Result<u8, CliError> {
    let (kind, backup, dry_run, follow) = match cmd {
        BackupCommand::List => {
            let r = c
                .admin
                .clone()
                .list_backups(pb::ListBackupsRequest {})
                .await
                .map_err(|s| c.error(&s))?
                .into_inner();
            match out {
                Output::Json => print_json(&r),
                Output::Table => {
                    outln!("backups in {}", r.dir);
                    let mut t = Table::new(&["NAME", "CREATED", "SERIES", "BARS", "BYTES"]);
                    for b in &r.backups {
                        t.row(vec![
                            b.name.clone(),
                            b.created_at.clone(),
                            count(b.series),
                            count(b.bars),
                            count(b.bytes),
                        ]);
                    }
                    t.print();
                }
            }
            return Ok(0);
        }
        BackupCommand::Create { follow } => (pb::TaskKind::Backup, None, false, follow),
        BackupCommand::Verify { name, follow } => {
            (pb::TaskKind::VerifyBackup, Some(name), false, follow)
        }
        BackupCommand::Restore {
            name,
            dry_run,
            follow,
        } => (pb::TaskKind::Restore, Some(name), dry_run, follow),
    };
    let req = pb::StartTaskRequest {
        kind: kind.into(),
        params: Some(pb::TaskParams {
            backup,
            dry_run,
            ..Default::default()
        }),
    };
    let t = c
        .admin
        .clone()
        .start_task(req)
        .await
        .map_err(|s| c.error(&s))?
        .into_inner();
    if follow {
        eprintln!("{} queued as {}", t.name, t.task_id);
        return crate::follow::follow(c, &t.task_id, out).await;
    }
    match out {
        Output::Json => print_json(&t),
        Output::Table => outln!("{} queued as {}", t.name, t.task_id),
    }
    Ok(0)
}
