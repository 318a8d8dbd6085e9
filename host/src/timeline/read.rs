//! Reading JSON-lines logs for the timeline: finding files, parsing lines
//! and their clocks, and merging files in time order.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

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

/// One parsed log line.
#[derive(Debug, Clone)]
pub struct Record {
    /// Microseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub component: String,
    pub level: Option<String>,
    pub message: String,
    pub correlation: Option<String>,
    /// The other top-level fields, as raw JSON, in file order.
    pub fields: Vec<(String, String)>,
    /// Index of the file in the input list, and the 1-based line.
    pub file: usize,
    pub line: usize,
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
        let s: Cow<'_, str> = serde_json::from_str::<Str<'_>>(text).ok()?.0;
        parse_time_str(&s)
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

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

struct Top<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Top<'de>, A::Error> {
                let mut fields = Vec::with_capacity(16);
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(Top(fields))
            }
        }
        d.deserialize_map(V)
    }
}

fn as_text(raw: &RawValue) -> String {
    let t = raw.get();
    if t.starts_with('"') {
        serde_json::from_str::<Str<'_>>(t)
            .map(|s| s.0.into_owned())
            .unwrap_or_default()
    } else {
        t.to_string()
    }
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
    let top = serde_json::from_str::<Top<'_>>(line).map_err(|e| Problem::Malformed {
        file,
        line: line_no,
        error: e.to_string(),
    })?;
    let get = |name: &str| top.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
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
    let component = component_field
        .and_then(get)
        .map(as_text)
        .unwrap_or_else(|| log_file.name_component.clone());
    let level = ["level", "severity", "lvl"]
        .iter()
        .find_map(|f| get(f))
        .map(as_text);
    let message = ["message", "msg"]
        .iter()
        .find_map(|f| get(f))
        .map(as_text)
        .unwrap_or_default();
    let correlation = get(&opts.correlate).map(as_text);
    let skip = |k: &str| {
        TIME_FIELDS.contains(&k)
            || ["level", "severity", "lvl", "message", "msg"].contains(&k)
            || Some(k) == component_field
    };
    let fields = top
        .0
        .iter()
        .filter(|(k, _)| !skip(k))
        .map(|(k, v)| (k.to_string(), v.get().to_string()))
        .collect();
    Ok(Some(Record {
        ts,
        component,
        level,
        message,
        correlation,
        fields,
        file,
        line: line_no,
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

/// The result of one quick pass over a file.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Whether its timestamps never go back.
    pub sorted: bool,
    pub events: u64,
    /// Components seen, with their event counts.
    pub components: Vec<(String, u64)>,
}

/// The clock and component of a line, without building a record: all a
/// scan needs. `None` for lines the merge will report as problems.
fn scan_line(line: &str, log_file: &LogFile, opts: &ParseOptions) -> Option<(i64, Option<String>)> {
    let top = serde_json::from_str::<Top<'_>>(line).ok()?;
    let get = |name: &str| top.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let ts = TIME_FIELDS
        .iter()
        .find_map(|f| get(f))
        .and_then(parse_time)?;
    let field = match &opts.component_by {
        ComponentBy::Field(f) => get(f),
        ComponentBy::Auto => COMPONENT_FIELDS.iter().find_map(|f| get(f)),
        ComponentBy::FileName => None,
    };
    let _ = log_file;
    Some((ts, field.map(as_text)))
}

/// Read a file once: is it sorted, which components does it hold.
pub fn scan(file: usize, log: &LogFile, opts: &ParseOptions) -> anyhow::Result<Scan> {
    let _ = file;
    let mut reader = open(&log.path)?;
    let mut scan = Scan {
        sorted: true,
        ..Scan::default()
    };
    let mut last = i64::MIN;
    let mut line = String::new();
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .with_context(|| format!("reading {}", log.path.display()))?
            == 0
        {
            break;
        }
        if let Some((ts, component)) = scan_line(&line, log, opts) {
            if ts < last {
                scan.sorted = false;
            }
            last = last.max(ts);
            scan.events += 1;
            let component = component.as_deref().unwrap_or(&log.name_component);
            match scan.components.iter_mut().find(|(c, _)| c == component) {
                Some((_, count)) => *count += 1,
                None => scan.components.push((component.to_string(), 1)),
            }
        }
    }
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

/// A source of records in time order: a streaming file, or an unsorted
/// file loaded and sorted in memory.
enum Stream {
    Lines {
        reader: Box<dyn BufRead + Send>,
        line: String,
        n: usize,
    },
    Sorted(std::vec::IntoIter<Record>),
}

/// Merges files into one time-ordered stream of records (k-way merge:
/// memory holds one record per file, plus any unsorted file whole).
pub struct Merge<'a> {
    files: &'a [LogFile],
    opts: &'a ParseOptions,
    streams: Vec<Stream>,
    heap: BinaryHeap<Reverse<(i64, usize, usize)>>,
    heads: Vec<Option<Record>>,
    /// Lines that could not be placed.
    pub problems: Vec<Problem>,
    /// Every malformed line, listed or not.
    pub malformed: u64,
    /// Every line without a readable timestamp, listed or not.
    pub no_timestamp: u64,
}

/// At most this many problems are kept for the report; all are counted.
const MAX_PROBLEMS: usize = 100;

impl<'a> Merge<'a> {
    /// `selected[i]` says whether file `i` takes part, `sorted[i]` whether it
    /// can be streamed.
    pub fn new(
        files: &'a [LogFile],
        selected: &[bool],
        sorted: &[bool],
        opts: &'a ParseOptions,
    ) -> anyhow::Result<Self> {
        let mut merge = Merge {
            files,
            opts,
            streams: Vec::with_capacity(files.len()),
            heap: BinaryHeap::new(),
            heads: vec![None; files.len()],
            problems: Vec::new(),
            malformed: 0,
            no_timestamp: 0,
        };
        for (i, f) in files.iter().enumerate() {
            let stream = if !selected[i] {
                Stream::Sorted(Vec::new().into_iter())
            } else if sorted[i] {
                Stream::Lines {
                    reader: open(&f.path)?,
                    line: String::new(),
                    n: 0,
                }
            } else {
                let mut records = Vec::new();
                let mut s = Stream::Lines {
                    reader: open(&f.path)?,
                    line: String::new(),
                    n: 0,
                };
                while let Some(r) = merge.read(&mut s, i)? {
                    records.push(r);
                }
                records.sort_by_key(|r| (r.ts, r.line));
                Stream::Sorted(records.into_iter())
            };
            merge.streams.push(stream);
            merge.advance(i)?;
        }
        Ok(merge)
    }

    fn note(&mut self, p: Problem) {
        match p {
            Problem::Malformed { .. } => self.malformed += 1,
            Problem::NoTimestamp { .. } => self.no_timestamp += 1,
        }
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }

    fn read(&mut self, stream: &mut Stream, file: usize) -> anyhow::Result<Option<Record>> {
        match stream {
            Stream::Sorted(it) => Ok(it.next()),
            Stream::Lines { reader, line, n } => loop {
                line.clear();
                let read = reader
                    .read_line(line)
                    .with_context(|| format!("reading {}", self.files[file].path.display()))?;
                if read == 0 {
                    return Ok(None);
                }
                *n += 1;
                match parse_line(line, file, *n, &self.files[file], self.opts) {
                    Ok(Some(r)) => return Ok(Some(r)),
                    Ok(None) => {}
                    Err(p) => self.note(p),
                }
            },
        }
    }

    fn advance(&mut self, file: usize) -> anyhow::Result<()> {
        let mut stream = std::mem::replace(
            &mut self.streams[file],
            Stream::Sorted(Vec::new().into_iter()),
        );
        let next = self.read(&mut stream, file)?;
        self.streams[file] = stream;
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
