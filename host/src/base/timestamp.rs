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

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampRule {
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

/// What the candidates gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// RFC 3339 in UTC with milliseconds, as sluice writes times.
    Time(String),
    /// A candidate is there but none parses.
    Unparsable,
    /// No candidate is there.
    Absent,
}

/// Whether `raw` (an event's JSON) may hold a candidate: the first part of
/// some candidate's path appears in it as a key. Saves parsing events that
/// cannot have one.
pub fn may_have(rules: Option<&TimestampRules>, raw: &[u8]) -> bool {
    let rules = rules.map_or(defaults(), |r| r.rules());
    rules.iter().any(|r| {
        // `"head"` as a key, found without building the quoted needle.
        let head = r.field.split('.').next().unwrap_or(&r.field).as_bytes();
        memchr::memmem::find_iter(raw, head)
            .any(|i| i > 0 && raw[i - 1] == b'"' && raw.get(i + head.len()) == Some(&b'"'))
    })
}

/// The event's time by `rules` (or the defaults).
pub fn find(rules: Option<&TimestampRules>, event: &serde_json::Map<String, Value>) -> Found {
    let rules = rules.map_or(defaults(), |r| r.rules());
    let mut seen = false;
    for r in rules {
        let Some(v) = sluice_plugin::event::field(event, &r.field) else {
            continue;
        };
        seen = true;
        if let Some(t) = parse(v, &r.format) {
            return Found::Time(t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
    }
    if seen {
        Found::Unparsable
    } else {
        Found::Absent
    }
}

/// Seconds since 1970 from 2001 on (smaller numbers are counters, not
/// times); milliseconds likewise.
fn from_secs(s: f64) -> Option<DateTime<Utc>> {
    if !s.is_finite() || !(1e9..1e11).contains(&s) {
        return None;
    }
    // To the microsecond first (a float's last bits are noise), then the
    // millisecond it falls in, as the libraries print it (Python's msecs).
    let micros = (s * 1e6).round() as i64;
    Utc.timestamp_millis_opt(micros.div_euclid(1000)).single()
}

fn from_ms(ms: f64) -> Option<DateTime<Utc>> {
    if !ms.is_finite() || !(1e12..1e14).contains(&ms) {
        return None;
    }
    Utc.timestamp_millis_opt(ms.round() as i64).single()
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parse one value in one format.
pub fn parse(v: &Value, format: &TimeFormat) -> Option<DateTime<Utc>> {
    match format {
        TimeFormat::Unix => from_secs(number(v)?),
        TimeFormat::UnixMs => from_ms(number(v)?),
        TimeFormat::Rfc3339 => DateTime::parse_from_rfc3339(v.as_str()?.trim())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        TimeFormat::Strftime(f) => {
            let s = v.as_str()?.trim();
            DateTime::parse_from_str(s, f)
                .map(|t| t.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    NaiveDateTime::parse_from_str(s, f)
                        .ok()
                        .map(|n| n.and_utc())
                })
        }
        TimeFormat::Auto => {
            match v {
                Value::Number(_) => {
                    let n = number(v)?;
                    if n >= 1e11 {
                        from_ms(n)
                    } else {
                        from_secs(n)
                    }
                }
                Value::String(s) => {
                    let s = s.trim();
                    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                        return Some(t.with_timezone(&Utc));
                    }
                    // `2026-11-23 10:00:00.123+00:00`, Python's `2026-11-23 10:00:00,123`.
                    let spaced = s.replacen(' ', "T", 1).replace(',', ".");
                    if let Ok(t) = DateTime::parse_from_rfc3339(&spaced) {
                        return Some(t.with_timezone(&Utc));
                    }
                    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
                        if let Ok(n) = NaiveDateTime::parse_from_str(&spaced, f) {
                            return Some(n.and_utc());
                        }
                    }
                    s.parse::<f64>().ok().and_then(|n| {
                        if n >= 1e11 {
                            from_ms(n)
                        } else {
                            from_secs(n)
                        }
                    })
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(event: Value) -> Found {
        find(None, event.as_object().unwrap())
    }

    #[test]
    fn the_defaults_read_each_library() {
        let t = "2026-11-23T10:00:00.123Z".to_string();
        // Monolog
        assert_eq!(
            found(json!({"datetime": "2026-11-23T10:00:00.123456+00:00"})),
            Found::Time(t.clone())
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
        assert!(may_have(None, br#"{"created":1}"#));
        assert!(!may_have(None, br#"{"message":"created at noon"}"#));
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
            find(Some(&rules), e.as_object().unwrap()),
            Found::Time("2026-11-23T10:00:00.000Z".into())
        );
        let e = json!({"when": "garbage", "at": 1795428000123u64});
        assert_eq!(
            find(Some(&rules), e.as_object().unwrap()),
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
