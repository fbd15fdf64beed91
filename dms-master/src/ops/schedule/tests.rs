//! The scheduler on real parts (a state file, a SQLite store, the task manager's queue, a CSV
//! source), driven by a [`ManualClock`]: no test waits real time for a fire.
//!
//! The task runner is not started, so a queued task stays `pending`: that is what the overlap
//! check sees.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dms_common::journal::{Journal, Seq};
use dms_common::store::{SharedStore, open_store};
use dms_common::{Bar, Interval, SeriesBars, SeriesKey, Symbol, Timestamp};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::MasterConfig;
use crate::pipeline::catalog::Catalog;
use crate::pipeline::ingest::Ingestor;
use crate::pipeline::quarantine::Quarantine;
use crate::tasks::manager::{TaskContext, TaskManager};
use crate::tasks::store::TaskStore;
use crate::universe::Universe;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A master's parts in a temporary directory: a CSV source `csv` holding AAPL daily bars (an
/// NYSE series), a state file and a SQLite store.
struct Harness {
    dir: tempfile::TempDir,
    config: MasterConfig,
    tasks: Arc<TaskManager>,
    store: SharedStore,
    catalog: Catalog,
    clock: ManualClock,
    alerts: crate::alerts::Alerts,
    _applied: watch::Sender<Seq>,
}

impl Harness {
    async fn new(start: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("csv");
        std::fs::create_dir_all(&csv).unwrap();
        std::fs::write(
            csv.join("AAPL.csv"),
            "date,open,high,low,close,volume\n2026-01-02,10,11,9,10.5,100\n2026-01-05,10.5,11,10,10.8,100\n",
        )
        .unwrap();
        let yaml = format!(
            "state: {{path: '{state}'}}\nstore: {{type: sqlite, path: '{bars}'}}\nsources:\n  - {{type: csv, name: csv, dir: '{csv}', import_on_start: false}}\n",
            state = dir.path().join("state.db").display(),
            bars = dir.path().join("bars.db").display(),
            csv = csv.display(),
        );
        let config: MasterConfig =
            dms_common::config::load_str(Path::new("test.yaml"), &yaml, Vec::new()).unwrap();
        let universe = Universe::build(&config.sources, &config.watchlists).unwrap();
        let journal = Journal::open(&config.state.path, config.journal.policy()).unwrap();
        let quarantine = Quarantine::open(&config.state.path).unwrap();
        let store = open_store(&config.store).await.unwrap();
        let catalog = Catalog::open(&config.state.path).unwrap();
        let (applied_tx, applied) = watch::channel(Seq(0));
        let tasks = TaskManager::new(TaskContext {
            tasks: TaskStore::open(&config.state.path).unwrap(),
            universe: Arc::new(universe),
            ingestor: Ingestor::new(journal.clone(), quarantine),
            journal,
            store: store.clone(),
            catalog: catalog.clone(),
            applied,
            config: config.tasks.clone(),
            alerts: crate::alerts::Alerts::disabled(),
            tables: Default::default(),
            imports: Default::default(),
            files: crate::tasks::manager::TaskFiles::new(
                &config.state.path,
                &config.state.dir(),
                &config.backup,
                &config.store,
            ),
            targets: crate::data::targets::Targets::default(),
        });
        Harness {
            dir,
            config,
            tasks,
            store,
            catalog,
            clock: ManualClock::new(at(start)),
            alerts: crate::alerts::Alerts::disabled(),
            _applied: applied_tx,
        }
    }

