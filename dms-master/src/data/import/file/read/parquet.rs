//! Parquet: only the wanted columns are read (by their top-level names), row group by row
//! group; within a row group the same number of records is read from every wanted column's
//! typed reader (values and definition levels), a chunk at a time, and the records put
//! together row by row. Memory holds one chunk of values and each column's current page.
//!
//! Types, by physical and logical type:
//! - BOOLEAN → [`Cell::Bool`]; INT32 / INT64 → [`Cell::Int`];
//! - INT32 DATE → [`Cell::Date`];
//! - INT64 TIMESTAMP(MILLIS | MICROS | NANOS) → [`Cell::Timestamp`] when adjusted to UTC,
//!   [`Cell::DateTime`] (naive: the import's time zone applies) when not; INT96 (the legacy
//!   timestamps of Spark and older pandas) → [`Cell::Timestamp`];
//! - INT32 / INT64 DECIMAL(scale) → [`Cell::Float`] (the value / 10^scale);
//! - FLOAT / DOUBLE → [`Cell::Float`];
//! - BYTE_ARRAY (STRING, ENUM, JSON or none) → [`Cell::Text`], trimmed (empty → null);
//! - a null (definition level below the column's maximum) → [`Cell::Null`].
//!
//! Nested or repeated columns, BYTE_ARRAY decimals and FIXED_LEN_BYTE_ARRAY columns are not
//! read: wanting one is an error naming the column.
//!
//! The parquet crate trusts what a file declares, so before it reads (in [`header`] as in
//! [`ParquetReader`]) the file is checked against [`Limits`]:
//! - the footer: the metadata's declared length, against the file's size and
//!   [`Limits::parquet_metadata_bytes`];
//! - the metadata, walked as parquet's Thrift decoder reads it ([`check_metadata`]): the
//!   schema's size and nesting (parquet reserves room for each group's declared number of
//!   children, and builds the tree recursively), the number of row groups; an encoding that
//!   parquet would read differently from this walk is refused;
//! - once parsed: each column chunk's offsets and sizes (within the file; its uncompressed
//!   size under [`Limits::parquet_chunk_bytes`]);
//! - before a row group is read, the page headers of each wanted column chunk
//!   ([`check_pages`]): a page's sizes within its chunk and under
//!   [`Limits::parquet_page_bytes`] (parquet allocates a page's declared uncompressed size), a
//!   dictionary's declared number of values within its page (parquet allocates a slot for
//!   each), and no DELTA_LENGTH_BYTE_ARRAY or DELTA_BYTE_ARRAY text pages (parquet allocates
//!   a slot for each value those encodings declare inside the compressed data, which cannot
//!   be checked from outside).
//!
//! A row's texts are at most [`Limits::row_bytes`] (a longer row is a problem of that row,
//! its texts never copied) and a batch stops at [`Limits::batch_bytes`] of text: a dictionary
//! value repeated in every row is copied once per row.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate};
use parquet::basic::{ConvertedType, LogicalType, TimeUnit, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, DataType, FixedLenByteArray, Int96};
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnDescPtr;

use super::{
    Cell, Item, Limits, ReadError, ReadOptions, Record, RecordReader, excerpt, guard, item_bytes,
    resolve_columns, row_too_long, size,
};

/// How a column's values become cells.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Date,
    /// Units per second, adjusted to UTC.
    Timestamp(i64, bool),
    Int96,
    /// Divide by this.
    Decimal(f64),
    Float,
    Text,
}

/// Rows read from each column at a time (their values, not yet cells).
const CHUNK_ROWS: usize = 4096;

/// Reads a Parquet file.
pub struct ParquetReader {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    /// The file again, for the checks of page headers.
    file: File,
    limits: Limits,
    /// The leaf column index and kind of each wanted column.
    columns: Vec<(usize, Kind, ColumnDescPtr)>,
    /// The next row group to read.
    next_group: usize,
    /// The current row group's column readers, and its rows not read yet.
    readers: Vec<ColumnReader>,
    rows_left: usize,
    /// The values read and not given yet, per wanted column; the rows they hold and the next.
    chunk: Vec<Values>,
    chunk_rows: usize,
    chunk_next: usize,
    /// Rows given so far.
    rows_given: u64,
    total_rows: u64,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("path", &self.path)
            .field("next_group", &self.next_group)
            .finish_non_exhaustive()
    }
}

fn format_error(path: &Path, e: &parquet::errors::ParquetError) -> ReadError {
    unreadable(path, e)
}

fn unreadable(path: &Path, message: impl std::fmt::Display) -> ReadError {
    ReadError::format(
        path,
        excerpt(&format!("not a readable Parquet file: {message}")),
    )
}

/// Opens `path` once its footer and metadata passed the checks; gives the reader, a handle of
/// the file, and the file's size.
fn open_file(
    path: &Path,
    limits: &Limits,
) -> Result<(SerializedFileReader<File>, File), ReadError> {
    let mut file = File::open(path).map_err(|e| ReadError::io(path, e))?;
    let len = check_footer(&mut file, path, limits)?;
    let again = file.try_clone().map_err(|e| ReadError::io(path, e))?;
    let reader = guard(path, || {
        SerializedFileReader::new(file).map_err(|e| format_error(path, &e))
    })?;
    check_row_groups(reader.metadata(), len, limits).map_err(|m| unreadable(path, m))?;
    Ok((reader, again))
}

/// Checks the footer's declared metadata length, and the metadata ([`check_metadata`]); gives
/// the file's size.
fn check_footer(file: &mut File, path: &Path, limits: &Limits) -> Result<u64, ReadError> {
    let io = |e: std::io::Error| ReadError::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    if len < 12 {
        return Err(unreadable(path, "it is too short"));
    }
    let mut footer = [0u8; 8];
    file.seek(SeekFrom::Start(len - 8)).map_err(io)?;
    file.read_exact(&mut footer).map_err(io)?;
    match &footer[4..] {
        b"PAR1" => {}
        b"PARE" => return Err(unreadable(path, "an encrypted file, which is not read")),
        _ => return Err(unreadable(path, "no Parquet footer (PAR1) at its end")),
    }
    let declared = u64::from(u32::from_le_bytes([
        footer[0], footer[1], footer[2], footer[3],
    ]));
    if declared + 12 > len {
        return Err(unreadable(
            path,
            format!(
                "its footer declares {declared} bytes of metadata, more than the file's {len} bytes"
            ),
        ));
    }
    if declared > limits.parquet_metadata_bytes {
        return Err(unreadable(
            path,
            format!(
                "its footer declares {declared} bytes of metadata, over the limit of {}",
                size(limits.parquet_metadata_bytes)
            ),
        ));
    }
    let mut metadata = vec![0u8; declared as usize];
    file.seek(SeekFrom::Start(len - 8 - declared)).map_err(io)?;
    file.read_exact(&mut metadata).map_err(io)?;
    check_metadata(&metadata, limits)
        .map_err(|m| unreadable(path, format!("its metadata: {m}")))?;
    Ok(len)
}

// ---------------------------------------------------------------------------------------------
// A walk of Thrift's compact protocol, as the parquet crate (60) reads it.

/// Bytes a walk reads: the footer's metadata, or a column chunk's bytes.
trait Source {
    fn byte(&mut self) -> Result<u8, String>;
    fn skip(&mut self, n: u64) -> Result<(), String>;
    /// Bytes left to read.
    fn remaining(&self) -> u64;
}

const ENDS_EARLY: &str = "it ends inside a Thrift structure";

