//! `dmsctl`: the DMS admin CLI. Parses the command line ([`cli`]), connects to the master's
//! `dms.v1.Admin` service ([`client`]), makes the call and prints the answer ([`output`]) as
//! aligned columns or JSON; `task follow` and `--follow` draw the task's progress
//! ([`follow`]).
//!
//! A failure is one line on stderr (`error: …`), never a backtrace. Exit status: 0 success, 1
//! failure (the followed task failed, the master is unreachable or refused), 2 bad usage, 3 the
//! followed task was cancelled.

mod backup;
mod cli;
mod client;
mod export;
mod follow;
mod import;
mod output;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use dms_common::pb;

use crate::cli::{
    Cli, Command, Kind, NodesCommand, Output, SchedulesCommand, SourcesCommand, Status, TaskCommand,
};
use crate::client::{CliError, Client};
use crate::output::{Table, bytes, count, opt, outln, print_fields, print_json, time_ms, time_s};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `-o` names export's file only when given on the command line (not DMS_OUTPUT's style).
    let output_given = matches.value_source("output") == Some(ValueSource::CommandLine);
    if let Command::Completions { shell } = cli.command {
        let shell = match shell {
            cli::Shell::Bash => clap_complete::Shell::Bash,
            cli::Shell::Zsh => clap_complete::Shell::Zsh,
            cli::Shell::Fish => clap_complete::Shell::Fish,
        };
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "dmsctl", &mut script);
        output::emit(&String::from_utf8_lossy(&script));
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, output_given)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.exit)
        }
    }
}

/// Runs the command; returns the exit status.
async fn run(cli: Cli, output_given: bool) -> Result<u8, CliError> {
    if let Command::Export(args) = cli.command {
        if !output_given {
            return Err(CliError::usage(
                "export writes a file: name it with -o FILE",
            ));
        }
        let file = std::path::PathBuf::from(&cli.output);
        let format = export::format_of(args.format.as_deref(), &file)?;
        let c = client::connect(&cli.conn).await?;
        return export::export(&c, args, format, &file).await;
    }
    let out = Output::parse(&cli.output).ok_or_else(|| {
        CliError::usage(format!(
            "-o {:?}: the output is table or json (a file only for export)",
            cli.output
        ))
    })?;
    let mut c = client::connect(&cli.conn).await?;
    match cli.command {
        Command::Task(t) => task(&mut c, t, out).await,
        Command::Status => {
            let s = call(&c, c.admin.clone().get_status(pb::GetStatusRequest {})).await?;
            print_status(&s, out);
            Ok(0)
        }
        Command::Series => {
            let r = call(
                &c,
                c.admin.clone().list_series(pb::AdminListSeriesRequest {}),
            )
            .await?;
            print_series(&r, out);
            Ok(0)
        }
        Command::Gaps { symbol, interval } => {
            let r = call(
                &c,
                c.admin
                    .clone()
                    .get_gaps(pb::GetGapsRequest { symbol, interval }),
            )
            .await?;
            print_gaps(&r, out);
            Ok(0)
        }
        Command::Bars {
            symbol,
            interval,
            start,
            end,
            limit,
        } => {
            let req = pb::GetBarsRequest {
                symbol,
                interval,
                start,
                end,
                limit,
            };
            let r = call(&c, c.admin.clone().get_bars(req)).await?;
            print_bars(&r, out);
            Ok(0)
        }
        Command::Overview {
            prefix,
            interval,
            gaps,
            no_gaps,
        } => {
            let req = pb::OverviewRequest {
                prefix,
                interval,
                gaps: (gaps || no_gaps).then_some(gaps),
            };
            let r = call(&c, c.admin.clone().get_overview(req)).await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => {
                    let mut t = Table::new(&[
                        "SYMBOL", "INTERVAL", "BARS", "FIRST", "LAST", "MISSING", "SOURCE", "SIZE",
                    ]);
                    for s in &r.series {
                        t.row(vec![
                            s.symbol.clone(),
                            s.interval.clone(),
                            s.count.to_string(),
                            s.first.clone(),
                            s.last.clone(),
                            opt(s.missing.map(|m| m.to_string())),
                            opt(s.source.clone()),
                            opt(s.size_bytes.map(bytes)),
                        ]);
                    }
                    t.print();
                    if let Some(b) = r.store_bytes {
                        outln!(
                            "store size on disk: {} (SIZE: its share by bar count)",
                            bytes(b)
                        );
                    }
                }
            }
            Ok(0)
        }
        Command::Delete {
            symbol,
            interval,
            start,
            end,
            dry_run,
        } => {
            let req = pb::DeleteBarsRequest {
                symbol: symbol.clone(),
                interval: interval.clone(),
                start,
                end,
                dry_run,
            };
            let r = call(&c, c.admin.clone().delete_bars(req)).await?;
            match out {
                Output::Json => print_json(&r),
                Output::Table => match (r.dry_run, r.journal_seq) {
                    (true, _) => outln!("{symbol} {interval}: {} bars would be deleted", r.bars),
                    (false, None) => outln!("{symbol} {interval}: nothing to delete"),
                    (false, Some(seq)) => outln!(
                        "{symbol} {interval}: {} bars deleted (journal entry {seq}; replicas follow)",
                        r.bars
                    ),
                },
            }
            Ok(0)
        }
        Command::Nodes { command } => nodes(&c, command.unwrap_or(NodesCommand::List), out).await,
        Command::Sources(cmd) => sources(&c, cmd, out).await,
        Command::Schedules(s) => schedules(&mut c, s, out).await,
        Command::Journal => {
            let r = call(
                &c,
                c.admin.clone().journal_stats(pb::JournalStatsRequest {}),
            )
            .await?;
            print_journal(&r, out);
            Ok(0)
        }
        Command::Import(args) => import::import(&mut c, args, out).await,
        Command::Backup(cmd) => backup::run(&mut c, cmd, out).await,
        Command::Completions { .. } | Command::Export(_) => Ok(0),
    }
}

