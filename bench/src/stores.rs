//! `store-influxdb`, `store-postgres`, `store-mysql`: the master's real ingest path into a
//! server store, beside the server's raw write rate for the same rows measured in the same run,
//! and reads back (one series; all series).
//!
//! - Raw reference: InfluxDB gets the same line protocol POSTed directly (gzip, 5,000 points
//!   per request, one writer); PostgreSQL a `COPY` of the same rows into a table of the same
//!   shape; MySQL multi-row `INSERT`s (1,000 rows per statement) into a table of the same shape.
//! - Ingest: validate → journal → store applier → the store opened from its config, timed until
//!   the store applied everything.
//! - Reads: one series (the median of 20 series read whole), then every series.
//!
//! Each run works in its own database, dropped at the end (InfluxDB: `dms_bench`,
//! `dms_bench_raw`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use dms_common::TimeRange;
use dms_common::journal::{Journal, RetentionPolicy};
use dms_common::store::SharedStore;
use dms_common::store::config::StoreConfig;
use dms_common::store::influx::line_protocol;
use dms_common::store::open_store;
use dms_master::pipeline::applier::{self, ApplierOptions};
use dms_master::pipeline::ingest::Ingestor;
use dms_master::pipeline::quarantine::Quarantine;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::generator::BarGenerator;
use crate::{Size, scenarios};

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Backend {
    Influxdb,
    Postgres,
    Mysql,
}

/// Runs the scenario for `backend` at `url` and prints a Markdown table.
pub(crate) fn run(size: &Size, backend: Backend, url: &str) -> Result<()> {
    let dir = scenarios::workdir(size)?;
    let runtime = crate::scenarios::runtime()?;
    runtime.block_on(async {
        let db = Database::create(backend, url).await?;
        let outcome = measure(dir.path(), size, backend, &db).await;
        db.drop_all().await;
        let m = outcome?;
        let name = format!("{backend:?}").to_lowercase();
        println!("| store-{name} | value | notes |");
        println!("| --- | ---: | --- |");
        println!(
            "| raw reference | {:.0} bars/s | {} bars, {} |",
            m.bars as f64 / m.raw_secs,
            m.bars,
            raw_method(backend)
        );
        println!(
            "| ingest (journal → applier → store) | {:.0} bars/s | **{:.0}% of the raw reference** |",
            m.bars as f64 / m.ingest_secs,
            100.0 * m.raw_secs / m.ingest_secs
        );
        println!(
            "| load one series ({} bars) | {:.1} ms | median of 20 |",
            size.bars, m.load_one_ms
        );
        println!(
            "| load all | {:.0} bars/s | {} series |",
            m.bars as f64 / m.load_all_secs,
            size.symbols
        );
        Ok(())
    })
}

fn raw_method(backend: Backend) -> &'static str {
    match backend {
        Backend::Influxdb => "line protocol POSTed directly, gzip, 5,000 points per request",
        Backend::Postgres => "COPY of the same rows",
        Backend::Mysql => "multi-row INSERT, 1,000 rows per statement",
    }
}

#[derive(Debug)]
struct Measured {
    bars: u64,
    raw_secs: f64,
    ingest_secs: f64,
    load_one_ms: f64,
    load_all_secs: f64,
}

/// The databases of one run.
pub(crate) struct Database {
    backend: Backend,
    /// Where the store writes.
    pub(crate) store_url: String,
    /// The server as given (InfluxDB) or its admin connection URL (SQL).
    admin_url: String,
    name: String,
}

