//! The master on an InfluxDB store: a real `influxd` (InfluxDB 1.x, Debian package `influxdb`)
//! started by the test, the master as a process configured to write to it, and what InfluxDB
//! holds checked with InfluxQL against what the master reports.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use dms_e2e::{Check, InfluxServer, MasterProcess, copy_sample_data, write_daily_csvs};
use serde_json::Value;

/// The database the master writes to.
const DATABASE: &str = "dms_e2e";

/// The sample CSV source on an InfluxDB store at `{influx}`.
const SAMPLE_CONFIG: &str = "
http:
  listen: 127.0.0.1:{port}
state:
  path: ./data/master-state.db
store:
  type: influxdb
  url: {influx}
  database: dms_e2e
sources:
  - type: csv
    name: sample
    dir: ./sample-data
    files:
      EURUSD.csv: {symbol: EURUSD=X, interval: 1h}
      BTCUSD.csv: {symbol: BTC-USD}
";

/// A generated daily CSV source in `./gen` on an InfluxDB store at `{influx}`.
const GENERATED_CONFIG: &str = "
http:
  listen: 127.0.0.1:{port}
state:
  path: ./data/master-state.db
store:
  type: influxdb
  url: {influx}
  database: dms_e2e
sources:
  - {type: csv, name: gen, dir: ./gen, interval: 1d}
";

/// Checks what the master shows while InfluxDB is down: `/readyz` answers 503 with the store
/// check failing; `/api/data/status` answers and shows the store behind the journal with its
/// last error (the counts, which need the store, are null).
async fn assert_store_down(master: &MasterProcess) {
    let (code, ready) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["checks"]["journal"], "ok", "{ready}");
    let store_check = ready["checks"]["store"].as_str().unwrap();
    assert!(store_check.contains("InfluxDB"), "{ready}");
    let (code, status) = master.get("/api/data/status").await.unwrap();
    assert_eq!(code, 200, "{status}");
    let journal = &status["data"]["journal"];
    assert!(journal["store_lag"].as_u64() > Some(0), "{status}");
    assert!(journal["store_last_error"].is_string(), "{status}");
}

/// The bars of a daily CSV file (`date,open,high,low,close,volume`): epoch seconds and the
/// bits of each value.
fn csv_bars(path: &Path) -> Vec<(i64, [u64; 5])> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let date = chrono::NaiveDate::parse_from_str(fields[0], "%Y-%m-%d").unwrap();
            let secs = date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
            let value = |i: usize| fields[i].parse::<f64>().unwrap().to_bits();
            (secs, [value(1), value(2), value(3), value(4), value(5)])
        })
        .collect()
}

/// `SELECT count(close) FROM bars GROUP BY symbol` in InfluxDB: bars per symbol.
async fn influx_counts(influx: &InfluxServer) -> BTreeMap<String, u64> {
    let answer = influx
        .query(DATABASE, "SELECT count(close) FROM bars GROUP BY symbol")
        .await
        .unwrap();
    let series = answer["results"][0]["series"].as_array().cloned();
    series
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let symbol = s["tags"]["symbol"].as_str().unwrap().to_owned();
            let count = s["values"][0][1].as_u64().unwrap();
            (symbol, count)
        })
        .collect()
}

