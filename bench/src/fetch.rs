//! The `fetch` scenario: an incremental update of S symbols (default 5,000) from a local
//! provider that speaks Yahoo's chart API with a fixed latency per request (default 50 ms),
//! through the master's real task manager and Yahoo client limited to R requests/s (default
//! 50). The floor is S / R seconds (100 s); the scenario reports the time against it.
//!
//! The store is first filled by a full import of the same symbols from the same provider with
//! no latency and no rate limit, so the update starts from series that end a few days ago.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dms_common::journal::{Journal, RetentionPolicy};
use dms_common::store::SharedStore;
use dms_common::store::sqlite::SqliteStore;
use dms_common::{Symbol, Timestamp};
use dms_e2e::provider::FakeYahoo;
use dms_master::applier::{self, ApplierOptions};
use dms_master::catalog::Catalog;
use dms_master::config::{
    MasterConfig, SourceConfig, TasksConfig, WatchlistConfig, YahooSourceConfig,
};
use dms_master::ingest::Ingestor;
use dms_master::quarantine::Quarantine;
use dms_master::tasks::manager::{TaskContext, TaskManager};
use dms_master::tasks::store::TaskStore;
use dms_master::tasks::{Task, TaskKind, TaskParams};
use dms_master::universe::Universe;
use tokio_util::sync::CancellationToken;

use crate::Outcome;

/// Options of the fetch scenario.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FetchArgs {
    /// Number of symbols.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) symbols: usize,
    /// Provider latency per request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub(crate) latency_ms: u64,
    /// The provider's rate limit, requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub(crate) rps: f64,
}

fn config(base_url: &str, symbols: &[Symbol], rps: f64) -> MasterConfig {
    let mut yahoo = YahooSourceConfig::new("gen", base_url);
    yahoo.requests_per_second = rps;
    yahoo.max_concurrency = 16;
    MasterConfig {
        sources: vec![SourceConfig::Yahoo(yahoo)],
        watchlists: vec![WatchlistConfig {
            name: "bench".into(),
            source: "gen".into(),
            intervals: vec![dms_common::Interval::D1],
            symbols: symbols.to_vec(),
            symbols_file: None,
            calendar: Some("nyse".into()),
            holidays: Vec::new(),
        }],
        ..MasterConfig::default()
    }
}

struct Rig {
    tasks: TaskStore,
    ctx: TaskContext,
}

async fn run_task(
    rig: &Rig,
    universe: Arc<Universe>,
    kind: TaskKind,
    params: TaskParams,
) -> Result<(Task, f64)> {
    let manager = TaskManager::new(TaskContext {
        universe,
        ..rig.ctx.clone()
    });
    let stop = CancellationToken::new();
    let runner = tokio::spawn(manager.clone().run(stop.clone()));
    let started = Instant::now();
    let task = manager.submit(kind, kind.as_str().into(), params).await?;
    let finished = loop {
        let t = rig.tasks.get(&task.id).await?.context("task vanished")?;
        if t.status.is_final() {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    runner.await?;
    Ok((finished, secs))
}

pub(crate) fn fetch(args: &FetchArgs) -> Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("dms-bench-").tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let provider = FakeYahoo::start(true, Duration::ZERO).await;
        let symbols: Vec<Symbol> = (0..args.symbols)
            .map(|i| Symbol::new(&format!("F{i:05}")))
            .collect::<Result<_, _>>()?;
        let state = dir.path().join("state.db");
        let journal = Journal::open(&state, RetentionPolicy::default())?;
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path().join("bars.db"))?);
        let stop = CancellationToken::new();
        let applier = applier::start(journal.clone(), store.clone(), ApplierOptions::default(), stop.clone()).await?;
        let tasks = TaskStore::open(&state)?;
        let rig = Rig {
            tasks: tasks.clone(),
            ctx: TaskContext {
                tasks,
                universe: Arc::new(Universe::default()),
                ingestor: Ingestor::new(journal.clone(), Quarantine::open(&state)?),
                journal: journal.clone(),
                store: store.clone(),
                catalog: Catalog::open(&state)?,
                applied: applier.applied(),
                config: TasksConfig::default(),
                alerts: dms_master::alerts::Alerts::disabled(),
                csv_sources: Vec::new(),
            sql_sources: Vec::new(),
                imports: Default::default(),
            },
        };
        let now = Timestamp::now().0;
        let fill = Arc::new(Universe::build(&config(&provider.base_url(), &symbols, 100_000.0))?);
        eprintln!("filling the store: {} symbols, 60 days each...", symbols.len());
        let (filled, fill_secs) = run_task(
            &rig,
            fill,
            TaskKind::FullImport,
            TaskParams {
                start: Some(Timestamp(now - 63 * 86_400)),
                end: Some(Timestamp(now - 3 * 86_400)),
                ..Default::default()
            },
        )
        .await?;
        if filled.counters.series_done != symbols.len() as u64 {
            bail!("fill failed: {:?}", filled.counters);
        }
        applier.wait_applied(journal.head()).await;
        eprintln!("filled in {fill_secs:.1} s; update with {} ms latency at {} requests/s...", args.latency_ms, args.rps);

        provider.set_latency(Duration::from_millis(args.latency_ms));
        let limited = Arc::new(Universe::build(&config(&provider.base_url(), &symbols, args.rps))?);
        let before: u64 = provider.all_requests().values().sum();
        let (update, secs) = run_task(&rig, limited, TaskKind::IncrementalUpdate, TaskParams::default()).await?;
        let requests: u64 = provider.all_requests().values().sum::<u64>() - before;
        if update.counters.series_done != symbols.len() as u64 {
            bail!("update failed: {:?}", update.counters);
        }
        stop.cancel();
        applier.join(Duration::from_secs(30)).await;
        let floor = args.symbols as f64 / args.rps;
        Ok(Outcome {
            scenario: "fetch".into(),
            bars: update.counters.bars_written,
            secs,
            bars_per_sec: update.counters.bars_written as f64 / secs,
            peak_rss_mib: crate::scenarios::peak_rss_mib(),
            notes: format!(
                "{requests} requests in {secs:.1} s = {:.1} requests/s; floor {floor:.0} s; {:.1}% of the floor; {} bars unchanged",
                requests as f64 / secs,
                100.0 * secs / floor,
                update.counters.bars_unchanged
            ),
        })
    })
}