impl Database {
    pub(crate) async fn create(backend: Backend, url: &str) -> Result<Database> {
        let name = format!("dms_bench_{}", std::process::id());
        let store_url = match backend {
            Backend::Influxdb => url.to_owned(),
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(url)
                    .await
                    .context("connect to PostgreSQL")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await?;
                replace_db(url, &name)
            }
            Backend::Mysql => {
                let pool = sqlx::MySqlPool::connect(url)
                    .await
                    .context("connect to MySQL")?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&pool)
                    .await?;
                replace_db(url, &name)
            }
        };
        Ok(Database {
            backend,
            store_url,
            admin_url: url.to_owned(),
            name,
        })
    }

    pub(crate) async fn drop_all(&self) {
        let statement = format!("DROP DATABASE IF EXISTS {}", self.name);
        match self.backend {
            Backend::Influxdb => {
                for db in ["dms_bench", "dms_bench_raw"] {
                    let _ = influx_query(&self.admin_url, &format!("DROP DATABASE {db}")).await;
                }
            }
            Backend::Postgres => {
                if let Ok(pool) = sqlx::PgPool::connect(&self.admin_url).await {
                    let _ = sqlx::query(&format!("{statement} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                }
            }
            Backend::Mysql => {
                if let Ok(pool) = sqlx::MySqlPool::connect(&self.admin_url).await {
                    let _ = sqlx::query(&statement).execute(&pool).await;
                }
            }
        }
    }

    pub(crate) fn store_config(&self) -> Result<StoreConfig> {
        let store = match self.backend {
            Backend::Influxdb => format!(
                "  type: influxdb\n  url: {}\n  database: dms_bench\n  retention_policy: bench\n",
                self.store_url
            ),
            Backend::Postgres => format!("  type: postgres\n  url: {}\n", self.store_url),
            Backend::Mysql => format!("  type: mysql\n  url: {}\n", self.store_url),
        };
        // Through the master's config, so the store is checked as the master checks it.
        let config: dms_master::config::MasterConfig = dms_common::config::load_str(
            std::path::Path::new("bench.yaml"),
            &format!("store:\n{store}"),
            Vec::new(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config.store)
    }
}

/// `url` with its database (the path) replaced by `name`.
fn replace_db(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

async fn influx_query(url: &str, q: &str) -> Result<()> {
    let r = reqwest::Client::new()
        .post(format!("{url}/query"))
        .query(&[("q", q)])
        .send()
        .await?;
    ensure!(r.status().is_success(), "{q}: {}", r.text().await?);
    Ok(())
}

async fn measure(
    dir: &std::path::Path,
    size: &Size,
    backend: Backend,
    db: &Database,
) -> Result<Measured> {
    let generator = BarGenerator { bars: size.bars };
    let dates = generator.dates();
    let bars = (size.symbols * size.bars) as u64;

    // 1. The raw reference.
    let started = Instant::now();
    match backend {
        Backend::Influxdb => raw_influx(&db.admin_url, size, &generator, &dates).await?,
        Backend::Postgres => raw_postgres(&db.store_url, size, &generator, &dates).await?,
        Backend::Mysql => raw_mysql(&db.store_url, size, &generator, &dates).await?,
    }
    let raw_secs = started.elapsed().as_secs_f64();
    eprintln!("raw: {:.0} bars/s", bars as f64 / raw_secs);

    // 2. The master's ingest path into the store.
    let store: SharedStore = open_store(&db.store_config()?).await?;
    let state = dir.join("state.db");
    let journal = Journal::open(&state, RetentionPolicy::default())?;
    let stop = CancellationToken::new();
    let applier = applier::start(
        journal.clone(),
        store.clone(),
        ApplierOptions::default(),
        stop.clone(),
    )
    .await?;
    let ingestor = Ingestor::new(journal.clone(), Quarantine::open(&state)?);
    let started = Instant::now();
    let (_, last) = scenarios::journal_generated(&ingestor, size, &generator, &dates).await?;
    applier.wait_applied(last).await;
    let ingest_secs = started.elapsed().as_secs_f64();
    let status = applier.status();
    ensure!(
        status.bars.total() == bars && status.dead_letters == 0,
        "the store took {} of {bars} bars ({status:?})",
        status.bars.total()
    );
    stop.cancel();
    applier.join(Duration::from_secs(30)).await;
    eprintln!("ingest: {:.0} bars/s", bars as f64 / ingest_secs);

    // 3. Reads.
    let mut one = Vec::new();
    for k in 0..20 {
        let key = BarGenerator::key((k * 7919) % size.symbols);
        let started = Instant::now();
        let read: Vec<_> = store.read(&key, TimeRange::all()).try_concat().await?;
        one.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(read.len() == size.bars, "{key}: {} bars read", read.len());
    }
    one.sort_by(f64::total_cmp);
    let started = Instant::now();
    let mut total = 0u64;
    for s in 0..size.symbols {
        let mut pages = store.read(&BarGenerator::key(s), TimeRange::all());
        while let Some(page) = pages.try_next().await? {
            total += page.len() as u64;
        }
    }
    let load_all_secs = started.elapsed().as_secs_f64();
    ensure!(total == bars, "{total} of {bars} bars read back");
    Ok(Measured {
        bars,
        raw_secs,
        ingest_secs,
        load_one_ms: one[one.len() / 2],
        load_all_secs,
    })
}

async fn raw_influx(
    url: &str,
    size: &Size,
    generator: &BarGenerator,
    dates: &[dms_common::Timestamp],
) -> Result<()> {
    influx_query(url, "CREATE DATABASE dms_bench_raw").await?;
    influx_query(
        url,
        "CREATE RETENTION POLICY raw ON dms_bench_raw DURATION INF REPLICATION 1 SHARD DURATION 52w DEFAULT",
    )
    .await?;
    let client = reqwest::Client::new();
    let mut body = String::new();
    let mut points = 0;
    let send = async |body: &mut String| -> Result<()> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body.as_bytes())?;
        let r = client
            .post(format!("{url}/write?db=dms_bench_raw&rp=raw&precision=s"))
            .header("content-encoding", "gzip")
            .body(gz.finish()?)
            .send()
            .await?;
        ensure!(r.status().is_success(), "raw write: {}", r.text().await?);
        body.clear();
        Ok(())
    };
    for s in 0..size.symbols {
        let sb = generator.series(s, dates);
        let (symbol, interval) = (sb.key.symbol.to_string(), sb.key.interval.to_string());
        for b in &sb.bars {
            line_protocol::encode_point(
                &mut body,
                "bars",
                &[("symbol", &symbol), ("interval", &interval)],
                &[
                    ("open", Some(b.open)),
                    ("high", Some(b.high)),
                    ("low", Some(b.low)),
                    ("close", Some(b.close)),
                    ("volume", Some(b.volume)),
                ],
                b.ts.0,
            )?;
            points += 1;
            if points % 5_000 == 0 {
                send(&mut body).await?;
            }
        }
    }
    if !body.is_empty() {
        send(&mut body).await?;
    }
    Ok(())
}

const RAW_TABLE: &str = "raw_bars (series_id BIGINT NOT NULL, ts BIGINT NOT NULL,
    open DOUBLE PRECISION NOT NULL, high DOUBLE PRECISION NOT NULL, low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL, volume DOUBLE PRECISION NOT NULL,
    adj_close DOUBLE PRECISION, turnover DOUBLE PRECISION, open_interest DOUBLE PRECISION,
    PRIMARY KEY (series_id, ts))";

pub(crate) async fn raw_postgres(
    url: &str,
    size: &Size,
    generator: &BarGenerator,
    dates: &[dms_common::Timestamp],
) -> Result<()> {
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::query(&format!("CREATE TABLE {RAW_TABLE}"))
        .execute(&pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let mut copy = conn
        .copy_in_raw("COPY raw_bars (series_id, ts, open, high, low, close, volume) FROM STDIN WITH (FORMAT csv)")
        .await?;
    let mut chunk = String::new();
    for s in 0..size.symbols {
        let sb = generator.series(s, dates);
        for b in &sb.bars {
            chunk.push_str(&format!(
                "{s},{},{},{},{},{},{}\n",
                b.ts.0, b.open, b.high, b.low, b.close, b.volume
            ));
        }
        if chunk.len() > 1 << 20 {
            copy.send(std::mem::take(&mut chunk).into_bytes()).await?;
        }
    }
    if !chunk.is_empty() {
        copy.send(chunk.into_bytes()).await?;
    }
    copy.finish().await?;
    Ok(())
}

async fn raw_mysql(
    url: &str,
    size: &Size,
    generator: &BarGenerator,
    dates: &[dms_common::Timestamp],
) -> Result<()> {
    let pool = sqlx::MySqlPool::connect(url).await?;
    sqlx::query(&format!(
        "CREATE TABLE {} ENGINE=InnoDB",
        RAW_TABLE.replace("DOUBLE PRECISION", "DOUBLE")
    ))
    .execute(&pool)
    .await?;
    let mut rows: Vec<(usize, dms_common::Bar)> = Vec::with_capacity(1_000);
    let flush = async |rows: &mut Vec<(usize, dms_common::Bar)>| -> Result<()> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO raw_bars (series_id, ts, open, high, low, close, volume) ",
        );
        q.push_values(rows.iter(), |mut r, (s, b)| {
            r.push_bind(*s as i64)
                .push_bind(b.ts.0)
                .push_bind(b.open)
                .push_bind(b.high)
                .push_bind(b.low)
                .push_bind(b.close)
                .push_bind(b.volume);
        });
        q.push(" ON DUPLICATE KEY UPDATE close = VALUES(close)");
        q.build().execute(&pool).await?;
        rows.clear();
        Ok(())
    };
    for s in 0..size.symbols {
        let sb = generator.series(s, dates);
        for b in sb.bars {
            rows.push((s, b));
            if rows.len() == 1_000 {
                flush(&mut rows).await?;
            }
        }
    }
    if !rows.is_empty() {
        flush(&mut rows).await?;
    }
    Ok(())
}
