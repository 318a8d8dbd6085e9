//! The mask plugin's settings as a pipeline writes them, and the
//! detectors they make.

use super::*;

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct MaskConfig {
    /// The detectors: email, ipv4, ipv6, card, iban, jwt, bearer, mac
    /// (default: all but mac).
    #[serde(default)]
    pub(crate) detect: Option<Vec<String>>,
    /// One replacement for every detector (default: `[email]`, `[ipv4]`...).
    #[serde(default)]
    pub(crate) text: Option<String>,
    /// A key for keyed hashes instead (`[email:3fa2c41b9e0d]`): equal
    /// values stay correlatable.
    #[serde(default)]
    pub(crate) hash_key: Option<String>,
    /// Fields never masked.
    #[serde(default = "default_skip")]
    pub(crate) skip_fields: Vec<String>,
    /// Only these fields (dotted); default: every string, nested too.
    #[serde(default)]
    pub(crate) fields: Vec<String>,
    /// Detectors of your own: `{ name, regex }`.
    #[serde(default)]
    pub(crate) patterns: Vec<PatternConfig>,
}

/// The time and the trace context: trace and span ids are random hex, and a
/// span id of sixteen decimal digits can pass the Luhn check of a card.
pub(crate) fn default_skip() -> Vec<String> {
    ["timestamp", "trace_id", "span_id", "parent_span_id"]
        .map(String::from)
        .to_vec()
}

/// A detector of your own.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternConfig {
    /// Its name, in the replacement (`[order]`).
    pub(crate) name: String,
    /// What it matches (the `regex` crate's syntax).
    pub(crate) regex: String,
}

/// The built-in detectors, in the order they run: the most specific first,
/// so a JWT is not half-eaten by another detector.
pub const DETECTORS: [&str; 8] = [
    "jwt", "bearer", "email", "iban", "card", "mac", "ipv6", "ipv4",
];

/// The detectors used when `detect` is not given: all but the optional
/// ones (`mac`: hardware addresses are rarely personal data in logs).
pub const DEFAULT_DETECTORS: [&str; 7] = ["jwt", "bearer", "email", "iban", "card", "ipv6", "ipv4"];

pub(crate) fn pattern_of(kind: &str) -> &'static str {
    match kind {
        "jwt" => r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",
        "bearer" => r"(?i)\b(bearer\s+)([A-Za-z0-9\-._~+/]{8,}=*)",
        "email" => r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}",
        "iban" => r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
        "card" => r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
        "mac" => r"\b[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}\b",
        "ipv6" => r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*",
        "ipv4" => r"\b[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\b",
        _ => unreachable!("unknown detector {kind}"),
    }
}

#[derive(Debug)]
pub(crate) enum Replacement {
    Text(String),
    Hash(Vec<u8>),
}

#[derive(Debug)]
pub(crate) struct Detector {
    pub(crate) kind: String,
    pub(crate) regex: Regex,
    pub(crate) builtin: bool,
    /// The bit of [`triggers`] without which this built-in detector cannot
    /// match (0 for custom patterns: always tried).
    pub(crate) trigger: u16,
    /// Its replacement when it is a fixed text (`[email]`), made once.
    pub(crate) fixed: Option<String>,
}
