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

use std::borrow::Cow;
use std::cell::RefCell;
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

/// The time and the trace context: trace and span ids are random hex, and a
/// span id of sixteen decimal digits can pass the Luhn check of a card.
fn default_skip() -> Vec<String> {
    ["timestamp", "trace_id", "span_id", "parent_span_id"]
        .map(String::from)
        .to_vec()
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
    /// The bit of [`triggers`] without which this built-in detector cannot
    /// match (0 for custom patterns: always tried).
    trigger: u16,
    /// Its replacement when it is a fixed text (`[email]`), made once.
    fixed: Option<String>,
}

/// Bits of [`triggers`]: which built-in detectors could match a text.
const T_EMAIL: u16 = 1;
const T_IPV4: u16 = 2;
const T_IPV6: u16 = 4;
const T_CARD: u16 = 8;
const T_IBAN: u16 = 16;
const T_JWT: u16 = 32;
const T_BEARER: u16 = 64;
const T_MAC: u16 = 128;
/// Not a trigger: custom patterns are in use (always tried).
const CUSTOM: u16 = 0x8000;

fn trigger_of(kind: &str) -> u16 {
    match kind {
        "email" => T_EMAIL,
        "ipv4" => T_IPV4,
        "ipv6" => T_IPV6,
        "card" => T_CARD,
        "iban" => T_IBAN,
        "jwt" => T_JWT,
        "bearer" => T_BEARER,
        "mac" => T_MAC,
        _ => 0,
    }
}

/// Bits of [`SEEN`]: the kinds of bytes [`triggers`] looks for.
/// All but capitals fit a byte, digits its top bit: the wasm SIMD
/// [`kinds`] computes them as one byte per input byte.
const S_COLON: u16 = 0x01;
const S_DASH: u16 = 0x02;
const S_DOT: u16 = 0x04;
const S_AT: u16 = 0x08;
const S_B: u16 = 0x10; // b or B
const S_J: u16 = 0x20;
const S_ESC: u16 = 0x40; // a backslash: the text holds JSON escapes
const S_DIGIT: u16 = 0x80;
const S_UPPER: u16 = 0x100;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
const SEEN: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_digit() {
            v |= S_DIGIT;
        }
        if c.is_ascii_uppercase() {
            v |= S_UPPER;
        }
        match c {
            b':' => v |= S_COLON,
            b'-' => v |= S_DASH,
            b'.' => v |= S_DOT,
            b'@' => v |= S_AT,
            b'b' | b'B' => v |= S_B,
            _ => {}
        }
        if c == b'J' {
            v |= S_J;
        }
        if c == b'\\' {
            v |= S_ESC;
        }
        t[b] = v;
        b += 1;
    }
    t
};

/// Byte classes of email addresses, for the check at an `@` and for
/// [`find_email`].
const LOCAL: u8 = 1; // the characters of an email's local part
const DOMAIN: u8 = 2; // those of its domain's labels
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_alphanumeric() {
            v |= LOCAL | DOMAIN;
        }
        if matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') {
            v |= LOCAL;
        }
        if c == b'-' {
            v |= DOMAIN;
        }
        t[b] = v;
        b += 1;
    }
    t
};

/// The kinds of bytes `b` holds (the `S_` bits of [`SEEN`]) and how many
/// digits, with each byte's class (the `S_` bits that fit a byte) put in
/// `classes`, 16 bytes to an entry (bytes past the end are of no kind):
/// one table look-up per byte.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn kinds(b: &[u8], classes: &mut Vec<[u8; 16]>) -> (u16, u32) {
    let mut seen = 0u16;
    let mut digits = 0u32;
    classes.clear();
    for chunk in b.chunks(16) {
        let mut out = [0u8; 16];
        for (o, &c) in out.iter_mut().zip(chunk) {
            let k = SEEN[c as usize];
            seen |= k;
            digits += u32::from(k & S_DIGIT != 0);
            *o = k as u8;
        }
        classes.push(out);
    }
    (seen, digits)
}

