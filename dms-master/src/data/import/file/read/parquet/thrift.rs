//! A walk of Thrift's compact protocol, as the parquet crate (60) reads it: what the checks of
//! a file's metadata and page headers ([`super::checks`]) read before parquet trusts them.
//!
//! The bytes come from a [`Source`] ([`Slice`]: the footer's metadata in memory; [`Range`]: a
//! column chunk of the file, through a buffer); [`vlq`], [`field_begin`], [`list_begin`] and
//! [`skip`] read the protocol's parts; [`walk_struct`] walks a structure by a table of its
//! known [`Field`]s (the tables [`SCHEMA_ELEMENT`], [`PAGE_HEADER`] and their parts), keeping
//! the values the checks need in [`Slots`].

use std::io::{BufReader, Read, Seek};

/// Bytes a walk reads: the footer's metadata, or a column chunk's bytes.
pub(super) trait Source {
    fn byte(&mut self) -> Result<u8, String>;
    fn skip(&mut self, n: u64) -> Result<(), String>;
    /// Bytes left to read.
    fn remaining(&self) -> u64;
}

pub(super) const ENDS_EARLY: &str = "it ends inside a Thrift structure";

pub(super) struct Slice<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
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
pub(super) struct Range<'a, R> {
    pub(super) input: &'a mut BufReader<R>,
    pub(super) remaining: u64,
    /// Bytes read so far.
    pub(super) read: u64,
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
pub(super) mod wire {
    pub(in super::super) const TRUE: u8 = 1;
    pub(in super::super) const FALSE: u8 = 2;
    pub(in super::super) const BYTE: u8 = 3;
    pub(in super::super) const I16: u8 = 4;
    pub(in super::super) const I32: u8 = 5;
    pub(in super::super) const I64: u8 = 6;
    pub(in super::super) const DOUBLE: u8 = 7;
    pub(in super::super) const BINARY: u8 = 8;
    pub(in super::super) const LIST: u8 = 9;
    pub(in super::super) const SET: u8 = 10;
    pub(in super::super) const MAP: u8 = 11;
    pub(in super::super) const STRUCT: u8 = 12;
    pub(in super::super) const UUID: u8 = 13;
}

/// The depth parquet's skipping of unknown fields stops at.
pub(super) const SKIP_DEPTH: u32 = 64;

/// An unsigned varint, as parquet reads one (any length; bits past 64 are lost).
pub(super) fn vlq(src: &mut impl Source) -> Result<u64, String> {
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
pub(super) fn field_begin(src: &mut impl Source, last: i16) -> Result<Option<(u8, i16)>, String> {
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
pub(super) fn list_begin(src: &mut impl Source) -> Result<(u8, u64), String> {
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
pub(super) fn skip(src: &mut impl Source, t: u8, depth: u32) -> Result<(), String> {
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
pub(super) enum Field {
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
pub(super) const PAGE_TYPE: usize = 0;
pub(super) const UNCOMPRESSED: usize = 1;
pub(super) const COMPRESSED: usize = 2;
pub(super) const ENCODING_V1: usize = 3;
pub(super) const ENCODING_V2: usize = 4;
pub(super) const DICTIONARY_VALUES: usize = 5;
pub(super) const NUM_CHILDREN: usize = 6;
pub(super) type Slots = [Option<i32>; 7];

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
pub(super) const SCHEMA_ELEMENT: &[(i16, Field)] = &[
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
pub(super) const PAGE_HEADER: &[(i16, Field)] = &[
    (1, Field::I32(Some(PAGE_TYPE))),
    (2, Field::I32(Some(UNCOMPRESSED))),
    (3, Field::I32(Some(COMPRESSED))),
    (4, Field::I32(None)),
    (5, Field::Struct(DATA_PAGE)),
    (6, Field::Struct(&[])),
    (7, Field::Struct(DICTIONARY_PAGE)),
    (8, Field::Struct(DATA_PAGE_V2)),
];

pub(super) fn expect(wire: u8, wanted: u8) -> Result<(), String> {
    if wire == wanted || (is_bool(wanted) && is_bool(wire)) {
        Ok(())
    } else {
        Err(format!(
            "a Thrift field of type {wire} where {wanted} is expected (not read)"
        ))
    }
}

/// Walks a struct whose known fields are `fields`.
pub(super) fn walk_struct(
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
