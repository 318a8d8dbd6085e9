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

pub use crate::cond_schema::{Condition, Mode};
