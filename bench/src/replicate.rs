//! `replicate`: replication between a master and a `dms-replica` over loopback gRPC, both in
//! this process (the master's journal, store applier and replication service; the replica's
//! whole daemon), the stream passing through a counting TCP proxy.
//!
//! Measured, in order:
//! 1. `store-raw-multirow` for the replica's store kind (SQLite), the reference.
//! 2. The master ingests S × N bars (no replica yet; the journal keeps every entry).
//! 3. Catch-up: an empty replica connects and streams the whole journal; timed until the
//!    master has its acknowledgement of the head. Bytes through the proxy per bar.
//! 4. A full verify of every series (`verify_node`), from the digests both sides keep.
//! 5. Lag while the master ingests a steady 20k bars/s (one new bar for 1,000 series every
//!    50 ms): for each append, the time until the replica acknowledged it; p50 and p99.
//! 6. One bar changed in the replica's store: a repair run finds it (series digests, then the
//!    differing series' bucket digests) and pulls that one bucket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dms_common::journal::{Journal, Origin, RetentionPolicy, Seq};
use dms_common::store::sqlite::SqliteStore;
use dms_common::store::{BarStore, SharedStore};
use dms_common::{Bar, SeriesBars, TimeRange, Timestamp};
use dms_master::pipeline::applier::{self, ApplierOptions};
use dms_master::pipeline::ingest::Ingestor;
use dms_master::pipeline::quarantine::Quarantine;
use dms_master::replication::nodes::{NodeRegistry, cursor_name};
use dms_master::replication::verify::verify_node;
use dms_master::replication::{ReplicationContext, ReplicationService, StreamOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::generator::BarGenerator;
use crate::{Size, scenarios};

const NODE: &str = "bench-replica";

/// Runs the scenario and prints a Markdown table of its numbers.
pub(crate) fn replicate(size: &Size, steady_secs: u64, compression: &str) -> Result<()> {
    let reference = scenarios::store_raw_multirow(size)?;
    eprintln!(
        "reference store-raw-multirow: {:.0} bars/s",
        reference.bars_per_sec
    );
    let dir = scenarios::workdir(size)?;
    let runtime = crate::scenarios::runtime()?;
    let r = runtime.block_on(run(dir.path(), size, steady_secs, compression))?;
    let catch_up_rate = r.bars as f64 / r.catch_up_secs;
    println!("| measure | value | target | notes |");
    println!("| --- | ---: | ---: | --- |");
    println!(
        "| replica store raw multi-row write rate (reference) | {:.0} bars/s | | same run |",
        reference.bars_per_sec
    );
    println!(
        "| master ingest | {:.0} bars/s | | {} bars, before the replica connects |",
        r.bars as f64 / r.ingest_secs,
        r.bars
    );
    println!(
        "| catch-up of an empty replica | {catch_up_rate:.0} bars/s ({:.1} s) | ≥ 750k bars/s | {:.0}% of the reference (target ≥ 80%) |",
        r.catch_up_secs,
        100.0 * catch_up_rate / reference.bars_per_sec
    );
    println!(
        "| bytes on the wire per bar ({compression}) | {:.1} B | | {} bytes through the proxy; journal payload {:.1} B/bar |",
        r.wire_bytes as f64 / r.bars as f64,
        r.wire_bytes,
        r.journal_bytes as f64 / r.bars as f64
    );
    println!(
        "| full verify | {:.3} s | ≤ 5 s | {} series, {} buckets compared |",
        r.verify_secs, r.series, r.buckets
    );
    println!(
        "| lag while ingesting {:.0} bars/s | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | p99 ≤ 200 ms | {} appends over {steady_secs} s |",
        r.steady_rate, r.lag_p50_ms, r.lag_p99_ms, r.lag_max_ms, r.lag_samples
    );
    println!(
        "| find and repair one changed bucket | {:.3} s | ≤ 1 s + transfer | {} buckets compared, {} pulled, {} bars |",
        r.repair_secs, r.repair_buckets_compared, r.repair_buckets_pulled, r.repair_bars
    );
    Ok(())
}

#[derive(Debug, Default)]
struct Numbers {
    bars: u64,
    ingest_secs: f64,
    catch_up_secs: f64,
    wire_bytes: u64,
    journal_bytes: u64,
    verify_secs: f64,
    series: usize,
    buckets: u64,
    steady_rate: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    lag_max_ms: f64,
    lag_samples: usize,
    repair_secs: f64,
    repair_buckets_compared: u64,
    repair_buckets_pulled: u64,
    repair_bars: u64,
}

async fn run(
    dir: &std::path::Path,
    size: &Size,
    steady_secs: u64,
    compression: &str,
) -> Result<Numbers> {
    let mut n = Numbers::default();
    // The master's parts.
    let state = dir.join("master-state.db");
    let journal = Journal::open(&state, RetentionPolicy::default())?;
    let store: SharedStore = Arc::new(SqliteStore::open(dir.join("master-bars.db"))?);
    let stop = CancellationToken::new();
    let applier = applier::start(
        journal.clone(),
        store.clone(),
        ApplierOptions::default(),
        stop.clone(),
    )
    .await?;
    let flusher = {
        let (journal, stop) = (journal.clone(), stop.clone());
        tokio::spawn(async move {
            journal
                .flush_acks_every(Duration::from_millis(100), stop.cancelled_owned())
                .await
        })
    };
    let ingestor = Ingestor::new(journal.clone(), Quarantine::open(&state)?);

    // Ingest everything first.
    let generator = BarGenerator { bars: size.bars };
    let dates = generator.dates();
    let started = Instant::now();
    let (bars, last) = scenarios::journal_generated(&ingestor, size, &generator, &dates).await?;
    n.bars = bars;
    applier.wait_applied(last).await;
    n.ingest_secs = started.elapsed().as_secs_f64();
    n.journal_bytes = journal.stats().await?.bytes;
    eprintln!("ingested {} bars in {:.1} s", n.bars, n.ingest_secs);

    // The replication service on loopback, behind a counting proxy.
    let nodes = NodeRegistry::open(&state)?;
    let service = ReplicationService::new(ReplicationContext {
        journal: journal.clone(),
        store: store.clone(),
        store_applied: applier.applied(),
        nodes: nodes.clone(),
        auth: dms_master::replication::ReplicationAuth::default(),
        journal_covers_store: true,
        options: StreamOptions::default(),
        shutdown: stop.clone(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let master_port = listener.local_addr()?.port();
    let grpc = dms_master::api::grpc::grpc_router(service, None).await?;
    let serve_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, grpc)
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await
    });
    let wire = Arc::new(AtomicU64::new(0));
    let proxy_port = start_counting_proxy(master_port, wire.clone()).await?;

    // The replica daemon.
    let replica_dir = dir.join("replica");
    std::fs::create_dir_all(&replica_dir)?;
    let replica_store_path = replica_dir.join("bars.db");
    let config_text = format!(
        "node_id: {NODE}
master:
  url: http://127.0.0.1:{proxy_port}
  compression: {compression}
http:
  listen: 127.0.0.1:0
state:
  path: {}
store:
  type: sqlite
  path: {}
anti_entropy_interval: 0s
",
        replica_dir.join("state.db").display(),
        replica_store_path.display()
    );
    let config: dms_replica::config::ReplicaConfig = dms_common::config::load_str(
        &replica_dir.join("dms-replica.yaml"),
        &config_text,
        Vec::new(),
    )?;
    let replica_stop = CancellationToken::new();
    let replica_listener = TcpListener::bind("127.0.0.1:0").await?;
    let started = Instant::now();
    let replica = tokio::spawn(dms_replica::server::run(
        config.clone(),
        replica_listener,
        dms_common::daemon::Daemon::detached(replica_stop.clone()),
    ));
    let head = journal.head();
    wait_acked(&journal, head, Duration::from_secs(3600)).await?;
    n.catch_up_secs = started.elapsed().as_secs_f64();
    n.wire_bytes = wire.load(Ordering::Relaxed);
    eprintln!(
        "replica caught up with {} entries in {:.1} s",
        head, n.catch_up_secs
    );

    // A full verify from the digests both sides keep.
    let started = Instant::now();
    let report = verify_node(
        &nodes,
        &journal,
        &store,
        &applier.applied(),
        NODE,
        Duration::from_secs(60),
    )
    .await
    .context("verify")?;
    n.verify_secs = started.elapsed().as_secs_f64();
    ensure!(
        report.equal,
        "the replica differs after catch-up: {report:?}"
    );
    n.series = report.series_total;
    n.buckets = report.buckets_compared;

    // Steady ingest and the lag of each append.
    let origin = Origin {
        task_id: "bench".into(),
        source: "generator".into(),
    };
    let (lags, rate) = steady_lag(&journal, &ingestor, &origin, size, steady_secs).await?;
    n.steady_rate = rate;
    n.lag_samples = lags.len();
    let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)];
    n.lag_p50_ms = pct(0.50);
    n.lag_p99_ms = pct(0.99);
    n.lag_max_ms = *lags.last().unwrap_or(&0.0);

    // One changed bar in the replica's store, found and repaired.
    replica_stop.cancel();
    replica.await??;
    // The master's store must hold what the replica acknowledged before the two are compared.
    applier.wait_applied(journal.head()).await;
    let replica_store = SqliteStore::open(&replica_store_path)?;
    let victim = BarGenerator::key(size.symbols / 2);
    let mut bar = replica_store
        .read(
            &victim,
            TimeRange::new(dates[dates.len() / 2], Timestamp(i64::MAX)),
        )
        .next_page()
        .await?;
    bar.close += 0.01;
    bar.high = bar.high.max(bar.close);
    replica_store
        .upsert(&[SeriesBars::new(victim.clone(), vec![bar])])
        .await?;
    let replica_store: SharedStore = Arc::new(replica_store);
    let mut client = dms_replica::client::connect(&config.master, None).await?;
    let started = Instant::now();
    let outcome = dms_replica::repair::repair(
        &mut client,
        &replica_store,
        "bench",
        &CancellationToken::new(),
    )
    .await?;
    n.repair_secs = started.elapsed().as_secs_f64();
    n.repair_buckets_compared = outcome.record.buckets_compared;
    n.repair_buckets_pulled = outcome.record.buckets_pulled;
    n.repair_bars = outcome.record.bars_pulled;
    ensure!(
        outcome.record.buckets_pulled == 1,
        "one bucket differs: {:?}",
        outcome.record
    );

    stop.cancel();
    let _ = server.await;
    let _ = flusher.await;
    applier.join(Duration::from_secs(30)).await;
    Ok(n)
}

