//! The timeline's temporary records: each file's records as the scan parsed
//! them, written to the temporary folder (`TMPDIR`) so the merges read them
//! back without parsing JSON again, and memory stays independent of the
//! input's size.
//!
//! The form is compact, because on a large input these bytes are written
//! and read once more than the input itself. A record is its length (`u32`)
//! and then:
//! - the clock as a zigzag varint difference from the previous record's,
//!   the line as a varint difference;
//! - one byte: the level's rank (bits 0-2), whether there is a level
//!   (bit 3), the correlation's kind (bits 4-5: none, text, or the text of
//!   field N's string value);
//! - the component and the level as names, the message as text, the
//!   correlation (text, or N as a varint);
//! - the number of other fields, and each field's key as a name and its raw
//!   JSON as text.
//!
//! Text is a varint length and its bytes. A name is a varint: 0 and then the
//! text the first time (both sides then number it, up to [`MAX_NAMES`]
//! names of at most [`MAX_NAME_LEN`] bytes), or its number + 1 after that.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use rustc_hash::FxHashMap;

use super::read::{Record, Span, NO_SPAN};

const MAX_NAMES: usize = 4096;
const MAX_NAME_LEN: usize = 64;

const HAS_LEVEL: u8 = 1 << 3;
const CORRELATION_TEXT: u8 = 1 << 4;
const CORRELATION_FIELD: u8 = 2 << 4;

/// A temporary file of records, deleted when dropped.
#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Spill {
    /// A new spill and the writer that fills it.
    pub fn create() -> anyhow::Result<(Self, SpillWriter)> {
        let path = std::env::temp_dir().join(format!(
            "sluice-timeline-{}-{:016x}.records",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = File::create(&path)
            .with_context(|| format!("cannot create {} (set TMPDIR elsewhere?)", path.display()))?;
        let writer = SpillWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            encoder: Encoder::default(),
        };
        Ok((Self { path }, writer))
    }

    /// Read the records back from the start.
    pub fn open(&self) -> anyhow::Result<SpillReader<BufReader<File>>> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot reopen {}", self.path.display()))?;
        Ok(SpillReader::new(BufReader::with_capacity(256 * 1024, file)))
    }
}

/// Writes records to a [`Spill`].
pub struct SpillWriter {
    out: BufWriter<File>,
    encoder: Encoder,
}

impl SpillWriter {
    pub fn write(&mut self, r: &Record) -> std::io::Result<()> {
        self.out.write_all(self.encoder.encode(r))
    }

    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Turns records into bytes.
#[derive(Default)]
pub struct Encoder {
    names: FxHashMap<Box<str>, u32>,
    ts: i64,
    line: u64,
    buf: Vec<u8>,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn text(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

/// Whether a name of `len` bytes is numbered when `count` are (the same
/// test on both sides).
fn numbered(count: usize, len: usize) -> bool {
    count < MAX_NAMES && len <= MAX_NAME_LEN
}

impl Encoder {
    fn name(&mut self, s: &str) {
        if let Some(&n) = self.names.get(s) {
            varint(&mut self.buf, u64::from(n) + 1);
            return;
        }
        self.buf.push(0);
        text(&mut self.buf, s);
        if numbered(self.names.len(), s.len()) {
            self.names.insert(s.into(), self.names.len() as u32);
        }
    }

    /// The bytes of `r` (all but its file index), valid until the next call.
    pub fn encode(&mut self, r: &Record) -> &[u8] {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 4]);
        varint(&mut self.buf, zigzag(r.ts.wrapping_sub(self.ts)));
        varint(&mut self.buf, (r.line as u64).wrapping_sub(self.line));
        (self.ts, self.line) = (r.ts, r.line as u64);
        let in_field = (r.correlation != NO_SPAN)
            .then(|| {
                r.fields
                    .iter()
                    .position(|(_, v)| (v.0 + 1, v.1.wrapping_sub(1)) == r.correlation)
            })
            .flatten();
        let mut flags = r.rank.min(6);
        if r.level != NO_SPAN {
            flags |= HAS_LEVEL;
        }
        if in_field.is_some() {
            flags |= CORRELATION_FIELD;
        } else if r.correlation != NO_SPAN {
            flags |= CORRELATION_TEXT;
        }
        self.buf.push(flags);
        self.name(r.component());
        if let Some(level) = r.level() {
            self.name(level);
        }
        text(&mut self.buf, r.message());
        match (in_field, r.correlation()) {
            (Some(i), _) => varint(&mut self.buf, i as u64),
            (None, Some(c)) => text(&mut self.buf, c),
            (None, None) => {}
        }
        varint(&mut self.buf, r.fields.len() as u64);
        for (k, v) in r.fields() {
            self.name(k);
            text(&mut self.buf, v);
        }
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        &self.buf
    }
}

fn damaged() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "temporary records: damaged",
    )
}

