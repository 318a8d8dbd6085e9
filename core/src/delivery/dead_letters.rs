//! Dead letters: where events go when they cannot go on.
//!
//! Dead letters are ordinary events on the reserved output
//! `_dead_letters`, which any sink may read. Each is one record of a
//! documented, versioned format (`dl_version` 1):
//!
//! ```json
//! {"dl_version":1,"dl_id":"3f2a...","attempt":1,"timestamp":"...","component":"mask",
//!  "plugin":"mask.wasm","plugin_version":"mask 0.1.0 (sha256:ab12..)",
//!  "error":{"kind":"trap","message":"..."},"event":{...}}
//! ```
//!
//! - `event` is the original event byte for byte when it is a one-line JSON
//!   object; a line that is not an object is kept as a JSON string; when
//!   neither holds the exact bytes (invalid UTF-8, a multi-line object),
//!   `event_base64` has them and `event` a readable approximation.
//! - `dl_id` is derived from the event's bytes (a SHA-256 prefix), so the
//!   same event failing again has the same id; `attempt` counts its
//!   failures: 1, then one more each time a replay of it fails again.
//!
//! [`Record`] reads them back; `sluice dead-letters` and the `dead_letters`
//! source replay them. With no sink reading them, dead letters are counted
//! and logged per batch.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::delivery::dead_letters";

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::base::event::{check_object, now_rfc3339, Batch};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Output;

/// The version of the record format written here.
pub const RECORD_VERSION: u64 = 1;

/// The id of a dead letter: the first 16 bytes of the SHA-256 of the
/// event's bytes, in hex.
pub fn dl_id(event: &[u8]) -> String {
    Sha256::digest(event)[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Events being replayed in this process: id -> the attempt their record
/// had. A replayed event that fails again is written with one more.
static REPLAYING: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Say that the event with this id is sent again after `attempt` failures.
pub fn replaying(id: &str, attempt: u64) {
    REPLAYING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_string(), attempt);
}

fn attempts_before(id: &str) -> Option<u64> {
    REPLAYING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(id)
        .copied()
}

/// A dead-letter record, read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// The whole record, as written.
    pub value: serde_json::Value,
    pub id: String,
    pub attempt: u64,
    pub component: String,
    pub kind: String,
    pub message: String,
    pub timestamp: String,
    /// The original event's bytes.
    pub event: Vec<u8>,
}

impl Record {
    /// Parse one line of a dead-letter file.
    pub fn parse(line: &str) -> Result<Record, String> {
        #[derive(serde::Deserialize, schemars::JsonSchema)]
        struct Raw<'a> {
            #[serde(borrow)]
            #[schemars(with = "Option<serde_json::Value>")]
            event: Option<&'a serde_json::value::RawValue>,
            event_base64: Option<String>,
        }
        let raw: Raw<'_> =
            serde_json::from_str(line).map_err(|e| format!("not a dead letter: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        match value.get("dl_version") {
            None => {}
            Some(v) if v.as_u64() == Some(RECORD_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "dl_version {v} is not one this sluice reads (it reads {RECORD_VERSION}): written by a newer sluice?"
                ))
            }
        }
        // The id names the record in FILE.replayed, one per line: 32 hex
        // digits and nothing else, never text that could add lines there.
        if let Some(id) = value.get("dl_id") {
            let ok = id
                .as_str()
                .is_some_and(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return Err(format!("dl_id {id} is not 32 hex digits"));
            }
        }
        let event = if let Some(b64) = &raw.event_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("event_base64: {e}"))?
        } else {
            let text = raw.event.ok_or("not a dead letter: no `event`")?.get();
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::String(s)) => s.into_bytes(),
                _ => text.as_bytes().to_vec(),
            }
        };
        let str_at = |path: &[&str]| -> String {
            let mut v = &value;
            for p in path {
                v = &v[*p];
            }
            v.as_str().unwrap_or_default().to_string()
        };
        Ok(Record {
            id: value["dl_id"]
                .as_str()
                .map_or_else(|| dl_id(&event), str::to_string),
            attempt: value["attempt"].as_u64().unwrap_or(1),
            component: str_at(&["component"]),
            kind: str_at(&["error", "kind"]),
            message: str_at(&["error", "message"]),
            timestamp: str_at(&["timestamp"]),
            event,
            value,
        })
    }
}

