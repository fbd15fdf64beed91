//! Export of the sample data over REST in every format and with `dmsctl export`: row counts
//! equal the store's, values equal what `/api/data/bars` serves, the file name says the series
//! and the range, both front ends give the same bytes, a Parquet file reads in Python with
//! pyarrow with exact values and UTC timestamps, bad input is refused naming the parameter, and
//! an empty selection is a valid empty file.

use std::io::{Cursor, Read};
use std::path::Path;
use std::time::Duration;

use dms_e2e::{Dmsctl, MasterProcess, SAMPLE_SOURCE, copy_sample_data, master_config, repo_root};
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(60);

/// One bar as every format must show it: series, RFC 3339 time, the eight values.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    symbol: String,
    interval: String,
    ts: String,
    values: [Option<f64>; 8],
}

const VALUE_NAMES: [&str; 8] = [
    "open",
    "high",
    "low",
    "close",
    "volume",
    "adj_close",
    "turnover",
    "open_interest",
];

/// Every bar of `symbol`/`interval` in the query's range, as `/api/data/bars` serves them.
async fn served(master: &MasterProcess, symbol: &str, interval: &str, range: &str) -> Vec<Row> {
    let path = format!(
        "/api/data/bars?symbol={}&interval={interval}&limit=100000{range}",
        symbol.replace('=', "%3D")
    );
    let (code, page) = master.get(&path).await.unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(page["next_start"].is_null(), "one page holds it: {path}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| Row {
            symbol: symbol.to_owned(),
            interval: interval.to_owned(),
            ts: b["ts"].as_str().unwrap().to_owned(),
            values: VALUE_NAMES.map(|n| b.get(n).map(|v| v.as_f64().unwrap())),
        })
        .collect()
}

/// `GET path`: status, headers, body.
async fn download(
    master: &MasterProcess,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = master.client().get(master.url(path)).send().await.unwrap();
    let (code, headers) = (r.status().as_u16(), r.headers().clone());
    (code, headers, r.bytes().await.unwrap().to_vec())
}

/// `GET path` for a file: asserts 200 and returns its Content-Disposition and body.
async fn export(master: &MasterProcess, path: &str) -> (String, Vec<u8>) {
    let (code, headers, body) = download(master, path).await;
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    let disposition = headers["content-disposition"].to_str().unwrap().to_owned();
    (disposition, body)
}

fn number(text: &str) -> Option<f64> {
    (!text.is_empty()).then(|| text.parse().unwrap())
}

fn csv_rows(body: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(body).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("symbol,interval,ts,open,high,low,close,volume,adj_close,turnover,open_interest")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 11, "{l}");
            Row {
                symbol: f[0].to_owned(),
                interval: f[1].to_owned(),
                ts: f[2].to_owned(),
                values: std::array::from_fn(|i| number(f[3 + i])),
            }
        })
        .collect()
}

fn json_row(v: &Value) -> Row {
    Row {
        symbol: v["symbol"].as_str().unwrap().to_owned(),
        interval: v["interval"].as_str().unwrap().to_owned(),
        ts: v["ts"].as_str().unwrap().to_owned(),
        values: VALUE_NAMES.map(|n| v.get(n).map(|x| x.as_f64().unwrap())),
    }
}

