//! CSV: a header line with the [`super::COLUMNS`], then one line per bar. `ts` in RFC 3339
//! UTC (`2004-08-19T00:00:00Z`), numbers in their shortest form that reads back as the same
//! double (`104.06`, `22351900`), absent optional values empty. Text fields are quoted when
//! they hold a comma, a quote or a line break (a quote doubled), as RFC 4180 has it.

use std::io::Write;

use dms_common::{Bar, SeriesKey};

use super::{COLUMNS, Encoder, ExportError};

/// Writes bars as CSV.
#[derive(Debug)]
pub struct CsvEncoder<W: Write> {
    out: W,
    /// The lines of the page being written.
    buf: Vec<u8>,
}

impl<W: Write + Send> CsvEncoder<W> {
    /// Writes the header line.
    pub fn new(mut out: W) -> Result<Self, ExportError> {
        let mut header = COLUMNS.join(",");
        header.push('\n');
        out.write_all(header.as_bytes())?;
        Ok(CsvEncoder {
            out,
            buf: Vec::with_capacity(1 << 20),
        })
    }
}

impl<W: Write + Send> Encoder for CsvEncoder<W> {
    fn write(&mut self, key: &SeriesKey, bars: &[Bar]) -> Result<(), ExportError> {
        let mut prefix = Vec::new();
        push_field(&mut prefix, key.symbol.as_str());
        prefix.push(b',');
        push_field(&mut prefix, key.interval.as_str());
        prefix.push(b',');
        for b in bars {
            let buf = &mut self.buf;
            buf.extend_from_slice(&prefix);
            push_rfc3339(buf, b.ts.secs());
            for v in [b.open, b.high, b.low, b.close, b.volume] {
                write!(buf, ",{v}")?;
            }
            for v in [b.adj_close, b.turnover, b.open_interest] {
                buf.push(b',');
                if let Some(v) = v {
                    write!(buf, "{v}")?;
                }
            }
            buf.push(b'\n');
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}

/// Appends `text` as a CSV field, quoted when it holds a comma, a quote or a line break.
pub fn push_field(out: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

/// Appends Unix seconds `secs` as RFC 3339 UTC (`2004-08-19T00:00:00Z`), the text of
/// [`dms_common::Timestamp::to_rfc3339`], without going through a formatter for each bar.
pub fn push_rfc3339(out: &mut Vec<u8>, secs: i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        out.extend_from_slice(dms_common::Timestamp(secs).to_rfc3339().as_bytes());
        return;
    }
    let two = |out: &mut Vec<u8>, v: i64| {
        out.push(b'0' + (v / 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, rem / 3600);
    out.push(b':');
    two(out, rem / 60 % 60);
    out.push(b':');
    two(out, rem % 60);
    out.push(b'Z');
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::export::test_bars::{goog, key};
    use dms_common::{Interval, Timestamp};

    fn encode(series: &[(SeriesKey, Vec<Bar>)]) -> String {
        let mut out = Vec::new();
        {
            let mut e: Box<dyn Encoder> = Box::new(CsvEncoder::new(&mut out).unwrap());
            for (k, bars) in series {
                e.write(k, bars).unwrap();
            }
            e.finish().unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bars_are_lines_with_exact_values_and_empty_absent_fields() {
        let text = encode(&[(key("GOOG", Interval::D1), goog())]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "symbol,interval,ts,open,high,low,close,volume,adj_close,turnover,open_interest",
                "GOOG,1d,2004-08-19T00:00:00Z,100,104.06,95.96,100.34,22351900,,,",
                "GOOG,1d,2004-08-20T00:00:00Z,101.01,109.08,100.5,108.31,11428600,54.155,1234567890123456.8,0",
                "GOOG,1d,2004-08-23T00:00:00Z,0.0001234,1000000000000000000000,0.0000001,104.05999755859375,9007199254740992,,,",
            ]
        );
        // Every number reads back as the same double.
        for (line, bar) in lines[1..].iter().zip(goog()) {
            let fields: Vec<&str> = line.split(',').collect();
            let read: Vec<f64> = fields[3..8].iter().map(|f| f.parse().unwrap()).collect();
            assert_eq!(read, [bar.open, bar.high, bar.low, bar.close, bar.volume]);
        }
    }

    #[test]
    fn an_empty_export_is_the_header_alone() {
        assert_eq!(
            encode(&[]),
            "symbol,interval,ts,open,high,low,close,volume,adj_close,turnover,open_interest\n"
        );
    }

    #[test]
    fn text_with_commas_quotes_or_line_breaks_is_quoted() {
        let field = |s: &str| {
            let mut out = Vec::new();
            push_field(&mut out, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(field("GOOG"), "GOOG");
        assert_eq!(field("A,B"), "\"A,B\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("x\ny"), "\"x\ny\"");
        assert_eq!(field("EURUSD=X"), "EURUSD=X");
        // Read back by a CSV parser, the quoted fields are the original text.
        let mut line = Vec::new();
        for (i, s) in ["A,B", "say \"hi\"", "x\ny", "^GSPC"].iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            push_field(&mut line, s);
        }
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_slice());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(
            record.iter().collect::<Vec<_>>(),
            ["A,B", "say \"hi\"", "x\ny", "^GSPC"]
        );
    }

    #[test]
    fn timestamps_match_the_rfc3339_of_the_apis() {
        for secs in [
            0,
            -1,
            951_782_400,   // 2000-02-29
            1_092_873_600, // 2004-08-19
            1_709_164_800, // 2024-02-29
            1_735_689_599,
            4_102_444_800, // 2100-01-01
            -2_208_988_800,
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800, // year 10000: chrono's form
            -62_167_219_201, // before year 0
        ] {
            let mut out = Vec::new();
            push_rfc3339(&mut out, secs);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                Timestamp(secs).to_rfc3339(),
                "{secs}"
            );
        }
    }
}
