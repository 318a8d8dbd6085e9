//! How a file sink writes each event as one line: `json`, `text` with a
//! template, or `logfmt`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::template::{time_of, Part, Template, Zone};
use crate::base::event::{top_fields, value_text};

/// `format = ...` of a file sink.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// The event as it is: one JSON object per line.
    #[default]
    Json,
    /// The `template`, Monolog-like by default.
    Text,
    /// `key=value` pairs.
    Logfmt,
}

/// The text template when none is given: Monolog's line format.
pub const DEFAULT_TEXT: &str = "[{timestamp}] {channel}.{level|upper}: {message} {..}";

/// Writes events as lines.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: LineFormat,
    template: Template,
    /// What a text template writes for a field the event lacks: the sink's
    /// `missing`, the same word its file names use.
    missing: String,
    /// The zone of `{%...}` times.
    zone: Zone,
    /// Whether `{%...}` shows the event's `timestamp` (else the time of
    /// writing).
    from_event: bool,
}

impl Formatter {
    pub fn new(
        format: LineFormat,
        template: Template,
        missing: &str,
        zone: Zone,
        from_event: bool,
    ) -> Self {
        Self {
            format,
            template,
            missing: missing.to_string(),
            zone,
            from_event,
        }
    }

    /// Append `event` as one line (with its newline) to `out`. An event that
    /// is not a JSON object is written as it is by `json`, and as a
    /// `message` by the others.
    pub fn line(&self, event: &[u8], out: &mut Vec<u8>) {
        match self.format {
            LineFormat::Json => {
                let start = out.len();
                out.extend_from_slice(event);
                // JSON may hold raw newlines only as whitespace between
                // tokens (a pretty-printed body): make them spaces, or the
                // event would be split across lines.
                if memchr::memchr2(b'\n', b'\r', event).is_some() {
                    for b in &mut out[start..] {
                        if *b == b'\n' || *b == b'\r' {
                            *b = b' ';
                        }
                    }
                }
            }
            LineFormat::Text | LineFormat::Logfmt => {
                let owned;
                let parsed = std::str::from_utf8(event)
                    .map_err(|e| e.to_string())
                    .and_then(top_fields);
                let fields = match parsed {
                    Ok(f) => f,
                    Err(_) => {
                        owned = serde_json::to_string(&String::from_utf8_lossy(event))
                            .expect("a string serializes");
                        let raw: &RawValue =
                            serde_json::from_str(&owned).expect("a JSON string parses");
                        vec![(Cow::Borrowed("message"), raw)]
                    }
                };
                let start = out.len();
                if self.format == LineFormat::Text {
                    self.text(&fields, out);
                } else {
                    logfmt(fields.iter().map(|(k, v)| (k.as_ref(), *v)), out);
                }
                // No line may hold a newline: it would split the event.
                for b in &mut out[start..] {
                    if *b == b'\n' || *b == b'\r' {
                        *b = b' ';
                    }
                }
                while out.len() > start && out.last() == Some(&b' ') {
                    out.pop();
                }
            }
        }
        out.push(b'\n');
    }