pub use crate::base::metrics::DeadLetterStats;

/// The records of a dead-letter file already replayed, by id and attempt,
/// in `FILE.replayed` (one `id attempt` per line).
pub struct ReplayLog {
    path: PathBuf,
    done: BTreeSet<(String, u64)>,
}

impl ReplayLog {
    /// The log of dead-letter file `file` (`FILE.replayed`).
    pub fn load(file: &Path) -> anyhow::Result<ReplayLog> {
        let mut name = file.as_os_str().to_owned();
        name.push(".replayed");
        Self::at(PathBuf::from(name))
    }

    /// The log at `path`.
    pub fn at(path: PathBuf) -> anyhow::Result<ReplayLog> {
        let done = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| {
                    let (id, a) = l.split_once(' ')?;
                    Some((id.to_string(), a.trim().parse().ok()?))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(ReplayLog { path, done })
    }

    /// Whether this record was replayed.
    pub fn has(&self, r: &Record) -> bool {
        self.done.contains(&(r.id.clone(), r.attempt))
    }

    /// Remember that this record was replayed.
    pub fn insert(&mut self, r: &Record) {
        self.done.insert((r.id.clone(), r.attempt));
    }

    /// Remember the log on disk: written to a new file of a random name
    /// beside it (created, never opened if something is there: a symlink
    /// planted at a known temporary name cannot redirect the write),
    /// synced, then renamed over it.
    pub fn save(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut text = String::new();
        for (id, a) in &self.done {
            text.push_str(&format!("{id} {a}\n"));
        }
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{:016x}.tmp", fastrand::u64(..)));
        let tmp = PathBuf::from(name);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("writing {}", tmp.display()));
        }
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Remember that these records were replayed, and save at once.
    pub fn insert_and_save<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> anyhow::Result<()> {
        for r in records {
            self.insert(r);
        }
        self.save()
    }
}

/// The longest dead-letter record read back by default (16 MiB): a
/// longer line is skipped as it is read, never held whole.
pub const DEFAULT_MAX_RECORD: usize = 16 << 20;

/// A line of a dead-letter file, as [`LineCutter`] cuts it.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Whole(Vec<u8>),
    /// Longer than the cutter's bound: skipped.
    TooLong,
}

/// Cuts what a reader gives into lines of at most `max` bytes, in linear
/// time and memory bounded by `max` plus the reader's buffer. A line not
/// ended yet is kept for the next [`feed`](LineCutter::feed) (a file still
/// being written); one past `max` is skipped up to its newline.
#[derive(Debug)]
pub struct LineCutter {
    max: usize,
    cur: Vec<u8>,
    skipping: bool,
}

impl LineCutter {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            cur: Vec::new(),
            skipping: false,
        }
    }

    /// Forget a line in progress (the file was truncated or replaced).
    pub fn reset(&mut self) {
        self.cur.clear();
        self.skipping = false;
    }

    /// Read until the reader's end or until `budget` bytes were taken,
    /// pushing each complete line to `out`; returns the bytes taken.
    pub fn feed(
        &mut self,
        reader: &mut impl std::io::BufRead,
        out: &mut Vec<Line>,
        budget: u64,
    ) -> std::io::Result<u64> {
        let mut taken = 0u64;
        while taken < budget {
            let buf = reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (used, ended) = match memchr::memchr(b'\n', buf) {
                Some(i) => (i + 1, Some(i)),
                None => (buf.len(), None),
            };
            let text = &buf[..ended.unwrap_or(used)];
            if !self.skipping {
                if self.cur.len() + text.len() > self.max {
                    self.skipping = true;
                    self.cur = Vec::new();
                } else {
                    self.cur.extend_from_slice(text);
                }
            }
            if ended.is_some() {
                if std::mem::take(&mut self.skipping) {
                    out.push(Line::TooLong);
                } else {
                    out.push(Line::Whole(std::mem::take(&mut self.cur)));
                }
            }
            reader.consume(used);
            taken += used as u64;
        }
        Ok(taken)
    }

    /// At the end of a file that is complete: its last line, if it has no
    /// newline.
    pub fn finish(&mut self) -> Option<Line> {
        if std::mem::take(&mut self.skipping) {
            return Some(Line::TooLong);
        }
        (!self.cur.is_empty()).then(|| Line::Whole(std::mem::take(&mut self.cur)))
    }
}

