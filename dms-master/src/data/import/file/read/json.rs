//! JSON: a file holding one array of objects ([`JsonArrayReader`]), or JSON Lines, one object
//! per line ([`JsonLinesReader`]; blank lines are skipped). Each object is a row, its keys the
//! columns (matched like [`super::resolve_columns`]: exactly, then without regard to case); a
//! key an object lacks is a null cell. Values: null → [`Cell::Null`], a boolean → [`Cell::Bool`],
//! an integer → [`Cell::Int`], another number → [`Cell::Float`] (read exactly), a string →
//! [`Cell::Text`] (trimmed; empty → null). An array or object as a wanted value, an element that
//! is not an object, or a line that is not JSON is a problem of that row; the rest goes on.
//!
//! The array is read one element at a time: a scanner finds where each element ends (strings
//! and nesting followed), so memory holds one element, whatever the size of the file. An
//! element or a line is at most [`Limits::row_bytes`]: a longer one is a problem of its row,
//! skipped without being buffered (or, for the first one, which [`header`] reads, an error).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{
    Cell, Item, Limits, ReadError, ReadOptions, Record, RecordReader, excerpt, item_bytes,
    row_too_long,
};

/// An element or a line: its bytes, or that it was longer than the limit (it was skipped,
/// never buffered whole).
#[derive(Debug)]
enum Chunk {
    Bytes(Vec<u8>),
    TooLong,
}

/// Finds the wanted keys in objects.
#[derive(Debug)]
struct Keys {
    wanted: Vec<String>,
}

impl Keys {
    fn cells(&self, row: u64, object: &Map<String, Value>) -> Item {
        let mut cells = Vec::with_capacity(self.wanted.len());
        for w in &self.wanted {
            let value = object.get(w.as_str()).or_else(|| {
                object
                    .iter()
                    .find(|(k, _)| k.trim() == w || k.trim().eq_ignore_ascii_case(w))
                    .map(|(_, v)| v)
            });
            let cell = match value {
                None | Some(Value::Null) => Cell::Null,
                Some(Value::Bool(b)) => Cell::Bool(*b),
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(i) => Cell::Int(i),
                    None => n.as_f64().map_or(Cell::Null, Cell::Float),
                },
                Some(Value::String(s)) if s.trim().is_empty() => Cell::Null,
                Some(Value::String(s)) => Cell::Text(s.trim().to_owned()),
                Some(Value::Array(_) | Value::Object(_)) => {
                    return Item::Problem {
                        row,
                        sheet: None,
                        message: format!(
                            "key {:?} holds an array or an object, not a value",
                            excerpt(w)
                        ),
                    };
                }
            };
            cells.push(cell);
        }
        Item::Record(Record {
            row,
            sheet: None,
            cells,
        })
    }

    fn item(&self, row: u64, text: &[u8]) -> Item {
        match serde_json::from_slice::<Value>(text) {
            Ok(Value::Object(o)) => self.cells(row, &o),
            Ok(_) => Item::Problem {
                row,
                sheet: None,
                message: "not a JSON object".into(),
            },
            Err(e) => Item::Problem {
                row,
                sheet: None,
                message: excerpt(&format!("not JSON: {e}")),
            },
        }
    }

    fn chunk_item(&self, row: u64, chunk: &Chunk, limits: &Limits) -> Item {
        match chunk {
            Chunk::Bytes(b) => self.item(row, b),
            Chunk::TooLong => Item::Problem {
                row,
                sheet: None,
                message: row_too_long(limits),
            },
        }
    }
}

fn keys(options: &ReadOptions) -> Keys {
    Keys {
        wanted: options
            .columns
            .iter()
            .map(|c| c.trim().to_owned())
            .collect(),
    }
}

