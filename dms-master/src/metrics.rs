//! The master's Prometheus figures, served as text on `GET /metrics`.
//!
//! Counters and histograms are recorded through the `metrics` facade where the event happens
//! (the helpers below keep names and labels in one place); gauges that describe state (journal
//! size, lags) are read from that state when `/metrics` is scraped
//! ([`crate::api::metrics::MetricsSource::refresh`]).
//! The recorder is installed once per process by [`dms_common::prometheus::handle`].
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `dms_bars_ingested_total` | counter | `source` | bars that passed validation and were journaled (tasks and start-up imports) |
//! | `dms_bars_rejected_total` | counter | `source` | bars rejected by validation (quarantined) |
//! | `dms_tasks_total` | counter | `kind`, `outcome` | tasks that ended: `outcome` is `completed`, `failed`, `cancelled` or `interrupted` (shutdown; it resumes) |
//! | `dms_task_duration_seconds` | histogram | `kind`, `outcome` | how long a task ran in this process |
//! | `dms_provider_requests_total` | counter | `source` | requests to a provider (Yahoo HTTP requests, retries included; CSV file reads) |
//! | `dms_provider_errors_total` | counter | `source`, `kind` | failed requests: `kind` is `network`, `rate_limited`, `server`, `not_found`, `rejected` or `unusable` |
//! | `dms_provider_request_duration_seconds` | histogram | `source` | time of one request, answer body included |
//! | `dms_provider_request_rate` | gauge | `source` | request starts per second the provider is held to now (learned, with `adaptive_rate`) |
//! | `dms_journal_head_seq` | gauge | | the journal's last sequence number |
//! | `dms_journal_entries` | gauge | | entries kept in the journal |
//! | `dms_journal_size_bytes` | gauge | | payload bytes kept in the journal |
//! | `dms_store_applied_seq` | gauge | | the last journal entry the primary store applied |
//! | `dms_store_lag_entries` | gauge | | journal entries the store has yet to apply |
//! | `dms_store_lag_seconds` | gauge | | age of the oldest entry the store has yet to apply (0 when caught up) |
//! | `dms_store_apply_duration_seconds` | histogram | | time to apply one group of journal entries to the store (retries included) |
//! | `dms_store_applied_entries_total` | counter | | journal entries applied (or set aside) by the store applier |
//! | `dms_store_errors_total` | counter | `kind` | failed store writes: `transient` (retried) or `permanent` (the entry is set aside) |
//! | `dms_replica_lag_entries` | gauge | `node` | journal entries a replica has not acknowledged |
//! | `dms_replica_lag_seconds` | gauge | `node` | age of the oldest entry a replica has not acknowledged (0 when in sync) |
//! | `dms_replica_connected` | gauge | `node` | 1 while the replica has an open session |
//! | `dms_schedule_runs_total` | counter | `schedule`, `outcome` | scheduled runs and how they ended (recorded by the scheduler) |
//! | `dms_alerts_sent_total` | counter | `webhook`, `status` | alert messages delivered (`firing` or `resolved`) |
//! | `dms_alerts_dropped_total` | counter | `webhook`, `reason` | alert messages not delivered: `delivery_failed` (retries ran out), `rate_limited`, `queue_full` |
//!
//! Log lines carry the same names as fields: `task`, `series`, `node`, `source`.

use std::time::Duration;

use dms_common::journal::{Journal, Seq};
use metrics::{counter, histogram};

/// Installs the recorder (once per process) and describes the figures.
pub fn install() {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    dms_common::prometheus::handle();
    DESCRIBED.call_once(describe);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("dms_bars_ingested_total", "Bars validated and journaled");
    describe_counter!("dms_bars_rejected_total", "Bars rejected by validation");
    describe_counter!("dms_tasks_total", "Tasks that ended, by kind and outcome");
    describe_histogram!(
        "dms_task_duration_seconds",
        "How long tasks ran, by kind and outcome"
    );
    describe_counter!("dms_provider_requests_total", "Requests to providers");
    describe_counter!("dms_provider_errors_total", "Failed provider requests");
    describe_histogram!(
        "dms_provider_request_duration_seconds",
        "Provider request latency"
    );
    describe_gauge!(
        "dms_provider_request_rate",
        "Request starts per second a provider is held to now"
    );
    describe_gauge!("dms_journal_head_seq", "The journal's last sequence number");
    describe_gauge!("dms_journal_entries", "Entries kept in the journal");
    describe_gauge!(
        "dms_journal_size_bytes",
        "Payload bytes kept in the journal"
    );
    describe_gauge!(
        "dms_store_applied_seq",
        "Last journal entry the store applied"
    );
    describe_gauge!(
        "dms_store_lag_entries",
        "Journal entries the store has yet to apply"
    );
    describe_gauge!(
        "dms_store_lag_seconds",
        "Age of the oldest journal entry the store has yet to apply"
    );
    describe_histogram!(
        "dms_store_apply_duration_seconds",
        "Time to apply a group of journal entries to the store"
    );
    describe_counter!(
        "dms_store_applied_entries_total",
        "Journal entries applied by the store applier"
    );
    describe_counter!("dms_store_errors_total", "Failed store writes");
    describe_gauge!(
        "dms_replica_lag_entries",
        "Journal entries a replica has not acknowledged"
    );
    describe_gauge!(
        "dms_replica_lag_seconds",
        "Age of the oldest journal entry a replica has not acknowledged"
    );
    describe_gauge!(
        "dms_replica_connected",
        "1 while the replica has an open session"
    );
    describe_counter!("dms_schedule_runs_total", "Scheduled runs, by outcome");
    describe_counter!("dms_alerts_sent_total", "Alert messages delivered");
    describe_counter!("dms_alerts_dropped_total", "Alert messages not delivered");
}

