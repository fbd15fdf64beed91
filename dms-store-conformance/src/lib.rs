//! # dms-store-conformance
//!
//! The `BarStore` conformance suite: the behaviour every backend of
//! [`dms_common::store::BarStore`] must show, kept out of the production library. A backend's
//! test file invokes [`store_conformance_tests!`] with a factory that makes a fresh, empty
//! store for a case (the case name is passed along, e.g. to name a file or a database) and
//! returns it with a guard that cleans up when dropped. Every case becomes its own test, so a
//! failure names the case and the others still run:
//!
//! ```text
//! async fn make(case: &'static str) -> (SharedStore, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = SqliteStore::open(dir.path().join(format!("{case}.db"))).unwrap();
//!     (Arc::new(store), dir)
//! }
//! dms_store_conformance::store_conformance_tests!(make);
//! ```
//!
//! # Layout
//!
//! - [`published`]: running the suite on a read-only store (a backup), its reads made from what
//!   a writable store holds.
//! - [`for_each_case!`]: the list of cases, written once; it makes the tests, [`CASES`] and
//!   the dispatch of [`run_case`].
//! - the cases, one `async fn` each, named after the behaviour they hold the store to, and the
//!   helpers they share.

pub mod published;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dms_common::store::{
    BarStore, DigestBucketing, SharedStore, UpsertStats, compute_bucket_digests,
};
use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
use futures::TryStreamExt;

/// Calls the macro `[$callback]` with `$args` and the name of every case: the one list of
/// cases.
#[doc(hidden)]
#[macro_export]
macro_rules! for_each_case {
    ([$($callback:tt)*] $args:tt) => {
        $($callback)*!($args ;
            reupsert_is_idempotent,
            changed_bars_are_reported_updated,
            ranges_are_half_open,
            reads_are_ordered_by_ts,
            empty_ranges_and_unknown_series_read_nothing,
            delete_removes_exactly_the_range,
            overview_is_exact_after_resent_bars,
            optional_fields_round_trip,
            digests_match_equal_data_and_catch_any_change,
            large_batch_is_stored_whole_and_paged,
            readers_see_whole_batches_while_a_writer_writes,
            series_are_kept_apart,
            a_repeated_time_in_one_batch_keeps_the_later_bar,
            replace_range_leaves_exactly_the_given_bars,
            floats_round_trip_bit_exact,
            symbols_with_dots_carets_and_equals_are_stored_as_given,
            concurrent_writers_of_one_series_keep_counts_and_digests_exact,
            a_series_twice_in_one_batch_overlapping_its_new_bars,
        );
    };
}

/// One test per conformance case, each on a fresh store from `$make` (an async fn taking the
/// case name and returning `(SharedStore, guard)`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:path) => {
        $crate::for_each_case!([$crate::store_conformance_tests] (@cases $make));
    };
    ((@cases $make:path) ; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make(stringify!($case)).await;
                $crate::run_case(stringify!($case), store).await;
            }
        )*
    };
}

macro_rules! case_table {
    (() ; $($case:ident),* $(,)?) => {
        /// Every case, by name.
        pub const CASES: &[&str] = &[$(stringify!($case)),*];

        /// Runs one case by name; an unknown name panics.
        pub async fn run_case(case: &str, store: SharedStore) {
            match case {
                $(stringify!($case) => $case(store).await,)*
                other => panic!("no conformance case is named {other:?}"),
            }
        }
    };
}

for_each_case!([case_table]());

const DAY: i64 = 86_400;
/// 2020-01-01T00:00:00Z.
const T0: i64 = 1_577_836_800;

fn key(symbol: &str, interval: Interval) -> SeriesKey {
    SeriesKey::new(Symbol::new(symbol).expect("valid test symbol"), interval)
}

fn daily(i: i64) -> Timestamp {
    Timestamp(T0 + i * DAY)
}

