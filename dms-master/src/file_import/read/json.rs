//! JSON: a file holding one array of objects ([`JsonArrayReader`]), or JSON Lines, one object
//! per line ([`JsonLinesReader`]; blank lines are skipped). Each object is a row, its keys the
//! columns (matched like [`super::resolve_columns`]: exactly, then without regard to case); a
//! key an object lacks is a null cell. Values: null → [`Cell::Null`], a boolean → [`Cell::Bool`],
//! an integer → [`Cell::Int`], another number → [`Cell::Float`] (read exactly), a string →
//! [`Cell::Text`] (trimmed; empty → null). An array or object as a wanted value, an element that
//! is not an object, or a line that is not JSON is a problem of that row; the rest goes on.
//!
//! The array is read one element at a time: a scanner finds where each element ends (strings
//! and nesting followed), so memory holds one element, whatever the size of the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Cell, Item, ReadError, ReadOptions, Record, RecordReader};

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
                        message: format!("key {w:?} holds an array or an object, not a value"),
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
                message: format!("not JSON: {e}"),
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
pub fn header(path: &Path, lines: bool) -> Result<Vec<String>, ReadError> {
    let first = if lines {
        let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
        let mut found = None;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| ReadError::io(path, e))?;
            if !line.iter().all(u8::is_ascii_whitespace) {
                found = Some(line);
                break;
            }
        }
        found
    } else {
        let mut scanner = Scanner::open(path)?;
        scanner.next_element()?
    };
    let first = first.ok_or_else(|| ReadError::format(path, "the file holds no object"))?;
    key_order(&first)
        .map_err(|e| ReadError::format(path, format!("the first element is not an object: {e}")))
}

/// Finds the elements of a JSON array in a byte stream.
struct Scanner {
    path: PathBuf,
    input: BufReader<Box<dyn Read + Send>>,
    /// Bytes consumed, for messages.
    offset: u64,
    started: bool,
    done: bool,
}

impl Scanner {
    fn open(path: &Path) -> Result<Scanner, ReadError> {
        let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
        Ok(Scanner {
            path: path.to_owned(),
            input: BufReader::with_capacity(1 << 20, Box::new(file)),
            offset: 0,
            started: false,
            done: false,
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

    /// The bytes of the next element; None after the closing bracket.
    fn next_element(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
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
            out.push(b);
            self.bump();
            if depth == 0 && !in_string && matches!(b, b'}' | b']') {
                break;
            }
        }
        Ok(Some(out))
    }
}

/// Reads a file holding one JSON array of objects.
pub struct JsonArrayReader {
    scanner: Scanner,
    keys: Keys,
    /// Elements read.
    row: u64,
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
    pub fn open(path: &Path, options: &ReadOptions) -> Result<JsonArrayReader, ReadError> {
        Ok(JsonArrayReader {
            scanner: Scanner::open(path)?,
            keys: keys(options),
            row: 0,
        })
    }
}

impl RecordReader for JsonArrayReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        for _ in 0..max {
            let Some(element) = self.scanner.next_element()? else {
                break;
            };
            self.row += 1;
            out.push(self.keys.item(self.row, &element));
            added = true;
        }
        Ok(added)
    }
}

/// Reads JSON Lines: one object per line.
pub struct JsonLinesReader {
    path: PathBuf,
    lines: std::io::Split<BufReader<File>>,
    keys: Keys,
    line: u64,
}

impl std::fmt::Debug for JsonLinesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesReader")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl JsonLinesReader {
    pub fn open(path: &Path, options: &ReadOptions) -> Result<JsonLinesReader, ReadError> {
        let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
        Ok(JsonLinesReader {
            path: path.to_owned(),
            lines: BufReader::with_capacity(1 << 20, file).split(b'\n'),
            keys: keys(options),
            line: 0,
        })
    }
}

impl RecordReader for JsonLinesReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut taken = 0;
        while taken < max {
            let Some(line) = self.lines.next() else { break };
            let line = line.map_err(|e| ReadError::io(&self.path, e))?;
            self.line += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(self.keys.item(self.line, &line));
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
        assert_eq!(header(&path, false).unwrap(), vec!["ts", "Close", "n"]);
        let mut r = JsonArrayReader::open(&path, &options(&["close", "ts", "missing"])).unwrap();
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
        let mut r = JsonArrayReader::open(&path, &options(&["a"])).unwrap();
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
        let e = header(&path, false).unwrap_err().to_string();
        assert!(e.contains("no opening ["), "{e}");
        std::fs::write(&path, "[]").unwrap();
        assert!(
            header(&path, false)
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
        assert_eq!(header(&path, true).unwrap(), vec!["symbol", "close"]);
        let mut r = JsonLinesReader::open(&path, &options(&["symbol", "close", "ok"])).unwrap();
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
}