/// Reads a record's bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let b = *self.bytes.get(self.at).ok_or_else(damaged)?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> std::io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(damaged())
    }

    fn bytes(&mut self) -> std::io::Result<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| damaged())?;
        let end = self.at.checked_add(len).ok_or_else(damaged)?;
        let b = self.bytes.get(self.at..end).ok_or_else(damaged)?;
        self.at = end;
        Ok(b)
    }
}

/// Reads records back from a [`Spill`].
pub struct SpillReader<R> {
    input: R,
    /// Numbered names, back to back, and where each lies.
    names: Vec<u8>,
    spans: Vec<(usize, usize)>,
    ts: i64,
    line: u64,
    /// A record that straddles the end of the reader's buffer.
    scratch: Vec<u8>,
}

/// Append `bytes` to a record's text; their span.
fn push(text: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let start = text.len() as u32;
    text.extend_from_slice(bytes);
    (start, text.len() as u32)
}

impl<R: BufRead> SpillReader<R> {
    pub fn new(input: R) -> Self {
        Self {
            input,
            names: Vec::new(),
            spans: Vec::new(),
            ts: 0,
            line: 0,
            scratch: Vec::new(),
        }
    }

    /// Read the next record into `rec`, reusing its buffers; `false` at
    /// the end.
    pub fn read_into(&mut self, file: usize, rec: &mut Record) -> std::io::Result<bool> {
        if self.input.fill_buf()?.is_empty() {
            return Ok(false);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        let mut text = std::mem::take(&mut rec.text).into_bytes();
        text.clear();
        // Straight from the reader's buffer when the record is all there.
        let buffered = self.input.fill_buf()?.len() >= len;
        if !buffered {
            // Grown only as bytes arrive: a damaged length asks for no memory.
            self.scratch.clear();
            let got = (&mut self.input)
                .take(len as u64)
                .read_to_end(&mut self.scratch)?;
            if got < len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        let bytes = if buffered {
            &self.input.fill_buf()?[..len]
        } else {
            &self.scratch[..]
        };
        Self::decode(
            &mut self.names,
            &mut self.spans,
            (&mut self.ts, &mut self.line),
            bytes,
            rec,
            &mut text,
        )?;
        if buffered {
            self.input.consume(len);
        }
        rec.file = file;
        rec.text = String::from_utf8(text).map_err(|_| damaged())?;
        // Spans past the text, or inside a character, would panic later.
        let t = &rec.text;
        let ok = |s: Span| {
            s == NO_SPAN
                || (s.0 <= s.1
                    && s.1 as usize <= t.len()
                    && t.is_char_boundary(s.0 as usize)
                    && t.is_char_boundary(s.1 as usize))
        };
        if ![rec.component, rec.level, rec.message, rec.correlation]
            .into_iter()
            .all(ok)
            || !rec.fields.iter().all(|(k, v)| ok(*k) && ok(*v))
        {
            return Err(damaged());
        }
        Ok(true)
    }

    fn decode(
        names: &mut Vec<u8>,
        spans: &mut Vec<(usize, usize)>,
        (ts, line): (&mut i64, &mut u64),
        bytes: &[u8],
        rec: &mut Record,
        text: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let mut c = Cursor { bytes, at: 0 };
        *ts = ts.wrapping_add(unzigzag(c.varint()?));
        *line = line.wrapping_add(c.varint()?);
        (rec.ts, rec.line) = (*ts, *line as usize);
        let flags = c.byte()?;
        rec.rank = (flags & 7).min(6);
        let mut name = |c: &mut Cursor, text: &mut Vec<u8>| -> std::io::Result<Span> {
            match c.varint()? {
                0 => {
                    let b = c.bytes()?;
                    if numbered(spans.len(), b.len()) {
                        spans.push((names.len(), names.len() + b.len()));
                        names.extend_from_slice(b);
                    }
                    Ok(push(text, b))
                }
                n => {
                    let &(start, end) = usize::try_from(n - 1)
                        .ok()
                        .and_then(|i| spans.get(i))
                        .ok_or_else(damaged)?;
                    Ok(push(text, &names[start..end]))
                }
            }
        };
        rec.component = name(&mut c, text)?;
        rec.level = if flags & HAS_LEVEL != 0 {
            name(&mut c, text)?
        } else {
            NO_SPAN
        };
        rec.message = push(text, c.bytes()?);
        let correlation = match flags & 0x30 {
            0 => None,
            CORRELATION_TEXT => {
                rec.correlation = push(text, c.bytes()?);
                None
            }
            CORRELATION_FIELD => Some(c.varint()?),
            _ => return Err(damaged()),
        };
        let n = c.varint()?;
        rec.fields.clear();
        for _ in 0..n {
            let k = name(&mut c, text)?;
            let v = push(text, c.bytes()?);
            rec.fields.push((k, v));
        }
        match correlation {
            None if flags & 0x30 == 0 => rec.correlation = NO_SPAN,
            None => {}
            Some(i) => {
                let &(_, v) = usize::try_from(i)
                    .ok()
                    .and_then(|i| rec.fields.get(i))
                    .ok_or_else(damaged)?;
                let quoted =
                    v.1 >= v.0 + 2 && text[v.0 as usize] == b'"' && text[v.1 as usize - 1] == b'"';
                if !quoted {
                    return Err(damaged());
                }
                rec.correlation = (v.0 + 1, v.1 - 1);
            }
        }
        if c.at != bytes.len() {
            return Err(damaged());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::{parse_line, ComponentBy, LogFile, ParseOptions};

    fn show(r: &Record) -> String {
        format!(
            "{} {} {} {} {:?} {} {:?} {:?}",
            r.ts,
            r.line,
            r.rank,
            r.component(),
            r.level(),
            r.message(),
            r.correlation(),
            r.fields().collect::<Vec<_>>()
        )
    }

    fn records(lines: &[String]) -> Vec<Record> {
        let log = LogFile {
            path: PathBuf::from("svc-2026.log"),
            name_component: "svc".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let opts = ParseOptions {
            component_by: ComponentBy::Auto,
            correlate: "request_id".into(),
            fields: Default::default(),
            identities: None,
        };
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_line(l, 3, i * 7 + 1, &log, &opts).unwrap().unwrap())
            .collect()
    }

    fn encode_all(records: &[Record]) -> Vec<u8> {
        let mut e = Encoder::default();
        records.iter().flat_map(|r| e.encode(r).to_vec()).collect()
    }

    #[test]
    fn records_read_back_as_written() {
        let mut lines: Vec<String> = [
            // Correlation inside a field, clock going back, non-ASCII.
            r#"{"timestamp":"2026-11-23T10:00:01Z","level":"info","service":"api","message":"é ok","request_id":"r1","n":1}"#,
            r#"{"timestamp":"2026-11-23T10:00:00Z","msg":"no level, earlier","x":{"a":[1,2]}}"#,
            // Escaped and numeric correlations are text of their own.
            r#"{"ts":1795428000123,"level":"WARN","service":"api","message":"","request_id":"r\"2","k":"v\"q"}"#,
            r#"{"ts":1795428000124,"level":"info","service":"api","message":"m","request_id":42}"#,
            r#"{"ts":1,"level":"fatal","service":"sérvice","message":"\n","request_id":"","n":null}"#,
        ]
        .map(String::from)
        .to_vec();
        // More names than are numbered, and names too long to number.
        for i in 0..MAX_NAMES + 10 {
            let long = "k".repeat(MAX_NAME_LEN + 1);
            lines.push(format!(
                r#"{{"ts":{i},"message":"m","key{i}":1,"{long}":2,"request_id":"r{i}"}}"#
            ));
        }
        let records = records(&lines);
        let bytes = encode_all(&records);
        // Fed through a small buffer, records straddle its end.
        for capacity in [7, 64, 1 << 20] {
            let mut reader = SpillReader::new(BufReader::with_capacity(capacity, &bytes[..]));
            let mut back = Record::default();
            for r in &records {
                assert!(reader.read_into(3, &mut back).unwrap());
                assert_eq!(show(&back), show(r));
                assert_eq!(back.file, 3);
            }
            assert!(!reader.read_into(3, &mut back).unwrap());
        }
        assert!(bytes.len() < lines.iter().map(String::len).sum::<usize>());
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let lines = [
            r#"{"timestamp":"2026-11-23T10:00:01Z","level":"info","service":"api","message":"é ok","request_id":"r1","n":1}"#.to_string(),
        ];
        let bytes = encode_all(&records(&lines));
        for at in 0..bytes.len() {
            for value in [0x00, 0x01, 0x7f, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] = value;
                let mut reader = SpillReader::new(&damaged[..]);
                let mut back = Record::default();
                // Either an error or a record whose accessors work.
                if let Ok(true) = reader.read_into(0, &mut back) {
                    let _ = show(&back);
                }
            }
            let mut reader = SpillReader::new(&bytes[..at]);
            assert!(reader.read_into(0, &mut Record::default()).is_err() || at == 0);
        }
    }
}