struct Slice<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Source for Slice<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or(ENDS_EARLY)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() {
            return Err(ENDS_EARLY.into());
        }
        self.pos += n as usize;
        Ok(())
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
}

/// A range of a file, read through a buffer.
struct Range<'a, R> {
    input: &'a mut BufReader<R>,
    remaining: u64,
    /// Bytes read so far.
    read: u64,
}

impl<R: Read + Seek> Source for Range<'_, R> {
    fn byte(&mut self) -> Result<u8, String> {
        if self.remaining == 0 {
            return Err(ENDS_EARLY.into());
        }
        let mut b = [0u8];
        self.input
            .read_exact(&mut b)
            .map_err(|e| format!("{ENDS_EARLY} ({e})"))?;
        self.remaining -= 1;
        self.read += 1;
        Ok(b[0])
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining {
            return Err(ENDS_EARLY.into());
        }
        self.input
            .seek_relative(n as i64)
            .map_err(|e| e.to_string())?;
        self.remaining -= n;
        self.read += n;
        Ok(())
    }

    fn remaining(&self) -> u64 {
        self.remaining
    }
}

/// Compact-protocol types.
mod wire {
    pub(super) const TRUE: u8 = 1;
    pub(super) const FALSE: u8 = 2;
    pub(super) const BYTE: u8 = 3;
    pub(super) const I16: u8 = 4;
    pub(super) const I32: u8 = 5;
    pub(super) const I64: u8 = 6;
    pub(super) const DOUBLE: u8 = 7;
    pub(super) const BINARY: u8 = 8;
    pub(super) const LIST: u8 = 9;
    pub(super) const SET: u8 = 10;
    pub(super) const MAP: u8 = 11;
    pub(super) const STRUCT: u8 = 12;
    pub(super) const UUID: u8 = 13;
}

/// The depth parquet's skipping of unknown fields stops at.
const SKIP_DEPTH: u32 = 64;

/// An unsigned varint, as parquet reads one (any length; bits past 64 are lost).
fn vlq(src: &mut impl Source) -> Result<u64, String> {
    let mut value = 0u64;
    let mut shift = 0u32;
    loop {
        let b = src.byte()?;
        value |= u64::from(b & 0x7f).wrapping_shl(shift);
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift = shift.wrapping_add(7);
    }
}

fn zigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// A struct field's type and id; None at the struct's end.
fn field_begin(src: &mut impl Source, last: i16) -> Result<Option<(u8, i16)>, String> {
    let b = src.byte()?;
    if b & 0x0f == 0 {
        return Ok(None);
    }
    let wire = b & 0x0f;
    if wire > wire::UUID {
        return Err(format!("an unknown Thrift type {wire}"));
    }
    let delta = b >> 4;
    let id = if delta != 0 {
        last.checked_add(i16::from(delta))
            .ok_or("a Thrift field id overflows")?
    } else {
        zigzag(vlq(src)?) as i16
    };
    Ok(Some((wire, id)))
}

/// A list's element type and size.
fn list_begin(src: &mut impl Source) -> Result<(u8, u64), String> {
    let h = src.byte()?;
    if h == 0 {
        return Ok((wire::BYTE, 0));
    }
    let element = h & 0x0f;
    if element == 0 || element > wire::UUID {
        return Err(format!("an unknown Thrift list type {element}"));
    }
    let size = match h >> 4 {
        15 => {
            let n = vlq(src)?;
            if n > i32::MAX as u64 {
                return Err("a Thrift list declares over 2^31 elements".into());
            }
            n
        }
        n => u64::from(n),
    };
    Ok((element, size))
}

fn is_bool(t: u8) -> bool {
    t == wire::TRUE || t == wire::FALSE
}

/// Skips a value of type `t`, as parquet skips a field it does not know; refuses what parquet
/// would skip without reading it (booleans in a list or map: it takes them to be 0 bytes).
fn skip(src: &mut impl Source, t: u8, depth: u32) -> Result<(), String> {
    if depth == 0 {
        return Err("Thrift structures nested too deep".into());
    }
    match t {
        wire::TRUE | wire::FALSE => Ok(()),
        wire::BYTE => src.byte().map(|_| ()),
        wire::I16 | wire::I32 | wire::I64 => vlq(src).map(|_| ()),
        wire::DOUBLE => src.skip(8),
        wire::BINARY => {
            let n = vlq(src)?;
            src.skip(n)
        }
        wire::LIST | wire::SET => {
            let (element, size) = list_begin(src)?;
            if size == 0 {
                return Ok(());
            }
            if is_bool(element) {
                return Err("a Thrift list of booleans".into());
            }
            if size > src.remaining() {
                return Err(ENDS_EARLY.into());
            }
            for _ in 0..size {
                skip(src, element, depth - 1)?;
            }
            Ok(())
        }
        wire::MAP => {
            let size = vlq(src)?;
            if size > i32::MAX as u64 {
                return Err("a Thrift map declares over 2^31 entries".into());
            }
            if size == 0 {
                return Ok(());
            }
            let kv = src.byte()?;
            let (k, v) = (kv >> 4, kv & 0x0f);
            if k == 0 || k > wire::UUID || v == 0 || v > wire::UUID {
                return Err("an unknown Thrift map type".into());
            }
            if is_bool(k) || is_bool(v) {
                return Err("a Thrift map of booleans".into());
            }
            if size > src.remaining() {
                return Err(ENDS_EARLY.into());
            }
            for _ in 0..size {
                skip(src, k, depth - 1)?;
                skip(src, v, depth - 1)?;
            }
            Ok(())
        }
        wire::STRUCT => {
            while let Some((t, _)) = field_begin(src, 0)? {
                skip(src, t, depth - 1)?;
            }
            Ok(())
        }
        wire::UUID => src.skip(16),
        _ => Err(format!("an unknown Thrift type {t}")),
    }
}

