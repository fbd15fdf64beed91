//! `dmsctl import FILE`: a file on the master's machine imported as a task (admin
//! `ImportFile`), or its dry run shown: the mapping used, the counts, the first rows as they
//! would be stored and the row problems.

use dms_common::pb;
use serde_json::Value;

use crate::cli::{ImportArgs, Output};
use crate::client::{CliError, Client};
use crate::output::{Table, count, outln, print_json};

/// Row problems a dry run lists in table output (`-o json` has them all).
const SHOWN_PROBLEMS: usize = 50;

pub(crate) async fn import(c: &mut Client, a: ImportArgs, out: Output) -> Result<u8, CliError> {
    let path = std::path::absolute(&a.file)
        .map_err(|e| CliError::usage(format!("{}: {e}", a.file.display())))?;
    let mut columns = std::collections::HashMap::new();
    for m in &a.map {
        let Some((field, column)) = m.split_once('=') else {
            return Err(CliError::usage(format!(
                "--map {m:?}: give FIELD=COLUMN, e.g. --map time=Date"
            )));
        };
        columns.insert(field.trim().to_owned(), column.to_owned());
    }
    let req = pb::ImportFileRequest {
        path: path.display().to_string(),
        format: a.format.unwrap_or_default(),
        columns,
        symbol: a.symbol,
        interval: a.interval,
        volume: a.volume,
        timezone: a.timezone.unwrap_or_default(),
        mode: a.mode.unwrap_or_default(),
        delimiter: a.delimiter.unwrap_or_default(),
        dry_run: a.dry_run,
        preview_rows: a.preview_rows.unwrap_or(0),
        name: a.name.unwrap_or_default(),
    };
    let r = c
        .admin
        .clone()
        .import_file(req)
        .await
        .map_err(|s| c.error(&s))?
        .into_inner();
    match r.result {
        Some(pb::import_file_response::Result::Task(t)) => {
            if a.follow {
                eprintln!("{} queued as {}", t.name, t.task_id);
                return crate::follow::follow(c, &t.task_id, out).await;
            }
            match out {
                Output::Json => print_json(&t),
                Output::Table => outln!("{} queued as {}", t.name, t.task_id),
            }
            Ok(0)
        }
        Some(pb::import_file_response::Result::DryRunJson(json)) => {
            let report: Value = serde_json::from_str(&json)
                .map_err(|e| CliError::failed(format!("the master's dry run is not JSON: {e}")))?;
            match out {
                Output::Json => print_json(&report),
                Output::Table => print_dry_run(&report),
            }
            Ok(0)
        }
        None => Err(CliError::failed("the master answered nothing")),
    }
}

fn print_dry_run(r: &Value) {
    let n = |k: &str| count(r[k].as_u64().unwrap_or(0));
    let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
    outln!(
        "{} ({}, times in {}, mode {}): nothing stored (dry run)",
        s("file"),
        s("format"),
        s("timezone"),
        s("mode")
    );
    if let Some(columns) = r["columns"].as_object() {
        let mapping: Vec<String> = columns
            .iter()
            .map(|(field, column)| format!("{field}={}", column.as_str().unwrap_or("")))
            .collect();
        outln!("columns: {}", mapping.join(" "));
    }
    outln!(
        "{} rows: {} bars of {} series ({} new, {} changed, {} unchanged; {} would be written), {} row problems",
        n("rows"),
        n("bars"),
        n("series"),
        n("bars_new"),
        n("bars_changed"),
        n("bars_unchanged"),
        n("bars_to_write"),
        n("problems_total")
    );
    let preview = r["preview"].as_array().cloned().unwrap_or_default();
    if !preview.is_empty() {
        outln!("");
        let mut t = Table::new(&[
            "ROW", "SYMBOL", "INTERVAL", "TS", "OPEN", "HIGH", "LOW", "CLOSE", "VOLUME", "STORED",
        ]);
        for p in &preview {
            let cell = |k: &str| match &p[k] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            };
            t.row(
                [
                    "row", "symbol", "interval", "ts", "open", "high", "low", "close", "volume",
                    "stored",
                ]
                .map(cell)
                .into(),
            );
        }
        t.print();
    }
    let problems = r["problems"].as_array().cloned().unwrap_or_default();
    if !problems.is_empty() {
        outln!("");
        let mut t = Table::new(&["ROW", "SHEET", "PROBLEM"]);
        for p in problems.iter().take(SHOWN_PROBLEMS) {
            t.row(vec![
                p["row"].to_string(),
                p["sheet"].as_str().unwrap_or("").to_owned(),
                p["reason"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        t.print();
        let total = r["problems_total"].as_u64().unwrap_or(0);
        if total > SHOWN_PROBLEMS as u64 {
            outln!(
                "… and {} more (-o json lists up to 10,000)",
                count(total - SHOWN_PROBLEMS as u64)
            );
        }
    }
}
