//! `remap`: reshape events: rename and move fields (dotted paths both
//! ways), copy, delete, set constants, flatten and nest, coerce types, parse
//! a JSON string field, format a Python `%`-style message with its `args`,
//! and presets that map a logging library's record to sluice's common
//! fields (`timestamp`, `level`, `message`, `logger`, `exception`).
//!
//! ```toml
//! [transforms.shape.config]
//! preset = "python-logging"        # or loguru, monolog, winston, pino, bunyan
//! rename = { "msg_id" = "id", "record.extra.user" = "user" }   # old = new; dotted both ways
//! copy = { "service" = "labels.service" }
//! delete = ["args", "exc_info"]
//! set = { env = "prod" }
//! flatten = ["context"]            # context.user -> context_user ... at the top level
//! nest = { http = ["status", "method"] }   # status, method -> http.status, http.method
//! coerce = { levelno = "int", exc_info = "auto" }   # int, float, bool, string, null, auto
//! parse_json = ["payload"]         # a string holding JSON becomes the value
//! format = { template = "msg", args = "args", into = "message" }
//! ```
//!
//! Steps run in that order, after the preset. An event that cannot be
//! reshaped (a field to parse that is not JSON, say) is left as it is.
//!
//! Without `preset` and `flatten`, the top-level fields the steps can touch
//! are known from the config: only those are parsed, and the others are
//! copied as they are, in their place (a `set` on a 200-byte event parses
//! nothing but the field it sets). With either, the event is parsed whole.

pub use sluice_common::{presets, pyformat};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

/// The configuration, and the plugin.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Remap {
    /// A logging library's record mapped to sluice's common fields first.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<schema_types::Preset>"))]
    preset: Option<presets::Preset>,
    /// Fields holding JSON text, replaced by the value it holds.
    #[serde(default)]
    parse_json: Vec<String>,
    /// Fields moved: `old = "new"` (dotted paths).
    #[serde(default)]
    rename: BTreeMap<String, String>,
    /// Fields copied: `from = "to"` (dotted paths).
    #[serde(default)]
    copy: BTreeMap<String, String>,
    /// Fields set to constants.
    #[serde(default)]
    set: Map<String, Value>,
    /// Fields typed: `field = "int" | "float" | "bool" | "string" | "null" | "auto"`.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "BTreeMap<String, schema_types::Coerce>"))]
    coerce: BTreeMap<String, Coerce>,
    /// Objects flattened into their parent (`context.user.id` ->
    /// `context_user_id`).
    #[serde(default)]
    flatten: Vec<String>,
    /// Fields gathered under a new object: `http = ["status", "method"]`.
    #[serde(default)]
    nest: BTreeMap<String, Vec<String>>,
    /// Python %-formatting of a message with its arguments.
    #[serde(default)]
    format: Option<Format>,
    /// Fields deleted.
    #[serde(default)]
    delete: Vec<String>,
    /// The top-level fields the steps can read or write, when the config
    /// says which (see [`Remap::touched`]).
    #[serde(skip)]
    heads: Option<Vec<String>>,
    /// With `heads`: what the steps do to an event that has none of them.
    #[serde(skip)]
    absent: Option<Absent>,
}

/// An event in which none of the touched fields appears (no `"NAME"` in
/// its bytes, and no `\u` or `\/` escape that could spell one) comes out
/// of the steps the same way every time: unchanged, or with the same
/// fields added (a constant `set`, say). Both found at `init`, so such an
/// event costs a few searches of its bytes and one copy.
#[derive(Debug)]
struct Absent {
    /// `"NAME"` of every touched field, and the two escapes.
    needles: Vec<memchr::memmem::Finder<'static>>,
    /// `"env":"prod"`: the fields to add, or `None` when nothing changes.
    added: Option<Vec<u8>>,
}

impl Absent {
    fn new(remap: &Remap, heads: &[String]) -> Self {
        let mut needles: Vec<memchr::memmem::Finder<'static>> = heads
            .iter()
            .map(|h| memchr::memmem::Finder::new(&Value::from(h.as_str()).to_string()).into_owned())
            .collect();
        needles.push(memchr::memmem::Finder::new(b"\\u").into_owned());
        needles.push(memchr::memmem::Finder::new(b"\\/").into_owned());
        let mut empty = Map::new();
        let added = remap.apply(&mut empty).then(|| {
            let text = Value::Object(empty).to_string();
            text.as_bytes()[1..text.len() - 1].to_vec()
        });
        Absent {
            needles,
            added: added.filter(|a| !a.is_empty()),
        }
    }

