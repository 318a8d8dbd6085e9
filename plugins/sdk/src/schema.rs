//! A plugin's config schema (feature `schema`, for a plugin's tests): the
//! JSON Schema of its config type, made by schemars and kept in a file the
//! plugin ships in its component ([`crate::config_schema!`]).
//!
//! ```ignore
//! #[cfg_attr(test, derive(schemars::JsonSchema))]
//! struct MyConfig { /* ... */ }
//!
//! sluice_plugin::config_schema!("../config.schema.json");
//!
//! #[test]
//! fn config_schema_is_current() {
//!     sluice_plugin::schema::check::<MyConfig>(concat!(env!("CARGO_MANIFEST_DIR"), "/config.schema.json"));
//! }
//! ```

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;

/// The schema of `T`, every subschema inlined (so that it can be placed
/// inside the pipeline file's schema as it is).
pub fn of<T: JsonSchema>() -> serde_json::Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
    }
    schema
}

/// Panics unless the file at `path` holds [`of::<T>`] (with
/// `SLUICE_BLESS=1`, writes it first).
pub fn check<T: JsonSchema>(path: &str) {
    let schema = of::<T>();
    let text = serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n";
    if std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1") {
        if let Err(e) = std::fs::write(path, &text) {
            panic!("cannot write {path}: {e}");
        }
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == text,
        "{path} is not the config type's schema: run the plugin's tests with SLUICE_BLESS=1"
    );
}

/// One test on one field: exactly one of `equals`, `one_of`, `contains`,
/// `exists` or a range (`gt`, `gte`, `lt`, `lte`, alone or together).
// `cond::Condition` as the schema shows it (the shared file depends on
// serde only); `same_condition` stops compiling if a key is added there
// and not here.
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

#[allow(dead_code)]
fn same_condition(c: crate::cond::Condition) -> Condition {
    let crate::cond::Condition {
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

/// How a list of conditions combines: `all` (default) or `any`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum Mode {
    /// Every condition must hold.
    All,
    /// At least one condition must hold.
    Any,
}

#[allow(dead_code)]
fn same_mode(m: crate::cond::Mode) -> Mode {
    match m {
        crate::cond::Mode::All => Mode::All,
        crate::cond::Mode::Any => Mode::Any,
    }
}
