//! The checks of a workbook's zip archive against [`Limits`] before calamine opens it
//! ([`check_package`]): not an encrypted workbook or an old `.xls`, not ZIP64; the number of
//! entries and each entry's uncompressed size and compression ratio; the `uniqueCount` of the
//! shared strings ([`check_shared_strings`]); and the parts calamine parses into memory when it
//! opens a workbook ([`scan_part`]: their size, tags, attribute values, styles and sheets).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::unreadable;
use super::xml::{Scan, scan_xml};
use crate::data::import::file::read::{Limits, ReadError, excerpt, size};

/// The signature of an OLE compound file: an encrypted workbook, or an old `.xls`.
pub(super) const OLE_SIGNATURE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

/// Bytes from the end of a file within which the zip reader looks for the end of the central
/// directory (a 22-byte record and a comment of up to 64 KiB), with a margin.
const EOCD_WINDOW: u64 = 22 + 4 + (1 << 16) + 64;

/// Bytes of the shared strings' XML read to find their `<sst>` tag.
const SST_HEAD_BYTES: u64 = 64 << 10;

/// Relationships the package's `_rels/.rels` may declare at most (a workbook has a handful).
const MAX_PACKAGE_RELATIONSHIPS: usize = 256;

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
pub(super) fn check_package(file: &File, path: &Path, limits: &Limits) -> Result<(), ReadError> {
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
