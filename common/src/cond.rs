//! Field conditions, as pipelines write them in TOML:
//!
//! ```toml
//! conditions = [
//!   { field = "service", equals = "payments" },
//!   { field = "level", one_of = ["warn", "error"] },
//!   { field = "message", contains = "timeout" },
//!   { field = "data.user", exists = true },
//!   { field = "env", equals = "test", negate = true },
//!   { field = "status", gte = 500 },                 # numbers: gt, gte, lt, lte,
//!   { field = "duration_ms", gte = 100, lt = 1000 }, # together a range
//! ]
//! ```
//!
//! One file, two crates: `sluice-common` (the host's declared metrics)
//! and the plugin SDK (`filter`, `route`, plugins) compile it, the SDK
//! through a symbolic link; it names only `serde`, `serde_json` and
//! itself. What it reads an event through is [`Fields`]: the SDK's
//! `Event` (which reads fields without a tree) and a parsed
//! `serde_json::Value` implement it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

/// What a condition reads of an event, by dotted path.
pub trait Fields {
    /// The field is present (`null` included).
    fn has(&self, path: &str) -> bool;
    /// The field as a string, if it is one.
    fn get_str(&self, path: &str) -> Option<Cow<'_, str>>;
    /// The field as a number: a JSON number, or a string holding one.
    fn get_f64(&self, path: &str) -> Option<f64>;
    /// The field as a JSON value.
    fn get(&self, path: &str) -> Option<Value>;
}

/// A dotted path into nested objects, at most [`MAX_DEPTH`] deep.
fn walk<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for (depth, key) in path.split('.').enumerate() {
        if depth >= MAX_DEPTH {
            return None;
        }
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

/// Deepest path a condition follows.
pub const MAX_DEPTH: usize = 64;

/// A number in text, as text parsers leave them (`"502"`, `" 12.5 "`).
fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

impl Fields for Value {
    fn has(&self, path: &str) -> bool {
        walk(self, path).is_some()
    }
    fn get_str(&self, path: &str) -> Option<Cow<'_, str>> {
        walk(self, path)?.as_str().map(Cow::Borrowed)
    }
    fn get_f64(&self, path: &str) -> Option<f64> {
        match walk(self, path)? {
            Value::Number(n) => n.as_f64().filter(|n| n.is_finite()),
            Value::String(s) => number(s),
            _ => None,
        }
    }
    fn get(&self, path: &str) -> Option<Value> {
        walk(self, path).cloned()
    }
}

/// One test on one field. Exactly one of `equals`, `one_of`, `contains`,
/// `exists` or a range (`gt`, `gte`, `lt`, `lte`, alone or together) must
/// be given; [`Condition::check`] says which is wrong.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// A dotted path: `service`, `data.user.id`.
    pub field: String,
    /// The field equals this JSON value (strings compare exactly).
    #[serde(default)]
    pub equals: Option<Value>,
    /// The field equals one of these values.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// The field is a string that contains this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// The field is present (`true`) or absent (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
    /// The field is a number (or a string holding one, such as `"502"`)
    /// greater than this.
    #[serde(default)]
    pub gt: Option<f64>,
    /// ... greater than or equal to this.
    #[serde(default)]
    pub gte: Option<f64>,
    /// ... less than this.
    #[serde(default)]
    pub lt: Option<f64>,
    /// ... less than or equal to this.
    #[serde(default)]
    pub lte: Option<f64>,
    /// Invert the result.
    #[serde(default)]
    pub negate: bool,
}

/// How a list of conditions combines.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every condition must hold.
    #[default]
    All,
    /// At least one condition must hold.
    Any,
}

impl Condition {
    /// Validate a condition read from config: exactly one operator.
    pub fn check(&self) -> Result<(), String> {
        let n = self.equals.is_some() as u8
            + self.one_of.is_some() as u8
            + self.contains.is_some() as u8
            + self.exists.is_some() as u8
            + self.is_range() as u8;
        const OPERATORS: &str = "equals, one_of, contains, exists, or a range (gt, gte, lt, lte)";
        match n {
            1 => {}
            0 => {
                return Err(format!(
                    "condition on `{}` has no operator: give one of {OPERATORS}",
                    self.field
                ))
            }
            _ => {
                return Err(format!(
                    "condition on `{}` has {n} operators: give exactly one of {OPERATORS}",
                    self.field
                ))
            }
        }
        if self.gt.is_some() && self.gte.is_some() || self.lt.is_some() && self.lte.is_some() {
            return Err(format!(
                "condition on `{}`: give one lower bound (gt or gte) and one upper bound (lt or lte)",
                self.field
            ));
        }
        Ok(())
    }

    fn is_range(&self) -> bool {
        self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some()
    }

    fn in_range(&self, n: f64) -> bool {
        self.gt.is_none_or(|b| n > b)
            && self.gte.is_none_or(|b| n >= b)
            && self.lt.is_none_or(|b| n < b)
            && self.lte.is_none_or(|b| n <= b)
    }

