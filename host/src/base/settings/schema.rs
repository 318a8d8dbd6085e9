//! How the pipeline file's own value types look in the JSON Schema
//! (`sluice schema`): stand-ins named in `#[schemars(with = ...)]`.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

/// A duration: `"200ms"`, `"5s"`, `"2m"`, `"1h 30m"`, or milliseconds.
pub struct Duration;

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: \"200ms\", \"5s\", \"2m\", \"1h 30m\" (humantime), or a number of milliseconds.",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+(\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zA-Zµ]+)*\\s*$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}

/// A string the schema describes by `description` (templates, zones,
/// formats read by their own parsers).
pub fn described(description: &str) -> Schema {
    json_schema!({ "type": "string", "description": description })
}

/// How an event's time field is written.
impl JsonSchema for crate::base::timestamp::TimeFormat {
    fn schema_name() -> Cow<'static, str> {
        "TimeFormat".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "`auto`, `rfc3339`, `unix` (seconds), `unix_ms`, or a strftime pattern (with `%`).",
            "anyOf": [
                { "enum": ["auto", "rfc3339", "unix", "unix_ms"] },
                { "type": "string", "pattern": "%" }
            ]
        })
    }
}

/// `timestamp = {...}` of a source: one candidate or a list of them.
impl JsonSchema for crate::base::timestamp::TimestampRules {
    fn schema_name() -> Cow<'static, str> {
        "TimestampRules".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let rule = generator.subschema_for::<crate::base::timestamp::TimestampRule>();
        json_schema!({
            "description": "Where the event's time is: a table `{ field = ..., format = ... }` or a list of them, tried in order.",
            "anyOf": [ rule, { "type": "array", "items": rule } ]
        })
    }
}

/// How a list of conditions combines.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Mode {
    /// Every condition must hold.
    All,
    /// At least one condition must hold.
    Any,
}

/// One test on one field: exactly one of `equals`, `one_of`,
/// `contains`, `exists` or a range (`gt`, `gte`, `lt`, `lte`, alone
/// or together).
// `sluice_common::cond::Condition` as the schema shows it (the shared
// crate depends on serde only); `same_condition` does not compile if a
// key is added there and not here.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Condition {
    /// A dotted path: `service`, `data.user.id`.
    pub field: String,
    /// The field equals this JSON value (strings compare exactly).
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    /// The field equals one of these values.
    #[serde(default)]
    pub one_of: Option<Vec<serde_json::Value>>,
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

/// The shared crate's `Condition` and this one have the same fields
/// (an exhaustive pattern: a field added there fails to compile here).
#[allow(dead_code)]
fn same_condition(c: sluice_common::cond::Condition) -> Condition {
    let sluice_common::cond::Condition {
        field,
        equals,
        one_of,
        contains,
        exists,
        gt,
        gte,
        lt,
        lte,
        negate,
    } = c;
    Condition {
        field,
        equals,
        one_of,
        contains,
        exists,
        gt,
        gte,
        lt,
        lte,
        negate,
    }
}

/// Both kinds of `Mode` (a kind added there fails to compile here).
#[allow(dead_code)]
fn same_mode(m: sluice_common::cond::Mode) -> Mode {
    match m {
        sluice_common::cond::Mode::All => Mode::All,
        sluice_common::cond::Mode::Any => Mode::Any,
    }
}

/// A size: a number of bytes, or `"512KiB"`, `"10MiB"`, `"1MB"`.
pub struct Size;

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: a number of bytes, or \"512KiB\", \"10MiB\", \"1MB\", \"2GiB\".",
            "anyOf": [
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]i?[bB]?|[bB])?\\s*$" },
                { "type": "integer", "minimum": 0 }
            ]
        })
    }
}
