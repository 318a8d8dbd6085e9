//! Each logging library's record mapped to sluice's common fields:
//! `level` (one spelling per level: see [`crate::level`]), `message`, `logger`, `service` (when the
//! record has none), `exception`. Everything else is kept under its name.
//! The time is the source's business: by default sources read `created`,
//! `record.time.timestamp`, `datetime` and `time` (see the README).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::coerce::{coerce, Coerce};
use crate::level;
use crate::path::{get, put, take};
use crate::pyformat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    PythonLogging,
    Loguru,
    Monolog,
    Winston,
    Pino,
    Bunyan,
}

/// The attributes of a Python `LogRecord` that are numbers, booleans or
/// `None` but arrive as strings from `HTTPHandler` (a form of `__dict__`).
const PY_TYPED: [&str; 11] = [
    "levelno",
    "lineno",
    "process",
    "thread",
    "created",
    "msecs",
    "relativeCreated",
    "exc_info",
    "exc_text",
    "stack_info",
    "taskName",
];

/// The attributes every `LogRecord` has: the rest of what `HTTPHandler`
/// posts are the `extra` a call passed.
const PY_RECORD: [&str; 22] = [
    "name",
    "msg",
    "args",
    "levelname",
    "levelno",
    "pathname",
    "filename",
    "module",
    "exc_info",
    "exc_text",
    "stack_info",
    "lineno",
    "funcName",
    "created",
    "msecs",
    "relativeCreated",
    "thread",
    "threadName",
    "processName",
    "process",
    "taskName",
    "message",
];

/// An `extra` value as Python's `str()` wrote it, typed back only when the
/// text is exactly what `str()` gives for that type: `None` -> null,
/// `True`/`False` -> booleans, an integer without sign or leading zeros
/// (`1000`, `-3`) -> a number, a decimal with a point (`12.5`, `-0.25`,
/// `1e-05` as Python writes small floats) -> a number. Anything else (`""`,
/// `007`, `+1`, `1,5`, `nan`) stays text.
fn python_str_value(t: &str) -> Option<Value> {
    match t {
        "None" => return Some(Value::Null),
        "True" => return Some(Value::Bool(true)),
        "False" => return Some(Value::Bool(false)),
        _ => {}
    }
    let digits = t.strip_prefix('-').unwrap_or(t);
    let canonical_int = |d: &str| {
        !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && (d == "0" || !d.starts_with('0'))
    };
    if canonical_int(digits) {
        return t.parse::<i64>().ok().map(Value::from);
    }
    let (mantissa, exponent) = match digits.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (digits, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((i, f)) => canonical_int(i) && !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()),
        None => exponent.is_some() && canonical_int(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let d = e.strip_prefix(['+', '-']).unwrap_or("");
        d.len() >= 2 && d.bytes().all(|b| b.is_ascii_digit())
    });
    if mantissa_ok && exponent_ok {
        return t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from);
    }
    None
}

fn move_to(obj: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = take(obj, from) {
        put(obj, to, v);
    }
}

fn service_from_logger(obj: &mut Map<String, Value>) {
    if !obj.contains_key("service") {
        if let Some(l) = obj.get("logger").cloned() {
            obj.insert("service".into(), l);
        }
    }
}

/// pino's and bunyan's numeric levels.
fn level_name(n: f64) -> Option<&'static str> {
    Some(match n as i64 {
        10 => "trace",
        20 => "debug",
        30 => "info",
        40 => "warn",
        50 => "error",
        60 => "fatal",
        _ => return None,
    })
}

