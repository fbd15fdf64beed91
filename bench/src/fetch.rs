//! The `fetch` scenario: an incremental update of S symbols (default 5,000) from a local
//! provider that speaks Yahoo's chart API with a fixed latency per request (default 50 ms),
//! through the master's real task manager and Yahoo client limited to R requests/s (default
//! 50). The floor is S / R seconds (100 s); the scenario reports the time against it.
//!
//! The `fetch-adaptive` scenario: the same update, but the provider holds its clients to L
//! requests/s (default 20) with a token bucket (burst B, default L) answering 429 when empty,
//! and the master is not told: its Yahoo source has the defaults (2 requests/s to start, the
//! adaptive rate on, 4 in flight). The floor is S / L seconds (250 s); the scenario reports the
//! time against it, the 429s and their share of the requests, and the rate learned.
//!
//! The store is first filled by a full import of the same symbols from the same provider with
//! no latency and no rate limit, so the update starts from series that end a few days ago.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dms_common::journal::{Journal, RetentionPolicy};
use dms_common::store::SharedStore;
use dms_common::store::config::StoreConfig;
use dms_common::store::sqlite::SqliteStore;
use dms_common::{Symbol, Timestamp};
use dms_e2e::provider::{FakeYahoo, RateLimit};
use dms_master::config::{
    MasterConfig, SourceConfig, StateConfig, TasksConfig, WatchlistConfig, YahooSourceConfig,
};
use dms_master::data::backup::BackupConfig;
use dms_master::pipeline::applier::{self, ApplierOptions};
use dms_master::pipeline::catalog::Catalog;
use dms_master::pipeline::ingest::Ingestor;
use dms_master::pipeline::quarantine::Quarantine;
use dms_master::tasks::manager::{TaskContext, TaskFiles, TaskManager};
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

/// Options of the fetch-adaptive scenario.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FetchAdaptiveArgs {
    /// Number of symbols.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) symbols: usize,
    /// Provider latency per request, in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub(crate) latency_ms: u64,
    /// The provider's limit, requests per second (not told to the master).
    #[arg(long, default_value_t = 20.0)]
    pub(crate) provider_rps: f64,
    /// Requests the provider's bucket saves up (default: one second's worth).
    #[arg(long)]
    pub(crate) provider_burst: Option<f64>,
}

/// How the update's source is set up.
struct Spec {
    symbols: usize,
    latency_ms: u64,
    /// The master's Yahoo source.
    source: YahooSourceConfig,
    /// The provider's own limit.
    provider_limit: Option<RateLimit>,
    /// The rate the floor is computed from.
    floor_rps: f64,
    scenario: &'static str,
}

/// A fixed rate of `rps`, 16 in flight.
fn fixed_source(base_url: &str, rps: f64) -> YahooSourceConfig {
    let mut yahoo = YahooSourceConfig::new("gen", base_url);
    yahoo.requests_per_second = rps;
    yahoo.adaptive_rate = false;
    yahoo.max_concurrency = 16;
    yahoo
}

fn config(yahoo: YahooSourceConfig, symbols: &[Symbol]) -> MasterConfig {
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
    run(&Spec {
        symbols: args.symbols,
        latency_ms: args.latency_ms,
        source: fixed_source("", args.rps),
        provider_limit: None,
        floor_rps: args.rps,
        scenario: "fetch",
    })
}

pub(crate) fn fetch_adaptive(args: &FetchAdaptiveArgs) -> Result<Outcome> {
    // The defaults a user gets: 2 requests/s to start, adaptive, 4 in flight.
    let source = YahooSourceConfig::new("gen", "");
    if !source.adaptive_rate {
        bail!("the Yahoo source's default is not adaptive");
    }
    run(&Spec {
        symbols: args.symbols,
        latency_ms: args.latency_ms,
        source,
        provider_limit: Some(RateLimit {
            requests_per_second: args.provider_rps,
            burst: args.provider_burst.unwrap_or(args.provider_rps),
            retry_after_secs: None,
        }),
        floor_rps: args.provider_rps,
        scenario: "fetch-adaptive",
    })
}

fn run(spec: &Spec) -> Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("dms-bench-").tempdir()?;
    let runtime = crate::scenarios::runtime()?;
    runtime.block_on(async {
        let provider = FakeYahoo::start(true, Duration::ZERO).await;
        let symbols: Vec<Symbol> = (0..spec.symbols)
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
                tables: Default::default(),
                imports: Default::default(),
                files: TaskFiles::new(
                    &state,
                    &StateConfig { path: state.clone() }.dir(),
                    &BackupConfig::default(),
                    &StoreConfig::default(),
                ),
                targets: dms_master::data::targets::Targets::default(),
            },
        };
        let now = Timestamp::now().0;
        let fill = config(fixed_source(&provider.base_url(), 100_000.0), &symbols);
        let fill = Arc::new(Universe::build(&fill.sources, &fill.watchlists)?);
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
        eprintln!(
            "filled in {fill_secs:.1} s; update with {} ms latency, the provider limited to {:?}, the source at {} requests/s (adaptive: {})...",
            spec.latency_ms, spec.provider_limit, spec.source.requests_per_second, spec.source.adaptive_rate
        );

        provider.set_latency(Duration::from_millis(spec.latency_ms));
        provider.set_rate_limit(spec.provider_limit);
        let source = YahooSourceConfig {
            base_url: provider.base_url(),
            ..spec.source.clone()
        };
        let limited = config(source, &symbols);
        let limited = Arc::new(Universe::build(&limited.sources, &limited.watchlists)?);
        let before = provider.total_requests();
        let (update, secs) = run_task(&rig, limited.clone(), TaskKind::IncrementalUpdate, TaskParams::default()).await?;
        let requests = provider.total_requests() - before;
        let throttled = provider.throttled();
        if update.counters.series_done != symbols.len() as u64 {
            bail!("update failed: {:?}", update.counters);
        }
        stop.cancel();
        applier.join(Duration::from_secs(30)).await;
        let floor = spec.symbols as f64 / spec.floor_rps;
        let mut notes = format!(
            "{requests} requests in {secs:.1} s = {:.1} requests/s; floor {floor:.0} s; {:.1}% of the floor; {} bars unchanged",
            requests as f64 / secs,
            100.0 * secs / floor,
            update.counters.bars_unchanged
        );
        if spec.provider_limit.is_some() {
            let rate = limited
                .request_rates()
                .into_iter()
                .next()
                .map(|(_, r)| r)
                .context("the source has no rate")?;
            notes.push_str(&format!(
                "; {throttled} answered 429 ({:.2}% of requests); {} retries; rate learned {:.1} requests/s after {} decreases",
                100.0 * throttled as f64 / requests as f64,
                update.counters.retries,
                rate.requests_per_second,
                rate.decreases
            ));
        }
        Ok(Outcome {
            scenario: spec.scenario.into(),
            bars: update.counters.bars_written,
            secs,
            bars_per_sec: update.counters.bars_written as f64 / secs,
            peak_rss_mib: crate::scenarios::peak_rss_mib(),
            notes,
        })
    })
}
