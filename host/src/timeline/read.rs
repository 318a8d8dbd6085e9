//! Reading JSON-lines logs for the timeline: finding files, parsing lines
//! and their clocks, and merging files in time order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;

use crate::event::{top_fields, value_text};

/// Field names that may hold an event's time, in order of preference.
const TIME_FIELDS: [&str; 5] = ["timestamp", "time", "ts", "@timestamp", "datetime"];
/// Field names that may hold the component, when none is configured.
pub const COMPONENT_FIELDS: [&str; 6] = [
    "service",
    "component",
    "terminal",
    "channel",
    "app",
    "logger",
];

/// A part of a record's text: byte range, or [`NO_SPAN`].
type Span = (u32, u32);
const NO_SPAN: Span = (u32::MAX, u32::MAX);

/// One parsed log line. Its strings live back to back in one buffer: a
/// record costs two allocations, not one per field.
#[derive(Debug, Clone)]
pub struct Record {
    /// Microseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// Index of the file in the input list, and the 1-based line.
    pub file: usize,
    pub line: usize,
    text: String,
    component: Span,
    level: Span,
    message: Span,
    correlation: Span,
    /// The other top-level fields (name, raw JSON), in file order.
    fields: Vec<(Span, Span)>,
}

impl Record {
    fn span(&self, s: Span) -> Option<&str> {
        (s != NO_SPAN).then(|| &self.text[s.0 as usize..s.1 as usize])
    }

    pub fn component(&self) -> &str {
        self.span(self.component).unwrap_or_default()
    }

    pub fn level(&self) -> Option<&str> {
        self.span(self.level)
    }

    pub fn message(&self) -> &str {
        self.span(self.message).unwrap_or_default()
    }

    pub fn correlation(&self) -> Option<&str> {
        self.span(self.correlation)
    }

    /// The other top-level fields: name and raw JSON, in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| {
            (
                self.span(*k).unwrap_or_default(),
                self.span(*v).unwrap_or_default(),
            )
        })
    }
}

fn push_span(text: &mut String, s: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(s);
    (start, text.len() as u32)
}

/// Push a value's text: strings unescaped, anything else as written.
fn push_text(text: &mut String, raw: &RawValue) -> Span {
    push_span(text, &value_text(raw.get()))
}

/// A line that could not be placed in the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a JSON object.
    Malformed {
        file: usize,
        line: usize,
        error: String,
    },
    /// No time field, or one that is not a clock we read.
    NoTimestamp { file: usize, line: usize },
}

/// How the component of an event is found.
#[derive(Debug, Clone)]
pub enum ComponentBy {
    /// This field of the event.
    Field(String),
    /// The first of [`COMPONENT_FIELDS`] present, else the file name.
    Auto,
    /// The file name: `trading-2026-11-23.log` -> `trading`.
    FileName,
}

/// A log file to read.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    /// Component from the file name, the fallback for events without one.
    pub name_component: String,
    pub modified: std::time::SystemTime,
}

/// The component a file name suggests: its name up to the first `-`, `_` or `.`.
pub fn component_of_file(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cut = name.find(['-', '_', '.']).unwrap_or(name.len());
    let c = &name[..cut];
    if c.is_empty() {
        name
    } else {
        c.to_string()
    }
}

fn is_log_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    [".log", ".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// The log files under `paths` (files as given; folders searched recursively
/// for `.log`, `.json`, `.jsonl`, `.ndjson`, each maybe `.gz`).
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<LogFile>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut files).with_context(|| format!("cannot list {}", p.display()))?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|path| {
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            Ok(LogFile {
                name_component: component_of_file(&path),
                path,
                modified,
            })
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_log_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Open a log file, decompressing `.gz`.
pub fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, reader)))
}

