//! `mask`: redact personal data and secrets in every string of an event.
//!
//! ```toml
//! [transforms.mask.config]
//! detect = ["email", "ipv4", "ipv6", "card", "iban", "jwt", "bearer"]  # the default; "mac" is optional
//! text = "[{kind}]"           # fixed replacement; `{kind}` names the detector
//! # hash_key = "s3cret"       # instead: a keyed hash, so equal values stay correlatable
//! skip_fields = ["timestamp"] # dotted paths left alone (default: timestamp)
//! # fields = ["message"]      # only these paths (default: every string field, nested too)
//! patterns = [{ name = "order", regex = "ORD-[0-9]{6}" }]
//! ```
//!
//! Card numbers are masked only when they pass the Luhn check and start like
//! a card (2-6), with spaces or dashes allowed between digits; IBANs only
//! when their mod-97 checksum holds; IP addresses only when they parse.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use regex::{Captures, Regex};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskConfig {
    #[serde(default)]
    detect: Option<Vec<String>>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hash_key: Option<String>,
    #[serde(default = "default_skip")]
    skip_fields: Vec<String>,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default)]
    patterns: Vec<PatternConfig>,
}

fn default_skip() -> Vec<String> {
    vec!["timestamp".to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatternConfig {
    name: String,
    regex: String,
}

/// The built-in detectors, in the order they run: the most specific first,
/// so a JWT is not half-eaten by another detector.
pub const DETECTORS: [&str; 8] = [
    "jwt", "bearer", "email", "iban", "card", "mac", "ipv6", "ipv4",
];

/// The detectors used when `detect` is not given: all but the optional
/// ones (`mac`: hardware addresses are rarely personal data in logs).
pub const DEFAULT_DETECTORS: [&str; 7] = ["jwt", "bearer", "email", "iban", "card", "ipv6", "ipv4"];

fn pattern_of(kind: &str) -> &'static str {
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
enum Replacement {
    Text(String),
    Hash(Vec<u8>),
}

#[derive(Debug)]
struct Detector {
    kind: String,
    regex: Regex,
    builtin: bool,
}

/// Redacts sensitive values.
#[derive(Debug)]
pub struct Mask {
    detectors: Vec<Detector>,
    /// All detectors as one alternation: one pass over the raw event tells
    /// whether it needs parsing at all, which most events do not.
    prefilter: Regex,
    replacement: Replacement,
    skip_fields: Vec<String>,
    fields: Vec<String>,
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn is_card(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && (b'2'..=b'6').contains(&digits[0]) && luhn(&digits)
}

fn is_iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // Move the country code and check digits to the end, letters to numbers,
    // and the remainder mod 97 must be 1 (ISO 13616).
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Mask {
    fn replacement_for(&self, kind: &str, value: &str) -> String {
        match &self.replacement {
            Replacement::Text(t) => t.replace("{kind}", kind),
            Replacement::Hash(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(value.as_bytes());
                let digest = mac.finalize().into_bytes();
                let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!("[{kind}:{hex}]")
            }
        }
    }

    /// Mask one string. `None` when nothing in it is sensitive.
    pub fn mask_str(&self, input: &str) -> Option<String> {
        let mut current: Cow<'_, str> = Cow::Borrowed(input);
        for d in &self.detectors {
            if !d.regex.is_match(&current) {
                continue;
            }
            let replaced = self.apply(d, &current);
            if let Cow::Owned(s) = replaced {
                current = Cow::Owned(s);
            }
        }
        match current {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        }
    }

    fn apply<'t>(&self, d: &Detector, text: &'t str) -> Cow<'t, str> {
        let bytes = text.as_bytes();
        let mut changed = false;
        let out = d.regex.replace_all(text, |caps: &Captures<'_>| {
            let m = caps.get(0).expect("group 0 always matches");
            let s = m.as_str();
            let accept = !d.builtin
                || match d.kind.as_str() {
                    "card" => is_card(s),
                    "iban" => is_iban(s),
                    "ipv4" => {
                        // Not part of a longer dotted run such as a version 1.2.3.4.5.
                        let next_dot_digit = bytes.get(m.end()) == Some(&b'.')
                            && bytes.get(m.end() + 1).is_some_and(u8::is_ascii_digit);
                        let prev_dot = m.start() > 0 && bytes[m.start() - 1] == b'.';
                        !next_dot_digit && !prev_dot && s.parse::<Ipv4Addr>().is_ok()
                    }
                    "ipv6" => {
                        let before_ok = m.start() == 0 || !is_word_byte(bytes[m.start() - 1]);
                        let after_ok = m.end() == bytes.len() || !is_word_byte(bytes[m.end()]);
                        // A bare `::` parses (the unspecified address) but in
                        // logs it is a separator: an address has a hex digit.
                        let has_digit = s.bytes().any(|b| b.is_ascii_hexdigit());
                        before_ok && after_ok && has_digit && s.parse::<Ipv6Addr>().is_ok()
                    }
                    "mac" => {
                        // One separator throughout: `00:1a:..` or `00-1a-..`.
                        let sep = bytes[m.start() + 2];
                        s.bytes().skip(2).step_by(3).all(|b| b == sep)
                            && !bytes.get(m.end()).is_some_and(|&b| b == b':' || b == b'-')
                    }
                    _ => true,
                };
            if !accept {
                return s.to_string();
            }
            changed = true;
            if d.kind == "bearer" {
                // Keep the scheme so readers know what was there.
                let token = caps.get(2).map_or(s, |t| t.as_str());
                format!("{}{}", &caps[1], self.replacement_for(&d.kind, token))
            } else {
                self.replacement_for(&d.kind, s)
            }
        });
        if changed {
            Cow::Owned(out.into_owned())
        } else {
            Cow::Borrowed(text)
        }
    }

    fn mask_value(&self, value: &mut Value) -> bool {
        match value {
            Value::String(s) => match self.mask_str(s) {
                Some(masked) => {
                    *s = masked;
                    true
                }
                None => false,
            },
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |acc, v| self.mask_value(v) | acc),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |acc, v| self.mask_value(v) | acc),
            _ => false,
        }
    }

    fn mask_object(&self, value: &mut Value, prefix: &str) -> bool {
        let Value::Object(map) = value else {
            return self.mask_value(value);
        };
        let mut changed = false;
        for (key, v) in map.iter_mut() {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if self.skip_fields.contains(&path) {
                continue;
            }
            let selected = self.fields.is_empty() || self.fields.contains(&path);
            let is_ancestor = self
                .fields
                .iter()
                .any(|f| f.starts_with(&path) && f[path.len()..].starts_with('.'));
            let has_skipped_child = self
                .skip_fields
                .iter()
                .any(|s| s.starts_with(&path) && s[path.len()..].starts_with('.'));
            changed |= if selected && !has_skipped_child {
                self.mask_value(v)
            } else if selected || is_ancestor {
                self.mask_object(v, &path)
            } else {
                false
            };
        }
        changed
    }

    /// A cheap necessary condition before any regex runs: each built-in
    /// detector needs some byte to be present (an email needs `@`...).
    /// Regexes without a literal prefix scan every byte, so this saves most
    /// of the work on events with nothing to mask.
    fn may_match(&self, text: &str) -> bool {
        let b = text.as_bytes();
        self.detectors.iter().any(|d| {
            !d.builtin
                || match d.kind.as_str() {
                    "email" => memchr::memchr(b'@', b).is_some(),
                    "ipv4" => memchr::memchr(b'.', b).is_some(),
                    "ipv6" => memchr::memchr(b':', b).is_some(),
                    "mac" => memchr::memchr2(b':', b'-', b).is_some(),
                    "jwt" => memchr::memmem::find(b, b"eyJ").is_some(),
                    "bearer" => memchr::memchr2(b'b', b'B', b).is_some(),
                    _ => true,
                }
        })
    }

    /// Mask an event; `None` when nothing changed.
    pub fn mask_event(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(raw).map_err(|e| format!("event is not UTF-8: {e}"))?;
        // JSON escapes (\u0040 for @) could hide a value from the prefilter
        // that scans the raw text, so events with them are always parsed.
        let escaped = text.contains("\\u");
        let candidate = escaped || (self.may_match(text) && self.prefilter.is_match(text));
        if !candidate {
            return Ok(None);
        }
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| format!("event is not JSON: {e}"))?;
        if !self.mask_object(&mut value, "") {
            return Ok(None);
        }
        serde_json::to_vec(&value)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

