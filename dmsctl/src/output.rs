//! Printing answers: aligned tables and `key  value` lists for people, one JSON document for
//! scripts, and the small formatters both tables use (times, durations, counts).

use std::io::Write;

use serde::Serialize;

/// Writes `text` to stdout. A reader that went away (`dmsctl … | head`) ends the program
/// quietly, as for any Unix filter, instead of a panic.
pub(crate) fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write the answer: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
macro_rules! outln {
    () => { $crate::output::emit("\n") };
    ($($arg:tt)*) => { $crate::output::emit(&format!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;

/// Rows under a header, printed with every column as wide as its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Table {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, trailing spaces trimmed.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut out = String::new();
            for (i, cell) in cells.enumerate() {
                let pad = widths.get(i).copied().unwrap_or(0);
                out.push_str(&format!("{cell:<pad$}  "));
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&mut self.header.iter().copied());
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(&mut row.iter().map(String::as_str)));
            out.push('\n');
        }
        out
    }

    pub(crate) fn print(&self) {
        emit(&self.render());
    }
}

/// `key  value` lines, keys aligned.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        outln!("{k:<width$}  {v}");
    }
}

/// Prints `value` as one pretty JSON document.
pub(crate) fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => outln!("{s}"),
        Err(e) => eprintln!("error: cannot print the answer as JSON: {e}"),
    }
}

/// Unix milliseconds as `2024-01-31 14:30:00Z`; `-` for none.
pub(crate) fn time_ms(ms: Option<i64>) -> String {
    ms.filter(|&m| m != 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Unix seconds as a date (daily bars) or a date-time.
pub(crate) fn time_s(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) if t.time() == chrono::NaiveTime::MIN => t.format("%Y-%m-%d").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        None => secs.to_string(),
    }
}

/// Seconds as `1h02m03s`, `4m05s`, `6s`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "-".into();
    }
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// A count with thousands separators: `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An optional value, `-` for none.
pub(crate) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A size in bytes, in the largest unit that keeps it at least 1 (`812 B`, `3.4 MiB`).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let mut t = Table::new(&["ID", "STATE"]);
        t.row(vec!["replica-1".into(), "in_sync".into()]);
        t.row(vec!["r2".into(), "disconnected".into()]);
        assert_eq!(
            t.render(),
            "ID         STATE\nreplica-1  in_sync\nr2         disconnected\n"
        );
    }

    #[test]
    fn formatters() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(100), "100");
        assert_eq!(duration(3723.0), "1h02m03s");
        assert_eq!(duration(65.0), "1m05s");
        assert_eq!(duration(f64::INFINITY), "-");
        assert_eq!(time_s(1_704_153_600), "2024-01-02");
        assert_eq!(time_ms(Some(1_704_153_600_000)), "2024-01-02 00:00:00Z");
        assert_eq!(time_ms(None), "-");
    }
}
