//! An event's time from its own fields, not from when it arrived: what
//! sources put in `timestamp` when an event has none.
//!
//! A source's `timestamp` key lists candidates, the first that parses wins:
//!
//! ```toml
//! timestamp = [{ field = "datetime", format = "rfc3339" }, { field = "created", format = "unix" }]
//! ```
//!
//! Formats: `rfc3339`, `unix` (seconds, fractions allowed), `unix_ms`,
//! `auto` (the default: a number is seconds, or milliseconds past 1e11; a
//! string is RFC 3339, `YYYY-MM-DD HH:MM:SS[.,fff]` in UTC, or a number),
//! or a strftime pattern (`%d/%b/%Y:%H:%M:%S %z`; without `%z`, UTC).
//! Without the key, the defaults understand Monolog (`datetime`), Python
//! logging (`created`), loguru (`record.time.timestamp`), pino and bunyan
//! (`time`), Logstash (`@timestamp`) and `ts`; Winston writes `timestamp`
//! itself. A candidate that is there but does not parse is left as it is,
//! the arrival time is used, and the source counts it
//! (`sluice_timestamps_unparsed_total`).

mod candidates;
mod stamp;

pub use self::candidates::*;
pub use self::stamp::*;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;

/// How a candidate field is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TimeFormat {
    #[default]
    Auto,
    Rfc3339,
    Unix,
    UnixMs,
    Strftime(String),
}

impl<'de> Deserialize<'de> for TimeFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "auto" => TimeFormat::Auto,
            "rfc3339" => TimeFormat::Rfc3339,
            "unix" => TimeFormat::Unix,
            "unix_ms" => TimeFormat::UnixMs,
            _ if s.contains('%') => TimeFormat::Strftime(s),
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "unknown format `{s}` (expected auto, rfc3339, unix, unix_ms or a strftime pattern with %)"
                )))
            }
        })
    }
}

/// One candidate: a field (dotted paths reach into objects) and its format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimestampRule {
    /// The field holding the time (a dotted path reaches into objects).
    pub field: String,
    #[serde(default)]
    pub format: TimeFormat,
}

/// A source's `timestamp` key: one candidate or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampRules {
    One(TimestampRule),
    Many(Vec<TimestampRule>),
}

/// A table or a list of tables, each read as a [`TimestampRule`] so that a
/// mistake in one is reported as itself (`unknown field `fied``), not as
/// "no variant matched".
impl<'de> Deserialize<'de> for TimestampRules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TimestampRules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table `{ field = ..., format = ... }` or a list of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                TimestampRule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TimestampRules::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::<TimestampRule>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(TimestampRules::Many)
            }
        }
        d.deserialize_any(V)
    }
}

impl TimestampRules {
    pub fn rules(&self) -> &[TimestampRule] {
        match self {
            TimestampRules::One(r) => std::slice::from_ref(r),
            TimestampRules::Many(v) => v,
        }
    }
}

/// The candidates used when a source says none.
pub fn defaults() -> &'static [TimestampRule] {
    static DEFAULTS: std::sync::OnceLock<Vec<TimestampRule>> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        [
            "datetime",
            "created",
            "record.time.timestamp",
            "time",
            "@timestamp",
            "ts",
        ]
        .into_iter()
        .map(|f| TimestampRule {
            field: f.to_string(),
            format: TimeFormat::Auto,
        })
        .collect()
    })
}

/// A field's value as written: a string's text, or a number's.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    Str(&'a str),
    Num(&'a str),
}

/// An unsigned decimal `123` or `123.456`, exactly: its integer part and
/// its fraction's digits. `None` for signs, exponents, numbers past `u64`
/// and anything else.
fn decimal(text: &str) -> Option<(u64, &str)> {
    // One pass: the integer part's digits as they are read.
    let b = text.as_bytes();
    let mut int: u64 = 0;
    let mut i = 0;
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        int = int.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        i += 1;
    }
    if i == 0 {
        return None;
    }
    match b.get(i) {
        None => Some((int, "")),
        Some(b'.') => {
            let frac = text.get(i + 1..)?;
            (!frac.is_empty() && frac.bytes().all(|c| c.is_ascii_digit())).then_some((int, frac))
        }
        Some(_) => None,
    }
}