impl Plugin for Mask {
    fn init(config: Config) -> Result<Self, String> {
        let c: MaskConfig = config.parse()?;
        let kinds: Vec<String> = match c.detect {
            Some(list) => list,
            None => DEFAULT_DETECTORS.iter().map(|s| s.to_string()).collect(),
        };
        for k in &kinds {
            if !DETECTORS.contains(&k.as_str()) {
                return Err(format!(
                    "detect: unknown detector `{k}` (known: {})",
                    DETECTORS.join(", ")
                ));
            }
        }
        let mut detectors = Vec::new();
        for kind in DETECTORS.iter().filter(|k| kinds.iter().any(|c| c == *k)) {
            detectors.push(Detector {
                kind: kind.to_string(),
                regex: Regex::new(pattern_of(kind)).expect("built-in patterns compile"),
                builtin: true,
            });
        }
        for (i, p) in c.patterns.iter().enumerate() {
            let regex = Regex::new(&p.regex)
                .map_err(|e| format!("patterns[{i}] ({}): invalid regex: {e}", p.name))?;
            detectors.push(Detector {
                kind: p.name.clone(),
                regex,
                builtin: false,
            });
        }
        if detectors.is_empty() {
            return Err(
                "nothing to mask: `detect` is empty and there are no `patterns`".to_string(),
            );
        }
        let alternation = detectors
            .iter()
            .map(|d| format!("(?:{})", d.regex.as_str()))
            .collect::<Vec<_>>()
            .join("|");
        let prefilter = Regex::new(&alternation).map_err(|e| format!("patterns: {e}"))?;
        let replacement = match (c.hash_key, c.text) {
            (Some(_), Some(_)) => return Err("give `text` or `hash_key`, not both".to_string()),
            (Some(k), None) if k.is_empty() => return Err("hash_key is empty".to_string()),
            (Some(k), None) => Replacement::Hash(k.into_bytes()),
            (None, t) => Replacement::Text(t.unwrap_or_else(|| "[{kind}]".to_string())),
        };
        Ok(Mask {
            detectors,
            prefilter,
            replacement,
            skip_fields: c.skip_fields,
            fields: c.fields,
        })
    }

