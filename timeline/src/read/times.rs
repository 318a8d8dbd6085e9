//! Event times as the timeline reads them: RFC 3339 strings and epoch
//! numbers, to microseconds.

use super::*;

/// Parse a clock: RFC 3339 with or without offset (without: UTC), a space
/// instead of `T`, or epoch seconds / milliseconds (numbers or digit strings;
/// above 10^11 they are milliseconds). Returns microseconds since the epoch.
pub fn parse_time(raw: &RawValue) -> Option<i64> {
    let text = raw.get();
    // The pipeline's own reader first: exact decimals, numbers in s, ms,
    // µs or ns, any offset.
    let auto = &sluice_core::base::timestamp::TimeFormat::Auto;
    if let Some(t) = sluice_core::base::timestamp::parse_json(text, auto) {
        return i64::try_from(t.unix_nanos().div_euclid(1000)).ok();
    }
    if text.starts_with('"') {
        parse_time_str(&value_text(text))
    } else {
        let n: f64 = text.parse().ok()?;
        epoch(n)
    }
}

pub(super) fn epoch(n: f64) -> Option<i64> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let micros = if n >= 1e14 {
        n // already microseconds
    } else if n >= 1e11 {
        n * 1e3
    } else {
        n * 1e6
    };
    Some(micros.round() as i64)
}

/// See [`parse_time`].
pub fn parse_time_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    let normal = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&normal) {
        return Some(t.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&normal, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return epoch(s.parse().ok()?);
    }
    None
}

/// Format microseconds as RFC 3339 with milliseconds.
pub fn format_time(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| micros.to_string())
}
