//! Domain values as `dms.v1.Admin` messages, and the few requests that convert the other way.
//! The one place where admin protobuf meets the master's types.

use dms_common::journal::Cursor;
use dms_common::{Timestamp, pb};

use crate::api::views::{CatalogRow, DataStatus, ProviderRate, SeriesGaps};
use crate::data::import::source::ImportSummary;
use crate::replication::nodes::{NodeInfo, SessionStats};
use crate::replication::verify::VerifyReport;
use crate::tasks::request::TaskRequest;
use crate::tasks::{Task, TaskCounters, TaskKind, TaskParams, TaskStatus};

/// Unix seconds to Unix milliseconds.
pub fn ms(t: Timestamp) -> i64 {
    t.0.saturating_mul(1000)
}

pub fn task_kind(k: TaskKind) -> pb::TaskKind {
    match k {
        TaskKind::FullImport => pb::TaskKind::Import,
        TaskKind::IncrementalUpdate => pb::TaskKind::Update,
        TaskKind::Backfill => pb::TaskKind::Backfill,
        TaskKind::Validate => pb::TaskKind::Validate,
        TaskKind::SourceImport => pb::TaskKind::SourceImport,
        TaskKind::Migrate => pb::TaskKind::Migrate,
        TaskKind::Check => pb::TaskKind::Check,
        TaskKind::FileImport => pb::TaskKind::FileImport,
        TaskKind::Backup => pb::TaskKind::Backup,
        TaskKind::VerifyBackup => pb::TaskKind::VerifyBackup,
        TaskKind::Restore => pb::TaskKind::Restore,
    }
}

/// The domain kind of a request's kind; `None` for UNSPECIFIED or an unknown value.
pub fn kind_from_pb(raw: i32) -> Option<TaskKind> {
    match pb::TaskKind::try_from(raw).ok()? {
        pb::TaskKind::Unspecified => None,
        pb::TaskKind::Import => Some(TaskKind::FullImport),
        pb::TaskKind::Update => Some(TaskKind::IncrementalUpdate),
        pb::TaskKind::Backfill => Some(TaskKind::Backfill),
        pb::TaskKind::Validate => Some(TaskKind::Validate),
        pb::TaskKind::SourceImport => Some(TaskKind::SourceImport),
        pb::TaskKind::Migrate => Some(TaskKind::Migrate),
        pb::TaskKind::Check => Some(TaskKind::Check),
        pb::TaskKind::FileImport => Some(TaskKind::FileImport),
        pb::TaskKind::Backup => Some(TaskKind::Backup),
        pb::TaskKind::VerifyBackup => Some(TaskKind::VerifyBackup),
        pb::TaskKind::Restore => Some(TaskKind::Restore),
    }
}

