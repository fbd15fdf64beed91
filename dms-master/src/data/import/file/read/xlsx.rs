//! Excel (xlsx): every sheet in workbook order, the first row of each its header (the wanted
//! columns are found in each sheet's own header; a sheet without one is an error naming the
//! sheet), every further row a record numbered as Excel shows it (the header is row 1). A
//! sheet without rows is skipped.
//!
//! Cells: empty → [`Cell::Null`]; a string → [`Cell::Text`] (trimmed; empty → null); a number
//! → [`Cell::Float`] (or [`Cell::Int`]); a boolean → [`Cell::Bool`]; a date-time (a number in a
//! date-formatted cell) → [`Cell::DateTime`], naive as Excel has no time zone, to the
//! millisecond; an error value (`#N/A` …) in a wanted column → a problem of that row.
//!
//! The sheets are read with calamine's cell reader, which streams a sheet's XML instead of
//! building the whole grid: a reader thread puts rows together and hands them over in
//! batches through a bounded channel, so memory holds a few batches (plus the workbook's
//! shared strings) whatever the number of rows.
//!
//! Before calamine opens a workbook (for [`header`] as for [`XlsxReader`]), [`check_package`]
//! checks the zip archive against [`Limits`], as calamine trusts what it declares: the number
//! of entries and each entry's uncompressed size and compression ratio (zip bombs; the zip
//! reader fails an entry that inflates past its declared size, so the declared sizes bound
//! what is read); the `uniqueCount` of the shared strings (calamine reserves that many strings
//! up front); and, in the parts calamine parses into memory when it opens a workbook, the
//! size, the length of tags and attribute values and the number of styles and sheets
//! (calamine copies a font name, a number format or a relationship target once per style or
//! sheet using it). A row's texts are at most [`Limits::row_bytes`] and its cells within
//! Excel's [`MAX_XLSX_COLUMNS`].

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use calamine::{DataRef, Reader, Xlsx};

use super::{
    Cell, Item, Limits, MAX_XLSX_COLUMNS, ReadError, ReadOptions, Record, RecordReader, excerpt,
    guard, item_bytes, resolve_columns, row_too_long, size,
};

/// A data row being put together: its index and each wanted column's value (or why it is not
/// one), or None once its texts are longer than the limit.
type SheetRow = (u32, Option<Vec<Option<Result<Cell, String>>>>);

/// Items handed over at a time.
const BATCH: usize = 4096;

type Workbook = Xlsx<BufReader<File>>;

/// The signature of an OLE compound file: an encrypted workbook, or an old `.xls`.
const OLE_SIGNATURE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Bytes from the end of a file within which the zip reader looks for the end of the central
/// directory (a 22-byte record and a comment of up to 64 KiB), with a margin.
const EOCD_WINDOW: u64 = 22 + 4 + (1 << 16) + 64;

/// Bytes of the shared strings' XML read to find their `<sst>` tag.
const SST_HEAD_BYTES: u64 = 64 << 10;

/// Relationships the package's `_rels/.rels` may declare at most (a workbook has a handful).
const MAX_PACKAGE_RELATIONSHIPS: usize = 256;

fn unreadable(path: &Path, message: impl std::fmt::Display) -> ReadError {
    ReadError::format(
        path,
        excerpt(&format!("not a readable xlsx workbook: {message}")),
    )
}

/// Opens `path` as a workbook, once its archive passed [`check_package`].
fn open_workbook(path: &Path, limits: &Limits) -> Result<Workbook, ReadError> {
    let mut file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    check_package(&file, path, limits)?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ReadError::io(path, e))?;
    guard(path, || {
        Xlsx::new(BufReader::new(file)).map_err(|e: calamine::XlsxError| unreadable(path, e))
    })
}

