//! `parse`: text into fields.
//!
//! ```toml
//! [transforms.access]
//! plugin = "parse"
//! inputs = ["nginx"]
//! [transforms.access.config]
//! field = "message"               # dotted; the text to parse
//! format = "nginx_combined"       # see below
//! target = "http"                 # where the fields go (default: the event's root)
//! types = { status = "int", upstream_time = "float", ts = "timestamp:%d/%b/%Y:%H:%M:%S %z" }
//! on_error = "keep"               # keep | drop | dead_letter | "route:NAME"
//! ```
//!
//! Formats: `nginx_combined`, `apache_combined`, `apache_common`,
//! `nginx_error`, `apache_error`, `logfmt`, `kv` (`pair_separator`,
//! `value_separator`), `csv` (`columns`, `delimiter`), `klog`, `syslog`
//! (RFC 5424 and 3164, the `syslog` source's parser: its fields, a 3164
//! time without a zone read as UTC), `json` (hand-written scanners, no
//! regex), and `regex` (`pattern` or
//! `patterns`, named captures) and `grok` (`pattern` or `patterns`,
//! `grok_patterns` for your own names) compiled once per config. With
//! several patterns the first that matches wins.
//!
//! The regex engine is Rust's `regex`: matching is linear in the line,
//! whatever the pattern, so no pattern can backtrack catastrophically.

pub mod grok;
pub mod scan;

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_common::{get, put};
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

use scan::{Fields, Val};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Format {
    NginxCombined,
    ApacheCombined,
    ApacheCommon,
    NginxError,
    ApacheError,
    Logfmt,
    Kv,
    Csv,
    Klog,
    Syslog,
    Json,
    Regex,
    Grok,
}

/// What happens to an event whose field does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnError {
    Keep,
    Drop,
    DeadLetter,
    Route(String),
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "keep" => Ok(OnError::Keep),
            "drop" => Ok(OnError::Drop),
            "dead_letter" => Ok(OnError::DeadLetter),
            other => match other.strip_prefix("route:") {
                Some(name) if !name.is_empty() => Ok(OnError::Route(name.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "`{other}`: write keep, drop, dead_letter or route:NAME"
                ))),
            },
        }
    }
}

/// How a field is typed: `int`, `float`, `bool`, `string`, or
/// `timestamp:FORMAT` (strftime; to RFC 3339).
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Int,
    Float,
    Bool,
    String,
    Timestamp(String),
}

impl<'de> Deserialize<'de> for Type {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            "string" => Type::String,
            other => match other.strip_prefix("timestamp:") {
                Some(f) if !f.is_empty() => Type::Timestamp(f.to_string()),
                _ => {
                    return Err(serde::de::Error::custom(format!(
                        "`{other}`: write int, float, bool, string or timestamp:FORMAT"
                    )))
                }
            },
        })
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The field (dotted) holding the text.
    #[serde(default = "default_field")]
    field: String,
    /// How the text is read.
    format: Format,
    /// Where the fields go: the event's root (default) or this field
    /// (dotted).
    #[serde(default)]
    target: Option<String>,
    /// Fields typed: `int`, `float`, `bool`, `string`, or
    /// `timestamp:FORMAT` (strftime; to RFC 3339).
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "BTreeMap<String, schema_types::Type>"))]
    types: BTreeMap<String, Type>,
    /// An event whose field does not parse: `keep`, `drop`,
    /// `dead_letter`, or `route:NAME`.
    #[serde(default = "default_on_error")]
    #[cfg_attr(test, schemars(with = "schema_types::OnError"))]
    on_error: OnError,
    /// With `regex` (named captures) or `grok`: the pattern.
    #[serde(default)]
    pattern: Option<String>,
    /// Several patterns, tried in order.
    #[serde(default)]
    patterns: Vec<String>,
    /// With `grok`: patterns of your own, by name.
    #[serde(default)]
    grok_patterns: BTreeMap<String, String>,
    /// With `csv`: the columns' names.
    #[serde(default)]
    columns: Vec<String>,
    /// With `csv`: the delimiter.
    #[serde(default = "default_delimiter")]
    delimiter: char,
    /// With `kv`: between pairs.
    #[serde(default = "default_pair")]
    pair_separator: char,
    /// With `kv`: between a key and its value.
    #[serde(default = "default_value")]
    value_separator: char,
    /// Longest text parsed; a longer field is an error (bounded work).
    #[serde(default = "default_max_length")]
    max_length: usize,
}