/// The keys of a JSON object, in the order written.
fn key_order(text: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    struct Keys(Vec<String>);
    impl<'de> serde::de::Visitor<'de> for &mut Keys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    let mut keys = Keys(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(text);
    serde::Deserializer::deserialize_map(&mut de, &mut keys)?;
    Ok(keys.0)
}

/// The keys of the first object of `path` (an array's first element, or the first line).
pub fn header(path: &Path, lines: bool, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let first = if lines {
        let mut lines = Lines::open(path, limits)?;
        let mut found = None;
        while let Some((n, line)) = lines.next_line()? {
            match line {
                Chunk::TooLong => {
                    return Err(ReadError::format(
                        path,
                        format!("line {n}: {}", row_too_long(limits)),
                    ));
                }
                Chunk::Bytes(b) if b.iter().all(u8::is_ascii_whitespace) => {}
                Chunk::Bytes(b) => {
                    found = Some(b);
                    break;
                }
            }
        }
        found
    } else {
        let mut scanner = Scanner::open(path, limits)?;
        match scanner.next_element()? {
            Some(Chunk::TooLong) => {
                return Err(ReadError::format(
                    path,
                    format!("the first element: {}", row_too_long(limits)),
                ));
            }
            Some(Chunk::Bytes(b)) => Some(b),
            None => None,
        }
    };
    let first = first.ok_or_else(|| ReadError::format(path, "the file holds no object"))?;
    key_order(&first).map_err(|e| {
        ReadError::format(
            path,
            excerpt(&format!("the first element is not an object: {e}")),
        )
    })
}

/// Finds the elements of a JSON array in a byte stream.
struct Scanner {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    /// Bytes consumed, for messages.
    offset: u64,
    started: bool,
    done: bool,
    /// Bytes of an element at most.
    max: usize,
}

impl Scanner {
    fn open(path: &Path, limits: &Limits) -> Result<Scanner, ReadError> {
        let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
        Ok(Scanner {
            path: path.to_owned(),
            input: BufReader::with_capacity(1 << 20, Box::new(file)),
            offset: 0,
            started: false,
            done: false,
            max: limits.row_bytes,
        })
    }

    fn peek(&mut self) -> Result<Option<u8>, ReadError> {
        let buf = self
            .input
            .fill_buf()
            .map_err(|e| ReadError::io(&self.path, e))?;
        Ok(buf.first().copied())
    }

    fn bump(&mut self) {
        self.input.consume(1);
        self.offset += 1;
    }

    fn skip_space(&mut self) -> Result<Option<u8>, ReadError> {
        loop {
            match self.peek()? {
                Some(b) if b.is_ascii_whitespace() => self.bump(),
                // A UTF-8 byte order mark before the array.
                Some(0xEF | 0xBB | 0xBF) if !self.started => self.bump(),
                other => return Ok(other),
            }
        }
    }

    fn syntax(&self, what: &str) -> ReadError {
        ReadError::format(
            &self.path,
            format!(
                "not a JSON array of objects: {what} at byte {}",
                self.offset
            ),
        )
    }

    /// The bytes of the next element (or, past the limit, that it was too long: the rest of it
    /// is skipped); None after the closing bracket.
    fn next_element(&mut self) -> Result<Option<Chunk>, ReadError> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            match self.skip_space()? {
                Some(b'[') => self.bump(),
                None => return Err(self.syntax("the file is empty")),
                Some(_) => return Err(self.syntax("no opening [")),
            }
            self.started = true;
            if self.skip_space()? == Some(b']') {
                self.bump();
                self.done = true;
                return Ok(None);
            }
        } else {
            match self.skip_space()? {
                Some(b',') => self.bump(),
                Some(b']') => {
                    self.bump();
                    self.done = true;
                    return Ok(None);
                }
                None => return Err(self.syntax("the array is not closed")),
                Some(_) => return Err(self.syntax("a , or ] expected")),
            }
        }
        if self.skip_space()?.is_none() {
            return Err(self.syntax("the array is not closed"));
        }
        let mut out = Vec::new();
        let mut too_long = false;
        let (mut depth, mut in_string, mut escaped) = (0i64, false, false);
        loop {
            let Some(b) = self.peek()? else {
                return Err(self.syntax("the file ends inside an element"));
            };
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth == 0 => break,
                    b'}' | b']' => depth -= 1,
                    b',' if depth == 0 => break,
                    _ => {}
                }
            }
            if out.len() < self.max {
                out.push(b);
            } else if !too_long {
                too_long = true;
                out = Vec::new();
            }
            self.bump();
            if depth == 0 && !in_string && matches!(b, b'}' | b']') {
                break;
            }
        }
        Ok(Some(if too_long {
            Chunk::TooLong
        } else {
            Chunk::Bytes(out)
        }))
    }
}

