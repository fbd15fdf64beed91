//! CSV: a header line naming the columns, then one row per line (RFC 4180 quoting; the
//! delimiter configurable). A UTF-8 byte order mark (as Excel writes) is skipped; every value
//! is a [`Cell::Text`] (an empty field is [`Cell::Null`]), typed later by the mapping. A row
//! with fewer fields than a wanted column needs, or that is not UTF-8, is a problem with its
//! line number; the rest of the file goes on.
//!
//! A record is at most [`Limits::row_bytes`]: a [`RecordLimit`] under the CSV parser follows
//! the quoting to find where records end and fails the read (naming the line and the limit)
//! as soon as one runs longer, so a record is never buffered past the limit.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{
    Cell, Item, Limits, ReadError, ReadOptions, Record, RecordReader, excerpt, resolve_columns,
    row_too_long,
};

/// Reads a CSV file.
pub struct CsvReader {
    path: PathBuf,
    reader: ::csv::Reader<Box<dyn Read + Send>>,
    /// The field of each wanted column.
    fields: Vec<usize>,
    record: ::csv::ByteRecord,
    batch_bytes: usize,
}

/// Where the CSV parser stands, as far as where a record ends goes (the states of csv-core
/// with RFC 4180 quoting, no escape character and no comments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// At the start of a field: a quote here opens a quoted field.
    FieldStart,
    /// In an unquoted field (a quote is a plain byte).
    Unquoted,
    /// In a quoted field (line breaks are part of the field).
    Quoted,
    /// Just after a quote in a quoted field: a second quote is an escaped quote.
    QuoteInQuoted,
}

/// A reader failing once a CSV record runs longer than `max` bytes: it follows the quoting to
/// find where records end (a line break outside quotes), so the CSV parser never buffers more
/// than `max` bytes of one record. The bytes before the limit still reach the parser: the
/// records they hold are read, and the read that would go past the limit fails.
struct RecordLimit<R> {
    inner: R,
    delimiter: u8,
    max: usize,
    state: Quoting,
    /// Bytes of the current record so far.
    record: usize,
    /// Line breaks before the current record (its line is one more).
    lines_before: u64,
    /// Line breaks inside the current record.
    lines_in: u64,
    /// The limit's message, once reached (a later read fails the same way).
    failed: Option<String>,
}

impl<R> RecordLimit<R> {
    fn new(inner: R, delimiter: u8, max: usize) -> RecordLimit<R> {
        RecordLimit {
            inner,
            delimiter,
            max,
            state: Quoting::FieldStart,
            record: 0,
            lines_before: 0,
            lines_in: 0,
            failed: None,
        }
    }

    /// Follows `bytes`; once the current record is longer than the limit, how many of them
    /// come before, and the message.
    fn follow(&mut self, bytes: &[u8]) -> Option<(usize, String)> {
        for (i, &b) in bytes.iter().enumerate() {
            let newline = b == b'\n' || b == b'\r';
            let ends = match self.state {
                Quoting::FieldStart | Quoting::Unquoted | Quoting::QuoteInQuoted if newline => true,
                Quoting::FieldStart if b == b'"' => {
                    self.state = Quoting::Quoted;
                    false
                }
                Quoting::QuoteInQuoted if b == b'"' => {
                    self.state = Quoting::Quoted;
                    false
                }
                Quoting::Quoted if b == b'"' => {
                    self.state = Quoting::QuoteInQuoted;
                    false
                }
                Quoting::Quoted => false,
                _ if b == self.delimiter => {
                    self.state = Quoting::FieldStart;
                    false
                }
                _ => {
                    self.state = Quoting::Unquoted;
                    false
                }
            };
            if ends {
                self.state = Quoting::FieldStart;
                self.lines_before += self.lines_in + u64::from(b == b'\n');
                self.lines_in = 0;
                self.record = 0;
                continue;
            }
            self.lines_in += u64::from(b == b'\n');
            self.record += 1;
            if self.record > self.max {
                let message = format!(
                    "line {}: {}",
                    self.lines_before + 1,
                    row_too_long_bytes(self.max)
                );
                return Some((i, message));
            }
        }
        None
    }
}

fn row_too_long_bytes(max: usize) -> String {
    row_too_long(&Limits {
        row_bytes: max,
        ..Limits::default()
    })
}

impl<R: Read> Read for RecordLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(m) = &self.failed {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                m.clone(),
            ));
        }
        let n = self.inner.read(buf)?;
        match self.follow(&buf[..n]) {
            None => Ok(n),
            // The bytes before go to the parser (the records they end are read); the read
            // after fails.
            Some((before, m)) => {
                self.failed = Some(m.clone());
                if before > 0 {
                    Ok(before)
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, m))
                }
            }
        }
    }
}