/// A deterministic bar for day `i` with a price level `p`.
fn bar(i: i64, p: f64) -> Bar {
    let open = p + (i % 7) as f64 * 0.25;
    let close = p + (i % 5) as f64 * 0.5;
    Bar::ohlcv(
        daily(i),
        open,
        open.max(close) + 1.0,
        open.min(close) - 1.0,
        close,
        1000.0 + i as f64,
    )
}

fn bars(range: std::ops::Range<i64>, p: f64) -> Vec<Bar> {
    range.map(|i| bar(i, p)).collect()
}

async fn read_all(store: &dyn BarStore, k: &SeriesKey, range: TimeRange) -> Vec<Bar> {
    store
        .read(k, range)
        .try_concat()
        .await
        .expect("read succeeds")
}

fn assert_same_bars(actual: &[Bar], expected: &[Bar], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: bar count");
    for (a, e) in actual.iter().zip(expected) {
        assert!(a.same_values(e), "{what}: stored {a:?}, expected {e:?}");
    }
}

async fn upsert(store: &dyn BarStore, k: &SeriesKey, bars: Vec<Bar>) -> UpsertStats {
    store
        .upsert(&[SeriesBars::new(k.clone(), bars)])
        .await
        .expect("upsert succeeds")
}

/// Upsert counts as `expected`: exactly on a backend that declares exact counts, else only
/// their total (every bar sent is accounted for).
fn assert_counts(store: &dyn BarStore, stats: UpsertStats, expected: [u64; 3], what: &str) {
    let [inserted, updated, unchanged] = expected;
    let expected = UpsertStats {
        inserted,
        updated,
        unchanged,
    };
    if store.capabilities().exact_upsert_counts {
        assert_eq!(stats, expected, "{what}");
    } else {
        assert_eq!(stats.total(), expected.total(), "{what}: {stats:?}");
    }
}

async fn reupsert_is_idempotent(store: SharedStore) {
    let k = key("AAPL", Interval::D1);
    let b = bars(0..100, 100.0);
    let first = upsert(&*store, &k, b.clone()).await;
    assert_counts(&*store, first, [100, 0, 0], "first write");
    let second = upsert(&*store, &k, b.clone()).await;
    assert_counts(&*store, second, [0, 0, 100], "the same bars again");
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &b,
        "after re-upsert",
    );
    let ov = store.overview().await.unwrap();
    assert_eq!(ov.len(), 1);
    assert_eq!(ov[0].count, 100);
}

async fn changed_bars_are_reported_updated(store: SharedStore) {
    let k = key("MSFT", Interval::D1);
    let mut b = bars(0..10, 50.0);
    upsert(&*store, &k, b.clone()).await;
    b[3].close += 0.5;
    b[3].high += 0.5;
    b[7].volume = 0.0;
    let stats = upsert(&*store, &k, b.clone()).await;
    assert_counts(&*store, stats, [0, 2, 8], "two bars changed");
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &b,
        "after update",
    );
    let latest = store.latest(&k).await.unwrap().expect("latest bar");
    assert!(latest.same_values(&b[9]));
}

async fn ranges_are_half_open(store: SharedStore) {
    let k = key("SPY", Interval::D1);
    let b = bars(0..10, 300.0);
    upsert(&*store, &k, b.clone()).await;
    let got = read_all(&*store, &k, TimeRange::new(daily(2), daily(5))).await;
    assert_same_bars(&got, &b[2..5], "[2,5)");
    // A range ending one second after a bar includes it; one starting one second after skips it.
    let got = read_all(
        &*store,
        &k,
        TimeRange::new(daily(2), Timestamp(daily(5).0 + 1)),
    )
    .await;
    assert_same_bars(&got, &b[2..6], "[2, 5+1s)");
    let got = read_all(
        &*store,
        &k,
        TimeRange::new(Timestamp(daily(2).0 + 1), daily(5)),
    )
    .await;
    assert_same_bars(&got, &b[3..5], "[2+1s, 5)");
    let got = read_all(&*store, &k, TimeRange::new(daily(9), daily(100))).await;
    assert_same_bars(&got, &b[9..], "last bar");
}

