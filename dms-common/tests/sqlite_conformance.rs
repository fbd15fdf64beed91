//! The SQLite bar store passes the `BarStore` conformance suite, each case on a fresh file.

use std::sync::Arc;

use dms_common::store::SharedStore;
use dms_common::store::conformance;
use dms_common::store::sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run_all(|case| {
        let path = dir.path().join(format!("{case}.db"));
        async move { Arc::new(SqliteStore::open(path).expect("open store")) as SharedStore }
    })
    .await;
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