/// Parse a clock: RFC 3339 with or without offset (without: UTC), a space
/// instead of `T`, or epoch seconds / milliseconds (numbers or digit strings;
/// above 10^11 they are milliseconds). Returns microseconds since the epoch.
pub fn parse_time(raw: &RawValue) -> Option<i64> {
    let text = raw.get();
    if text.starts_with('"') {
        parse_time_str(&value_text(text))
    } else {
        let n: f64 = text.parse().ok()?;
        epoch(n)
    }
}

fn epoch(n: f64) -> Option<i64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let micros = if n >= 1e14 {
        n // already microseconds
    } else if n >= 1e11 {
        n * 1e3
    } else {
        n * 1e6
    };
    Some(micros.round() as i64)
}

/// See [`parse_time`].
pub fn parse_time_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let normal = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&normal) {
        return Some(t.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normal, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return epoch(s.parse().ok()?);
    }
    None
}

/// Format microseconds as RFC 3339 with milliseconds.
pub fn format_time(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| micros.to_string())
}

/// What the parser needs to know.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub component_by: ComponentBy,
    pub correlate: String,
}

/// Parse one line. `Ok(None)` for blank lines.
pub fn parse_line(
    line: &str,
    file: usize,
    line_no: usize,
    log_file: &LogFile,
    opts: &ParseOptions,
) -> Result<Option<Record>, Problem> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let top = top_fields(line).map_err(|error| Problem::Malformed {
        file,
        line: line_no,
        error,
    })?;
    let get = |name: &str| top.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let ts = TIME_FIELDS
        .iter()
        .find_map(|f| get(f))
        .and_then(parse_time)
        .ok_or(Problem::NoTimestamp {
            file,
            line: line_no,
        })?;
    let component_field = match &opts.component_by {
        ComponentBy::Field(f) => get(f).map(|_| f.as_str()),
        ComponentBy::Auto => COMPONENT_FIELDS.iter().copied().find(|f| get(f).is_some()),
        ComponentBy::FileName => None,
    };
    let mut text = String::with_capacity(line.len());
    let component = match component_field.and_then(get) {
        Some(raw) => push_text(&mut text, raw),
        None => push_span(&mut text, &log_file.name_component),
    };
    let level = ["level", "severity", "lvl"]
        .iter()
        .find_map(|f| get(f))
        .map_or(NO_SPAN, |raw| push_text(&mut text, raw));
    let message = ["message", "msg"]
        .iter()
        .find_map(|f| get(f))
        .map(|raw| push_text(&mut text, raw))
        .unwrap_or_else(|| push_span(&mut text, ""));
    let correlation = get(&opts.correlate).map_or(NO_SPAN, |raw| push_text(&mut text, raw));
    let skip = |k: &str| {
        TIME_FIELDS.contains(&k)
            || ["level", "severity", "lvl", "message", "msg"].contains(&k)
            || Some(k) == component_field
    };
    let fields = top
        .iter()
        .filter(|(k, _)| !skip(k))
        .map(|(k, v)| (push_span(&mut text, k), push_span(&mut text, v.get())))
        .collect();
    Ok(Some(Record {
        ts,
        file,
        line: line_no,
        text,
        component,
        level,
        message,
        correlation,
        fields,
    }))
}

/// Rank of a level for `--level`: unknown and missing levels count as info.
pub fn level_rank(level: Option<&str>) -> u8 {
    let Some(l) = level else { return 2 };
    match l.trim().to_ascii_lowercase().as_str() {
        "trace" | "10" => 0,
        "debug" | "dbg" | "20" => 1,
        "notice" => 3,
        "warn" | "warning" | "40" => 4,
        "error" | "err" | "50" => 5,
        "fatal" | "critical" | "crit" | "alert" | "emergency" | "emerg" | "panic" | "60" => 6,
        _ => 2,
    }
}

