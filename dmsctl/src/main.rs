//! `dmsctl`: the DMS admin CLI. Parses the command line ([`cli`]), connects to the master's
//! `dms.v1.Admin` service ([`client`]), dispatches to the command's handler ([`commands`];
//! `backup`, `export` and `import` have modules of their own), which makes the call and prints
//! the answer ([`output`]) as aligned columns or JSON; `task follow` and `--follow` draw the
//! task's progress ([`follow`]). This file holds only `main` and the dispatch.
//!
//! A failure is one line on stderr (`error: …`), never a backtrace. Exit status: 0 success, 1
//! failure (the followed task failed, the master is unreachable or refused), 2 bad usage, 3 the
//! followed task was cancelled.

mod backup;
mod cli;
mod client;
mod commands;
mod export;
mod follow;
mod import;
mod output;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use dms_common::pb;

use crate::cli::{Cli, Command, NodesCommand, Output};
use crate::client::CliError;
use crate::commands::*;
use crate::output::{Table, bytes, opt, outln, print_json};

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
