//! Field conditions, as pipelines write them in TOML:
//!
//! ```toml
//! conditions = [
//!   { field = "service", equals = "payments" },
//!   { field = "level", one_of = ["warn", "error"] },
//!   { field = "message", contains = "timeout" },
//!   { field = "data.user", exists = true },
//!   { field = "env", equals = "test", negate = true },
//! ]
//! ```

use serde::Deserialize;
use serde_json::Value;

use crate::event::Event;

/// One test on one field. Exactly one of `equals`, `one_of`, `contains`,
/// `exists` must be given; [`Condition::check`] says which is wrong.
#[derive(Debug, Clone, Deserialize)]
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
            + self.exists.is_some() as u8;
        match n {
            1 => Ok(()),
            0 => Err(format!(
                "condition on `{}` has no operator: give one of equals, one_of, contains, exists",
                self.field
            )),
            _ => Err(format!(
                "condition on `{}` has {n} operators: give exactly one of equals, one_of, contains, exists",
                self.field
            )),
        }
    }

    /// Whether the event satisfies the condition.
    pub fn matches(&self, event: &Event<'_>) -> bool {
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
        } else {
            false
        };
        hit != self.negate
    }
}

fn equals(event: &Event<'_>, field: &str, want: &Value) -> bool {
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
pub fn matches_all(conditions: &[Condition], mode: Mode, event: &Event<'_>) -> bool {
    match mode {
        Mode::All => conditions.iter().all(|c| c.matches(event)),
        Mode::Any => conditions.is_empty() || conditions.iter().any(|c| c.matches(event)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(json: &str) -> Condition {
        let c: Condition = serde_json::from_str(json).unwrap();
        c.check().unwrap();
        c
    }

    #[test]
    fn operators() {
        let e = Event::new(br#"{"service":"payments","code":502,"message":"upstream timeout","data":{"user":"u1"}}"#);
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
    fn rejects_zero_or_two_operators() {
        let c: Condition = serde_json::from_str(r#"{"field":"a"}"#).unwrap();
        assert!(c.check().unwrap_err().contains("no operator"));
        let c: Condition =
            serde_json::from_str(r#"{"field":"a","equals":1,"exists":true}"#).unwrap();
        assert!(c.check().unwrap_err().contains("2 operators"));
    }

    #[test]
    fn modes() {
        let e = Event::new(br#"{"a":1}"#);
        let cs = vec![
            cond(r#"{"field":"a","equals":1}"#),
            cond(r#"{"field":"b","exists":true}"#),
        ];
        assert!(!matches_all(&cs, Mode::All, &e));
        assert!(matches_all(&cs, Mode::Any, &e));
        assert!(matches_all(&[], Mode::Any, &e));
    }
}
