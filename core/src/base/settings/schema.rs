//! How the pipeline file's own value types look in the JSON Schema
//! (`sluice schema`): stand-ins named in `#[schemars(with = ...)]`.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use sluice_common::cond;

// `cond::Condition` and `cond::Mode` as the schema shows them: the file
// the SDK's `schema` feature compiles too.
#[path = "../../../../common/src/cond_schema.rs"]
mod cond_schema;
pub use cond_schema::{Condition, Mode};

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