/// What parquet reads a known field as (whatever type it is written with: so the walk
/// refuses a field written with another type, which parquet would read differently).
#[derive(Debug, Clone, Copy)]
enum Field {
    /// An i32 (or an enum), kept in a slot of the walk if Some.
    I32(Option<usize>),
    Byte,
    Binary,
    Bool,
    Struct(&'static [(i16, Field)]),
    /// A union: its variants; whether an unknown variant is skipped (or an error).
    Union(&'static [(i16, Field)], bool),
    /// An empty struct (a union's variant).
    Empty,
}

/// Slots of the values a walk keeps.
const PAGE_TYPE: usize = 0;
const UNCOMPRESSED: usize = 1;
const COMPRESSED: usize = 2;
const ENCODING_V1: usize = 3;
const ENCODING_V2: usize = 4;
const DICTIONARY_VALUES: usize = 5;
const NUM_CHILDREN: usize = 6;
type Slots = [Option<i32>; 7];

const TIME_UNIT: &[(i16, Field)] = &[(1, Field::Empty), (2, Field::Empty), (3, Field::Empty)];
const DECIMAL: &[(i16, Field)] = &[(1, Field::I32(None)), (2, Field::I32(None))];
const TIMESTAMP: &[(i16, Field)] = &[(1, Field::Bool), (2, Field::Union(TIME_UNIT, false))];
const INTEGER: &[(i16, Field)] = &[(1, Field::Byte), (2, Field::Bool)];
const VARIANT: &[(i16, Field)] = &[(1, Field::Byte)];
const GEOMETRY: &[(i16, Field)] = &[(1, Field::Binary)];
const GEOGRAPHY: &[(i16, Field)] = &[(1, Field::Binary), (2, Field::I32(None))];
const LOGICAL_TYPE: &[(i16, Field)] = &[
    (1, Field::Empty),
    (2, Field::Empty),
    (3, Field::Empty),
    (4, Field::Empty),
    (5, Field::Struct(DECIMAL)),
    (6, Field::Empty),
    (7, Field::Struct(TIMESTAMP)),
    (8, Field::Struct(TIMESTAMP)),
    (10, Field::Struct(INTEGER)),
    (11, Field::Empty),
    (12, Field::Empty),
    (13, Field::Empty),
    (14, Field::Empty),
    (15, Field::Empty),
    (16, Field::Struct(VARIANT)),
    (17, Field::Struct(GEOMETRY)),
    (18, Field::Struct(GEOGRAPHY)),
    (19, Field::Empty),
];
const SCHEMA_ELEMENT: &[(i16, Field)] = &[
    (1, Field::I32(None)),
    (2, Field::I32(None)),
    (3, Field::I32(None)),
    (4, Field::Binary),
    (5, Field::I32(Some(NUM_CHILDREN))),
    (6, Field::I32(None)),
    (7, Field::I32(None)),
    (8, Field::I32(None)),
    (9, Field::I32(None)),
    (10, Field::Union(LOGICAL_TYPE, true)),
];
/// A page header as parquet reads it without statistics (they are skipped).
const DATA_PAGE: &[(i16, Field)] = &[
    (1, Field::I32(None)),
    (2, Field::I32(Some(ENCODING_V1))),
    (3, Field::I32(None)),
    (4, Field::I32(None)),
];
const DICTIONARY_PAGE: &[(i16, Field)] = &[
    (1, Field::I32(Some(DICTIONARY_VALUES))),
    (2, Field::I32(None)),
    (3, Field::Bool),
];
const DATA_PAGE_V2: &[(i16, Field)] = &[
    (1, Field::I32(None)),
    (2, Field::I32(None)),
    (3, Field::I32(None)),
    (4, Field::I32(Some(ENCODING_V2))),
    (5, Field::I32(None)),
    (6, Field::I32(None)),
    (7, Field::Bool),
];
const PAGE_HEADER: &[(i16, Field)] = &[
    (1, Field::I32(Some(PAGE_TYPE))),
    (2, Field::I32(Some(UNCOMPRESSED))),
    (3, Field::I32(Some(COMPRESSED))),
    (4, Field::I32(None)),
    (5, Field::Struct(DATA_PAGE)),
    (6, Field::Struct(&[])),
    (7, Field::Struct(DICTIONARY_PAGE)),
    (8, Field::Struct(DATA_PAGE_V2)),
];

fn expect(wire: u8, wanted: u8) -> Result<(), String> {
    if wire == wanted || (is_bool(wanted) && is_bool(wire)) {
        Ok(())
    } else {
        Err(format!(
            "a Thrift field of type {wire} where {wanted} is expected (not read)"
        ))
    }
}

/// Walks a struct whose known fields are `fields`.
fn walk_struct(
    src: &mut impl Source,
    fields: &[(i16, Field)],
    slots: &mut Slots,
) -> Result<(), String> {
    let mut last = 0;
    while let Some((t, id)) = field_begin(src, last)? {
        match fields.iter().find(|(i, _)| *i == id) {
            Some((_, field)) => walk_field(src, t, *field, slots)?,
            None => skip(src, t, SKIP_DEPTH)?,
        }
        last = id;
    }
    Ok(())
}

fn walk_field(src: &mut impl Source, t: u8, field: Field, slots: &mut Slots) -> Result<(), String> {
    match field {
        Field::I32(slot) => {
            expect(t, wire::I32)?;
            let v = zigzag(vlq(src)?) as i32;
            if let Some(s) = slot {
                slots[s] = Some(v);
            }
        }
        Field::Byte => {
            expect(t, wire::BYTE)?;
            src.byte()?;
        }
        Field::Binary => {
            expect(t, wire::BINARY)?;
            let n = vlq(src)?;
            src.skip(n)?;
        }
        Field::Bool => expect(t, wire::TRUE)?,
        Field::Struct(fields) => {
            expect(t, wire::STRUCT)?;
            walk_struct(src, fields, slots)?;
        }
        Field::Union(variants, unknown) => {
            expect(t, wire::STRUCT)?;
            let Some((vt, id)) = field_begin(src, 0)? else {
                return Err("an empty Thrift union".into());
            };
            match variants.iter().find(|(i, _)| *i == id) {
                Some((_, variant)) => walk_field(src, vt, *variant, slots)?,
                None if unknown => skip(src, vt, SKIP_DEPTH)?,
                None => return Err(format!("an unknown Thrift union variant {id}")),
            }
            if field_begin(src, id)?.is_some() {
                return Err("a Thrift union of more than one field".into());
            }
        }
        Field::Empty => {
            expect(t, wire::STRUCT)?;
            if src.byte()? != 0 {
                return Err("an empty Thrift struct has fields".into());
            }
        }
    }
    Ok(())
}

/// Walks a file's metadata (`FileMetaData`) up to its row groups, as parquet reads it: checks
/// its schema ([`check_schema`]) and the number of its row groups. Fields other than the
/// version, schema and number of rows before the row groups are refused (writers put them
/// after).
fn check_metadata(buf: &[u8], limits: &Limits) -> Result<(), String> {
    let src = &mut Slice { buf, pos: 0 };
    let mut last = 0;
    let mut schema = false;
    while let Some((t, id)) = field_begin(src, last)? {
        match id {
            1 => {
                expect(t, wire::I32)?;
                vlq(src)?;
            }
            2 if !schema => {
                expect(t, wire::LIST)?;
                check_schema(src, limits)?;
                schema = true;
            }
            3 => {
                expect(t, wire::I64)?;
                vlq(src)?;
            }
            4 => {
                if !schema {
                    return Err("its row groups come before its schema".into());
                }
                expect(t, wire::LIST)?;
                let (element, groups) = list_begin(src)?;
                if groups > 0 && element != wire::STRUCT {
                    return Err("its row groups are not structures".into());
                }
                if groups > src.remaining() {
                    return Err(ENDS_EARLY.into());
                }
                if groups > limits.parquet_row_groups as u64 {
                    return Err(format!(
                        "{groups} row groups, over the limit of {}",
                        limits.parquet_row_groups
                    ));
                }
                return Ok(());
            }
            5..=7 => {
                return Err(
                    "key-value metadata, a writer or column orders before its row groups \
                     (not read)"
                        .into(),
                );
            }
            _ => skip(src, t, SKIP_DEPTH)?,
        }
        last = id;
    }
    Ok(())
}

/// Walks the schema (a list of `SchemaElement`, a tree in depth-first order by each group's
/// number of children): at most `limits.parquet_columns` elements, no group declaring more
/// children than elements follow it, nested at most `limits.parquet_schema_depth` deep.
fn check_schema(src: &mut Slice<'_>, limits: &Limits) -> Result<(), String> {
    let (element, n) = list_begin(src)?;
    if n > 0 && element != wire::STRUCT {
        return Err("its schema is not a list of structures".into());
    }
    if n > src.remaining() {
        return Err(ENDS_EARLY.into());
    }
    if n > limits.parquet_columns as u64 {
        return Err(format!(
            "its schema has {n} elements, over the limit of {}",
            limits.parquet_columns
        ));
    }
    let n = n as usize;
    // The children each open group still expects.
    let mut open: Vec<u64> = Vec::new();
    for i in 0..n {
        let mut slots = Slots::default();
        walk_struct(src, SCHEMA_ELEMENT, &mut slots)?;
        if let Some(top) = open.last_mut() {
            *top -= 1;
        }
        match slots[NUM_CHILDREN] {
            Some(k) if k < 0 => {
                return Err(format!("a schema element declares {k} children"));
            }
            Some(k) if k > 0 => {
                if k as usize > n - i - 1 {
                    return Err(format!(
                        "a schema element declares {k} children, more than follow it"
                    ));
                }
                open.push(k as u64);
                if open.len() > limits.parquet_schema_depth {
                    return Err(format!(
                        "its schema is nested deeper than {}, the limit",
                        limits.parquet_schema_depth
                    ));
                }
            }
            _ => {}
        }
        while open.last() == Some(&0) {
            open.pop();
        }
    }
    Ok(())
}

/// Checks the parsed metadata: the number of row groups and columns, and each column chunk's
/// offsets and sizes (within the file of `len` bytes; uncompressed under the limit).
fn check_row_groups(metadata: &ParquetMetaData, len: u64, limits: &Limits) -> Result<(), String> {
    if metadata.num_row_groups() > limits.parquet_row_groups {
        return Err(format!(
            "{} row groups, over the limit of {}",
            metadata.num_row_groups(),
            limits.parquet_row_groups
        ));
    }
    let columns = metadata.file_metadata().schema_descr().num_columns();
    if columns > limits.parquet_columns {
        return Err(format!(
            "{columns} columns, over the limit of {}",
            limits.parquet_columns
        ));
    }
    for (g, group) in metadata.row_groups().iter().enumerate() {
        for c in group.columns() {
            chunk_range(c, len, limits).map_err(|m| {
                format!(
                    "row group {g}: column {:?}: {m}",
                    excerpt(&c.column_path().string())
                )
            })?;
        }
    }
    Ok(())
}

/// A column chunk's first byte and compressed size, checked to be within the file of `len`
/// bytes, its uncompressed size under the limit.
fn chunk_range(c: &ColumnChunkMetaData, len: u64, limits: &Limits) -> Result<(u64, u64), String> {
    let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
    let (compressed, uncompressed) = (c.compressed_size(), c.uncompressed_size());
    if c.data_page_offset() < 0 || start < 0 || compressed < 0 || uncompressed < 0 {
        return Err("a negative offset or size".into());
    }
    let (start, compressed) = (start as u64, compressed as u64);
    if start.saturating_add(compressed) > len {
        return Err(format!(
            "{compressed} bytes from byte {start}, past the end of the file ({len} bytes)"
        ));
    }
    if uncompressed as u64 > limits.parquet_chunk_bytes {
        return Err(format!(
            "{uncompressed} bytes uncompressed, over the limit of {}",
            size(limits.parquet_chunk_bytes)
        ));
    }
    Ok((start, compressed))
}

/// The fewest bytes a value of a column takes in a plain-encoded page, and the bytes parquet
/// holds it in.
fn value_sizes(physical: PhysicalType, type_length: i32) -> (u64, u64) {
    let held = std::mem::size_of::<ByteArray>() as u64;
    match physical {
        // Bit-packed: 8 to the byte (counted as 1 byte in 8 below).
        PhysicalType::BOOLEAN => (0, 1),
        PhysicalType::INT32 | PhysicalType::FLOAT => (4, 4),
        PhysicalType::INT64 | PhysicalType::DOUBLE => (8, 8),
        PhysicalType::INT96 => (12, 12),
        PhysicalType::BYTE_ARRAY => (4, held),
        PhysicalType::FIXED_LEN_BYTE_ARRAY => (type_length.max(1) as u64, held),
    }
}

/// Walks the page headers of a column chunk (within the file of `len` bytes) as parquet reads
/// them, checking each page: see the module's documentation.
fn check_pages(
    file: &File,
    c: &ColumnChunkMetaData,
    len: u64,
    d: &ColumnDescPtr,
    limits: &Limits,
) -> Result<(), String> {
    let (start, mut remaining) = chunk_range(c, len, limits)?;
    let chunk_uncompressed = c.uncompressed_size() as u64;
    let mut f = file;
    f.seek(SeekFrom::Start(start)).map_err(|e| e.to_string())?;
    let mut input = BufReader::with_capacity(64 << 10, f);
    let (physical, (least, held)) = (
        d.physical_type(),
        value_sizes(d.physical_type(), d.type_length()),
    );
    while remaining > 0 {
        let mut src = Range {
            input: &mut input,
            remaining,
            read: 0,
        };
        let mut slots = Slots::default();
        walk_struct(&mut src, PAGE_HEADER, &mut slots)
            .map_err(|m| format!("a page header: {m}"))?;
        remaining -= src.read;
        let (Some(page), Some(uncompressed), Some(compressed)) =
            (slots[PAGE_TYPE], slots[UNCOMPRESSED], slots[COMPRESSED])
        else {
            return Err("a page header without its type or sizes".into());
        };
        if compressed < 0 || uncompressed < 0 || compressed as u64 > remaining {
            return Err(format!(
                "a page declares {compressed} bytes, more than its column chunk holds"
            ));
        }
        let (compressed, uncompressed) = (compressed as u64, uncompressed as u64);
        if compressed.max(uncompressed) > limits.parquet_page_bytes {
            return Err(format!(
                "a page of {} bytes, over the limit of {}",
                compressed.max(uncompressed),
                size(limits.parquet_page_bytes)
            ));
        }
        if uncompressed > chunk_uncompressed {
            return Err(format!(
                "a page declares {uncompressed} bytes uncompressed, more than its column \
                 chunk's {chunk_uncompressed}"
            ));
        }
        // PageType: DATA_PAGE 0, DICTIONARY_PAGE 2, DATA_PAGE_V2 3.
        match page {
            2 => {
                let values = slots[DICTIONARY_VALUES].unwrap_or(0);
                let room = match least {
                    0 => uncompressed.saturating_mul(8),
                    least => uncompressed / least,
                };
                let fits = u64::try_from(values).is_ok_and(|v| {
                    v <= room && v.saturating_mul(held) <= limits.parquet_page_bytes
                });
                if !fits {
                    return Err(format!(
                        "a dictionary page declares {values} values, more than its \
                         {uncompressed} bytes hold"
                    ));
                }
            }
            0 | 3 if physical == PhysicalType::BYTE_ARRAY => {
                let encoding = slots[if page == 0 { ENCODING_V1 } else { ENCODING_V2 }];
                // DELTA_LENGTH_BYTE_ARRAY 6, DELTA_BYTE_ARRAY 7.
                if matches!(encoding, Some(6 | 7)) {
                    return Err(
                        "its text pages are DELTA_LENGTH_BYTE_ARRAY or DELTA_BYTE_ARRAY \
                         encoded, which is not read (write the file with the PLAIN or \
                         dictionary encoding)"
                            .into(),
                    );
                }
            }
            _ => {}
        }
        input
            .seek_relative(compressed as i64)
            .map_err(|e| e.to_string())?;
        remaining -= compressed;
    }
    Ok(())
}

/// The top-level column names of `path`, in schema order.
pub fn header(path: &Path, limits: &Limits) -> Result<Vec<String>, ReadError> {
    let (reader, _) = open_file(path, limits)?;
    Ok(top_level_names(&reader))
}

fn top_level_names(reader: &SerializedFileReader<File>) -> Vec<String> {
    reader
        .metadata()
        .file_metadata()
        .schema_descr_ptr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_owned())
        .collect()
}

/// How the column described by `d` is read, or why it cannot be.
fn kind_of(d: &ColumnDescPtr) -> Result<Kind, String> {
    let name = excerpt(&d.path().string());
    if d.max_rep_level() > 0 || d.path().parts().len() > 1 {
        return Err(format!(
            "column {name:?} is nested or repeated, which is not read"
        ));
    }
    let logical = d.logical_type_ref();
    let scale = |s: i32| 10f64.powi(s);
    Ok(match d.physical_type() {
        PhysicalType::BOOLEAN => Kind::Bool,
        PhysicalType::INT32 => match (logical, d.converted_type()) {
            (Some(LogicalType::Date), _) | (_, ConvertedType::DATE) => Kind::Date,
            (Some(LogicalType::Decimal(t)), _) => Kind::Decimal(scale(t.scale)),
            (_, ConvertedType::DECIMAL) => Kind::Decimal(scale(d.type_scale())),
            _ => Kind::Int,
        },
        PhysicalType::INT64 => match (logical, d.converted_type()) {
            (Some(LogicalType::Timestamp(t)), _) => {
                let per_second = match t.unit {
                    TimeUnit::MILLIS => 1_000,
                    TimeUnit::MICROS => 1_000_000,
                    TimeUnit::NANOS => 1_000_000_000,
                };
                Kind::Timestamp(per_second, t.is_adjusted_to_u_t_c)
            }
            (_, ConvertedType::TIMESTAMP_MILLIS) => Kind::Timestamp(1_000, true),
            (_, ConvertedType::TIMESTAMP_MICROS) => Kind::Timestamp(1_000_000, true),
            (Some(LogicalType::Decimal(t)), _) => Kind::Decimal(scale(t.scale)),
            (_, ConvertedType::DECIMAL) => Kind::Decimal(scale(d.type_scale())),
            _ => Kind::Int,
        },
        PhysicalType::INT96 => Kind::Int96,
        PhysicalType::FLOAT | PhysicalType::DOUBLE => Kind::Float,
        PhysicalType::BYTE_ARRAY => match (logical, d.converted_type()) {
            (Some(LogicalType::Decimal(_)), _) | (_, ConvertedType::DECIMAL) => {
                return Err(format!(
                    "column {name:?} is a binary decimal, which is not read (cast it to DOUBLE)"
                ));
            }
            _ => Kind::Text,
        },
        PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            return Err(format!(
                "column {name:?} is a fixed-length binary column, which is not read"
            ));
        }
    })
}