    /// Whether the event satisfies the condition.
    pub fn matches<E: Fields + ?Sized>(&self, event: &E) -> bool {
        let hit = if let Some(want) = self.exists {
            event.has(&self.field) == want
        } else if let Some(needle) = &self.contains {
            event
                .get_str(&self.field)
                .is_some_and(|s| s.contains(needle.as_str()))
        } else if let Some(want) = &self.equals {
            equals(event, &self.field, want)
        } else if let Some(wants) = &self.one_of {
            wants.iter().any(|w| equals(event, &self.field, w))
        } else if self.is_range() {
            event.get_f64(&self.field).is_some_and(|n| self.in_range(n))
        } else {
            false
        };
        hit != self.negate
    }
}

fn equals<E: Fields + ?Sized>(event: &E, field: &str, want: &Value) -> bool {
    match want {
        // Fast path: compare borrowed strings without building a Value.
        Value::String(w) => event.get_str(field).is_some_and(|s| s == w.as_str()),
        other => event.get(field).as_ref() == Some(other),
    }
}

/// Validate every condition of a list.
pub fn check_all(conditions: &[Condition]) -> Result<(), String> {
    conditions.iter().try_for_each(Condition::check)
}

/// Whether the event satisfies the list under `mode`. An empty list holds.
pub fn matches_all<E: Fields + ?Sized>(conditions: &[Condition], mode: Mode, event: &E) -> bool {
    match mode {
        Mode::All => conditions.iter().all(|c| c.matches(event)),
        Mode::Any => conditions.is_empty() || conditions.iter().any(|c| c.matches(event)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &[u8]) -> Value {
        serde_json::from_slice(json).unwrap()
    }

    fn cond(json: &str) -> Condition {
        let c: Condition = serde_json::from_str(json).unwrap();
        c.check().unwrap();
        c
    }

    #[test]
    fn operators() {
        let e = event(br#"{"service":"payments","code":502,"message":"upstream timeout","data":{"user":"u1"}}"#);
        assert!(cond(r#"{"field":"service","equals":"payments"}"#).matches(&e));
        assert!(cond(r#"{"field":"code","equals":502}"#).matches(&e));
        assert!(cond(r#"{"field":"code","one_of":[500,502]}"#).matches(&e));
        assert!(cond(r#"{"field":"message","contains":"timeout"}"#).matches(&e));
        assert!(cond(r#"{"field":"data.user","exists":true}"#).matches(&e));
        assert!(cond(r#"{"field":"data.nope","exists":false}"#).matches(&e));
        assert!(cond(r#"{"field":"service","equals":"auth","negate":true}"#).matches(&e));
        assert!(!cond(r#"{"field":"missing","contains":"x"}"#).matches(&e));
    }

    #[test]
    fn numbers_compare_as_numbers() {
        let e =
            event(br#"{"status":502,"text_status":"404","ms":"12.5","nested":{"n":7},"s":"x"}"#);
        assert!(cond(r#"{"field":"status","gte":500}"#).matches(&e));
        assert!(cond(r#"{"field":"status","gte":500,"lt":600}"#).matches(&e));
        assert!(!cond(r#"{"field":"status","gt":502}"#).matches(&e));
        assert!(cond(r#"{"field":"text_status","gte":400,"lte":499}"#).matches(&e));
        assert!(cond(r#"{"field":"ms","lt":13}"#).matches(&e));
        assert!(cond(r#"{"field":"nested.n","gt":6.5}"#).matches(&e));
        assert!(!cond(r#"{"field":"s","gt":0}"#).matches(&e), "not a number");
        assert!(!cond(r#"{"field":"missing","lt":1}"#).matches(&e));
        assert!(cond(r#"{"field":"missing","lt":1,"negate":true}"#).matches(&e));
        let c: Condition = serde_json::from_str(r#"{"field":"a","gt":1,"gte":2}"#).unwrap();
        assert!(c.check().unwrap_err().contains("one lower bound"));
        let c: Condition = serde_json::from_str(r#"{"field":"a","gt":1,"equals":2}"#).unwrap();
        assert!(c.check().unwrap_err().contains("2 operators"));
    }

    #[test]
    fn rejects_zero_or_two_operators() {
        let c: Condition = serde_json::from_str(r#"{"field":"a"}"#).unwrap();
        assert!(c.check().unwrap_err().contains("no operator"));
        let c: Condition =
            serde_json::from_str(r#"{"field":"a","equals":1,"exists":true}"#).unwrap();
        assert!(c.check().unwrap_err().contains("2 operators"));
    }

    #[test]
    fn modes() {
        let e = event(br#"{"a":1}"#);
        let cs = vec![
            cond(r#"{"field":"a","equals":1}"#),
            cond(r#"{"field":"b","exists":true}"#),
        ];
        assert!(!matches_all(&cs, Mode::All, &e));
        assert!(matches_all(&cs, Mode::Any, &e));
        assert!(matches_all(&[], Mode::Any, &e));
    }
}
