//! Templates over an event's fields and the time: the file sink's `path`
//! (`logs/{channel}-{%Y-%m-%d}.log`) and its text lines
//! (`[{timestamp}] {channel}.{level|upper}: {message} {..}`).
//!
//! `{name}` is a top-level field, `{name|upper}` / `{name|lower}` the same
//! with its case changed, `{%...}` a time in strftime syntax (the time of
//! writing or the event's, in UTC or the sink's `timezone`),
//! `{..}` (text lines only) every field the template does not name, as
//! `key=value`. `{{` and `}}` are literal braces.

use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use crate::base::event::{scalar_text, Text};

/// How a field's value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Keep,
    Upper,
    Lower,
}

impl Case {
    /// `text` in this case.
    pub fn apply<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Case::Keep => text.into(),
            Case::Upper => text.to_uppercase().into(),
            Case::Lower => text.to_lowercase().into(),
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Field(String, Case),
    Time(String),
    Rest,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    /// Parse `text`; `{..}` is allowed only when `rest` is.
    pub fn parse(text: &str, rest: bool) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(format!(
                        "unmatched `}}` at byte {i} of `{text}` (write `}}}}`)"
                    ))
                }
                '{' => {
                    let close = text[i..]
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` at byte {i} of `{text}`"))?;
                    let inner = &text[i + 1..i + close];
                    while chars.peek().is_some_and(|p| p.0 <= i + close) {
                        chars.next();
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Self::placeholder(inner, rest)?);
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self { parts })
    }

    fn placeholder(inner: &str, rest: bool) -> Result<Part, String> {
        if let Some(fmt) = inner.strip_prefix('%') {
            let fmt = format!("%{fmt}");
            if StrftimeItems::new(&fmt).any(|item| matches!(item, Item::Error)) {
                return Err(format!("invalid time format `{{{fmt}}}`"));
            }
            return Ok(Part::Time(fmt));
        }
        if inner == ".." {
            return if rest {
                Ok(Part::Rest)
            } else {
                Err("`{..}` (the other fields) belongs in a text line template, not here".into())
            };
        }
        let (name, case) = match inner.split_once('|') {
            None => (inner, Case::Keep),
            Some((name, "upper")) => (name, Case::Upper),
            Some((name, "lower")) => (name, Case::Lower),
            Some((_, other)) => {
                return Err(format!(
                    "unknown modifier `{other}` in `{{{inner}}}` (use upper or lower)"
                ))
            }
        };
        let name = name.trim();
        if name.is_empty() {
            return Err("empty `{}` in template (name a field, or write `{{` for a brace)".into());
        }
        Ok(Part::Field(name.to_string(), case))
    }

    /// The fields the template names, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(name, _) => Some(name.as_str()),
            _ => None,
        })
    }

    pub fn has_time(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Time(_)))
    }
}

/// Only the named top-level fields of `event` (others skipped unparsed),
/// in the order of `names`; `None` where absent.
pub fn some_fields<'a>(event: &'a [u8], names: &[String]) -> Vec<Option<&'a RawValue>> {
    struct V<'n>(&'n [String]);
    impl<'de> Visitor<'de> for V<'_> {
        type Value = Vec<Option<&'de RawValue>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![None; self.0.len()];
            while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                match self.0.iter().position(|n| *n == key) {
                    Some(i) => out[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(event);
    de.deserialize_map(V(names))
        .unwrap_or_else(|_| vec![None; names.len()])
}

/// Longest value a field contributes to a file name, in bytes (file names
/// are limited in bytes, 255 on most filesystems, not in characters).
pub const MAX_NAME_PART: usize = 100;

/// `value` made safe as part of a file name: no separators, no control
/// characters, never `.` or `..`, never empty (then `missing`), at most
/// [`MAX_NAME_PART`] bytes, cut on a character boundary.
pub fn file_name_part(value: &str, missing: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_NAME_PART));
    for c in value.chars() {
        let c = match c {
            '/' | '\\' | ':' | '\0' => '_',
            c if c.is_control() => '_',
            c => c,
        };
        if out.len() + c.len_utf8() > MAX_NAME_PART {
            break;
        }
        out.push(c);
    }
    if out.chars().all(|c| c == '.') {
        out = out.replace('.', "_");
    }
    if out.is_empty() {
        out = missing.to_string();
    }
    out
}

/// `timezone` of a file sink: the zone its `{%...}` times are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Zone {
    #[default]
    Utc,
    /// The system's zone (`TZ`, else /etc/localtime).
    Local,
    /// An IANA zone (`Europe/Paris`).
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `"UTC"`, `"local"` or an IANA name.
    pub fn parse(text: &str) -> Result<Zone, String> {
        match text {
            "UTC" | "utc" => Ok(Zone::Utc),
            "local" => Ok(Zone::Local),
            name => name.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
                format!("`{name}` is not a time zone: write \"UTC\", \"local\" or an IANA name such as \"Europe/Paris\"")
            }),
        }
    }

    /// `at` in this zone, formatted by `fmt` (strftime).
    pub fn format(&self, at: DateTime<Utc>, fmt: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = match self {
            Zone::Utc => write!(out, "{}", at.format(fmt)),
            Zone::Local => write!(out, "{}", at.with_timezone(&chrono::Local).format(fmt)),
            Zone::Named(tz) => write!(out, "{}", at.with_timezone(tz).format(fmt)),
        };
    }
}

impl<'de> serde::Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Zone::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `date_from` of a file sink: which time its `{%...}` parts show.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DateFrom {
    /// When the line is written (the default).
    #[default]
    Write,
    /// The event's own `timestamp` (the time of writing when it has none
    /// that parses): a replayed backlog lands in its days' files.
    Event,
}

/// An event's `timestamp`, if it has one that is RFC 3339.
pub fn event_time(event: &[u8]) -> Option<DateTime<Utc>> {
    let raw = some_fields(event, &["timestamp".to_string()])
        .pop()
        .flatten()?;
    time_of(raw.get())
}

/// A JSON value (`"2026-03-29T23:30:00Z"`) as a time, if it is RFC 3339.
pub fn time_of(json: &str) -> Option<DateTime<Utc>> {
    let stamp =
        crate::base::timestamp::parse_json(json, &crate::base::timestamp::TimeFormat::Rfc3339)?;
    DateTime::from_timestamp(stamp.secs, stamp.nanos)
}

/// The `path` of a file sink: where each event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template as written, for messages.
    pub text: String,
    pub template: Template,
    /// The folder relative paths are taken from (the pipeline file's).
    pub base: PathBuf,
    /// Fields the path names, in order: the key of an output file.
    pub names: Vec<String>,
    /// Added to every name the sink writes (`.age`, `.gz.age` when it
    /// encrypts).
    pub suffix: String,
    /// The zone of its `{%...}` parts.
    pub zone: Zone,
    /// Whether its `{%...}` parts show the event's time (then each is part
    /// of the key, after the fields) or the time of writing.
    pub from_event: bool,
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let template = Template::parse(text, false)?;
        // `out/{channel}` would make channel `a`'s rotated `out/a.1` the
        // same name as channel `a.1`'s file, and retention would take one
        // for the other: the name must end in something the sink writes.
        if let Some(Part::Field(name, _)) = template.parts.last() {
            return Err(format!(
                "the file name ends in the field `{{{name}}}`: end it in text such as `.log` (`{text}.log`), so that rotated files (`NAME.1`) cannot be taken for another value's"
            ));
        }
        for part in &template.parts {
            if let Part::Time(fmt) | Part::Field(fmt, _) = part {
                if fmt.contains('/') {
                    return Err(format!(
                        "`{{{fmt}}}` would put a folder separator in a name"
                    ));
                }
            }
        }
        let names = template.fields().map(str::to_string).collect();
        Ok(Self {
            text: text.to_string(),
            template,
            base: PathBuf::new(),
            names,
            suffix: String::new(),
            zone: Zone::Utc,
            from_event: false,
        })
    }

    /// The key of `event`'s file: the safe value of each named field, and
    /// with `from_event`, each time part at the event's time (`now` when
    /// it has none).
    pub fn key(&self, event: &[u8], missing: &str, now: DateTime<Utc>) -> Vec<String> {
        let mut key: Vec<String> = if self.names.is_empty() {
            Vec::new()
        } else {
            some_fields(event, &self.names)
                .into_iter()
                .map(|raw| {
                    let text = raw.and_then(scalar_text);
                    file_name_part(text.as_deref().unwrap_or(""), missing)
                })
                .collect()
        };
        if self.from_event && self.template.has_time() {
            let at = event_time(event).unwrap_or(now);
            for part in &self.template.parts {
                if let Part::Time(fmt) = part {
                    let mut text = String::new();
                    self.zone.format(at, fmt, &mut text);
                    key.push(text);
                }
            }
        }
        key
    }

    /// The file for `key` at time `now` (with `from_event`, the key's
    /// own times).
    pub fn render(&self, key: &[String], now: DateTime<Utc>) -> PathBuf {
        let mut out = String::new();
        let mut fields = key.iter();
        let mut times = key.iter().skip(self.names.len());
        for part in &self.template.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Field(_, case) => {
                    let v = fields.next().map(String::as_str).unwrap_or("");
                    out.push_str(&case.apply(v));
                }
                Part::Time(fmt) => match times.next().filter(|_| self.from_event) {
                    Some(t) => out.push_str(t),
                    None => self.zone.format(now, fmt, &mut out),
                },
                Part::Rest => {}
            }
        }
        out.push_str(&self.suffix);
        self.base.join(out)
    }

    /// A pattern matching every file of `key`'s family: any time, and the
    /// rotated (`.N`), compressed (`.gz`) and encrypted (`.age`) forms.
    pub fn family(&self, key: &[String]) -> regex::Regex {
        let mut pattern = String::from("^");
        pattern.push_str(&regex::escape(&self.base.join("").to_string_lossy()));
        let mut fields = key.iter();
        for part in &self.template.parts {
            match part {
                Part::Literal(s) => pattern.push_str(&regex::escape(s)),
                Part::Field(_, case) => {
                    let v = fields.next().map(String::as_str).unwrap_or("");
                    pattern.push_str(&regex::escape(&case.apply(v)));
                }
                Part::Time(fmt) => pattern.push_str(&time_pattern(fmt)),
                Part::Rest => {}
            }
        }
        pattern.push_str(r"(\.\d+)?(\.gz)?(\.age)?$");
        regex::Regex::new(&pattern).expect("escaped pattern is valid")
    }

    /// The folder no rendering can leave.
    pub fn root(&self) -> PathBuf {
        let mut prefix = String::new();
        for part in &self.template.parts {
            match part {
                Part::Literal(s) => prefix.push_str(s),
                _ => break,
            }
        }
        let prefix = self.base.join(prefix);
        match prefix.to_string_lossy().ends_with('/') {
            true => prefix,
            false => prefix.parent().map(Path::to_path_buf).unwrap_or_default(),
        }
    }
}

/// A pattern for what strftime `fmt` writes: digits where it writes
/// digits, so that one channel's family never takes in another's
/// (`app-{%Y}` must not match `app-foo-2026`).
fn time_pattern(fmt: &str) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
            continue;
        }
        out.push_str(match chars.next() {
            Some('Y' | 'G') => r"\d{4}",
            Some('m' | 'd' | 'H' | 'M' | 'S' | 'y' | 'I' | 'V' | 'U' | 'W' | 'C') => r"\d{2}",
            Some('j') => r"\d{3}",
            Some('s' | 'f') => r"\d+",
            Some('u' | 'w') => r"\d",
            Some('F') => r"\d{4}-\d{2}-\d{2}",
            Some('T') => r"\d{2}:\d{2}:\d{2}",
            Some('%') => "%",
            _ => "[^/]*?",
        });
    }
    out
}

impl<'de> serde::Deserialize<'de> for PathTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PathTemplate::parse(&text).map_err(serde::de::Error::custom)
    }
}

// How the templates look in `sluice schema`.
use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use crate::base::settings::schema;

/// A file sink's `path`: a template of `{field}` and `{%Y-%m-%d}` parts.
impl JsonSchema for PathTemplate {
    fn schema_name() -> Cow<'static, str> {
        "PathTemplate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::described("A path template: `{field}` parts are the event's fields (dotted), `{%Y-%m-%d}` parts its date (strftime).")
    }
}

/// A template of `{field}` parts.
impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schema::described("A template: `{field}` parts are the event's fields (dotted), `{%H}` parts its time (strftime).")
    }
}

/// `timezone` of a file sink.
impl JsonSchema for Zone {
    fn schema_name() -> Cow<'static, str> {
        "Zone".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "`utc`, `local`, or an offset such as `+02:00`.",
            "pattern": "^(utc|UTC|local|[+-][0-9]{2}:?[0-9]{2})$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn parses_fields_time_and_braces() {
        let t = Template::parse("{{x}} {a|upper}-{%Y} {..}", true).unwrap();
        assert_eq!(
            t.parts,
            [
                Part::Literal("{x} ".into()),
                Part::Field("a".into(), Case::Upper),
                Part::Literal("-".into()),
                Part::Time("%Y".into()),
                Part::Literal(" ".into()),
                Part::Rest,
            ]
        );
        assert!(Template::parse("{a", false)
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("a}", false)
            .unwrap_err()
            .contains("unmatched"));
        assert!(Template::parse("{..}", false).is_err());
        assert!(Template::parse("{a|shout}", false)
            .unwrap_err()
            .contains("shout"));
        assert!(Template::parse("{%Q}", false)
            .unwrap_err()
            .contains("time format"));
    }

    #[test]
    fn renders_paths_with_missing_and_hostile_values() {
        let mut p = PathTemplate::parse("logs/{channel}-{%Y-%m-%d}.log").unwrap();
        p.base = PathBuf::from("/srv");
        let now = at("2026-11-23T10:00:00Z");
        let key = p.key(br#"{"channel":"app","x":[1]}"#, "unknown", now);
        assert_eq!(
            p.render(&key, now),
            Path::new("/srv/logs/app-2026-11-23.log")
        );
        let key = p.key(br#"{"x":1}"#, "unknown", now);
        assert_eq!(
            p.render(&key, now),
            Path::new("/srv/logs/unknown-2026-11-23.log")
        );
        for hostile in [
            r#""../../etc/passwd""#,
            r#""/etc/passwd""#,
            r#"".."""#,
            r#""a\\b\u0000""#,
        ] {
            let event = format!(r#"{{"channel":{hostile}}}"#);
            let path = p.render(&p.key(event.as_bytes(), "unknown", now), now);
            assert_eq!(
                path.parent().unwrap(),
                Path::new("/srv/logs"),
                "{hostile}: {path:?}"
            );
            assert!(!path
                .components()
                .any(|c| c == std::path::Component::ParentDir));
        }
        let key = p.key(br#"{"channel":42}"#, "unknown", now);
        assert_eq!(
            p.render(&key, now),
            Path::new("/srv/logs/42-2026-11-23.log")
        );
        assert_eq!(p.root(), Path::new("/srv/logs"));
    }

    #[test]
    fn days_in_a_zone_across_daylight_saving_changes() {
        let mut p = PathTemplate::parse("{channel}-{%Y-%m-%d}.log").unwrap();
        p.zone = Zone::parse("Europe/Paris").unwrap();
        let day = |t: &str| {
            let path = p.render(&p.key(br#"{"channel":"app"}"#, "m", at(t)), at(t));
            path.to_string_lossy().into_owned()
        };
        // Paris is UTC+1 before 2026-03-29 01:00Z and UTC+2 after, until
        // 2026-10-25 01:00Z.
        assert_eq!(day("2026-03-28T22:59:59Z"), "app-2026-03-28.log");
        assert_eq!(day("2026-03-28T23:00:00Z"), "app-2026-03-29.log");
        assert_eq!(day("2026-03-29T21:59:59Z"), "app-2026-03-29.log");
        assert_eq!(day("2026-03-29T22:00:00Z"), "app-2026-03-30.log");
        assert_eq!(day("2026-10-24T21:59:59Z"), "app-2026-10-24.log");
        assert_eq!(day("2026-10-24T22:00:00Z"), "app-2026-10-25.log");
        assert_eq!(day("2026-10-25T22:59:59Z"), "app-2026-10-25.log");
        assert_eq!(day("2026-10-25T23:00:00Z"), "app-2026-10-26.log");
        assert!(Zone::parse("Mars/Olympus").unwrap_err().contains("IANA"));
        assert_eq!(Zone::parse("UTC").unwrap(), Zone::Utc);
    }

    #[test]
    fn event_times_pick_the_file_and_are_part_of_the_key() {
        let mut p = PathTemplate::parse("{channel}-{%Y-%m-%d}.log").unwrap();
        p.zone = Zone::parse("Europe/Paris").unwrap();
        p.from_event = true;
        let now = at("2026-11-23T10:00:00Z");
        let old = br#"{"timestamp":"2026-03-29T23:30:00.123456Z","channel":"app"}"#;
        let key = p.key(old, "m", now);
        assert_eq!(key, ["app", "2026-03-30"]);
        assert_eq!(p.render(&key, now), Path::new("app-2026-03-30.log"));
        // An offset is honoured; no time, or one that does not parse: now.
        let key = p.key(
            br#"{"timestamp":"2026-03-29T00:30:00+02:00","channel":"app"}"#,
            "m",
            now,
        );
        assert_eq!(p.render(&key, now), Path::new("app-2026-03-28.log"));
        for event in [
            &br#"{"channel":"app"}"#[..],
            br#"{"timestamp":"soon","channel":"app"}"#,
        ] {
            let key = p.key(event, "m", now);
            assert_eq!(p.render(&key, now), Path::new("app-2026-11-23.log"));
        }
    }

    #[test]
    fn families_match_rotated_and_compressed_files() {
        let mut p = PathTemplate::parse("logs/{channel}-{%Y-%m-%d}.log").unwrap();
        p.base = PathBuf::from("/srv");
        let family = p.family(&["app".to_string()]);
        for yes in [
            "app-2026-11-22.log",
            "app-2026-11-22.log.gz",
            "app-2026-11-23.log.3.gz",
        ] {
            assert!(family.is_match(&format!("/srv/logs/{yes}")), "{yes}");
        }
        for no in [
            "api-2026-11-22.log",
            "app-2026-11-22.log.tmp",
            "app-foo-2026-11-22.log",
            "app-x/y.log",
        ] {
            assert!(!family.is_match(&format!("/srv/logs/{no}")), "{no}");
        }
    }

    #[test]
    fn name_parts_are_capped_in_bytes_on_a_character_boundary() {
        let crabs = "🦀".repeat(100);
        let part = file_name_part(&crabs, "m");
        assert_eq!(part, "🦀".repeat(25));
        assert!(part.len() <= MAX_NAME_PART);
        let mixed = format!("a{}", "é".repeat(100));
        let part = file_name_part(&mixed, "m");
        assert_eq!(
            part.len(),
            99,
            "1 + 49 x 2 bytes: the next é would pass 100"
        );
        assert!(part.is_char_boundary(part.len()));
    }

    #[test]
    fn a_name_ending_in_a_field_is_refused() {
        let e = PathTemplate::parse("out/{channel}").unwrap_err();
        assert!(e.contains("ends in the field `{channel}`"), "{e}");
        assert!(PathTemplate::parse("out/{channel}.log").is_ok());
        assert!(PathTemplate::parse("out/{channel}-{%Y-%m-%d}").is_ok());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any template text: parsed or refused, never a panic; any value:
        /// a safe name part, at most 100 bytes.
        #[test]
        fn prop_templates_and_name_parts(text in "\\PC{0,40}", value in "\\PC{0,200}") {
            if let Ok(mut p) = PathTemplate::parse(&text) {
                p.base = PathBuf::from("/srv/out");
                let now = chrono::Utc::now();
                let key = p.key(format!("{{\"channel\":{}}}", serde_json::Value::from(value.clone())).as_bytes(), "m", now);
                let path = p.render(&key, now);
                prop_assert!(path.starts_with(p.root()), "{} outside {}", path.display(), p.root().display());
            }
            let part = file_name_part(&value, "m");
            prop_assert!(part.len() <= MAX_NAME_PART && !part.is_empty());
            prop_assert!(!part.contains('/') && part != "." && part != "..");
        }
    }
}