fn default_field() -> String {
    "message".into()
}
fn default_on_error() -> OnError {
    OnError::Keep
}
fn default_delimiter() -> char {
    ','
}
fn default_pair() -> char {
    ' '
}
fn default_value() -> char {
    '='
}
fn default_max_length() -> usize {
    1 << 20
}

/// A compiled pattern: the regex and how its groups map to fields.
#[derive(Debug)]
struct Compiled {
    re: Regex,
    captures: Vec<grok::Capture>,
}

/// The plugin: settings and compiled patterns.
#[derive(Debug)]
pub struct Parse {
    s: Settings,
    compiled: Vec<Compiled>,
}

impl Parse {
    pub fn new(config: &str) -> Result<Parse, String> {
        let s: Settings = Config::new(config).parse()?;
        let mut patterns: Vec<String> = s.pattern.iter().cloned().collect();
        patterns.extend(s.patterns.iter().cloned());
        let compiled = match s.format {
            Format::Regex | Format::Grok => {
                if patterns.is_empty() {
                    return Err("pattern: give `pattern` or `patterns`".into());
                }
                let mut lib = grok::library();
                for (k, v) in &s.grok_patterns {
                    lib.insert(k.clone(), v.clone());
                }
                let mut out = Vec::new();
                for (i, p) in patterns.iter().enumerate() {
                    let key = if s.pattern.is_some() && i == 0 {
                        "pattern".to_string()
                    } else {
                        format!("patterns[{}]", i - usize::from(s.pattern.is_some()))
                    };
                    let (text, captures) = if s.format == Format::Grok {
                        grok::compile(p, &lib).map_err(|e| format!("{key}: {e}"))?
                    } else {
                        (p.clone(), Vec::new())
                    };
                    let re = regex::RegexBuilder::new(&format!("^(?:{text})$"))
                        .size_limit(16 << 20)
                        .build()
                        .map_err(|e| format!("{key}: not a regular expression: {e}"))?;
                    let captures = if s.format == Format::Regex {
                        re.capture_names()
                            .flatten()
                            .map(|n| grok::Capture {
                                group: n.to_string(),
                                field: n.to_string(),
                                kind: None,
                            })
                            .collect()
                    } else {
                        captures
                    };
                    if captures.is_empty() {
                        return Err(format!(
                            "{key}: names no field (use (?P<name>...) or %{{NAME:field}})"
                        ));
                    }
                    out.push(Compiled { re, captures });
                }
                out
            }
            _ if !patterns.is_empty() => {
                return Err("pattern: only for format = \"regex\" or \"grok\"".into())
            }
            _ => Vec::new(),
        };
        Ok(Parse { s, compiled })
    }

