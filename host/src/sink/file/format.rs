//! How a file sink writes each event as one line: `json`, `text` with a
//! template, or `logfmt`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::template::{Part, Template};
use crate::base::event::{top_fields, value_text};

/// `format = ...` of a file sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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

/// What a text template writes for a field the event lacks.
const MISSING_TEXT: &str = "-";

/// Writes events as lines.
#[derive(Debug, Clone)]
pub struct Formatter {
    format: LineFormat,
    template: Template,
}

impl Formatter {
    pub fn new(format: LineFormat, template: Template) -> Self {
        Self { format, template }
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
                        None => Cow::Borrowed(MISSING_TEXT),
                    };
                    out.extend_from_slice(case.apply(&text).as_bytes());
                }
                Part::Time(fmt) => {
                    use std::io::Write;
                    let _ = write!(out, "{}", chrono::Utc::now().format(fmt));
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
/// `=` or nothing; objects and arrays as their JSON text, quoted.
pub fn logfmt<'a>(fields: impl Iterator<Item = (&'a str, &'a RawValue)>, out: &mut Vec<u8>) {
    for (i, (key, raw)) in fields.enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        for c in key.chars() {
            let c = if c.is_whitespace() || c == '=' || c == '"' {
                '_'
            } else {
                c
            };
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        out.push(b'=');
        let text = value_text(raw.get());
        let plain = !text.is_empty()
            && !text
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '=' || c == '\\' || c.is_control());
        if plain {
            out.extend_from_slice(text.as_bytes());
            continue;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LineFormat, template: &str, event: &str) -> String {
        let f = Formatter::new(format, Template::parse(template, true).unwrap());
        let mut out = Vec::new();
        f.line(event.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    const EVENT: &str = r#"{"timestamp":"2026-11-23T10:00:00Z","channel":"app","level":"error","message":"disk full","user":"ann","n":3,"ctx":{"a":"b c"}}"#;

    #[test]
    fn monolog_like_text() {
        assert_eq!(
            line(LineFormat::Text, DEFAULT_TEXT, EVENT),
            "[2026-11-23T10:00:00Z] app.ERROR: disk full user=ann n=3 ctx=\"{\\\"a\\\":\\\"b c\\\"}\"\n"
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