/// The lanes of a 16-byte entry of [`kinds`]' classes that hold any of
/// `bits`, as a bit mask (bit `i` for byte `i`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn lanes(classes: &[u8; 16], bits: u8) -> u16 {
    classes
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &c)| acc | (u16::from(c & bits != 0) << i))
}

/// [`kinds`] with wasm SIMD, 16 bytes a step: each byte's class is the AND
/// of a table indexed by its low nibble and one indexed by its high nibble
/// (two swizzles), which holds every kind but capitals (a range compare);
/// digits are the class's top bit, so the byte mask counts them. The
/// integration tests hold the plugin built this way to the table above
/// (`mask_in_wasm_says_what_it_says_natively`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn kinds(b: &[u8], classes: &mut Vec<[u8; 16]>) -> (u16, u32) {
    use core::arch::wasm32::*;
    // The nibble tables' output: the `S_` bits that fit a byte.
    const C_DIGIT: u8 = S_DIGIT as u8;
    const C_COLON: u8 = S_COLON as u8;
    const C_DASH: u8 = S_DASH as u8;
    const C_DOT: u8 = S_DOT as u8;
    const C_AT: u8 = S_AT as u8;
    const C_B: u8 = S_B as u8;
    const C_J: u8 = S_J as u8;
    const C_ESC: u8 = S_ESC as u8;
    // By low nibble: digits are 0-9 (high 3), `@` 0 (4), `b`/`B` 2 (4, 6),
    // `:` and `J` A (3, 4), `\` C (5), `-` D (2), `.` E (2).
    const D: u8 = C_DIGIT;
    let lo_table = u8x16(
        D | C_AT,
        D,
        D | C_B,
        D,
        D,
        D,
        D,
        D,
        D,
        D,
        C_COLON | C_J,
        0,
        C_ESC,
        C_DASH,
        C_DOT,
        0,
    );
    let hi_table = u8x16(
        0,
        0,
        C_DASH | C_DOT,
        C_DIGIT | C_COLON,
        C_AT | C_B | C_J,
        C_ESC,
        C_B,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    );
    let (nibble, a, letters) = (u8x16_splat(0x0f), u8x16_splat(b'A'), u8x16_splat(26));
    let (mut class, mut upper) = (u8x16_splat(0), u8x16_splat(0));
    let mut digits = 0u32;
    classes.clear();
    classes.reserve(b.len().div_ceil(16));
    let mut step = |v: v128| {
        let c = v128_and(
            i8x16_swizzle(lo_table, v128_and(v, nibble)),
            i8x16_swizzle(hi_table, u8x16_shr(v, 4)),
        );
        digits += i8x16_bitmask(c).count_ones();
        class = v128_or(class, c);
        upper = v128_or(upper, u8x16_lt(u8x16_sub(v, a), letters));
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 writable bytes.
        unsafe { v128_store(out.as_mut_ptr().cast(), c) };
        classes.push(out);
    };
    let mut blocks = b.chunks_exact(16);
    for block in &mut blocks {
        // SAFETY: `block` is 16 readable bytes; wasm loads need no alignment.
        step(unsafe { v128_load(block.as_ptr().cast()) });
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        // Zero bytes are of no kind.
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        // SAFETY: `last` is 16 bytes.
        step(unsafe { v128_load(last.as_ptr().cast()) });
    }
    let mut all = [0u8; 16];
    // SAFETY: `all` is 16 writable bytes.
    unsafe { v128_store(all.as_mut_ptr().cast(), class) };
    let class = all.iter().fold(0u8, |acc, &c| acc | c);
    let upper = if v128_any_true(upper) { S_UPPER } else { 0 };
    (u16::from(class) | upper, digits)
}

/// [`lanes`] with wasm SIMD: a compare and a byte mask.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn lanes(classes: &[u8; 16], bits: u8) -> u16 {
    use core::arch::wasm32::*;
    // SAFETY: `classes` is 16 readable bytes.
    let c = unsafe { v128_load(classes.as_ptr().cast()) };
    let hit = v128_and(c, u8x16_splat(bits));
    i8x16_bitmask(i8x16_ne(hit, u8x16_splat(0)))
}

