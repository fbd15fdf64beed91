//! The master's write path with real files: validate → journal → store applier → SQLite store.

use std::sync::Arc;
use std::time::Duration;

use dms_common::journal::{Journal, Origin, RetentionPolicy, Seq};
use dms_common::store::SharedStore;
use dms_common::store::sqlite::{SqliteOptions, SqliteStore};
use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, TimeRange, Timestamp};
use dms_master::pipeline::applier::{self, ApplierOptions};
use dms_master::pipeline::ingest::Ingestor;
use dms_master::pipeline::quarantine::Quarantine;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400;
/// 2021-01-04, a Monday.
const T0: i64 = 1_609_718_400;

fn key(s: &str) -> SeriesKey {
    SeriesKey::new(Symbol::new(s).unwrap(), Interval::D1)
}

fn bars(from: i64, n: i64) -> Vec<Bar> {
    (from..from + n)
        .map(|i| {
            let p = 100.0 + i as f64;
            Bar::ohlcv(Timestamp(T0 + i * DAY), p, p + 2.0, p - 2.0, p + 1.0, 1e5)
        })
        .collect()
}

fn origin() -> Origin {
    Origin {
        task_id: "test".into(),
        source: "unit".into(),
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    journal: Journal,
    ingestor: Ingestor,
    quarantine: Quarantine,
    store: SharedStore,
    store_path: std::path::PathBuf,
}

fn rig(store_options: SqliteOptions) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let journal = Journal::open(&state, RetentionPolicy::default()).unwrap();
    let quarantine = Quarantine::open(&state).unwrap();
    let store_path = dir.path().join("bars.db");
    let store: SharedStore = Arc::new(SqliteStore::open_with(&store_path, store_options).unwrap());
    Rig {
        ingestor: Ingestor::new(journal.clone(), quarantine.clone()),
        journal,
        quarantine,
        store,
        store_path,
        _dir: dir,
    }
}

fn fast_retry() -> ApplierOptions {
    ApplierOptions {
        min_retry_delay: Duration::from_millis(20),
        max_retry_delay: Duration::from_millis(200),
        ..ApplierOptions::default()
    }
}

/// Starts a store applier with quick retries; cancel the token to stop it.
async fn start_applier(
    journal: &Journal,
    store: &SharedStore,
) -> (applier::ApplierHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let handle = applier::start(journal.clone(), store.clone(), fast_retry(), stop.clone())
        .await
        .unwrap();
    (handle, stop)
}

