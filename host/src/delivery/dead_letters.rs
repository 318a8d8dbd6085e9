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
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(borrow)]
            event: Option<&'a serde_json::value::RawValue>,
            event_base64: Option<String>,
        }
        let raw: Raw<'_> =
            serde_json::from_str(line).map_err(|e| format!("not a dead letter: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
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

    /// Remember the log on disk (written aside, then renamed).
    pub fn save(&self) -> anyhow::Result<()> {
        let mut text = String::new();
        for (id, a) in &self.done {
            text.push_str(&format!("{id} {a}\n"));
        }
        let tmp = self.path.with_extension("replayed.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
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
        let first = letters.first()?;
        tracing::warn!(
            component = %self.component,
            count = letters.len(),
            kind = first.kind.as_str(),
            error = %first.message,
            "events dead-lettered"
        );
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
                tracing::error!(component = %self.component, "dead-letter sink is gone; dead letters lost");
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
                tracing::error!(component = %self.component, "dead-letter sink is gone; dead letters lost");
            }
        }
    }
}