/// Reads `rows` records of a typed column: its values and definition levels.
fn read_raw<T: DataType>(
    r: &mut ColumnReaderImpl<T>,
    rows: usize,
    max_def: i16,
) -> parquet::errors::Result<(Vec<T::T>, Vec<i16>)> {
    let mut values: Vec<T::T> = Vec::with_capacity(rows);
    let mut defs: Vec<i16> = Vec::with_capacity(if max_def > 0 { rows } else { 0 });
    let mut read = 0;
    while read < rows {
        let (records, _, _) = r.read_records(
            rows - read,
            (max_def > 0).then_some(&mut defs),
            None,
            &mut values,
        )?;
        if records == 0 {
            break;
        }
        read += records;
    }
    Ok((values, defs))
}

/// A chunk of one column's values, not made cells yet.
#[derive(Debug)]
enum Raw {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Int96(Vec<Int96>),
    Float(Vec<f32>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
    Fixed(Vec<FixedLenByteArray>),
}

/// One column's part of the current chunk.
#[derive(Debug)]
struct Values {
    raw: Raw,
    /// Definition levels (empty for a required column).
    defs: Vec<i16>,
    max_def: i16,
    kind: Kind,
    /// The next value.
    next: usize,
}

impl Values {
    /// Records the chunk holds.
    fn records(&self) -> usize {
        if self.max_def > 0 {
            return self.defs.len();
        }
        match &self.raw {
            Raw::Bool(v) => v.len(),
            Raw::Int32(v) => v.len(),
            Raw::Int64(v) => v.len(),
            Raw::Int96(v) => v.len(),
            Raw::Float(v) => v.len(),
            Raw::Double(v) => v.len(),
            Raw::Bytes(v) => v.len(),
            Raw::Fixed(v) => v.len(),
        }
    }

