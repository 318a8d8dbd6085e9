//! Dead letters: where events go when they cannot go on.
//!
//! Dead letters are ordinary events on the reserved output
//! `_dead_letters`, which any sink may read. Each carries the original
//! event, the component that failed it and why:
//!
//! ```json
//! {"timestamp":"...","component":"mask","plugin":"mask.wasm","plugin_version":"mask 0.1.0 (sha256:ab12..)",
//!  "error":{"kind":"trap","message":"..."},"event":{...}}
//! ```
//!
//! With no sink reading them, dead letters are counted and logged per batch.

use std::sync::Arc;

use crate::base::event::{check_object, now_rfc3339, Batch};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Output;

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
pub struct DeadOutput(pub Output);

impl Drop for DeadOutput {
    fn drop(&mut self) {
        self.0.finish();
    }
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
            let event = match std::str::from_utf8(l.event) {
                Ok(text) if check_object(l.event).is_ok() => {
                    serde_json::from_str(text).unwrap_or_else(|_| text.into())
                }
                Ok(text) => text.into(),
                Err(_) => String::from_utf8_lossy(l.event).into_owned().into(),
            };
            obj.insert("event".into(), event);
            serde_json::to_writer(&mut batch.data, &obj).expect("writing to a Vec cannot fail");
            batch.seal();
        }
        batch
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