/// Reads at most `buf.len()` bytes (fewer only at the end of the input).
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Checks the zip archive of a workbook against `limits` before calamine opens it: see the
/// module's documentation.
fn check_package(file: &File, path: &Path, limits: &Limits) -> Result<(), ReadError> {
    let io = |e: std::io::Error| ReadError::io(path, e);
    let mut f = file;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 8];
    let n = read_up_to(&mut f, &mut head).map_err(io)?;
    if n == head.len() && head == OLE_SIGNATURE {
        return Err(unreadable(
            path,
            "it is an encrypted (password-protected) workbook or an old .xls file \
             (save it as an unprotected .xlsx)",
        ));
    }
    if n < 4 || head[..4] != *b"PK\x03\x04" {
        return Err(unreadable(path, "not a zip archive"));
    }
    // ZIP64: the zip reader would size its index from a 64-bit entry count.
    let start = len.saturating_sub(EOCD_WINDOW);
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    f.take(EOCD_WINDOW).read_to_end(&mut tail).map_err(io)?;
    for p in 0..tail.len().saturating_sub(21) {
        if tail[p..p + 4] != *b"PK\x05\x06" {
            continue;
        }
        let u16_at = |i: usize| u16::from_le_bytes([tail[p + i], tail[p + i + 1]]);
        let u32_at = |i: usize| {
            u32::from_le_bytes([
                tail[p + i],
                tail[p + i + 1],
                tail[p + i + 2],
                tail[p + i + 3],
            ])
        };
        if u16_at(8) == u16::MAX
            || u16_at(10) == u16::MAX
            || u32_at(12) == u32::MAX
            || u32_at(16) == u32::MAX
        {
            return Err(unreadable(
                path,
                "a ZIP64 archive (over 65,535 entries or 4 GiB), more than a workbook to import",
            ));
        }
    }
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f)).map_err(|e| unreadable(path, e))?;
    if zip.len() > limits.zip_entries {
        return Err(unreadable(
            path,
            format!(
                "its archive has {} entries, over the limit of {}",
                zip.len(),
                limits.zip_entries
            ),
        ));
    }
    // Each entry: (index, name as calamine looks it up, uncompressed size).
    let mut entries = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let e = zip.by_index_data(i).map_err(|e| unreadable(path, e))?;
        let name = e.name().map_err(|e| unreadable(path, e))?;
        let (bytes, packed) = (e.size(), e.compressed_size());
        if bytes > limits.xlsx_entry_bytes {
            return Err(unreadable(
                path,
                format!(
                    "part {:?} is {bytes} bytes uncompressed, over the limit of {}",
                    excerpt(&name),
                    size(limits.xlsx_entry_bytes)
                ),
            ));
        }
        if bytes > limits.ratio_checked_above && bytes / packed.max(1) > limits.compression_ratio {
            return Err(unreadable(
                path,
                format!(
                    "part {:?} inflates {bytes} bytes from {packed} (over {} to 1: a zip bomb?)",
                    excerpt(&name),
                    limits.compression_ratio
                ),
            ));
        }
        entries.push((i, normalize(&name), bytes));
    }
    // The workbook part: the package's relationships name it (calamine's default otherwise).
    let mut workbooks = vec!["xl/workbook.xml".to_owned()];
    let mut scanned = HashSet::new();
    for (i, name, bytes) in &entries {
        if name == "_rels/.rels" {
            let mut targets = Vec::new();
            scan_part(&mut zip, *i, name, *bytes, limits, Some(&mut targets))
                .map_err(|m| unreadable(path, m))?;
            for t in &targets {
                workbooks.push(t.clone());
                if let Some(u) = unescape(t) {
                    workbooks.push(u);
                }
            }
            scanned.insert(*i);
        }
    }
    // The parts calamine parses into memory when it opens the workbook.
    let mut parts = HashSet::new();
    for target in &workbooks {
        let (dir, name) = match target.rfind('/') {
            Some(i) => target.split_at(i + 1),
            None => ("", target.as_str()),
        };
        let dir = dir.strip_prefix('/').unwrap_or(dir);
        let name = if name.is_empty() {
            "workbook.xml"
        } else {
            name
        };
        for part in [
            format!("{dir}{name}"),
            format!("{dir}_rels/{name}.rels"),
            format!("{dir}styles.xml"),
            format!("{dir}theme/theme1.xml"),
        ] {
            parts.insert(normalize(&part));
        }
    }
    for (i, name, bytes) in &entries {
        if name.rsplit('/').next() == Some("sharedstrings.xml") {
            check_shared_strings(&mut zip, *i, name, *bytes, limits)
                .map_err(|m| unreadable(path, m))?;
        } else if parts.contains(name) && !scanned.contains(i) {
            scan_part(&mut zip, *i, name, *bytes, limits, None).map_err(|m| unreadable(path, m))?;
        }
    }
    Ok(())
}

/// A part's name as calamine looks parts up: `/` for `\`, lower case.
fn normalize(name: &str) -> String {
    name.replace('\\', "/").to_ascii_lowercase()
}

/// `text` with XML's entities and character references replaced; None if one is unknown.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        let entity = &rest[i + 1..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()?
                } else {
                    entity.strip_prefix('#')?.parse().ok()?
                };
                char::from_u32(code)?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// A start tag as quick-xml (calamine's XML parser) sees it.
struct StartTag<'a> {
    /// The name after its prefix (after the first `:`).
    local: &'a [u8],
    /// What follows the name.
    attributes: &'a [u8],
}

impl<'a> StartTag<'a> {
    /// `content` is what is between `<` and `>`.
    fn parse(content: &'a [u8]) -> StartTag<'a> {
        let content = content.strip_suffix(b"/").unwrap_or(content);
        let name_end = content
            .iter()
            .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(content.len());
        let name = &content[..name_end];
        let local = match name.iter().position(|b| *b == b':') {
            Some(i) => &name[i + 1..],
            None => name,
        };
        StartTag {
            local,
            attributes: &content[name_end..],
        }
    }

    /// The attributes as calamine reads them (key, raw value), up to the first malformed one.
    fn attributes(&self) -> Vec<(&'a [u8], &'a [u8])> {
        let raw = self.attributes;
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            while pos < raw.len() && raw[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos >= raw.len() {
                return out;
            }
            let key_start = pos;
            while pos < raw.len() && raw[pos] != b'=' {
                pos += 1;
            }
            if pos >= raw.len() {
                return out;
            }
            let key = raw[key_start..pos].trim_ascii_end();
            pos += 1;
            while pos < raw.len() && raw[pos].is_ascii_whitespace() {
                pos += 1;
            }
            let Some(&quote) = raw.get(pos).filter(|q| matches!(q, b'"' | b'\'')) else {
                return out;
            };
            pos += 1;
            let start = pos;
            while pos < raw.len() && raw[pos] != quote {
                pos += 1;
            }
            out.push((key, &raw[start..pos]));
            pos += 1;
        }
    }
}

/// Whether a scan goes on after a start tag.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    Continue,
    Stop,
}