async fn reads_are_ordered_by_ts(store: SharedStore) {
    let k = key("QQQ", Interval::D1);
    let b = bars(0..500, 200.0);
    // Write in a scrambled order and in several batches.
    let mut scrambled: Vec<Bar> = b.iter().step_by(3).copied().collect();
    scrambled.reverse();
    upsert(&*store, &k, scrambled).await;
    let rest: Vec<Bar> = b
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, x)| *x)
        .rev()
        .collect();
    upsert(&*store, &k, rest).await;
    let pages: Vec<Vec<Bar>> = store
        .read_paged(&k, TimeRange::all(), 64)
        .try_collect()
        .await
        .unwrap();
    assert!(
        pages.iter().all(|p| !p.is_empty() && p.len() <= 64),
        "page sizes"
    );
    let all: Vec<Bar> = pages.concat();
    assert_same_bars(&all, &b, "ordered read");
}

async fn empty_ranges_and_unknown_series_read_nothing(store: SharedStore) {
    let k = key("IBM", Interval::D1);
    upsert(&*store, &k, bars(0..10, 120.0)).await;
    assert!(
        read_all(&*store, &k, TimeRange::new(daily(3), daily(3)))
            .await
            .is_empty()
    );
    assert!(
        read_all(&*store, &k, TimeRange::new(daily(5), daily(2)))
            .await
            .is_empty()
    );
    assert!(
        read_all(&*store, &k, TimeRange::new(daily(20), daily(30)))
            .await
            .is_empty()
    );
    let unknown = key("NOPE", Interval::D1);
    assert!(
        read_all(&*store, &unknown, TimeRange::all())
            .await
            .is_empty()
    );
    let other_interval = key("IBM", Interval::H1);
    assert!(
        read_all(&*store, &other_interval, TimeRange::all())
            .await
            .is_empty()
    );
    assert!(store.latest(&unknown).await.unwrap().is_none());
    assert_eq!(store.delete(&unknown, TimeRange::all()).await.unwrap(), 0);
    assert_eq!(store.upsert(&[]).await.unwrap(), UpsertStats::default());
    assert!(
        store
            .bucket_digests(&unknown, TimeRange::all())
            .await
            .unwrap()
            .is_empty()
    );
    store.check().await.expect("check succeeds");
}

async fn delete_removes_exactly_the_range(store: SharedStore) {
    let k = key("TSLA", Interval::D1);
    let b = bars(0..20, 400.0);
    upsert(&*store, &k, b.clone()).await;
    let n = store
        .delete(&k, TimeRange::new(daily(5), daily(10)))
        .await
        .unwrap();
    assert_eq!(n, 5);
    let left = read_all(&*store, &k, TimeRange::all()).await;
    let expected: Vec<Bar> = b[..5].iter().chain(&b[10..]).copied().collect();
    assert_same_bars(&left, &expected, "after middle delete");
    // Delete the edges: the overview follows.
    assert_eq!(
        store
            .delete(&k, TimeRange::new(daily(0), daily(1)))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .delete(&k, TimeRange::new(daily(19), daily(40)))
            .await
            .unwrap(),
        1
    );
    let ov = store.overview().await.unwrap();
    assert_eq!(ov.len(), 1);
    assert_eq!(
        (ov[0].count, ov[0].first, ov[0].last),
        (13, daily(1), daily(18))
    );
    // Deleted bars can be written again and count as inserted.
    let stats = upsert(&*store, &k, b.clone()).await;
    assert_counts(&*store, stats, [7, 0, 13], "deleted bars written again");
    assert_eq!(store.delete(&k, TimeRange::all()).await.unwrap(), 20);
    assert!(
        store.overview().await.unwrap().is_empty(),
        "an emptied series leaves the overview"
    );
    assert!(store.latest(&k).await.unwrap().is_none());
}