/// Appends one new bar to each of 1,000 series every 50 ms for `secs`; returns the sorted
/// latencies (ms) from each append to the replica's acknowledgement, and the rate achieved.
async fn steady_lag(
    journal: &Journal,
    ingestor: &Ingestor,
    origin: &Origin,
    size: &Size,
    secs: u64,
) -> Result<(Vec<f64>, f64)> {
    const PER_TICK: usize = 1_000;
    const TICK: Duration = Duration::from_millis(50);
    let series = PER_TICK.min(size.symbols);
    let pending: Arc<std::sync::Mutex<Vec<(Seq, Instant)>>> = Arc::default();
    let lags: Arc<std::sync::Mutex<Vec<f64>>> = Arc::default();
    let done = CancellationToken::new();
    // Watch the replica's acknowledged position.
    let watcher = {
        let (journal, pending, lags, done) =
            (journal.clone(), pending.clone(), lags.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                let acked = journal
                    .cursor(&cursor_name(NODE))
                    .await
                    .ok()
                    .flatten()
                    .map_or(Seq(0), |c| c.seq);
                let now = Instant::now();
                {
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    let mut l = lags.lock().unwrap_or_else(|e| e.into_inner());
                    p.retain(|(seq, at)| {
                        if *seq <= acked {
                            l.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                            false
                        } else {
                            true
                        }
                    });
                    if done.is_cancelled() && p.is_empty() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut next_day = Timestamp(1_735_689_600); // 2025-01-01
    let mut ticker = tokio::time::interval(TICK);
    let started = Instant::now();
    let mut bars = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        let day = next_day;
        next_day = Timestamp(next_day.0 + 86_400);
        let batch: Vec<SeriesBars> = (0..series)
            .map(|s| {
                SeriesBars::new(
                    BarGenerator::key(s),
                    vec![Bar::ohlcv(day, 10.0, 11.0, 9.0, 10.5, 1_000.0)],
                )
            })
            .collect();
        let at = Instant::now();
        let report = ingestor.ingest(batch, origin).await?;
        bars += report.accepted;
        if let Some(seq) = report.seqs.last() {
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*seq, at));
        }
    }
    let rate = bars as f64 / started.elapsed().as_secs_f64();
    done.cancel();
    tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .context("the replica did not acknowledge the steady ingest")??;
    let mut lags = Arc::try_unwrap(lags)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    lags.sort_by(f64::total_cmp);
    ensure!(!lags.is_empty(), "no lag samples");
    Ok((lags, rate))
}

/// Waits until the replica's cursor on the master reaches `seq`.
async fn wait_acked(journal: &Journal, seq: Seq, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let c = journal.cursor(&cursor_name(NODE)).await?;
        if c.is_some_and(|c| c.seq >= seq) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the replica did not reach {seq}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP proxy to `target` that counts the bytes it forwards (both directions).
async fn start_counting_proxy(target: u16, bytes: Arc<AtomicU64>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = tokio::spawn(copy_counting(cr, sw, bytes.clone()));
                let down = tokio::spawn(copy_counting(sr, cw, bytes));
                let _ = tokio::join!(up, down);
            });
        }
    });
    Ok(port)
}

async fn copy_counting(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The first bar of a stream.
trait FirstBar {
    async fn next_page(self) -> Result<Bar>;
}

impl FirstBar for dms_common::store::BarStream {
    async fn next_page(mut self) -> Result<Bar> {
        use futures::TryStreamExt;
        let page = self.try_next().await?.context("no bars")?;
        page.into_iter().next().context("an empty page")
    }
}
