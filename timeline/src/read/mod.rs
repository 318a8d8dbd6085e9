//! Reading JSON-lines logs for the timeline: finding files, parsing lines
//! and their clocks, and merging files in time order.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::timeline::read";

mod files;
mod times;

pub use self::files::*;
pub use self::times::*;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;

use super::spill::{Spill, SpillReader};
use sluice_core::base::event::{dotted, top_fields, value_text};

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
pub(super) type Span = (u32, u32);
pub(super) const NO_SPAN: Span = (u32::MAX, u32::MAX);

/// One parsed log line. Its strings live back to back in one buffer: a
/// record costs two allocations, not one per field, and a record read
/// into again reuses both.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Microseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// Index of the file in the input list, and the 1-based line.
    pub file: usize,
    pub line: usize,
    /// The level's [`level_rank`], found once when the line is parsed.
    pub rank: u8,
    pub(super) text: String,
    pub(super) component: Span,
    pub(super) level: Span,
    pub(super) message: Span,
    /// Its own text, or inside a field's raw string value.
    pub(super) correlation: Span,
    /// The other top-level fields (name, raw JSON), in file order.
    pub(super) fields: Vec<(Span, Span)>,
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

/// What the parser needs to know.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    pub component_by: ComponentBy,
    pub correlate: String,
    /// Where the time, level and message are, when not in the usual fields.
    pub fields: FieldNames,
    /// Keys for `.age` files.
    pub identities: Option<sluice_core::base::crypt::Identities>,
}