async fn overview_is_exact_after_resent_bars(store: SharedStore) {
    let k = key("NVDA", Interval::D1);
    // Overlapping windows, as an incremental update re-fetches the last bars each time.
    for start in (0..100).step_by(10) {
        upsert(&*store, &k, bars(start..start + 15, 10.0)).await;
    }
    let ov = store.overview().await.unwrap();
    assert_eq!(ov.len(), 1);
    assert_eq!(ov[0].key, k);
    assert_eq!(ov[0].count, 105);
    assert_eq!((ov[0].first, ov[0].last), (daily(0), daily(104)));
    assert_eq!(read_all(&*store, &k, TimeRange::all()).await.len(), 105);
    assert_digests_current(&*store, &k, "after overlapping windows").await;
}

async fn optional_fields_round_trip(store: SharedStore) {
    let k = key("GC=F", Interval::D1);
    let mut b = bars(0..4, 1800.0);
    b[0].adj_close = Some(1799.5);
    b[1].turnover = Some(1.5e9);
    b[2].open_interest = Some(123_456.0);
    b[3] = Bar {
        adj_close: Some(0.1 + 0.2),
        turnover: Some(f64::MIN_POSITIVE),
        open_interest: Some(0.0),
        ..b[3]
    };
    upsert(&*store, &k, b.clone()).await;
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &b,
        "optional fields",
    );
    // Removing an optional value is a change.
    let mut cleared = b.clone();
    cleared[0].adj_close = None;
    let stats = upsert(&*store, &k, cleared.clone()).await;
    assert_counts(&*store, stats, [0, 1, 3], "an optional field removed");
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &cleared,
        "cleared field",
    );
    assert_digests_current(&*store, &k, "after clearing a field").await;
}

/// The store's digests (bucket by bucket and the whole series in the overview) equal those
/// computed from the bars it returns.
async fn assert_digests_current(store: &dyn BarStore, k: &SeriesKey, what: &str) {
    let kept = store.bucket_digests(k, TimeRange::all()).await.unwrap();
    let computed = compute_bucket_digests(store, k, TimeRange::all())
        .await
        .unwrap();
    assert_eq!(kept, computed, "{what}: bucket digests are current");
    let ov = store.overview().await.unwrap();
    let series = ov.iter().find(|o| &o.key == k);
    let total = dms_common::store::digest::total(&computed);
    match series {
        Some(o) => assert_eq!(o.digest, total, "{what}: series digest is current"),
        None => assert_eq!(total.count, 0, "{what}: series without bars"),
    }
}