/// The result of the one parse of a file.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Whether its timestamps never go back.
    pub sorted: bool,
    pub events: u64,
    /// Components seen, with their event counts.
    pub components: Vec<(String, u64)>,
    /// Lines that could not be placed (the first [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Every malformed line, listed or not.
    pub malformed: u64,
    /// Every line without a readable timestamp, listed or not.
    pub no_timestamp: u64,
    /// Its records, parsed, for the merges to read back.
    pub spill: Option<std::sync::Arc<Spill>>,
}

/// A file's records as the scan parsed them, in file order, in a compact
/// binary form in the temporary folder (`TMPDIR`): the merge reads them
/// back without parsing JSON again, and memory stays independent of the
/// input's size. Deleted when dropped.
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
    fn create() -> anyhow::Result<(Self, std::io::BufWriter<File>)> {
        let path = std::env::temp_dir().join(format!(
            "sluice-timeline-{}-{:016x}.records",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = File::create(&path)
            .with_context(|| format!("cannot create {} (set TMPDIR elsewhere?)", path.display()))?;
        Ok((
            Self { path },
            std::io::BufWriter::with_capacity(256 * 1024, file),
        ))
    }

    fn open(&self) -> anyhow::Result<BufReader<File>> {
        let file = File::open(&self.path)
            .with_context(|| format!("cannot reopen {}", self.path.display()))?;
        Ok(BufReader::with_capacity(256 * 1024, file))
    }
}

fn put_span(out: &mut Vec<u8>, s: Span) {
    out.extend_from_slice(&s.0.to_le_bytes());
    out.extend_from_slice(&s.1.to_le_bytes());
}

/// Append `r` (all but its file index) to `out`.
fn encode(r: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&r.ts.to_le_bytes());
    out.extend_from_slice(&(r.line as u64).to_le_bytes());
    out.extend_from_slice(&(r.text.len() as u32).to_le_bytes());
    out.extend_from_slice(&(r.fields.len() as u32).to_le_bytes());
    for s in [r.component, r.level, r.message, r.correlation] {
        put_span(out, s);
    }
    for (k, v) in &r.fields {
        put_span(out, *k);
        put_span(out, *v);
    }
    out.extend_from_slice(r.text.as_bytes());
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// The next record of a spill, or `None` at its end.
fn decode(r: &mut impl BufRead, file: usize) -> std::io::Result<Option<Record>> {
    if r.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut head = [0u8; 24 + 32];
    r.read_exact(&mut head)?;
    let u32_at = |i: usize| u32::from_le_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let ts = i64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
    let line = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")) as usize;
    let text_len = u32_at(16) as usize;
    let n = u32_at(20) as usize;
    let span_at = |i: usize| (u32_at(i), u32_at(i + 4));
    let (component, level, message, correlation) =
        (span_at(24), span_at(32), span_at(40), span_at(48));
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let mut b = [0u8; 16];
        r.read_exact(&mut b)?;
        let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        fields.push(((word(0), word(4)), (word(8), word(12))));
    }
    let mut text = vec![0u8; text_len];
    r.read_exact(&mut text)?;
    let text = String::from_utf8(text).map_err(|_| bad("temporary records: invalid UTF-8"))?;
    let record = Record {
        ts,
        file,
        line,
        text,
        component,
        level,
        message,
        correlation,
        fields,
    };
    // Spans past the text would panic later: check them once here.
    let ok = |s: Span| {
        s == NO_SPAN
            || (s.0 <= s.1
                && s.1 as usize <= text_len
                && record.text.is_char_boundary(s.0 as usize)
                && record.text.is_char_boundary(s.1 as usize))
    };
    if ![component, level, message, correlation].into_iter().all(ok)
        || !record.fields.iter().all(|(k, v)| ok(*k) && ok(*v))
    {
        return Err(bad("temporary records: damaged"));
    }
    Ok(Some(record))
}