    /// The verdict for `raw` if none of the fields is in it.
    fn apply(&self, raw: &[u8], out: &mut Vec<u8>) -> Option<Verdict> {
        if self.needles.iter().any(|n| n.find(raw).is_some()) {
            return None;
        }
        let Some(added) = &self.added else {
            return Some(Verdict::Keep);
        };
        let close = raw.iter().rposition(|b| !b.is_ascii_whitespace())?;
        if raw[close] != b'}' {
            return None;
        }
        let body = raw[..close].trim_ascii_end();
        out.extend_from_slice(body);
        if body.last() != Some(&b'{') {
            out.push(b',');
        }
        out.extend_from_slice(added);
        out.push(b'}');
        Some(Verdict::Written)
    }
}

/// `format = { template = "msg", args = "args", into = "message" }`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Format {
    /// The field holding the %-template.
    template: String,
    /// The field holding its arguments (a list or an object).
    #[serde(default = "default_args")]
    args: String,
    /// The field the formatted text goes in.
    #[serde(default = "default_into")]
    into: String,
}

fn default_args() -> String {
    "args".into()
}
fn default_into() -> String {
    "message".into()
}

pub use sluice_common::{coerce, format_message, get, put, take, Coerce};

impl Remap {
    /// The top-level fields that the steps can read or write, or `None`
    /// when that depends on the event (a preset; `flatten`, which adds
    /// fields named after the nested ones). A dotted path `a.b` can touch
    /// the top-level field `a.b` (a key with the dots wins) and `a`.
    pub fn touched(&self) -> Option<Vec<String>> {
        if self.preset.is_some() || !self.flatten.is_empty() {
            return None;
        }
        let mut paths: Vec<&str> = Vec::new();
        paths.extend(self.parse_json.iter().map(String::as_str));
        for (from, to) in self.rename.iter().chain(&self.copy) {
            paths.extend([from.as_str(), to.as_str()]);
        }
        paths.extend(self.set.keys().map(String::as_str));
        paths.extend(self.coerce.keys().map(String::as_str));
        for (into, fields) in &self.nest {
            paths.push(into);
            paths.extend(fields.iter().map(String::as_str));
        }
        if let Some(f) = &self.format {
            paths.extend([f.template.as_str(), f.args.as_str(), f.into.as_str()]);
        }
        paths.extend(self.delete.iter().map(String::as_str));
        let mut heads: Vec<String> = Vec::new();
        for p in paths {
            for h in [p, p.split('.').next().unwrap_or(p)] {
                if !heads.iter().any(|k| k == h) {
                    heads.push(h.to_string());
                }
            }
        }
        Some(heads)
    }

    /// Reshape one event (an object). Returns whether anything changed.
    pub fn apply(&self, obj: &mut Map<String, Value>) -> bool {
        let before = obj.clone();
        if let Some(p) = self.preset {
            presets::apply(p, obj);
        }
        for path in &self.parse_json {
            if let Some(Value::String(s)) = get(obj, path) {
                if let Ok(v) = serde_json::from_str::<Value>(s) {
                    put(obj, path, v);
                }
            }
        }
        for (from, to) in &self.rename {
            if let Some(v) = take(obj, from) {
                put(obj, to, v);
            }
        }
        for (from, to) in &self.copy {
            if let Some(v) = get(obj, from).cloned() {
                put(obj, to, v);
            }
        }
        for (k, v) in &self.set {
            put(obj, k, v.clone());
        }
        for (path, to) in &self.coerce {
            if let Some(v) = get(obj, path) {
                if let Some(c) = coerce(v, *to) {
                    put(obj, path, c);
                }
            }
        }
        for path in &self.flatten {
            if let Some(Value::Object(inner)) = take(obj, path) {
                let prefix = path.replace('.', "_");
                flatten_into(obj, &prefix, inner);
            }
        }
        for (into, fields) in &self.nest {
            for f in fields {
                if let Some(v) = take(obj, f) {
                    put(obj, &format!("{into}.{f}"), v);
                }
            }
        }
        if let Some(f) = &self.format {
            format_message(obj, &f.template, &f.args, &f.into);
        }
        for path in &self.delete {
            take(obj, path);
        }
        *obj != before
    }
}

