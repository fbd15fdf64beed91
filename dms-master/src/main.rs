//! `dms-master`: parse options, load the config, bind the listener, run until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dms_common::telemetry::{self, LogFormat};
use dms_master::config::{DEFAULT_CONFIG_PATH, MasterConfig};
use dms_master::universe::Universe;

/// The DMS master: keeps a market-data store complete, correct and replicated.
#[derive(Debug, Parser)]
#[command(name = "dms-master", version, about)]
struct Cli {
    /// Config file.
    #[arg(long, short, global = true, env = "DMS_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log format: human or json.
    #[arg(long, global = true, env = "DMS_LOG_FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the master (the default).
    Run,
    /// Check the config file and print the effective config, or every problem found.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let config = match MasterConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Sources and watchlists read files (CSV directories, symbol lists): check them up front,
    // as part of the config.
    let universe = match Universe::build(&config.sources, &config.watchlists) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {}: {e:#}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => {
            println!("{}: ok", cli.config.display());
            match serde_json::to_string_pretty(&config) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("cannot print the config: {e}"),
            }
            ExitCode::SUCCESS
        }
        Command::Run => run(config, cli.config, universe),
    }
}

fn run(config: MasterConfig, path: PathBuf, universe: Universe) -> ExitCode {
    dms_common::daemon::serve(config.http.listen, "http.listen", |listener, daemon| {
        dms_master::server::run(config, Some(path), universe, listener, daemon)
    })
}