/// Map `obj`, a record of `preset`'s library, to the common fields.
pub fn apply(preset: Preset, obj: &mut Map<String, Value>) {
    match preset {
        Preset::PythonLogging => {
            for key in PY_TYPED {
                if let Some(v) = obj.get(key) {
                    if let Some(c) = coerce(v, Coerce::Auto) {
                        obj.insert(key.to_string(), c);
                    }
                }
            }
            // The extras: typed back where the text is what Python's
            // `str()` writes for a number, a boolean or None.
            for (k, v) in obj.iter_mut() {
                if PY_RECORD.contains(&k.as_str()) {
                    continue;
                }
                if let Some(typed) = v.as_str().and_then(python_str_value) {
                    *v = typed;
                }
            }
            if !obj.contains_key("message") {
                format_message(obj, "msg", "args", "message");
                if !obj.contains_key("message") {
                    move_to(obj, "msg", "message");
                } else {
                    obj.remove("msg");
                }
            } else {
                obj.remove("msg");
                obj.remove("args");
            }
            if let Some(l) = take(obj, "levelname") {
                obj.insert("level".into(), level::normalize_value(l));
            }
            move_to(obj, "name", "logger");
            if let Some(e) = take(obj, "exc_text") {
                if !e.is_null() {
                    obj.insert("exception".into(), e);
                }
            }
            service_from_logger(obj);
        }
        Preset::Loguru => {
            // {"text": "...", "record": {...}}: the record is the event.
            if let Some(Value::Object(mut record)) = take(obj, "record") {
                obj.remove("text");
                if let Some(m) = take(&mut record, "message") {
                    obj.insert("message".into(), m);
                }
                if let Some(l) = take(&mut record, "level.name") {
                    obj.insert("level".into(), level::normalize_value(l));
                }
                take(&mut record, "level");
                if let Some(n) = take(&mut record, "name") {
                    obj.insert("logger".into(), n);
                }
                if let Some(e) = take(&mut record, "exception") {
                    if !e.is_null() {
                        obj.insert("exception".into(), e);
                    }
                }
                if let Some(Value::Object(extra)) = take(&mut record, "extra") {
                    for (k, v) in extra {
                        obj.entry(k).or_insert(v);
                    }
                }
                if !record.is_empty() {
                    obj.insert("record".into(), Value::Object(record));
                }
            }
            service_from_logger(obj);
        }
        Preset::Monolog => {
            if let Some(name) = take(obj, "level_name") {
                if let Some(n) = obj.remove("level") {
                    obj.insert("level_number".into(), n);
                }
                obj.insert("level".into(), level::normalize_value(name));
            }
            if let Some(c) = obj.get("channel").cloned() {
                obj.entry("logger").or_insert(c);
            }
            if let Some(e) = get(obj, "context.exception").cloned() {
                take(obj, "context.exception");
                obj.insert("exception".into(), e);
            }
            service_from_logger(obj);
        }
        Preset::Winston => {
            if let Some(l) = obj.get("level").cloned() {
                obj.insert("level".into(), level::normalize_value(l));
            }
            move_to(obj, "stack", "exception");
            service_from_logger(obj);
        }
        Preset::Pino | Preset::Bunyan => {
            if let Some(Value::Number(n)) = obj.get("level").cloned() {
                if let Some(name) = n.as_f64().and_then(level_name) {
                    obj.insert("level".into(), name.into());
                    obj.insert("level_number".into(), Value::Number(n));
                }
            }
            if !obj.contains_key("message") {
                move_to(obj, "msg", "message");
            }
            move_to(obj, "name", "logger");
            if let Some(stack) = get(obj, "err.stack").cloned() {
                obj.insert("exception".into(), stack);
            }
            service_from_logger(obj);
        }
    }
}