impl Remap {
    /// The steps run over the touched fields alone; the event written with
    /// the others copied as they are, in their place, and new fields last.
    fn splice(&self, event: &Event<'_>, heads: &[String], out: &mut Vec<u8>) -> Verdict {
        let is_object = event
            .raw()
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if !is_object {
            return Verdict::Keep;
        }
        if let Some(verdict) = self.absent.as_ref().and_then(|a| a.apply(event.raw(), out)) {
            return verdict;
        }
        let touched = |name: &str| heads.iter().any(|h| h == name);
        let mut part = Map::new();
        for (name, raw) in event.raw_fields() {
            if touched(name) {
                let Ok(v) = serde_json::from_str::<Value>(raw) else {
                    return Verdict::Keep;
                };
                part.insert(name.to_string(), v);
            }
        }
        let had: Vec<String> = part.keys().cloned().collect();
        if !self.apply(&mut part) {
            return Verdict::Keep;
        }
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str| {
            out.push(if first { b'{' } else { b',' });
            first = false;
            // Writing JSON into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
        };
        let mut written: Vec<&str> = Vec::new();
        for (name, raw) in event.raw_fields() {
            if !touched(name) {
                field(out, name);
                out.extend_from_slice(raw.as_bytes());
            } else if let Some(v) = part.get(name) {
                if !written.contains(&name) {
                    written.push(name);
                    field(out, name);
                    let _ = serde_json::to_writer(&mut *out, v);
                }
            }
        }
        for (name, v) in &part {
            if !had.iter().any(|h| h == name) {
                field(out, name);
                let _ = serde_json::to_writer(&mut *out, v);
            }
        }
        if first {
            out.push(b'{');
        }
        out.push(b'}');
        Verdict::Written
    }
}

fn flatten_into(obj: &mut Map<String, Value>, prefix: &str, inner: Map<String, Value>) {
    for (k, v) in inner {
        let key = format!("{prefix}_{k}");
        match v {
            Value::Object(o) => flatten_into(obj, &key, o),
            other => {
                obj.insert(key, other);
            }
        }
    }
}

impl Plugin for Remap {
    /// A refused config names the key at fault: `coerce.levelno: unknown
    /// variant ...`.
    fn init(config: Config) -> Result<Self, String> {
        let mut remap: Self = config.parse()?;
        remap.heads = remap.touched();
        remap.absent = remap.heads.as_deref().map(|h| Absent::new(&remap, h));
        Ok(remap)
    }

    fn process_into(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Verdict {
        match &self.heads {
            Some(heads) => self.splice(event, heads, out),
            None => self.process(event),
        }
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        let Ok(Value::Object(mut obj)) = event.to_value() else {
            return Verdict::Keep;
        };
        if self.apply(&mut obj) {
            Verdict::Replace(Value::Object(obj).to_string().into_bytes())
        } else {
            Verdict::Keep
        }
    }
}

export_plugin!(Remap);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::Remap>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use serde_json::json;

    fn remap(config: &str, event: Value) -> Value {
        let r = Remap::init(Config::new(config)).unwrap();
        let mut obj = event.as_object().unwrap().clone();
        r.apply(&mut obj);
        Value::Object(obj)
    }

