//! The SQLite bar store passes the `BarStore` conformance suite, each case on a fresh file.

use std::sync::Arc;

use dms_common::store::SharedStore;
use dms_common::store::sqlite::SqliteStore;

async fn make(case: &'static str) -> (SharedStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join(format!("{case}.db"))).expect("open store");
    (Arc::new(store), dir)
}

dms_store_conformance::store_conformance_tests!(make);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_before_digests_were_kept_has_them_rebuilt() {
    use dms_common::store::{BarStore, compute_bucket_digests};
    use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.db");
    let key = SeriesKey::new(Symbol::new("IBM").unwrap(), Interval::D1);
    let bars: Vec<Bar> = (0..500)
        .map(|i| Bar::ohlcv(Timestamp(i * 86_400), 1.0, 2.0, 0.5, 1.5, i as f64))
        .collect();
    let expected = {
        let store = SqliteStore::open(&path).unwrap();
        store
            .upsert(&[SeriesBars::new(key.clone(), bars)])
            .await
            .unwrap();
        store.bucket_digests(&key, TimeRange::all()).await.unwrap()
    };
    // What an older file looks like: bars, but no digests and no digest version.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DELETE FROM bucket_digests; DELETE FROM store_meta; UPDATE series SET hash_lo = 0, hash_hi = 0;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let rebuilt = store.bucket_digests(&key, TimeRange::all()).await.unwrap();
    assert_eq!(rebuilt.len(), expected.len());
    assert_eq!(rebuilt, expected);
    assert_eq!(
        compute_bucket_digests(&store, &key, TimeRange::all())
            .await
            .unwrap(),
        expected
    );
    let ov = store.overview().await.unwrap();
    assert_eq!(ov[0].digest, dms_common::store::digest::total(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_keeps_its_data_across_reopen() {
    use dms_common::store::BarStore;
    use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.db");
    let key = SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1);
    let bars: Vec<Bar> = (0..50)
        .map(|i| Bar::ohlcv(Timestamp(i * 86_400), 1.0, 2.0, 0.5, 1.5, 100.0))
        .collect();
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .upsert(&[SeriesBars::new(key.clone(), bars.clone())])
            .await
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let read: Vec<Bar> = store
        .read(&key, TimeRange::all())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(read, bars);
    // The reopened store knows the series: re-sending counts as unchanged, not inserted.
    let stats = store
        .upsert(&[SeriesBars::new(key.clone(), bars)])
        .await
        .unwrap();
    assert_eq!((stats.inserted, stats.unchanged), (0, 50));
    assert_eq!(store.overview().await.unwrap()[0].count, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrub_finds_bars_changed_behind_the_stores_back() {
    use dms_common::store::{BarStore, DigestBucketing, compute_bucket_digests};
    use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.db");
    let key = SeriesKey::new(Symbol::new("MSFT").unwrap(), Interval::D1);
    let day = 86_400;
    let bars: Vec<Bar> = (0..1000)
        .map(|i| Bar::ohlcv(Timestamp(i * day), 1.0, 2.0, 0.5, 1.5, i as f64))
        .collect();
    let store = SqliteStore::open(&path).unwrap();
    store
        .upsert(&[SeriesBars::new(key.clone(), bars)])
        .await
        .unwrap();
    assert!(
        store.scrub().await.unwrap().is_empty(),
        "nothing to correct"
    );
    // One bar changed, one deleted, one added, in three different buckets, by another program.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "UPDATE bars SET close = 1.25 WHERE ts = {};
         DELETE FROM bars WHERE ts = {};
         INSERT INTO bars (series_id, ts, open, high, low, close, volume)
            SELECT series_id, {}, 1, 2, 0.5, 1.5, 7 FROM bars LIMIT 1;",
        100 * day,
        500 * day,
        900 * day + 3600
    ))
    .unwrap();
    drop(conn);
    let bucketing = DigestBucketing::for_interval(Interval::D1);
    let mut fixed: Vec<Timestamp> = store
        .scrub()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    fixed.sort();
    let expected: Vec<Timestamp> = [100 * day, 500 * day, 900 * day]
        .iter()
        .map(|t| bucketing.bucket_of(Timestamp(*t)))
        .collect();
    assert_eq!(fixed, expected);
    assert_eq!(
        store.bucket_digests(&key, TimeRange::all()).await.unwrap(),
        compute_bucket_digests(&store, &key, TimeRange::all())
            .await
            .unwrap()
    );
    assert_eq!(store.overview().await.unwrap()[0].count, 1000);
    assert!(store.scrub().await.unwrap().is_empty(), "corrected once");
    // A series row alone gone wrong (its count and digest) is corrected too.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("UPDATE series SET bar_count = 3, hash_lo = 42")
        .unwrap();
    drop(conn);
    store.scrub().await.unwrap();
    let ov = store.overview().await.unwrap();
    assert_eq!(ov[0].count, 1000);
    assert_eq!(
        ov[0].digest,
        dms_common::store::digest::total(
            &store.bucket_digests(&key, TimeRange::all()).await.unwrap()
        )
    );
}
