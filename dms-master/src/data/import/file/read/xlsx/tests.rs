//! The xlsx reader's tests: hand-made workbooks and exports read back, the limits of the
//! package checks, and fuzzed workbooks that must never panic.

use std::io::Write;

use super::package::OLE_SIGNATURE;
use super::*;
use crate::data::export::Encoder;
use crate::data::export::xlsx::XlsxEncoder;
use crate::data::import::file::read::{Cell, Record, row_too_long};
use chrono::NaiveDate;
use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
use proptest::prelude::*;
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

fn read_all(path: &Path, columns: &[&str]) -> Result<Vec<Item>, ReadError> {
    read_all_with(path, columns, &Limits::default())
}

fn read_all_with(path: &Path, columns: &[&str], limits: &Limits) -> Result<Vec<Item>, ReadError> {
    super::super::read_items(
        &mut XlsxReader::open(path, &super::super::options(columns), limits)?,
        1000,
    )
}

/// A zip archive of `parts`, each compressed with `method`.
fn archive(parts: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(method)
        .large_file(false);
    for (name, bytes) in parts {
        w.start_file(*name, options).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#;
const PACKAGE_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
const WORKBOOK: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Bars" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
const WORKBOOK_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#;
const SHEET: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:B3"/><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row><row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2"><v>1.5</v></c></row><row r="3"><c r="A3" t="inlineStr"><is><t>AAPL</t></is></c><c r="B3"><v>-2</v></c></row></sheetData></worksheet>"#;

fn shared_strings(unique: &str, strings: &[&str]) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{unique}" uniqueCount="{unique}">"#
    );
    for t in strings {
        s.push_str(&format!("<si><t>{t}</t></si>"));
    }
    s.push_str("</sst>");
    s
}

/// The parts of a small workbook: a sheet "Bars" of symbol and close, with `sst` as its
/// shared strings and `sheet` as its sheet.
fn parts(sst: String, sheet: String) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("[Content_Types].xml", CONTENT_TYPES.into()),
        ("_rels/.rels", PACKAGE_RELS.into()),
        ("xl/workbook.xml", WORKBOOK.into()),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS.into()),
        ("xl/worksheets/sheet1.xml", sheet.into_bytes()),
        ("xl/sharedStrings.xml", sst.into_bytes()),
    ]
}

fn small_workbook(method: CompressionMethod) -> Vec<u8> {
    archive(
        &parts(
            shared_strings("3", &["symbol", "close", "GOOG"]),
            SHEET.to_owned(),
        ),
        method,
    )
}

#[test]
fn an_export_reads_back_sheet_by_sheet_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.xlsx");
    let goog = SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1);
    let eur = SeriesKey::new(Symbol::new("EURUSD=X").unwrap(), Interval::H1);
    let day = NaiveDate::from_ymd_opt(2004, 8, 19).unwrap();
    let t0 = Timestamp::from_date(day);
    let mut b1 = Bar::ohlcv(t0, 49.81, 51.84, 47.80, 49.98, 44_871_361.0);
    b1.adj_close = Some(49.98);
    let b2 = Bar::ohlcv(
        Timestamp(t0.0 + 3_600 * 5 + 7),
        1.0831,
        1.0842,
        1.0829,
        1.084,
        0.0,
    );
    {
        let file = File::create(&path).unwrap();
        let mut e: Box<dyn Encoder> = Box::new(
            XlsxEncoder::new(file, t0.0, crate::data::export::xlsx::MAX_SHEET_ROWS).unwrap(),
        );
        e.write(&eur, &[b2]).unwrap();
        e.write(&goog, &[b1]).unwrap();
        e.finish().unwrap();
    }
    assert_eq!(
        header(&path, &Limits::default()).unwrap()[..4],
        ["symbol", "interval", "ts", "open"]
    );
    let items = read_all(&path, &["symbol", "ts", "close", "adj_close"]).unwrap();
    let record = |sheet: &str, cells| {
        Item::Record(Record {
            row: 2,
            sheet: Some(sheet.into()),
            cells,
        })
    };
    assert_eq!(
        items,
        vec![
            record(
                "EURUSD=X 1h",
                vec![
                    Cell::Text("EURUSD=X".into()),
                    Cell::DateTime(day.and_hms_opt(5, 0, 7).unwrap()),
                    Cell::Float(1.084),
                    Cell::Null
                ]
            ),
            record(
                "GOOG 1d",
                vec![
                    Cell::Text("GOOG".into()),
                    Cell::DateTime(day.and_hms_opt(0, 0, 0).unwrap()),
                    Cell::Float(49.98),
                    Cell::Float(49.98)
                ]
            ),
        ]
    );
    let e = read_all(&path, &["volume", "nope"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sheet \"EURUSD=X 1h\": no column \"nope\""),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_a_workbook_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.xlsx");
    std::fs::write(&path, "a,b\n").unwrap();
    let e = header(&path, &Limits::default()).unwrap_err().to_string();
    assert!(e.contains("x.xlsx: not a readable xlsx workbook"), "{e}");
    let mut ole = OLE_SIGNATURE.to_vec();
    ole.resize(4096, 0);
    std::fs::write(&path, ole).unwrap();
    let e = header(&path, &Limits::default()).unwrap_err().to_string();
    assert!(e.contains("encrypted (password-protected) workbook"), "{e}");
}