    #[test]
    fn every_step() {
        let got = remap(
            r#"{"rename":{"a.b":"top","old":"x.y"},"copy":{"top":"copy.of"},"set":{"env":"prod"},
                "coerce":{"n":"int","f":"auto","none":"auto","yes":"bool"},"flatten":["ctx"],
                "nest":{"http":["status"]},"parse_json":["payload"],"delete":["gone"]}"#,
            json!({"a":{"b":1},"old":2,"n":"20","f":"1.5","none":"None","yes":"true",
                   "ctx":{"user":{"id":7}},"status":200,"payload":"{\"k\":[1]}","gone":1}),
        );
        assert_eq!(
            got,
            json!({"n":20,"f":1.5,"none":null,"yes":true,"payload":{"k":[1]},"top":1,
                   "x":{"y":2},"copy":{"of":1},"env":"prod","ctx_user_id":7,"http":{"status":200}})
        );
    }

    /// The bytes of `process_into` (or of a replacement) for one event.
    fn run(r: &Remap, raw: &str) -> Option<String> {
        let mut out = Vec::new();
        match r.process_into(&Event::new(raw.as_bytes()), &mut out) {
            Verdict::Keep => None,
            Verdict::Written => Some(String::from_utf8(out).unwrap()),
            Verdict::Replace(b) => Some(String::from_utf8(b).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spliced_events_equal_parsed_ones_and_keep_untouched_bytes() {
        let configs = [
            r#"{"set":{"env":"prod"}}"#,
            r#"{"set":{"labels.env":"prod","status":200}}"#,
            r#"{"rename":{"a.b":"top","old":"x.y"},"copy":{"top":"copy.of"},"coerce":{"n":"int"},
                "nest":{"http":["status"]},"parse_json":["payload"],"delete":["gone","a"]}"#,
            r#"{"format":{"template":"msg","args":"args","into":"message"},"delete":["msg"]}"#,
            r#"{"delete":["nothing.here"]}"#,
        ];
        let events = [
            r#"{"service":"web", "status": 200 }"#,
            r#"{"k\u0065y":"\u0065nv","message":"env"}"#,
            r#"{"ts":1.50,"a":{"b":1,"c":2},"old":2,"n":"20","status":200,"payload":"{\"k\":[1]}","gone":1,"msg":"%s!","args":"('x',)"}"#,
            r#"{"env":"prod","labels":{"env":"prod"},"status":200}"#,
            r#"{"a.b":"dotted key","message":"caf\u00e9"}"#,
            r#"{}"#,
        ];
        for c in configs {
            let fast = Remap::init(Config::new(c)).unwrap();
            assert!(fast.heads.is_some(), "{c}");
            let mut whole = Remap::init(Config::new(c)).unwrap();
            whole.heads = None;
            let mut spliced = Remap::init(Config::new(c)).unwrap();
            spliced.absent = None;
            for e in events {
                let b = run(&whole, e);
                for a in [run(&fast, e), run(&spliced, e)] {
                    assert_eq!(a.is_some(), b.is_some(), "{c} on {e}: {a:?} / {b:?}");
                    if let (Some(a), Some(b)) = (a, &b) {
                        let (va, vb): (Value, Value) = (
                            serde_json::from_str(&a).unwrap(),
                            serde_json::from_str(b).unwrap(),
                        );
                        assert_eq!(va, vb, "{c} on {e}");
                    }
                }
            }
        }
        // Untouched fields keep their bytes and place; new ones come last.
        let r = Remap::init(Config::new(r#"{"set":{"env":"prod"},"delete":["gone"]}"#)).unwrap();
        assert_eq!(
            run(&r, r#"{"ts":1.50,"gone":1,"message":"caf\u00e9"}"#).unwrap(),
            r#"{"ts":1.50,"message":"caf\u00e9","env":"prod"}"#
        );
        // No touched field in the event: the constant fields appended.
        assert_eq!(run(&r, "{\"a\": 1 } ").unwrap(), r#"{"a": 1,"env":"prod"}"#);
        assert_eq!(run(&r, "{ }").unwrap(), r#"{"env":"prod"}"#);
        // Not an object: left alone.
        assert_eq!(run(&r, "[1]"), None);
        // A preset or flatten parses the whole event.
        assert!(Remap::init(Config::new(r#"{"flatten":["ctx"]}"#))
            .unwrap()
            .heads
            .is_none());
        assert!(Remap::init(Config::new(r#"{"preset":"pino"}"#))
            .unwrap()
            .heads
            .is_none());
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = Remap::init(Config::new(r#"{"renam":{}}"#)).unwrap_err();
        assert!(e.contains("unknown field `renam`"), "{e}");
        let e = Remap::init(Config::new(r#"{"coerce":{"a":"integer"}}"#)).unwrap_err();
        assert!(e.starts_with("coerce.a: unknown variant `integer`"), "{e}");
        let e = Remap::init(Config::new(r#"{"format":{"templat":"msg"}}"#)).unwrap_err();
        assert!(
            e.starts_with("format.templat: unknown field `templat`"),
            "{e}"
        );
        let e = Remap::init(Config::new(r#"{"preset":"log4j"}"#)).unwrap_err();
        assert!(e.contains("unknown variant `log4j`"), "{e}");
    }

    #[test]
    fn formats_a_python_message_with_its_args() {
        let got = remap(
            r#"{"format":{"template":"msg","args":"args","into":"message"}}"#,
            json!({"msg":"stock low for sku %s owner %r (%d left, %.1f%%)","args":"('A-1', 'bob', 3, 2.5)"}),
        );
        assert_eq!(
            got["message"],
            "stock low for sku A-1 owner 'bob' (3 left, 2.5%)"
        );
        assert!(got.get("args").is_none());
    }
}

/// The shared crate's `Preset` and `Coerce` as the schema shows them (the
/// shared crate depends on serde only); the matches stop compiling when a
/// kind is added there and not here.
#[cfg(test)]
mod schema_types {
    use sluice_common::{coerce, presets};

    /// A logging library's record layout.
    #[derive(schemars::JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    pub enum Preset {
        PythonLogging,
        Loguru,
        Monolog,
        Winston,
        Pino,
        Bunyan,
    }

    /// What a value is turned into.
    #[derive(schemars::JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    pub enum Coerce {
        Int,
        Float,
        Bool,
        String,
        Null,
        Auto,
    }

    #[allow(dead_code)]
    fn same(p: presets::Preset, c: coerce::Coerce) -> (Preset, Coerce) {
        let p = match p {
            presets::Preset::PythonLogging => Preset::PythonLogging,
            presets::Preset::Loguru => Preset::Loguru,
            presets::Preset::Monolog => Preset::Monolog,
            presets::Preset::Winston => Preset::Winston,
            presets::Preset::Pino => Preset::Pino,
            presets::Preset::Bunyan => Preset::Bunyan,
        };
        let c = match c {
            coerce::Coerce::Int => Coerce::Int,
            coerce::Coerce::Float => Coerce::Float,
            coerce::Coerce::Bool => Coerce::Bool,
            coerce::Coerce::String => Coerce::String,
            coerce::Coerce::Null => Coerce::Null,
            coerce::Coerce::Auto => Coerce::Auto,
        };
        (p, c)
    }
}