    /// Row `row`'s cell; Err with the text's length if it is longer than `room` (not copied).
    fn cell(&mut self, row: usize, room: usize) -> Result<Cell, usize> {
        if self.max_def > 0 && self.defs.get(row) != Some(&self.max_def) {
            return Ok(Cell::Null);
        }
        let i = self.next;
        self.next += 1;
        let kind = self.kind;
        Ok(match &self.raw {
            Raw::Bool(v) => v.get(i).map_or(Cell::Null, |v| Cell::Bool(*v)),
            Raw::Int32(v) => v.get(i).map_or(Cell::Null, |v| match kind {
                Kind::Date => NaiveDate::from_ymd_opt(1970, 1, 1)
                    .and_then(|e| e.checked_add_signed(chrono::Duration::days(i64::from(*v))))
                    .map_or(Cell::Null, Cell::Date),
                Kind::Decimal(div) => Cell::Float(f64::from(*v) / div),
                _ => Cell::Int(i64::from(*v)),
            }),
            Raw::Int64(v) => v.get(i).map_or(Cell::Null, |v| match kind {
                Kind::Timestamp(per, utc) => timestamp_cell(*v, per, utc),
                Kind::Decimal(div) => Cell::Float(*v as f64 / div),
                _ => Cell::Int(*v),
            }),
            Raw::Int96(v) => v.get(i).map_or(Cell::Null, |v| {
                timestamp_cell(v.to_nanos(), 1_000_000_000, true)
            }),
            Raw::Float(v) => v.get(i).map_or(Cell::Null, |v| Cell::Float(f64::from(*v))),
            Raw::Double(v) => v.get(i).map_or(Cell::Null, |v| Cell::Float(*v)),
            Raw::Bytes(v) => match v.get(i) {
                None => Cell::Null,
                Some(b) if b.len() > room => return Err(b.len()),
                Some(b) => text_cell(b.data()),
            },
            Raw::Fixed(v) => match v.get(i) {
                None => Cell::Null,
                Some(b) if b.len() > room => return Err(b.len()),
                Some(b) => text_cell(b.data()),
            },
        })
    }
}

fn text_cell(bytes: &[u8]) -> Cell {
    match std::str::from_utf8(bytes) {
        Ok(s) if s.trim().is_empty() => Cell::Null,
        Ok(s) => Cell::Text(s.trim().to_owned()),
        Err(_) => Cell::Text(String::from_utf8_lossy(bytes).trim().to_owned()),
    }
}

fn timestamp_cell(v: i64, per_second: i64, utc: bool) -> Cell {
    let secs = v.div_euclid(per_second);
    let nanos = (v.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32;
    match DateTime::from_timestamp(secs, nanos) {
        Some(t) if utc => Cell::Timestamp(t),
        Some(t) => Cell::DateTime(t.naive_utc()),
        None => Cell::Text(format!("{v} (out of range)")),
    }
}

impl ParquetReader {
    /// Opens `path` and finds the wanted columns among its top-level columns.
    pub fn open(
        path: &Path,
        options: &ReadOptions,
        limits: &Limits,
    ) -> Result<ParquetReader, ReadError> {
        let (reader, file) = open_file(path, limits)?;
        let available = top_level_names(&reader);
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let fields = resolve_columns(&options.columns, &available).map_err(|column| {
            ReadError::MissingColumn {
                path: path.to_owned(),
                where_: String::new(),
                column,
                available: available.clone(),
            }
        })?;
        let mut columns = Vec::with_capacity(fields.len());
        for f in fields {
            let name = &available[f];
            let leaf = (0..schema.num_columns())
                .find(|&i| schema.column(i).path().parts().first() == Some(name))
                .ok_or_else(|| {
                    ReadError::format(path, format!("column {:?} has no values", excerpt(name)))
                })?;
            let d = schema.column(leaf);
            let kind = kind_of(&d).map_err(|m| ReadError::format(path, m))?;
            columns.push((leaf, kind, d));
        }
        let total_rows = reader.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(ParquetReader {
            path: path.to_owned(),
            reader,
            file,
            limits: limits.clone(),
            columns,
            next_group: 0,
            readers: Vec::new(),
            rows_left: 0,
            chunk: Vec::new(),
            chunk_rows: 0,
            chunk_next: 0,
            rows_given: 0,
            total_rows,
        })
    }

    /// Opens the next row group's column readers, once their pages passed [`check_pages`];
    /// false when there is none.
    fn next_group(&mut self) -> Result<bool, ReadError> {
        let metadata = self.reader.metadata();
        if self.next_group >= metadata.num_row_groups() {
            return Ok(false);
        }
        let g = self.next_group;
        let group = metadata.row_group(g);
        let len = self
            .file
            .metadata()
            .map_err(|e| ReadError::io(&self.path, e))?
            .len();
        for (leaf, _, d) in &self.columns {
            check_pages(&self.file, group.column(*leaf), len, d, &self.limits).map_err(|m| {
                unreadable(
                    &self.path,
                    format!(
                        "row group {g}: column {:?}: {m}",
                        excerpt(&d.path().string())
                    ),
                )
            })?;
        }
        let rows = group.num_rows().max(0) as usize;
        let path = self.path.clone();
        let reader = &self.reader;
        let columns = &self.columns;
        self.readers = guard(&path, || {
            let group = reader
                .get_row_group(g)
                .map_err(|e| format_error(&path, &e))?;
            columns
                .iter()
                .map(|(leaf, _, _)| group.get_column_reader(*leaf))
                .collect::<Result<_, _>>()
                .map_err(|e| format_error(&path, &e))
        })?;
        self.rows_left = rows;
        self.next_group += 1;
        Ok(true)
    }

    /// Reads the values of the next `rows` rows of the current row group, column by column.
    fn read_chunk(&mut self, rows: usize) -> Result<(), ReadError> {
        let path = self.path.clone();
        let g = self.next_group - 1;
        let chunk = guard(&path, || {
            let mut chunk = Vec::with_capacity(self.columns.len());
            for ((_, kind, d), reader) in self.columns.iter().zip(&mut self.readers) {
                let max_def = d.max_def_level();
                let (raw, defs) = match reader {
                    ColumnReader::BoolColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Bool(v), d))
                    }
                    ColumnReader::Int32ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int32(v), d))
                    }
                    ColumnReader::Int64ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int64(v), d))
                    }
                    ColumnReader::Int96ColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Int96(v), d))
                    }
                    ColumnReader::FloatColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Float(v), d))
                    }
                    ColumnReader::DoubleColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Double(v), d))
                    }
                    ColumnReader::ByteArrayColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Bytes(v), d))
                    }
                    ColumnReader::FixedLenByteArrayColumnReader(r) => {
                        read_raw(r, rows, max_def).map(|(v, d)| (Raw::Fixed(v), d))
                    }
                }
                .map_err(|e| format_error(&path, &e))?;
                let values = Values {
                    raw,
                    defs,
                    max_def,
                    kind: *kind,
                    next: 0,
                };
                if values.records() != rows {
                    return Err(ReadError::format(
                        &path,
                        format!(
                            "row group {g}: column {:?} has {} values where {rows} rows were \
                             expected",
                            excerpt(&d.path().string()),
                            values.records()
                        ),
                    ));
                }
                chunk.push(values);
            }
            Ok(chunk)
        })?;
        self.chunk = chunk;
        self.chunk_rows = rows;
        self.chunk_next = 0;
        self.rows_left -= rows;
        Ok(())
    }
}