    /// Stores an AAPL daily bar for every day from `from` to `to`, so the series is complete.
    async fn fill_aapl(&self, from: &str, to: &str) {
        let (mut day, to) = (
            from.parse::<chrono::NaiveDate>().unwrap(),
            to.parse::<chrono::NaiveDate>().unwrap(),
        );
        let mut bars = Vec::new();
        while day <= to {
            bars.push(Bar::ohlcv(
                Timestamp::from_date(day),
                10.0,
                11.0,
                9.0,
                10.5,
                100.0,
            ));
            day = day.succ_opt().unwrap();
        }
        let key = SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1);
        self.store
            .upsert(&[SeriesBars::new(key, bars)])
            .await
            .unwrap();
    }

    /// Starts a scheduler over `schedules` (YAML list items) on the harness's state file.
    async fn start(&self, schedules: &str) -> (Scheduler, broadcast::Receiver<RunRecord>, Stop) {
        let schedules = parse_schedules(schedules);
        let stop = CancellationToken::new();
        let scheduler = Scheduler::start(
            RunContext {
                tasks: self.tasks.clone(),
                store: self.store.clone(),
                catalog: self.catalog.clone(),
                nodes: None,
                watchlists: Arc::default(),
                alerts: self.alerts.clone(),
            },
            schedules,
            &self.config.state.path,
            Arc::new(self.clock.clone()),
            stop.clone(),
        )
        .await
        .unwrap();
        let events = scheduler.subscribe();
        (scheduler, events, Stop(stop))
    }
}

/// Stops a scheduler's loops when dropped.
struct Stop(CancellationToken);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn parse_schedules(yaml: &str) -> Vec<ScheduleConfig> {
    let text = format!("sources:\n  - {{type: csv, name: csv, dir: x}}\nschedules:\n{yaml}");
    let config: MasterConfig =
        dms_common::config::load_str(Path::new("test.yaml"), &text, Vec::new()).unwrap();
    config.schedules
}

/// The next run recorded (within 10 s of real time: the runs are handled at once).
async fn next_run(events: &mut broadcast::Receiver<RunRecord>) -> RunRecord {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("a run is recorded")
        .expect("the scheduler is running")
}

/// Sets the clock to `t` and returns the run recorded for it.
async fn run_at(h: &Harness, events: &mut broadcast::Receiver<RunRecord>, t: &str) -> RunRecord {
    h.clock.set(at(t));
    next_run(events).await
}

const NY_EVENING_UPDATE: &str = "  - {name: evening, cron: '0 18 * * *', timezone: America/New_York, kind: update, source: csv}\n";

#[tokio::test]
async fn a_new_york_18_00_job_fires_at_18_00_local_on_both_sides_of_each_dst_change() {
    let h = Harness::new("2026-03-06T12:00:00Z").await;
    h.fill_aapl("2026-02-01", "2026-12-31").await;
    let (_s, mut events, _stop) = h.start(NY_EVENING_UPDATE).await;
    // March: EST (UTC-5) until Sunday 2026-03-08 02:00, EDT (UTC-4) after.
    let march = [
        (
            "2026-03-06T23:00:00Z",
            "2026-03-06T18:00:00-05:00",
            RunOutcome::SkippedComplete,
        ),
        (
            "2026-03-07T23:00:00Z",
            "2026-03-07T18:00:00-05:00",
            RunOutcome::SkippedNonTradingDay,
        ),
        (
            "2026-03-08T22:00:00Z",
            "2026-03-08T18:00:00-04:00",
            RunOutcome::SkippedNonTradingDay,
        ),
        (
            "2026-03-09T22:00:00Z",
            "2026-03-09T18:00:00-04:00",
            RunOutcome::SkippedComplete,
        ),
    ];
    for (utc, local, outcome) in march {
        let run = run_at(&h, &mut events, utc).await;
        assert_eq!(run.scheduled_for.to_rfc3339(), local, "{run:?}");
        assert_eq!(run.scheduled_for.with_timezone(&Utc), at(utc));
        assert_eq!(
            (run.outcome, run.trigger),
            (outcome, RunTrigger::Schedule),
            "{run:?}"
        );
    }
    // Months later: the fires in between are one catch-up run, then November.
    let run = run_at(&h, &mut events, "2026-10-30T12:00:00Z").await;
    assert_eq!(run.trigger, RunTrigger::CatchUp, "{run:?}");
    assert_eq!(run.scheduled_for.to_rfc3339(), "2026-10-29T18:00:00-04:00");
    // November: EDT until Sunday 2026-11-01 02:00, EST after.
    let november = [
        (
            "2026-10-30T22:00:00Z",
            "2026-10-30T18:00:00-04:00",
            RunOutcome::SkippedComplete,
        ),
        (
            "2026-10-31T22:00:00Z",
            "2026-10-31T18:00:00-04:00",
            RunOutcome::SkippedNonTradingDay,
        ),
        (
            "2026-11-01T23:00:00Z",
            "2026-11-01T18:00:00-05:00",
            RunOutcome::SkippedNonTradingDay,
        ),
        (
            "2026-11-02T23:00:00Z",
            "2026-11-02T18:00:00-05:00",
            RunOutcome::SkippedComplete,
        ),
    ];
    for (utc, local, outcome) in november {
        let run = run_at(&h, &mut events, utc).await;
        assert_eq!(run.scheduled_for.to_rfc3339(), local, "{run:?}");
        assert_eq!(
            (run.outcome, run.trigger),
            (outcome, RunTrigger::Schedule),
            "{run:?}"
        );
    }
}