/// Bars an ingest call journaled and rejected.
pub fn bars_ingested(source: &str, accepted: u64, rejected: u64) {
    let source = source.to_owned();
    counter!("dms_bars_ingested_total", "source" => source.clone()).increment(accepted);
    counter!("dms_bars_rejected_total", "source" => source).increment(rejected);
}

/// A task that ended (`outcome`: completed, failed, cancelled, interrupted) after `ran`.
pub fn task_finished(kind: &'static str, outcome: &'static str, ran: Duration) {
    counter!("dms_tasks_total", "kind" => kind, "outcome" => outcome).increment(1);
    histogram!("dms_task_duration_seconds", "kind" => kind, "outcome" => outcome)
        .record(ran.as_secs_f64());
}

/// One provider request that took `took`; `error` is the kind of failure, if it failed.
pub fn provider_request(source: &str, took: Duration, error: Option<&'static str>) {
    let source = source.to_owned();
    counter!("dms_provider_requests_total", "source" => source.clone()).increment(1);
    histogram!("dms_provider_request_duration_seconds", "source" => source.clone())
        .record(took.as_secs_f64());
    if let Some(kind) = error {
        counter!("dms_provider_errors_total", "source" => source, "kind" => kind).increment(1);
    }
}

/// The store applied `entries` journal entries in `took`.
pub fn store_applied(entries: u64, took: Duration) {
    counter!("dms_store_applied_entries_total").increment(entries);
    histogram!("dms_store_apply_duration_seconds").record(took.as_secs_f64());
}

/// A store write failed (`transient` or `permanent`).
pub fn store_error(kind: &'static str) {
    counter!("dms_store_errors_total", "kind" => kind).increment(1);
}

/// An alert message was delivered.
pub fn alert_sent(webhook: &str, status: &'static str) {
    counter!("dms_alerts_sent_total", "webhook" => webhook.to_owned(), "status" => status)
        .increment(1);
}

/// An alert message was not delivered.
pub fn alert_dropped(webhook: &str, reason: &'static str) {
    counter!("dms_alerts_dropped_total", "webhook" => webhook.to_owned(), "reason" => reason)
        .increment(1);
}

/// How far a consumer of the journal is behind its head.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Lag {
    /// Entries after the consumer's cursor.
    pub entries: u64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub seconds: f64,
}

/// The lag of a consumer whose cursor is at `cursor`.
pub async fn lag_of(journal: &Journal, cursor: Seq) -> Lag {
    let head = journal.head();
    if cursor >= head {
        return Lag::default();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let seconds = match journal.committed_after(cursor).await {
        Ok(Some(at)) => (now - at).max(0) as f64 / 1000.0,
        Ok(None) => 0.0,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the journal for a lag");
            0.0
        }
    };
    Lag {
        entries: head.0 - cursor.0,
        seconds,
    }
}

#[cfg(test)]
mod tests {
    use dms_common::journal::{Change, NewChange, Origin, RetentionPolicy};
    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};

    use super::*;

    fn change() -> NewChange {
        NewChange {
            series: SeriesKey::new(Symbol::new("AAPL").unwrap(), Interval::D1),
            change: Change::Upsert(vec![Bar::ohlcv(Timestamp(0), 1.0, 2.0, 0.5, 1.5, 10.0)]),
            origin: Origin {
                task_id: "t1".into(),
                source: "test".into(),
            },
        }
    }

    #[tokio::test]
    async fn lag_counts_entries_after_the_cursor_and_the_age_of_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let journal =
            Journal::open(dir.path().join("state.db"), RetentionPolicy::default()).unwrap();
        assert_eq!(lag_of(&journal, Seq(0)).await, Lag::default());
        journal.append_all(vec![change(), change()]).await.unwrap();
        let lag = lag_of(&journal, Seq(0)).await;
        assert_eq!(lag.entries, 2);
        assert!((0.0..5.0).contains(&lag.seconds), "{lag:?}");
        assert_eq!(lag_of(&journal, Seq(1)).await.entries, 1);
        assert_eq!(lag_of(&journal, Seq(2)).await, Lag::default());
    }

    #[tokio::test]
    async fn the_recorded_figures_render_in_the_text_format() {
        install();
        bars_ingested("metrics-test", 7, 2);
        task_finished("validate", "completed", Duration::from_millis(1500));
        provider_request("metrics-test", Duration::from_millis(30), Some("server"));
        let text = dms_common::prometheus::render();
        for line in [
            "# TYPE dms_bars_ingested_total counter",
            "dms_bars_ingested_total{source=\"metrics-test\"} 7",
            "dms_bars_rejected_total{source=\"metrics-test\"} 2",
            "dms_provider_errors_total{source=\"metrics-test\",kind=\"server\"} 1",
            "dms_task_duration_seconds_bucket{kind=\"validate\",outcome=\"completed\",le=\"2.5\"} 1",
            "# HELP dms_bars_ingested_total Bars validated and journaled",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
