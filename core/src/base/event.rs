//! Events and batches as they move between stages.
//!
//! An event is one JSON object in UTF-8. A batch is packed exactly as it
//! crosses the plugin boundary: every event's bytes back to back in one
//! buffer, plus the end offset of each. Moving a batch moves two vectors.

use std::sync::Arc;

use super::ack::Ack;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A packed batch of events.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The bytes of every event, back to back.
    pub data: Vec<u8>,
    /// `ends[i]` is one past the last byte of event `i`.
    pub ends: Vec<u32>,
    /// Acknowledgements owed to sources for these events: each fires once
    /// every batch holding it is gone (written by every sink, or dropped).
    pub acks: Vec<Arc<Ack>>,
}

impl PartialEq for Batch {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.ends == other.ends
    }
}

impl Eq for Batch {}

/// Batches travel between stages behind an `Arc`: a component with several
/// consumers hands each the same batch.
pub type SharedBatch = Arc<Batch>;

impl Batch {
    /// An empty batch with room for `events` events of about `bytes` bytes.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(events),
            acks: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of all events.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Append one event.
    pub fn push(&mut self, event: &[u8]) {
        self.data.extend_from_slice(event);
        self.seal();
    }

    /// Mark the bytes appended to `data` since the last event as one event.
    pub fn seal(&mut self) {
        self.ends.push(self.data.len() as u32);
    }

    /// The bytes of event `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// Iterate over the events' bytes.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let s = &self.data[start..end as usize];
            start = end as usize;
            s
        })
    }

    /// A new batch of the events in `range`.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Batch {
        let mut out = Batch::with_capacity(range.len(), 0);
        for i in range {
            out.push(self.get(i));
        }
        out
    }

    /// A copy of the events without the acknowledgements (for taps).
    pub fn copy_events(&self) -> Batch {
        Batch {
            data: self.data.clone(),
            ends: self.ends.clone(),
            acks: Vec::new(),
        }
    }

    /// Build a batch from events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a [u8]>) -> Batch {
        let mut b = Batch::default();
        for e in events {
            b.push(e);
        }
        b
    }
}

/// The result of checking that bytes are one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Whether the object has a top-level `timestamp` key.
    pub has_timestamp: bool,
}

/// Check that `bytes` are exactly one JSON object, without building it.
pub fn check_object(bytes: &[u8]) -> Result<ObjectInfo, String> {
    scan_object(bytes, &[], super::scan::filter(&[]), &mut [])
}

/// A value to catch while an object is checked: the value of the
/// top-level `key`, or with `rest`, the value at that dotted path inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub key: String,
    pub rest: Option<String>,
}

/// [`check_object`], catching on the way the raw values `heads` name
/// (`caught[i]` for `heads[i]`; the first of a key given twice; `filter`
/// is [`super::scan::filter`] of `heads`): an
/// event's time candidates are read in the one pass that checks it, nested
/// ones too (`record.time.timestamp`), without building a tree of the
/// event or reading any part of it twice (see [`super::scan`]).
pub fn scan_object<'a>(
    bytes: &'a [u8],
    heads: &[Head],
    filter: u64,
    caught: &mut [Option<&'a str>],
) -> Result<ObjectInfo, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
    super::scan::scan(text, heads, filter, caught)
}

/// A JSON string, borrowed from the input when it holds no escapes
/// (serde's `Cow<str>` on its own always copies).
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

/// The top-level fields of an event, values left as raw JSON.
pub type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// The top-level fields of `text`, in order, or why it is not exactly one
/// JSON object.
pub fn top_fields(text: &str) -> Result<Fields<'_>, String> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Fields<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(16);
            while let Some((Text(k), v)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let out = de.deserialize_map(V).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(out)
}

/// A field of [`top_fields`] by dotted path: the top-level key itself if
/// there is one, else down through nested objects.
pub fn dotted<'a>(top: &[(Cow<'a, str>, &'a RawValue)], path: &str) -> Option<&'a RawValue> {
    if let Some((_, v)) = top.iter().find(|(k, _)| k == path) {
        return Some(*v);
    }
    let (head, rest) = path.split_once('.')?;
    let (_, v) = top.iter().find(|(k, _)| k == head)?;
    let inner = top_fields(v.get()).ok()?;
    dotted(&inner, rest)
}