/// Sheet names and, per sheet, its rows of cell texts.
fn xlsx_sheets(body: &[u8]) -> (Vec<String>, Vec<Vec<Vec<String>>>) {
    let mut zip = zip::ZipArchive::new(Cursor::new(body)).unwrap();
    let mut part = |name: &str| {
        let mut text = String::new();
        zip.by_name(name)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let workbook = part("xl/workbook.xml");
    let names: Vec<String> = workbook
        .split("<sheet ")
        .skip(1)
        .map(|s| {
            s.split("name=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let sheets = (1..=names.len())
        .map(|i| {
            part(&format!("xl/worksheets/sheet{i}.xml"))
                .split("<row ")
                .skip(1)
                .map(|row| {
                    row.split("<c ")
                        .skip(1)
                        .map(|c| {
                            let text = c.split("<t>").nth(1).or_else(|| c.split("<v>").nth(1));
                            text.map(|t| t.split('<').next().unwrap().to_owned())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    (names, sheets)
}

/// A sheet's data row as a bar: `ts` is an Excel date-time (days since 1899-12-30, UTC).
fn xlsx_row(cells: &[String]) -> Row {
    let serial: f64 = cells[2].parse().unwrap();
    let secs = ((serial - 25_569.0) * 86_400.0).round() as i64;
    let ts = chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Row {
        symbol: cells[0].clone(),
        interval: cells[1].clone(),
        ts,
        values: std::array::from_fn(|i| cells.get(3 + i).and_then(|v| number(v))),
    }
}

/// What pyarrow reads from a Parquet file (see `tests/scripts/read_parquet.py`). Fails when
/// python3 or pyarrow is missing: `scripts/test.sh` installs pyarrow.
fn pyarrow_read(file: &Path) -> Value {
    let script = repo_root().join("tests/scripts/read_parquet.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to read the Parquet export: {e}"));
    assert!(
        out.status.success(),
        "pyarrow could not read {} (pip install pyarrow; scripts/test.sh does): {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pyarrow_rows(read: &Value) -> Vec<Row> {
    read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            // pyarrow gives a timezone-aware datetime: UTC shows as +00:00.
            let ts = r["ts"].as_str().unwrap();
            let ts = ts
                .strip_suffix("+00:00")
                .unwrap_or_else(|| panic!("not UTC: {ts}"));
            Row {
                symbol: r["symbol"].as_str().unwrap().to_owned(),
                interval: r["interval"].as_str().unwrap().to_owned(),
                ts: format!("{ts}Z"),
                values: VALUE_NAMES.map(|n| r[n].as_f64()),
            }
        })
        .collect()
}

/// A 400 in the JSON envelope whose message names `parameter`.
async fn refused(master: &MasterProcess, query: &str, parameter: &str) {
    let (code, body) = master
        .get(&format!("/api/data/export?{query}"))
        .await
        .unwrap();
    assert_eq!(code, 400, "{query}: {body}");
    assert_eq!(body["success"], false, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(parameter), "{query}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_data_exports_in_every_format_as_the_bars_api_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    copy_sample_data(&dir.path().join("sample-data"));
    let master = MasterProcess::start(dir.path(), &master_config(SAMPLE_SOURCE))
        .await
        .unwrap();
    master.wait_imported(SYNC).await.unwrap();

    // The store's series and counts, and every bar as the bars API serves it, in the export's
    // order (symbol, interval, time).
    let (_, series) = master.get("/api/data/series").await.unwrap();
    let mut series: Vec<(String, String, u64)> = series["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["symbol"].as_str().unwrap().to_owned(),
                s["interval"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    series.sort();
    assert_eq!(series.len(), 3);
    let mut all = Vec::new();
    for (symbol, interval, count) in &series {
        let rows = served(&master, symbol, interval, "").await;
        assert_eq!(rows.len() as u64, *count, "{symbol}");
        all.extend(rows);
    }
    let named = "dms-BTC-USD-1mo+EURUSD=X-1h+GOOG-1d-2004-08-19_2024-12-01";

    // CSV, JSON, JSON Lines: every bar, exact values, the file named after the series and range.
    let (disposition, csv) = export(&master, "/api/data/export?format=csv").await;
    assert_eq!(disposition, format!("attachment; filename=\"{named}.csv\""));
    assert_eq!(csv_rows(&csv), all);
    let (disposition, json) = export(&master, "/api/data/export?format=json").await;
    assert_eq!(
        disposition,
        format!("attachment; filename=\"{named}.json\"")
    );
    let parsed: Vec<Value> = serde_json::from_slice(&json).unwrap();
    assert_eq!(parsed.iter().map(json_row).collect::<Vec<_>>(), all);
    let (_, jsonl) = export(&master, "/api/data/export?format=jsonl").await;
    let lines: Vec<Row> = std::str::from_utf8(&jsonl)
        .unwrap()
        .lines()
        .map(|l| json_row(&serde_json::from_str(l).unwrap()))
        .collect();
    assert_eq!(lines, all);

    // xlsx: one sheet per series with its header, as many rows as the store holds.
    let (disposition, xlsx) = export(&master, "/api/data/export?format=xlsx").await;
    assert_eq!(
        disposition,
        format!("attachment; filename=\"{named}.xlsx\"")
    );
    let (names, sheets) = xlsx_sheets(&xlsx);
    assert_eq!(names, ["BTC-USD 1mo", "EURUSD=X 1h", "GOOG 1d"]);
    for ((_, _, count), sheet) in series.iter().zip(&sheets) {
        assert_eq!(sheet.len() as u64, count + 1, "header and bars");
        assert_eq!(sheet[0][..3], ["symbol", "interval", "ts"]);
    }
    let xlsx_rows: Vec<Row> = sheets
        .iter()
        .flat_map(|s| s[1..].iter().map(|r| xlsx_row(r)))
        .collect();
    assert_eq!(xlsx_rows, all);

    // Parquet, read by pyarrow: typed columns, UTC timestamps, exact values, every bar.
    let (disposition, parquet) = export(&master, "/api/data/export?format=parquet").await;
    assert_eq!(
        disposition,
        format!("attachment; filename=\"{named}.parquet\"")
    );
    let file = dir.path().join("all.parquet");
    std::fs::write(&file, &parquet).unwrap();
    let read = pyarrow_read(&file);
    assert_eq!(
        read["schema"]["ts"], "timestamp[ms, tz=UTC]",
        "{}",
        read["schema"]
    );
    assert_eq!(read["schema"]["symbol"], "string");
    assert_eq!(read["schema"]["open"], "double");
    assert_eq!(read["schema"]["adj_close"], "double");
    assert_eq!(read["compression"], "ZSTD");
    assert_eq!(pyarrow_rows(&read), all);

    // One series in a range, snappy: the name says the range; the bars are the range's.
    let goog_2010 = served(&master, "GOOG", "1d", "&start=2010-01-01&end=2011-01-01").await;
    assert_eq!(goog_2010.len(), 252);
    let path = "/api/data/export?format=parquet&symbols=GOOG&interval=1d&start=2010-01-01&end=2011-01-01&compression=snappy";
    let (disposition, goog_parquet) = export(&master, path).await;
    assert_eq!(
        disposition,
        "attachment; filename=\"dms-GOOG-1d-2010-01-01_2010-12-31.parquet\""
    );
    let file = dir.path().join("goog.parquet");
    std::fs::write(&file, &goog_parquet).unwrap();
    let read = pyarrow_read(&file);
    assert_eq!(read["compression"], "SNAPPY");
    assert_eq!(pyarrow_rows(&read), goog_2010);

    // dmsctl writes the same bytes as REST for the same selection.
    let ctl = Dmsctl::new(&format!("http://127.0.0.1:{}", master.port));
    let out = dir.path().join("ctl-goog.parquet");
    let run = ctl
        .run(&[
            "export",
            "-o",
            out.to_str().unwrap(),
            "-s",
            "GOOG",
            "-i",
            "1d",
            "--start",
            "2010-01-01",
            "--end",
            "2011-01-01",
            "--compression",
            "snappy",
        ])
        .await
        .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("252 bars"), "{run:?}");
    assert_eq!(std::fs::read(&out).unwrap(), goog_parquet);
    for (format, body) in [("csv", &csv), ("xlsx", &xlsx), ("parquet", &parquet)] {
        let out = dir.path().join(format!("ctl-all.{format}"));
        let run = ctl
            .run(&["export", "-o", out.to_str().unwrap()])
            .await
            .unwrap();
        assert_eq!(run.code, 0, "{run:?}");
        assert!(
            run.stdout.contains(&format!("{} bars", all.len())),
            "{run:?}"
        );
        assert!(
            std::fs::read(&out).unwrap() == *body,
            "{format}: dmsctl and REST differ"
        );
    }
    // Leftover temporary files: none.
    let parts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");

    // An empty selection is a valid empty file: Parquet with the schema, CSV with the header.
    let empty = "start=2030-01-01&end=2030-02-01";
    let (disposition, body) =
        export(&master, &format!("/api/data/export?format=parquet&{empty}")).await;
    assert_eq!(
        disposition,
        "attachment; filename=\"dms-BTC-USD-1mo+EURUSD=X-1h+GOOG-1d-2030-01-01_2030-01-31.parquet\""
    );
    let file = dir.path().join("empty.parquet");
    std::fs::write(&file, &body).unwrap();
    let read = pyarrow_read(&file);
    assert_eq!(read["rows"], Value::Array(vec![]));
    assert_eq!(read["schema"]["ts"], "timestamp[ms, tz=UTC]");
    assert_eq!(read["schema"].as_object().unwrap().len(), 11);
    let (_, body) = export(&master, &format!("/api/data/export?format=csv&{empty}")).await;
    assert!(csv_rows(&body).is_empty());

    // Bad input: 400 in the envelope naming the parameter; InvalidArgument (exit 2) in dmsctl.
    refused(&master, "", "`format`").await;
    refused(&master, "format=xls", "`format`").await;
    refused(&master, "format=csv&start=2024-13-01", "`start`").await;
    refused(&master, "format=csv&end=yesterday", "`end`").await;
    refused(
        &master,
        "format=csv&start=2020-01-01&end=2019-01-01",
        "`end`",
    )
    .await;
    refused(&master, "format=csv&symbols=NOPE", "`symbols`").await;
    refused(&master, "format=csv&symbols=GOOG&interval=1h", "`symbols`").await;
    refused(&master, "format=csv&interval=2d", "`interval`").await;
    refused(&master, "format=csv&compression=zstd", "`compression`").await;
    refused(&master, "format=parquet&compression=lz4", "`compression`").await;
    refused(&master, "format=csv&symbol=GOOG", "symbol").await;
    let out = dir.path().join("nope.csv");
    let run = ctl
        .run(&["export", "-o", out.to_str().unwrap(), "-s", "NOPE"])
        .await
        .unwrap();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("`symbols`"), "{run:?}");
    assert!(!out.exists());
    let run = ctl.run(&["export", "-o", "bars.txt"]).await.unwrap();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--format"), "{run:?}");
}