/// Parse a file once: is it sorted, which components does it hold, which
/// lines are problems; its records go to a [`Spill`].
pub fn scan(file: usize, log: &LogFile, opts: &ParseOptions) -> anyhow::Result<Scan> {
    let mut reader = open(&log.path)?;
    let (spill, mut writer) = Spill::create()?;
    let mut scan = Scan {
        sorted: true,
        ..Scan::default()
    };
    let mut last = i64::MIN;
    let mut line = String::new();
    let mut n = 0;
    let mut buf = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", log.path.display()))?
            == 0
        {
            break;
        }
        n += 1;
        match parse_line(&line, file, n, log, opts) {
            Ok(Some(r)) => {
                if r.ts < last {
                    scan.sorted = false;
                }
                last = last.max(r.ts);
                scan.events += 1;
                match scan.components.iter_mut().find(|(c, _)| c == r.component()) {
                    Some((_, count)) => *count += 1,
                    None => scan.components.push((r.component().to_string(), 1)),
                }
                buf.clear();
                encode(&r, &mut buf);
                std::io::Write::write_all(&mut writer, &buf)?;
            }
            Ok(None) => {}
            Err(p) => {
                match p {
                    Problem::Malformed { .. } => scan.malformed += 1,
                    Problem::NoTimestamp { .. } => scan.no_timestamp += 1,
                }
                if scan.problems.len() < MAX_PROBLEMS {
                    scan.problems.push(p);
                }
            }
        }
    }
    std::io::Write::flush(&mut writer).context("writing the timeline's temporary records")?;
    scan.spill = Some(std::sync::Arc::new(spill));
    Ok(scan)
}

/// [`scan`] every file, on as many threads as there are cores.
pub fn scan_all(files: &[LogFile], opts: &ParseOptions) -> anyhow::Result<Vec<Scan>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<anyhow::Result<Scan>>>> =
        files.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                *results[i].lock().expect("scan result lock") = Some(scan(i, f, opts));
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .expect("scan result lock")
                .expect("every file scanned")
        })
        .collect()
}

/// A source of records in time order: a sorted file's records read back
/// from its spill, or an unsorted file's, loaded and sorted in memory.
enum Stream {
    Spilled(BufReader<File>),
    Sorted(std::vec::IntoIter<Record>),
}

/// Merges files into one time-ordered stream of records (k-way merge:
/// memory holds one record per file, plus any unsorted file whole).
pub struct Merge {
    streams: Vec<Stream>,
    heap: BinaryHeap<Reverse<(i64, usize, usize)>>,
    heads: Vec<Option<Record>>,
    /// Lines that could not be placed (the first [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Every malformed line, listed or not.
    pub malformed: u64,
    /// Every line without a readable timestamp, listed or not.
    pub no_timestamp: u64,
}

/// At most this many problems are kept for the report; all are counted.
const MAX_PROBLEMS: usize = 100;

impl Merge {
    /// Merge the files `selected[i]` says take part, from their scans.
    pub fn new(selected: &[bool], scans: &[Scan]) -> anyhow::Result<Self> {
        let mut merge = Merge {
            streams: Vec::with_capacity(scans.len()),
            heap: BinaryHeap::new(),
            heads: vec![None; scans.len()],
            problems: Vec::new(),
            malformed: 0,
            no_timestamp: 0,
        };
        for (i, scan) in scans.iter().enumerate() {
            let spill = scan.spill.as_ref().filter(|_| selected[i]);
            let stream = match spill {
                None => Stream::Sorted(Vec::new().into_iter()),
                Some(spill) if scan.sorted => Stream::Spilled(spill.open()?),
                Some(spill) => {
                    let mut reader = spill.open()?;
                    let mut records = Vec::new();
                    while let Some(r) = decode(&mut reader, i)? {
                        records.push(r);
                    }
                    records.sort_by_key(|r| (r.ts, r.line));
                    Stream::Sorted(records.into_iter())
                }
            };
            if selected[i] {
                merge.malformed += scan.malformed;
                merge.no_timestamp += scan.no_timestamp;
                let room = MAX_PROBLEMS - merge.problems.len();
                merge
                    .problems
                    .extend(scan.problems.iter().take(room).cloned());
            }
            merge.streams.push(stream);
            merge.advance(i)?;
        }
        Ok(merge)
    }