fn reader(
    path: &Path,
    delimiter: u8,
    limits: &Limits,
) -> Result<::csv::Reader<Box<dyn Read + Send>>, ReadError> {
    let file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    // Skip a UTF-8 byte order mark.
    let mut bom = [0u8; 3];
    let mut read = 0;
    while read < 3 {
        match buffered.read(&mut bom[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(ReadError::io(path, e)),
        }
    }
    let head: Vec<u8> = if bom[..read] == [0xEF, 0xBB, 0xBF] {
        Vec::new()
    } else {
        bom[..read].to_vec()
    };
    let input: Box<dyn Read + Send> = Box::new(RecordLimit::new(
        std::io::Cursor::new(head).chain(buffered),
        delimiter,
        limits.row_bytes,
    ));
    Ok(::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(input))
}

/// The header of `path`.
pub fn header(path: &Path, delimiter: u8, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let mut r = reader(path, delimiter, limits)?;
    let header = r.byte_headers().map_err(|e| csv_error(path, e))?;
    if header.is_empty() {
        return Err(ReadError::format(
            path,
            "the file is empty (no header line)",
        ));
    }
    header
        .iter()
        .map(|f| {
            std::str::from_utf8(f).map(str::to_owned).map_err(|_| {
                ReadError::format(
                    path,
                    "the header line is not UTF-8 (convert the file, e.g. iconv -f GBK -t UTF-8)",
                )
            })
        })
        .collect()
}

fn csv_error(path: &Path, e: ::csv::Error) -> ReadError {
    match e.into_kind() {
        ::csv::ErrorKind::Io(e) => ReadError::io(path, e),
        other => ReadError::format(path, excerpt(&format!("{other:?}"))),
    }
}

impl std::fmt::Debug for CsvReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvReader")
            .field("path", &self.path)
            .field("fields", &self.fields)
            .finish_non_exhaustive()
    }
}

impl CsvReader {
    /// Opens `path` and finds the wanted columns in its header.
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<CsvReader, ReadError> {
        let available = header(path, options.delimiter, limits)?;
        let fields = resolve_columns(&options.columns, &available).map_err(|column| {
            ReadError::MissingColumn {
                path: path.to_owned(),
                where_: String::new(),
                column,
                available: available.clone(),
            }
        })?;
        let mut reader = reader(path, options.delimiter, limits)?;
        reader.byte_headers().map_err(|e| csv_error(path, e))?;
        Ok(CsvReader {
            path: path.to_owned(),
            reader,
            fields,
            record: ::csv::ByteRecord::new(),
            batch_bytes: limits.batch_bytes,
        })
    }

    /// The line a record read starts on. The reader's own record position counts blank lines
    /// before a record as the record's, so the line is also found from where the record ended:
    /// the reader's position after it, less the line breaks inside it (one short for a last
    /// line without a line break, which the record's own position gets right).
    fn record_line(&self) -> u64 {
        let after = self.reader.position().line();
        let inner = self
            .record
            .iter()
            .map(|f| f.iter().filter(|b| **b == b'\n').count() as u64)
            .sum::<u64>();
        let start = self.record.position().map_or(0, |p| p.line());
        // After a line break the reader stands on the next line.
        after.saturating_sub(1 + inner).max(start).max(2)
    }

    fn item(&self, row: u64) -> Item {
        let mut cells = Vec::with_capacity(self.fields.len());
        for &f in &self.fields {
            let Some(raw) = self.record.get(f) else {
                return Item::Problem {
                    row,
                    sheet: None,
                    message: format!(
                        "{} fields, the header has more (a missing delimiter?)",
                        self.record.len()
                    ),
                };
            };
            let Ok(text) = std::str::from_utf8(raw) else {
                return Item::Problem {
                    row,
                    sheet: None,
                    message: format!("field {} is not UTF-8", f + 1),
                };
            };
            let text = text.trim();
            cells.push(if text.is_empty() {
                Cell::Null
            } else {
                Cell::Text(text.to_owned())
            });
        }
        Item::Record(Record {
            row,
            sheet: None,
            cells,
        })
    }
}

