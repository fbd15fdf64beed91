//! The InfluxDB line-protocol encoder: one point per line,
//! `measurement,tag=value field=value timestamp`, with every name and tag value escaped.
//!
//! Escaping follows the line-protocol rules: a measurement escapes commas and spaces; tag keys,
//! tag values and field keys escape commas, equals signs and spaces. A backslash is written as
//! it is: InfluxDB's parser (1.x, and 2.x which shares it) unescapes only `\,`, `\=` and `\ `,
//! so `\\` would be stored as two backslashes; a backslash right before one of those
//! characters or at the end of the text would escape the separator that follows it, so such
//! text is refused ([`EncodeError::BackslashBeforeSeparator`]), as is text with a line break,
//! which line protocol cannot carry. Floats are written with Rust's shortest round-trip
//! formatting, which InfluxDB parses back to the same bits.

use std::fmt::Write as _;

/// Why a point cannot be encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// Line protocol has no escape for newlines.
    #[error("{what} {text:?} holds a line break, which line protocol cannot carry")]
    LineBreak { what: &'static str, text: String },
    /// A backslash at the end of the text or before a character that must be escaped: the
    /// parser would read it as escaping the separator after it.
    #[error(
        "{what} {text:?} has a backslash at its end or before `,`, `=` or a space, which line protocol cannot carry"
    )]
    BackslashBeforeSeparator { what: &'static str, text: String },
    /// An empty measurement, tag key, tag value or field key.
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    /// InfluxDB stores only finite floats.
    #[error("field {field} is {value}: InfluxDB stores only finite numbers")]
    NotFinite { field: String, value: f64 },
}

/// Appends `text` to `out` with the characters in `special` escaped.
fn escape_into(
    out: &mut String,
    text: &str,
    special: &[char],
    what: &'static str,
) -> Result<(), EncodeError> {
    if text.is_empty() {
        return Err(EncodeError::Empty { what });
    }
    if text.contains(['\n', '\r']) {
        return Err(EncodeError::LineBreak {
            what,
            text: text.to_owned(),
        });
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek().is_none_or(|n| special.contains(n)) {
            return Err(EncodeError::BackslashBeforeSeparator {
                what,
                text: text.to_owned(),
            });
        }
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(())
}

/// A measurement name, escaped.
pub fn escape_measurement(out: &mut String, name: &str) -> Result<(), EncodeError> {
    escape_into(out, name, &[',', ' '], "measurement")
}

/// A tag key, tag value or field key, escaped.
pub fn escape_key(out: &mut String, text: &str, what: &'static str) -> Result<(), EncodeError> {
    escape_into(out, text, &[',', '=', ' '], what)
}

/// Appends one point (a line ending in `\n`) to `out`. Tags are written in the order given
/// (InfluxDB sorts them itself); `fields` with `None` values are left out, and at least one field
/// must be present. `ts` is in the precision of the write (seconds for DMS).
pub fn encode_point(
    out: &mut String,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, Option<f64>)],
    ts: i64,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_point_inner(out, measurement, tags, fields, ts);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_point_inner(
    out: &mut String,
    measurement: &str,
    tags: &[(&str, &str)],
    fields: &[(&str, Option<f64>)],
    ts: i64,
) -> Result<(), EncodeError> {
    escape_measurement(out, measurement)?;
    for (k, v) in tags {
        out.push(',');
        escape_key(out, k, "tag key")?;
        out.push('=');
        escape_key(out, v, "tag value")?;
    }
    let mut first = true;
    for (k, v) in fields {
        let Some(v) = v else { continue };
        if !v.is_finite() {
            return Err(EncodeError::NotFinite {
                field: (*k).to_owned(),
                value: *v,
            });
        }
        out.push(if first { ' ' } else { ',' });
        first = false;
        escape_key(out, k, "field key")?;
        // `{}` on f64 is the shortest text that parses back to the same bits; no `i` suffix,
        // so InfluxDB stores a float even for whole numbers.
        write!(out, "={v}").expect("writing to a String");
    }
    if first {
        return Err(EncodeError::Empty { what: "field set" });
    }
    writeln!(out, " {ts}").expect("writing to a String");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(m: &str, tags: &[(&str, &str)], fields: &[(&str, Option<f64>)]) -> String {
        let mut s = String::new();
        encode_point(&mut s, m, tags, fields, 42).unwrap();
        s
    }

    #[test]
    fn plain_point() {
        assert_eq!(
            point(
                "bars",
                &[("symbol", "AAPL"), ("interval", "1d")],
                &[
                    ("open", Some(1.5)),
                    ("adj_close", None),
                    ("close", Some(2.0))
                ]
            ),
            "bars,symbol=AAPL,interval=1d open=1.5,close=2 42\n"
        );
    }

    #[test]
    fn hostile_names_and_values_are_escaped() {
        assert_eq!(
            point(
                "my bars,x=1",
                &[("sym bol", r#"a,b c"d\e=f'g\\h"#)],
                &[("f=1, x", Some(0.5))]
            ),
            r#"my\ bars\,x=1,sym\ bol=a\,b\ c"d\e\=f'g\\h f\=1\,\ x=0.5 42"#.to_owned() + "\n"
        );
    }

    #[test]
    fn a_backslash_before_a_separator_is_refused() {
        for text in [r"end\", r"a\,b", r"a\=b", r"a\ b", r"a\\"] {
            let mut s = String::new();
            let got = encode_point(&mut s, "bars", &[("symbol", text)], &[("v", Some(1.0))], 1);
            assert!(
                matches!(got, Err(EncodeError::BackslashBeforeSeparator { .. })),
                "{text}: {got:?}"
            );
        }
        let mut s = String::new();
        // In a measurement `=` needs no escape, so a backslash before it is fine.
        encode_point(&mut s, r"m\=", &[], &[("v", Some(1.0))], 1).unwrap();
        assert!(encode_point(&mut s, r"m\ x", &[], &[("v", Some(1.0))], 1).is_err());
    }

    #[test]
    fn line_breaks_empty_text_and_non_finite_values_are_refused() {
        let mut s = String::from("kept\n");
        let f = [("close", Some(1.0))];
        assert!(matches!(
            encode_point(&mut s, "bars", &[("symbol", "A\nB")], &f, 1),
            Err(EncodeError::LineBreak { .. })
        ));
        assert!(matches!(
            encode_point(&mut s, "ba\rrs", &[], &f, 1),
            Err(EncodeError::LineBreak { .. })
        ));
        assert!(matches!(
            encode_point(&mut s, "bars", &[("symbol", "")], &f, 1),
            Err(EncodeError::Empty { .. })
        ));
        assert!(matches!(
            encode_point(&mut s, "bars", &[], &[("close", None)], 1),
            Err(EncodeError::Empty { .. })
        ));
        assert!(matches!(
            encode_point(&mut s, "bars", &[], &[("close", Some(f64::NAN))], 1),
            Err(EncodeError::NotFinite { .. })
        ));
        assert_eq!(s, "kept\n", "a refused point leaves nothing behind");
    }

    #[test]
    fn floats_are_written_in_shortest_round_trip_form() {
        for v in [
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            f64::MAX,
            -0.0,
            104.05999755859375,
            1e21,
            5e-324,
        ] {
            let s = point("m", &[], &[("v", Some(v))]);
            let text = s.trim_end().strip_prefix("m v=").unwrap();
            let text = text.strip_suffix(" 42").unwrap();
            assert_eq!(
                text.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
            assert!(!text.ends_with('i'));
        }
    }
}
