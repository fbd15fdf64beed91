//! The InfluxDB bar store passes the `BarStore` conformance suite against a real `influxd`
//! (Debian package `influxdb`), each case in its own database.
//!
//! The server answers at most 4,000 rows per query (`max-row-limit`), fewer than a page, so the
//! suite also checks that reads go on past answers the server cut short.
//!
//! One `influxd` serves the whole test binary: the first case starts it on a free port with a
//! generated config and its data in a temporary directory. It runs under a small shell watchdog
//! that stops it and removes the directory once this test process is gone, since a Rust static
//! is never dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dms_common::store::influx::{InfluxOptions, InfluxStore, InfluxTarget, line_protocol, query};
use dms_common::store::{BarStore, SharedStore};
use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
use futures::TryStreamExt;

const INFLUXD: &str = "influxd";

/// The influxd of this test binary.
struct Influxd {
    url: String,
    /// The watchdog shell running influxd; it ends it once this process is gone.
    _watchdog: std::process::Child,
}

/// The running server's base URL.
fn server() -> &'static str {
    static SERVER: OnceLock<Influxd> = OnceLock::new();
    &SERVER.get_or_init(|| start_influxd(false)).url
}

/// A second server with authentication on, for the credential tests.
fn server_with_auth() -> &'static str {
    static SERVER: OnceLock<Influxd> = OnceLock::new();
    &SERVER.get_or_init(|| start_influxd(true)).url
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// The watchdog is kept running for the life of the process, held in a static that is never
// dropped; it stops influxd itself when the process is gone.
#[allow(clippy::zombie_processes)]
fn start_influxd(auth: bool) -> Influxd {
    let found = Command::new(INFLUXD)
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "`influxd` is not installed: install the InfluxDB 1.x server with \
         `apt-get install -y influxdb influxdb-client` (or run scripts/test.sh, which does)"
    );
    let dir: PathBuf = tempfile::Builder::new()
        .prefix("dms-influxd-")
        .tempdir()
        .unwrap()
        .keep();
    let (port, rpc_port) = (free_port(), free_port());
    let config = format!(
        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  auth-enabled = {auth}
  # Below the store's 10,000-bar pages, so reads must notice answers cut short.
  max-row-limit = 4000
[logging]
  level = "error"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
"#,
        dir = dir.display()
    );
    let config_path = dir.join("influxdb.conf");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("influxd.log");
    // The watchdog: runs influxd, and once this test process ($3) or influxd is gone, stops
    // influxd and removes its directory.
    let script = r#"influxd -config "$1" >"$2" 2>&1 & child=$!