#[tokio::test]
async fn a_six_field_cron_fires_on_its_seconds() {
    let h = Harness::new("2026-03-10T12:00:00Z").await;
    h.fill_aapl("2026-02-01", "2026-03-10").await;
    let (s, mut events, _stop) = h
        .start("  - {name: fast, cron: '*/2 * * * * *', kind: update, source: csv}\n")
        .await;
    let view = s.get("fast").await.unwrap();
    let next: Vec<String> = view.next_fires.iter().map(|t| t.to_rfc3339()).collect();
    assert_eq!(
        next[..3],
        [
            "2026-03-10T12:00:02+00:00",
            "2026-03-10T12:00:04+00:00",
            "2026-03-10T12:00:06+00:00"
        ]
    );
    for t in ["2026-03-10T12:00:02Z", "2026-03-10T12:00:04Z"] {
        let run = run_at(&h, &mut events, t).await;
        assert_eq!(run.scheduled_for.with_timezone(&Utc), at(t));
        assert_eq!(run.outcome, RunOutcome::SkippedComplete, "{run:?}");
    }
}

#[tokio::test]
async fn a_fire_while_the_previous_task_is_pending_is_skipped_as_overlap() {
    // Nothing stored: the update is not complete and queues a task, which stays pending.
    let h = Harness::new("2026-03-10T12:00:00Z").await;
    let (s, mut events, _stop) = h
        .start("  - {name: hourly, cron: '0 * * * *', kind: update, source: csv}\n")
        .await;
    let first = run_at(&h, &mut events, "2026-03-10T13:00:00Z").await;
    assert_eq!(first.outcome, RunOutcome::Started, "{first:?}");
    let task_id = first.task_id.clone().expect("a task id");
    let task = h.tasks.tasks().get(&task_id).await.unwrap().unwrap();
    assert_eq!(task.name, "schedule hourly");
    assert_eq!(task.kind, crate::tasks::TaskKind::IncrementalUpdate);
    let second = run_at(&h, &mut events, "2026-03-10T14:00:00Z").await;
    assert_eq!(second.outcome, RunOutcome::SkippedOverlap, "{second:?}");
    assert_eq!(second.task_id.as_deref(), Some(task_id.as_str()));
    assert!(second.message.contains("still pending"), "{second:?}");
    // A manual trigger is checked for overlap too.
    let manual = s.trigger("hourly").await.unwrap();
    assert_eq!(manual.outcome, RunOutcome::SkippedOverlap, "{manual:?}");
    assert_eq!(next_run(&mut events).await, manual);
    // Once the task has ended, the next fire starts a new one.
    h.tasks.cancel(&task_id).await.unwrap();
    let third = run_at(&h, &mut events, "2026-03-10T15:00:00Z").await;
    assert_eq!(third.outcome, RunOutcome::Started, "{third:?}");
    assert_ne!(third.task_id, Some(task_id));
    let view = s.get("hourly").await.unwrap();
    let last = view.last_run.unwrap();
    assert_eq!(last.task_id, third.task_id);
    assert_eq!(last.task_status, Some(crate::tasks::TaskStatus::Pending));
    assert_eq!(view.recent_runs.len(), 4);
}