impl RecordReader for CsvReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut bytes = 0;
        for _ in 0..max {
            if bytes >= self.batch_bytes {
                break;
            }
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => break,
                Ok(true) => {
                    // A blank line between rows is not a row.
                    if self.record.len() == 1 && self.record.get(0) == Some(b"") {
                        continue;
                    }
                    bytes += self.record.as_slice().len() + 24 * self.fields.len();
                    out.push(self.item(self.record_line()));
                    added = true;
                }
                Err(e) => {
                    let row = e.position().map_or(0, |p| p.line());
                    if let ::csv::ErrorKind::Io(_) = e.kind() {
                        return Err(csv_error(&self.path, e));
                    }
                    out.push(Item::Problem {
                        row,
                        sheet: None,
                        message: excerpt(&e.to_string()),
                    });
                    added = true;
                }
            }
        }
        Ok(added)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path, columns: &[&str]) -> Result<Vec<Item>, ReadError> {
        super::super::read_items(
            &mut CsvReader::open(path, &super::super::options(columns), &Limits::default())?,
            2,
        )
    }

    #[test]
    fn reads_wanted_columns_with_line_numbers_past_a_bom() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "\u{feff}Date,Open,Close\n2024-01-02,1.5,2\n\n2024-01-03,,3\n2024-01-04\n\"2024-01-05\",\"1\n\",4\n2024-01-06,1,5",
        )
        .unwrap();
        let items = read_all(&path, &["close", "date", "open"]).unwrap();
        let text = |s: &str| Cell::Text(s.into());
        assert_eq!(
            items,
            vec![
                Item::Record(Record {
                    row: 2,
                    sheet: None,
                    cells: vec![text("2"), text("2024-01-02"), text("1.5")],
                }),
                Item::Record(Record {
                    row: 4,
                    sheet: None,
                    cells: vec![text("3"), text("2024-01-03"), Cell::Null],
                }),
                Item::Problem {
                    row: 5,
                    sheet: None,
                    message: "1 fields, the header has more (a missing delimiter?)".into(),
                },
                Item::Record(Record {
                    row: 6,
                    sheet: None,
                    cells: vec![text("4"), text("2024-01-05"), text("1")],
                }),
                Item::Record(Record {
                    row: 8,
                    sheet: None,
                    cells: vec![text("5"), text("2024-01-06"), text("1")],
                }),
            ]
        );
        assert_eq!(
            header(&path, b',', &Limits::default()).unwrap(),
            vec!["Date".to_string(), "Open".into(), "Close".into()]
        );
    }

    #[test]
    fn a_missing_column_names_the_columns_there_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(&path, "Date;Close\n2024-01-02;1\n").unwrap();
        let e = read_all(&path, &["close"]).err().unwrap().to_string();
        assert!(
            e.contains("no column \"close\" (its columns: Date;Close)"),
            "{e}"
        );
        let options = ReadOptions {
            columns: vec!["Close".into()],
            delimiter: b';',
        };
        let mut r = CsvReader::open(&path, &options, &Limits::default()).unwrap();
        let mut items = Vec::new();
        assert!(r.next_batch(10, &mut items).unwrap());
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn a_row_longer_than_the_limit_is_refused_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.csv");
        let long = "9".repeat(2 << 20);
        std::fs::write(
            &path,
            format!("Date,Close\n2024-01-02,1\n2024-01-03,{long}\n"),
        )
        .unwrap();
        let e = read_all(&path, &["close"]).unwrap_err().to_string();
        assert!(
            e.contains("long.csv: line 3: the row is longer than 1 MiB, the limit of a row"),
            "{e}"
        );
        assert!(e.len() < 300, "{e}");
        // A header line, and a quoted field running over many short lines.
        std::fs::write(&path, format!("Date,{long}\n1,2\n")).unwrap();
        let e = header(&path, b',', &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: the row is longer than 1 MiB"), "{e}");
        let lines = "x\n".repeat(1 << 20);
        std::fs::write(&path, format!("Date,Close\n1,2\n\"{lines}\",3\n")).unwrap();
        let e = read_all(&path, &["close"]).unwrap_err().to_string();
        assert!(e.contains("line 3: the row is longer than 1 MiB"), "{e}");
        // Within the limit, quotes and line breaks inside them are followed.
        let small = Limits {
            row_bytes: 16,
            ..Limits::default()
        };
        std::fs::write(
            &path,
            "a,b\n\"x\n\"\"y\",1\n\"ab\"\"\"\"cd\",2\r\n1234567,12345678\n",
        )
        .unwrap();
        let mut r = CsvReader::open(&path, &super::super::options(&["b"]), &small).unwrap();
        let items = super::super::read_items(&mut r, 10).unwrap();
        assert_eq!(items.len(), 3);
        std::fs::write(&path, "a,b\n123456789,12345678\n").unwrap();
        let mut r = CsvReader::open(&path, &super::super::options(&["b"]), &small).unwrap();
        let e = super::super::read_items(&mut r, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: the row is longer than 16 bytes"), "{e}");
    }

    #[test]
    fn a_batch_stops_at_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let row = format!("{},1\n", "s".repeat(1000));
        std::fs::write(&path, format!("symbol,close\n{}", row.repeat(100))).unwrap();
        let limits = Limits {
            batch_bytes: 10_000,
            ..Limits::default()
        };
        let mut r = CsvReader::open(&path, &super::super::options(&["symbol"]), &limits).unwrap();
        let mut items = Vec::new();
        assert!(r.next_batch(1_000, &mut items).unwrap());
        assert_eq!(items.len(), 10);
    }

    use super::super::fuzz;
    use proptest::prelude::*;

    /// Reads `bytes` as a CSV file every way; never panics, and every message is short.
    fn read_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        std::fs::write(&path, bytes).unwrap();
        let limits = Limits {
            row_bytes: 64,
            ..Limits::default()
        };
        if let Err(e) = header(&path, b',', &limits) {
            fuzz::short(&e)?;
        }
        fuzz::drain(
            CsvReader::open(&path, &super::super::options(&["close"]), &limits),
            7,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_files_never_panic(mutation in fuzz::mutation(200)) {
            let base = b"\xef\xbb\xbfDate,Open,Close\n2024-01-02,1.5,2\n\n\"2024-01-05\",\"1\n\",4\n2024-01-06,1,5".to_vec();
            read_every_way(&fuzz::mutate(base, mutation))?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            read_every_way(&bytes)?;
        }
    }
}
