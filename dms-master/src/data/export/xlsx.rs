//! Excel (xlsx): one sheet per series, named after it (`GOOG 1d`), with a header row of the
//! [`super::COLUMNS`] and one row per bar. A sheet holds at most [`MAX_SHEET_ROWS`] rows (its
//! header included), Excel's limit; a longer series continues on further sheets
//! (`EURUSD=X 1m (2)`, …), each with its header. `ts` is an Excel date-time in UTC shown as
//! `yyyy-mm-dd hh:mm:ss`; values are numbers; absent optional values are empty cells.
//!
//! Sheets are written with `rust_xlsxwriter` in constant-memory mode: each row goes to the
//! sheet's temporary file as soon as the next one starts, and the workbook (a zip of them) is
//! assembled when the export ends, streamed to the output as it is compressed. A sheet holds
//! an open temporary file until then, so one export has at most [`MAX_SERIES`] series.

use std::collections::HashSet;
use std::io::Write;

use dms_common::{Bar, SeriesKey};
use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook, Worksheet};

use super::{COLUMNS, Encoder, ExportError};

/// Rows of an xlsx sheet, the header included (Excel's limit).
pub const MAX_SHEET_ROWS: u32 = 1_048_576;
/// Most series in one xlsx export: each sheet keeps a temporary file open until the end.
pub const MAX_SERIES: usize = 1_000;
/// Longest sheet name Excel accepts.
const MAX_NAME_CHARS: usize = 31;
/// Days from Excel's epoch (1899-12-30 in its 1900 date system) to 1970-01-01.
const EXCEL_UNIX_EPOCH_DAYS: f64 = 25_569.0;

/// The sheet being written.
#[derive(Debug)]
struct Sheet {
    key: SeriesKey,
    index: usize,
    /// Its number among the series' sheets, from 1.
    part: u32,
    /// The next row to write.
    row: u32,
}

/// Writes bars as an xlsx workbook.
pub struct XlsxEncoder<W: Write + Send> {
    out: W,
    workbook: Workbook,
    sheet_rows: u32,
    time_format: Format,
    sheet: Option<Sheet>,
    /// Names given so far, lower-cased (Excel compares them without case).
    names: HashSet<String>,
}

impl<W: Write + Send> std::fmt::Debug for XlsxEncoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxEncoder")
            .field("sheet_rows", &self.sheet_rows)
            .field("sheet", &self.sheet)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> XlsxEncoder<W> {
    /// A workbook whose creation time is `created` (Unix seconds) and whose sheets hold at most
    /// `sheet_rows` rows each, the header included (at least 2).
    pub fn new(out: W, created: i64, sheet_rows: u32) -> Result<Self, ExportError> {
        let mut workbook = Workbook::new();
        let created =
            ExcelDateTime::from_timestamp(created).or_else(|_| ExcelDateTime::from_timestamp(0))?;
        workbook.set_properties(
            &DocProperties::new()
                .set_creation_datetime(&created)
                .set_title("DMS bars"),
        );
        Ok(XlsxEncoder {
            out,
            workbook,
            sheet_rows: sheet_rows.clamp(2, MAX_SHEET_ROWS),
            time_format: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
            sheet: None,
            names: HashSet::new(),
        })
    }

    /// Starts sheet `part` of the series `key` with its header row.
    fn new_sheet(&mut self, key: &SeriesKey, part: u32) -> Result<(), ExportError> {
        let name = unique_name(&mut self.names, &sheet_name(key, part));
        let sheet = self.workbook.add_worksheet_with_constant_memory()?;
        sheet.set_name(&name)?;
        write_header(sheet)?;
        let index = self.workbook.worksheets().len() - 1;
        self.sheet = Some(Sheet {
            key: key.clone(),
            index,
            part,
            row: 1,
        });
        Ok(())
    }
}

fn write_header(sheet: &mut Worksheet) -> Result<(), ExportError> {
    for (col, name) in COLUMNS.iter().enumerate() {
        sheet.write_string(0, col as u16, *name)?;
    }
    sheet.set_column_width(2, 20)?;
    sheet.set_freeze_panes(1, 0)?;
    Ok(())
}

/// `GOOG 1d`, `EURUSD=X 1m (2)`: the series' name made fit for a sheet (at most 31 characters,
/// none of `[ ] : * ? / \`, no quote at either end).
pub fn sheet_name(key: &SeriesKey, part: u32) -> String {
    let suffix = if part > 1 {
        format!(" ({part})")
    } else {
        String::new()
    };
    let base: String = format!("{} {}", key.symbol, key.interval)
        .chars()
        .map(|c| match c {
            '[' | ']' | ':' | '*' | '?' | '/' | '\\' => '_',
            c => c,
        })
        .collect();
    let keep = MAX_NAME_CHARS - suffix.chars().count();
    let mut name: String = base.chars().take(keep).collect();
    name.push_str(&suffix);
    let name = name.trim_matches('\'').to_owned();
    if name.eq_ignore_ascii_case("history") || name.is_empty() {
        format!("_{name}")
    } else {
        name
    }
}