/// A raw JSON value as text: a string without its quotes and escapes,
/// anything else as written.
pub fn value_text(raw: &str) -> Cow<'_, str> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        // Most strings hold no escape: their text is what the quotes hold.
        if !inner.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return Cow::Borrowed(inner);
        }
        if let Ok(Text(s)) = serde_json::from_str::<Text<'_>>(raw) {
            return s;
        }
    }
    Cow::Borrowed(raw)
}

/// A scalar's text: strings unquoted, numbers and booleans as written;
/// `None` for null, objects and arrays.
pub fn scalar_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    match raw.get().as_bytes().first()? {
        b'{' | b'[' | b'n' => None,
        _ => Some(value_text(raw.get())),
    }
}

/// A cached RFC 3339 "now", refreshed at most every millisecond: formatting
/// a timestamp per event would cost more than the rest of ingestion.
#[derive(Debug)]
pub struct Clock {
    text: String,
    at: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            text: now_rfc3339(),
            at: Instant::now(),
        }
    }
}

impl Clock {
    /// The current time as RFC 3339 with milliseconds, UTC.
    pub fn now(&mut self) -> &str {
        if self.at.elapsed() >= Duration::from_millis(1) {
            self.text = now_rfc3339();
            self.at = Instant::now();
        }
        &self.text
    }
}

/// Now, as RFC 3339 with milliseconds, UTC.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Append a JSON string literal for `s` to `out`, as serde_json writes
/// it: runs without a byte to escape are found sixteen bytes at a time
/// (the scanner's byte classes) and copied whole; an access log line has
/// a handful of quotes, and serde's writer looks up every byte in a table.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    sluice_common::json::push_str_with(out, s, plain_until);
}

/// Where the first byte from `i` on that a JSON string must escape is (a
/// quote, a backslash, a control character), or the end.
fn plain_until(b: &[u8], mut i: usize) -> usize {
    while let Some(block) = b.get(i..i + 16) {
        let stops = super::scan::special16(block);
        if stops != 0 {
            return i + stops.trailing_zeros() as usize;
        }
        i += 16;
    }
    sluice_common::json::plain_until(b, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The quick string writer writes what serde_json writes.
        #[test]
        fn prop_json_strings_as_serde_writes_them(s in "\\PC*|[a\"\\\\\n\t\u{1}é]{0,20}") {
            let mut ours = Vec::new();
            push_json_str(&mut ours, &s);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
        }
    }

    #[test]
    fn value_text_unquotes_strings_only() {
        assert!(matches!(value_text(r#""plain""#), Cow::Borrowed("plain")));
        assert_eq!(value_text(r#""a\"b\\c\u00e9""#), "a\"b\\cé");
        assert_eq!(value_text(r#""tab\there""#), "tab\there");
        assert_eq!(value_text(r#""""#), "");
        // Not a whole JSON string: left as written.
        for raw in [
            r#"""#,
            r#""a"b""#,
            "\"a\u{1}\"",
            r#""bad\q""#,
            "42",
            "null",
            "{}",
        ] {
            assert_eq!(value_text(raw), raw);
        }
    }

    #[test]
    fn packs_and_iterates() {
        let b = Batch::from_events([&b"{\"a\":1}"[..], b"{}", b"{\"b\":2}"]);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(1), b"{}");
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [&b"{\"a\":1}"[..], b"{}", b"{\"b\":2}"]
        );
        assert_eq!(b.slice(1..3).iter().count(), 2);
    }

    #[test]
    fn checks_objects() {
        assert_eq!(
            check_object(br#"{"timestamp":"x","a":[1,{"b":2}]}"#),
            Ok(ObjectInfo {
                has_timestamp: true
            })
        );
        assert_eq!(
            check_object(br#"{"a":{"timestamp":1}}"#),
            Ok(ObjectInfo {
                has_timestamp: false
            })
        );
        assert!(check_object(b"[1,2]").is_err());
        assert!(check_object(br#"{"a":1} trailing"#).is_err());
        assert!(check_object(b"{\"a\":\"\xff\"}").is_err());
    }
}