/// The reserved name of the dead-letter output.
pub const DEAD_LETTERS: &str = "_dead_letters";

/// Why an event failed, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A source could not turn input into an event (malformed JSON...).
    Decode,
    /// The plugin trapped (a panic in Rust guests, or any wasm trap).
    Trap,
    /// The plugin exceeded its time budget.
    Timeout,
    /// The plugin exceeded its memory limit.
    Memory,
    /// The plugin overflowed its stack.
    StackOverflow,
    /// The plugin returned an error.
    PluginError,
    /// The plugin returned verdicts the host cannot use.
    InvalidOutput,
    /// A sink can never write it (a file name the filesystem refuses).
    Write,
    /// The target refused it for good (an HTTP 4xx, a mapping error).
    Rejected,
    /// The sink's disk buffer was full (`when_full = "dead_letter"`).
    BufferFull,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::Trap => "trap",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Memory => "memory",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::PluginError => "plugin_error",
            ErrorKind::InvalidOutput => "invalid_output",
            ErrorKind::Write => "write",
            ErrorKind::Rejected => "rejected",
            ErrorKind::BufferFull => "buffer_full",
        }
    }
}

/// One failed event and its reason.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    pub event: &'a [u8],
    pub kind: ErrorKind,
    pub message: String,
}

/// The `_dead_letters` output, shared by every component. When the last
/// component holding it ends, the output ends, so the sinks reading dead
/// letters can drain and stop.
#[derive(Debug)]
pub struct DeadOutput(pub Output, pub DeadLetterStats);

impl Drop for DeadOutput {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The `event` of a record, as JSON text, and whether it gives back the
/// exact bytes: a one-line JSON object verbatim, other text as a JSON
/// string; else (invalid UTF-8, an object over several lines) a readable
/// approximation, the exact bytes then going in `event_base64`.
fn event_json(bytes: &[u8]) -> (std::borrow::Cow<'_, str>, bool) {
    use std::borrow::Cow;
    let Ok(text) = std::str::from_utf8(bytes) else {
        let lossy = serde_json::Value::from(String::from_utf8_lossy(bytes).into_owned());
        return (Cow::Owned(lossy.to_string()), false);
    };
    if check_object(bytes).is_err() {
        return (Cow::Owned(serde_json::Value::from(text).to_string()), true);
    }
    if !text.contains(['\n', '\r']) {
        return (Cow::Borrowed(text), true);
    }
    let one_line = serde_json::from_str::<serde_json::Value>(text)
        .unwrap_or_else(|_| text.into())
        .to_string();
    (Cow::Owned(one_line), false)
}

/// Where a component sends its dead letters.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    component: Arc<str>,
    /// The plugin path and version, for transforms.
    plugin: Option<(String, String)>,
    out: Arc<DeadOutput>,
}

impl DeadLetters {
    pub fn new(component: &str, out: Arc<DeadOutput>) -> Self {
        Self {
            component: component.into(),
            plugin: None,
            out,
        }
    }

    /// The same output, tagged with a plugin's path and version.
    pub fn for_plugin(&self, plugin: &str, version: &str) -> Self {
        Self {
            plugin: Some((plugin.to_string(), version.to_string())),
            ..self.clone()
        }
    }

