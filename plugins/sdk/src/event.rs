//! A borrowing, lazily parsed view of one event.
//!
//! Most plugins look at one or two fields of an event. Parsing the whole
//! object into a `serde_json::Value` would allocate every string; instead
//! the view parses the top level once, on first access, into borrowed keys
//! and raw (unparsed) values, and parses a value only when it is asked for.

use std::borrow::Cow;
use std::cell::OnceCell;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::level::Level;

type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// One event: a JSON object in UTF-8.
pub struct Event<'a> {
    raw: &'a [u8],
    fields: OnceCell<Result<Fields<'a>, String>>,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

struct Top<'a>(Fields<'a>);

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
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    fields.push((k, v));
                }
                Ok(Top(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Event<'a> {
    /// A view over the bytes of one event.
    pub fn new(raw: &'a [u8]) -> Self {
        Self {
            raw,
            fields: OnceCell::new(),
        }
    }

    /// The event's bytes, exactly as they arrived.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the event is a well-formed JSON object. The host only sends
    /// objects, so `false` means a plugin replaced an event with garbage.
    pub fn is_valid(&self) -> bool {
        self.top().is_ok()
    }

    /// The parse error, if the event is not a JSON object.
    pub fn error(&self) -> Option<&str> {
        self.top().as_ref().err().map(String::as_str)
    }

    fn top(&self) -> &Result<Fields<'a>, String> {
        self.fields.get_or_init(|| {
            serde_json::from_slice::<Top<'a>>(self.raw)
                .map(|t| t.0)
                .map_err(|e| e.to_string())
        })
    }

    /// The raw JSON of a top-level field.
    pub fn raw_field(&self, name: &str) -> Option<&'a RawValue> {
        match self.top() {
            Ok(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v),
            Err(_) => None,
        }
    }

    /// The top-level field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.top()
            .iter()
            .flat_map(|f| f.iter().map(|(k, _)| k.as_ref()))
    }

    /// The value at a dotted path (`service`, `data.user.id`), parsed.
    pub fn get(&self, path: &str) -> Option<Value> {
        let (head, rest) = split_path(path);
        let raw = self.raw_field(head)?;
        let mut value: Value = serde_json::from_str(raw.get()).ok()?;
        if let Some(rest) = rest {
            for part in rest.split('.') {
                value = match value {
                    Value::Object(mut m) => m.remove(part)?,
                    Value::Array(mut a) => {
                        let i: usize = part.parse().ok()?;
                        if i < a.len() {
                            a.swap_remove(i)
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                };
            }
        }
        Some(value)
    }

    /// Whether a value exists at the dotted path (JSON `null` counts).
    pub fn has(&self, path: &str) -> bool {
        match split_path(path) {
            (head, None) => self.raw_field(head).is_some(),
            _ => self.get(path).is_some(),
        }
    }

    /// The string at a dotted path; borrowed from the event when it has no
    /// escapes. `None` when the value is absent or not a string.
    pub fn get_str(&self, path: &str) -> Option<Cow<'a, str>> {
        match split_path(path) {
            (head, None) => {
                let raw = self.raw_field(head)?;
                serde_json::from_str::<Str<'a>>(raw.get()).ok().map(|s| s.0)
            }
            _ => match self.get(path)? {
                Value::String(s) => Some(Cow::Owned(s)),
                _ => None,
            },
        }
    }

    /// The event's level from the field `field` (usually `level`): a string
    /// such as `"WARN"` or a pino/bunyan number such as `40`.
    pub fn level_in(&self, field: &str) -> Option<Level> {
        if let Some(s) = self.get_str(field) {
            return Level::parse(&s);
        }
        match self.get(field)? {
            Value::Number(n) => Level::parse(&n.to_string()),
            _ => None,
        }
    }

    /// The event's level from its `level` field.
    pub fn level(&self) -> Option<Level> {
        self.level_in("level")
    }

    /// The event's `message` field.
    pub fn message(&self) -> Option<Cow<'a, str>> {
        self.get_str("message")
    }

    /// The whole event, parsed (allocates; prefer the field accessors).
    pub fn to_value(&self) -> Result<Value, String> {
        serde_json::from_slice(self.raw).map_err(|e| e.to_string())
    }
}

fn split_path(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_top_level_and_nested_fields() {
        let raw = br#"{"level":"WARN","message":"disk \"full\"","data":{"user":{"id":7}},"tags":["a","b"]}"#;
        let e = Event::new(raw);
        assert_eq!(e.level(), Some(Level::Warn));
        assert_eq!(e.message().unwrap(), "disk \"full\"");
        assert_eq!(e.get("data.user.id"), Some(Value::from(7)));
        assert_eq!(e.get_str("tags.1").unwrap(), "b");
        assert!(e.has("data.user"));
        assert!(!e.has("data.nope"));
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["level", "message", "data", "tags"]
        );
    }

    #[test]
    fn borrows_plain_strings() {
        let e = Event::new(br#"{"service":"auth"}"#);
        assert!(matches!(e.get_str("service"), Some(Cow::Borrowed("auth"))));
    }

    #[test]
    fn numeric_levels() {
        assert_eq!(Event::new(br#"{"level":50}"#).level(), Some(Level::Error));
    }

    #[test]
    fn malformed_event_reports_error() {
        let e = Event::new(b"{not json");
        assert!(!e.is_valid());
        assert!(e.error().is_some());
        assert_eq!(e.get_str("x"), None);
    }
}
