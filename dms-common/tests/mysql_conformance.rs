//! The MySQL bar store passes the `BarStore` conformance suite, each case in a fresh database
//! of the server at `DMS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).
//! A server that cannot be reached fails the tests; it never skips them.

use std::str::FromStr;
use std::sync::Arc;

use dms_common::store::config::{SqlServerConfig, StoreConfig};
use dms_common::store::mysql::MysqlStore;
use dms_common::store::open_store;
use dms_common::store::{BarStore, SharedStore};
use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};

fn server_url() -> String {
    std::env::var("DMS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

async fn admin(url: &str) -> MySqlConnection {
    MySqlConnection::connect(url).await.unwrap_or_else(|e| {
        panic!("cannot reach the MySQL test server at {url} (set DMS_TEST_MYSQL_URL): {e}")
    })
}

/// Drops the case's database when the case ends.
#[derive(Debug)]
struct DatabaseGuard {
    url: String,
    schema: String,
}

impl DatabaseGuard {
    /// A table of the case, qualified, for statements on the admin connection.
    fn table(&self, name: &str) -> String {
        format!("`{}`.{name}", self.schema)
    }
}

impl Drop for DatabaseGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // A runtime of its own on a thread of its own: the test's runtime may be shutting down.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut conn = MySqlConnection::connect(&url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{schema}`"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.schema);
        }
    }
}

/// A fresh store in a new database named after `case`.
async fn make(case: &'static str) -> (SharedStore, DatabaseGuard) {
    let (store, guard) = make_store(case).await;
    (Arc::new(store), guard)
}

async fn make_store(case: &str) -> (MysqlStore, DatabaseGuard) {
    let url = server_url();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    // Server names are at most 64 characters.
    let schema = format!("{}_{suffix}", &case[..case.len().min(40)]);
    let mut conn = admin(&url).await;
    // The name is made here from the case's identifier, never from outside input.
    sqlx::query(&format!("CREATE DATABASE `{schema}`"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let guard = DatabaseGuard {
        url: url.clone(),
        schema: schema.clone(),
    };
    let options = MySqlConnectOptions::from_str(&url)
        .expect("test url")
        .database(&schema);
    let store = MysqlStore::connect_with(options, 8, url)
        .await
        .expect("open store");
    (store, guard)
}

dms_store_conformance::store_conformance_tests!(make);

fn daily(key: &SeriesKey, n: i64, p: f64) -> SeriesBars {
    let bars = (0..n)
        .map(|i| Bar::ohlcv(Timestamp(i * 86_400), p, p + 1.0, p - 1.0, p + 0.5, 1e6))
        .collect();
    SeriesBars::new(key.clone(), bars)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_is_a_permanent_error() {
    let (store, guard) = make_store("permanent").await;
    let key = SeriesKey::new(Symbol::new("IBM").unwrap(), Interval::D1);
    store.upsert(&[daily(&key, 5, 10.0)]).await.unwrap();
    let mut conn = admin(&guard.url).await;
    sqlx::query(&format!("DROP TABLE {}", guard.table("dms_bars")))
        .execute(&mut conn)
        .await
        .unwrap();
    let e = store.upsert(&[daily(&key, 6, 11.0)]).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let e = store.latest(&key).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_transient_and_names_the_server() {
    let mut config = SqlServerConfig::new("mysql://dms:hunter2@127.0.0.1:1/dms");
    config.max_connections = 2;
    let e = open_store(&StoreConfig::Mysql(config))
        .await
        .expect_err("nothing listens on port 1");
    assert!(e.is_transient(), "{e}");
    let message = e.to_string();
    assert!(message.contains("mysql://dms@127.0.0.1:1/dms"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_twice_keeps_the_schema_and_the_bars() {
    let (store, guard) = make_store("reopen").await;
    let key = SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1);
    store.upsert(&[daily(&key, 20, 10.0)]).await.unwrap();
    let options = MySqlConnectOptions::from_str(&guard.url)
        .unwrap()
        .database(&guard.schema);
    let again = MysqlStore::connect_with(options, 2, guard.url.clone())
        .await
        .unwrap();
    let stats = again.upsert(&[daily(&key, 20, 10.0)]).await.unwrap();
    assert_eq!((stats.inserted, stats.unchanged), (0, 20));
    assert_eq!(again.overview().await.unwrap()[0].count, 20);
    again.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_corrects_digests_after_bars_changed_behind_the_stores_back() {
    use dms_common::store::compute_bucket_digests;
    let (store, guard) = make_store("scrub").await;
    let key = SeriesKey::new(Symbol::new("MSFT").unwrap(), Interval::D1);
    store.upsert(&[daily(&key, 1000, 10.0)]).await.unwrap();
    assert!(store.scrub().await.unwrap().is_empty());
    let day = 86_400;
    let mut conn = admin(&guard.url).await;
    for statement in [
        format!(
            "UPDATE {} SET close = 1.25 WHERE ts = {}",
            guard.table("dms_bars"),
            100 * day
        ),
        format!(
            "DELETE FROM {} WHERE ts = {}",
            guard.table("dms_bars"),
            500 * day
        ),
        format!("UPDATE {} SET bar_count = 3", guard.table("dms_series")),
    ] {
        sqlx::query(&statement).execute(&mut conn).await.unwrap();
    }
    let mut fixed: Vec<i64> = store
        .scrub()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, b)| b.0)
        .collect();
    fixed.sort();
    let bucketing = dms_common::store::DigestBucketing::for_interval(Interval::D1);
    let expected: Vec<i64> = [100 * day, 500 * day]
        .iter()
        .map(|t| bucketing.bucket_of(Timestamp(*t)).0)
        .collect();
    assert_eq!(fixed, expected);
    assert_eq!(
        store.bucket_digests(&key, TimeRange::all()).await.unwrap(),
        compute_bucket_digests(&store, &key, TimeRange::all())
            .await
            .unwrap()
    );
    assert_eq!(store.overview().await.unwrap()[0].count, 999);
    assert!(store.scrub().await.unwrap().is_empty(), "corrected once");
}
