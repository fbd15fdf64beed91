//! Hostile import files, built byte by byte: xlsx workbooks that are bombs, and garbage in
//! every import format.

use std::io::Write;

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#;
const RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#;
const WORKBOOK: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#;
const WORKBOOK_RELS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#;
const SHEET: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c></row></sheetData></worksheet>"#;

/// A zip of `entries` (name, content), deflated.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in entries {
            z.start_file(*name, options).unwrap();
            z.write_all(content).unwrap();
        }
        z.finish().unwrap();
    }
    out.into_inner()
}

fn workbook(shared_strings: &[u8], sheet: &[u8]) -> Vec<u8> {
    zip(&[
        ("[Content_Types].xml", CONTENT_TYPES.as_bytes()),
        ("_rels/.rels", RELS.as_bytes()),
        ("xl/workbook.xml", WORKBOOK.as_bytes()),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS.as_bytes()),
        ("xl/worksheets/sheet1.xml", sheet),
        ("xl/sharedStrings.xml", shared_strings),
    ])
}

/// About a kilobyte whose shared-string table declares 10^11 strings (a reader that reserves
/// room for them first asks for terabytes).
pub(crate) fn xlsx_shared_strings_bomb() -> Vec<u8> {
    let sst = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="100000000000" uniqueCount="100000000000"><si><t>date</t></si></sst>"#;
    workbook(sst.as_bytes(), SHEET.as_bytes())
}

/// A workbook whose sheet is 256 MiB of one repeated row, deflated to a few hundred KiB: far
/// past the compression ratio of a real sheet.
pub(crate) fn xlsx_zip_bomb() -> Vec<u8> {
    let sst = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>date</t></si></sst>"#;
    let mut sheet = Vec::with_capacity(256 << 20);
    sheet.extend_from_slice(
        br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    sheet.resize(256 << 20, b' ');
    sheet.extend_from_slice(b"</sheetData></worksheet>");
    workbook(sst.as_bytes(), &sheet)
}

/// A small workbook whose zip directory claims its sheet unpacks to almost 4 GiB.
pub(crate) fn xlsx_declaring_huge_entry() -> Vec<u8> {
    let sst = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1"><si><t>date</t></si></sst>"#;
    let mut bytes = workbook(sst.as_bytes(), SHEET.as_bytes());
    // Every central directory header (PK\x01\x02) of the sheet: its uncompressed size (offset
    // 24) set to 0xFFFFFFF0; local headers (PK\x03\x04, offset 22) too.
    let name = b"xl/worksheets/sheet1.xml";
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], b"PK") {
        let p = at + i;
        let sig = bytes.get(p + 2..p + 4).map(<[u8]>::to_vec);
        let (size_at, name_at, len_at) = match sig.as_deref() {
            Some([1, 2]) => (p + 24, p + 46, p + 28),
            Some([3, 4]) => (p + 22, p + 30, p + 26),
            _ => {
                at = p + 2;
                continue;
            }
        };
        let len = bytes
            .get(len_at..len_at + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
        if bytes.get(name_at..name_at + len) == Some(&name[..]) {
            bytes[size_at..size_at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        }
        at = p + 2;
    }
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Garbage claiming to be each import format: (file name, bytes).
pub(crate) fn garbage() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    };
    for ext in ["csv", "json", "jsonl", "xlsx", "parquet"] {
        out.push((format!("noise.{ext}"), noise(4096)));
        out.push((format!("zeros.{ext}"), vec![0u8; 64 << 10]));
        out.push((format!("truncated-zip.{ext}"), {
            let mut z = xlsx_shared_strings_bomb();
            z.truncate(z.len() / 2);
            z
        }));
        out.push((format!("par1.{ext}"), {
            let mut p = b"PAR1".to_vec();
            p.extend_from_slice(&noise(100));
            p.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
            p.extend_from_slice(b"PAR1");
            p
        }));
        out.push((format!("utf16.{ext}"), {
            let mut t = vec![0xFF, 0xFE];
            for c in "date,open\n\u{202e}2024,1\n".encode_utf16() {
                t.extend_from_slice(&c.to_le_bytes());
            }
            t
        }));
        out.push((format!("long-line.{ext}"), {
            let mut t = b"date,open,high,low,close,volume\n".to_vec();
            t.resize(3 << 20, b'9');
            t
        }));
        out.push((format!("deep.{ext}"), {
            let mut t = vec![b'['; 100_000];
            t.extend(std::iter::repeat_n(b']', 100_000));
            t
        }));
        out.push((format!("control.{ext}"), {
            let mut t = b"date,open,high,low,close,volume\n".to_vec();
            t.extend_from_slice(b"\x00\x01\x1b[31m,\x7f,\xff\xfe,\"unterminated\n");
            t
        }));
    }
    out
}