async fn digests_match_equal_data_and_catch_any_change(store: SharedStore) {
    let a = key("AAA", Interval::D1);
    let b = key("BBB", Interval::D1);
    let data = bars(0..400, 75.0);
    let bucketing = DigestBucketing::for_interval(Interval::D1);
    upsert(&*store, &a, data.clone()).await;
    // Same data written differently: reversed, in two batches.
    let mut rev = data.clone();
    rev.reverse();
    upsert(&*store, &b, rev[..150].to_vec()).await;
    upsert(&*store, &b, rev[150..].to_vec()).await;
    let da = store.bucket_digests(&a, TimeRange::all()).await.unwrap();
    let db = store.bucket_digests(&b, TimeRange::all()).await.unwrap();
    assert_eq!(da, db, "equal data, equal digests");
    assert!(da.len() >= 4, "{} buckets", da.len());
    assert_eq!(da.iter().map(|d| d.digest.count).sum::<u64>(), 400);
    // The store's digests equal those computed from the bars themselves.
    let mut reference = dms_common::store::digest::DigestBuilder::new(bucketing);
    data.iter().for_each(|x| reference.push(x));
    assert_eq!(
        da,
        reference.finish(),
        "digests follow the canonical encoding"
    );
    assert_digests_current(&*store, &a, "after insert").await;
    assert_digests_current(&*store, &b, "after two batches").await;

    let changes: [fn(&mut Bar); 8] = [
        |x| x.open += 0.01,
        |x| x.high += 0.01,
        |x| x.low -= 0.01,
        |x| x.close += 1e-9,
        |x| x.volume += 1.0,
        |x| x.adj_close = Some(1.0),
        |x| x.turnover = Some(2.0),
        |x| x.open_interest = Some(3.0),
    ];
    for (n, change) in changes.iter().enumerate() {
        let mut changed = data[200..210].to_vec();
        change(&mut changed[5]);
        upsert(&*store, &b, changed).await;
        let db = store.bucket_digests(&b, TimeRange::all()).await.unwrap();
        let differing: Vec<_> = da.iter().zip(&db).filter(|(x, y)| x != y).collect();
        assert_eq!(
            differing.len(),
            1,
            "change #{n} shows in exactly one bucket"
        );
        assert_eq!(differing[0].0.start, bucketing.bucket_of(daily(205)));
        assert_digests_current(&*store, &b, "after an update").await;
        upsert(&*store, &b, data[200..210].to_vec()).await;
    }
    assert_eq!(
        store.bucket_digests(&b, TimeRange::all()).await.unwrap(),
        da,
        "restored values restore the digests"
    );
    // A missing bar changes the count.
    store
        .delete(&b, TimeRange::new(daily(42), daily(43)))
        .await
        .unwrap();
    let db = store.bucket_digests(&b, TimeRange::all()).await.unwrap();
    let i = da
        .iter()
        .position(|d| d.start == bucketing.bucket_of(daily(42)))
        .unwrap();
    assert_eq!(db[i].digest.count, da[i].digest.count - 1);
    assert_ne!(db[i].digest.hash, da[i].digest.hash);
    assert_digests_current(&*store, &b, "after a delete").await;
    // Deleting a whole bucket removes its digest.
    store
        .delete(&b, bucketing.range_of(da[2].start))
        .await
        .unwrap();
    let db = store.bucket_digests(&b, TimeRange::all()).await.unwrap();
    assert!(db.iter().all(|d| d.start != da[2].start));
    assert_digests_current(&*store, &b, "after deleting a bucket").await;
    // A range inside buckets gives the digests of the whole buckets it touches.
    let part = store
        .bucket_digests(
            &a,
            TimeRange::new(Timestamp(da[1].start.0 + DAY), da[3].start),
        )
        .await
        .unwrap();
    assert_eq!(part, da[1..3].to_vec());
    store.delete(&b, TimeRange::all()).await.unwrap();
    assert_digests_current(&*store, &b, "after deleting everything").await;
}

async fn large_batch_is_stored_whole_and_paged(store: SharedStore) {
    let k = key("EURUSD=X", Interval::M1);
    let n: i64 = 120_000;
    let big: Vec<Bar> = (0..n)
        .map(|i| {
            let p = 1.1 + (i % 1000) as f64 * 1e-5;
            Bar::ohlcv(
                Timestamp(T0 + i * 60),
                p,
                p + 1e-4,
                p - 1e-4,
                p,
                (i % 50) as f64,
            )
        })
        .collect();
    let stats = upsert(&*store, &k, big.clone()).await;
    assert_counts(&*store, stats, [n as u64, 0, 0], "a large batch");
    let mut total = 0usize;
    let mut last = i64::MIN;
    let mut pages = store.read(&k, TimeRange::all());
    while let Some(page) = pages.try_next().await.unwrap() {
        assert!(page.len() <= dms_common::store::DEFAULT_PAGE_SIZE);
        for b in &page {
            assert!(b.ts.0 > last, "strictly increasing ts");
            last = b.ts.0;
        }
        total += page.len();
    }
    assert_eq!(total, n as usize);
    assert_eq!(store.overview().await.unwrap()[0].count, n as u64);
    let latest = store.latest(&k).await.unwrap().unwrap();
    assert!(latest.same_values(big.last().unwrap()));
}

