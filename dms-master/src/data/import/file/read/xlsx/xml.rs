//! A scan of a part's XML as quick-xml (calamine's XML parser) tokenizes it ([`scan_xml`]):
//! each start tag ([`StartTag`], with its attributes as calamine reads them) goes to a callback
//! that says whether the scan goes on ([`Scan`]); tags and attribute values are bounded by
//! [`Limits`], and comments, processing instructions, CDATA sections and DTDs are refused.

use std::io::BufRead;

use crate::data::import::file::read::{Limits, size};

/// A start tag as quick-xml (calamine's XML parser) sees it.
pub(super) struct StartTag<'a> {
    /// The name after its prefix (after the first `:`).
    pub(super) local: &'a [u8],
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
    pub(super) fn attributes(&self) -> Vec<(&'a [u8], &'a [u8])> {
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
pub(super) enum Scan {
    Continue,
    Stop,
}

/// Scans the XML of `input` as quick-xml tokenizes it, calling `on_start` with each start tag:
/// a tag may be at most `limits.xlsx_tag_bytes` long and an attribute value at most
/// `limits.xlsx_attribute_bytes`; an XML declaration may open the document, and no other
/// processing instruction, comment, CDATA section or DTD may follow (workbooks hold none, and
/// a tag hidden in one could be read differently by this scan and by calamine).
pub(super) fn scan_xml(
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
