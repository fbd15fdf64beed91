//! The checks of what a Parquet file declares, against [`Limits`], before the parquet crate
//! trusts it: the footer ([`check_footer`]) and the metadata it points at ([`check_metadata`]:
//! the schema's size and nesting, the number of row groups), the parsed row groups and their
//! column chunks' ranges ([`check_row_groups`]), and the page headers of a column chunk
//! ([`check_pages`]). See the reader's module documentation for why each is checked.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use parquet::basic::Type as PhysicalType;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaData};
use parquet::schema::types::ColumnDescPtr;

use super::thrift::{
    COMPRESSED, DICTIONARY_VALUES, ENCODING_V1, ENCODING_V2, ENDS_EARLY, NUM_CHILDREN, PAGE_HEADER,
    PAGE_TYPE, Range, SCHEMA_ELEMENT, SKIP_DEPTH, Slice, Slots, Source, UNCOMPRESSED, expect,
    field_begin, list_begin, skip, vlq, walk_struct, wire,
};
use super::unreadable;
use crate::data::import::file::read::{Limits, ReadError, excerpt, size};

/// Checks the footer's declared metadata length, and the metadata ([`check_metadata`]); gives
/// the file's size.
pub(super) fn check_footer(
    file: &mut File,
    path: &Path,
    limits: &Limits,
) -> Result<u64, ReadError> {
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

/// Walks a file's metadata (`FileMetaData`) up to its row groups, as parquet reads it: checks
/// its schema ([`check_schema`]) and the number of its row groups. Fields other than the
/// version, schema and number of rows before the row groups are refused (writers put them
/// after).
pub(super) fn check_metadata(buf: &[u8], limits: &Limits) -> Result<(), String> {
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
pub(super) fn check_row_groups(
    metadata: &ParquetMetaData,
    len: u64,
    limits: &Limits,
) -> Result<(), String> {
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
pub(super) fn check_pages(
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parquet::basic::{Compression, Encoding};
    use parquet::data_type::{ByteArrayType, DoubleType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    use parquet::schema::types::ColumnPath;
    use proptest::prelude::*;

    use super::*;
    use crate::data::import::file::read::parquet::{ParquetReader, header};
    use crate::data::import::file::read::{
        Item, RecordReader, fuzz, options, read_items, row_too_long,
    };

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
        let o = ParquetReader::open(&path, &options(&["x"]), limits)
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
        let mut r = ParquetReader::open(&path, &options(&["close"]), &small).unwrap();
        let e = read_items(&mut r, 100).unwrap_err().to_string();
        assert!(
            e.contains("row group 0: column \"close\": a page of")
                && e.contains("over the limit of 1 KiB"),
            "{e}"
        );
        // A dictionary value of 2 MiB, in every row: each row is a problem, never copied.
        small_file(&path, 100, 2 << 20, plain());
        let mut r =
            ParquetReader::open(&path, &options(&["symbol", "close"]), &Limits::default()).unwrap();
        let items = read_items(&mut r, 1_000).unwrap();
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
        let mut r = ParquetReader::open(&path, &options(&["symbol"]), &limits).unwrap();
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
        let mut r = ParquetReader::open(&path, &options(&["close"]), &Limits::default()).unwrap();
        assert_eq!(read_items(&mut r, 100).unwrap().len(), 10);
        let mut r = ParquetReader::open(&path, &options(&["symbol"]), &Limits::default()).unwrap();
        let e = read_items(&mut r, 100).unwrap_err().to_string();
        assert!(
            e.contains("DELTA_BYTE_ARRAY encoded, which is not read"),
            "{e}"
        );
    }

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
            ParquetReader::open(&path, &options(&["close", "symbol"]), &limits),
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