#[tokio::test]
async fn a_fire_on_a_nyse_holiday_is_skipped_and_recorded() {
    // Friday 2026-07-03: Independence Day (a Saturday) observed.
    let h = Harness::new("2026-07-03T12:00:00Z").await;
    // Thursday's session is stored: nothing is left for the holiday's fire to retry.
    h.fill_aapl("2026-06-01", "2026-07-02").await;
    let (s, mut events, _stop) = h.start(NY_EVENING_UPDATE).await;
    let run = run_at(&h, &mut events, "2026-07-03T22:00:00Z").await;
    assert_eq!(run.outcome, RunOutcome::SkippedNonTradingDay, "{run:?}");
    assert!(run.message.contains("2026-07-03"), "{run:?}");
    assert!(h.tasks.tasks().list(None, 10).await.unwrap().is_empty());
    // Monday is a trading day and its session is missing: the update starts (the weekend's
    // fires, passed over in one step of the clock, are not run on their own).
    let run = run_at(&h, &mut events, "2026-07-06T22:00:00Z").await;
    assert_eq!(
        (run.trigger, run.outcome),
        (RunTrigger::Schedule, RunOutcome::Started),
        "{run:?}"
    );
    assert_eq!(
        s.get("evening").await.unwrap().last_run.unwrap().outcome,
        RunOutcome::Started
    );
}

#[tokio::test]
async fn a_next_morning_retry_on_a_non_trading_day_runs_only_while_the_last_session_is_missing() {
    // 08:00 New York is the retry of the evening's attempts; Saturday 2026-03-07's retry is
    // for Friday's session.
    let h = Harness::new("2026-03-07T12:00:00Z").await;
    h.fill_aapl("2026-02-01", "2026-03-05").await;
    let morning = "  - {name: morning, cron: '0 8 * * *', timezone: America/New_York, kind: update, source: csv}\n";
    let (_s, mut events, _stop) = h.start(morning).await;
    let run = run_at(&h, &mut events, "2026-03-07T13:00:00Z").await;
    assert_eq!(
        run.outcome,
        RunOutcome::Started,
        "Friday is missing: {run:?}"
    );
    // Friday's bar arrived: Sunday's retry has nothing to do and is a non-trading day.
    h.fill_aapl("2026-03-06", "2026-03-06").await;
    let task = run.task_id.unwrap();
    h.tasks.cancel(&task).await.unwrap();
    let run = run_at(&h, &mut events, "2026-03-08T12:00:00Z").await;
    assert_eq!(run.outcome, RunOutcome::SkippedNonTradingDay, "{run:?}");
    assert!(run.message.contains("2026-03-08"), "{run:?}");
}

