//! Crash test for the journal: a child process appends in a loop and reports each seq on stdout
//! only after `append` returned; the parent kills it with SIGKILL mid-stream, reopens the journal
//! and checks that every reported seq is present and intact.
//!
//! This file is its own test harness (`harness = false`): run without arguments it is the parent;
//! `journal_crash child PATH` is the child.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dms_common::journal::{Change, Journal, NewChange, Origin, RetentionPolicy, Seq};
use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};

/// The bars of the entry with sequence number `seq`: deterministic, so the parent can check
/// the content of every entry it was told about.
fn entry_for(seq: u64) -> NewChange {
    let n = 1 + (seq % 200) as i64;
    let bars = (0..n)
        .map(|i| {
            let p = seq as f64 + i as f64 / 1000.0;
            Bar::ohlcv(
                Timestamp(i * 60),
                p,
                p + 1.0,
                p - 1.0,
                p + 0.5,
                (seq * 7) as f64,
            )
        })
        .collect();
    NewChange {
        series: SeriesKey::new(
            Symbol::new(&format!("S{}", seq % 50)).unwrap(),
            Interval::M1,
        ),
        change: Change::Upsert(bars),
        origin: Origin {
            task_id: format!("task-{seq}"),
            source: "crash-test".into(),
        },
    }
}

fn child(path: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let journal = Journal::open(path, RetentionPolicy::default()).unwrap();
        let mut out = std::io::stdout().lock();
        loop {
            let next = journal.head().0 + 1;
            // Alternate single appends and group appends of 3.
            let seqs = if next.is_multiple_of(2) {
                vec![journal.append(entry_for(next)).await.unwrap()]
            } else {
                journal
                    .append_all((next..next + 3).map(entry_for).collect())
                    .await
                    .unwrap()
            };
            for s in seqs {
                writeln!(out, "{}", s.0).unwrap();
            }
            out.flush().unwrap();
        }
    });
}

fn parent() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("state.db");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut reported: Vec<u64> = Vec::new();
    // Three rounds: each kill lands at a different point, and each round continues the history.
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .arg("child")
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let target = 150 + round * 37;
        let started = Instant::now();
        let mut seen = 0;
        while seen < target {
            match lines.next() {
                Some(Ok(l)) => {
                    reported.push(
                        l.trim()
                            .parse()
                            .map_err(|e| format!("bad line {l:?}: {e}"))?,
                    );
                    seen += 1;
                }
                other => return Err(format!("child stopped early: {other:?}")),
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err("child too slow".into());
            }
        }
        // SIGKILL (what `Child::kill` sends on Unix) while it is appending.
        child.kill().map_err(|e| format!("kill failed: {e}"))?;
        let _ = child.wait();
        // Whatever it printed after our last read was also durable; collect it.
        for l in lines.map_while(Result::ok) {
            if let Ok(n) = l.trim().parse() {
                reported.push(n);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let journal = Journal::open(&path, RetentionPolicy::default()).map_err(|e| e.to_string())?;
        let entries = journal
            .read_after(Seq(0), usize::MAX, u64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        let max_reported = *reported.iter().max().ok_or("nothing reported")?;
        if journal.head().0 < max_reported {
            return Err(format!("head {} < last reported {max_reported}", journal.head()));
        }
        // Seqs are dense from 1 to head: nothing lost, nothing reused.
        for (i, e) in entries.iter().enumerate() {
            if e.seq.0 != i as u64 + 1 {
                return Err(format!("entry {i} has seq {}", e.seq));
            }
            let expected = entry_for(e.seq.0);
            if e.change != expected.change || e.series != expected.series || e.origin != expected.origin {
                return Err(format!("entry {} differs from what was appended", e.seq));
            }
        }
        let mut sorted = reported.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != reported.len() {
            return Err("a seq was reported twice (reused after a crash)".into());
        }
        if entries.len() < sorted.len() {
            return Err(format!("{} reported, {} present", sorted.len(), entries.len()));
        }
        eprintln!(
            "journal_survives_sigkill: {} appends reported over 3 kills, {} entries present and intact",
            sorted.len(),
            entries.len()
        );
        Ok(())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(&args[2]);
        return;
    }
    // Accept and ignore the harness flags cargo may pass (e.g. --nocapture, a filter).
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-'));
    let name = "journal_survives_sigkill";
    if filter.is_some_and(|f| !name.contains(f.as_str())) || args.iter().any(|a| a == "--list") {
        if args.iter().any(|a| a == "--list") {
            println!("{name}: test");
        }
        println!("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out");
        return;
    }
    println!("\nrunning 1 test");
    match parent() {
        Ok(()) => {
            println!("test {name} ... ok\n");
            println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        }
        Err(e) => {
            println!("test {name} ... FAILED\n\n{name}: {e}\n");
            println!(
                "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            );
            std::process::exit(101);
        }
    }
}