    /// The fields of `text`, or why it does not parse.
    pub fn fields<'t>(&self, text: &'t str) -> Result<Fields<'t>, String> {
        self.within_length(text)?;
        match self.s.format {
            Format::NginxCombined | Format::ApacheCombined => scan::access(text, true),
            Format::ApacheCommon => scan::access(text, false),
            Format::NginxError => scan::nginx_error(text),
            Format::ApacheError => scan::apache_error(text),
            Format::Logfmt => scan::kv(text, ' ', '=', true),
            Format::Kv => scan::kv(text, self.s.pair_separator, self.s.value_separator, false),
            Format::Csv => scan::csv(text, self.s.delimiter, &self.s.columns),
            Format::Klog => scan::klog(text),
            Format::Syslog => scan::syslog(text),
            Format::Json => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) => Ok(m
                    .into_iter()
                    .map(|(k, v)| (k.into(), Val::Json(v)))
                    .collect()),
                Ok(_) => Err("not a JSON object".into()),
                Err(e) => Err(format!("not JSON: {e}")),
            },
            Format::Regex | Format::Grok => {
                for c in &self.compiled {
                    if let Some(m) = c.re.captures(text) {
                        let mut out = Fields::new();
                        for cap in &c.captures {
                            let Some(v) = m.name(&cap.group) else {
                                continue;
                            };
                            let v = v.as_str();
                            let text = || Val::Str(v.into());
                            let value = match cap.kind.as_deref() {
                                Some("int") => v
                                    .parse::<i64>()
                                    .map(|n| Val::Json(n.into()))
                                    .unwrap_or_else(|_| text()),
                                Some("float") => v
                                    .parse::<f64>()
                                    .ok()
                                    .and_then(serde_json::Number::from_f64)
                                    .map(|n| Val::Json(Value::Number(n)))
                                    .unwrap_or_else(text),
                                _ => text(),
                            };
                            out.push((cap.field.clone().into(), value));
                        }
                        return Ok(out);
                    }
                }
                Err("no pattern matches".into())
            }
        }
    }

    /// Type the fields as `types` says.
    fn typed(&self, fields: &mut Fields<'_>) -> Result<(), String> {
        for (name, value) in fields.iter_mut() {
            let Some(t) = self.s.types.get(name.as_ref()) else {
                continue;
            };
            let text = match &*value {
                Val::Str(s) => s.to_string(),
                Val::Json(Value::String(s)) => s.clone(),
                Val::Json(Value::Null) => continue,
                Val::Json(other) => other.to_string(),
            };
            *value = Val::Json(match t {
                Type::String => Value::String(text),
                Type::Int => text
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| format!("`{name}` = `{text}` is not an int"))?,
                Type::Float => text
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| format!("`{name}` = `{text}` is not a float"))?,
                Type::Bool => match text.trim().to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => Value::Bool(true),
                    "false" | "0" | "no" | "off" => Value::Bool(false),
                    _ => return Err(format!("`{name}` = `{text}` is not a bool")),
                },
                Type::Timestamp(f) => {
                    let t = chrono::DateTime::parse_from_str(&text, f)
                        .map(|d| d.with_timezone(&chrono::Utc))
                        .or_else(|_| {
                            chrono::NaiveDateTime::parse_from_str(&text, f).map(|n| n.and_utc())
                        })
                        .map_err(|_| format!("`{name}` = `{text}` is not `{f}`"))?;
                    Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                }
            });
        }
        Ok(())
    }

    /// Parse the event's field into it. `Err`: why it did not parse.
    pub fn apply(&self, obj: &mut Map<String, Value>) -> Result<(), String> {
        let text = match get(obj, &self.s.field) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(format!("`{}` is not text", self.s.field)),
            None => return Err(format!("the event has no `{}`", self.s.field)),
        };
        let mut fields = self.fields(&text)?;
        self.typed(&mut fields)?;
        match &self.s.target {
            None => {
                for (k, v) in fields {
                    let v = v.into_value();
                    // `timestamp` stays the event's own unless the format
                    // gave one that parsed (access and error logs do).
                    put(obj, &k, v);
                }
            }
            Some(t) => {
                let mut m = match get(obj, t) {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                for (k, v) in fields {
                    put(&mut m, &k, v.into_value());
                }
                put(obj, t, Value::Object(m));
            }
        }
        Ok(())
    }
}

impl Parse {
    /// What to do with an event whose field did not parse.
    fn failed(&self, reason: String) -> Verdict {
        match &self.s.on_error {
            OnError::Keep => Verdict::Keep,
            OnError::Drop => Verdict::Drop,
            OnError::DeadLetter => Verdict::Fail(format!("parse ({:?}): {reason}", self.s.format)),
            OnError::Route(_) => Verdict::Route(1),
        }
    }