#[tokio::test]
async fn fires_missed_during_downtime_run_once_at_start() {
    let h = Harness::new("2026-03-10T12:30:00Z").await;
    h.fill_aapl("2026-02-01", "2026-03-10").await;
    let hourly = "  - {name: hourly, cron: '0 * * * *', kind: update, source: csv}\n  - {name: strict, cron: '0 * * * *', kind: update, source: csv, catch_up: false}\n";
    {
        let (_s, _events, _stop) = h.start(hourly).await;
        let s = _s.get("hourly").await.unwrap();
        assert!(s.last_run.is_none());
    }
    // Down from 12:30 to 17:30: five fires of each job missed.
    h.clock.set(at("2026-03-10T17:30:00Z"));
    let (s, mut events, _stop) = h.start(hourly).await;
    let mut runs = [next_run(&mut events).await, next_run(&mut events).await];
    runs.sort_by(|a, b| a.schedule.cmp(&b.schedule));
    let (caught_up, missed) = (&runs[0], &runs[1]);
    assert_eq!(caught_up.schedule, "hourly");
    assert_eq!(caught_up.trigger, RunTrigger::CatchUp);
    assert_eq!(
        caught_up.scheduled_for.with_timezone(&Utc),
        at("2026-03-10T17:00:00Z")
    );
    assert!(
        caught_up
            .message
            .starts_with("catch-up of 5 missed fire(s)"),
        "{caught_up:?}"
    );
    assert_eq!(missed.schedule, "strict");
    assert_eq!(missed.outcome, RunOutcome::Missed, "{missed:?}");
    assert!(missed.message.contains("5 fire(s) missed"), "{missed:?}");
    // A missed run is an alert; the caught-up one is not.
    assert_eq!(h.alerts.active_keys(), vec!["missed_run:strict".to_owned()]);
    // Once: the next runs are the 18:00 fires, on time.
    h.clock.set(at("2026-03-10T18:00:00Z"));
    for _ in 0..2 {
        let run = next_run(&mut events).await;
        assert_eq!(run.trigger, RunTrigger::Schedule, "{run:?}");
        assert_eq!(
            run.scheduled_for.with_timezone(&Utc),
            at("2026-03-10T18:00:00Z")
        );
    }
    assert_eq!(s.get("hourly").await.unwrap().recent_runs.len(), 2);
}

#[tokio::test]
async fn pause_resume_and_trigger_at_run_time_and_across_a_restart() {
    let h = Harness::new("2026-03-10T12:30:00Z").await;
    h.fill_aapl("2026-02-01", "2026-03-10").await;
    let job = "  - {name: hourly, cron: '0 * * * *', kind: update, source: csv}\n";
    {
        let (s, _events, _stop) = h.start(job).await;
        let view = s.pause("hourly").await.unwrap();
        assert!(view.paused && view.next_fires.is_empty(), "{view:?}");
        assert!(matches!(
            s.pause("nope").await,
            Err(ScheduleError::NotFound(n)) if n == "nope"
        ));
    }
    // Paused across a restart: the fires while down and while paused are not run.
    h.clock.set(at("2026-03-10T15:30:00Z"));
    let (s, mut events, _stop) = h.start(job).await;
    assert!(s.get("hourly").await.unwrap().paused);
    // A trigger runs it now even while paused, and skips the completeness check.
    let manual = s.trigger("hourly").await.unwrap();
    assert_eq!(
        (manual.trigger, manual.outcome),
        (RunTrigger::Manual, RunOutcome::Started)
    );
    assert_eq!(
        manual.scheduled_for.with_timezone(&Utc),
        at("2026-03-10T15:30:00Z")
    );
    assert_eq!(next_run(&mut events).await, manual);
    h.tasks
        .cancel(manual.task_id.as_deref().unwrap())
        .await
        .unwrap();
    let view = s.resume("hourly").await.unwrap();
    assert!(!view.paused);
    assert_eq!(
        view.next_fires[0].with_timezone(&Utc),
        at("2026-03-10T16:00:00Z")
    );
    let run = run_at(&h, &mut events, "2026-03-10T16:00:00Z").await;
    assert_eq!(
        (run.trigger, run.outcome),
        (RunTrigger::Schedule, RunOutcome::SkippedComplete),
        "{run:?}"
    );
}