/// The lines of a file, each at most a limit long: the rest of a longer line is skipped
/// without being buffered.
struct Lines {
    path: PathBuf,
    input: BufReader<File>,
    /// Lines read.
    line: u64,
    max: usize,
}

impl Lines {
    fn open(path: &Path, limits: &Limits) -> Result<Lines, ReadError> {
        let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
        Ok(Lines {
            path: path.to_owned(),
            input: BufReader::with_capacity(1 << 20, file),
            line: 0,
            max: limits.row_bytes,
        })
    }

    /// The next line (without its line break) and its number; None at the end of the file.
    fn next_line(&mut self) -> Result<Option<(u64, Chunk)>, ReadError> {
        let mut out = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let buf = self
                .input
                .fill_buf()
                .map_err(|e| ReadError::io(&self.path, e))?;
            if buf.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if !too_long {
                if out.len() + take <= self.max {
                    out.extend_from_slice(&buf[..take]);
                } else {
                    too_long = true;
                    out = Vec::new();
                }
            }
            self.input.consume(take + usize::from(end));
            if end {
                break;
            }
        }
        self.line += 1;
        let chunk = if too_long {
            Chunk::TooLong
        } else {
            Chunk::Bytes(out)
        };
        Ok(Some((self.line, chunk)))
    }
}

/// Reads a file holding one JSON array of objects.
pub struct JsonArrayReader {
    scanner: Scanner,
    keys: Keys,
    /// Elements read.
    row: u64,
    limits: Limits,
}

impl std::fmt::Debug for JsonArrayReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonArrayReader")
            .field("path", &self.scanner.path)
            .field("row", &self.row)
            .finish_non_exhaustive()
    }
}

impl JsonArrayReader {
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<JsonArrayReader, ReadError> {
        Ok(JsonArrayReader {
            scanner: Scanner::open(path, limits)?,
            keys: keys(options),
            row: 0,
            limits: limits.clone(),
        })
    }
}

impl RecordReader for JsonArrayReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut bytes = 0;
        for _ in 0..max {
            if bytes >= self.limits.batch_bytes {
                break;
            }
            let Some(element) = self.scanner.next_element()? else {
                break;
            };
            self.row += 1;
            let item = self.keys.chunk_item(self.row, &element, &self.limits);
            bytes += item_bytes(&item);
            out.push(item);
            added = true;
        }
        Ok(added)
    }
}

/// Reads JSON Lines: one object per line.
pub struct JsonLinesReader {
    lines: Lines,
    keys: Keys,
    limits: Limits,
}

impl std::fmt::Debug for JsonLinesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesReader")
            .field("path", &self.lines.path)
            .field("line", &self.lines.line)
            .finish_non_exhaustive()
    }
}

impl JsonLinesReader {
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<JsonLinesReader, ReadError> {
        Ok(JsonLinesReader {
            lines: Lines::open(path, limits)?,
            keys: keys(options),
            limits: limits.clone(),
        })
    }
}

