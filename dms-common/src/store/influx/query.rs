//! InfluxQL text building: identifiers double-quoted, string literals single-quoted, both
//! escaped, and times as whole seconds clamped to what InfluxDB can represent.

use std::fmt::Write as _;

use crate::time::{TimeRange, Timestamp};

/// The earliest time InfluxDB stores, in whole seconds (its nanosecond clock starts in 1677).
pub const MIN_SECS: i64 = -9_223_372_035;
/// The latest time InfluxDB stores, in whole seconds (its nanosecond clock ends in 2262).
pub const MAX_SECS: i64 = 9_223_372_035;

/// `"name"` with backslashes and double quotes escaped; newlines escaped as `\n`.
pub fn ident(name: &str) -> String {
    quoted(name, '"')
}

/// `'text'` with backslashes and single quotes escaped; newlines escaped as `\n`.
pub fn literal(text: &str) -> String {
    quoted(text, '\'')
}

fn quoted(text: &str, quote: char) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A time clamped into what InfluxDB stores, as an InfluxQL duration literal (`123s`).
pub fn secs(ts: Timestamp) -> String {
    format!("{}s", ts.0.clamp(MIN_SECS, MAX_SECS))
}

/// Whether `ts` is a time InfluxDB can store.
pub fn storable(ts: Timestamp) -> bool {
    (MIN_SECS..=MAX_SECS).contains(&ts.0)
}

/// `WHERE` conditions selecting the points of one series (`tag = value` for each tag) in `range`
/// (half-open), without the `WHERE` keyword.
pub fn series_in_range(tags: &[(&str, &str)], range: TimeRange) -> String {
    let mut out = String::new();
    for (k, v) in tags {
        write!(out, "{} = {} AND ", ident(k), literal(v)).expect("writing to a String");
    }
    // The upper bound is inclusive at MAX_SECS so that a range reaching the end of time
    // includes the last storable second.
    let end = if range.end.0 > MAX_SECS {
        format!("time <= {MAX_SECS}s")
    } else {
        format!("time < {}", secs(range.end))
    };
    write!(out, "time >= {} AND {end}", secs(range.start)).expect("writing to a String");
    out
}

/// A measurement, qualified by its retention policy when one is given (`"rp"."bars"`).
pub fn measurement(retention_policy: Option<&str>, name: &str) -> String {
    match retention_policy {
        Some(rp) => format!("{}.{}", ident(rp), ident(name)),
        None => ident(name),
    }
}

/// The predicate of a v2 delete (`/api/v2/delete`) selecting one series of `measurement`:
/// `_measurement="bars" AND symbol="AAPL" AND ...`, values double-quoted with `"` and `\`
/// escaped. Tag keys are written bare, so they must be plain words (DMS's are).
pub fn delete_predicate(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut out = format!("_measurement={}", quoted(measurement, '"'));
    for (k, v) in tags {
        write!(out, " AND {k}={}", quoted(v, '"')).expect("writing to a String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_escape_their_quotes_and_backslashes() {
        assert_eq!(ident("bars"), r#""bars""#);
        assert_eq!(ident(r#"a"b\c d,e=f'g"#), r#""a\"b\\c d,e=f'g""#);
        assert_eq!(literal("AAPL"), "'AAPL'");
        assert_eq!(literal(r#"a'b\c d,e=f"g"#), r#"'a\'b\\c d,e=f"g'"#);
        assert_eq!(literal("a\nb"), r"'a\nb'");
        // An injection attempt stays inside the literal.
        assert_eq!(
            literal("x' OR 1=1; DROP DATABASE \"dms\" --"),
            r#"'x\' OR 1=1; DROP DATABASE "dms" --'"#
        );
    }

    #[test]
    fn series_conditions_quote_every_tag_and_clamp_times() {
        let range = TimeRange::new(Timestamp(10), Timestamp(20));
        assert_eq!(
            series_in_range(&[("symbol", "BRK.B"), ("interval", "1d")], range),
            r#""symbol" = 'BRK.B' AND "interval" = '1d' AND time >= 10s AND time < 20s"#
        );
        assert_eq!(
            series_in_range(&[], TimeRange::all()),
            format!("time >= {MIN_SECS}s AND time <= {MAX_SECS}s")
        );
        assert_eq!(measurement(Some("r p"), "bars"), r#""r p"."bars""#);
        assert!(storable(Timestamp(0)) && !storable(Timestamp(i64::MAX)));
        assert_eq!(
            delete_predicate("bars", &[("symbol", r#"a"b\c"#), ("interval", "1d")]),
            r#"_measurement="bars" AND symbol="a\"b\\c" AND interval="1d""#
        );
    }
}