/// Whether `f` holds at the position of a byte whose class holds any of
/// `bits`, trying them in order.
fn any_at(classes: &[[u8; 16]], bits: u8, mut f: impl FnMut(usize) -> bool) -> bool {
    for (j, c) in classes.iter().enumerate() {
        let mut m = lanes(c, bits);
        while m != 0 {
            if f(16 * j + m.trailing_zeros() as usize) {
                return true;
            }
            m &= m - 1;
        }
    }
    false
}

/// Bit `i` set when byte `64 w + i` is a digit (none past the end).
fn digit_word(classes: &[[u8; 16]], w: usize) -> u64 {
    classes
        .iter()
        .skip(4 * w)
        .take(4)
        .enumerate()
        .fold(0, |acc, (k, c)| {
            acc | u64::from(lanes(c, S_DIGIT as u8)) << (16 * k)
        })
}

/// Whether 13 digits are at most one byte apart somewhere (what a card
/// number needs): a run of 13 once single gaps between digits are filled,
/// found 64 bytes a step.
fn card_shape(classes: &[[u8; 16]]) -> bool {
    let words = classes.len().div_ceil(4);
    let (mut prev, mut cur) = (0u64, digit_word(classes, 0));
    // The length of the run that reaches the end of the previous word.
    let mut run = 0u32;
    for w in 0..words {
        let next = digit_word(classes, w + 1);
        let before = (cur << 1) | (prev >> 63);
        let after = (cur >> 1) | (next << 63);
        let f = cur | (before & after);
        run += f.trailing_ones();
        if run >= 13 {
            return true;
        }
        // Runs of 13 inside the word: bits that start runs of 2, 4, 8, 13.
        let mut x = f & (f >> 1);
        x &= x >> 2;
        x &= x >> 4;
        x &= x >> 5;
        if x != 0 {
            return true;
        }
        run = f.leading_ones();
        (prev, cur) = (cur, next);
    }
    false
}

/// Whether a replacement can never take part in a match: it begins and
/// ends with a byte no detector's pattern holds (`[`, `]`, `*`, ...), so no
/// match runs into it, and nothing inside it triggers a detector.
fn inert(replacement: &str, wanted: u16) -> bool {
    let closed = |c: u8| {
        !(c.is_ascii_alphanumeric()
            || c.is_ascii_whitespace()
            || c >= 0x80
            || b"._%+-:@~/=".contains(&c))
    };
    let b = replacement.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => closed(f) && closed(l) && triggers(b, wanted) == 0,
        _ => false,
    }
}

/// Which built-in detectors could match somewhere in `b`: for each, a
/// condition every match needs (an `@` between an address's characters,
/// three dots between digits in one run of digits and dots, 13 digits
/// apart by at most one space or dash, two capitals before two digits,
/// `eyJ`, `bearer` and a space, two colons with only hex digits and dots
/// between, five separators between hex pairs). A detector whose bit is
/// unset is skipped: no regex runs over texts that cannot hold its kind.
fn triggers(b: &[u8], wanted: u16) -> u16 {
    scan_triggers(b, wanted, false).0
}

thread_local! {
    /// The byte classes of the text being checked ([`kinds`]), kept from
    /// one text to the next so that checking one allocates nothing.
    static CLASSES: RefCell<Vec<[u8; 16]>> = const { RefCell::new(Vec::new()) };
}

/// [`triggers`], and whether `b` holds a backslash (a JSON escape). With
/// `any`, it stops at the first kind found (all the gate needs to know).
fn scan_triggers(b: &[u8], wanted: u16, any: bool) -> (u16, bool) {
    CLASSES.with_borrow_mut(|classes| scan_classes(b, wanted, any, classes))
}

