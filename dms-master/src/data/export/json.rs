//! JSON: one array of bar objects (`json`), or JSON Lines, one object per line (`jsonl`).
//! Each object has the [`super::COLUMNS`] as keys in that order: `symbol` and `interval` as
//! strings, `ts` in RFC 3339 UTC, the values as numbers written as `/api/data/bars` writes
//! them (shortest form that reads back as the same double); optional values a bar does not
//! have are left out, and a value JSON numbers cannot hold (never in validated bars) is
//! written as text such as `"NaN"`, as [`Bar::to_json`] does.

use std::io::Write;

use dms_common::{Bar, SeriesKey};

use super::csv::push_rfc3339;
use super::{Encoder, ExportError};

/// Writes bars as a JSON array or as JSON Lines.
#[derive(Debug)]
pub struct JsonEncoder<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// JSON Lines rather than one array.
    lines: bool,
    /// Whether an object was written (an array needs commas between them).
    any: bool,
}

impl<W: Write + Send> JsonEncoder<W> {
    /// One JSON array of objects; writes its opening bracket.
    pub fn array(mut out: W) -> Result<Self, ExportError> {
        out.write_all(b"[")?;
        Ok(Self::with(out, false))
    }

    /// JSON Lines: one object per line.
    pub fn lines(out: W) -> Self {
        Self::with(out, true)
    }

    fn with(out: W, lines: bool) -> Self {
        JsonEncoder {
            out,
            buf: Vec::with_capacity(1 << 20),
            lines,
            any: false,
        }
    }
}

/// Appends `v` as a JSON value: a number when JSON can hold it, else text (`"NaN"`).
fn push_number(buf: &mut Vec<u8>, v: f64) -> Result<(), ExportError> {
    if v.is_finite() {
        serde_json::to_writer(&mut *buf, &v).map_err(std::io::Error::other)?;
    } else {
        write!(buf, "\"{v}\"")?;
    }
    Ok(())
}

impl<W: Write + Send> Encoder for JsonEncoder<W> {
    fn write(&mut self, key: &SeriesKey, bars: &[Bar]) -> Result<(), ExportError> {
        // `{"symbol":"GOOG","interval":"1d","ts":"` once per call.
        let mut prefix = b"{\"symbol\":".to_vec();
        serde_json::to_writer(&mut prefix, key.symbol.as_str()).map_err(std::io::Error::other)?;
        prefix.extend_from_slice(b",\"interval\":");
        serde_json::to_writer(&mut prefix, key.interval.as_str()).map_err(std::io::Error::other)?;
        prefix.extend_from_slice(b",\"ts\":\"");
        for b in bars {
            let buf = &mut self.buf;
            if !self.lines && self.any {
                buf.push(b',');
            }
            self.any = true;
            buf.extend_from_slice(&prefix);
            push_rfc3339(buf, b.ts.secs());
            buf.push(b'"');
            for (name, v) in [
                ("open", Some(b.open)),
                ("high", Some(b.high)),
                ("low", Some(b.low)),
                ("close", Some(b.close)),
                ("volume", Some(b.volume)),
                ("adj_close", b.adj_close),
                ("turnover", b.turnover),
                ("open_interest", b.open_interest),
            ] {
                if let Some(v) = v {
                    write!(buf, ",\"{name}\":")?;
                    push_number(buf, v)?;
                }
            }
            buf.push(b'}');
            if self.lines {
                buf.push(b'\n');
            }
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        if !self.lines {
            self.out.write_all(b"]\n")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::export::test_bars::{goog, key};
    use dms_common::Interval;
    use serde_json::Value;

    fn encode(lines: bool, series: &[(SeriesKey, Vec<Bar>)]) -> String {
        let mut out = Vec::new();
        {
            let mut e: Box<dyn Encoder> = if lines {
                Box::new(JsonEncoder::lines(&mut out))
            } else {
                Box::new(JsonEncoder::array(&mut out).unwrap())
            };
            for (k, bars) in series {
                // In two calls, as pages arrive.
                let (a, b) = bars.split_at(1);
                e.write(k, a).unwrap();
                e.write(k, b).unwrap();
            }
            e.finish().unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    /// What `/api/data/bars` shows for the bar, with the series added.
    fn expected(k: &SeriesKey, b: &Bar) -> Value {
        let mut v = b.to_json();
        let m = v.as_object_mut().unwrap();
        m.insert("symbol".into(), k.symbol.as_str().into());
        m.insert("interval".into(), k.interval.as_str().into());
        v
    }

    fn series() -> Vec<(SeriesKey, Vec<Bar>)> {
        let mut btc = goog();
        btc.truncate(2);
        vec![
            (key("GOOG", Interval::D1), goog()),
            (key("BTC-USD", Interval::Mo1), btc),
        ]
    }

    #[test]
    fn an_array_holds_every_bar_as_the_bars_api_shows_it() {
        let text = encode(false, &series());
        let parsed: Vec<Value> = serde_json::from_str(&text).unwrap();
        let want: Vec<Value> = series()
            .iter()
            .flat_map(|(k, bars)| bars.iter().map(|b| expected(k, b)).collect::<Vec<_>>())
            .collect();
        assert_eq!(parsed, want);
        assert!(
            text.starts_with(
                r#"[{"symbol":"GOOG","interval":"1d","ts":"2004-08-19T00:00:00Z","open":100.0,"high":104.06,"#
            ),
            "{text}"
        );
        // Exact values: 104.06 and the large volume read back as the same doubles.
        assert_eq!(parsed[0]["high"].as_f64(), Some(104.06));
        assert_eq!(parsed[2]["volume"].as_f64(), Some(9_007_199_254_740_993.0));
        assert_eq!(
            parsed[1]["turnover"].as_f64(),
            Some(1.234_567_890_123_456_7e15)
        );
        assert!(
            parsed[0].get("adj_close").is_none(),
            "absent values left out"
        );
    }

    #[test]
    fn json_lines_hold_one_object_per_line() {
        let text = encode(true, &series());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        let (k, bars) = &series()[1];
        let last: Value = serde_json::from_str(lines[4]).unwrap();
        assert_eq!(last, expected(k, &bars[1]));
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn empty_exports_are_valid_documents() {
        assert_eq!(encode(false, &[]), "[]\n");
        let v: Value = serde_json::from_str(&encode(false, &[])).unwrap();
        assert_eq!(v, Value::Array(vec![]));
        assert_eq!(encode(true, &[]), "");
    }

    #[test]
    fn non_finite_values_are_text_as_the_bars_api_writes_them() {
        let mut buf = Vec::new();
        push_number(&mut buf, f64::NAN).unwrap();
        buf.push(b' ');
        push_number(&mut buf, f64::INFINITY).unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "\"NaN\" \"inf\"");
    }
}