#[test]
fn a_hand_made_workbook_reads_and_a_column_wanted_twice_gets_its_value_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.xlsx");
    std::fs::write(&path, small_workbook(CompressionMethod::Deflated)).unwrap();
    assert_eq!(
        header(&path, &Limits::default()).unwrap(),
        ["symbol", "close"]
    );
    let items = read_all(&path, &["close", "symbol", "CLOSE"]).unwrap();
    let record = |row, cells| {
        Item::Record(Record {
            row,
            sheet: Some("Bars".into()),
            cells,
        })
    };
    assert_eq!(
        items,
        vec![
            record(
                2,
                vec![
                    Cell::Float(1.5),
                    Cell::Text("GOOG".into()),
                    Cell::Float(1.5)
                ]
            ),
            record(
                3,
                vec![
                    Cell::Float(-2.0),
                    Cell::Text("AAPL".into()),
                    Cell::Float(-2.0)
                ]
            ),
        ]
    );
}

/// The 622-byte attack: shared strings declaring 10^11 unique strings made calamine
/// reserve room for them (an allocation failure aborts the process).
#[test]
fn shared_strings_declaring_absurd_counts_are_refused_before_calamine_opens_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.xlsx");
    let sst = shared_strings("100000000000", &["symbol", "close", "GOOG"]);
    std::fs::write(
        &path,
        archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
    )
    .unwrap();
    for e in [
        header(&path, &Limits::default()).unwrap_err(),
        XlsxReader::open(
            &path,
            &super::super::options(&["close"]),
            &Limits::default(),
        )
        .unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("100000000000 unique strings, more than the"),
            "{e}"
        );
        assert!(e.contains("bomb.xlsx: not a readable xlsx workbook"), "{e}");
    }
    // More than the part could hold, under the fixed cap.
    let sst = shared_strings("1000", &["symbol", "close", "GOOG"]);
    std::fs::write(
        &path,
        archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Stored),
    )
    .unwrap();
    let e = header(&path, &Limits::default()).unwrap_err().to_string();
    assert!(e.contains("1000 unique strings"), "{e}");
}

#[test]
fn zip_bombs_are_refused_by_declared_size_and_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.xlsx");
    let mut sheet = SHEET.replace("</worksheet>", "");
    sheet.push_str(&" ".repeat(2 << 20));
    sheet.push_str("</worksheet>");
    std::fs::write(
        &path,
        archive(
            &parts(shared_strings("3", &["symbol", "close", "GOOG"]), sheet),
            CompressionMethod::Deflated,
        ),
    )
    .unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 64 << 10);
    // Within the default limits the sheet reads.
    assert_eq!(read_all(&path, &["close"]).unwrap().len(), 2);
    let small = Limits {
        xlsx_entry_bytes: 1 << 20,
        ..Limits::default()
    };
    let e = header(&path, &small).unwrap_err().to_string();
    assert!(
        e.contains("part \"xl/worksheets/sheet1.xml\" is 2097")
            && e.contains("over the limit of 1 MiB"),
        "{e}"
    );
    let ratio = Limits {
        ratio_checked_above: 1 << 20,
        compression_ratio: 100,
        ..Limits::default()
    };
    let e = read_all_with(&path, &["close"], &ratio)
        .unwrap_err()
        .to_string();
    assert!(e.contains("over 100 to 1: a zip bomb?"), "{e}");
}