/// The master's `/api/data/series` counts per symbol (one series per symbol here).
async fn master_counts(master: &MasterProcess) -> BTreeMap<String, u64> {
    let (code, body) = master.get("/api/data/series").await.unwrap();
    assert_eq!(code, 200, "{body}");
    let mut counts = BTreeMap::new();
    for s in body["data"].as_array().unwrap() {
        let symbol = s["symbol"].as_str().unwrap().to_owned();
        let previous = counts.insert(symbol, s["count"].as_u64().unwrap());
        assert!(previous.is_none(), "one series per symbol: {body}");
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_on_influxdb_imports_the_samples_and_influx_agrees_with_status() {
    let influx = InfluxServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let config = SAMPLE_CONFIG.replace("{influx}", &influx.url());
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["store"], "influxdb", "{status}");
    assert_eq!(status["total_series"], 3, "{status}");
    assert_eq!(status["total_records"], 2148 + 5000 + 156, "{status}");
    assert_eq!(
        status["journal"]["store_last_error"],
        Value::Null,
        "{status}"
    );

    // InfluxDB holds, per symbol, what the master reports, and in all what its status counts.
    let in_influx = influx_counts(&influx).await;
    let expected: BTreeMap<String, u64> = [("BTC-USD", 156), ("EURUSD=X", 5000), ("GOOG", 2148)]
        .into_iter()
        .map(|(s, n)| (s.to_owned(), n))
        .collect();
    assert_eq!(in_influx, expected);
    assert_eq!(master_counts(&master).await, in_influx);
    assert_eq!(
        status["total_records"].as_u64(),
        Some(in_influx.values().sum::<u64>()),
        "{status}"
    );

    // Bars read back through the master are the CSV's, value for value.
    let csv = std::fs::read_to_string(dir.path().join("sample-data/GOOG.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .filter(|l| l.get(..10).is_some_and(|d| d >= "2013-02-01"))
        .take(5)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 5);
    let (code, bars) = master
        .get("/api/data/bars?symbol=GOOG&start=2013-02-01&limit=5")
        .await
        .unwrap();
    assert_eq!(code, 200, "{bars}");
    assert_eq!(bars["count"], 5, "{bars}");
    let fields = ["open", "high", "low", "close", "volume"];
    for (bar, row) in bars["data"].as_array().unwrap().iter().zip(&rows) {
        let ts = bar["ts"].as_str().unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert_eq!(
            ts.format("%Y-%m-%d %H:%M:%S").to_string(),
            format!("{} 00:00:00", row[0])
        );
        for (i, field) in fields.iter().enumerate() {
            let written: f64 = row[i + 1].parse().unwrap();
            let read = bar[field].as_f64().unwrap();
            assert_eq!(
                read.to_bits(),
                written.to_bits(),
                "{field} of {bar} vs {row:?}"
            );
        }
        let mut keys: Vec<&str> = bar
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["close", "high", "low", "open", "ts", "volume"],
            "{bar}"
        );
    }
    // And so are the points in InfluxDB.
    let answer = influx
        .query(
            DATABASE,
            "SELECT open, high, low, close, volume FROM bars \
             WHERE symbol = 'GOOG' AND time >= '2013-02-01T00:00:00Z' LIMIT 5",
        )
        .await
        .unwrap();
    let points = answer["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap();
    assert_eq!(points.len(), 5, "{answer}");
    for (point, row) in points.iter().zip(&rows) {
        let date = chrono::NaiveDate::parse_from_str(row[0], "%Y-%m-%d").unwrap();
        let secs = date.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
        assert_eq!(point[0].as_i64(), Some(secs), "{point}");
        for i in 0..fields.len() {
            let written: f64 = row[i + 1].parse().unwrap();
            let stored = point[i + 1].as_f64().unwrap();
            assert_eq!(stored.to_bits(), written.to_bits(), "{point} vs {row:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_stopped_for_30_seconds_during_an_import_loses_nothing() {
    const SYMBOLS: usize = 60;
    const BARS: usize = 2_500;
    const OUTAGE: Duration = Duration::from_secs(30);
    let mut influx = InfluxServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let total = write_daily_csvs(&dir.path().join("gen"), SYMBOLS, BARS);
    assert_eq!(total, 150_000);
    let config = GENERATED_CONFIG.replace("{influx}", &influx.url());
    let master = MasterProcess::start(dir.path(), &config).await.unwrap();

    // Stop InfluxDB once the store has applied part of the import and more is still to come.
    let what = "the store to apply part of the import";
    master
        .wait_until(what, Duration::from_secs(60), async || {
            let status = master.status().await?;
            let (journal, import) = (&status["journal"], &status["imports"][0]);
            let applied = journal["store_applied"].as_u64().unwrap_or(0);
            let lag = journal["store_lag"].as_u64().unwrap_or(0);
            if applied > 0 && lag > 0 {
                return Ok(Check::Ready(status));
            }
            if import["state"] == "completed" && lag == 0 {
                anyhow::bail!("the store applied the whole import before InfluxDB was stopped");
            }
            Ok(Check::Waiting(format!(
                "journal {journal}, import {import}"
            )))
        })
        .await
        .unwrap();
    influx.stop().await.unwrap();
    let down_since = tokio::time::Instant::now();

    // While it is down, the store write fails and waits in the journal, retried, and the master
    // is not ready.
    master
        .wait_until("a failed store write in the log", OUTAGE, async || {
            let log = master.log_text();
            Ok(
                if log.contains("store write failed; the data waits in the journal") {
                    Check::Ready(())
                } else {
                    Check::Waiting("no failed store write logged".into())
                },
            )
        })
        .await
        .unwrap();
    assert_store_down(&master).await;
    tokio::time::sleep_until(down_since + OUTAGE).await;
    assert_store_down(&master).await;

    // Back on the same port with the same data: the store catches up and nothing is lost.
    influx.start_again().await.unwrap();
    let status = master.wait_imported(Duration::from_secs(60)).await.unwrap();
    assert_eq!(status["total_records"], 150_000, "{status}");
    assert_eq!(status["total_series"], SYMBOLS, "{status}");
    assert_eq!(status["imports"][0]["state"], "completed", "{status}");
    assert_eq!(status["imports"][0]["bars_read"], 150_000, "{status}");
    assert_eq!(
        status["journal"]["store_last_error"],
        Value::Null,
        "{status}"
    );
    assert!(
        status["journal"]["store_retries"].as_u64() > Some(0),
        "{status}"
    );
    assert_eq!(status["dead_letters"]["entries"], 0, "{status}");
    let in_influx = influx_counts(&influx).await;
    assert_eq!(in_influx.len(), SYMBOLS, "{in_influx:?}");
    assert!(
        in_influx.values().all(|&n| n == BARS as u64),
        "{in_influx:?}"
    );
    assert_eq!(in_influx.values().sum::<u64>(), 150_000);
    assert_eq!(master_counts(&master).await, in_influx);
    // Every bar in InfluxDB is the CSV's, value for value.
    let answer = influx
        .query(
            DATABASE,
            "SELECT open, high, low, close, volume FROM bars GROUP BY symbol",
        )
        .await
        .unwrap();
    let series = answer["results"][0]["series"].as_array().unwrap();
    assert_eq!(series.len(), SYMBOLS);
    for s in series {
        let symbol = s["tags"]["symbol"].as_str().unwrap();
        let stored: Vec<(i64, [u64; 5])> = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let value = |i: usize| p[i].as_f64().unwrap().to_bits();
                (
                    p[0].as_i64().unwrap(),
                    [value(1), value(2), value(3), value(4), value(5)],
                )
            })
            .collect();
        let written = csv_bars(&dir.path().join(format!("gen/{symbol}.csv")));
        assert_eq!(stored.len(), written.len(), "{symbol}");
        for (stored, written) in stored.iter().zip(&written) {
            assert_eq!(stored, written, "{symbol}");
        }
    }
    let (code, ready) = master.get("/readyz").await.unwrap();
    assert_eq!(code, 200, "{ready}");
}