async fn readers_see_whole_batches_while_a_writer_writes(store: SharedStore) {
    let k = key("BTC-USD", Interval::H1);
    const BATCH: i64 = 2_000;
    const BATCHES: i64 = 25;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let k = k.clone();
        let done = done.clone();
        tokio::spawn(async move {
            for n in 0..BATCHES {
                let batch: Vec<Bar> = (n * BATCH..(n + 1) * BATCH)
                    .map(|i| Bar::ohlcv(Timestamp(T0 + i * 3600), 10.0, 11.0, 9.0, 10.5, 1.0))
                    .collect();
                store
                    .upsert(&[SeriesBars::new(k.clone(), batch)])
                    .await
                    .expect("writer upsert");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        let k = k.clone();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            let mut previous = 0usize;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let all: Vec<Bar> = store
                    .read(&k, TimeRange::all())
                    .try_concat()
                    .await
                    .expect("read during writes");
                // A single read pages through a snapshot per page, so it sees whole batches
                // and never goes backwards.
                assert!(all.len() >= previous, "reads never go backwards");
                assert!(
                    all.windows(2).all(|w| w[0].ts < w[1].ts),
                    "ordered during writes"
                );
                let ov = store.overview().await.expect("overview during writes");
                if let Some(o) = ov.first() {
                    assert_eq!(o.count as i64 % BATCH, 0, "overview counts whole batches");
                }
                previous = all.len();
                reads += 1;
                if finished {
                    return (reads, all.len());
                }
            }
        }));
    }
    writer.await.expect("writer task");
    for r in readers {
        let (reads, last_len) = r.await.expect("reader task");
        assert!(reads >= 1);
        assert_eq!(
            last_len as i64,
            BATCH * BATCHES,
            "final read sees everything"
        );
    }
}

async fn series_are_kept_apart(store: SharedStore) {
    let a = key("AAPL", Interval::D1);
    let b = key("AAPL", Interval::H1);
    let c = key("600519.SS", Interval::D1);
    let batch = vec![
        SeriesBars::new(a.clone(), bars(0..10, 100.0)),
        SeriesBars::new(b.clone(), bars(0..5, 200.0)),
        SeriesBars::new(c.clone(), bars(3..8, 1700.0)),
    ];
    let stats = store.upsert(&batch).await.unwrap();
    assert_counts(&*store, stats, [20, 0, 0], "three series in one batch");
    let ov = store.overview().await.unwrap();
    let counts: Vec<(SeriesKey, u64)> = ov.iter().map(|o| (o.key.clone(), o.count)).collect();
    for (k, n) in [(&a, 10), (&b, 5), (&c, 5)] {
        assert!(
            counts.contains(&(k.clone(), n)),
            "{k} has {n} bars in {counts:?}"
        );
    }
    let pages: Vec<_> = store
        .read_many(&[c.clone(), a.clone()], TimeRange::all())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].0, c);
    assert_same_bars(&pages[0].1, &bars(3..8, 1700.0), "read_many first series");
    assert_same_bars(&pages[1].1, &bars(0..10, 100.0), "read_many second series");
    store.delete(&a, TimeRange::all()).await.unwrap();
    assert_eq!(
        read_all(&*store, &b, TimeRange::all()).await.len(),
        5,
        "delete stays in its series"
    );
}

async fn a_repeated_time_in_one_batch_keeps_the_later_bar(store: SharedStore) {
    let k = key("DUP", Interval::D1);
    let mut b = bars(0..6, 20.0);
    let mut corrected = b[3];
    corrected.close += 0.25;
    corrected.high += 0.25;
    // 0 1 2 3 3' 4 5: the repeat sits where new bars are appended.
    b.insert(4, corrected);
    let stats = upsert(&*store, &k, b.clone()).await;
    assert_counts(&*store, stats, [6, 1, 0], "a time repeated in a new series");
    let stored = read_all(&*store, &k, TimeRange::all()).await;
    assert_eq!(stored.len(), 6);
    assert!(stored[3].same_values(&corrected), "the later bar wins");
    assert_eq!(store.overview().await.unwrap()[0].count, 6);
    // Again after the series has bars, in the middle and at the end.
    let mut more = bars(5..9, 20.0);
    let last = more[3];
    more.push(Bar {
        volume: last.volume + 1.0,
        ..last
    });
    let stats = upsert(&*store, &k, more).await;
    assert_counts(
        &*store,
        stats,
        [3, 1, 1],
        "a time repeated after stored bars",
    );
    let stored = read_all(&*store, &k, TimeRange::all()).await;
    assert_eq!(stored.len(), 9);
    assert_eq!(stored[8].volume, last.volume + 1.0);
    assert_digests_current(&*store, &k, "after repeated times").await;
}