/// Fields of the time, level and message (dotted paths allowed), for
/// records that keep them elsewhere (loguru's `record.level.name`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldNames {
    pub timestamp: Option<String>,
    pub level: Option<String>,
    pub message: Option<String>,
    /// The objects whose members are the fields shown beside the message
    /// (loguru's `record.extra`), instead of the top-level fields; a path
    /// to something else than an object is shown under its last name.
    pub shown_from: Vec<String>,
    /// Top-level fields a library writes on every record, not shown
    /// (Python logging's `lineno`, pino's `pid`); with these set, fields
    /// that are null are not shown either.
    pub hidden: Vec<String>,
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
    let get = |name: &str| dotted(&top, name);
    let ts = match &opts.fields.timestamp {
        Some(f) => get(f),
        None => TIME_FIELDS.iter().find_map(|f| get(f)),
    }
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
    // Python names a script's module `__main__` (loguru's `record.name`,
    // logging's `name`): every script would be one component, so the
    // file's name stands in for it.
    let component = match component_field.and_then(get) {
        Some(raw) if value_text(raw.get()) != "__main__" => push_text(&mut text, raw),
        _ => push_span(&mut text, &log_file.name_component),
    };
    let level = match &opts.fields.level {
        Some(f) => get(f),
        None => ["level", "severity", "lvl"].iter().find_map(|f| get(f)),
    }
    .map_or(NO_SPAN, |raw| push_text(&mut text, raw));
    let rank = level_rank((level != NO_SPAN).then(|| &text[level.0 as usize..level.1 as usize]));
    let message = match &opts.fields.message {
        Some(f) => get(f),
        None => ["message", "msg"].iter().find_map(|f| get(f)),
    }
    .map(|raw| push_text(&mut text, raw))
    .unwrap_or_else(|| push_span(&mut text, ""));
    let skip = |k: &str| {
        TIME_FIELDS.contains(&k)
            || ["level", "severity", "lvl", "message", "msg"].contains(&k)
            || Some(k) == component_field
            || [
                &opts.fields.timestamp,
                &opts.fields.level,
                &opts.fields.message,
            ]
            .iter()
            .any(|f| f.as_deref() == Some(k))
    };
    let correlate = get(&opts.correlate);
    let mut correlation = NO_SPAN;
    let shown: Vec<(Cow<'_, str>, &RawValue)> = if opts.fields.shown_from.is_empty() {
        let quiet = !opts.fields.hidden.is_empty();
        top.iter()
            .filter(|(k, v)| {
                let library = opts.fields.hidden.iter().any(|h| h == k);
                !(skip(k) || library || (quiet && v.get() == "null"))
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    } else {
        let mut shown = Vec::new();
        for path in &opts.fields.shown_from {
            match get(path) {
                Some(raw) if raw.get().starts_with('{') => {
                    shown.extend(top_fields(raw.get()).unwrap_or_default())
                }
                Some(raw) if raw.get() != "null" => {
                    let name = path.rsplit('.').next().unwrap_or(path);
                    shown.push((Cow::Owned(name.to_string()), raw));
                }
                _ => {}
            }
        }
        shown
    };
    let mut fields = Vec::with_capacity(shown.len());
    for (k, v) in &shown {
        let key = push_span(&mut text, k);
        let value = push_span(&mut text, v.get());
        fields.push((key, value));
        // A correlation id that is a string without escapes is not copied
        // again: it is its field's raw value without the quotes.
        if correlate.is_some_and(|c| std::ptr::eq(c, *v))
            && v.get().starts_with('"')
            && matches!(value_text(v.get()), Cow::Borrowed(_))
        {
            correlation = (value.0 + 1, value.1 - 1);
        }
    }
    if correlation == NO_SPAN {
        correlation = correlate.map_or(NO_SPAN, |raw| push_text(&mut text, raw));
    }
    Ok(Some(Record {
        ts,
        file,
        line: line_no,
        rank,
        text,
        component,
        level,
        message,
        correlation,
        fields,
    }))
}

/// Rank of a level for `--level` ([`sluice_common::level::rank`], trace 0
/// .. fatal 6): unknown and missing levels count as info.
pub fn level_rank(level: Option<&str>) -> u8 {
    level.and_then(sluice_common::level::rank).unwrap_or(2)
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

/// Parse a file once: is it sorted, which components does it hold, which
/// lines are problems; its records go to a [`Spill`].
pub fn scan(file: usize, log: &LogFile, opts: &ParseOptions) -> anyhow::Result<Scan> {
    let mut reader = match open(&log.path, opts.identities.as_ref()) {
        Ok(r) => r,
        // One file that cannot be decrypted (another key, a hostile
        // header) does not stop the timeline of the others.
        Err(e)
            if sluice_core::base::crypt::Packing::of(&log.path).encrypted
                && opts.identities.is_some() =>
        {
            tracing::warn!(target: LOG_TARGET, path = %log.path.display(), error = %format!("{e:#}"), "cannot decrypt this file: left out of the timeline");
            eprintln!("warning: {e:#}: left out of the timeline");
            Box::new(std::io::BufReader::new(std::io::empty()))
        }
        Err(e) => return Err(e),
    };
    let packed = sluice_core::base::crypt::Packing::of(&log.path).packed();
    let (spill, mut writer) = Spill::create()?;
    let mut scan = Scan {
        sorted: true,
        ..Scan::default()
    };
    let mut last = i64::MIN;
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            // A compressed or encrypted file cut short (its writer was
            // killed): what came before the cut is read.
            Err(e) if packed && e.kind() != std::io::ErrorKind::InvalidInput => {
                tracing::warn!(target: LOG_TARGET, path = %log.path.display(), error = %e, "file cut short: reading it up to here");
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", log.path.display())),
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
                writer
                    .write(&r)
                    .context("writing the timeline's temporary records")?;
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
    writer
        .finish()
        .context("writing the timeline's temporary records")?;
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
    Spilled(SpillReader<BufReader<File>>),
    Sorted(std::vec::IntoIter<Record>),
}

/// Merges files into one time-ordered stream of records (k-way merge:
/// memory holds one record per file, plus any unsorted file whole).
pub struct Merge {
    streams: Vec<Stream>,
    /// (clock, file, line) of each file's next record.
    heap: BinaryHeap<Reverse<(i64, usize, usize)>>,
    heads: Vec<Record>,
    /// Lines that could not be placed (the first [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// Every malformed line, listed or not.
    pub malformed: u64,
    /// Every line without a readable timestamp, listed or not.
    pub no_timestamp: u64,
}

/// At most this many problems are kept for the report; all are counted.
const MAX_PROBLEMS: usize = 100;

/// Read `file`'s next record into `head`; whether there was one.
fn next_of(stream: &mut Stream, file: usize, head: &mut Record) -> anyhow::Result<bool> {
    match stream {
        Stream::Sorted(it) => Ok(it.next().map(|r| *head = r).is_some()),
        Stream::Spilled(reader) => reader
            .read_into(file, head)
            .context("reading the timeline's temporary records"),
    }
}

impl Merge {
    /// Merge the files `selected[i]` says take part, from their scans.
    pub fn new(selected: &[bool], scans: &[Scan]) -> anyhow::Result<Self> {
        let mut merge = Merge {
            streams: Vec::with_capacity(scans.len()),
            heap: BinaryHeap::new(),
            heads: vec![Record::default(); scans.len()],
            problems: Vec::new(),
            malformed: 0,
            no_timestamp: 0,
        };
        for (i, scan) in scans.iter().enumerate() {
            let spill = scan.spill.as_ref().filter(|_| selected[i]);
            let mut stream = match spill {
                None => Stream::Sorted(Vec::new().into_iter()),
                Some(spill) if scan.sorted => Stream::Spilled(spill.open()?),
                Some(spill) => {
                    let mut reader = spill.open()?;
                    let (mut records, mut r) = (Vec::new(), Record::default());
                    while reader.read_into(i, &mut r)? {
                        records.push(std::mem::take(&mut r));
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
            let head = &mut merge.heads[i];
            if next_of(&mut stream, i, head)? {
                merge.heap.push(Reverse((head.ts, i, head.line)));
            }
            merge.streams.push(stream);
        }
        Ok(merge)
    }

    /// Move the next record in time order (ties: by file, then line) into
    /// `slot`, whose buffers are reused; `false` when every file is done.
    pub fn next_into(&mut self, slot: &mut Record) -> anyhow::Result<bool> {
        let Some(mut top) = self.heap.peek_mut() else {
            return Ok(false);
        };
        let file = top.0 .1;
        let head = &mut self.heads[file];
        std::mem::swap(slot, head);
        if next_of(&mut self.streams[file], file, head)? {
            // Replacing the top sifts once, where pop and push would twice.
            *top = Reverse((head.ts, file, head.line));
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(line: &str, fields: FieldNames) -> Vec<(String, String)> {
        let log = LogFile {
            path: PathBuf::from("shop.log"),
            name_component: "shop".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let opts = ParseOptions {
            component_by: ComponentBy::Field("name".into()),
            correlate: "request_id".into(),
            fields,
            identities: None,
        };
        let r = parse_line(line, 0, 1, &log, &opts).unwrap().unwrap();
        r.fields()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fields_a_library_writes_on_every_record_are_not_shown() {
        // Python logging's `__dict__` as HTTPHandler sends it.
        let line = r#"{"name":"shop","msg":"paid","args":"()","levelname":"INFO","levelno":20,"pathname":"/a.py","filename":"a.py","module":"a","exc_info":null,"exc_text":null,"stack_info":null,"lineno":3,"funcName":"f","created":1796474732.5,"msecs":500.0,"relativeCreated":9.1,"thread":1,"threadName":"MainThread","processName":"MainProcess","process":7,"order_id":1000}"#;
        let python = FieldNames {
            timestamp: Some("created".into()),
            level: Some("levelname".into()),
            message: Some("msg".into()),
            shown_from: Vec::new(),
            hidden: [
                "args",
                "levelno",
                "pathname",
                "filename",
                "module",
                "lineno",
                "funcName",
                "msecs",
                "relativeCreated",
                "thread",
                "threadName",
                "processName",
                "process",
            ]
            .map(String::from)
            .to_vec(),
        };
        assert_eq!(shown(line, python), [("order_id".into(), "1000".into())]);
        // Without a preset, every other field is shown, as before.
        assert_eq!(
            shown(
                line,
                FieldNames {
                    timestamp: Some("created".into()),
                    ..FieldNames::default()
                }
            )
            .len(),
            18
        );
        // loguru: the members of `record.extra`, and an exception if any.
        let line = r#"{"text":"x | INFO | paid\n","record":{"elapsed":{"repr":"0:00:00.1","seconds":0.1},"exception":null,"extra":{"request_id":"r-1","order_id":7},"file":{"name":"a.py"},"level":{"name":"INFO"},"message":"paid","name":"__main__","time":{"timestamp":1796474732.5}}}"#;
        let loguru = FieldNames {
            timestamp: Some("record.time.timestamp".into()),
            level: Some("record.level.name".into()),
            message: Some("record.message".into()),
            shown_from: vec!["record.extra".into(), "record.exception".into()],
            hidden: Vec::new(),
        };
        assert_eq!(
            shown(line, loguru),
            [
                ("request_id".into(), "\"r-1\"".into()),
                ("order_id".into(), "7".into())
            ]
        );
    }

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
    fn level_ranks() {
        let rank = |l: &str| level_rank(Some(l));
        assert_eq!(
            [
                rank("TRACE"),
                rank("dbg"),
                rank(" WARNING "),
                rank("Err"),
                rank("60")
            ],
            [0, 1, 4, 5, 6]
        );
        // Info, unknown and missing rank the same.
        assert_eq!(
            [rank("information"), rank("verbose"), level_rank(None)],
            [2, 2, 2]
        );
        assert_eq!(rank("notice"), 3);
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

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any line of a log file: a record, nothing, or a problem.
        #[test]
        fn prop_timeline_lines_never_panic(line in "\\PC{0,200}", json in any::<bool>()) {
            let (log, opts) = crate::tests::fixture();
            let line = if json { format!("{{\"timestamp\":\"{line}\",\"service\":1,\"message\":{}}}", serde_json::Value::from(line.clone())) } else { line };
            let _ = parse_line(&line, 0, 1, &log, &opts);
            let _ = parse_time_str(&line);
        }
    }
}