async fn stored(store: &SharedStore, k: &SeriesKey) -> Vec<Bar> {
    store.read(k, TimeRange::all()).try_concat().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bars_are_quarantined_and_the_rest_reaches_the_store() {
    let r = rig(SqliteOptions::default());
    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    let mut batch = bars(0, 10);
    batch[3].high = batch[3].low - 1.0; // high below low
    batch[6].close = f64::NAN;
    batch[8].ts = Timestamp(batch[8].ts.0 + 3600); // not on a day boundary
    let report = r
        .ingestor
        .ingest(vec![SeriesBars::new(key("AAPL"), batch.clone())], &origin())
        .await
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (7, 3));
    applier.wait_applied(*report.seqs.last().unwrap()).await;
    let got = stored(&r.store, &key("AAPL")).await;
    assert_eq!(got.len(), 7);
    assert!(
        got.iter()
            .all(|b| b.ts != batch[3].ts && b.ts != batch[6].ts)
    );
    let q = r.quarantine.recent(10).await.unwrap();
    assert_eq!(q.len(), 3);
    let reasons: Vec<&str> = q.iter().map(|x| x.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|x| x.contains("close is NaN")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|x| x.contains("not the start of a 1d bar")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|x| x.contains("is below max(open")),
        "{reasons:?}"
    );
    assert!(q.iter().all(|x| x.source == "unit" && x.symbol == "AAPL"));
    let nan = q.iter().find(|x| x.reason.contains("NaN")).unwrap();
    assert_eq!(
        nan.bar["close"], "NaN",
        "non-finite values are kept as text"
    );
    stop.cancel();
    assert!(applier.join(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_is_retried_and_the_data_waits_in_the_journal() {
    let r = rig(SqliteOptions {
        busy_timeout_ms: 50,
        ..SqliteOptions::default()
    });
    // Another process-like writer holds the store's write lock.
    let blocker = rusqlite::Connection::open(&r.store_path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    let report = r
        .ingestor
        .ingest(vec![SeriesBars::new(key("MSFT"), bars(0, 500))], &origin())
        .await
        .unwrap();
    let seq = *report.seqs.last().unwrap();
    // The journal has it; the store cannot take it yet.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = applier.status();
    assert!(status.retries >= 2, "{status:?}");
    assert!(status.applied_seq < seq, "{status:?}");
    let err = status.last_error.unwrap();
    assert!(err.contains("locked") || err.contains("busy"), "{err}");
    assert_eq!(
        r.journal
            .read_after(Seq(0), 10, u64::MAX)
            .await
            .unwrap()
            .len(),
        1
    );

    blocker.execute_batch("COMMIT").unwrap();
    tokio::time::timeout(Duration::from_secs(10), applier.wait_applied(seq))
        .await
        .expect("applied once the lock is gone");
    assert_eq!(stored(&r.store, &key("MSFT")).await.len(), 500);
    assert!(applier.status().last_error.is_none());
    stop.cancel();
    assert!(applier.join(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applier_resumes_from_its_cursor_after_a_restart() {
    let r = rig(SqliteOptions::default());
    // Journaled while no applier runs (the master stopped after journaling).
    for n in 0..5 {
        r.ingestor
            .ingest(
                vec![SeriesBars::new(key("IBM"), bars(n * 10, 10))],
                &origin(),
            )
            .await
            .unwrap();
    }
    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    applier.wait_applied(Seq(5)).await;
    stop.cancel();
    assert!(applier.join(Duration::from_secs(5)).await);
    assert_eq!(
        r.journal.cursor("store").await.unwrap().unwrap().seq,
        Seq(5)
    );

    // Two more entries, one re-sending old bars with a correction.
    let mut corrected = bars(45, 5);
    corrected[4].close += 0.5;
    let report = r
        .ingestor
        .ingest(
            vec![
                SeriesBars::new(key("IBM"), corrected),
                SeriesBars::new(key("IBM"), bars(50, 10)),
            ],
            &origin(),
        )
        .await
        .unwrap();
    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    applier.wait_applied(*report.seqs.last().unwrap()).await;
    let status = applier.status();
    assert_eq!(
        status.entries_applied, 2,
        "only the new entries: {status:?}"
    );
    assert_eq!(
        (
            status.bars.inserted,
            status.bars.updated,
            status.bars.unchanged
        ),
        (10, 1, 4)
    );
    let ov = r.store.overview().await.unwrap();
    assert_eq!(ov[0].count, 60);
    stop.cancel();
    assert!(applier.join(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_what_was_journaled() {
    let r = rig(SqliteOptions::default());
    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    let batch: Vec<SeriesBars> = (0..200)
        .map(|i| SeriesBars::new(key(&format!("S{i}")), bars(0, 250)))
        .collect();
    r.ingestor.ingest(batch, &origin()).await.unwrap();
    stop.cancel();
    assert!(
        applier.join(Duration::from_secs(20)).await,
        "drained in time"
    );
    let total: u64 = r
        .store
        .overview()
        .await
        .unwrap()
        .iter()
        .map(|o| o.count)
        .sum();
    assert_eq!(total, 200 * 250);
    assert_eq!(
        r.journal.cursor("store").await.unwrap().unwrap().seq,
        r.journal.head()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_lost_to_retention_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    {
        let journal = Journal::open(&state, RetentionPolicy::default()).unwrap();
        let ingestor = Ingestor::new(journal.clone(), Quarantine::open(&state).unwrap());
        journal.ensure_cursor("store", Seq(0)).await.unwrap();
        for n in 0..3 {
            ingestor
                .ingest(
                    vec![SeriesBars::new(key("LOST"), bars(n * 5, 5))],
                    &origin(),
                )
                .await
                .unwrap();
        }
    }
    // Reopened with room for about one and a half entries.
    let per_entry = Journal::open(&state, RetentionPolicy::default())
        .unwrap()
        .stats()
        .await
        .unwrap()
        .bytes
        / 3;
    let policy = RetentionPolicy {
        max_bytes: per_entry * 3 / 2,
        max_age: Duration::from_secs(3600),
    };
    let journal = Journal::open(&state, policy).unwrap();
    // Retention over the size limit removes all but the newest entry.
    let report = journal
        .apply_retention(chrono::Utc::now().timestamp_millis())
        .await
        .unwrap();
    assert_eq!(report.removed_entries, 2);
    assert_eq!(report.cursors_marked, ["store"]);
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path().join("bars.db")).unwrap());
    let (applier, stop) = start_applier(&journal, &store).await;
    applier.wait_applied(Seq(3)).await;
    let status = applier.status();
    assert_eq!(status.skipped_gaps, 1, "{status:?}");
    assert_eq!(
        stored(&store, &key("LOST")).await.len(),
        5,
        "the newest entry was applied"
    );
    // The loss stays visible on the cursor.
    let cursor = journal.cursor("store").await.unwrap().unwrap();
    assert!(cursor.needs_repair && cursor.protected, "{cursor:?}");
    assert!(
        cursor
            .repair_reason
            .unwrap()
            .contains("removed by retention")
    );
    stop.cancel();
    assert!(applier.join(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_the_store_refuses_for_good_is_set_aside_and_the_rest_goes_on() {
    use dms_common::journal::{Change, NewChange};
    use dms_master::pipeline::dead_letters::DeadLetters;

    let r = rig(SqliteOptions::default());
    let (applier, stop) = start_applier(&r.journal, &r.store).await;
    // The middle entry bypasses validation: a NaN close, which the store cannot hold (its
    // column is NOT NULL and SQLite stores NaN as NULL): a permanent error.
    let mut poison = bars(0, 3);
    poison[1].close = f64::NAN;
    let change = |k: &str, b: Vec<Bar>| NewChange {
        series: key(k),
        change: Change::Upsert(b),
        origin: origin(),
    };
    let seqs = r
        .journal
        .append_all(vec![
            change("GOOD", bars(0, 5)),
            change("BAD", poison),
            change("ALSO", bars(0, 4)),
        ])
        .await
        .unwrap();
    let more = r.journal.append(change("LATER", bars(0, 2))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), applier.wait_applied(more))
        .await
        .expect("the store applier went past the refused entry");
    assert_eq!(stored(&r.store, &key("GOOD")).await.len(), 5);
    assert_eq!(stored(&r.store, &key("ALSO")).await.len(), 4);
    assert_eq!(stored(&r.store, &key("LATER")).await.len(), 2);
    assert!(
        stored(&r.store, &key("BAD")).await.is_empty(),
        "all or nothing per entry"
    );
    let status = applier.status();
    assert_eq!(status.dead_letters, 1, "{status:?}");
    let dead = DeadLetters::open(r.journal.path()).unwrap();
    let listed = dead.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].seq, seqs[1].0);
    assert_eq!((listed[0].symbol.as_str(), listed[0].bars), ("BAD", 3));
    assert!(listed[0].reason.contains("NOT NULL"), "{listed:?}");
    assert_eq!(dead.count().await.unwrap(), (1, 3));
    // An operator takes it back out (to journal it again once fixed): the change is intact.
    let back = dead
        .take(seqs[1].0)
        .await
        .unwrap()
        .expect("the dead letter");
    assert_eq!(back.series, key("BAD"));
    match back.change {
        Change::Upsert(b) => assert!(b[1].close.is_nan() && b.len() == 3),
        Change::Delete(_) => panic!("an upsert was set aside"),
    }
    assert!(dead.list(10).await.unwrap().is_empty());
    assert!(!dead.drop_one(seqs[1].0).await.unwrap());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_wait_while_the_store_is_too_far_behind_and_go_on_when_it_catches_up() {
    use dms_master::pipeline::ingest::Backpressure;

    let r = rig(SqliteOptions::default());
    // The store's applied position, driven by hand: nothing is applied yet.
    let (applied_tx, applied) = tokio::sync::watch::channel(Seq(0));
    let bp = Backpressure::new(applied, 1 << 20);
    let ingestor = r.ingestor.clone().with_backpressure(bp.clone());
    // Well over 1 MiB of journal payload, accepted while the store was not behind.
    let big: Vec<SeriesBars> = (0..15)
        .map(|i| SeriesBars::new(key(&format!("BIG{i}")), bars(0, 2_000)))
        .collect();
    let first = ingestor.ingest(big, &origin()).await.unwrap();
    assert_eq!(first.accepted, 30_000);
    assert!(bp.over_limit(&r.journal).await.unwrap().is_some());
    // The next write waits ...
    let next = tokio::spawn({
        let ingestor = ingestor.clone();
        async move {
            ingestor
                .ingest(vec![SeriesBars::new(key("NEXT"), bars(0, 5))], &origin())
                .await
        }
    });
    let waiting = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(w) = bp.waiting() {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer reports that it waits");
    assert!(waiting.contains("waiting for the store"), "{waiting}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!next.is_finished(), "the write waits for the store");
    assert_eq!(r.journal.head(), *first.seqs.last().unwrap());
    // ... until the store has applied what it lacked.
    applied_tx.send_replace(r.journal.head());
    let report = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the write goes on")
        .unwrap()
        .unwrap();
    assert_eq!(report.accepted, 5);
    assert!(bp.waiting().is_none());
}