#[test]
fn parts_read_into_memory_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.xlsx");
    let mut p = parts(
        shared_strings("3", &["symbol", "close", "GOOG"]),
        SHEET.to_owned(),
    );
    let xfs = "<xf numFmtId=\"0\" fontId=\"0\"/>".repeat(5);
    p.push((
        "xl/styles.xml",
        format!(
            "<styleSheet><fonts><font><name val=\"{}\"/></font></fonts><cellXfs>{xfs}</cellXfs></styleSheet>",
            "x".repeat(300)
        )
        .into_bytes(),
    ));
    std::fs::write(&path, archive(&p, CompressionMethod::Deflated)).unwrap();
    assert_eq!(header(&path, &Limits::default()).unwrap().len(), 2);
    let few = Limits {
        xlsx_styles: 4,
        ..Limits::default()
    };
    let e = header(&path, &few).unwrap_err().to_string();
    assert!(e.contains("more than 4 cell formats"), "{e}");
    let short = Limits {
        xlsx_attribute_bytes: 200,
        ..Limits::default()
    };
    let e = header(&path, &short).unwrap_err().to_string();
    assert!(
        e.contains("\"xl/styles.xml\": it has an attribute value longer than 200 bytes"),
        "{e}"
    );
    // A comment could hide a tag from the scan.
    p.last_mut().unwrap().1 = b"<styleSheet><!-- <xf/> --></styleSheet>".to_vec();
    std::fs::write(&path, archive(&p, CompressionMethod::Deflated)).unwrap();
    let e = header(&path, &Limits::default()).unwrap_err().to_string();
    assert!(e.contains("it holds a comment"), "{e}");
}

#[test]
fn rows_longer_than_the_limit_are_refused_without_copying_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.xlsx");
    let long = "y".repeat(2 << 20);
    // A header of a 2 MiB name.
    let sst = shared_strings("3", &[&long, "close", "GOOG"]);
    std::fs::write(
        &path,
        archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
    )
    .unwrap();
    let e = header(&path, &Limits::default()).unwrap_err().to_string();
    assert!(
        e.contains("sheet \"Bars\": the header row: the row is longer than 1 MiB"),
        "{e}"
    );
    assert!(e.len() < 400, "{e}");
    // A data row referring to it: a problem of that row, the rest goes on.
    let sst = shared_strings("3", &["symbol", "close", &long]);
    std::fs::write(
        &path,
        archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
    )
    .unwrap();
    let items = read_all(&path, &["symbol", "close"]).unwrap();
    assert_eq!(
        items[0],
        Item::Problem {
            row: 2,
            sheet: Some("Bars".into()),
            message: row_too_long(&Limits::default()),
        }
    );
    assert_eq!(items.len(), 2);
    // A cell beyond column XFD.
    let sheet = SHEET.replace("B3", "XFE3");
    std::fs::write(
        &path,
        archive(
            &parts(shared_strings("3", &["symbol", "close", "GOOG"]), sheet),
            CompressionMethod::Deflated,
        ),
    )
    .unwrap();
    let e = read_all(&path, &["symbol"]).unwrap_err().to_string();
    assert!(
        e.contains("a cell in column 16385, beyond Excel's last (XFD)"),
        "{e}"
    );
}

use super::super::fuzz;

/// Reads `bytes` as a workbook every way; never panics, and every message is short.
fn read_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.xlsx");
    std::fs::write(&path, bytes).unwrap();
    let limits = Limits::default();
    if let Err(e) = header(&path, &limits) {
        fuzz::short(&e)?;
    }
    fuzz::drain(
        XlsxReader::open(&path, &super::super::options(&["close", "symbol"]), &limits),
        100,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_workbooks_never_panic(mutation in fuzz::mutation(64), stored in any::<bool>()) {
        let base = small_workbook(if stored {
            CompressionMethod::Stored
        } else {
            CompressionMethod::Deflated
        });
        read_every_way(&fuzz::mutate(base, mutation))?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        read_every_way(&bytes)?;
    }
}