    fn masks(&self) -> bool {
        true
    }

    fn version(&self) -> String {
        concat!("mask ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        match self.mask_event(event.raw()) {
            Ok(Some(bytes)) => Verdict::Replace(bytes),
            Ok(None) => Verdict::Keep,
            // The host only sends JSON objects; if one is not, dropping is
            // safer than forwarding unmasked data.
            Err(e) => {
                sluice_plugin::log(
                    sluice_plugin::LogLevel::Warn,
                    &format!("dropping unparsable event: {e}"),
                );
                Verdict::Drop
            }
        }
    }
}

export_plugin!(Mask);

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(config: &str) -> Mask {
        Mask::init(Config::new(config)).unwrap()
    }

    fn m(text: &str) -> String {
        mask("{}")
            .mask_str(text)
            .unwrap_or_else(|| text.to_string())
    }

    #[test]
    fn emails() {
        assert_eq!(m("mail jane.doe+x@example.co.uk now"), "mail [email] now");
        assert_eq!(m("no email @ here"), "no email @ here");
    }

    #[test]
    fn ipv4_only_when_valid() {
        assert_eq!(m("from 10.0.0.12 ok"), "from [ipv4] ok");
        assert_eq!(m("bad 999.1.1.1"), "bad 999.1.1.1");
        assert_eq!(m("version 1.2.3.4.5"), "version 1.2.3.4.5");
    }

    #[test]
    fn ipv6_without_false_positives() {
        assert_eq!(m("peer 2001:db8::8a2e:370:7334 up"), "peer [ipv6] up");
        assert_eq!(m("peer fe80::1"), "peer [ipv6]");
        assert_eq!(m("at 10:42:07 in std::io"), "at 10:42:07 in std::io");
        // `::` is the unspecified address, but in logs a separator.
        assert_eq!(m("value :: ok"), "value :: ok");
        assert_eq!(m("x :: y :: z"), "x :: y :: z");
        assert_eq!(m("bound to :: port 80"), "bound to :: port 80");
        assert_eq!(m("peer ::1"), "peer [ipv6]");
    }

    #[test]
    fn mac_addresses_only_when_asked() {
        assert_eq!(m("nic 00:1A:2b:3c:4d:5e up"), "nic 00:1A:2b:3c:4d:5e up");
        let mac = mask(r#"{"detect":["mac","ipv6"]}"#);
        let out = |t: &str| mac.mask_str(t).unwrap_or_else(|| t.to_string());
        assert_eq!(out("nic 00:1A:2b:3c:4d:5e up"), "nic [mac] up");
        assert_eq!(out("nic 00-1a-2b-3c-4d-5e"), "nic [mac]");
        assert_eq!(out("mixed 00:1a-2b:3c-4d:5e"), "mixed 00:1a-2b:3c-4d:5e");
        assert_eq!(out("peer fe80::1"), "peer [ipv6]");
    }

    #[test]
    fn cards_need_luhn() {
        assert_eq!(m("card 4111 1111 1111 1111."), "card [card].");
        assert_eq!(m("card 5500-0000-0000-0004"), "card [card]");
        assert_eq!(m("card 4111111111111112"), "card 4111111111111112");
        // Epoch milliseconds are not cards, even when Luhn happens to pass.
        assert_eq!(m("ts 1732358400009"), "ts 1732358400009");
    }

    #[test]
    fn ibans_need_checksum() {
        assert_eq!(m("pay DE89 3704 0044 0532 0130 00 now"), "pay [iban] now");
        assert_eq!(m("pay GB82WEST12345698765432"), "pay [iban]");
        // A wrong checksum is not an IBAN (its digits may still be masked as
        // a card number if they happen to pass Luhn: over-masking is safe).
        assert!(!m("pay DE89 3704 0044 0532 0130 01").contains("[iban]"));
        assert_eq!(
            m("pay GB82WEST12345698765431"),
            "pay GB82WEST12345698765431"
        );
    }

    #[test]
    fn jwts_and_bearer_tokens() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(m(&format!("token={jwt}")), "token=[jwt]");
        assert_eq!(
            m("Authorization: Bearer abcdef0123456789"),
            "Authorization: Bearer [bearer]"
        );
    }

    #[test]
    fn custom_patterns_and_text() {
        let mk = mask(
            r#"{"detect":[],"patterns":[{"name":"order","regex":"ORD-[0-9]{6}"}],"text":"***"}"#,
        );
        assert_eq!(
            mk.mask_str("order ORD-123456 shipped").unwrap(),
            "order *** shipped"
        );
    }

    #[test]
    fn keyed_hash_is_stable_and_keyed() {
        let a = mask(r#"{"hash_key":"k1"}"#);
        let b = mask(r#"{"hash_key":"k2"}"#);
        let x1 = a.mask_str("bob@example.com").unwrap();
        let x2 = a.mask_str("bob@example.com").unwrap();
        let y = b.mask_str("bob@example.com").unwrap();
        assert_eq!(x1, x2);
        assert_ne!(x1, y);
        assert!(
            x1.starts_with("[email:") && x1.len() == "[email:]".len() + 12,
            "{x1}"
        );
        assert_ne!(a.mask_str("alice@example.com").unwrap(), x1);
    }

    #[test]
    fn masks_nested_strings_and_keeps_order() {
        let mk = mask("{}");
        let raw = br#"{"timestamp":"2026-01-01T00:00:00Z","message":"login bob@x.io","data":{"ips":["10.1.2.3"],"n":4111111111111111}}"#;
        let out = String::from_utf8(mk.mask_event(raw).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"timestamp":"2026-01-01T00:00:00Z","message":"login [email]","data":{"ips":["[ipv4]"],"n":4111111111111111}}"#
        );
    }

    #[test]
    fn fields_and_skip_fields() {
        let mk = mask(r#"{"fields":["data.note"],"skip_fields":[]}"#);
        let raw = br#"{"message":"a@b.io","data":{"note":"c@d.io","other":"e@f.io"}}"#;
        let out = String::from_utf8(mk.mask_event(raw).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"message":"a@b.io","data":{"note":"[email]","other":"e@f.io"}}"#
        );
        let mk = mask(r#"{"skip_fields":["data.other"]}"#);
        let out = String::from_utf8(mk.mask_event(raw).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"message":"[email]","data":{"note":"[email]","other":"e@f.io"}}"#
        );
    }

    #[test]
    fn escaped_values_are_found() {
        let mk = mask("{}");
        let raw = br#"{"message":"bob\u0040example.com"}"#;
        let out = String::from_utf8(mk.mask_event(raw).unwrap().unwrap()).unwrap();
        assert_eq!(out, r#"{"message":"[email]"}"#);
    }

    #[test]
    fn clean_events_are_untouched() {
        assert_eq!(
            mask("{}")
                .mask_event(br#"{"message":"all good","level":"info"}"#)
                .unwrap(),
            None
        );
    }

    #[test]
    fn config_errors() {
        let e = Mask::init(Config::new(r#"{"detect":["phone"]}"#)).unwrap_err();
        assert!(e.contains("unknown detector `phone`"), "{e}");
        let e = Mask::init(Config::new(r#"{"patterns":[{"name":"x","regex":"("}]}"#)).unwrap_err();
        assert!(e.contains("patterns[0] (x): invalid regex"), "{e}");
        let e = Mask::init(Config::new(r#"{"text":"x","hash_key":"y"}"#)).unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }
}