/// One batch holding a series twice, its second part overlapping the first (many new bars,
/// which a backend may write in bulk after the rest of the batch): the later bars win, and
/// counts and digests are exact; another series in the same batch is kept apart.
async fn a_series_twice_in_one_batch_overlapping_its_new_bars(store: SharedStore) {
    let (k, other) = (key("TWICE", Interval::D1), key("OTHER", Interval::D1));
    let first = bars(0..1200, 30.0);
    let second = bars(1100..1300, 31.0);
    let batch = [
        SeriesBars::new(k.clone(), first),
        SeriesBars::new(other.clone(), bars(0..700, 5.0)),
        SeriesBars::new(k.clone(), second.clone()),
    ];
    let stats = store.upsert(&batch).await.unwrap();
    assert_counts(
        &*store,
        stats,
        [1300 + 700, 100, 0],
        "a series twice in one batch",
    );
    let stored = read_all(&*store, &k, TimeRange::all()).await;
    assert_eq!(stored.len(), 1300);
    assert!(stored[1150].same_values(&second[50]), "the later bar wins");
    assert_eq!(read_all(&*store, &other, TimeRange::all()).await.len(), 700);
    assert_digests_current(&*store, &k, "a series twice in one batch").await;
    assert_digests_current(&*store, &other, "the other series").await;
}

/// "Delete a range then write bars" leaves exactly those bars: stale bars and stale optional
/// fields go, bars outside the range stay, and digests stay current.
async fn replace_range_leaves_exactly_the_given_bars(store: SharedStore) {
    let k = key("REPL", Interval::D1);
    let mut stored = bars(0..30, 50.0);
    stored[12].adj_close = Some(49.0);
    upsert(&*store, &k, stored.clone()).await;
    let range = TimeRange::new(daily(10), daily(20));
    // The replacement: day 11 and 15 missing, day 12 without its adj_close, day 13 changed.
    let mut replacement: Vec<Bar> = stored[10..20]
        .iter()
        .filter(|b| b.ts != daily(11) && b.ts != daily(15))
        .copied()
        .collect();
    replacement[1].adj_close = None;
    replacement[2].close += 0.5;
    replacement[2].high += 0.5;
    let stats = store
        .replace_range(&k, range, replacement.clone())
        .await
        .expect("replace succeeds");
    // 2 removed (11 and 15), 2 updated (12 without adj_close, 13), 6 unchanged.
    assert_counts(&*store, stats.written, [0, 2, 6], "replace");
    if store.capabilities().exact_upsert_counts {
        assert_eq!(stats.removed, 2, "{stats:?}");
    }
    let mut expected: Vec<Bar> = stored[..10].to_vec();
    expected.extend(replacement.iter().copied());
    expected.extend(stored[20..].iter().copied());
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &expected,
        "replaced",
    );
    assert_eq!(store.overview().await.unwrap()[0].count, 28);
    assert_digests_current(&*store, &k, "after a replace").await;
    // A bar outside the range is refused and changes nothing.
    let outside = vec![bar(25, 1.0)];
    assert!(store.replace_range(&k, range, outside).await.is_err());
    assert_same_bars(
        &read_all(&*store, &k, TimeRange::all()).await,
        &expected,
        "refused",
    );
    // Replacing into a series that does not exist yet creates it.
    let fresh = key("FRESH", Interval::D1);
    store
        .replace_range(&fresh, TimeRange::all(), bars(0..5, 5.0))
        .await
        .unwrap();
    assert_eq!(read_all(&*store, &fresh, TimeRange::all()).await.len(), 5);
    assert_digests_current(&*store, &fresh, "after a replace into a new series").await;
}