pub fn task_status(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Pending => pb::TaskStatus::Pending,
        TaskStatus::Running => pb::TaskStatus::Running,
        TaskStatus::Paused => pb::TaskStatus::Paused,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Partial => pb::TaskStatus::Partial,
        TaskStatus::Failed => pb::TaskStatus::Failed,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

/// The status filter of a listing: `Ok(None)` for UNSPECIFIED, `Err` for an unknown value.
pub fn status_from_pb(raw: i32) -> Result<Option<TaskStatus>, String> {
    match pb::TaskStatus::try_from(raw) {
        Ok(pb::TaskStatus::Unspecified) => Ok(None),
        Ok(pb::TaskStatus::Pending) => Ok(Some(TaskStatus::Pending)),
        Ok(pb::TaskStatus::Running) => Ok(Some(TaskStatus::Running)),
        Ok(pb::TaskStatus::Completed) => Ok(Some(TaskStatus::Completed)),
        Ok(pb::TaskStatus::Paused) => Ok(Some(TaskStatus::Paused)),
        Ok(pb::TaskStatus::Partial) => Ok(Some(TaskStatus::Partial)),
        Ok(pb::TaskStatus::Failed) => Ok(Some(TaskStatus::Failed)),
        Ok(pb::TaskStatus::Cancelled) => Ok(Some(TaskStatus::Cancelled)),
        Err(_) => Err(format!("field `status`: {raw} is not a task status")),
    }
}

/// A StartTask request's parameters as the shared [`TaskRequest`] (checked there).
pub fn task_request(p: Option<pb::TaskParams>) -> TaskRequest {
    let p = p.unwrap_or_default();
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    TaskRequest {
        // A repeated field cannot be absent: none means every kept series.
        symbols: (!p.symbols.is_empty()).then_some(p.symbols),
        interval: p.interval,
        source: p.source,
        start_date: p.start_date,
        end_date: p.end_date,
        skip: p.skip.map(size),
        limit: p.limit.map(size),
        days: p.days,
        only_existing: p.only_existing,
        target: p.target.map(serde_json::Value::String),
        backup: p.backup,
        replica: p.replica,
        dry_run: p.dry_run,
    }
}

fn selection(p: &TaskParams) -> pb::TaskSelection {
    pb::TaskSelection {
        symbols: p
            .symbols
            .iter()
            .flatten()
            .map(|s| s.as_str().to_owned())
            .collect(),
        interval: p.interval.map(|i| i.as_str().to_owned()),
        source: p.source.clone(),
        start_ms: p.start.map(ms),
        end_ms: p.end.map(ms),
        skip: p.skip.map(|n| n as u64),
        limit: p.limit.map(|n| n as u64),
        days: p.days,
        only_existing: p.only_existing,
        file: p.file.as_ref().map(|f| f.file_name.clone()),
        backup: p.backup.clone(),
        dry_run: p.dry_run,
    }
}

fn counters(c: &TaskCounters) -> pb::TaskCounters {
    pb::TaskCounters {
        series_total: c.series_total,
        series_done: c.series_done,
        series_failed: c.series_failed,
        series_skipped: c.series_skipped,
        bars_written: c.bars_written,
        bars_unchanged: c.bars_unchanged,
        bars_rejected: c.bars_rejected,
        requests: c.requests,
        retries: c.retries,
        provider_null_bars: c.provider_null_bars,
        new_actions: c.new_actions,
        gaps_found: c.gaps_found,
        invalid_stored_bars: c.invalid_stored_bars,
        series_resumed: c.series_resumed,
        runs: c.runs,
        worked_secs: c.worked_secs,
        rows_skipped: c.rows_skipped,
        provider_missing: c.provider_missing,
        unreported_actions: c.unreported_actions,
        failed: c
            .failed
            .iter()
            .map(|f| pb::FailedSeries {
                series: f.series.clone(),
                reason: f.reason.clone(),
            })
            .collect(),
        request_rates: c
            .request_rates
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        rows_total: c.rows_total,
        rows_read: c.rows_read,
        pages: c.pages,
        row_problems: c.row_problems.clone(),
        quarantine_file: c.quarantine_file.clone(),
        backup: c.backup.clone(),
        outcome: c.outcome.clone(),
        backup_problems: c
            .verify
            .as_ref()
            .map(|v| v.problems.clone())
            .unwrap_or_default(),
    }
}

pub fn task(t: &Task) -> pb::Task {
    pb::Task {
        task_id: t.id.clone(),
        name: t.name.clone(),
        kind: task_kind(t.kind).into(),
        status: task_status(t.status).into(),
        progress: (t.progress * 10.0).round() / 10.0,
        message: t.message.clone(),
        error: t.error.clone(),
        cancel_requested: t.cancel_requested,
        created_at_ms: t.created_at_ms,
        started_at_ms: t.started_at_ms,
        completed_at_ms: t.completed_at_ms,
        params: Some(selection(&t.params)),
        counters: Some(counters(&t.counters)),
    }
}

pub fn cursor(c: &Cursor) -> pb::JournalCursor {
    pb::JournalCursor {
        name: c.name.clone(),
        seq: c.seq.0,
        needs_repair: c.needs_repair,
        repair_reason: c.repair_reason.clone(),
        updated_at_ms: c.updated_at_ms,
        protected: c.protected,
        history_id: c.history_id.0.clone(),
        last_ack_ms: c.last_ack_ms,
    }
}

fn import(i: &ImportSummary) -> pb::ImportSummary {
    pb::ImportSummary {
        source: i.source.clone(),
        state: i.state.clone(),
        files: i.files,
        series: i.series,
        bars_read: i.bars_read,
        bars_unchanged: i.bars_unchanged,
        bars_accepted: i.bars_accepted,
        bars_rejected: i.bars_rejected,
        rows_skipped: i.rows_skipped,
        failed_files: i.failed_files.clone(),
        row_problems: i.row_problems.clone(),
        last_seq: i.last_seq.0,
        error: i.error.clone(),
    }
}

pub fn data_status(s: &DataStatus) -> pb::DataStatus {
    let date = |t: Option<Timestamp>| t.map(dms_common::read_api::date_of);
    let totals = s.totals.as_ref();
    pb::DataStatus {
        total_stocks: totals.map(|t| t.symbols),
        total_series: totals.map(|t| t.series),
        total_records: totals.map(|t| t.records),
        earliest_date: date(totals.and_then(|t| t.earliest)),
        latest_date: date(totals.and_then(|t| t.latest)),
        store: s.store.to_owned(),
        store_error: s.store_error.clone(),
        journal: Some(pb::JournalStatus {
            head: s.journal_head.0,
            entries: s.journal.map(|j| j.entries),
            bytes: s.journal.map(|j| j.bytes),
            append_error: s.append_error.clone(),
            store_applied: s.applier.applied_seq.0,
            store_lag: s.store_lag(),
            store_retries: s.applier.retries,
            store_last_error: s.applier.last_error.clone(),
            cursors: s.cursors.iter().map(cursor).collect(),
        }),
        quarantined_bars: s.quarantined_bars,
        dead_letter_entries: s.dead_letter_entries,
        dead_letter_bars: s.dead_letter_bars,
        backpressure: s.backpressure.clone(),
        kept_series: s.kept_series as u64,
        imports: s.imports.iter().map(import).collect(),
        bars_cache_hits: s.bars_cache_hits,
        bars_cache_misses: s.bars_cache_misses,
        providers: s.providers.iter().map(provider_rate).collect(),
    }
}

fn provider_rate(p: &ProviderRate) -> pb::ProviderRate {
    pb::ProviderRate {
        source: p.source.clone(),
        adaptive: p.rate.adaptive,
        requests_per_second: p.rate.requests_per_second,
        min_requests_per_second: p.rate.min_requests_per_second,
        max_requests_per_second: p.rate.max_requests_per_second,
        probing: p.rate.probing,
        decreases: p.rate.decreases,
    }
}

pub fn catalog_series(r: &CatalogRow) -> pb::CatalogSeries {
    let c = r.catalog.as_ref();
    pb::CatalogSeries {
        series: Some((&r.overview.key).into()),
        count: r.overview.count,
        first_ms: ms(r.overview.first),
        last_ms: ms(r.overview.last),
        source: r.source.clone(),
        last_fetch_at_ms: c.and_then(|c| c.last_fetch_at_ms),
        last_fetch_ok: c.and_then(|c| c.last_fetch_ok),
        last_error: c.and_then(|c| c.last_error.clone()),
        provisional_from_ms: c.and_then(|c| c.provisional_from).map(ms),
    }
}

pub fn gap_report(g: &SeriesGaps) -> pb::GapReport {
    let r = &g.report;
    pb::GapReport {
        series: Some((&r.series).into()),
        calendar: g.calendar.clone(),
        checked_from_ms: r.checked.map(|c| ms(c.0)),
        checked_to_ms: r.checked.map(|c| ms(c.1)),
        expected: r.expected,
        stored: r.stored,
        missing: r.missing,
        gaps: r
            .gaps
            .iter()
            .map(|g| pb::Gap {
                start_ms: ms(g.start),
                end_ms: ms(g.end),
                missing: g.missing,
            })
            .collect(),
        provider_missing_ms: r.provider_missing.iter().map(|t| ms(*t)).collect(),
    }
}

/// A replica's repair as its session recorded it (the JSON of `pb::RepairSummary`).
fn repair(v: &serde_json::Value) -> pb::RepairSummary {
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let t = |k: &str| v[k].as_i64().unwrap_or(0);
    pb::RepairSummary {
        reason: v["reason"].as_str().unwrap_or_default().to_owned(),
        started_ms: t("started_ms"),
        finished_ms: t("finished_ms"),
        series_compared: n("series_compared"),
        series_differing: n("series_differing"),
        buckets_compared: n("buckets_compared"),
        buckets_pulled: n("buckets_pulled"),
        bars_pulled: n("bars_pulled"),
        series_removed: n("series_removed"),
    }
}

pub fn session(s: &SessionStats) -> pb::NodeSession {
    pb::NodeSession {
        id: s.id,
        connected_ms: s.connected_ms,
        disconnected_ms: s.disconnected_ms,
        start_seq: s.start_seq,
        last_sent_seq: s.last_sent_seq,
        last_acked_seq: s.last_acked_seq,
        batches: s.batches,
        bars: s.bars,
        bytes: s.bytes,
        repair_reason: s.repair_reason.clone(),
        repair: s.repair.as_ref().map(repair),
        end_reason: s.end_reason.clone(),
    }
}

pub fn node(n: &NodeInfo) -> pb::Node {
    let state = serde_json::to_value(n.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    pb::Node {
        node_id: n.node_id.clone(),
        http_address: n.http_address.clone(),
        state,
        first_seen_ms: n.first_seen_ms,
        last_contact_ms: n.last_contact_ms,
        last_error: n.last_error.clone(),
        cursor: n.cursor,
        lag_seq: n.lag_seq,
        lag_seconds: n.lag_seconds,
        needs_repair: n.needs_repair,
        repair_reason: n.repair_reason.clone(),
        session: n.session.as_ref().map(session),
    }
}

pub fn verify_report(r: &VerifyReport) -> pb::NodeVerifyReport {
    pb::NodeVerifyReport {
        node_id: r.node_id.clone(),
        replica_cursor: r.replica_cursor,
        master_store_applied: r.master_store_applied,
        caught_up: r.caught_up,
        series_total: r.series_total as u64,
        series_equal: r.series_equal as u64,
        series_diverged: r.series_diverged as u64,
        buckets_compared: r.buckets_compared,
        buckets_equal: r.buckets_equal,
        buckets_diverged: r.buckets_diverged,
        bars_master: r.bars_master,
        bars_replica: r.bars_replica,
        diverged: r
            .diverged
            .iter()
            .map(|d| pb::DivergedBucket {
                series: Some(pb::SeriesKey {
                    symbol: d.symbol.clone(),
                    interval: d.interval.clone(),
                }),
                start: d.start,
                master_count: d.master_count,
                replica_count: d.replica_count,
            })
            .collect(),
        equal: r.equal,
        elapsed_ms: r.elapsed_ms,
    }
}

/// A schedule run for the admin API.
pub fn schedule_run(r: &crate::ops::schedule::RunRecord) -> pb::ScheduleRun {
    pb::ScheduleRun {
        scheduled_for_ms: r.scheduled_for.timestamp_millis(),
        started_at_ms: r.started_at.timestamp_millis(),
        outcome: r.outcome.as_str().to_owned(),
        task_id: r.task_id.clone(),
        message: r.message.clone(),
    }
}

/// A schedule for the admin API.
pub fn schedule(s: &crate::ops::schedule::ScheduleView) -> pb::Schedule {
    pb::Schedule {
        name: s.name.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        kind: s.kind.as_str().to_owned(),
        paused: s.paused,
        next_fires_ms: s.next_fires.iter().map(|t| t.timestamp_millis()).collect(),
        last_run: s.last_run.as_ref().map(schedule_run),
    }
}

/// An export's events as `ExportChunk` messages: `info` in the first, `done` in the last; an
/// error ends the stream with a status instead.
pub fn export_chunks(
    stream: crate::data::export::ExportStream,
    info: pb::ExportInfo,
) -> impl futures::Stream<Item = Result<pb::ExportChunk, tonic::Status>> + Send + 'static {
    use crate::data::export::{ExportError, ExportEvent};
    futures::stream::unfold((stream, Some(info)), |(mut stream, mut info)| async move {
        let chunk = match stream.next().await? {
            Ok(ExportEvent::Data(c)) => Ok(pb::ExportChunk {
                data: c.data.to_vec(),
                bars: c.bars,
                info: info.take(),
                done: false,
            }),
            Ok(ExportEvent::Done { bars, .. }) => Ok(pb::ExportChunk {
                data: Vec::new(),
                bars,
                info: info.take(),
                done: true,
            }),
            Err(e @ ExportError::Store(_)) => Err(tonic::Status::unavailable(e.to_string())),
            Err(e) => Err(tonic::Status::internal(e.to_string())),
        };
        Some((chunk, (stream, info)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_round_trip() {
        for k in TaskKind::ALL {
            assert_eq!(kind_from_pb(task_kind(k).into()), Some(k));
        }
        assert_eq!(kind_from_pb(0), None);
        assert_eq!(kind_from_pb(99), None);
        for s in TaskStatus::ALL {
            assert_eq!(status_from_pb(task_status(s).into()), Ok(Some(s)));
        }
        assert_eq!(status_from_pb(0), Ok(None));
        assert!(
            status_from_pb(42)
                .unwrap_err()
                .starts_with("field `status`")
        );
    }

    #[test]
    fn an_empty_symbol_list_selects_everything() {
        let r = task_request(Some(pb::TaskParams::default()));
        assert_eq!(r, TaskRequest::default());
        let r = task_request(Some(pb::TaskParams {
            symbols: vec!["AAPL".into()],
            days: Some(3),
            ..Default::default()
        }));
        assert_eq!(r.symbols, Some(vec!["AAPL".to_owned()]));
        assert_eq!(r.days, Some(3));
    }
}