/// `name`, or `name~2`, `name~3`, … (shortened to fit) when a sheet already has it.
fn unique_name(names: &mut HashSet<String>, name: &str) -> String {
    let mut candidate = name.to_owned();
    let mut n = 2;
    while names.contains(&candidate.to_lowercase()) {
        let tag = format!("~{n}");
        let keep = MAX_NAME_CHARS - tag.len();
        candidate = format!("{}{tag}", name.chars().take(keep).collect::<String>());
        n += 1;
    }
    names.insert(candidate.to_lowercase());
    candidate
}

impl<W: Write + Send> Encoder for XlsxEncoder<W> {
    fn write(&mut self, key: &SeriesKey, bars: &[Bar]) -> Result<(), ExportError> {
        if self.sheet.as_ref().is_none_or(|s| &s.key != key) {
            self.new_sheet(key, 1)?;
        }
        for b in bars {
            let (index, row, part) = match &self.sheet {
                Some(s) => (s.index, s.row, s.part),
                None => unreachable!("a sheet was started above"),
            };
            let (index, row) = if row >= self.sheet_rows {
                self.new_sheet(key, part + 1)?;
                (self.workbook.worksheets().len() - 1, 1)
            } else {
                (index, row)
            };
            let sheet = self.workbook.worksheet_from_index(index)?;
            sheet.write_string(row, 0, key.symbol.as_str())?;
            sheet.write_string(row, 1, key.interval.as_str())?;
            let serial = EXCEL_UNIX_EPOCH_DAYS + b.ts.secs() as f64 / 86_400.0;
            sheet.write_number_with_format(row, 2, serial, &self.time_format)?;
            for (col, v) in [b.open, b.high, b.low, b.close, b.volume]
                .into_iter()
                .enumerate()
            {
                sheet.write_number(row, 3 + col as u16, v)?;
            }
            for (col, v) in [b.adj_close, b.turnover, b.open_interest]
                .into_iter()
                .enumerate()
            {
                if let Some(v) = v {
                    sheet.write_number(row, 8 + col as u16, v)?;
                }
            }
            if let Some(s) = &mut self.sheet {
                s.row = row + 1;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        if self.workbook.worksheets().is_empty() {
            // An empty selection: one sheet with the header, so the file still says what its
            // columns are.
            let sheet = self.workbook.add_worksheet_with_constant_memory()?;
            sheet.set_name("bars")?;
            write_header(sheet)?;
        }
        let this = &mut *self;
        this.workbook.save_to_writer(&mut this.out)?;
        this.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::export::test_bars::{goog, key};
    use dms_common::{Interval, Timestamp};
    use std::io::Read;

    fn encode(series: &[(SeriesKey, Vec<Bar>)], rows: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut e: Box<dyn Encoder> = Box::new(XlsxEncoder::new(&mut out, 0, rows).unwrap());
            for (k, bars) in series {
                e.write(k, bars).unwrap();
            }
            e.finish().unwrap();
        }
        out
    }

    /// The workbook's sheet names and, per sheet, its rows as cell texts (from the XML).
    fn sheets(bytes: &[u8]) -> (Vec<String>, Vec<Vec<Vec<String>>>) {
        let mut zip = zip_entries(bytes);
        let workbook = zip.remove("xl/workbook.xml").expect("a workbook part");
        let names: Vec<String> = workbook
            .split("<sheet ")
            .skip(1)
            .map(|s| attr(s, "name"))
            .collect();
        let mut all = Vec::new();
        for i in 1..=names.len() {
            let xml = zip
                .remove(&format!("xl/worksheets/sheet{i}.xml"))
                .expect("a sheet part");
            let rows = xml
                .split("<row ")
                .skip(1)
                .map(|row| {
                    row.split("<c ")
                        .skip(1)
                        .map(|c| {
                            if let Some(t) = c.split("<t>").nth(1) {
                                t.split("</t>").next().unwrap().to_owned()
                            } else {
                                c.split("<v>")
                                    .nth(1)
                                    .map(|v| v.split("</v>").next().unwrap().to_owned())
                                    .unwrap_or_default()
                            }
                        })
                        .collect()
                })
                .collect();
            all.push(rows);
        }
        (names, all)
    }

    fn attr(tag: &str, name: &str) -> String {
        let start = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        tag[start..].split('"').next().unwrap().to_owned()
    }

    /// Every stored entry of a zip archive written in streaming mode, as text.
    fn zip_entries(bytes: &[u8]) -> std::collections::HashMap<String, String> {
        use std::io::Cursor;
        let mut archive = ::zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut out = std::collections::HashMap::new();
        for i in 0..archive.len() {
            let mut f = archive.by_index(i).unwrap();
            let mut text = String::new();
            f.read_to_string(&mut text).unwrap();
            out.insert(f.name().unwrap().into_owned(), text);
        }
        out
    }

    #[test]
    fn one_sheet_per_series_with_a_header_and_exact_values() {
        let series = [
            (key("GOOG", Interval::D1), goog()),
            (key("EURUSD=X", Interval::H1), goog()[..1].to_vec()),
        ];
        let (names, sheets) = sheets(&encode(&series, MAX_SHEET_ROWS));
        assert_eq!(names, ["GOOG 1d", "EURUSD=X 1h"]);
        assert_eq!(sheets[0].len(), 4);
        assert_eq!(sheets[0][0], COLUMNS);
        let row = &sheets[0][2];
        assert_eq!(&row[..2], ["GOOG", "1d"]);
        let serial: f64 = row[2].parse().unwrap();
        let secs = ((serial - EXCEL_UNIX_EPOCH_DAYS) * 86_400.0).round() as i64;
        assert_eq!(Timestamp(secs), goog()[1].ts);
        let values: Vec<f64> = row[3..].iter().map(|v| v.parse().unwrap()).collect();
        let b = goog()[1];
        assert_eq!(
            values,
            [
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume,
                b.adj_close.unwrap(),
                b.turnover.unwrap(),
                b.open_interest.unwrap()
            ]
        );
        // The first bar has no optional values: only 8 cells.
        assert_eq!(sheets[0][1].len(), 8);
        assert_eq!(sheets[0][1][4], "104.06");
        assert_eq!(sheets[1].len(), 2);
    }

    #[test]
    fn a_series_longer_than_a_sheet_continues_on_further_sheets() {
        let bars: Vec<Bar> = (0..7)
            .map(|i| Bar::ohlcv(Timestamp(i * 3600), 1.0, 2.0, 0.5, 1.5, i as f64))
            .collect();
        let series = [
            (key("EURUSD=X", Interval::H1), bars),
            (key("GOOG", Interval::D1), goog()[..1].to_vec()),
        ];
        // 3 rows a sheet: the header and two bars.
        let (names, sheets) = sheets(&encode(&series, 3));
        assert_eq!(
            names,
            [
                "EURUSD=X 1h",
                "EURUSD=X 1h (2)",
                "EURUSD=X 1h (3)",
                "EURUSD=X 1h (4)",
                "GOOG 1d"
            ]
        );
        let volumes: Vec<Vec<f64>> = sheets[..4]
            .iter()
            .map(|s| {
                assert_eq!(s[0], COLUMNS, "every sheet has the header");
                s[1..].iter().map(|r| r[7].parse().unwrap()).collect()
            })
            .collect();
        assert_eq!(
            volumes,
            [vec![0.0, 1.0], vec![2.0, 3.0], vec![4.0, 5.0], vec![6.0]]
        );
        assert_eq!(sheets[4].len(), 2);
    }

    #[test]
    fn an_empty_export_is_a_workbook_with_the_header() {
        let (names, sheets) = sheets(&encode(&[], MAX_SHEET_ROWS));
        assert_eq!(names, ["bars"]);
        assert_eq!(sheets[0], vec![COLUMNS.map(String::from).to_vec()]);
    }

    #[test]
    fn sheet_names_fit_excel_rules_and_stay_unique() {
        let k = key("^GSPC", Interval::M5);
        assert_eq!(sheet_name(&k, 1), "^GSPC 5m");
        assert_eq!(sheet_name(&k, 12), "^GSPC 5m (12)");
        let long = key("ABCDEFGHIJKLMNOPQRSTUVWXYZ:*?[]", Interval::Mo1);
        let name = sheet_name(&long, 300);
        assert_eq!(name, "ABCDEFGHIJKLMNOPQRSTUVWXY (300)");
        assert!(name.chars().count() <= 31);
        let odd = key("A:B*", Interval::D1);
        assert_eq!(sheet_name(&odd, 1), "A_B_ 1d");
        let mut names = HashSet::new();
        assert_eq!(unique_name(&mut names, "GOOG 1d"), "GOOG 1d");
        assert_eq!(unique_name(&mut names, "goog 1d"), "goog 1d~2");
        assert_eq!(unique_name(&mut names, "GOOG 1d"), "GOOG 1d~3");
    }

    #[test]
    fn the_same_bars_give_the_same_file() {
        let series = [(key("GOOG", Interval::D1), goog())];
        assert_eq!(
            encode(&series, MAX_SHEET_ROWS),
            encode(&series, MAX_SHEET_ROWS)
        );
    }
}