echo "$child" >"$4/influxd.pid"
while kill -0 "$3" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; rm -rf "$4""#;
    let mut watchdog = Command::new("sh")
        .args(["-c", script, "influxd-watchdog"])
        .arg(&config_path)
        .arg(&log)
        .arg(std::process::id().to_string())
        .arg(&dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start influxd");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answered = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_ok() && {
                let mut head = [0u8; 12];
                s.read_exact(&mut head).is_ok() && head.ends_with(b"204")
            }
        });
        if answered {
            return Influxd {
                url,
                _watchdog: watchdog,
            };
        }
        if Instant::now() > deadline {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            if let Ok(pid) = std::fs::read_to_string(dir.join("influxd.pid")) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
            let _ = watchdog.wait();
            panic!("influxd did not answer /ping within 30s; its output:\n{output}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn options(database: &str) -> InfluxOptions {
    InfluxOptions {
        url: server().to_owned(),
        target: InfluxTarget::V1 {
            database: database.to_owned(),
            retention_policy: "dms".into(),
            username: None,
            password: None,
        },
        measurement: "bars".into(),
        batch_size: 5_000,
        shard_duration: "52w".into(),
    }
}

async fn make(case: &'static str) -> (SharedStore, ()) {
    let store = InfluxStore::open(options(case)).await.expect("open store");
    (Arc::new(store), ())
}

dms_store_conformance::store_conformance_tests!(make);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yahoo_style_symbols_are_stored_and_read_back_exactly() {
    let store = InfluxStore::open(options("yahoo_symbols")).await.unwrap();
    let symbols = ["BRK.B", "^GSPC", "EURUSD=X", "600519.SS", "GC=F"];
    let batch: Vec<SeriesBars> = symbols
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let key = SeriesKey::new(Symbol::new(s).unwrap(), Interval::D1);
            let bars = (0..3)
                .map(|i| {
                    let p = 104.05999755859375 + n as f64 + 0.1 * i as f64;
                    Bar::ohlcv(
                        Timestamp(i * 86_400),
                        p,
                        p + 1.0,
                        p - 1.0,
                        p,
                        1e-7 * i as f64,
                    )
                })
                .collect();
            SeriesBars::new(key, bars)
        })
        .collect();
    store.upsert(&batch).await.unwrap();
    for sb in &batch {
        let read: Vec<Bar> = store
            .read(&sb.key, TimeRange::all())
            .try_concat()
            .await
            .unwrap();
        assert_eq!(read.len(), sb.bars.len(), "{}", sb.key);
        for (a, b) in read.iter().zip(&sb.bars) {
            assert_eq!(a.close.to_bits(), b.close.to_bits(), "{}", sb.key);
            assert!(a.same_values(b), "{}: {a:?} != {b:?}", sb.key);
        }
    }
    // A store opened afterwards finds every series, with exact counts, from the server.
    let reopened = InfluxStore::open(options("yahoo_symbols")).await.unwrap();
    let ov = reopened.overview().await.unwrap();
    let mut found: Vec<&str> = ov.iter().map(|o| o.key.symbol.as_str()).collect();
    found.sort();
    let mut expected = symbols.to_vec();
    expected.sort();
    assert_eq!(found, expected);
    assert!(
        ov.iter()
            .all(|o| o.count == 3 && o.last == Timestamp(2 * 86_400))
    );
    let before = store.overview().await.unwrap();
    assert_eq!(
        ov.iter().map(|o| o.digest).collect::<Vec<_>>(),
        before.iter().map(|o| o.digest).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tag_values_survive_the_encoder_and_the_query_layer() {
    let store = InfluxStore::open(options("hostile_tags")).await.unwrap();
    let client = store.client();
    let hostile = [
        r#"a,b c"d\e=f'g"#,
        r"back\slash",
        r"two\\back\\\slashes",
        "x' OR '1'='1",
        r#"quote"only"#,
        "  spaces  ",
    ];
    let mut lines = String::new();
    for (i, value) in hostile.iter().enumerate() {
        line_protocol::encode_point(
            &mut lines,
            "odd measurement,x",
            &[("sym bol", value)],
            &[("va=l, ue", Some(i as f64 + 0.5))],
            i as i64,
        )
        .unwrap();
    }
    client.write(&lines).await.unwrap();
    for (i, value) in hostile.iter().enumerate() {
        let q = format!(
            "SELECT {} FROM {} WHERE {}",
            query::ident("va=l, ue"),
            query::measurement(client.retention_policy(), "odd measurement,x"),
            query::series_in_range(&[("sym bol", value)], TimeRange::all())
        );
        let results = client.query(&q).await.unwrap();
        let series = &results[0].series;
        assert_eq!(series.len(), 1, "{value:?}: {results:?}");
        assert_eq!(series[0].values.len(), 1, "{value:?}");
        let row = &series[0].values[0];
        assert_eq!(row[0].as_i64(), Some(i as i64), "{value:?}");
        assert_eq!(row[1].as_f64(), Some(i as f64 + 0.5), "{value:?}");
    }
    // The tag values come back exactly as written.
    let q = format!(
        "SHOW TAG VALUES FROM {} WITH KEY = {}",
        query::measurement(client.retention_policy(), "odd measurement,x"),
        query::ident("sym bol")
    );
    let results = client.query(&q).await.unwrap();
    let mut stored: Vec<String> = results[0].series[0]
        .values
        .iter()
        .map(|row| row[1].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    // What line protocol cannot carry is refused before anything is sent.
    let mut refused = String::new();
    assert!(
        line_protocol::encode_point(&mut refused, "m", &[("s", r"end\")], &[("v", Some(1.0))], 1)
            .is_err()
    );
    let mut expected: Vec<String> = hostile.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_type_conflict_is_a_permanent_error_naming_the_dropped_points() {
    let store = InfluxStore::open(options("type_conflict")).await.unwrap();
    let client = store.client();
    client
        .write("bars,symbol=X,interval=1d close=1 1\n")
        .await
        .unwrap();
    let err = client
        .write("bars,symbol=X,interval=1d close=1i 2\nbars,symbol=X,interval=1d close=2i 3\n")
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("points dropped"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_transient_error() {
    let mut o = options("unreachable");
    o.url = format!("http://127.0.0.1:{}", free_port());
    let err = InfluxStore::open(o).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_creates_the_database_with_year_long_shards() {
    use dms_common::store::config::StoreConfig;
    use dms_common::store::open_store;

    let yaml = format!(
        "type: influxdb\nurl: {}\ndatabase: from_config\nretention_policy: keep\n",
        server()
    );
    let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    let config: StoreConfig = serde_json::from_value(value).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let store = open_store(&config).await.expect("open_store");
    assert_eq!(store.backend(), "influxdb");
    store.check().await.unwrap();
    let key = SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1);
    let bars = vec![Bar::ohlcv(Timestamp(0), 1.0, 2.0, 0.5, 1.5, 10.0)];
    store
        .upsert(&[SeriesBars::new(key.clone(), bars)])
        .await
        .unwrap();
    // Opening again finds the database and policy and keeps the data.
    let again = open_store(&config).await.expect("second open_store");
    assert_eq!(again.overview().await.unwrap()[0].count, 1);
    let mut probe = options("from_config");
    probe.target = InfluxTarget::V1 {
        database: "from_config".into(),
        retention_policy: "keep".into(),
        username: None,
        password: None,
    };
    let probe = InfluxStore::open(probe).await.unwrap();
    let results = probe
        .client()
        .query("SHOW RETENTION POLICIES ON \"from_config\"")
        .await
        .unwrap();
    let series = &results[0].series[0];
    let col = |name: &str| series.columns.iter().position(|c| c == name).unwrap();
    let keep = series
        .values
        .iter()
        .find(|row| row[col("name")] == "keep")
        .expect("the configured retention policy exists");
    assert_eq!(keep[col("shardGroupDuration")], "8736h0m0s", "52 weeks");
    assert_eq!(keep[col("duration")], "0s", "kept forever");
    assert_eq!(keep[col("default")], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent_and_a_wrong_password_is_a_permanent_error() {
    const PASSWORD: &str = r"s3cr,t p\w'";
    let url = server_with_auth();
    // With no user yet, InfluxDB lets the first admin be created without credentials.
    let bootstrap = reqwest::Client::new()
        .post(format!("{url}/query"))
        .query(&[(
            "q",
            format!(
                "CREATE USER dms WITH PASSWORD {} WITH ALL PRIVILEGES",
                query::literal(PASSWORD)
            ),
        )])
        .send()
        .await
        .unwrap();
    assert!(bootstrap.status().is_success(), "{bootstrap:?}");
    let with_password = |password: &str| {
        let mut o = options("with_auth");
        o.url = url.to_owned();
        o.target = InfluxTarget::V1 {
            database: "with_auth".into(),
            retention_policy: "dms".into(),
            username: Some("dms".into()),
            password: Some(dms_common::config::Secret::new(password)),
        };
        o
    };
    let store = InfluxStore::open(with_password(PASSWORD))
        .await
        .expect("the right password opens the store");
    let key = SeriesKey::new(Symbol::new("AUTH").unwrap(), Interval::D1);
    let bars = vec![Bar::ohlcv(Timestamp(0), 1.0, 2.0, 0.5, 1.5, 10.0)];
    store
        .upsert(&[SeriesBars::new(key.clone(), bars)])
        .await
        .unwrap();
    assert_eq!(
        store
            .read(&key, TimeRange::all())
            .try_concat()
            .await
            .unwrap()
            .len(),
        1
    );
    let err = InfluxStore::open(with_password("wrong")).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password is never shown: {err}"
    );
}