/// A time from a number of units of `10^-exp` seconds (0: seconds, 3:
/// milliseconds, 6: micro-, 9: nanoseconds) with its fraction's digits.
/// (`u64` arithmetic with constant divisors: `u128` division is a call.)
fn from_units(int: u64, frac: &str, exp: u32) -> Option<Stamp> {
    let (secs, sub, scale) = match exp {
        0 => (int, 0, 1_000_000_000),
        3 => (int / 1000, int % 1000, 1_000_000),
        6 => (int / 1_000_000, int % 1_000_000, 1000),
        _ => (int / 1_000_000_000, int % 1_000_000_000, 1),
    };
    let mut nanos = sub * scale;
    let mut place = scale / 10;
    for b in frac.bytes().take((9 - exp) as usize) {
        nanos += u64::from(b - b'0') * place;
        place /= 10;
    }
    Stamp::new(
        i64::try_from(secs).ok()?,
        nanos as u32,
        exp as usize + frac.len(),
    )
}

/// The unit a number of this size counts in, if it is a time from 2001 on:
/// seconds, milliseconds, microseconds or nanoseconds (a number between
/// those ranges, or smaller, is a counter, not a time).
fn unit_of(int: u64) -> Option<u32> {
    const E9: u64 = 1_000_000_000;
    match int {
        n if (E9..100 * E9).contains(&n) => Some(0),
        n if (1000 * E9..100_000 * E9).contains(&n) => Some(3),
        n if (1_000_000 * E9..100_000_000 * E9).contains(&n) => Some(6),
        n if n >= E9 * E9 => Some(9),
        _ => None,
    }
}

/// A number in `unit` (`None`: whichever its size says).
fn number_time(text: &str, unit: Option<u32>) -> Option<Stamp> {
    let text = trimmed(text);
    if let Some((int, frac)) = decimal(text) {
        let found = unit_of(int)?;
        if unit.is_some_and(|u| u != found) {
            return None;
        }
        return from_units(int, frac, found);
    }
    // `1.7954e9` and the like: as a float, to the microsecond.
    let n: f64 = text
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let found = unit_of(n as u64)?;
    if unit.is_some_and(|u| u != found) {
        return None;
    }
    let micros = (n * 10f64.powi(6 - found as i32)).round() as u64;
    from_units(micros, "", 6)
}