/// Scans the XML of `input` as quick-xml tokenizes it, calling `on_start` with each start tag:
/// a tag may be at most `limits.xlsx_tag_bytes` long and an attribute value at most
/// `limits.xlsx_attribute_bytes`; an XML declaration may open the document, and no other
/// processing instruction, comment, CDATA section or DTD may follow (workbooks hold none, and
/// a tag hidden in one could be read differently by this scan and by calamine).
fn scan_xml(
    input: &mut impl BufRead,
    limits: &Limits,
    mut on_start: impl FnMut(&StartTag<'_>) -> Result<Scan, String>,
) -> Result<(), String> {
    #[derive(PartialEq)]
    enum State {
        Text,
        /// Just after `<`.
        Open,
        /// In the XML declaration; the byte before.
        Declaration(u8),
        /// In a tag (an end tag if true), in quotes if Some.
        Tag(bool, Option<u8>),
    }
    let mut state = State::Text;
    let mut started = false;
    let mut tag: Vec<u8> = Vec::new();
    let mut declaration = 0usize;
    loop {
        let buf = input.fill_buf().map_err(|e| e.to_string())?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        for &b in buf {
            match state {
                State::Text => {
                    if b == b'<' {
                        state = State::Open;
                    }
                }
                State::Open => match b {
                    b'?' if !started => {
                        state = State::Declaration(0);
                        declaration = 0;
                    }
                    b'?' | b'!' => {
                        return Err(
                            "it holds a comment, a processing instruction, a CDATA section \
                             or a DTD"
                                .into(),
                        );
                    }
                    b'/' => {
                        tag.clear();
                        state = State::Tag(true, None);
                    }
                    _ => {
                        tag.clear();
                        state = State::Tag(false, None);
                        // The byte is the tag's first.
                        if b == b'>' {
                            started = true;
                            state = State::Text;
                            if on_start(&StartTag::parse(&tag))? == Scan::Stop {
                                return Ok(());
                            }
                        } else {
                            tag.push(b);
                            if matches!(b, b'"' | b'\'') {
                                state = State::Tag(false, Some(b));
                            }
                        }
                    }
                },
                State::Declaration(before) => {
                    declaration += 1;
                    if declaration > limits.xlsx_tag_bytes {
                        return Err("its XML declaration is too long".into());
                    }
                    state = if b == b'>' && before == b'?' {
                        started = true;
                        State::Text
                    } else {
                        State::Declaration(b)
                    };
                }
                State::Tag(end, quote) => {
                    if quote.is_none() && b == b'>' {
                        started = true;
                        state = State::Text;
                        if !end {
                            check_attribute_lengths(&tag, limits)?;
                            if on_start(&StartTag::parse(&tag))? == Scan::Stop {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                    tag.push(b);
                    if tag.len() > limits.xlsx_tag_bytes {
                        return Err(format!(
                            "it has a tag longer than {}, the limit",
                            size(limits.xlsx_tag_bytes as u64)
                        ));
                    }
                    state = match quote {
                        None if matches!(b, b'"' | b'\'') => State::Tag(end, Some(b)),
                        Some(q) if q == b => State::Tag(end, None),
                        q => State::Tag(end, q),
                    };
                }
            }
        }
        input.consume(n);
    }
}

/// Fails if a quoted value in `tag` is longer than the limit.
fn check_attribute_lengths(tag: &[u8], limits: &Limits) -> Result<(), String> {
    let mut quote = None;
    let mut run = 0usize;
    for &b in tag {
        match quote {
            None if matches!(b, b'"' | b'\'') => {
                quote = Some(b);
                run = 0;
            }
            Some(q) if q == b => quote = None,
            Some(_) => {
                run += 1;
                if run > limits.xlsx_attribute_bytes {
                    return Err(format!(
                        "it has an attribute value longer than {}, the limit",
                        size(limits.xlsx_attribute_bytes as u64)
                    ));
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// Scans a part calamine parses into memory (see [`scan_xml`]), counting its styles and
/// sheets; collects the `Target` of its relationships into `targets` if given.
fn scan_part<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    index: usize,
    name: &str,
    bytes: u64,
    limits: &Limits,
    mut targets: Option<&mut Vec<String>>,
) -> Result<(), String> {
    let what = |m: &str| format!("part {:?}: {m}", excerpt(name));
    if bytes > limits.xlsx_part_bytes {
        return Err(what(&format!(
            "{bytes} bytes uncompressed, over the limit of {} for a part read into memory",
            size(limits.xlsx_part_bytes)
        )));
    }
    let entry = zip.by_index(index).map_err(|e| what(&e.to_string()))?;
    let mut input = BufReader::new(entry.take(limits.xlsx_part_bytes));
    let (mut styles, mut sheets) = (0u64, 0u64);
    scan_xml(&mut input, limits, |tag| {
        match tag.local {
            b"xf" => styles += 1,
            b"sheet" => sheets += 1,
            _ => {}
        }
        if styles > limits.xlsx_styles {
            return Err(format!(
                "more than {} cell formats, the limit",
                limits.xlsx_styles
            ));
        }
        if sheets > limits.xlsx_sheets {
            return Err(format!(
                "more than {} sheets, the limit",
                limits.xlsx_sheets
            ));
        }
        if let Some(targets) = targets.as_deref_mut() {
            for (key, value) in tag.attributes() {
                if key == b"Target" || key.ends_with(b":Target") {
                    if targets.len() >= MAX_PACKAGE_RELATIONSHIPS {
                        return Err(format!(
                            "more than {MAX_PACKAGE_RELATIONSHIPS} relationships"
                        ));
                    }
                    targets.push(String::from_utf8_lossy(value).into_owned());
                }
            }
        }
        Ok(Scan::Continue)
    })
    .map_err(|m| what(&m))
}

/// Checks the shared strings: their size, and the `uniqueCount` of their `<sst>` tag (which
/// calamine reserves room for): at most `limits.xlsx_shared_strings`, and no more than the
/// part could hold (an `<si/>` is 5 bytes).
fn check_shared_strings<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    index: usize,
    name: &str,
    bytes: u64,
    limits: &Limits,
) -> Result<(), String> {
    let what = |m: &str| format!("part {:?}: {m}", excerpt(name));
    if bytes > limits.xlsx_shared_strings_bytes {
        return Err(what(&format!(
            "{bytes} bytes uncompressed, over the limit of {} for the shared strings",
            size(limits.xlsx_shared_strings_bytes)
        )));
    }
    let most = limits.xlsx_shared_strings.min(bytes / 5);
    let entry = zip.by_index(index).map_err(|e| what(&e.to_string()))?;
    let mut input = BufReader::new(entry.take(SST_HEAD_BYTES));
    let mut found = false;
    scan_xml(&mut input, limits, |tag| {
        if tag.local != b"sst" {
            return Err("its first tag is not <sst>".into());
        }
        found = true;
        if let Some((_, value)) = tag
            .attributes()
            .into_iter()
            .find(|(key, _)| *key == b"uniqueCount")
            && !value.is_empty()
            && value.iter().all(u8::is_ascii_digit)
        {
            let n = value.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            if n > most {
                return Err(format!(
                    "it declares {} unique strings, more than the {most} it may hold",
                    excerpt(&String::from_utf8_lossy(value))
                ));
            }
        }
        Ok(Scan::Stop)
    })
    .map_err(|m| what(&m))?;
    if !found && bytes > SST_HEAD_BYTES {
        return Err(what(&format!(
            "no <sst> tag in its first {}",
            size(SST_HEAD_BYTES)
        )));
    }
    Ok(())
}

/// The bytes of a value's text, without making it.
fn text_len(v: &DataRef<'_>) -> usize {
    match v {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.len(),
        DataRef::SharedString(s) => s.len(),
        DataRef::Empty => 0,
        // Numbers, booleans, dates and error values print in a few dozen bytes.
        _ => 32,
    }
}

fn text_of(v: &DataRef<'_>) -> String {
    match v {
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => {
            s.trim().to_owned()
        }
        DataRef::SharedString(s) => s.trim().to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(d) => d.to_string(),
        DataRef::Error(e) => e.to_string(),
        DataRef::Empty => String::new(),
    }
}

/// A value as a cell, or the reason it cannot be one.
fn cell_of(v: &DataRef<'_>) -> Result<Cell, String> {
    Ok(match v {
        DataRef::Empty => Cell::Null,
        DataRef::String(_)
        | DataRef::SharedString(_)
        | DataRef::DateTimeIso(_)
        | DataRef::DurationIso(_) => {
            let t = text_of(v);
            if t.is_empty() {
                Cell::Null
            } else {
                Cell::Text(t)
            }
        }
        DataRef::Int(i) => Cell::Int(*i),
        DataRef::Float(f) => Cell::Float(*f),
        DataRef::Bool(b) => Cell::Bool(*b),
        DataRef::DateTime(d) => match d.as_datetime() {
            Some(t) if d.is_datetime() => Cell::DateTime(t),
            _ => Cell::Float(d.as_f64()),
        },
        DataRef::Error(e) => return Err(excerpt(&format!("the cell holds the error {e}"))),
    })
}

/// `sheet "X": ` (the name an excerpt), for messages.
fn sheet_prefix(name: &str) -> String {
    format!("sheet {:?}: ", excerpt(name))
}

/// A cell's column as an index, or the error of a cell beyond Excel's last column.
fn column(path: &Path, name: &str, col: u32) -> Result<usize, ReadError> {
    if col >= MAX_XLSX_COLUMNS {
        return Err(ReadError::format(
            path,
            format!(
                "{}a cell in column {}, beyond Excel's last (XFD)",
                sheet_prefix(name),
                u64::from(col) + 1
            ),
        ));
    }
    Ok(col as usize)
}

/// The header row's texts, gathered cell by cell (at most the row limit of text).
#[derive(Debug, Default)]
struct HeaderRow {
    names: Vec<String>,
    bytes: usize,
}

impl HeaderRow {
    fn add(
        &mut self,
        path: &Path,
        sheet: &str,
        col: usize,
        value: &DataRef<'_>,
        limits: &Limits,
    ) -> Result<(), ReadError> {
        self.bytes += text_len(value);
        if self.bytes > limits.row_bytes {
            return Err(ReadError::format(
                path,
                format!(
                    "{}the header row: {}",
                    sheet_prefix(sheet),
                    row_too_long(limits)
                ),
            ));
        }
        if self.names.len() <= col {
            self.names.resize(col + 1, String::new());
        }
        self.names[col] = text_of(value);
        Ok(())
    }
}

/// The first sheet's header.
pub fn header(path: &Path, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let mut book = open_workbook(path, limits)?;
    guard(path, || {
        for name in book.sheet_names() {
            let sheet_error = |e: calamine::XlsxError| {
                ReadError::format(path, excerpt(&format!("{}{e}", sheet_prefix(&name))))
            };
            let mut cells = book.worksheet_cells_reader(&name).map_err(sheet_error)?;
            let mut header = HeaderRow::default();
            let mut first_row = None;
            while let Some(c) = cells.next_cell().map_err(sheet_error)? {
                let (row, col) = c.get_position();
                if *first_row.get_or_insert(row) != row {
                    break;
                }
                let col = column(path, &name, col)?;
                header.add(path, &name, col, c.get_value(), limits)?;
            }
            if first_row.is_some() {
                return Ok(header.names);
            }
        }
        Err(ReadError::format(path, "the workbook has no rows"))
    })
}

/// Reads every sheet of `book` on a thread of its own; sends batches of items.
fn read_sheets(
    path: &Path,
    mut book: Workbook,
    wanted: &[String],
    limits: &Limits,
    tx: &SyncSender<Result<Vec<Item>, ReadError>>,
) -> Result<(), ReadError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_bytes = 0;
    // A thread's batch is a quarter of a reader's: a few of them wait in the channel.
    let flush_bytes = (limits.batch_bytes / 4).max(1);
    for name in book.sheet_names() {
        let label = excerpt(&name);
        let sheet_error = |e: calamine::XlsxError| {
            ReadError::format(path, excerpt(&format!("{}{e}", sheet_prefix(&name))))
        };
        let mut cells = book.worksheet_cells_reader(&name).map_err(sheet_error)?;
        // The header row's index and texts, then each data row's wanted values by column.
        let mut header: Option<(u32, HeaderRow)> = None;
        // Once the header is read: the column of each wanted field, and for each column the
        // place of its value in a row (None for a column not wanted).
        let mut fields: Option<(Vec<usize>, Vec<Option<usize>>)> = None;
        let mut row: Option<SheetRow> = None;
        let emit = |row: Option<SheetRow>, fields: &[usize], batch: &mut Vec<Item>| {
            let Some((r, values)) = row else { return };
            let Some(values) = values else {
                batch.push(Item::Problem {
                    row: u64::from(r) + 1,
                    sheet: Some(label.clone()),
                    message: row_too_long(limits),
                });
                return;
            };
            let mut out = Vec::with_capacity(fields.len());
            for (i, value) in values.into_iter().enumerate() {
                match value {
                    None => out.push(Cell::Null),
                    Some(Ok(c)) => out.push(c),
                    Some(Err(m)) => {
                        batch.push(Item::Problem {
                            row: u64::from(r) + 1,
                            sheet: Some(label.clone()),
                            message: format!("column {:?}: {m}", excerpt(&wanted[i])),
                        });
                        return;
                    }
                }
            }
            if out.iter().all(|c| *c == Cell::Null) {
                return;
            }
            batch.push(Item::Record(Record {
                row: u64::from(r) + 1,
                sheet: Some(label.clone()),
                cells: out,
            }));
        };
        while let Some(c) = cells.next_cell().map_err(sheet_error)? {
            let (r, col) = c.get_position();
            let col = column(path, &name, col)?;
            if fields.is_none() {
                match &mut header {
                    None => header = Some((r, HeaderRow::default())),
                    Some((h, names)) if *h != r => {
                        let names = std::mem::take(&mut names.names);
                        let f = resolve_columns(wanted, &names).map_err(|column| {
                            ReadError::MissingColumn {
                                path: path.to_owned(),
                                where_: sheet_prefix(&name),
                                column,
                                available: names.clone(),
                            }
                        })?;
                        let width = f.iter().max().map_or(0, |m| m + 1);
                        let mut places = vec![None; width];
                        // A column wanted twice gives its value to the first place; the
                        // others are filled when the row is emitted.
                        for (i, &c) in f.iter().enumerate() {
                            places[c].get_or_insert(i);
                        }
                        fields = Some((f, places));
                    }
                    _ => {}
                }
            }
            let Some((f, places)) = &fields else {
                if let Some((_, names)) = &mut header {
                    names.add(path, &name, col, c.get_value(), limits)?;
                }
                continue;
            };
            if row.as_ref().is_some_and(|(rr, _)| *rr != r) {
                emit(row.take().map(|row| spread(row, f, places)), f, &mut batch);
                batch_bytes += batch.last().map_or(0, item_bytes);
                if batch.len() >= BATCH || batch_bytes >= flush_bytes {
                    if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                        return Ok(());
                    }
                    batch.reserve(BATCH);
                    batch_bytes = 0;
                }
            }
            let Some(&Some(place)) = places.get(col) else {
                // Not a wanted column; the row still starts.
                row.get_or_insert_with(|| (r, Some(vec![None; f.len()])));
                continue;
            };
            let entry = row.get_or_insert_with(|| (r, Some(vec![None; f.len()])));
            let Some(values) = &mut entry.1 else { continue };
            let used: usize = values
                .iter()
                .map(|v| match v {
                    Some(Ok(Cell::Text(t))) => t.len(),
                    _ => 0,
                })
                .sum();
            if used + text_len(c.get_value()) > limits.row_bytes {
                entry.1 = None;
                continue;
            }
            values[place] = Some(cell_of(c.get_value()));
        }
        // A sheet of only a header still needs every wanted column.
        if fields.is_none()
            && let Some((_, names)) = &header
            && let Err(column) = resolve_columns(wanted, &names.names)
        {
            return Err(ReadError::MissingColumn {
                path: path.to_owned(),
                where_: sheet_prefix(&name),
                column,
                available: names.names.clone(),
            });
        }
        if let Some((f, places)) = &fields {
            emit(row.take().map(|row| spread(row, f, places)), f, &mut batch);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch));
    }
    Ok(())
}

/// A row's values for each wanted field: a column wanted more than once gives its value to
/// each of its places.
fn spread(row: SheetRow, fields: &[usize], places: &[Option<usize>]) -> SheetRow {
    let (r, values) = row;
    let values = values.map(|mut values| {
        for (i, &c) in fields.iter().enumerate() {
            if let Some(first) = places[c]
                && first != i
            {
                values[i] = values[first].clone();
            }
        }
        values
    });
    (r, values)
}

/// Reads an xlsx workbook.
pub struct XlsxReader {
    path: PathBuf,
    rx: Receiver<Result<Vec<Item>, ReadError>>,
    /// Items received and not given yet.
    pending: std::collections::VecDeque<Item>,
    done: bool,
    batch_bytes: usize,
}

impl std::fmt::Debug for XlsxReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxReader")
            .field("path", &self.path)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl XlsxReader {
    /// Opens `path` (checked and opened here; its sheets are read on a thread).
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<XlsxReader, ReadError> {
        let book = open_workbook(path, limits)?;
        let (tx, rx) = sync_channel(4);
        let (p, wanted, l) = (path.to_owned(), options.columns.clone(), limits.clone());
        std::thread::Builder::new()
            .name("xlsx-reader".into())
            .spawn(move || {
                if let Err(e) = guard(&p, || read_sheets(&p, book, &wanted, &l, &tx)) {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| ReadError::io(path, e))?;
        Ok(XlsxReader {
            path: path.to_owned(),
            rx,
            pending: Default::default(),
            done: false,
            batch_bytes: limits.batch_bytes,
        })
    }
}

impl RecordReader for XlsxReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = false;
        let mut bytes = 0;
        while out.len() < max || !added {
            if let Some(item) = self.pending.pop_front() {
                bytes += item_bytes(&item);
                out.push(item);
                added = true;
                if out.len() >= max || bytes >= self.batch_bytes {
                    break;
                }
                continue;
            }
            if self.done {
                break;
            }
            match self.rx.recv() {
                Ok(Ok(items)) => self.pending.extend(items),
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(added)
    }
}
#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::data::export::Encoder;
    use crate::data::export::xlsx::XlsxEncoder;
    use chrono::NaiveDate;
    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
    use proptest::prelude::*;
    use zip::CompressionMethod;
    use zip::write::SimpleFileOptions;

    fn read_all(path: &Path, columns: &[&str]) -> Result<Vec<Item>, ReadError> {
        read_all_with(path, columns, &Limits::default())
    }

    fn read_all_with(
        path: &Path,
        columns: &[&str],
        limits: &Limits,
    ) -> Result<Vec<Item>, ReadError> {
        super::super::read_items(
            &mut XlsxReader::open(path, &super::super::options(columns), limits)?,
            1000,
        )
    }

    /// A zip archive of `parts`, each compressed with `method`.
    fn archive(parts: &[(&str, Vec<u8>)], method: CompressionMethod) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(false);
        for (name, bytes) in parts {
            w.start_file(*name, options).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#;
    const PACKAGE_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
    const WORKBOOK: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Bars" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
    const WORKBOOK_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#;
    const SHEET: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:B3"/><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c></row><row r="2"><c r="A2" t="s"><v>2</v></c><c r="B2"><v>1.5</v></c></row><row r="3"><c r="A3" t="inlineStr"><is><t>AAPL</t></is></c><c r="B3"><v>-2</v></c></row></sheetData></worksheet>"#;

    fn shared_strings(unique: &str, strings: &[&str]) -> String {
        let mut s = format!(
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{unique}" uniqueCount="{unique}">"#
        );
        for t in strings {
            s.push_str(&format!("<si><t>{t}</t></si>"));
        }
        s.push_str("</sst>");
        s
    }

    /// The parts of a small workbook: a sheet "Bars" of symbol and close, with `sst` as its
    /// shared strings and `sheet` as its sheet.
    fn parts(sst: String, sheet: String) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("[Content_Types].xml", CONTENT_TYPES.into()),
            ("_rels/.rels", PACKAGE_RELS.into()),
            ("xl/workbook.xml", WORKBOOK.into()),
            ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS.into()),
            ("xl/worksheets/sheet1.xml", sheet.into_bytes()),
            ("xl/sharedStrings.xml", sst.into_bytes()),
        ]
    }

    fn small_workbook(method: CompressionMethod) -> Vec<u8> {
        archive(
            &parts(
                shared_strings("3", &["symbol", "close", "GOOG"]),
                SHEET.to_owned(),
            ),
            method,
        )
    }

    #[test]
    fn an_export_reads_back_sheet_by_sheet_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.xlsx");
        let goog = SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1);
        let eur = SeriesKey::new(Symbol::new("EURUSD=X").unwrap(), Interval::H1);
        let day = NaiveDate::from_ymd_opt(2004, 8, 19).unwrap();
        let t0 = Timestamp::from_date(day);
        let mut b1 = Bar::ohlcv(t0, 49.81, 51.84, 47.80, 49.98, 44_871_361.0);
        b1.adj_close = Some(49.98);
        let b2 = Bar::ohlcv(
            Timestamp(t0.0 + 3_600 * 5 + 7),
            1.0831,
            1.0842,
            1.0829,
            1.084,
            0.0,
        );
        {
            let file = File::create(&path).unwrap();
            let mut e: Box<dyn Encoder> = Box::new(
                XlsxEncoder::new(file, t0.0, crate::data::export::xlsx::MAX_SHEET_ROWS).unwrap(),
            );
            e.write(&eur, &[b2]).unwrap();
            e.write(&goog, &[b1]).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            header(&path, &Limits::default()).unwrap()[..4],
            ["symbol", "interval", "ts", "open"]
        );
        let items = read_all(&path, &["symbol", "ts", "close", "adj_close"]).unwrap();
        let record = |sheet: &str, cells| {
            Item::Record(Record {
                row: 2,
                sheet: Some(sheet.into()),
                cells,
            })
        };
        assert_eq!(
            items,
            vec![
                record(
                    "EURUSD=X 1h",
                    vec![
                        Cell::Text("EURUSD=X".into()),
                        Cell::DateTime(day.and_hms_opt(5, 0, 7).unwrap()),
                        Cell::Float(1.084),
                        Cell::Null
                    ]
                ),
                record(
                    "GOOG 1d",
                    vec![
                        Cell::Text("GOOG".into()),
                        Cell::DateTime(day.and_hms_opt(0, 0, 0).unwrap()),
                        Cell::Float(49.98),
                        Cell::Float(49.98)
                    ]
                ),
            ]
        );
        let e = read_all(&path, &["volume", "nope"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sheet \"EURUSD=X 1h\": no column \"nope\""),
            "{e}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_workbook_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.xlsx");
        std::fs::write(&path, "a,b\n").unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("x.xlsx: not a readable xlsx workbook"), "{e}");
        let mut ole = OLE_SIGNATURE.to_vec();
        ole.resize(4096, 0);
        std::fs::write(&path, ole).unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("encrypted (password-protected) workbook"), "{e}");
    }

    #[test]
    fn a_hand_made_workbook_reads_and_a_column_wanted_twice_gets_its_value_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.xlsx");
        std::fs::write(&path, small_workbook(CompressionMethod::Deflated)).unwrap();
        assert_eq!(
            header(&path, &Limits::default()).unwrap(),
            ["symbol", "close"]
        );
        let items = read_all(&path, &["close", "symbol", "CLOSE"]).unwrap();
        let record = |row, cells| {
            Item::Record(Record {
                row,
                sheet: Some("Bars".into()),
                cells,
            })
        };
        assert_eq!(
            items,
            vec![
                record(
                    2,
                    vec![
                        Cell::Float(1.5),
                        Cell::Text("GOOG".into()),
                        Cell::Float(1.5)
                    ]
                ),
                record(
                    3,
                    vec![
                        Cell::Float(-2.0),
                        Cell::Text("AAPL".into()),
                        Cell::Float(-2.0)
                    ]
                ),
            ]
        );
    }

    /// The 622-byte attack: shared strings declaring 10^11 unique strings made calamine
    /// reserve room for them (an allocation failure aborts the process).
    #[test]
    fn shared_strings_declaring_absurd_counts_are_refused_before_calamine_opens_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.xlsx");
        let sst = shared_strings("100000000000", &["symbol", "close", "GOOG"]);
        std::fs::write(
            &path,
            archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
        )
        .unwrap();
        for e in [
            header(&path, &Limits::default()).unwrap_err(),
            XlsxReader::open(
                &path,
                &super::super::options(&["close"]),
                &Limits::default(),
            )
            .unwrap_err(),
        ] {
            let e = e.to_string();
            assert!(
                e.contains("100000000000 unique strings, more than the"),
                "{e}"
            );
            assert!(e.contains("bomb.xlsx: not a readable xlsx workbook"), "{e}");
        }
        // More than the part could hold, under the fixed cap.
        let sst = shared_strings("1000", &["symbol", "close", "GOOG"]);
        std::fs::write(
            &path,
            archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Stored),
        )
        .unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("1000 unique strings"), "{e}");
    }

    #[test]
    fn zip_bombs_are_refused_by_declared_size_and_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.xlsx");
        let mut sheet = SHEET.replace("</worksheet>", "");
        sheet.push_str(&" ".repeat(2 << 20));
        sheet.push_str("</worksheet>");
        std::fs::write(
            &path,
            archive(
                &parts(shared_strings("3", &["symbol", "close", "GOOG"]), sheet),
                CompressionMethod::Deflated,
            ),
        )
        .unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < 64 << 10);
        // Within the default limits the sheet reads.
        assert_eq!(read_all(&path, &["close"]).unwrap().len(), 2);
        let small = Limits {
            xlsx_entry_bytes: 1 << 20,
            ..Limits::default()
        };
        let e = header(&path, &small).unwrap_err().to_string();
        assert!(
            e.contains("part \"xl/worksheets/sheet1.xml\" is 2097")
                && e.contains("over the limit of 1 MiB"),
            "{e}"
        );
        let ratio = Limits {
            ratio_checked_above: 1 << 20,
            compression_ratio: 100,
            ..Limits::default()
        };
        let e = read_all_with(&path, &["close"], &ratio)
            .unwrap_err()
            .to_string();
        assert!(e.contains("over 100 to 1: a zip bomb?"), "{e}");
    }

    #[test]
    fn parts_read_into_memory_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.xlsx");
        let mut p = parts(
            shared_strings("3", &["symbol", "close", "GOOG"]),
            SHEET.to_owned(),
        );
        let xfs = "<xf numFmtId=\"0\" fontId=\"0\"/>".repeat(5);
        p.push((
            "xl/styles.xml",
            format!(
                "<styleSheet><fonts><font><name val=\"{}\"/></font></fonts><cellXfs>{xfs}</cellXfs></styleSheet>",
                "x".repeat(300)
            )
            .into_bytes(),
        ));
        std::fs::write(&path, archive(&p, CompressionMethod::Deflated)).unwrap();
        assert_eq!(header(&path, &Limits::default()).unwrap().len(), 2);
        let few = Limits {
            xlsx_styles: 4,
            ..Limits::default()
        };
        let e = header(&path, &few).unwrap_err().to_string();
        assert!(e.contains("more than 4 cell formats"), "{e}");
        let short = Limits {
            xlsx_attribute_bytes: 200,
            ..Limits::default()
        };
        let e = header(&path, &short).unwrap_err().to_string();
        assert!(
            e.contains("\"xl/styles.xml\": it has an attribute value longer than 200 bytes"),
            "{e}"
        );
        // A comment could hide a tag from the scan.
        p.last_mut().unwrap().1 = b"<styleSheet><!-- <xf/> --></styleSheet>".to_vec();
        std::fs::write(&path, archive(&p, CompressionMethod::Deflated)).unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("it holds a comment"), "{e}");
    }

    #[test]
    fn rows_longer_than_the_limit_are_refused_without_copying_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.xlsx");
        let long = "y".repeat(2 << 20);
        // A header of a 2 MiB name.
        let sst = shared_strings("3", &[&long, "close", "GOOG"]);
        std::fs::write(
            &path,
            archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
        )
        .unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(
            e.contains("sheet \"Bars\": the header row: the row is longer than 1 MiB"),
            "{e}"
        );
        assert!(e.len() < 400, "{e}");
        // A data row referring to it: a problem of that row, the rest goes on.
        let sst = shared_strings("3", &["symbol", "close", &long]);
        std::fs::write(
            &path,
            archive(&parts(sst, SHEET.to_owned()), CompressionMethod::Deflated),
        )
        .unwrap();
        let items = read_all(&path, &["symbol", "close"]).unwrap();
        assert_eq!(
            items[0],
            Item::Problem {
                row: 2,
                sheet: Some("Bars".into()),
                message: row_too_long(&Limits::default()),
            }
        );
        assert_eq!(items.len(), 2);
        // A cell beyond column XFD.
        let sheet = SHEET.replace("B3", "XFE3");
        std::fs::write(
            &path,
            archive(
                &parts(shared_strings("3", &["symbol", "close", "GOOG"]), sheet),
                CompressionMethod::Deflated,
            ),
        )
        .unwrap();
        let e = read_all(&path, &["symbol"]).unwrap_err().to_string();
        assert!(
            e.contains("a cell in column 16385, beyond Excel's last (XFD)"),
            "{e}"
        );
    }

    use super::super::fuzz;

    /// Reads `bytes` as a workbook every way; never panics, and every message is short.
    fn read_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.xlsx");
        std::fs::write(&path, bytes).unwrap();
        let limits = Limits::default();
        if let Err(e) = header(&path, &limits) {
            fuzz::short(&e)?;
        }
        fuzz::drain(
            XlsxReader::open(&path, &super::super::options(&["close", "symbol"]), &limits),
            100,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_workbooks_never_panic(mutation in fuzz::mutation(64), stored in any::<bool>()) {
            let base = small_workbook(if stored {
                CompressionMethod::Stored
            } else {
                CompressionMethod::Deflated
            });
            read_every_way(&fuzz::mutate(base, mutation))?;
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            read_every_way(&bytes)?;
        }
    }
}
