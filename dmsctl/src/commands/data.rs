//! What the data commands print: status, series, gaps, bars, the journal.

use dms_common::pb;

use crate::cli::Output;
use crate::output::{Table, count, opt, outln, print_fields, print_json, time_ms, time_s};

pub(crate) fn print_status(s: &pb::DataStatus, out: Output) {
    if out == Output::Json {
        return print_json(s);
    }
    let j = s.journal.clone().unwrap_or_default();
    let mut fields = vec![
        ("store", s.store.clone()),
        ("symbols", opt(s.total_stocks.map(count))),
        ("series", opt(s.total_series.map(count))),
        ("bars", opt(s.total_records.map(count))),
        (
            "range",
            format!(
                "{} .. {}",
                opt(s.earliest_date.clone()),
                opt(s.latest_date.clone())
            ),
        ),
        ("kept series", count(s.kept_series)),
        (
            "journal",
            format!(
                "head {}, {} entries, {} bytes",
                j.head,
                opt(j.entries.map(count)),
                opt(j.bytes.map(count))
            ),
        ),
        (
            "store applied",
            format!(
                "{} (lag {}, {} retries)",
                j.store_applied, j.store_lag, j.store_retries
            ),
        ),
        ("quarantined bars", count(s.quarantined_bars)),
        (
            "dead letters",
            format!(
                "{} entries, {} bars",
                s.dead_letter_entries, s.dead_letter_bars
            ),
        ),
        (
            "bars cache",
            format!("{} hits, {} misses", s.bars_cache_hits, s.bars_cache_misses),
        ),
    ];
    if let Some(e) = &s.store_error {
        fields.push(("store error", e.clone()));
    }
    if let Some(e) = &j.store_last_error {
        fields.push(("store last error", e.clone()));
    }
    if let Some(e) = &j.append_error {
        fields.push(("append error", e.clone()));
    }
    if let Some(b) = &s.backpressure {
        fields.push(("backpressure", b.clone()));
    }
    for p in &s.providers {
        let how = if p.adaptive {
            format!(
                "adaptive within {}..{}{}, {} decreases",
                p.min_requests_per_second,
                p.max_requests_per_second,
                if p.probing { ", probing" } else { "" },
                p.decreases
            )
        } else {
            "fixed".to_owned()
        };
        fields.push((
            "request rate",
            format!("{} {:.2}/s ({how})", p.source, p.requests_per_second),
        ));
    }
    for i in &s.imports {
        fields.push((
            "import",
            format!(
                "{} {}: {} series, {} bars accepted, {} rejected, {} rows skipped",
                i.source,
                i.state,
                i.series,
                count(i.bars_accepted),
                count(i.bars_rejected),
                i.rows_skipped
            ),
        ));
    }
    print_fields(&fields);
}

pub(crate) fn series_label(k: Option<&pb::SeriesKey>) -> (String, String) {
    k.map(|k| (k.symbol.clone(), k.interval.clone()))
        .unwrap_or_default()
}

pub(crate) fn print_series(r: &pb::AdminListSeriesResponse, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut t = Table::new(&[
        "SYMBOL",
        "INTERVAL",
        "BARS",
        "FIRST",
        "LAST",
        "SOURCE",
        "LAST FETCH",
        "OK",
    ]);
    for s in &r.series {
        let (symbol, interval) = series_label(s.series.as_ref());
        t.row(vec![
            symbol,
            interval,
            count(s.count),
            time_s(s.first_ms / 1000),
            time_s(s.last_ms / 1000),
            opt(s.source.clone()),
            time_ms(s.last_fetch_at_ms),
            match s.last_fetch_ok {
                Some(true) => "yes".into(),
                Some(false) => format!("no: {}", opt(s.last_error.clone())),
                None => "-".into(),
            },
        ]);
    }
    t.print();
}

pub(crate) fn print_gaps(r: &pb::GapReport, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let (symbol, interval) = series_label(r.series.as_ref());
    outln!(
        "{symbol} {interval} ({} calendar): {} expected, {} stored, {} missing, checked {} .. {}",
        r.calendar,
        count(r.expected),
        count(r.stored),
        count(r.missing),
        time_ms(r.checked_from_ms),
        time_ms(r.checked_to_ms)
    );
    if !r.gaps.is_empty() {
        let mut t = Table::new(&["START", "END", "MISSING"]);
        for g in &r.gaps {
            t.row(vec![
                time_s(g.start_ms / 1000),
                time_s(g.end_ms / 1000),
                count(g.missing),
            ]);
        }
        t.print();
    }
}

pub(crate) fn print_bars(r: &pb::BarsPage, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut t = Table::new(&[
        "TIME",
        "OPEN",
        "HIGH",
        "LOW",
        "CLOSE",
        "VOLUME",
        "ADJ CLOSE",
    ]);
    for b in &r.bars {
        t.row(vec![
            time_s(b.ts),
            b.open.to_string(),
            b.high.to_string(),
            b.low.to_string(),
            b.close.to_string(),
            b.volume.to_string(),
            opt(b.adj_close),
        ]);
    }
    t.print();
    if let Some(next) = r.next_start {
        eprintln!("more bars follow: --start {}", time_s(next));
    }
}

pub(crate) fn print_journal(r: &pb::JournalStatsResponse, out: Output) {
    if out == Output::Json {
        return print_json(r);
    }
    let mut fields = vec![
        ("history", r.history_id.clone()),
        ("head", r.head.to_string()),
        ("pruned through", r.pruned_through.to_string()),
        ("entries", count(r.entries)),
        ("bytes", count(r.bytes)),
        ("store applied", r.store_applied.to_string()),
        ("pending acks", r.pending_acks.to_string()),
    ];
    if let Some(e) = &r.append_error {
        fields.push(("append error", e.clone()));
    }
    print_fields(&fields);
    outln!();
    let mut t = Table::new(&["CURSOR", "SEQ", "LAG", "PROTECTED", "LAST ACK", "REPAIR"]);
    for cur in &r.cursors {
        t.row(vec![
            cur.name.clone(),
            cur.seq.to_string(),
            r.head.saturating_sub(cur.seq).to_string(),
            if cur.protected {
                "yes".into()
            } else {
                "no".into()
            },
            time_ms(cur.last_ack_ms),
            if cur.needs_repair {
                format!("needed: {}", opt(cur.repair_reason.clone()))
            } else {
                "-".into()
            },
        ]);
    }
    t.print();
}