/// Every f64 comes back with the same bits: values with long shortest forms, the extremes,
/// subnormals, integers beyond 2^53 and float32 prices printed as doubles.
async fn floats_round_trip_bit_exact(store: SharedStore) {
    let k = key("BITS", Interval::D1);
    let values = [
        0.1 + 0.2,
        1.0 / 3.0,
        104.05999755859375,
        f64::MAX,
        -f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        1e-300,
        1e21,
        9_007_199_254_740_993.0,
        123_456_789.123_456_79,
        -2.5e-8,
    ];
    let b: Vec<Bar> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| Bar {
            adj_close: Some(-v),
            turnover: Some(v * 0.5),
            open_interest: Some(v),
            ..Bar::ohlcv(daily(i as i64), v, v, v, v, v)
        })
        .collect();
    upsert(&*store, &k, b.clone()).await;
    let got = read_all(&*store, &k, TimeRange::all()).await;
    assert_eq!(got.len(), b.len());
    for (a, e) in got.iter().zip(&b) {
        let bits = |x: &Bar| {
            [
                Some(x.open),
                Some(x.high),
                Some(x.low),
                Some(x.close),
                Some(x.volume),
                x.adj_close,
                x.turnover,
                x.open_interest,
            ]
            .map(|v| v.map(f64::to_bits))
        };
        assert_eq!(bits(a), bits(e), "stored {a:?}, expected {e:?}");
    }
    let stats = upsert(&*store, &k, b).await;
    assert_counts(
        &*store,
        stats,
        [0, 0, values.len() as u64],
        "the same bits again",
    );
}

/// Provider tickers with dots, carets, equals signs and digits are stored and read back as
/// given, in one batch of several series.
async fn symbols_with_dots_carets_and_equals_are_stored_as_given(store: SharedStore) {
    let names = ["BRK.B", "^GSPC", "EURUSD=X", "600519.SS", "GC=F"];
    let batch: Vec<SeriesBars> = names
        .iter()
        .enumerate()
        .map(|(i, s)| {
            SeriesBars::new(
                key(s, Interval::D1),
                bars(0..10 + i as i64, 100.0 * (i + 1) as f64),
            )
        })
        .collect();
    store.upsert(&batch).await.unwrap();
    let mut listed: Vec<String> = store
        .overview()
        .await
        .unwrap()
        .iter()
        .map(|o| o.key.symbol.as_str().to_owned())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    for series in &batch {
        let read = read_all(&*store, &series.key, TimeRange::all()).await;
        assert_same_bars(&read, &series.bars, series.key.symbol.as_str());
    }
}

/// Four writers upsert overlapping ranges of one series at once: every ts ends with one
/// writer's bar, and counts, bounds and digests equal what the bars say.
async fn concurrent_writers_of_one_series_keep_counts_and_digests_exact(store: SharedStore) {
    let k = key("SPY", Interval::H1);
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move {
                for round in 0..5i64 {
                    let start = T0 + (w * 50 + round * 20) * 3600;
                    let bars: Vec<Bar> = (0..200)
                        .map(|i| {
                            let p = 100.0 + w as f64 + round as f64 / 10.0;
                            Bar::ohlcv(Timestamp(start + i * 3600), p, p + 1.0, p - 1.0, p, 1.0)
                        })
                        .collect();
                    store
                        .upsert(&[SeriesBars::new(k.clone(), bars)])
                        .await
                        .expect("concurrent upsert");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let stored = read_all(&*store, &k, TimeRange::all()).await;
    // Writer w, round r covers hours 50w + 20r .. +200: together hours 0 ..= 429.
    assert_eq!(stored.len(), 430);
    let ov = store.overview().await.unwrap();
    assert_eq!(ov[0].count, stored.len() as u64);
    assert_eq!((ov[0].first, ov[0].last), (stored[0].ts, stored[429].ts));
    assert_digests_current(&*store, &k, "after concurrent writers").await;
    assert!(
        store.scrub().await.unwrap().is_empty(),
        "nothing to correct"
    );
}