    /// Encode dead letters as a batch of events.
    pub fn encode(&self, letters: &[DeadLetter<'_>]) -> Batch {
        let now = now_rfc3339();
        let mut batch = Batch::with_capacity(letters.len(), 256 * letters.len());
        for l in letters {
            let mut obj = serde_json::Map::new();
            obj.insert("timestamp".into(), now.clone().into());
            obj.insert("component".into(), self.component.as_ref().into());
            if let Some((plugin, version)) = &self.plugin {
                obj.insert("plugin".into(), plugin.clone().into());
                obj.insert("plugin_version".into(), version.clone().into());
            }
            obj.insert(
                "error".into(),
                serde_json::json!({"kind": l.kind.as_str(), "message": l.message}),
            );
            let id = dl_id(l.event);
            let before = attempts_before(&id);
            if before.is_some() {
                self.out.1.add(&self.component, l.kind.as_str(), 2, 1);
            }
            self.out.1.add(&self.component, l.kind.as_str(), 0, 1);
            let mut head = serde_json::Map::new();
            head.insert("dl_version".into(), RECORD_VERSION.into());
            head.insert("dl_id".into(), id.into());
            head.insert("attempt".into(), (before.unwrap_or(0) + 1).into());
            head.append(&mut obj);
            let mut obj = head;
            let (event, exact) = event_json(l.event);
            if !exact {
                obj.insert(
                    "event_base64".into(),
                    base64::engine::general_purpose::STANDARD
                        .encode(l.event)
                        .into(),
                );
            }
            // `event` last, so a reader sees the reason first.
            batch.data.extend_from_slice(b"{");
            let fields = serde_json::to_string(&obj).expect("a map serializes");
            batch
                .data
                .extend_from_slice(&fields.as_bytes()[1..fields.len() - 1]);
            batch.data.extend_from_slice(b",\"event\":");
            batch.data.extend_from_slice(event.as_bytes());
            batch.data.extend_from_slice(b"}");
            batch.seal();
        }
        batch
    }

    /// The counts of dead letters written, replayed and failed again.
    pub fn stats(&self) -> &DeadLetterStats {
        &self.out.1
    }

    /// Whether any sink reads the dead letters (else they are only counted
    /// and logged).
    pub fn has_reader(&self) -> bool {
        self.out.0.has_consumers()
    }

    fn account(&self, metrics: &ComponentMetrics, letters: &[DeadLetter<'_>]) -> Option<Batch> {
        ComponentMetrics::add(&metrics.failed, letters.len());
        letters.first()?;
        // One line per kind of failure, with its count and its first
        // message (a batch with a panic, a loop and too much memory says
        // all three).
        let mut kinds: Vec<(ErrorKind, usize, &str)> = Vec::new();
        for l in letters {
            match kinds.iter_mut().find(|(k, _, _)| *k == l.kind) {
                Some((_, n, _)) => *n += 1,
                None => kinds.push((l.kind, 1, &l.message)),
            }
        }
        for (kind, count, message) in kinds {
            tracing::warn!(target: LOG_TARGET, component = %self.component,
                count,
                kind = kind.as_str(),
                error = %message,
                "events dead-lettered"
            );
        }
        Some(self.encode(letters))
    }

    /// Send dead letters from async code. `acks` are those of the batch the
    /// letters came from: a source is answered once its dead letters are
    /// written too.
    pub async fn send(
        &self,
        metrics: &ComponentMetrics,
        letters: &[DeadLetter<'_>],
        acks: &[Arc<crate::base::ack::Ack>],
    ) {
        if let Some(mut batch) = self.account(metrics, letters) {
            batch.acks = acks.to_vec();
            if self.out.0.send(0, batch).await.is_err() {
                tracing::error!(target: LOG_TARGET, component = %self.component, "dead-letter sink is gone; dead letters lost");
            }
        }
    }

    /// Send dead letters from a blocking thread (plugin stages).
    pub fn blocking_send(
        &self,
        metrics: &ComponentMetrics,
        letters: &[DeadLetter<'_>],
        acks: &[Arc<crate::base::ack::Ack>],
    ) {
        if let Some(mut batch) = self.account(metrics, letters) {
            batch.acks = acks.to_vec();
            if self.out.0.blocking_send(0, batch).is_err() {
                tracing::error!(target: LOG_TARGET, component = %self.component, "dead-letter sink is gone; dead letters lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The record parser on any line: never a panic; what it takes has
        /// an id that is 32 hex digits.
        #[test]
        fn prop_dead_letter_records_parse_or_refuse(
            line in "\\{(\"(dl_version|dl_id|attempt|event|event_base64|error|component)\":(1|999|\"[0-9a-f]{0,34}\"|\\{\\}|\"[a-zA-Z0-9+/=\\\\n ]{0,20}\"|null),?){0,6}\\}",
        ) {
            if let Ok(r) = Record::parse(&line) {
                prop_assert!(r.id.len() == 32 && r.id.bytes().all(|b| b.is_ascii_hexdigit()));
            }
        }

        /// Lines cut through any buffer size: the same lines as split, each
        /// at most the bound, the longer ones reported as too long.
        #[test]
        fn prop_dead_letter_lines_cut_like_split(
            text in "[ab\n]{0,300}",
            max in 1usize..20,
            buffer in 1usize..16,
        ) {
            let mut cutter = LineCutter::new(max);
            let mut out = Vec::new();
            let mut reader = std::io::BufReader::with_capacity(buffer, text.as_bytes());
            cutter.feed(&mut reader, &mut out, u64::MAX).unwrap();
            out.extend(cutter.finish());
            let mut want: Vec<Line> = text
                .split('\n')
                .map(|l| if l.len() > max { Line::TooLong } else { Line::Whole(l.as_bytes().to_vec()) })
                .collect();
            // `split` gives an empty piece after a final newline; the cutter
            // gives no line there.
            if text.is_empty() || text.ends_with('\n') {
                want.pop();
            }
            prop_assert_eq!(out, want);
        }
    }

    #[test]
    fn lines_are_cut_in_bounded_memory() {
        let text = format!("a\n{}\nbc\n{}", "x".repeat(100), "d");
        let mut cutter = LineCutter::new(10);
        let mut out = Vec::new();
        // Through a small buffer, as a file read piece by piece.
        let mut reader = std::io::BufReader::with_capacity(7, text.as_bytes());
        let taken = cutter.feed(&mut reader, &mut out, u64::MAX).unwrap();
        assert_eq!(taken, text.len() as u64);
        assert_eq!(
            out,
            [
                Line::Whole(b"a".to_vec()),
                Line::TooLong,
                Line::Whole(b"bc".to_vec())
            ]
        );
        assert_eq!(cutter.finish(), Some(Line::Whole(b"d".to_vec())));
        assert_eq!(cutter.finish(), None);
    }

    /// #36: a `dl_id` with a newline wrote lines into FILE.replayed, and
    /// `dl_version = 999` was read as if it were 1.
    #[test]
    fn records_with_a_strange_id_or_an_unknown_version_are_refused() {
        let ok = r#"{"dl_version":1,"dl_id":"0123456789abcdef0123456789abcdef","attempt":1,"event":{"a":1}}"#;
        assert!(Record::parse(ok).is_ok());
        let e = Record::parse(&ok.replace("\"dl_version\":1", "\"dl_version\":999")).unwrap_err();
        assert!(e.contains("dl_version 999"), "{e}");
        let e = Record::parse(&ok.replace(
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef 1\\nffff",
        ))
        .unwrap_err();
        assert!(e.contains("not 32 hex digits"), "{e}");
        assert!(Record::parse(&ok.replace("\"0123456789abcdef0123456789abcdef\"", "7")).is_err());
    }

    /// #36: a symlink at `FILE.replayed.tmp` made the save overwrite its
    /// target. The temporary file is new, of a random name.
    #[cfg(unix)]
    #[test]
    fn saving_the_replay_log_follows_no_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let file = d.path().join("dead.log");
        for planted in ["dead.log.replayed.tmp", "dead.replayed.tmp"] {
            std::os::unix::fs::symlink(&victim, d.path().join(planted)).unwrap();
        }
        let mut log = ReplayLog::load(&file).unwrap();
        let r = Record::parse(r#"{"dl_version":1,"attempt":1,"event":{"a":1}}"#).unwrap();
        log.insert_and_save([&r]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let saved = std::fs::read_to_string(d.path().join("dead.log.replayed")).unwrap();
        assert_eq!(saved, format!("{} 1\n", r.id));
        assert!(ReplayLog::load(&file).unwrap().has(&r));
    }
}