fn scan_classes(b: &[u8], wanted: u16, any: bool, classes: &mut Vec<[u8; 16]>) -> (u16, bool) {
    // Which kinds of bytes the text holds, how many digits, and where
    // ([`kinds`]). Most texts lack what every kind needs; only a kind
    // whose bytes are all there is looked at closer, at the positions of
    // its rarest byte.
    let (seen, digits) = kinds(b, classes);
    let escaped = seen & S_ESC != 0;
    if b.len() < 3 {
        // The shortest match of any kind (`::1`) has three bytes.
        return (0, escaped);
    }
    let has = |bits: u16| seen & bits == bits;
    let c = &classes[..];
    let digit = |p: usize| b.get(p).is_some_and(u8::is_ascii_digit);
    let mut found = 0u16;
    macro_rules! hit {
        ($t:expr) => {{
            found |= $t;
            if any {
                return (found, escaped);
            }
        }};
    }
    if wanted & T_EMAIL != 0
        && has(S_AT)
        && any_at(c, S_AT as u8, |p| {
            p > 0
                && CLASS[b[p - 1] as usize] & LOCAL != 0
                && b.get(p + 1)
                    .is_some_and(|&c| CLASS[c as usize] & DOMAIN != 0)
        })
    {
        hit!(T_EMAIL);
    }
    if wanted & T_JWT != 0 && has(S_J) && any_at(c, S_J as u8, |p| p >= 2 && &b[p - 2..p] == b"ey")
    {
        hit!(T_JWT);
    }
    if wanted & T_BEARER != 0
        && has(S_B)
        && any_at(c, S_B as u8, |p| {
            // `\s` in the pattern is any Unicode space: a non-ASCII byte
            // after the word may start one.
            b.len() >= p + 7
                && b[p..p + 6].eq_ignore_ascii_case(b"bearer")
                && (b[p + 6].is_ascii_whitespace() || b[p + 6] >= 0x80)
        })
    {
        hit!(T_BEARER);
    }
    // An address has three dots between digits.
    if wanted & T_IPV4 != 0
        && has(S_DOT)
        && digits >= 4
        && {
            let mut between = 0;
            any_at(c, S_DOT as u8, |p| {
                between += u32::from(p > 0 && digit(p - 1) && digit(p + 1));
                between == 3
            })
        }
        && ipv4_run(b)
    {
        hit!(T_IPV4);
    }
    if wanted & T_CARD != 0 && digits >= 13 && card_shape(c) && card_run(b) {
        hit!(T_CARD);
    }
    // Two capitals, then two digits.
    if wanted & T_IBAN != 0
        && has(S_UPPER)
        && digits >= 2
        && any_at(c, S_DIGIT as u8, |p| {
            p >= 2 && b[p - 2].is_ascii_uppercase() && b[p - 1].is_ascii_uppercase() && digit(p + 1)
        })
    {
        hit!(T_IBAN);
    }
    // IPv6 and MAC addresses, from their separators, in one walk.
    let seps = wanted & (T_IPV6 | T_MAC);
    if seps != 0 && seen & (S_COLON | S_DASH) != 0 {
        let (v6, mac) = separators(b, seps, c);
        if v6 {
            hit!(T_IPV6);
        }
        if mac {
            hit!(T_MAC);
        }
    }
    (found, escaped)
}

/// Whether the IPv6 shape (two colons with only hex digits and dots
/// between, in a run with a hex digit) and the MAC shape (a separator, two
/// hex digits, a separator) are in `b`, from one walk over the positions of
/// its colons and dashes (from their `classes`).
fn separators(b: &[u8], wanted: u16, classes: &[[u8; 16]]) -> (bool, bool) {
    let (mut v6, mut mac) = (wanted & T_IPV6 == 0, wanted & T_MAC == 0);
    let run = |c: u8| c.is_ascii_hexdigit() || c == b'.';
    any_at(classes, (S_COLON | S_DASH) as u8, |p| {
        if !mac
            && b.len() > p + 3
            && b[p + 1].is_ascii_hexdigit()
            && b[p + 2].is_ascii_hexdigit()
            && matches!(b[p + 3], b':' | b'-')
        {
            mac = true;
        }
        if !v6 && b[p] == b':' {
            let mut i = p + 1;
            while i < b.len() && run(b[i]) {
                i += 1;
            }
            if i < b.len() && b[i] == b':' {
                let mut s = p;
                while s > 0 && (run(b[s - 1]) || b[s - 1] == b':') {
                    s -= 1;
                }
                let mut e = i;
                while e < b.len() && (run(b[e]) || b[e] == b':') {
                    e += 1;
                }
                v6 = b[s..e].iter().any(u8::is_ascii_hexdigit);
            }
        }
        v6 && mac
    });
    (v6 && wanted & T_IPV6 != 0, mac && wanted & T_MAC != 0)
}