    /// The event with the fields written into `out` without parsing the
    /// event: its top-level fields copied as they are, except those the
    /// parse replaces. `None` when that cannot be done here (a dotted
    /// name, a `target` the event already has): the caller merges.
    fn write_fast(&self, event: &Event<'_>, fields: &Fields<'_>, out: &mut Vec<u8>) -> Option<()> {
        // (Names are short: a byte loop, not a vectorised search per name.)
        if fields.iter().any(|(k, _)| k.bytes().any(|b| b == b'.')) {
            return None;
        }
        let target = match &self.s.target {
            Some(t) if t.contains('.') || event.raw_field(t).is_some() => return None,
            t => t.as_deref(),
        };
        // The last value of a name given twice wins.
        let last = |i: usize, k: &str| !fields[i + 1..].iter().any(|(n, _)| same(n, k));
        out.push(b'{');
        let mut first = true;
        for (k, raw) in event.raw_fields() {
            let replaced = match target {
                Some(_) => false,
                None => fields.iter().any(|(n, _)| same(n, k)),
            };
            if replaced {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_str(out, k);
            out.push(b':');
            out.extend_from_slice(raw.as_bytes());
        }
        if let Some(t) = target {
            if !first {
                out.push(b',');
            }
            first = true;
            push_json_str(out, t);
            out.extend_from_slice(b":{");
        }
        for (i, (k, v)) in fields.iter().enumerate() {
            if !last(i, k) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_json_str(out, k);
            out.push(b':');
            match v {
                Val::Str(text) => push_json_str(out, text),
                Val::Json(v) => serde_json::to_writer(&mut *out, v).ok()?,
            }
        }
        if target.is_some() {
            out.push(b'}');
        }
        out.push(b'}');
        Some(())
    }

    /// Whether the text to parse is within `max_length`.
    fn within_length(&self, text: &str) -> Result<(), String> {
        if text.len() > self.s.max_length {
            return Err(format!(
                "`{}` is {} bytes, over max_length ({})",
                self.s.field,
                text.len(),
                self.s.max_length
            ));
        }
        Ok(())
    }

    /// For an access log format written as it is into the event's root
    /// (no `types`, no `target`): whether it has the referer and agent.
    fn direct_access(&self) -> Option<bool> {
        if self.s.target.is_some() || !self.s.types.is_empty() {
            return None;
        }
        match self.s.format {
            Format::NginxCombined | Format::ApacheCombined => Some(true),
            Format::ApacheCommon => Some(false),
            _ => None,
        }
    }
}

/// An access log line's event written straight from its parts: what
/// [`Parse::write_fast`] writes for [`scan::access`]'s fields, without
/// the list of fields (names are known and need no escaping).
fn write_access(event: &Event<'_>, a: &scan::Access<'_>, out: &mut Vec<u8>) {
    let parts = a.parts();
    // The names this line sets, which the event's own fields give way to.
    let sets = |k: &str| match k {
        "client" | "timestamp" | "request" | "status" => true,
        "ident" => a.ident.is_some(),
        "user" => a.user.is_some(),
        "method" | "path" | "protocol" => parts.is_some(),
        "size" => a.size.is_some(),
        "referer" => a.referer.is_some(),
        "agent" => a.agent.is_some(),
        _ => false,
    };
    out.push(b'{');
    for (k, raw) in event.raw_fields() {
        if sets(k) {
            continue;
        }
        push_json_str(out, k);
        out.push(b':');
        out.extend_from_slice(raw.as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"client\":");
    push_json_str(out, a.client);
    if let Some(v) = a.ident {
        out.extend_from_slice(b",\"ident\":");
        push_json_str(out, v);
    }
    if let Some(v) = a.user {
        out.extend_from_slice(b",\"user\":");
        push_json_str(out, v);
    }
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(&a.time);
    out.extend_from_slice(b"\",\"request\":");
    push_json_str(out, &a.request);
    if let Some([method, path, protocol]) = parts {
        out.extend_from_slice(b",\"method\":");
        push_json_str(out, method);
        out.extend_from_slice(b",\"path\":");
        push_json_str(out, path);
        out.extend_from_slice(b",\"protocol\":");
        push_json_str(out, protocol);
    }
    out.extend_from_slice(b",\"status\":");
    push_u64(out, a.status);
    if let Some(n) = a.size {
        out.extend_from_slice(b",\"size\":");
        push_u64(out, n);
    }
    if let Some(v) = &a.referer {
        out.extend_from_slice(b",\"referer\":");
        push_json_str(out, v);
    }
    if let Some(v) = &a.agent {
        out.extend_from_slice(b",\"agent\":");
        push_json_str(out, v);
    }
    out.push(b'}');
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Whether two names are the same: length and first byte inline, the
/// rest only then (most names differ in one of those).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// Where the first byte from `i` on that a JSON string must escape is
/// (`"`, `\\`, a control character), or the end: 16 bytes at a time, the
/// last few by one block that overlaps the bytes already read.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn plain_until(b: &[u8], mut i: usize) -> usize {
    use core::arch::wasm32::*;
    let special = |block: &[u8]| -> u32 {
        let (quote, slash, space) = (u8x16_splat(b'"'), u8x16_splat(b'\\'), u8x16_splat(0x20));
        if block.len() < 16 {
            return 0;
        }
        // SAFETY: `block` is 16 readable bytes (checked above); wasm loads
        // need no alignment.
        let v = unsafe { v128_load(block.as_ptr().cast()) };
        u32::from(u8x16_bitmask(v128_or(
            v128_or(u8x16_eq(v, quote), u8x16_eq(v, slash)),
            u8x16_lt(v, space),
        )))
    };
    while let Some(block) = b.get(i..i + 16) {
        let bits = special(block);
        if bits != 0 {
            return i + bits.trailing_zeros() as usize;
        }
        i += 16;
    }
    if i >= b.len() {
        return b.len();
    }
    if b.len() >= 16 {
        // Byte compares are exact: the bytes below `i` are masked off.
        let start = b.len() - 16;
        let bits = special(b.get(start..).unwrap_or_default()) & (u32::MAX << (i - start));
        return if bits != 0 {
            start + bits.trailing_zeros() as usize
        } else {
            b.len()
        };
    }
    sluice_common::json::plain_until(b, i)
}

/// [`plain_until`] eight bytes at a time.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
use sluice_common::json::plain_until;

/// `text` as a JSON string, as serde_json writes it: runs without a byte
/// to escape found 8 or 16 bytes at a time and copied whole.
pub fn push_json_str(out: &mut Vec<u8>, text: &str) {
    sluice_common::json::push_str_with(out, text, plain_until);
}

impl Plugin for Parse {
    fn init(config: Config) -> Result<Self, String> {
        Parse::new(config.as_str())
    }

    /// The fast path: the field read without parsing the event, the
    /// result written into the batch's buffer.
    fn process_into(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Verdict {
        // Every top-level field is read once, here: the field to parse is
        // then found among them, not by a second pass over the event.
        if event.raw_fields().next().is_none() {
            return self.process(event);
        }
        let text = match event.get_str(&self.s.field) {
            Some(t) => t,
            None => return self.process(event),
        };
        if let Some(combined) = self.direct_access() {
            let line = self
                .within_length(&text)
                .and_then(|()| scan::access_line(&text, combined));
            return match line {
                Ok(a) => {
                    write_access(event, &a, out);
                    Verdict::Written
                }
                Err(reason) => self.failed(reason),
            };
        }
        let mut fields = match self.fields(&text) {
            Ok(f) => f,
            Err(reason) => return self.failed(reason),
        };
        if let Err(reason) = self.typed(&mut fields) {
            return self.failed(reason);
        }
        let start = out.len();
        match self.write_fast(event, &fields, out) {
            Some(()) => Verdict::Written,
            None => {
                out.truncate(start);
                self.process(event)
            }
        }
    }

    fn outputs(&self) -> Vec<String> {
        match &self.s.on_error {
            OnError::Route(name) => vec![name.clone()],
            _ => Vec::new(),
        }
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        let Ok(Value::Object(mut obj)) = event.to_value() else {
            return Verdict::Fail("the event is not a JSON object".into());
        };
        match self.apply(&mut obj) {
            Ok(()) => Verdict::Replace(Value::Object(obj).to_string().into_bytes()),
            Err(reason) => match &self.s.on_error {
                OnError::Keep => Verdict::Keep,
                OnError::Drop => Verdict::Drop,
                OnError::DeadLetter => {
                    Verdict::Fail(format!("parse ({:?}): {reason}", self.s.format))
                }
                OnError::Route(_) => Verdict::Route(1),
            },
        }
    }
}

export_plugin!(Parse);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::Settings>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use serde_json::json;

    fn run(config: Value, event: Value) -> Result<Value, String> {
        let p = Parse::new(&config.to_string())?;
        let mut obj = event.as_object().unwrap().clone();
        p.apply(&mut obj)?;
        Ok(Value::Object(obj))
    }

    #[test]
    fn scanner_and_grok_agree_on_combined_logs() {
        let line = r#"10.1.2.3 - - [06/Dec/2026:03:10:01 +0000] "POST /api/pay?x=1 HTTP/1.1" 502 157 "https://shop.example/cart" "Mozilla/5.0 (X11) \"q\"""#;
        let a = run(
            json!({"format":"nginx_combined","target":"http"}),
            json!({"message": line}),
        )
        .unwrap();
        let g = run(
            json!({"format":"grok","pattern":"%{COMBINEDAPACHELOG}","target":"http"}),
            json!({"message": line}),
        )
        .unwrap();
        for k in ["client", "method", "path", "status", "size"] {
            assert_eq!(a["http"][k], g["http"][k], "{k}");
        }
        assert_eq!(a["http"]["status"], 502);
        assert_eq!(a["message"], line, "the text stays");
    }

    #[test]
    fn types_target_and_errors() {
        let e = run(
            json!({"format":"logfmt","types":{"n":"int","t":"float","ok":"bool","at":"timestamp:%d/%b/%Y:%H:%M:%S %z"}}),
            json!({"message":"n=3 t=0.25 ok=true at=\"06/Dec/2026:03:10:01 +0100\""}),
        )
        .unwrap();
        assert_eq!(e["n"], 3);
        assert_eq!(e["t"], 0.25);
        assert_eq!(e["ok"], true);
        assert_eq!(e["at"], "2026-12-06T02:10:01Z");
        let err = run(
            json!({"format":"logfmt","types":{"n":"int"}}),
            json!({"message":"n=x"}),
        )
        .unwrap_err();
        assert!(err.contains("not an int"), "{err}");
        let err = run(json!({"format":"klog"}), json!({"msg":"x"})).unwrap_err();
        assert!(err.contains("no `message`"), "{err}");
        let e = run(
            json!({"format":"regex","pattern":"(?P<user>\\w+) paid (?P<amount>[0-9.]+)","field":"data.text","types":{"amount":"float"}}),
            json!({"data":{"text":"bob paid 12.5"}}),
        )
        .unwrap();
        assert_eq!(e["user"], "bob");
        assert_eq!(e["amount"], 12.5);
    }

    #[test]
    fn bad_configs_name_their_key() {
        let e = Parse::new(r#"{"format":"grok","pattern":"%{NOPE:x}"}"#).unwrap_err();
        assert!(
            e.starts_with("pattern: no grok pattern named `NOPE`"),
            "{e}"
        );
        let e =
            Parse::new(r#"{"format":"regex","patterns":["ok(?P<a>x)","(unclosed"]}"#).unwrap_err();
        assert!(
            e.starts_with("patterns[1]: not a regular expression"),
            "{e}"
        );
        let e = Parse::new(r#"{"format":"nginx"}"#).unwrap_err();
        assert!(e.starts_with("format: unknown variant `nginx`"), "{e}");
        let e = Parse::new(r#"{"format":"csv","on_error":"explode"}"#).unwrap_err();
        assert!(e.contains("on_error") && e.contains("route:NAME"), "{e}");
        let e = Parse::new(r#"{"format":"csv","types":{"a":"date"}}"#).unwrap_err();
        assert!(e.contains("types.a"), "{e}");
        let e = Parse::new(r#"{"format":"csv","pattern":"x"}"#).unwrap_err();
        assert!(e.contains("only for"), "{e}");
    }

    /// The fast path writes what the merging path gives.
    #[test]
    fn the_fast_path_agrees_with_the_merge() {
        let line =
            r#"10.1.2.3 - bob [06/Dec/2026:03:10:01 +0000] "GET /x HTTP/1.1" 200 5 "-" "ua""#;
        for (config, event) in [
            (
                json!({"format":"nginx_combined"}),
                json!({"timestamp":"t0","message":line,"status":"old"}),
            ),
            (
                json!({"format":"nginx_combined","target":"http"}),
                json!({"message":line,"k":{"a":[1,"x"]}}),
            ),
            (
                json!({"format":"logfmt"}),
                json!({"message":"a=1 a=2 b=\"q\\\"\""}),
            ),
            (
                json!({"format":"regex","pattern":"(?P<x>.*)"}),
                json!({"message":"é \u{1}"}),
            ),
        ] {
            let p = Parse::new(&config.to_string()).unwrap();
            let raw = event.to_string();
            let e = Event::new(raw.as_bytes());
            let mut out = Vec::new();
            assert!(
                matches!(p.process_into(&e, &mut out), Verdict::Written),
                "{config}"
            );
            let fast: Value = serde_json::from_slice(&out).unwrap();
            let mut obj = event.as_object().unwrap().clone();
            p.apply(&mut obj).unwrap();
            assert_eq!(fast, Value::Object(obj), "{config}");
        }
        // A target the event has already: merged by the slow path.
        let p = Parse::new(r#"{"format":"logfmt","target":"t"}"#).unwrap();
        let raw = r#"{"message":"a=1","t":{"b":2}}"#;
        let mut out = Vec::new();
        match p.process_into(&Event::new(raw.as_bytes()), &mut out) {
            Verdict::Replace(r) => {
                let v: Value = serde_json::from_slice(&r).unwrap();
                assert_eq!(v["t"], json!({"b":2,"a":"1"}));
            }
            other => panic!("{other:?}"),
        }
    }

    /// The access formats' direct writer writes, byte for byte, what the
    /// general one writes from their fields.
    #[test]
    fn access_lines_written_directly_as_from_their_fields() {
        let lines = [
            r#"10.1.2.3 - bob [06/Dec/2026:03:10:01 +0000] "GET /x?a=\"b HTTP/1.1" 200 5 "-" "ua""#,
            r#"::1 ident - [31/Jan/2027:23:59:60 -0530] "POST /a%20b HTTP/2.0" 502 - "https://r/\x22q" "curl \x22x\x22 é""#,
            r#"10.0.0.1 - - [06/Dec/2026:03:10:01 +0000] "-" 400 0 "-" "-""#,
            r#"10.0.0.1 - - [06/Dec/2026:03:10:01 +0000] "get / HTTP/1.1" 200 12"#,
        ];
        let events = [
            json!({"timestamp":"t0","message":""}),
            json!({"message":"","status":"old","user":"kept unless set","x\"y":[1,{"a":null}]}),
        ];
        for (format, combined) in [("nginx_combined", true), ("apache_common", false)] {
            let p = Parse::new(&json!({ "format": format }).to_string()).unwrap();
            for line in lines {
                let Ok(fields) = scan::access(line, combined) else {
                    assert!(scan::access_line(line, combined).is_err(), "{line}");
                    continue;
                };
                let a = scan::access_line(line, combined).unwrap();
                for event in &events {
                    let mut event = event.clone();
                    event["message"] = json!(line);
                    let raw = event.to_string();
                    let e = Event::new(raw.as_bytes());
                    let (mut general, mut direct) = (Vec::new(), Vec::new());
                    p.write_fast(&e, &fields, &mut general).unwrap();
                    write_access(&e, &a, &mut direct);
                    assert_eq!(
                        String::from_utf8(direct).unwrap(),
                        String::from_utf8(general).unwrap(),
                        "{format}: {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn on_error_verdicts() {
        let p = Parse::new(r#"{"format":"klog","on_error":"route:unparsed"}"#).unwrap();
        assert_eq!(p.outputs(), vec!["unparsed".to_string()]);
        let p = Parse::new(r#"{"format":"klog","max_length":10}"#).unwrap();
        let mut obj = json!({"message":"I1206 03:10:01.1 1 a.go:1] long message"})
            .as_object()
            .unwrap()
            .clone();
        assert!(p.apply(&mut obj).unwrap_err().contains("max_length"));
    }
}

/// `on_error` and `types` as the schema shows them (both are read from
/// strings by hand).
#[cfg(test)]
mod schema_types {
    use std::borrow::Cow;

    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    pub struct OnError;

    impl JsonSchema for OnError {
        fn schema_name() -> Cow<'static, str> {
            "OnError".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "anyOf": [
                    { "enum": ["keep", "drop", "dead_letter"] },
                    { "type": "string", "pattern": "^route:.+" }
                ]
            })
        }
    }

    pub struct Type;

    impl JsonSchema for Type {
        fn schema_name() -> Cow<'static, str> {
            "Type".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "anyOf": [
                    { "enum": ["int", "float", "bool", "string"] },
                    { "type": "string", "pattern": "^timestamp:.+" }
                ]
            })
        }
    }
}