    fn text(&self, fields: &[(Cow<'_, str>, &RawValue)], out: &mut Vec<u8>) {
        let find = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        for part in &self.template.parts {
            match part {
                Part::Literal(s) => out.extend_from_slice(s.as_bytes()),
                Part::Field(name, case) => {
                    let text = match find(name) {
                        Some(raw) => value_text(raw.get()),
                        None => Cow::Borrowed(self.missing.as_str()),
                    };
                    out.extend_from_slice(case.apply(&text).as_bytes());
                }
                Part::Time(fmt) => {
                    let at = self
                        .from_event
                        .then(|| find("timestamp").and_then(|raw| time_of(raw.get())))
                        .flatten()
                        .unwrap_or_else(chrono::Utc::now);
                    let mut text = String::new();
                    self.zone.format(at, fmt, &mut text);
                    out.extend_from_slice(text.as_bytes());
                }
                Part::Rest => {
                    let named: Vec<&str> = self.template.fields().collect();
                    logfmt(
                        fields
                            .iter()
                            .filter(|(k, _)| !named.contains(&k.as_ref()))
                            .map(|(k, v)| (k.as_ref(), *v)),
                        out,
                    );
                }
            }
        }
    }
}

/// Append `key=value ...`: values quoted when they hold spaces, quotes,
/// `=` or nothing; nested objects as dotted pairs (`ctx.user_id=1`), arrays
/// as their JSON text, quoted.
pub fn logfmt<'a>(fields: impl Iterator<Item = (&'a str, &'a RawValue)>, out: &mut Vec<u8>) {
    let mut first = true;
    for (key, raw) in fields {
        pair(&mut Vec::new(), key, raw, &mut first, out);
    }
}

/// One `key=value` (or the dotted pairs of an object) under `prefix`.
fn pair(prefix: &mut Vec<u8>, key: &str, raw: &RawValue, first: &mut bool, out: &mut Vec<u8>) {
    let depth = prefix.len();
    if !prefix.is_empty() {
        prefix.push(b'.');
    }
    for c in key.chars() {
        let c = if c.is_whitespace() || c == '=' || c == '"' {
            '_'
        } else {
            c
        };
        prefix.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    }
    let nested = raw
        .get()
        .starts_with('{')
        .then(|| top_fields(raw.get()).ok())
        .flatten()
        .filter(|f| !f.is_empty());
    match nested {
        Some(fields) => {
            for (k, v) in &fields {
                pair(prefix, k, v, first, out);
            }
        }
        None => {
            if !std::mem::take(first) {
                out.push(b' ');
            }
            out.extend_from_slice(prefix);
            out.push(b'=');
            value(raw, out);
        }
    }
    prefix.truncate(depth);
}

/// A logfmt value: plain when it can be, else quoted and escaped.
fn value(raw: &RawValue, out: &mut Vec<u8>) {
    let text = value_text(raw.get());
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control());
    if plain {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LineFormat, template: &str, event: &str) -> String {
        let f = Formatter::new(
            format,
            Template::parse(template, true).unwrap(),
            "-",
            Zone::Utc,
            false,
        );
        let mut out = Vec::new();
        f.line(event.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    const EVENT: &str = r#"{"timestamp":"2026-11-23T10:00:00Z","channel":"app","level":"error","message":"disk full","user":"ann","n":3,"ctx":{"a":"b c"}}"#;

    #[test]
    fn monolog_like_text() {
        assert_eq!(
            line(LineFormat::Text, DEFAULT_TEXT, EVENT),
            "[2026-11-23T10:00:00Z] app.ERROR: disk full user=ann n=3 ctx.a=\"b c\"\n"
        );
        assert_eq!(
            line(
                LineFormat::Text,
                DEFAULT_TEXT,
                r#"{"message":"two\nlines"}"#
            ),
            "[-] -.-: two lines\n"
        );
    }

    #[test]
    fn nested_context_as_dotted_pairs() {
        let event = r#"{"message":"paid","context":{"user_id":1,"cart":{"items":2,"note":"gift wrap"},"tags":["a","b"],"empty":{}}}"#;
        assert_eq!(
            line(LineFormat::Logfmt, "", event),
            "message=paid context.user_id=1 context.cart.items=2 context.cart.note=\"gift wrap\" context.tags=\"[\\\"a\\\",\\\"b\\\"]\" context.empty={}\n"
        );
        assert_eq!(
            line(LineFormat::Text, "{message} {..}", event),
            "paid context.user_id=1 context.cart.items=2 context.cart.note=\"gift wrap\" context.tags=\"[\\\"a\\\",\\\"b\\\"]\" context.empty={}\n"
        );
    }

    #[test]
    fn a_missing_field_reads_as_the_sinks_missing_word() {
        let f = Formatter::new(
            LineFormat::Text,
            Template::parse(DEFAULT_TEXT, true).unwrap(),
            "unknown",
            Zone::Utc,
            false,
        );
        let mut out = Vec::new();
        f.line(
            br#"{"timestamp":"t","level":"info","message":"m"}"#,
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), "[t] unknown.INFO: m\n");
    }

    #[test]
    fn line_times_from_the_event_in_a_zone() {
        let f = Formatter::new(
            LineFormat::Text,
            Template::parse("{%Y-%m-%d %H:%M:%S%.6f %z} {message}", true).unwrap(),
            "-",
            Zone::parse("Europe/Paris").unwrap(),
            true,
        );
        let mut out = Vec::new();
        f.line(
            br#"{"timestamp":"2026-10-25T00:30:00.123456Z","message":"m"}"#,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-10-25 02:30:00.123456 +0200 m\n"
        );
        let mut out = Vec::new();
        f.line(
            br#"{"timestamp":"2026-10-25T01:30:00Z","message":"m"}"#,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-10-25 02:30:00.000000 +0100 m\n"
        );
    }

    #[test]
    fn logfmt_quotes_what_needs_it() {
        assert_eq!(
            line(
                LineFormat::Logfmt,
                "",
                r#"{"a":"x","b":"has space","c":"","d":null,"e":"q\"","f":true}"#
            ),
            "a=x b=\"has space\" c=\"\" d=null e=\"q\\\"\" f=true\n"
        );
        assert_eq!(
            line(LineFormat::Logfmt, "", "not json"),
            "message=\"not json\"\n"
        );
    }

    #[test]
    fn json_is_verbatim_on_one_line() {
        assert_eq!(line(LineFormat::Json, "", EVENT), format!("{EVENT}\n"));
        assert_eq!(
            line(LineFormat::Json, "", "{\n  \"a\": 1\r\n}"),
            "{   \"a\": 1  }\n"
        );
    }
}
