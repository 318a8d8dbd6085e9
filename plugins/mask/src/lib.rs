//! `mask`: redact personal data and secrets in every string of an event.
//!
//! ```toml
//! [transforms.mask.config]
//! detect = ["email", "ipv4", "ipv6", "card", "iban", "jwt", "bearer"]  # the default; "mac" is optional
//! text = "[{kind}]"           # fixed replacement; `{kind}` names the detector
//! # hash_key = "s3cret"       # instead: a keyed hash, so equal values stay correlatable
//! skip_fields = ["timestamp"] # dotted paths left alone (default: timestamp and the
//!                             # trace context: trace_id, span_id, parent_span_id)
//! # fields = ["message"]      # only these paths (default: every string field, nested too)
//! patterns = [{ name = "order", regex = "ORD-[0-9]{6}" }]
//! ```
//!
//! Card numbers are masked only when they pass the Luhn check and start like
//! a card (2-6), with spaces or dashes allowed between digits; IBANs only
//! when their mod-97 checksum holds; IP addresses only when they parse.

mod bytes;
mod checks;
mod config;
mod rewrite;

pub use self::config::{DEFAULT_DETECTORS, DETECTORS};
use self::{bytes::*, checks::*, config::*, rewrite::*};

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, Mac};
use regex::{Captures, Regex};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

thread_local! {
    /// The byte classes of the text being checked ([`kinds`]), kept from
    /// one text to the next so that checking one allocates nothing.
    static CLASSES: RefCell<Vec<[u8; 16]>> = const { RefCell::new(Vec::new()) };
}

/// Redacts sensitive values.
#[derive(Debug)]
pub struct Mask {
    detectors: Vec<Detector>,
    /// The trigger bits of the built-in detectors in use.
    wanted: u16,
    /// Custom patterns exist (always tried).
    custom: bool,
    /// The replacements can never make a match (see [`inert`]).
    inert: bool,
    replacement: Replacement,
    skip_fields: Vec<String>,
    /// `{"name":"` for each top-level name of `skip_fields`: how an event
    /// that opens with one begins.
    skip_openings: Vec<Vec<u8>>,
    fields: Vec<String>,
    /// No `fields`, and no dotted `skip_fields`: every path not skipped is
    /// masked whole.
    flat: bool,
}