/// Format `template` (a Python `%` string) with the value of `args` (a
/// list, an object, or the repr of a Python tuple or dict, as
/// `HTTPHandler` sends it) into `into`; `args` is removed once used.
pub fn format_message(obj: &mut Map<String, Value>, template: &str, args: &str, into: &str) {
    let Some(Value::String(t)) = get(obj, template).cloned() else {
        return;
    };
    let values = match get(obj, args) {
        None | Some(Value::Null) => return,
        // `None`, `()` and what is not a Python literal: nothing to format with.
        Some(Value::String(s)) => match pyformat::parse_repr(s) {
            Some(v) => v,
            None => return,
        },
        Some(v) => v.clone(),
    };
    if let Some(text) = pyformat::format(&t, &values) {
        take(obj, args);
        put(obj, into, Value::String(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(p: Preset, v: Value) -> Value {
        let mut obj = v.as_object().unwrap().clone();
        apply(p, &mut obj);
        Value::Object(obj)
    }

    #[test]
    fn python_logging_as_http_handler_sends_it() {
        let got = mapped(
            Preset::PythonLogging,
            json!({"name":"billing","msg":"stock low for sku %s owner %s","args":"('A-1', 'bob')",
                   "levelname":"WARNING","levelno":"30","created":"1795428000.123","exc_info":"None",
                   "exc_text":"None","lineno":"12","funcName":"check"}),
        );
        assert_eq!(got["message"], "stock low for sku A-1 owner bob");
        assert_eq!(
            (got["level"].as_str(), got["levelno"].as_i64()),
            (Some("warn"), Some(30))
        );
        assert_eq!(
            (got["logger"].as_str(), got["service"].as_str()),
            (Some("billing"), Some("billing"))
        );
        assert_eq!(got["created"], 1795428000.123);
        assert!(got["exc_info"].is_null() && got.get("exception").is_none());
        assert_eq!(got["funcName"], "check");
        assert!(got.get("msg").is_none() && got.get("args").is_none());
    }

    #[test]
    fn python_extras_are_typed_only_when_str_wrote_them() {
        let got = mapped(
            Preset::PythonLogging,
            json!({"name":"shop","msg":"paid","levelname":"INFO","order_id":"1000","amount":"12.5",
                   "is_vip":"True","coupon":"None","zip":"01234","code":"+1","empty":"","tiny":"1e-05",
                   "neg":"-3","ratio":"0.25","text":"12,5","big":"1.5e+300","word":"nan","funcName":"007"}),
        );
        assert_eq!(got["order_id"], 1000);
        assert_eq!(got["amount"], 12.5);
        assert_eq!(got["is_vip"], true);
        assert!(got["coupon"].is_null());
        assert_eq!(got["zip"], "01234");
        assert_eq!(got["code"], "+1");
        assert_eq!(got["empty"], "");
        assert_eq!(got["tiny"], 1e-05);
        assert_eq!(got["neg"], -3);
        assert_eq!(got["ratio"], 0.25);
        assert_eq!(got["text"], "12,5");
        assert_eq!(got["big"], 1.5e300);
        assert_eq!(got["word"], "nan");
        assert_eq!(
            got["funcName"], "007",
            "record attributes keep their own rules"
        );
    }

    #[test]
    fn loguru_pino_bunyan_monolog_winston() {
        let got = mapped(
            Preset::Loguru,
            json!({"text":"...","record":{"message":"paid","level":{"name":"SUCCESS","no":25},"name":"shop",
                   "extra":{"request_id":"r-1"},"exception":null,"time":{"timestamp":1795428000.1},"line":3}}),
        );
        assert_eq!(
            got,
            json!({"message":"paid","level":"success","logger":"shop","request_id":"r-1",
                   "record":{"time":{"timestamp":1795428000.1},"line":3},"service":"shop"})
        );
        let got = mapped(
            Preset::Pino,
            json!({"level":50,"time":1,"msg":"boom","name":"api","err":{"stack":"Error: boom\n at x"}}),
        );
        assert_eq!(
            (
                got["level"].as_str(),
                got["message"].as_str(),
                got["logger"].as_str()
            ),
            (Some("error"), Some("boom"), Some("api"))
        );
        assert_eq!(got["exception"], "Error: boom\n at x");
        let got = mapped(
            Preset::Bunyan,
            json!({"level":30,"msg":"hi","name":"svc","v":0}),
        );
        assert_eq!(
            (got["level"].as_str(), got["service"].as_str()),
            (Some("info"), Some("svc"))
        );
        let got = mapped(
            Preset::Monolog,
            json!({"message":"failed","level":400,"level_name":"ERROR","channel":"payments","context":{"exception":{"class":"E"}},"extra":{}}),
        );
        assert_eq!(
            (got["level"].as_str(), got["level_number"].as_i64()),
            (Some("error"), Some(400))
        );
        assert_eq!(
            (got["logger"].as_str(), got["channel"].as_str()),
            (Some("payments"), Some("payments"))
        );
        assert_eq!(got["exception"], json!({"class":"E"}));
        let got = mapped(
            Preset::Winston,
            json!({"level":"error","message":"x","stack":"Error: x","service":"web"}),
        );
        assert_eq!(
            (got["exception"].as_str(), got["service"].as_str()),
            (Some("Error: x"), Some("web"))
        );
    }
}
