//! `cond::Condition` and `cond::Mode` as a config schema shows them: one
//! file, two crates, like `cond.rs` (the SDK's `schema` feature, and the
//! host's `sluice schema`); not a module of `sluice-common`, which
//! depends on serde only. Its parent module has `cond` in scope. The
//! exhaustive pattern and match below stop compiling when a key or a mode
//! is added to `cond.rs` and not here.

use schemars::JsonSchema;

/// One test on one field: exactly one of `equals`, `one_of`, `contains`,
/// `exists` or a range (`gt`, `gte`, `lt`, `lte`, alone or together).
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
fn same_condition(c: super::cond::Condition) -> Condition {
    let super::cond::Condition {
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
fn same_mode(m: super::cond::Mode) -> Mode {
    match m {
        super::cond::Mode::All => Mode::All,
        super::cond::Mode::Any => Mode::Any,
    }
}