/// Three dots inside one run of digits and dots (an IPv4 address's shape).
fn ipv4_run(b: &[u8]) -> bool {
    let (mut dots, mut inside) = (0u32, false);
    let mut prev = 0u8;
    for &c in b {
        if c.is_ascii_digit() {
            inside = true;
        } else if c == b'.' && inside {
            dots += 1;
            if dots >= 3 && prev.is_ascii_digit() {
                return true;
            }
        } else {
            (dots, inside) = (0, false);
        }
        prev = c;
    }
    false
}

/// Thirteen digits, at most one space or dash between two.
fn card_run(b: &[u8]) -> bool {
    let (mut digits, mut sep) = (0u32, false);
    for &c in b {
        if c.is_ascii_digit() {
            digits += 1;
            sep = false;
            if digits >= 13 {
                return true;
            }
        } else if (c == b' ' || c == b'-') && !sep && digits > 0 {
            sep = true;
        } else {
            (digits, sep) = (0, false);
        }
    }
    false
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

/// The next email at or after `from`, exactly where the `email` pattern
/// (`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`,
/// leftmost-first, greedy) would find it, without a regex: for each `@`,
/// the local part is the run of its characters before it (from `from` on);
/// the domain is labels apart by single dots, and the top-level part is the
/// last label that starts with two letters (its leading letters), as the
/// greedy repetition backs off label by label.
fn find_email(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let local = |c: u8| CLASS[c as usize] & LOCAL != 0;
    let label = |c: u8| CLASS[c as usize] & DOMAIN != 0;
    for at in memchr::memchr_iter(b'@', b.get(from..)?).map(|i| i + from) {
        let mut start = at;
        while start > from && local(b[start - 1]) {
            start -= 1;
        }
        if start == at {
            continue;
        }
        // Labels after the `@`, apart by single dots; the top-level part
        // is the last one after the first that starts with two letters.
        let mut i = at + 1;
        let mut first = true;
        let mut top = None;
        loop {
            let s = i;
            while i < b.len() && label(b[i]) {
                i += 1;
            }
            if i == s {
                break;
            }
            if !first {
                let letters = b[s..i]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
                if letters >= 2 {
                    top = Some(s + letters);
                }
            }
            first = false;
            if i < b.len() && b[i] == b'.' {
                i += 1;
            } else {
                break;
            }
        }
        if let Some(end) = top {
            return Some((start, end));
        }
    }
    None
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
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

/// How the scanner treats a value: mask every string in it, check the keys
/// of its objects against `fields` and `skip_fields`, or leave it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Paths,
    Skip,
}

/// A scan of one event's raw JSON, writing the masked event as it goes.
struct Scan<'a, 'o> {
    b: &'a [u8],
    i: usize,
    /// The masked event so far, after what `out` held: the raw bytes up to
    /// `copied`, with the masked strings in place (nothing until the first
    /// one).
    out: &'o mut Vec<u8>,
    copied: usize,
    /// The built-in detectors the event's bytes could trigger.
    wanted: u16,
}

/// The first `"` or `\\` in `b` at or after `from`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn quote_or_escape(b: &[u8], from: usize) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', b.get(from..)?).map(|k| from + k)
}

/// [`quote_or_escape`] with wasm SIMD, 16 bytes a step: most strings end
/// in the first step, with none of a vector search's set-up.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn quote_or_escape(b: &[u8], from: usize) -> Option<usize> {
    use core::arch::wasm32::*;
    let mut j = from;
    while let Some(block) = b.get(j..j + 16) {
        // SAFETY: `block` is 16 readable bytes; wasm loads need no alignment.
        let v = unsafe { v128_load(block.as_ptr().cast()) };
        let hit = v128_or(
            i8x16_eq(v, u8x16_splat(b'"')),
            i8x16_eq(v, u8x16_splat(b'\\')),
        );
        let m = i8x16_bitmask(hit);
        if m != 0 {
            return Some(j + m.trailing_zeros() as usize);
        }
        j += 16;
    }
    let rest = b.get(j..)?;
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|k| j + k)
}