impl RecordReader for ParquetReader {
    fn next_batch(&mut self, max: usize, out: &mut Vec<Item>) -> Result<bool, ReadError> {
        let mut added = 0;
        let mut bytes = 0;
        while added < max && bytes < self.limits.batch_bytes {
            if self.chunk_next == self.chunk_rows {
                while self.rows_left == 0 {
                    if !self.next_group()? {
                        return Ok(added > 0);
                    }
                }
                self.read_chunk(self.rows_left.min(CHUNK_ROWS))?;
            }
            let row = self.chunk_next;
            self.chunk_next += 1;
            self.rows_given += 1;
            let mut room = self.limits.row_bytes;
            let mut too_long = false;
            let mut cells = Vec::with_capacity(self.chunk.len());
            for values in &mut self.chunk {
                match values.cell(row, room) {
                    Ok(c) => {
                        if let Cell::Text(t) = &c {
                            room -= t.len().min(room);
                        }
                        cells.push(c);
                    }
                    Err(_) => too_long = true,
                }
            }
            let item = if too_long {
                Item::Problem {
                    row: self.rows_given,
                    sheet: None,
                    message: row_too_long(&self.limits),
                }
            } else {
                Item::Record(Record {
                    row: self.rows_given,
                    sheet: None,
                    cells,
                })
            };
            bytes += item_bytes(&item);
            out.push(item);
            added += 1;
        }
        Ok(added > 0)
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.total_rows)
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dms_common::{Bar, Interval, SeriesKey, Symbol, Timestamp};
    use parquet::basic::{Compression, Encoding};
    use parquet::data_type::{ByteArrayType, DoubleType, Int32Type, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;
    use proptest::prelude::*;

    use super::*;
    use crate::data::export::parquet::ParquetEncoder;
    use crate::data::export::{Encoder, ParquetCompression};

    fn read_all(path: &Path, columns: &[&str], batch: usize) -> Result<Vec<Record>, ReadError> {
        let mut r = ParquetReader::open(path, &super::super::options(columns), &Limits::default())?;
        Ok(super::super::read_items(&mut r, batch)?
            .into_iter()
            .map(|i| match i {
                Item::Record(r) => r,
                Item::Problem { message, .. } => panic!("{message}"),
            })
            .collect())
    }

    #[test]
    fn reads_an_export_across_row_groups_with_row_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.parquet");
        let key = SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1);
        let bars: Vec<Bar> = (0..2_500)
            .map(|i| {
                let mut b = Bar::ohlcv(Timestamp(i * 86_400), 1.5, 2.0, 1.0, 1.25 + i as f64, 10.0);
                b.adj_close = (i % 2 == 0).then_some(0.1 * i as f64);
                b
            })
            .collect();
        {
            let file = File::create(&path).unwrap();
            let mut e: Box<dyn Encoder> =
                Box::new(ParquetEncoder::new(file, ParquetCompression::Zstd, 1_000).unwrap());
            e.write(&key, &bars).unwrap();
            e.finish().unwrap();
        }
        assert_eq!(
            header(&path, &Limits::default()).unwrap()[..3],
            ["symbol", "interval", "ts"]
        );
        let rows = read_all(&path, &["ts", "CLOSE", "adj_close", "symbol"], 333).unwrap();
        assert_eq!(rows.len(), 2_500);
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.row, i as u64 + 1);
            let t = DateTime::from_timestamp(i as i64 * 86_400, 0).unwrap();
            assert_eq!(r.cells[0], Cell::Timestamp(t));
            assert_eq!(r.cells[1], Cell::Float(1.25 + i as f64));
            let adj = if i % 2 == 0 {
                Cell::Float(0.1 * i as f64)
            } else {
                Cell::Null
            };
            assert_eq!(r.cells[2], adj, "row {i}");
            assert_eq!(r.cells[3], Cell::Text("GOOG".into()));
        }
        let e = read_all(&path, &["nope"], 10).unwrap_err().to_string();
        assert!(e.contains("no column \"nope\""), "{e}");
    }

    #[test]
    fn dates_naive_timestamps_decimals_and_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typed.parquet");
        let schema = Arc::new(
            parse_message_type(
                "message m {
                   REQUIRED INT32 day (DATE);
                   OPTIONAL INT64 at (TIMESTAMP(MICROS,false));
                   REQUIRED INT64 price (DECIMAL(10,2));
                   REQUIRED INT64 n;
                   REQUIRED BYTE_ARRAY code (STRING);
                 }",
            )
            .unwrap(),
        );
        let file = File::create(&path).unwrap();
        let mut w =
            SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
                .unwrap();
        let mut group = w.next_row_group().unwrap();
        let mut i = 0;
        while let Some(mut c) = group.next_column().unwrap() {
            match i {
                0 => {
                    c.typed::<Int32Type>()
                        .write_batch(&[19_724, 19_725], None, None)
                        .unwrap();
                }
                1 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[1_704_187_800_000_000], Some(&[1, 0]), None)
                        .unwrap();
                }
                2 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[10_425, 7], None, None)
                        .unwrap();
                }
                3 => {
                    c.typed::<Int64Type>()
                        .write_batch(&[5, 6], None, None)
                        .unwrap();
                }
                _ => {
                    c.typed::<ByteArrayType>()
                        .write_batch(
                            &[ByteArray::from(" 600000.SS "), ByteArray::from("")],
                            None,
                            None,
                        )
                        .unwrap();
                }
            }
            c.close().unwrap();
            i += 1;
        }
        group.close().unwrap();
        w.close().unwrap();
        let rows = read_all(&path, &["day", "at", "price", "n", "code"], 10).unwrap();
        let day = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        assert_eq!(
            rows[0].cells,
            vec![
                Cell::Date(day),
                Cell::DateTime(day.and_hms_opt(9, 30, 0).unwrap()),
                Cell::Float(104.25),
                Cell::Int(5),
                Cell::Text("600000.SS".into()),
            ]
        );
        assert_eq!(rows[1].cells[1], Cell::Null);
        assert_eq!(rows[1].cells[2], Cell::Float(0.07));
        assert_eq!(rows[1].cells[4], Cell::Null);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, "symbol,ts\nA,1\n").unwrap();
        let e = header(&path, &Limits::default()).unwrap_err().to_string();
        assert!(e.contains("x.parquet: not a readable Parquet file"), "{e}");
    }

    #[test]
    fn a_million_rows_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        let key = SeriesKey::new(Symbol::new("EURUSD=X").unwrap(), Interval::M1);
        {
            let file = File::create(&path).unwrap();
            let mut e = ParquetEncoder::new(file, ParquetCompression::Snappy, 262_144).unwrap();
            for chunk in 0..10 {
                let bars: Vec<Bar> = (0..100_000)
                    .map(|i| {
                        let n = chunk * 100_000 + i;
                        Bar::ohlcv(Timestamp(n * 60), 1.0, 1.0, 1.0, n as f64, 0.0)
                    })
                    .collect();
                e.write(&key, &bars).unwrap();
            }
            e.into_inner().unwrap();
        }
        let rows = read_all(&path, &["close"], 50_000).unwrap();
        assert_eq!(rows.len(), 1_000_000);
        assert_eq!(rows[0].cells[0], Cell::Float(0.0));
        assert_eq!(rows[999_999].cells[0], Cell::Float(999_999.0));
        assert_eq!(rows[999_999].row, 1_000_000);
    }
    /// A file of `rows` rows: a symbol (a text of `symbol_len` bytes, dictionary encoded) and a
    /// close; uncompressed, so that a mutation changes values rather than breaking a codec.
    fn small_file(path: &Path, rows: usize, symbol_len: usize, properties: WriterProperties) {
        let schema = Arc::new(
            parse_message_type(
                "message m {
                   REQUIRED BYTE_ARRAY symbol (STRING);
                   OPTIONAL DOUBLE close;
                 }",
            )
            .unwrap(),
        );
        let file = File::create(path).unwrap();
        let mut w = SerializedFileWriter::new(file, schema, Arc::new(properties)).unwrap();
        let mut group = w.next_row_group().unwrap();
        let symbol = ByteArray::from("G".repeat(symbol_len).as_str());
        let symbols = vec![symbol; rows];
        let closes: Vec<f64> = (0..rows).map(|i| i as f64).collect();
        let defs: Vec<i16> = (0..rows).map(|i| i16::from(i % 3 != 0)).collect();
        let closes: Vec<f64> = closes
            .iter()
            .zip(&defs)
            .filter(|(_, d)| **d == 1)
            .map(|(c, _)| *c)
            .collect();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&symbols, None, None)
            .unwrap();
        c.close().unwrap();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<DoubleType>()
            .write_batch(&closes, Some(&defs), None)
            .unwrap();
        c.close().unwrap();
        group.close().unwrap();
        w.close().unwrap();
    }

    fn plain() -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build()
    }

    /// A Thrift compact-protocol writer, for hand-made metadata.
    #[derive(Default)]
    struct Thrift {
        out: Vec<u8>,
        last: Vec<i16>,
    }

    impl Thrift {
        fn varint(&mut self, mut v: u64) -> &mut Self {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.out.push(b);
                    return self;
                }
                self.out.push(b | 0x80);
            }
        }
        fn field(&mut self, id: i16, t: u8) -> &mut Self {
            let last = self.last.last_mut().unwrap();
            let delta = id - *last;
            *last = id;
            if (1..=15).contains(&delta) {
                self.out.push(((delta as u8) << 4) | t);
                self
            } else {
                self.out.push(t);
                self.varint(((id << 1) ^ (id >> 15)) as u16 as u64)
            }
        }
        fn i32(&mut self, id: i16, v: i32) -> &mut Self {
            self.field(id, wire::I32)
                .varint(((v << 1) ^ (v >> 31)) as u32 as u64)
        }
        fn binary(&mut self, id: i16, v: &[u8]) -> &mut Self {
            self.field(id, wire::BINARY).varint(v.len() as u64);
            self.out.extend_from_slice(v);
            self
        }
        fn begin(&mut self) -> &mut Self {
            self.last.push(0);
            self
        }
        fn end(&mut self) -> &mut Self {
            self.out.push(0);
            self.last.pop();
            self
        }
        fn list(&mut self, id: i16, element: u8, n: u64) -> &mut Self {
            self.field(id, wire::LIST);
            if n < 15 {
                self.out.push(((n as u8) << 4) | element);
            } else {
                self.out.push(0xf0 | element);
                self.varint(n);
            }
            self
        }
    }

    /// A file of `metadata` (a footer declaring its length).
    fn with_footer(metadata: &[u8]) -> Vec<u8> {
        let mut f = b"PAR1".to_vec();
        f.extend_from_slice(metadata);
        f.extend_from_slice(&(metadata.len() as u32).to_le_bytes());
        f.extend_from_slice(b"PAR1");
        f
    }

    /// Metadata whose schema nests `depth` groups of one child each over a leaf (the first
    /// group declaring `children`).
    fn nested_schema(depth: usize, children: i32) -> Vec<u8> {
        let mut t = Thrift::default();
        t.begin().i32(1, 1).list(2, wire::STRUCT, depth as u64 + 1);
        for level in 0..depth {
            t.begin();
            if level > 0 {
                t.i32(3, 0);
            }
            t.binary(4, b"g")
                .i32(5, if level == 0 { children } else { 1 })
                .end();
        }
        t.begin().i32(1, 1).i32(3, 0).binary(4, b"x").end();
        t.field(3, wire::I64).varint(0);
        t.list(4, wire::STRUCT, 0);
        t.end();
        t.out
    }

    fn refused(bytes: &[u8], limits: &Limits) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        std::fs::write(&path, bytes).unwrap();
        let e = header(&path, limits).unwrap_err().to_string();
        let o = ParquetReader::open(&path, &super::super::options(&["x"]), limits)
            .unwrap_err()
            .to_string();
        assert_eq!(e, o);
        e
    }

    #[test]
    fn a_footer_declaring_more_metadata_than_allowed_is_refused() {
        // 2^31 bytes declared, in a file of a few bytes.
        let mut f = b"PAR1xxxx".to_vec();
        f.extend_from_slice(&(1u32 << 31).to_le_bytes());
        f.extend_from_slice(b"PAR1");
        let e = refused(&f, &Limits::default());
        assert!(
            e.contains(
                "its footer declares 2147483648 bytes of metadata, more than the file's 16 bytes"
            ),
            "{e}"
        );
        // Within the file but over the limit.
        let meta = nested_schema(1, 1);
        let small = Limits {
            parquet_metadata_bytes: 8,
            ..Limits::default()
        };
        let e = refused(&with_footer(&meta), &small);
        assert!(
            e.contains("bytes of metadata, over the limit of 8 bytes"),
            "{e}"
        );
        let e = refused(b"PAR1 no footer here", &Limits::default());
        assert!(e.contains("no Parquet footer"), "{e}");
    }

    #[test]
    fn schemas_parquet_would_recurse_or_reserve_on_are_refused() {
        // Well-formed metadata of a shallow schema gets through to parquet.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok.parquet");
        std::fs::write(&path, with_footer(&nested_schema(3, 1))).unwrap();
        assert_eq!(header(&path, &Limits::default()).unwrap(), ["g"]);
        // 100,000 levels would overflow the stack of parquet's recursive schema building.
        let e = refused(&with_footer(&nested_schema(100_000, 1)), &Limits::default());
        assert!(e.contains("over the limit of 10000"), "{e}");
        let deep = Limits {
            parquet_columns: 1_000_000,
            ..Limits::default()
        };
        let e = refused(&with_footer(&nested_schema(100_000, 1)), &deep);
        assert!(e.contains("its schema is nested deeper than 64"), "{e}");
        // A group declaring 2^31 - 1 children: parquet reserves room for them.
        let e = refused(
            &with_footer(&nested_schema(2, i32::MAX)),
            &Limits::default(),
        );
        assert!(
            e.contains("declares 2147483647 children, more than follow it"),
            "{e}"
        );
        // Row groups: as many as declared are reserved.
        let mut meta = nested_schema(1, 1);
        // Without the (empty) row groups and the end.
        let at = meta.len() - 3;
        meta.truncate(at);
        let mut t = Thrift::default();
        t.begin();
        t.last[0] = 3;
        t.list(4, wire::STRUCT, 5_000_000);
        meta.extend_from_slice(&t.out);
        meta.extend_from_slice(&vec![0u8; 5_000_001]);
        let e = refused(&with_footer(&meta), &Limits::default());
        assert!(
            e.contains("5000000 row groups, over the limit of 100000"),
            "{e}"
        );
    }

    #[test]
    fn pages_over_the_limit_and_long_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        small_file(&path, 1_000, 4, plain());
        let small = Limits {
            parquet_page_bytes: 1 << 10,
            ..Limits::default()
        };
        let mut r = ParquetReader::open(&path, &super::super::options(&["close"]), &small).unwrap();
        let e = super::super::read_items(&mut r, 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row group 0: column \"close\": a page of")
                && e.contains("over the limit of 1 KiB"),
            "{e}"
        );
        // A dictionary value of 2 MiB, in every row: each row is a problem, never copied.
        small_file(&path, 100, 2 << 20, plain());
        let mut r = ParquetReader::open(
            &path,
            &super::super::options(&["symbol", "close"]),
            &Limits::default(),
        )
        .unwrap();
        let items = super::super::read_items(&mut r, 1_000).unwrap();
        assert_eq!(items.len(), 100);
        assert_eq!(
            items[7],
            Item::Problem {
                row: 8,
                sheet: None,
                message: row_too_long(&Limits::default())
            }
        );
        // Rows under the limit fill a batch up to its bytes.
        small_file(&path, 100, 100 << 10, plain());
        let limits = Limits {
            batch_bytes: 1 << 20,
            ..Limits::default()
        };
        let mut r =
            ParquetReader::open(&path, &super::super::options(&["symbol"]), &limits).unwrap();
        let mut items = Vec::new();
        assert!(r.next_batch(1_000, &mut items).unwrap());
        // The item reaching the budget is the batch's last.
        assert_eq!(items.len(), 11);
    }

    #[test]
    fn delta_encoded_text_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.parquet");
        let properties = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_column_encoding(ColumnPath::from("symbol"), Encoding::DELTA_BYTE_ARRAY)
            .build();
        small_file(&path, 10, 4, properties);
        let mut r = ParquetReader::open(
            &path,
            &super::super::options(&["close"]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(super::super::read_items(&mut r, 100).unwrap().len(), 10);
        let mut r = ParquetReader::open(
            &path,
            &super::super::options(&["symbol"]),
            &Limits::default(),
        )
        .unwrap();
        let e = super::super::read_items(&mut r, 100)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DELTA_BYTE_ARRAY encoded, which is not read"),
            "{e}"
        );
    }

    use super::super::fuzz;

    /// Reads `bytes` as a Parquet file every way; never panics, and every message is short.
    fn read_every_way(bytes: &[u8]) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        std::fs::write(&path, bytes).unwrap();
        let limits = Limits::default();
        if let Err(e) = header(&path, &limits) {
            fuzz::short(&e)?;
        }
        fuzz::drain(
            ParquetReader::open(&path, &super::super::options(&["close", "symbol"]), &limits),
            100,
        )
    }

    fn base_file(zstd: bool) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.parquet");
        let properties = if zstd {
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(Default::default()))
                .build()
        } else {
            plain()
        };
        small_file(&path, 20, 4, properties);
        std::fs::read(&path).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn mutated_files_never_panic(mutation in fuzz::mutation(32), zstd in any::<bool>()) {
            read_every_way(&fuzz::mutate(base_file(zstd), mutation))?;
        }

        #[test]
        fn random_footers_never_panic(meta in prop::collection::vec(any::<u8>(), 0..256)) {
            read_every_way(&with_footer(&meta))?;
        }
    }
}