#[tokio::test]
async fn reload_adds_removes_and_changes_jobs_keeping_pause_state() {
    let h = Harness::new("2026-03-10T12:30:00Z").await;
    let (s, _events, _stop) = h
        .start("  - {name: a, cron: '0 * * * *', kind: update, source: csv}\n")
        .await;
    s.pause("a").await.unwrap();
    s.reload(parse_schedules(
        "  - {name: a, cron: '30 * * * *', kind: validate, source: csv}\n  - {name: b, cron: '0 18 * * *', kind: validate}\n",
    ))
    .unwrap();
    let names: Vec<(String, String, bool)> = s
        .list()
        .await
        .into_iter()
        .map(|v| (v.name, v.cron, v.paused))
        .collect();
    assert_eq!(
        names,
        [
            ("a".to_owned(), "30 * * * *".to_owned(), true),
            ("b".to_owned(), "0 18 * * *".to_owned(), false)
        ]
    );
    // An invalid list changes nothing.
    let mut bad = parse_schedules("  - {name: c, cron: '0 18 * * *', kind: validate}\n");
    bad[0].cron = "0 18 * *".into();
    let err = s.reload(bad).unwrap_err().to_string();
    assert!(err.starts_with("schedules[0].cron"), "{err}");
    assert_eq!(s.list().await.len(), 2);
    // Removed, then back: its pause state was kept by name.
    s.reload(parse_schedules(
        "  - {name: b, cron: '0 18 * * *', kind: validate}\n",
    ))
    .unwrap();
    assert!(s.get("a").await.is_none());
    s.reload(parse_schedules(
        "  - {name: a, cron: '30 * * * *', kind: validate, source: csv}\n",
    ))
    .unwrap();
    assert!(s.get("a").await.unwrap().paused);
    // Setting `enabled` in the config wins over the earlier pause.
    s.reload(parse_schedules(
        "  - {name: a, cron: '30 * * * *', kind: validate, source: csv, enabled: false}\n",
    ))
    .unwrap();
    assert!(s.get("a").await.unwrap().paused);
    s.reload(parse_schedules(
        "  - {name: a, cron: '30 * * * *', kind: validate, source: csv, enabled: true}\n",
    ))
    .unwrap();
    assert!(!s.get("a").await.unwrap().paused);
}

#[tokio::test]
async fn the_run_history_keeps_the_newest_runs_of_each_schedule() {
    let h = Harness::new("2026-03-10T12:30:00Z").await;
    let store = store::ScheduleStore::open(&h.config.state.path).unwrap();
    let job = &parse_schedules("  - {name: a, cron: '0 * * * *', kind: validate}\n")[0];
    for i in 0..store::RUNS_KEPT + 5 {
        let t = at("2026-03-10T00:00:00Z") + chrono::Duration::minutes(i as i64);
        let run = RunRecord::new(job, chrono_tz::UTC, t, t, RunTrigger::Schedule).ended(
            RunOutcome::Missed,
            None,
            format!("run {i}"),
        );
        store.record_run(&run).await.unwrap();
    }
    let runs = store.runs("a", 1_000, chrono_tz::UTC).await.unwrap();
    assert_eq!(runs.len(), store::RUNS_KEPT);
    assert_eq!(runs[0].message, format!("run {}", store::RUNS_KEPT + 4));
    assert_eq!(runs.last().unwrap().message, "run 5");
    let _ = h.dir.path();
}

#[tokio::test]
async fn the_queue_refuses_tasks_beyond_max_pending() {
    use crate::tasks::manager::SubmitError;
    use crate::tasks::{TaskKind, TaskParams};
    let h = Harness::new("2026-03-06T12:00:00Z").await;
    let max = h.config.tasks.max_pending;
    // The runner is not started: every task stays pending.
    for i in 0..max {
        h.tasks
            .submit(TaskKind::Validate, format!("v{i}"), TaskParams::default())
            .await
            .unwrap();
    }
    let e = h
        .tasks
        .submit(TaskKind::Validate, "one more".into(), TaskParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SubmitError::Busy(m) if m.contains("tasks.max_pending")),
        "{e}"
    );
}