impl Scan<'_, '_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn rest_is_blank(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The content of the string at `i` (after its quote), moving past
    /// it, and whether it holds escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), ()> {
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            let k = quote_or_escape(self.b, j).ok_or(())?;
            if self.b[k] == b'\\' {
                escaped = true;
                j = k + 2;
                continue;
            }
            self.i = k + 1;
            return Ok((start, k, escaped));
        }
    }

    /// The text of a string the scanner found: borrowed, or decoded when
    /// it holds escapes.
    fn text<'b>(
        b: &'b [u8],
        (start, end, escaped): (usize, usize, bool),
    ) -> Result<Cow<'b, str>, ()> {
        if escaped {
            serde_json::from_slice::<String>(b.get(start - 1..=end).ok_or(())?)
                .map(Cow::Owned)
                .map_err(|_| ())
        } else {
            std::str::from_utf8(b.get(start..end).ok_or(())?)
                .map(Cow::Borrowed)
                .map_err(|_| ())
        }
    }

    fn value(&mut self, mask: &Mask, mode: Mode, path: &str) -> Result<(), ()> {
        self.ws();
        match *self.b.get(self.i).ok_or(())? {
            b'"' => {
                let span = self.string()?;
                let (start, end, _) = span;
                if mode != Mode::Skip {
                    // A plain string is looked at in place, and checked to be
                    // UTF-8 only when it holds something to mask.
                    let (text, hits) = match span.2 {
                        true => {
                            let text = Self::text(self.b, span)?;
                            let hits = mask.hits(text.as_bytes(), self.wanted);
                            (text, hits)
                        }
                        false => match mask.hits(&self.b[start..end], self.wanted) {
                            0 => return Ok(()),
                            hits => (Self::text(self.b, span)?, hits),
                        },
                    };
                    if hits == 0 {
                        return Ok(());
                    }
                    let mark = self.out.len();
                    if self.copied == 0 {
                        self.out.reserve(self.b.len() + 32);
                    }
                    self.out.extend_from_slice(&self.b[self.copied..start]);
                    let masked = self.out.len();
                    if !mask.mask_hits_into(&text, hits, self.out) {
                        self.out.truncate(mark);
                        return Ok(());
                    }
                    // The replacement may hold what JSON must escape.
                    if self.out[masked..]
                        .iter()
                        .any(|&c| c == b'"' || c == b'\\' || c < 0x20)
                    {
                        let text = String::from_utf8(self.out.split_off(masked)).map_err(|_| ())?;
                        let quoted = serde_json::to_string(&text).map_err(|_| ())?;
                        self.out
                            .extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
                    }
                    self.copied = end;
                }
                Ok(())
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(());
                    }
                    let key_span = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(());
                    }
                    self.i += 1;
                    let child = match mode {
                        Mode::Paths => {
                            let key = Self::text(self.b, key_span)?;
                            let p = if path.is_empty() {
                                key
                            } else {
                                Cow::Owned(format!("{path}.{key}"))
                            };
                            let m = mask.mode_of(&p);
                            self.value(mask, m, &p)?;
                            None
                        }
                        other => Some(other),
                    };
                    if let Some(m) = child {
                        self.value(mask, m, "")?;
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(());
                }
                // Strings in an array are masked whole (no keys to check).
                let m = if mode == Mode::Skip {
                    Mode::Skip
                } else {
                    Mode::All
                };
                loop {
                    self.value(mask, m, "")?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = self.i;
                while self.b.get(self.i).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(());
                }
                Ok(())
            }
        }
    }

    /// Put the rest of the event after the last masked string.
    fn finish(self) {
        self.out.extend_from_slice(&self.b[self.copied..]);
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