impl Mask {
    fn replacement_for(&self, kind: &str, value: &str) -> String {
        match &self.replacement {
            Replacement::Text(t) if !t.contains('{') => t.clone(),
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
        self.mask_str_in(input, self.wanted)
    }

    /// The built-in detectors of `wanted` that could match in `input`
    /// ([`triggers`]); with custom patterns, never 0 (they are always tried).
    fn hits(&self, input: &[u8], wanted: u16) -> u16 {
        let hits = match wanted {
            0 => 0,
            // The common case of an event that holds an email and nothing
            // else: its strings with an `@` are looked at closer.
            T_EMAIL => match memchr::memchr(b'@', input) {
                Some(_) => T_EMAIL,
                None => 0,
            },
            w => triggers(input, w),
        };
        match self.custom {
            true => hits | CUSTOM,
            false => hits,
        }
    }

    /// Mask `input`, whose [`Self::hits`] are `hits`, appending the masked
    /// text to `out`: `false` (and `out` left alone) when nothing in it is
    /// sensitive. One built-in detector whose replacement cannot make a
    /// match writes straight into `out`.
    fn mask_hits_into(&self, input: &str, hits: u16, out: &mut Vec<u8>) -> bool {
        if self.inert && hits.count_ones() == 1 && hits & CUSTOM == 0 {
            if let Some(d) = self
                .detectors
                .iter()
                .find(|d| d.builtin && d.trigger == hits)
            {
                return self.apply_into(d, input, out);
            }
        }
        match self.mask_str_with(input, Some(hits & !CUSTOM)) {
            Some(masked) => {
                out.extend_from_slice(masked.as_bytes());
                true
            }
            None => false,
        }
    }

    /// [`Self::mask_str`] with only the built-in detectors of `wanted`
    /// looked for: those the event's bytes hold what they need for.
    fn mask_str_in(&self, input: &str, wanted: u16) -> Option<String> {
        self.mask_str_with(input, Some(self.hits(input.as_bytes(), wanted) & !CUSTOM))
    }

    /// [`Self::mask_str_in`], given the text's [`Self::hits`] (without the
    /// custom bit); without them, every detector's regex runs (the
    /// reference the tests compare the triggers against).
    fn mask_str_with(&self, input: &str, hits: Option<u16>) -> Option<String> {
        let mut current: Cow<'_, str> = Cow::Borrowed(input);
        let use_triggers = hits.is_some();
        let mut hits = hits.unwrap_or(u16::MAX);
        if hits == 0 && !self.custom {
            return None;
        }
        for d in &self.detectors {
            if d.builtin && hits & d.trigger == 0 {
                continue;
            }
            let replaced = self.apply(d, &current);
            if let Cow::Owned(s) = replaced {
                current = Cow::Owned(s);
                // A replacement can make what later detectors see, unless
                // it is closed off at both ends and holds nothing they need.
                if use_triggers && !self.inert {
                    hits |= triggers(current.as_bytes(), self.wanted);
                }
            }
        }
        match current {
            Cow::Owned(s) => Some(s),
            Cow::Borrowed(_) => None,
        }
    }

    /// Whether a built-in detector's match at `start..end` of `bytes` is
    /// one (the checks a regex cannot make).
    fn accept(d: &Detector, bytes: &[u8], start: usize, end: usize) -> bool {
        if !d.builtin {
            return true;
        }
        let s = std::str::from_utf8(&bytes[start..end]).unwrap_or_default();
        match d.kind.as_str() {
            "card" => is_card(s),
            "iban" => is_iban(s),
            "ipv4" => {
                // Not part of a longer dotted run such as a version 1.2.3.4.5.
                let next_dot_digit = bytes.get(end) == Some(&b'.')
                    && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
                let prev_dot = start > 0 && bytes[start - 1] == b'.';
                !next_dot_digit && !prev_dot && s.parse::<Ipv4Addr>().is_ok()
            }
            "ipv6" => {
                let before_ok = start == 0 || !is_word_byte(bytes[start - 1]);
                let after_ok = end == bytes.len() || !is_word_byte(bytes[end]);
                // A bare `::` parses (the unspecified address) but in
                // logs it is a separator: an address has a hex digit.
                let has_digit = s.bytes().any(|b| b.is_ascii_hexdigit());
                before_ok && after_ok && has_digit && s.parse::<Ipv6Addr>().is_ok()
            }
            "mac" => {
                // One separator throughout: `00:1a:..` or `00-1a-..`.
                let sep = bytes[start + 2];
                s.bytes().skip(2).step_by(3).all(|b| b == sep)
                    && !bytes.get(end).is_some_and(|&b| b == b':' || b == b'-')
            }
            _ => true,
        }
    }

    fn apply<'t>(&self, d: &Detector, text: &'t str) -> Cow<'t, str> {
        if d.builtin && d.kind == "bearer" {
            return self.apply_bearer(d, text);
        }
        let mut out = Vec::new();
        match self.apply_into(d, text, &mut out) {
            // Pieces of a `str` around replacements that are `String`s.
            true => Cow::Owned(String::from_utf8(out).expect("UTF-8 pieces")),
            false => Cow::Borrowed(text),
        }
    }

    /// Bearer tokens keep their scheme, so readers know what was there: the
    /// one detector that needs its groups.
    fn apply_bearer<'t>(&self, d: &Detector, text: &'t str) -> Cow<'t, str> {
        let mut changed = false;
        let out = d.regex.replace_all(text, |caps: &Captures<'_>| {
            changed = true;
            let s = caps.get(0).expect("group 0 always matches").as_str();
            let token = caps.get(2).map_or(s, |t| t.as_str());
            format!("{}{}", &caps[1], self.replacement_for(&d.kind, token))
        });
        match changed {
            true => Cow::Owned(out.into_owned()),
            false => Cow::Borrowed(text),
        }
    }

    /// [`Self::apply`], appending the masked text to `out` when there is
    /// something to mask (`out` is left alone otherwise).
    fn apply_into(&self, d: &Detector, text: &str, out: &mut Vec<u8>) -> bool {
        if d.builtin && d.kind == "bearer" {
            return match self.apply_bearer(d, text) {
                Cow::Owned(masked) => {
                    out.extend_from_slice(masked.as_bytes());
                    true
                }
                Cow::Borrowed(_) => false,
            };
        }
        let bytes = text.as_bytes();
        // Matches only, no groups: the regex crate's fast engines, or for
        // emails (the common case) a scan that finds what the regex would.
        let mut last = 0;
        let mut changed = false;
        let mut email_from = 0;
        // The regex's matches are not asked for (nor its cache taken from
        // the pool) when the scan finds them.
        let mut regex_matches = match d.builtin && d.kind == "email" {
            true => None,
            false => Some(d.regex.find_iter(text)),
        };
        loop {
            let (start, end) = match &mut regex_matches {
                None => match find_email(bytes, email_from) {
                    Some(m) => {
                        email_from = m.1;
                        m
                    }
                    None => break,
                },
                Some(matches) => match matches.next() {
                    Some(m) => (m.start(), m.end()),
                    None => break,
                },
            };
            if !Self::accept(d, bytes, start, end) {
                continue;
            }
            if !changed {
                out.reserve(text.len() + 16);
            }
            out.extend_from_slice(&bytes[last..start]);
            match &d.fixed {
                Some(fixed) => out.extend_from_slice(fixed.as_bytes()),
                None => out
                    .extend_from_slice(self.replacement_for(&d.kind, &text[start..end]).as_bytes()),
            }
            last = end;
            changed = true;
        }
        if changed {
            out.extend_from_slice(&bytes[last..]);
        }
        changed
    }

    fn mask_value_with(&self, value: &mut Value, t: bool) -> bool {
        match value {
            Value::String(s) => {
                let masked = match t {
                    true => self.mask_str_in(s, self.wanted),
                    false => self.mask_str_with(s, None),
                };
                match masked {
                    Some(masked) => {
                        *s = masked;
                        true
                    }
                    None => false,
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .fold(false, |acc, v| self.mask_value_with(v, t) | acc),
            Value::Object(map) => map
                .values_mut()
                .fold(false, |acc, v| self.mask_value_with(v, t) | acc),
            _ => false,
        }
    }

    fn mask_object(&self, value: &mut Value, prefix: &str) -> bool {
        self.mask_object_with(value, prefix, true)
    }

    fn mask_object_with(&self, value: &mut Value, prefix: &str, t: bool) -> bool {
        let Value::Object(map) = value else {
            return self.mask_value_with(value, t);
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
                self.mask_value_with(v, t)
            } else if selected || is_ancestor {
                self.mask_object_with(v, &path, t)
            } else {
                false
            };
        }
        changed
    }

    /// Mask an event; `None` when nothing changed. The event is scanned in
    /// place: the strings that could hold something are masked and spliced
    /// into the raw bytes (re-escaped), everything else (numbers, spacing,
    /// key order, other strings' escapes) stays as it was.
    pub fn mask_event(&self, raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut out = Vec::new();
        Ok(self.mask_event_into(raw, &mut out)?.then_some(out))
    }

    /// [`Self::mask_event`], appending the masked event to `out`: `true`
    /// when something changed, and `out` is left as it was otherwise.
    pub fn mask_event_into(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        // The detectors whose trigger the event's bytes hold: no string in
        // it can trigger another.
        let wanted = match self.custom {
            true => self.wanted,
            false => self.may_match(raw),
        };
        if !self.custom && wanted == 0 {
            // Nothing any detector needs is in its bytes, whatever they are
            // (the host only sends JSON objects, valid UTF-8).
            return Ok(false);
        }
        let base = out.len();
        let mut scan = Scan {
            b: raw,
            i: 0,
            out: &mut *out,
            copied: 0,
            wanted,
        };
        if scan.value(self, Mode::Paths, "").is_ok() && scan.rest_is_blank() {
            if scan.copied == 0 {
                return Ok(false);
            }
            scan.finish();
            return Ok(true);
        }
        out.truncate(base);
        // Not JSON as this scanner reads it: serde says why (or masks it).
        let text = std::str::from_utf8(raw).map_err(|e| format!("event is not UTF-8: {e}"))?;
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| format!("event is not JSON: {e}"))?;
        if !self.mask_object(&mut value, "") {
            return Ok(false);
        }
        serde_json::to_writer(&mut *out, &value).map_err(|e| {
            out.truncate(base);
            e.to_string()
        })?;
        Ok(true)
    }

    /// The built-in detectors that could match in the raw event: [`triggers`]
    /// over its bytes, which hold every string's (0: none could). An
    /// escape (`\u0040` for `@`) could hide a value from a check of the raw
    /// bytes: then every wanted detector is, and each string is decoded and
    /// checked. A skipped field that opens the event (`{"timestamp":"...",`
    /// as sources write it) is left out first: its colons and digits would
    /// pass the IPv6 and card checks of nearly every event.
    fn may_match(&self, raw: &[u8]) -> u16 {
        let mut rest = raw;
        if let Some(prefix) = self.skip_openings.iter().find(|p| raw.starts_with(p)) {
            let value = &raw[prefix.len()..];
            match memchr::memchr2(b'"', b'\\', value) {
                Some(end) if value[end] == b'"' => rest = &value[end + 1..],
                // An escape in it may hide its real end.
                _ => return self.wanted,
            }
        }
        match scan_triggers(rest, self.wanted, false) {
            (_, true) => self.wanted,
            (found, false) => found,
        }
    }

    /// What to do with the value at `path` inside an object whose keys are
    /// checked (the rules of [`Self::mask_object`]).
    fn mode_of(&self, path: &str) -> Mode {
        if self.skip_fields.iter().any(|s| s == path) {
            return Mode::Skip;
        }
        if self.flat {
            // Nothing selected or skipped below any path.
            return Mode::All;
        }
        let below = |list: &[String]| {
            list.iter().any(|f| {
                f.len() > path.len() && f.as_bytes()[path.len()] == b'.' && f.starts_with(path)
            })
        };
        let selected = self.fields.is_empty() || self.fields.iter().any(|f| f == path);
        if selected && !below(&self.skip_fields) {
            Mode::All
        } else if selected || below(&self.fields) {
            Mode::Paths
        } else {
            Mode::Skip
        }
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
                trigger: trigger_of(kind),
                fixed: None,
            });
        }
        for (i, p) in c.patterns.iter().enumerate() {
            let regex = Regex::new(&p.regex)
                .map_err(|e| format!("patterns[{i}] ({}): invalid regex: {e}", p.name))?;
            detectors.push(Detector {
                kind: p.name.clone(),
                regex,
                builtin: false,
                trigger: 0,
                fixed: None,
            });
        }
        if detectors.is_empty() {
            return Err(
                "nothing to mask: `detect` is empty and there are no `patterns`".to_string(),
            );
        }
        let wanted = detectors.iter().fold(0, |acc, d| acc | d.trigger);
        let custom = detectors.iter().any(|d| !d.builtin);
        let replacement = match (c.hash_key, c.text) {
            (Some(_), Some(_)) => return Err("give `text` or `hash_key`, not both".to_string()),
            (Some(k), None) if k.is_empty() => return Err("hash_key is empty".to_string()),
            (Some(k), None) => Replacement::Hash(k.into_bytes()),
            (None, t) => Replacement::Text(t.unwrap_or_else(|| "[{kind}]".to_string())),
        };
        if let Replacement::Text(t) = &replacement {
            for d in &mut detectors {
                d.fixed = Some(t.replace("{kind}", &d.kind));
            }
        }
        let inert = match &replacement {
            Replacement::Text(t) => DETECTORS
                .iter()
                .all(|k| inert(&t.replace("{kind}", k), wanted)),
            Replacement::Hash(_) => false,
        };
        Ok(Mask {
            detectors,
            wanted,
            custom,
            inert,
            replacement,
            skip_openings: c
                .skip_fields
                .iter()
                .filter(|f| !f.contains('.'))
                .map(|f| {
                    format!("{{{}:\"", serde_json::to_string(f).unwrap_or_default()).into_bytes()
                })
                .collect(),
            flat: c.fields.is_empty() && !c.skip_fields.iter().any(|f| f.contains('.')),
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
        let mut out = Vec::new();
        match self.process_into(event, &mut out) {
            Verdict::Written => Verdict::Replace(out),
            other => other,
        }
    }

    /// The masked event goes straight into the batch's buffer.
    fn process_into(&self, event: &Event<'_>, out: &mut Vec<u8>) -> Verdict {
        match self.mask_event_into(event.raw(), out) {
            Ok(true) => Verdict::Written,
            Ok(false) => Verdict::Keep,
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

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::config::MaskConfig>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

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
    fn trace_context_is_left_alone_by_default() {
        // A span id of decimal digits that passes Luhn, as an OTLP source
        // can give one at random.
        let raw = br#"{"message":"card 6010171487372744","trace_id":"7e544bc37f6afabc9e2a267f05f6181a","span_id":"6010171487372744","parent_span_id":"6010171487372744"}"#;
        let out = String::from_utf8(mask("{}").mask_event(raw).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"message":"card [card]","trace_id":"7e544bc37f6afabc9e2a267f05f6181a","span_id":"6010171487372744","parent_span_id":"6010171487372744"}"#
        );
        let out = mask(r#"{"skip_fields":[]}"#)
            .mask_event(raw)
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(r#""span_id":"[card]""#));
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

    /// The reference: every detector's regex over every string of the
    /// parsed event, no trigger, no raw scan.
    fn reference(mk: &Mask, raw: &str) -> Value {
        let mut v: Value = serde_json::from_str(raw).unwrap();
        mk.mask_object_with(&mut v, "", false);
        v
    }

    /// Deterministic pseudo-random numbers (no dependency for a test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    const PIECES: [&str; 51] = [
        "x@y.c1",
        "a@b.com.",
        "a@b..com",
        "a-b@c-d.e-f.gh",
        "@example.com",
        "a@.com",
        "a@b.c",
        "1@2.34",
        "a@b.co1m",
        "A@B.CO",
        "x.y@z.ab.c1.de2",
        "jane.doe+x@example.co.uk",
        "bob@x.io",
        "a@b",
        "user @ host",
        "10.0.0.12",
        "999.1.1.1",
        "1.2.3.4.5",
        "192.168.001.1",
        "2001:db8::8a2e:370:7334",
        "fe80::1",
        "::",
        "::1",
        "std::io::Error",
        "10:42:07",
        "2026-11-23T10:00:00.000Z",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "4111111111111112",
        "1732358400009",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "GB82WEST12345698765431",
        "Bearer abcdef0123456789",
        "bearer\\u00a0abcdefgh12345678",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
        "00:1A:2b:3c:4d:5e",
        "00-1a-2b-3c-4d-5e",
        "123e4567-e89b-12d3-a456-426614174000",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "v2.10.3",
        "12.5ms",
        "café",
        "naïve@exämple.com",
        "ORD-123456",
        "x",
        "-",
        "  ",
        "\\\"quoted\\\"",
        "a\\b",
        "1e5",
    ];

    fn corpus_event(rng: &mut Lcg) -> String {
        let mut text = String::new();
        for _ in 0..1 + rng.next(6) {
            text.push_str(PIECES[rng.next(PIECES.len())]);
            text.push_str([" ", ",", ":", "-", ".", "@", "/", "", "\\n"][rng.next(9)]);
        }
        let n = rng.next(4);
        match n {
            0 => format!(r#"{{"message":"{text}"}}"#),
            1 => format!(r#"{{"timestamp":"{text}","message":"{text}","n":12}}"#),
            2 => format!(
                r#"{{"data":{{"note":"{text}","list":["{text}",1,true,null]}}, "msg" : "{text}"}}"#
            ),
            _ => format!(r#"{{"a\u0062c":"{text}","deep":{{"x":{{"y":"{text}"}}}}}}"#),
        }
    }

    #[test]
    fn the_raw_scan_and_triggers_mask_exactly_what_every_regex_would() {
        let configs = [
            "{}",
            EVERY_DETECTOR,
            r#"{"detect":["email"]}"#,
            r#"{"fields":["data.note","msg"],"skip_fields":[]}"#,
            r#"{"skip_fields":["data.list","timestamp"],"text":"<{kind} \"x\">"}"#,
            r#"{"patterns":[{"name":"order","regex":"ORD-[0-9]{6}"}]}"#,
        ];
        let mut rng = Lcg(7);
        for config in configs {
            let mk = mask(config);
            for _ in 0..6000 {
                let raw = corpus_event(&mut rng);
                serde_json::from_str::<Value>(&raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
                let want = reference(&mk, &raw);
                let got = match mk.mask_event(raw.as_bytes()).unwrap() {
                    Some(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap(),
                    None => serde_json::from_str(&raw).unwrap(),
                };
                assert_eq!(got, want, "config {config}, event {raw}");
            }
        }
    }

    /// The host sends UTF-8, and only strings with something to mask are
    /// checked: one that is not is refused (the event is dropped, never
    /// forwarded unmasked).
    #[test]
    fn a_string_to_mask_that_is_not_utf8_is_refused() {
        let mk = mask("{}");
        let err = mk.mask_event(b"{\"m\":\"mail a@b.io \xff\"}").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    const EVERY_DETECTOR: &str =
        r#"{"detect":["email","ipv4","ipv6","card","iban","jwt","bearer","mac"]}"#;

    /// The trigger checks work on 16-byte classes and 64-bit words of
    /// positions: every kind is found wherever it sits around their edges,
    /// and 12 digits are not a card wherever they sit.
    #[test]
    fn every_kind_is_found_at_every_offset() {
        let mk = mask(EVERY_DETECTOR);
        let cases = [
            ("jane.doe@example.com", "email"),
            ("10.0.0.12", "ipv4"),
            ("2001:db8::8a2e:370:7334", "ipv6"),
            ("4111 1111 1111 1111", "card"),
            ("5500-0000-0000-0004", "card"),
            ("378282246310005", "card"),
            ("4222222222222", "card"),
            ("GB82WEST12345698765432", "iban"),
            ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "jwt"),
            ("Bearer abcdefgh12345678", "bearer"),
            ("00:1a:2b:3c:4d:5e", "mac"),
        ];
        for (piece, kind) in cases {
            for pad in 0..140 {
                let text = format!(
                    "{}{piece} {}",
                    "x ".repeat(pad / 2) + &" ".repeat(pad % 2),
                    "z".repeat(pad)
                );
                let out = mk.mask_str(&text).unwrap_or_default();
                assert!(
                    out.contains(&format!("[{kind}]")),
                    "{kind} at {pad}: {text} -> {out}"
                );
                let event = format!(r#"{{"message":"{text}"}}"#);
                let masked = mk.mask_event(event.as_bytes()).unwrap().unwrap_or_default();
                let masked = String::from_utf8(masked).unwrap();
                assert!(
                    masked.contains(&format!("[{kind}]")),
                    "{kind} at {pad}: {event} -> {masked}"
                );
            }
        }
        for pad in 0..140 {
            let text = format!("{}4111 1111 1111 {}", "x".repeat(pad), "y".repeat(pad));
            assert_eq!(mk.mask_str(&text), None, "{text}");
        }
    }

    #[test]
    fn a_labelled_corpus_keeps_recall_without_false_positives() {
        let mk = mask(EVERY_DETECTOR);
        // (text, the kind it holds)
        let positives = [
            ("mail jane.doe+x@example.co.uk now", "email"),
            ("from ops-team@mail.example.org", "email"),
            ("client 203.0.113.9 connected", "ipv4"),
            ("gw 10.0.0.1", "ipv4"),
            ("peer 2001:db8::8a2e:370:7334 up", "ipv6"),
            ("peer fe80::1%eth0 and ::1", "ipv6"),
            ("card 4111 1111 1111 1111.", "card"),
            ("card 5500-0000-0000-0004", "card"),
            ("amex 378282246310005", "card"),
            ("pay DE89 3704 0044 0532 0130 00 now", "iban"),
            ("pay GB82WEST12345698765432", "iban"),
            (
                "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N",
                "jwt",
            ),
            ("Authorization: Bearer abcdef0123456789", "bearer"),
            ("nic 00:1A:2b:3c:4d:5e up", "mac"),
        ];
        // Look-alikes: none of these may change.
        let negatives = [
            "request 123e4567-e89b-12d3-a456-426614174000 done",
            "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
            "version 1.2.3.4.5 and v2.10.3",
            "at 2026-11-23T10:00:00.000Z in 12.5ms",
            "took 10:42:07 wall, 0.25s cpu",
            "error in std::io::Error::new and core::fmt",
            "value :: ok, x :: y",
            "ts 1732358400009 id 4111111111111112",
            "iban-ish GB82WEST12345698765431",
            "no email @ here, a@b",
            "bad 999.1.1.1",
            "mixed 00:1a-2b:3c-4d:5e",
            "bearer of bad news",
        ];
        let mut found = 0;
        for (text, kind) in positives {
            let out = mk.mask_str(text).unwrap_or_default();
            if out.contains(&format!("[{kind}]")) {
                found += 1;
            } else {
                eprintln!("missed {kind}: {text} -> {out}");
            }
        }
        let recall = found as f64 / positives.len() as f64;
        let false_positives = negatives
            .iter()
            .filter(|t| mk.mask_str(t).is_some())
            .count();
        let fp_rate = false_positives as f64 / negatives.len() as f64;
        assert_eq!(recall, 1.0, "recall");
        assert_eq!(
            fp_rate,
            0.0,
            "false positives: {:?}",
            negatives
                .iter()
                .filter(|t| mk.mask_str(t).is_some())
                .map(|t| (t, mk.mask_str(t)))
                .collect::<Vec<_>>()
        );
    }
}
