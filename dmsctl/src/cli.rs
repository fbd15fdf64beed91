//! The command line: global connection options and every subcommand (clap derive). Every
//! option of the connection can also come from the environment (`DMS_ENDPOINT`, `DMS_TOKEN`,
//! `DMS_TOKEN_FILE`, `DMS_CA`, `DMS_CERT`, `DMS_KEY`, `DMS_OUTPUT`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Drive a DMS master: tasks, data status, replicas, schedules and the journal, over gRPC.
///
/// Exit status: 0 success (for `--follow` and `task follow`: the task completed), 1 failure (the
/// task failed, the master is unreachable or refused the call), 2 bad usage (a bad argument,
/// here or as judged by the master), 3 the followed task was cancelled.
#[derive(Debug, Parser)]
#[command(name = "dmsctl", version, about, long_about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    /// Output: `table` (aligned columns) or `json` (one JSON document for scripts); for
    /// `export`, the file to write.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "DMS_OUTPUT",
        default_value = "table",
        value_name = "table|json|FILE"
    )]
    pub output: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the master is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub(crate) struct Connection {
    /// The master's listener (`https://…` uses TLS).
    #[arg(
        long,
        global = true,
        env = "DMS_ENDPOINT",
        default_value = "http://127.0.0.1:11183"
    )]
    pub endpoint: String,
    /// Bearer token (when the master has `auth.token`); prefer --token-file.
    #[arg(long, global = true, env = "DMS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, global = true, env = "DMS_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the master's certificate (default: the system's roots).
    #[arg(long, global = true, env = "DMS_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, global = true, env = "DMS_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "DMS_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    Table,
    Json,
}