/// Awaits a call; a refusal becomes one line.
async fn call<T>(
    c: &Client,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CliError> {
    f.await
        .map(tonic::Response::into_inner)
        .map_err(|s| c.error(&s))
}

async fn task(c: &mut Client, cmd: TaskCommand, out: Output) -> Result<u8, CliError> {
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
                return follow::follow(c, &t.task_id, out).await;
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
        TaskCommand::Follow { id } => follow::follow(c, &id, out).await,
    }
}

fn kind_label(raw: i32) -> String {
    pb::TaskKind::try_from(raw)
        .map(pb::TaskKind::label)
        .unwrap_or_else(|_| raw.to_string())
}

fn status_label(raw: i32) -> String {
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

fn print_status(s: &pb::DataStatus, out: Output) {
    if out == Output::Json {
        return print_json(s);
    }
    let j = s.journal.clone().unwrap_or_default();
    let mut fields = vec![
        ("store", s.store.clone()),
        ("symbols", opt(s.total_stocks.map(count))),
        ("series", opt(s.total_series.map(count))),
        ("bars", opt(s.total_records.map(count))),
        (
            "range",
            format!(
                "{} .. {}",
                opt(s.earliest_date.clone()),
                opt(s.latest_date.clone())
            ),
        ),
        ("kept series", count(s.kept_series)),
        (
            "journal",
            format!(
                "head {}, {} entries, {} bytes",
                j.head,
                opt(j.entries.map(count)),
                opt(j.bytes.map(count))
            ),
        ),
        (
            "store applied",
            format!(
                "{} (lag {}, {} retries)",
                j.store_applied, j.store_lag, j.store_retries
            ),
        ),
        ("quarantined bars", count(s.quarantined_bars)),
        (
            "dead letters",
            format!(
                "{} entries, {} bars",
                s.dead_letter_entries, s.dead_letter_bars
            ),
        ),
        (
            "bars cache",
            format!("{} hits, {} misses", s.bars_cache_hits, s.bars_cache_misses),
        ),
    ];
    if let Some(e) = &s.store_error {
        fields.push(("store error", e.clone()));
    }
    if let Some(e) = &j.store_last_error {
        fields.push(("store last error", e.clone()));
    }
    if let Some(e) = &j.append_error {
        fields.push(("append error", e.clone()));
    }
    if let Some(b) = &s.backpressure {
        fields.push(("backpressure", b.clone()));
    }
    for p in &s.providers {
        let how = if p.adaptive {
            format!(
                "adaptive within {}..{}{}, {} decreases",
                p.min_requests_per_second,
                p.max_requests_per_second,
                if p.probing { ", probing" } else { "" },
                p.decreases
            )
        } else {
            "fixed".to_owned()
        };
        fields.push((
            "request rate",
            format!("{} {:.2}/s ({how})", p.source, p.requests_per_second),
        ));
    }
    for i in &s.imports {
        fields.push((
            "import",
            format!(
                "{} {}: {} series, {} bars accepted, {} rejected, {} rows skipped",
                i.source,
                i.state,
                i.series,
                count(i.bars_accepted),
                count(i.bars_rejected),
                i.rows_skipped
            ),
        ));
    }
    print_fields(&fields);
}

fn series_label(k: Option<&pb::SeriesKey>) -> (String, String) {
    k.map(|k| (k.symbol.clone(), k.interval.clone()))
        .unwrap_or_default()
}

fn print_series(r: &pb::AdminListSeriesResponse, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut t = Table::new(&[
        "SYMBOL",
        "INTERVAL",
        "BARS",
        "FIRST",
        "LAST",
        "SOURCE",
        "LAST FETCH",
        "OK",
    ]);
    for s in &r.series {
        let (symbol, interval) = series_label(s.series.as_ref());
        t.row(vec![
            symbol,
            interval,
            count(s.count),
            time_s(s.first_ms / 1000),
            time_s(s.last_ms / 1000),
            opt(s.source.clone()),
            time_ms(s.last_fetch_at_ms),
            match s.last_fetch_ok {
                Some(true) => "yes".into(),
                Some(false) => format!("no: {}", opt(s.last_error.clone())),
                None => "-".into(),
            },
        ]);
    }
    t.print();
}

fn print_gaps(r: &pb::GapReport, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let (symbol, interval) = series_label(r.series.as_ref());
    outln!(
        "{symbol} {interval} ({} calendar): {} expected, {} stored, {} missing, checked {} .. {}",
        r.calendar,
        count(r.expected),
        count(r.stored),
        count(r.missing),
        time_ms(r.checked_from_ms),
        time_ms(r.checked_to_ms)
    );
    if !r.gaps.is_empty() {
        let mut t = Table::new(&["START", "END", "MISSING"]);
        for g in &r.gaps {
            t.row(vec![
                time_s(g.start_ms / 1000),
                time_s(g.end_ms / 1000),
                count(g.missing),
            ]);
        }
        t.print();
    }
}

async fn sources(c: &Client, cmd: SourcesCommand, out: Output) -> Result<u8, CliError> {
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

fn print_bars(r: &pb::BarsPage, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut t = Table::new(&[
        "TIME",
        "OPEN",
        "HIGH",
        "LOW",
        "CLOSE",
        "VOLUME",
        "ADJ CLOSE",
    ]);
    for b in &r.bars {
        t.row(vec![
            time_s(b.ts),
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string(),
            b.volume.to_string(),
            opt(b.adj_close),
        ]);
    }
    t.print();
    if let Some(next) = r.next_start {
        eprintln!("more bars follow: --start {}", time_s(next));
    }
}

async fn nodes(c: &Client, cmd: NodesCommand, out: Output) -> Result<u8, CliError> {
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

fn print_schedule_rows(list: &[pb::Schedule]) {
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

async fn schedules(c: &mut Client, cmd: SchedulesCommand, out: Output) -> Result<u8, CliError> {
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
                return follow::follow(c, task, out).await;
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

fn print_journal(r: &pb::JournalStatsResponse, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut fields = vec![
        ("history", r.history_id.clone()),
        ("head", r.head.to_string()),
        ("pruned through", r.pruned_through.to_string()),
        ("entries", count(r.entries)),
        ("bytes", count(r.bytes)),
        ("store applied", r.store_applied.to_string()),
        ("pending acks", r.pending_acks.to_string()),
    ];
    if let Some(e) = &r.append_error {
        fields.push(("append error", e.clone()));
    }
    print_fields(&fields);
    outln!();
    let mut t = Table::new(&["CURSOR", "SEQ", "LAG", "PROTECTED", "LAST ACK", "REPAIR"]);
    for cur in &r.cursors {
        t.row(vec![
            cur.name.clone(),
            cur.seq.to_string(),
            r.head.saturating_sub(cur.seq).to_string(),
            if cur.protected {
                "yes".into()
            } else {
                "no".into()
            },
            time_ms(cur.last_ack_ms),
            if cur.needs_repair {
                format!("needed: {}", opt(cur.repair_reason.clone()))
            } else {
                "-".into()
            },
        ]);
    }
    t.print();
}