impl RecordReader for JsonLinesReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut taken = 0;
        let mut bytes = 0;
        while taken < max && bytes < self.limits.batch_bytes {
            let Some((n, line)) = self.lines.next_line()? else {
                break;
            };
            if let Chunk::Bytes(b) = &line
                && b.iter().all(u8::is_ascii_whitespace)
            {
                continue;
            }
            let item = self.keys.chunk_item(n, &line, &self.limits);
            bytes += item_bytes(&item);
            out.push(item);
            added = true;
            taken += 1;
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::options;

    fn limits() -> Limits {
        Limits::default()
    }

    fn read_all(reader: &mut dyn RecordReader) -> Vec<Item> {
        super::super::read_items(reader, 2).unwrap()
    }

    fn record(row: u64, cells: Vec<Cell>) -> Item {
        Item::Record(Record {
            row,
            sheet: None,
            cells,
        })
    }

    #[test]
    fn an_array_is_read_element_by_element() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(
            &path,
            "\u{feff} [ {\"ts\": \"2024-01-02\", \"Close\": 104.06, \"n\": \"a ] , { \\\" \"},\n\
             {\"ts\": \"2024-01-03\", \"close\": 7, \"extra\": [1, {\"x\": \"]\"}]},\n\
             42, {\"ts\": null, \"close\": {\"v\": 1}} ]",
        )
        .unwrap();
        assert_eq!(
            header(&path, false, &limits()).unwrap(),
            vec!["ts", "Close", "n"]
        );
        let mut r =
            JsonArrayReader::open(&path, &options(&["close", "ts", "missing"]), &limits()).unwrap();
        let items = read_all(&mut r);
        assert_eq!(
            items[..2],
            [
                record(
                    1,
                    vec![
                        Cell::Float(104.06),
                        Cell::Text("2024-01-02".into()),
                        Cell::Null
                    ]
                ),
                record(
                    2,
                    vec![Cell::Int(7), Cell::Text("2024-01-03".into()), Cell::Null]
                ),
            ]
        );
        assert_eq!(
            items[2],
            Item::Problem {
                row: 3,
                sheet: None,
                message: "not a JSON object".into()
            }
        );
        match &items[3] {
            Item::Problem {
                row: 4, message, ..
            } => assert!(message.contains("\"close\""), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn broken_arrays_are_refused_with_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, "[{\"a\": 1} {\"a\": 2}]").unwrap();
        let mut r = JsonArrayReader::open(&path, &options(&["a"]), &limits()).unwrap();
        let mut items = Vec::new();
        let e = loop {
            match r.next_batch(1, &mut items) {
                Ok(true) => {}
                Ok(false) => panic!("no error"),
                Err(e) => break e.to_string(),
            }
        };
        assert!(e.contains("a , or ] expected at byte 10"), "{e}");
        std::fs::write(&path, "{\"a\": 1}").unwrap();
        let e = header(&path, false, &limits()).unwrap_err().to_string();
        assert!(e.contains("no opening ["), "{e}");
        std::fs::write(&path, "[]").unwrap();
        assert!(
            header(&path, false, &limits())
                .unwrap_err()
                .to_string()
                .contains("no object")
        );
    }

    #[test]
    fn lines_are_objects_and_a_bad_line_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            "{\"symbol\": \"GOOG\", \"close\": 1.5}\n\n{oops\n{\"symbol\": \"AAPL\", \"close\": -2, \"ok\": true}\n",
        )
        .unwrap();
        assert_eq!(
            header(&path, true, &limits()).unwrap(),
            vec!["symbol", "close"]
        );
        let mut r =
            JsonLinesReader::open(&path, &options(&["symbol", "close", "ok"]), &limits()).unwrap();
        let items = read_all(&mut r);
        assert_eq!(
            items[0],
            record(
                1,
                vec![Cell::Text("GOOG".into()), Cell::Float(1.5), Cell::Null]
            )
        );
        assert!(
            matches!(&items[1], Item::Problem { row: 3, message, .. } if message.starts_with("not JSON"))
        );
        assert_eq!(
            items[2],
            record(
                4,
                vec![Cell::Text("AAPL".into()), Cell::Int(-2), Cell::Bool(true)]
            )
        );
    }

    #[test]
    fn elements_and_lines_longer_than_the_limit_are_problems_of_their_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        let long = "9".repeat(2 << 20);
        std::fs::write(
            &path,
            format!("[{{\"close\": 1}}, {{\"close\": \"{long}\", \"n\": [{{\"]\": 1}}]}}, {{\"close\": 3}}]"),
        )
        .unwrap();
        let mut r = JsonArrayReader::open(&path, &options(&["close"]), &limits()).unwrap();
        let items = read_all(&mut r);
        assert_eq!(
            items,
            vec![
                record(1, vec![Cell::Int(1)]),
                Item::Problem {
                    row: 2,
                    sheet: None,
                    message: row_too_long(&limits())
                },
                record(3, vec![Cell::Int(3)]),
            ]
        );
        std::fs::write(&path, format!("[{{\"{long}\": 1}}]")).unwrap();
        let e = header(&path, false, &limits()).unwrap_err().to_string();
        assert!(
            e.contains("the first element: the row is longer than 1 MiB"),
            "{e}"
        );
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            format!("{{\"close\": 1}}\n{{\"close\": \"{long}\"}}\n\n{{\"close\": 3}}"),
        )
        .unwrap();
        let mut r = JsonLinesReader::open(&path, &options(&["close"]), &limits()).unwrap();
        let items = read_all(&mut r);
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1],
            Item::Problem {
                row: 2,
                sheet: None,
                message: row_too_long(&limits())
            }
        );
        assert_eq!(items[2], record(4, vec![Cell::Int(3)]));
        std::fs::write(&path, format!("\n{{\"{long}\": 1}}\n")).unwrap();
        let e = header(&path, true, &limits()).unwrap_err().to_string();
        assert!(e.contains("line 2: the row is longer than 1 MiB"), "{e}");
    }

    #[test]
    fn messages_quote_at_most_an_excerpt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let key = "k".repeat(10_000);
        std::fs::write(&path, format!("{{\"{key}\": [1]}}\n")).unwrap();
        let mut r = JsonLinesReader::open(&path, &options(&[&key]), &limits()).unwrap();
        match &read_all(&mut r)[0] {
            Item::Problem { message, .. } => assert!(message.chars().count() < 300, "{message}"),
            other => panic!("{other:?}"),
        }
    }

    use super::super::fuzz;
    use proptest::prelude::*;

    /// Reads `bytes` as JSON (`lines`: JSON Lines) every way; never panics, and every message
    /// is short.
    fn read_every_way(bytes: &[u8], lines: bool) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, bytes).unwrap();
        let limits = Limits {
            row_bytes: 64,
            ..Limits::default()
        };
        if let Err(e) = header(&path, lines, &limits) {
            fuzz::short(&e)?;
        }
        let wanted = options(&["close", "ts"]);
        if lines {
            fuzz::drain(JsonLinesReader::open(&path, &wanted, &limits), 7)
        } else {
            fuzz::drain(JsonArrayReader::open(&path, &wanted, &limits), 7)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_arrays_never_panic(mutation in fuzz::mutation(100)) {
            let base = b"[{\"ts\": \"2024-01-02\", \"close\": 104.06, \"n\": \"a ] , { \\\" \"},\n{\"ts\": 1, \"close\": 7, \"x\": [1, {\"x\": \"]\"}]}, 42, {\"close\": {\"v\": 1}}]".to_vec();
            read_every_way(&fuzz::mutate(base, mutation), false)?;
        }

        #[test]
        fn mutated_lines_never_panic(mutation in fuzz::mutation(100)) {
            let base = b"{\"ts\": \"2024-01-02\", \"close\": 1.5}\n\n{oops\n{\"ts\": 3, \"close\": -2, \"ok\": true}\n".to_vec();
            read_every_way(&fuzz::mutate(base, mutation), true)?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), lines in any::<bool>()) {
            read_every_way(&bytes, lines)?;
        }
    }
}