    fn advance(&mut self, file: usize) -> anyhow::Result<()> {
        let next = match &mut self.streams[file] {
            Stream::Sorted(it) => it.next(),
            Stream::Spilled(reader) => {
                decode(reader, file).context("reading the timeline's temporary records")?
            }
        };
        if let Some(r) = next {
            self.heap.push(Reverse((r.ts, file, r.line)));
            self.heads[file] = Some(r);
        }
        Ok(())
    }

    /// The next record in time order (ties: by file, then line).
    pub fn next_record(&mut self) -> anyhow::Result<Option<Record>> {
        let Some(Reverse((_, file, _))) = self.heap.pop() else {
            return Ok(None);
        };
        let record = self.heads[file].take().expect("a head per heap entry");
        self.advance(file)?;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks() {
        let base = parse_time_str("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(parse_time_str("2026-11-23T11:00:00+01:00"), Some(base));
        assert_eq!(parse_time_str("2026-11-23T10:00:00"), Some(base));
        assert_eq!(
            parse_time_str("2026-11-23 10:00:00.250"),
            Some(base + 250_000)
        );
        assert_eq!(parse_time_str(&(base / 1_000_000).to_string()), Some(base));
        let raw = RawValue::from_string((base / 1000).to_string()).unwrap();
        assert_eq!(parse_time(&raw), Some(base));
        let raw = RawValue::from_string("1795428000.5".to_string()).unwrap();
        assert_eq!(parse_time(&raw), Some(1_795_428_000_500_000));
        assert_eq!(parse_time_str("yesterday"), None);
    }

    #[test]
    fn temporary_records_read_back_as_written() {
        let log = LogFile {
            path: PathBuf::from("svc-2026.log"),
            name_component: "svc".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let opts = ParseOptions {
            component_by: ComponentBy::Auto,
            correlate: "request_id".into(),
        };
        let lines = [
            r#"{"timestamp":"2026-11-23T10:00:01Z","level":"info","service":"api","message":"é ok","request_id":"r1","n":1}"#,
            r#"{"timestamp":"2026-11-23T10:00:00Z","msg":"no level, earlier","x":{"a":[1,2]}}"#,
            r#"{"ts":1795428000123,"level":"info","service":"api","message":"","k":"v\"q"}"#,
        ];
        let records: Vec<Record> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_line(l, 3, i * 7 + 1, &log, &opts).unwrap().unwrap())
            .collect();
        let mut bytes = Vec::new();
        for r in &records {
            encode(r, &mut bytes);
        }
        let show = |r: &Record| {
            format!(
                "{} {} {} {:?} {} {:?} {:?}",
                r.ts,
                r.line,
                r.component(),
                r.level(),
                r.message(),
                r.correlation(),
                r.fields().collect::<Vec<_>>()
            )
        };
        let mut reader = &bytes[..];
        for r in &records {
            let back = decode(&mut reader, 3).unwrap().unwrap();
            assert_eq!(show(&back), show(r));
            assert_eq!(back.file, 3);
        }
        assert!(decode(&mut reader, 3).unwrap().is_none());
        // A damaged span is refused, not a panic later.
        bytes[24] = 0xff;
        assert!(decode(&mut &bytes[..], 3).is_err());
    }

    #[test]
    fn file_components() {
        assert_eq!(
            component_of_file(Path::new("logs/trading-2026-11-23.log")),
            "trading"
        );
        assert_eq!(
            component_of_file(Path::new("webhook_20261123.log.gz")),
            "webhook"
        );
        assert_eq!(component_of_file(Path::new("exchange.log")), "exchange");
    }
}