impl Output {
    /// The output style named by `-o` (`table` or `json`).
    pub(crate) fn parse(raw: &str) -> Option<Output> {
        match raw {
            "table" => Some(Output::Table),
            "json" => Some(Output::Json),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start, show, list, cancel and follow tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The data status: store totals, journal, applier, imports.
    Status,
    /// The catalog: every stored series.
    Series,
    /// Missing expected bars of one series.
    Gaps {
        symbol: String,
        /// 1m 5m 15m 30m 1h 1d 1wk 1mo (default 1d).
        #[arg(long, short)]
        interval: Option<String>,
    },
    /// One page of bars of one series.
    Bars {
        symbol: String,
        /// 1m 5m 15m 30m 1h 1d 1wk 1mo (default 1d).
        #[arg(long, short)]
        interval: Option<String>,
        /// First bar (`YYYY-MM-DD` or RFC 3339).
        #[arg(long)]
        start: Option<String>,
        /// End of the range, exclusive.
        #[arg(long)]
        end: Option<String>,
        /// Bars in the page (1 to 100000; default 10000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Every stored series: count, first, last, missing bars, source.
    Overview {
        /// Only symbols starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Only this interval.
        #[arg(long, short)]
        interval: Option<String>,
        /// Count missing bars even for more than 500 series (each count reads the series).
        #[arg(long, conflicts_with = "no_gaps")]
        gaps: bool,
        /// Do not count missing bars.
        #[arg(long)]
        no_gaps: bool,
    },
    /// Delete a series, or the bars of a range of it, through the journal (replicas delete too).
    Delete {
        symbol: String,
        /// 1m 5m 15m 30m 1h 1d 1wk 1mo (required: deleting never assumes one).
        #[arg(long, short)]
        interval: String,
        /// First bar to delete (`YYYY-MM-DD` or RFC 3339; default: the first).
        #[arg(long)]
        start: Option<String>,
        /// End of the range, exclusive (default: after the last).
        #[arg(long)]
        end: Option<String>,
        /// Count what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Replicas: list them (lag and state), or one's details, history, verify, forget.
    Nodes {
        #[command(subcommand)]
        command: Option<NodesCommand>,
    },
    /// Scheduled jobs.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// SQL-table sources: their database's tables, and a preview of the mapping.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Backups: write one, list them, verify one, restore one (or see what a restore would
    /// change).
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Journal size, bounds and consumers.
    Journal,
    /// Export bars to a file (`-o FILE`): CSV, JSON, JSON Lines, xlsx or Parquet, the same
    /// bytes as `GET /api/data/export`. Written to a temporary name beside FILE and renamed
    /// once complete.
    Export(ExportArgs),
    /// Import a file on the master's machine into the store (CSV, JSON, JSON Lines, xlsx or
    /// Parquet) as a task, every bar through the journal; or, with --dry-run, show what would
    /// be stored and every row problem. (To upload a file from elsewhere: POST it to
    /// /api/data/import-file.)
    Import(ImportArgs),
    /// Print a shell completion script.
    Completions { shell: Shell },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    /// A whole date range for every selected series.
    Import,
    /// From each series' last bar (minus a re-fetch window) to now.
    Update,
    /// Exactly the missing expected bars.
    Backfill,
    /// Stored bars checked against the quality rules.
    Validate,
    /// Every series copied into the store given by --target, then compared with it.
    Migrate,
    /// The store compared with the one given by --target; every differing bar listed.
    Check,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Status {
    Pending,
    Running,
    Paused,
    Completed,
    Partial,
    Failed,
    Cancelled,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SourcesCommand {
    /// The tables of a SQL source's database with their columns and types.
    Tables { source: String },
    /// The first rows of a SQL source as they would be imported.
    Preview {
        source: String,
        /// Rows (1 to 1000; default 20).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TaskCommand {
    /// Queue a task (the master checks the parameters as the REST API does).
    Start(Box<StartArgs>),
    /// One task.
    Get { id: String },
    /// Tasks, newest first.
    List {
        #[arg(long)]
        status: Option<Status>,
        /// 1 to 1000 (default 20).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Ask a task to stop.
    Cancel { id: String },
    /// Show a task's progress live until it ends; exit with its outcome.
    Follow { id: String },
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    pub kind: Kind,
    /// Only these symbols (repeat or separate with commas; default: every kept series).
    #[arg(long = "symbols", short = 's', value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Only this interval.
    #[arg(long, short)]
    pub interval: Option<String>,
    /// Only series of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Import: first date (`YYYY-MM-DD` or RFC 3339).
    #[arg(long)]
    pub start: Option<String>,
    /// Import: end date, exclusive.
    #[arg(long)]
    pub end: Option<String>,
    /// Skip this many series of the selection (symbol order).
    #[arg(long)]
    pub skip: Option<u64>,
    /// Take at most this many series of the selection.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Update: days before the last stored bar to fetch again.
    #[arg(long)]
    pub days: Option<u32>,
    /// Update: leave series with nothing stored alone.
    #[arg(long)]
    pub only_existing: bool,
    /// (check) Compare the store with this backup (a name as listed) instead of a store.
    #[arg(long)]
    pub backup: Option<String>,
    /// (check) Compare the store with what this replica serves, bar by bar: its name under
    /// `targets:` in the master's config (type: replica).
    #[arg(long)]
    pub replica: Option<String>,
    /// (migrate, check) The other store: its name under `targets:` in the master's config
    /// (requests never carry addresses, paths or secrets).
    #[arg(long)]
    pub target: Option<String>,
    /// Follow the task's progress until it ends, and exit with its outcome.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// csv, json, jsonl, xlsx or parquet (default: from the file's extension).
    #[arg(long, short = 'f')]
    pub format: Option<String>,
    /// Only these symbols (repeat or separate with commas; default: every stored series).
    #[arg(long = "symbols", short = 's', value_delimiter = ',')]
    pub symbols: Vec<String>,
    /// Only this interval (1m 5m 15m 30m 1h 1d 1wk 1mo).
    #[arg(long, short)]
    pub interval: Option<String>,
    /// First bar (`YYYY-MM-DD` or RFC 3339).
    #[arg(long)]
    pub start: Option<String>,
    /// End of the range, exclusive.
    #[arg(long)]
    pub end: Option<String>,
    /// Parquet: zstd (default) or snappy.
    #[arg(long)]
    pub compression: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The file (a relative path is made absolute here; the master reads it).
    pub file: std::path::PathBuf,
    /// csv, json, jsonl, xlsx or parquet (default: from the file's extension).
    #[arg(long, short = 'f')]
    pub format: Option<String>,
    /// A bar field's column, FIELD=COLUMN (repeat): symbol, interval, time, open, high, low,
    /// close, volume, adj_close, turnover, open_interest. Unmapped fields use the usual names
    /// (Date, Open, Close, ts, trade_date, vol, …).
    #[arg(long = "map", short = 'm', value_name = "FIELD=COLUMN")]
    pub map: Vec<String>,
    /// The symbol of rows without one (no symbol column).
    #[arg(long)]
    pub symbol: Option<String>,
    /// The interval of rows without one (e.g. 1d).
    #[arg(long, short)]
    pub interval: Option<String>,
    /// The volume of rows without one.
    #[arg(long)]
    pub volume: Option<f64>,
    /// IANA time zone of naive times (default UTC), e.g. Asia/Shanghai.
    #[arg(long, short = 'z')]
    pub timezone: Option<String>,
    /// upsert (overwrite stored bars; the default) or insert_only (keep them).
    #[arg(long)]
    pub mode: Option<String>,
    /// CSV delimiter (default `,`; `\t` for tab).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Show the first rows as they would be stored and every row problem; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Rows a dry run shows (1 to 1000; default 20).
    #[arg(long)]
    pub preview_rows: Option<u32>,
    /// The task's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the import until it ends, and exit with its outcome.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupCommand {
    /// Write a backup now (to the master's `backup.dir`); older ones go by the retention.
    Create {
        /// Follow the backup until it ends; exit with its outcome.
        #[arg(long, short)]
        follow: bool,
    },
    /// The complete backups, newest first.
    List,
    /// Check a backup's files against its manifest (sizes, SHA-256, bars and digests).
    Verify {
        /// The backup's name (as listed) or absolute path.
        name: String,
        #[arg(long, short)]
        follow: bool,
    },
    /// Restore a backup into the store through the journal (replicas follow); stored bars
    /// the backup does not hold are kept.
    Restore {
        /// The backup's name (as listed) or absolute path.
        name: String,
        /// Report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// Every replica (the default).
    List,
    /// One replica.
    Get { id: String },
    /// Its sync sessions, newest first.
    History {
        id: String,
        /// 1 to 1000 (default 20).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Compare its digests with the master's.
    Verify { id: String },
    /// Forget it and release what the journal kept for it.
    Forget { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// Every job with its next fire times and last run.
    List,
    /// Run a job now (overlap with its running task is still refused).
    Trigger {
        name: String,
        /// Follow the task it starts until it ends; exit with its outcome.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a job from firing until resumed.
    Pause { name: String },
    /// Let a paused job fire again.
    Resume { name: String },
}
