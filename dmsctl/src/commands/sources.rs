//! `dmsctl sources …`: a SQL source's tables and a preview of its rows.

use dms_common::pb;

use super::*;
use crate::cli::{Output, SourcesCommand};
use crate::client::{CliError, Client};
use crate::output::{Table, print_json, time_s};

pub(crate) async fn sources(c: &Client, cmd: SourcesCommand, out: Output) -> Result<u8, CliError> {
    match cmd {
        SourcesCommand::Tables { source } => {
            let r = call(
                c,
                c.admin
                    .clone()
                    .list_source_tables(pb::SourceRequest { source }),
            )
            .await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => {
                    let mut t = Table::new(&["TABLE", "COLUMN", "TYPE"]);
                    for table in &r.tables {
                        for col in &table.columns {
                            t.row(vec![
                                table.name.clone(),
                                col.name.clone(),
                                col.r#type.clone(),
                            ]);
                        }
                    }
                    t.print();
                }
            }
        }
        SourcesCommand::Preview { source, limit } => {
            let req = pb::PreviewSourceRequest { source, limit };
            let r = call(c, c.admin.clone().preview_source(req)).await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => {
                    let mut t = Table::new(&[
                        "SYMBOL", "INTERVAL", "TIME", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME",
                    ]);
                    for row in &r.rows {
                        let (Some(s), Some(b)) = (&row.series, &row.bar) else {
                            continue;
                        };
                        t.row(vec![
                            s.symbol.clone(),
                            s.interval.clone(),
                            time_s(b.ts),
                            b.open.to_string(),
                            b.high.to_string(),
                            b.low.to_string(),
                            b.close.to_string(),
                            b.volume.to_string(),
                        ]);
                    }
                    t.print();
                    println!("mode {}, key ({})", r.mode, r.key.join(", "));
                    for p in &r.problems {
                        println!("not a bar: {p}");
                    }
                }
            }
        }
    }
    Ok(0)
}
