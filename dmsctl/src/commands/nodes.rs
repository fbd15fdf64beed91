//! `dmsctl nodes …`: replicas, their sync history, verify and forget.

use dms_common::pb;

use super::*;
use crate::cli::{NodesCommand, Output};
use crate::client::{CliError, Client};
use crate::output::{Table, count, opt, outln, print_fields, print_json, time_ms, time_s};

pub(crate) async fn nodes(c: &Client, cmd: NodesCommand, out: Output) -> Result<u8, CliError> {
    match cmd {
        NodesCommand::List => {
            let r = call(c, c.admin.clone().list_nodes(pb::ListNodesRequest {})).await?;
            if out == Output::Json {
                print_json(&r);
                return Ok(0);
            }
            let mut t = Table::new(&[
                "NODE",
                "STATE",
                "CURSOR",
                "LAG SEQ",
                "LAG SECONDS",
                "LAST CONTACT",
                "REPAIR",
                "LAST ERROR",
            ]);
            for n in &r.nodes {
                t.row(vec![
                    n.node_id.clone(),
                    n.state.clone(),
                    opt(n.cursor),
                    count(n.lag_seq),
                    format!("{:.1}", n.lag_seconds),
                    time_ms(Some(n.last_contact_ms)),
                    if n.needs_repair {
                        format!("needed: {}", opt(n.repair_reason.clone()))
                    } else {
                        "-".into()
                    },
                    opt(n.last_error.clone()),
                ]);
            }
            t.print();
        }
        NodesCommand::Get { id } => {
            let n = call(
                c,
                c.admin.clone().get_node(pb::GetNodeRequest { node_id: id }),
            )
            .await?;
            if out == Output::Json {
                print_json(&n);
                return Ok(0);
            }
            let mut fields = vec![
                ("node", n.node_id.clone()),
                ("state", n.state.clone()),
                ("address", opt(n.http_address.clone())),
                ("cursor", opt(n.cursor)),
                (
                    "lag",
                    format!("{} entries, {:.1} s", n.lag_seq, n.lag_seconds),
                ),
                ("first seen", time_ms(Some(n.first_seen_ms))),
                ("last contact", time_ms(Some(n.last_contact_ms))),
                ("needs repair", n.needs_repair.to_string()),
                ("last error", opt(n.last_error.clone())),
            ];
            if let Some(s) = &n.session {
                fields.push((
                    "session",
                    format!(
                        "#{} since {}: sent {}, acked {}, {} batches, {} bars",
                        s.id,
                        time_ms(Some(s.connected_ms)),
                        s.last_sent_seq,
                        s.last_acked_seq,
                        count(s.batches),
                        count(s.bars)
                    ),
                ));
            }
            print_fields(&fields);
        }
        NodesCommand::History { id, limit } => {
            let req = pb::GetNodeHistoryRequest {
                node_id: id,
                limit: limit.unwrap_or(0),
            };
            let h = call(c, c.admin.clone().get_node_history(req)).await?;
            if out == Output::Json {
                print_json(&h);
                return Ok(0);
            }
            let mut t = Table::new(&[
                "SESSION",
                "CONNECTED",
                "DISCONNECTED",
                "SEQ",
                "BATCHES",
                "BARS",
                "BYTES",
                "REPAIR",
                "END",
            ]);
            for s in &h.sessions {
                let repair = match (&s.repair_reason, &s.repair) {
                    (Some(r), _) => format!("told: {r}"),
                    (None, Some(r)) => format!(
                        "{}: {} buckets, {} bars pulled",
                        r.reason, r.buckets_pulled, r.bars_pulled
                    ),
                    (None, None) => "-".into(),
                };
                t.row(vec![
                    s.id.to_string(),
                    time_ms(Some(s.connected_ms)),
                    time_ms(s.disconnected_ms),
                    format!(
                        "{}..{} (acked {})",
                        s.start_seq, s.last_sent_seq, s.last_acked_seq
                    ),
                    count(s.batches),
                    count(s.bars),
                    count(s.bytes),
                    repair,
                    opt(s.end_reason.clone()),
                ]);
            }
            t.print();
        }
        NodesCommand::Verify { id } => {
            let r = call(
                c,
                c.admin
                    .clone()
                    .verify_node(pb::VerifyNodeRequest { node_id: id }),
            )
            .await?;
            if out == Output::Json {
                print_json(&r);
                return Ok(if r.equal { 0 } else { 1 });
            }
            outln!(
                "{}: {} (series {} equal, {} diverged of {}; buckets {} equal, {} diverged; bars master {}, replica {}; replica cursor {}, master store {}{}; {} ms)",
                r.node_id,
                if r.equal { "equal" } else { "DIVERGED" },
                r.series_equal,
                r.series_diverged,
                r.series_total,
                r.buckets_equal,
                r.buckets_diverged,
                count(r.bars_master),
                count(r.bars_replica),
                r.replica_cursor,
                r.master_store_applied,
                if r.caught_up { "" } else { ", not caught up" },
                r.elapsed_ms
            );
            if !r.diverged.is_empty() {
                let mut t = Table::new(&["SYMBOL", "INTERVAL", "BUCKET", "MASTER", "REPLICA"]);
                for d in &r.diverged {
                    let (symbol, interval) = series_label(d.series.as_ref());
                    t.row(vec![
                        symbol,
                        interval,
                        time_s(d.start),
                        count(d.master_count),
                        count(d.replica_count),
                    ]);
                }
                t.print();
            }
            // A replica that differs is a failure scripts should notice.
            return Ok(if r.equal { 0 } else { 1 });
        }
        NodesCommand::Forget { id } => {
            let r = call(
                c,
                c.admin
                    .clone()
                    .forget_node(pb::ForgetNodeRequest { node_id: id }),
            )
            .await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => outln!("{}", r.message),
            }
        }
    }
    Ok(0)
}
