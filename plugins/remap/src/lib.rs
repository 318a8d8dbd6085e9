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

pub use sluice_common::{presets, pyformat};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

/// The configuration, and the plugin.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remap {
    #[serde(default)]
    preset: Option<presets::Preset>,
    #[serde(default)]
    parse_json: Vec<String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    copy: BTreeMap<String, String>,
    #[serde(default)]
    set: Map<String, Value>,
    #[serde(default)]
    coerce: BTreeMap<String, Coerce>,
    #[serde(default)]
    flatten: Vec<String>,
    #[serde(default)]
    nest: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    delete: Vec<String>,
}

/// `format = { template = "msg", args = "args", into = "message" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Format {
    template: String,
    #[serde(default = "default_args")]
    args: String,
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
        config.parse()
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

#[cfg(test)]
mod tests {
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
