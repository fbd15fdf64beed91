//! CSV: a header line naming the columns, then one row per line (RFC 4180 quoting; the
//! delimiter configurable). A UTF-8 byte order mark (as Excel writes) is skipped; every value
//! is a [`Cell::Text`] (an empty field is [`Cell::Null`]), typed later by the mapping. A row
//! with fewer fields than a wanted column needs, or that is not UTF-8, is a problem with its
//! line number; the rest of the file goes on.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::{Cell, Item, ReadError, ReadOptions, Record, RecordReader, resolve_columns};

/// Reads a CSV file.
pub struct CsvReader {
    path: PathBuf,
    reader: ::csv::Reader<Box<dyn Read + Send>>,
    /// The field of each wanted column.
    fields: Vec<usize>,
    record: ::csv::ByteRecord,
}

fn reader(path: &Path, delimiter: u8) -> Result<::csv::Reader<Box<dyn Read + Send>>, ReadError> {
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
    let input: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(head).chain(buffered));
    Ok(::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(input))
}

/// The header of `path`.
pub fn header(path: &Path, delimiter: u8) -> Result<Vec<String>, ReadError> {
    let mut r = reader(path, delimiter)?;
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
        other => ReadError::format(path, format!("{other:?}")),
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
    pub fn open(path: &Path, options: &ReadOptions) -> Result<CsvReader, ReadError> {
        let available = header(path, options.delimiter)?;
        let fields = resolve_columns(&options.columns, &available).map_err(|column| {
            ReadError::MissingColumn {
                path: path.to_owned(),
                where_: String::new(),
                column,
                available: available.clone(),
            }
        })?;
        let mut reader = reader(path, options.delimiter)?;
        reader.byte_headers().map_err(|e| csv_error(path, e))?;
        Ok(CsvReader {
            path: path.to_owned(),
            reader,
            fields,
            record: ::csv::ByteRecord::new(),
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
        for _ in 0..max {
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => break,
                Ok(true) => {
                    // A blank line between rows is not a row.
                    if self.record.len() == 1 && self.record.get(0) == Some(b"") {
                        continue;
                    }
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
                        message: e.to_string(),
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
            &mut CsvReader::open(path, &super::super::options(columns))?,
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
            header(&path, b',').unwrap(),
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
        let mut r = CsvReader::open(&path, &options).unwrap();
        let mut items = Vec::new();
        assert!(r.next_batch(10, &mut items).unwrap());
        assert_eq!(items.len(), 1);
    }
}
