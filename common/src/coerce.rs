//! Typed values from the strings that loggers send (`"20"` -> 20).

use serde::Deserialize;
use serde_json::Value;

/// What `coerce` turns a value into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Coerce {
    Int,
    Float,
    Bool,
    String,
    Null,
    /// `"20"` -> 20, `"1.5"` -> 1.5, `"True"`/`"false"` -> bools,
    /// `"None"`/`"null"`/`""` -> null; anything else stays.
    Auto,
}

/// `value` coerced to `to`; `None` when it cannot be.
pub fn coerce(value: &Value, to: Coerce) -> Option<Value> {
    let text = match value {
        Value::String(s) => Some(s.trim()),
        _ => None,
    };
    match to {
        Coerce::String => Some(match value {
            Value::String(_) => value.clone(),
            Value::Null => Value::String(String::new()),
            other => Value::String(other.to_string()),
        }),
        Coerce::Null => Some(Value::Null),
        Coerce::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(value.clone()),
            Value::Number(n) => n.as_f64().map(|f| Value::from(f.trunc() as i64)),
            Value::Bool(b) => Some(Value::from(*b as i64)),
            _ => text?.parse::<i64>().ok().map(Value::from),
        },
        Coerce::Float => match value {
            Value::Number(n) => n.as_f64().map(Value::from),
            _ => text?
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from),
        },
        Coerce::Bool => match value {
            Value::Bool(_) => Some(value.clone()),
            Value::Number(n) => Some(Value::Bool(n.as_f64() != Some(0.0))),
            _ => match text?.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => Some(Value::Bool(true)),
                "false" | "no" | "0" | "off" => Some(Value::Bool(false)),
                _ => None,
            },
        },
        Coerce::Auto => {
            let Some(t) = text else {
                return Some(value.clone());
            };
            Some(match t {
                "None" | "null" | "" => Value::Null,
                "True" | "true" => Value::Bool(true),
                "False" | "false" => Value::Bool(false),
                _ => {
                    if let Ok(i) = t.parse::<i64>() {
                        Value::from(i)
                    } else if let Some(f) = t
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite() && t.contains('.'))
                    {
                        Value::from(f)
                    } else {
                        value.clone()
                    }
                }
            })
        }
    }
}