/// `text` without the whitespace around it, at the cost of two byte
/// checks when there is none (as times are written).
#[inline]
fn trimmed(text: &str) -> &str {
    match (text.as_bytes().first(), text.as_bytes().last()) {
        (Some(a), Some(z)) if a.is_ascii_graphic() && z.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

fn digits2(b: &[u8], at: usize) -> Option<u32> {
    let (x, y) = (*b.get(at)?, *b.get(at + 1)?);
    (x.is_ascii_digit() && y.is_ascii_digit())
        .then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM|±HH]`, without an
/// offset read as UTC (`strict`: the offset is required, as RFC 3339
/// wants). A comma may stand for the point (Python's `asctime`).
fn rfc3339(text: &str, strict: bool) -> Option<Stamp> {
    let b = trimmed(text).as_bytes();
    // The date and time to the second: nineteen bytes in a fixed layout,
    // checked all at once (a test and a branch per byte cost more than
    // the rest of the parse).
    let head: &[u8; 19] = b.get(..19)?.try_into().ok()?;
    let d = head.map(|c| c.wrapping_sub(b'0'));
    const DIGIT: [bool; 19] = [
        true, true, true, true, false, true, true, false, true, true, false, true, true, false,
        true, true, false, true, true,
    ];
    let mut bad = false;
    for (digit, n) in DIGIT.iter().zip(d) {
        bad |= *digit & (n > 9);
    }
    bad |= (head[4] != b'-')
        | (head[7] != b'-')
        | (head[13] != b':')
        | (head[16] != b':')
        | !matches!(head[10], b'T' | b't' | b' ');
    if bad {
        return None;
    }
    let two = |i: usize| u32::from(d[i]) * 10 + u32::from(d[i + 1]);
    let year = i64::from(two(0) * 100 + two(2));
    let (month, day) = (two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // The fraction: its first nine digits as a number, scaled to
    // nanoseconds once at the end.
    let mut i = 19;
    let (mut nanos, mut digits) = (0u32, 0usize);
    if matches!(b.get(i), Some(b'.' | b',')) {
        i += 1;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 9 {
                nanos = nanos * 10 + u32::from(c - b'0');
            }
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
    }
    const SCALE: [u32; 10] = [
        1_000_000_000,
        100_000_000,
        10_000_000,
        1_000_000,
        100_000,
        10_000,
        1000,
        100,
        10,
        1,
    ];
    nanos *= SCALE[digits.min(9)];
    let offset: i64 = match b.get(i) {
        None if !strict => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let h = digits2(b, i + 1)?;
            let m = match b.len() - i {
                3 => 0,
                5 => digits2(b, i + 3)?,
                6 if b[i + 3] == b':' => digits2(b, i + 4)?,
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let o = i64::from(h * 3600 + m * 60);
            if sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset;
    Stamp::new(secs, nanos, digits)
}

/// Parse one value, as written, in one format.
pub fn parse_raw(v: Raw<'_>, format: &TimeFormat) -> Option<Stamp> {
    match (format, v) {
        (TimeFormat::Unix, Raw::Num(t) | Raw::Str(t)) => number_time(t, Some(0)),
        (TimeFormat::UnixMs, Raw::Num(t) | Raw::Str(t)) => number_time(t, Some(3)),
        (TimeFormat::Rfc3339, Raw::Str(s)) => rfc3339(s, true).or_else(|| {
            DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .and_then(|t| Stamp::of(t.with_timezone(&Utc)))
        }),
        (TimeFormat::Strftime(f), Raw::Str(s)) => {
            let s = s.trim();
            DateTime::parse_from_str(s, f)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(s, f)
                        .ok()
                        .map(|n| n.and_utc())
                })
                .and_then(Stamp::of)
        }
        (TimeFormat::Auto, Raw::Num(t)) => number_time(t, None),
        (TimeFormat::Auto, Raw::Str(s)) => rfc3339(s, false)
            .or_else(|| number_time(s, None))
            .or_else(|| {
                // What the quick reader does not take: leap seconds,
                // other separators.
                let s = s.trim();
                if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                    return Stamp::of(t.with_timezone(&Utc));
                }
                let spaced = s.replacen(' ', "T", 1).replace(',', ".");
                if let Ok(t) = DateTime::parse_from_rfc3339(&spaced) {
                    return Stamp::of(t.with_timezone(&Utc));
                }
                ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(&spaced, f).ok())
                    .and_then(|n| Stamp::of(n.and_utc()))
            }),
        _ => None,
    }
}

/// Parse a raw JSON value (as an event holds it) in one format: a string
/// or a number; anything else does not parse.
pub fn parse_json(raw: &str, format: &TimeFormat) -> Option<Stamp> {
    let raw = trimmed(raw);
    match raw.as_bytes().first()? {
        b'"' => {
            let inner = &raw[1..raw.len().checked_sub(1).filter(|&e| e >= 1)?];
            // Most times are RFC 3339 strings: read first as they are (a
            // string with an escape never has that layout, so the answer
            // is the same as after unescaping).
            if let TimeFormat::Auto | TimeFormat::Rfc3339 = format {
                if let Some(t) = rfc3339(inner, *format == TimeFormat::Rfc3339) {
                    return Some(t);
                }
            }
            // (A loop, not `contains`: a call to memchr for twenty bytes
            // costs more than the loop.)
            if inner.bytes().any(|c| c == b'\\') {
                let s: String = serde_json::from_str(raw).ok()?;
                parse_raw(Raw::Str(&s), format)
            } else {
                parse_raw(Raw::Str(inner), format)
            }
        }
        b'0'..=b'9' | b'-' => parse_raw(Raw::Num(raw), format),
        _ => None,
    }
}

/// Parse one value in one format.
pub fn parse(v: &Value, format: &TimeFormat) -> Option<DateTime<Utc>> {
    let stamp = parse_value(v, format)?;
    Utc.timestamp_opt(stamp.secs, stamp.nanos).single()
}

/// [`parse_raw`] of a parsed value (numbers keep their text: the host
/// parses JSON with `arbitrary_precision`).
pub fn parse_value(v: &Value, format: &TimeFormat) -> Option<Stamp> {
    match v {
        Value::String(s) => parse_raw(Raw::Str(s), format),
        Value::Number(n) => parse_raw(Raw::Num(&n.to_string()), format),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the candidates gave, the time as sluice writes it.
    #[derive(Debug, PartialEq, Eq)]
    enum Found {
        Time(String),
        Unparsable,
        Absent,
    }

    fn shown(f: super::Found) -> Found {
        match f {
            super::Found::Time(t) => Found::Time(t.to_rfc3339()),
            super::Found::Unparsable => Found::Unparsable,
            super::Found::Absent => Found::Absent,
        }
    }

    fn found(event: Value) -> Found {
        shown(find(None, event.as_object().unwrap()))
    }

    #[test]
    fn the_defaults_read_each_library() {
        let t = "2026-11-23T10:00:00.123Z".to_string();
        // Monolog, to the microsecond it wrote
        assert_eq!(
            found(json!({"datetime": "2026-11-23T10:00:00.123456+00:00"})),
            Found::Time("2026-11-23T10:00:00.123456Z".into())
        );
        // Python logging (also as the string HTTPHandler sends)
        assert_eq!(
            found(json!({"created": 1795428000.123})),
            Found::Time(t.clone())
        );
        assert_eq!(
            found(json!({"created": "1795428000.123"})),
            Found::Time(t.clone())
        );
        // loguru
        assert_eq!(
            found(json!({"record": {"time": {"timestamp": 1795428000.123}}})),
            Found::Time(t.clone())
        );
        // pino (ms) and bunyan (ISO)
        assert_eq!(
            found(json!({"time": 1795428000123u64})),
            Found::Time(t.clone())
        );
        assert_eq!(
            found(json!({"time": "2026-11-23T10:00:00.123Z"})),
            Found::Time(t.clone())
        );
        // Python's asctime, in UTC
        assert_eq!(
            found(json!({"time": "2026-11-23 10:00:00,123"})),
            Found::Time(t)
        );
        assert_eq!(found(json!({"message": "no time"})), Found::Absent);
        assert_eq!(found(json!({"datetime": "yesterday"})), Found::Unparsable);
        // Small numbers are counters, not times.
        assert_eq!(found(json!({"ts": 5})), Found::Unparsable);
    }

    #[test]
    fn stamps_print_as_rfc3339_with_their_digits() {
        let s = |secs, nanos, digits| {
            Stamp {
                secs,
                nanos,
                digits,
            }
            .to_rfc3339()
        };
        assert_eq!(s(0, 0, 3), "1970-01-01T00:00:00.000Z");
        assert_eq!(s(951_782_400, 5, 9), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(
            s(253_402_300_799, 999_999_000, 6),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(s(-1, 0, 3), "1969-12-31T23:59:59.000Z");
        // One second's text kept between writes is the text written anew.
        let mut last = Seconds::default();
        for (secs, nanos, digits) in [(5, 1, 9), (5, 2_000_000, 3), (86_400, 0, 6), (5, 0, 3)] {
            let mut out = Vec::new();
            Stamp {
                secs,
                nanos,
                digits,
            }
            .write_with(&mut last, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), s(secs, nanos, digits));
        }
    }

    #[test]
    fn numbers_in_each_unit_exactly() {
        let n = |t: &str| parse_raw(Raw::Num(t), &TimeFormat::Auto).map(|s| s.to_rfc3339());
        assert_eq!(
            n("1796474732.999999").unwrap(),
            "2026-12-05T12:45:32.999999Z"
        );
        assert_eq!(n("1796474732.1").unwrap(), "2026-12-05T12:45:32.100Z");
        assert_eq!(n("1796474732999").unwrap(), "2026-12-05T12:45:32.999Z");
        assert_eq!(n("1796474732999.5").unwrap(), "2026-12-05T12:45:32.9995Z");
        assert_eq!(
            n("1796474732999123").unwrap(),
            "2026-12-05T12:45:32.999123Z"
        );
        assert_eq!(
            n("1796474732999123456").unwrap(),
            "2026-12-05T12:45:32.999123456Z"
        );
        assert_eq!(n("1.796474732e9").unwrap(), "2026-12-05T12:45:32.000000Z");
        for counter in ["5", "123456789012", "-1796474732", "1e400", "NaN", "inf"] {
            assert_eq!(n(counter), None, "{counter}");
        }
        assert_eq!(
            parse_raw(Raw::Num("1796474732999"), &TimeFormat::Unix),
            None
        );
        assert!(parse_raw(Raw::Num("1796474732999"), &TimeFormat::UnixMs).is_some());
    }

    #[test]
    fn rfc3339_quickly_and_strictly() {
        let r = |t: &str, strict| rfc3339(t, strict).map(|s| s.to_rfc3339());
        assert_eq!(
            r("2026-12-04T20:25:32.1234567891+01:00", true).unwrap(),
            "2026-12-04T19:25:32.123456789Z"
        );
        assert_eq!(
            r("2026-12-04t19:25:32z", true).unwrap(),
            "2026-12-04T19:25:32.000Z"
        );
        assert_eq!(
            r("2026-12-04T19:25:32-0230", true).unwrap(),
            "2026-12-04T21:55:32.000Z"
        );
        assert_eq!(
            r("2026-12-04 19:25:32,5", false).unwrap(),
            "2026-12-04T19:25:32.500Z"
        );
        assert_eq!(
            r("2026-12-04 19:25:32", true),
            None,
            "RFC 3339 wants an offset"
        );
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-04T24:00:00Z",
            "2026-12-04T19:25:32.Z",
            "2026-12-04T19:25:32Zjunk",
            "2026-12-04",
        ] {
            assert_eq!(r(bad, false), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// The quick RFC 3339 reader agrees with chrono's on every valid
        /// time it reads, to the nanosecond.
        #[test]
        fn prop_rfc3339_agrees_with_chrono(
            secs in MIN_SECS..MAX_SECS,
            nanos in 0u32..1_000_000_000,
            digits in 1usize..10,
            offset_min in -1439i32..1440,
        ) {
            let t = Utc.timestamp_opt(secs, nanos).unwrap();
            let tz = chrono::FixedOffset::east_opt(offset_min * 60).unwrap();
            let local = t.with_timezone(&tz);
            let fraction = format!("{nanos:09}");
            let text = format!(
                "{}.{}{}",
                local.format("%Y-%m-%dT%H:%M:%S"),
                &fraction[..digits],
                local.format("%:z")
            );
            let ours = rfc3339(&text, true);
            let theirs = DateTime::parse_from_rfc3339(&text).ok().and_then(|t| Stamp::of(t.with_timezone(&Utc)));
            proptest::prop_assert_eq!(ours.map(|s| s.unix_nanos()), theirs.map(|s| s.unix_nanos()), "{}", text);
        }

        /// Every raw value, any text: never a panic.
        #[test]
        fn prop_event_times_are_total(text in "[0-9T:.,+ZzeE -]{0,40}") {
            for f in [TimeFormat::Auto, TimeFormat::Rfc3339, TimeFormat::Unix, TimeFormat::UnixMs] {
                let _ = parse_raw(Raw::Str(&text), &f);
                let _ = parse_raw(Raw::Num(&text), &f);
                let _ = parse_json(&text, &f);
            }
        }
    }

    #[test]
    fn configured_candidates_in_order_and_strftime() {
        let rules: TimestampRules = toml::from_str::<toml::Table>(
            r#"t = [{ field = "when", format = "%d/%b/%Y:%H:%M:%S %z" }, { field = "at", format = "unix_ms" }]"#,
        )
        .unwrap()["t"]
            .clone()
            .try_into()
            .unwrap();
        let e = json!({"when": "23/Nov/2026:11:00:00 +0100", "at": 1});
        assert_eq!(
            shown(find(Some(&rules), e.as_object().unwrap())),
            Found::Time("2026-11-23T10:00:00.000Z".into())
        );
        let e = json!({"when": "garbage", "at": 1795428000123u64});
        assert_eq!(
            shown(find(Some(&rules), e.as_object().unwrap())),
            Found::Time("2026-11-23T10:00:00.123Z".into())
        );
        let bad = toml::from_str::<toml::Table>(r#"t = { field = "x", format = "epoch" }"#)
            .unwrap()["t"]
            .clone()
            .try_into::<TimestampRules>();
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown format `epoch`"));
        let typo = toml::from_str::<toml::Table>(r#"t = [{ fied = "x" }]"#).unwrap()["t"]
            .clone()
            .try_into::<TimestampRules>();
        assert!(typo
            .unwrap_err()
            .to_string()
            .contains("unknown field `fied`"));
    }
}
