//! `filter`: keep the events that pass a level threshold and field conditions.
//!
//! ```toml
//! [transforms.keep.config]
//! min_level = "warn"          # keeps warn, error, fatal
//! level_field = "level"       # default
//! missing_level = "keep"      # or "drop": events without a readable level
//! mode = "all"                # or "any": how conditions combine
//! conditions = [{ field = "service", one_of = ["payments", "auth"] }]
//! ```

use serde::Deserialize;
use sluice_plugin::cond::{self, Condition, Mode};
use sluice_plugin::{export_plugin, Config, Event, Level, Plugin, Verdict};

/// The filter's configuration, and the filter itself.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    /// Keep events at this level or above: trace, debug, info, notice,
    /// warn, error, fatal (any library's spelling or number).
    #[serde(default)]
    min_level: Option<String>,
    /// The field (dotted) holding the level.
    #[serde(default = "default_level_field")]
    level_field: String,
    /// What happens to an event without a readable level.
    #[serde(default)]
    missing_level: MissingLevel,
    /// How `conditions` combine: `all` or `any`.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "sluice_plugin::schema::Mode"))]
    mode: Mode,
    /// Field conditions an event must meet (with `min_level`, both apply).
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Vec<sluice_plugin::schema::Condition>"))]
    conditions: Vec<Condition>,
}

fn default_level_field() -> String {
    "level".to_string()
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
enum MissingLevel {
    /// Kept (the default).
    #[default]
    Keep,
    /// Dropped.
    Drop,
}

/// Keeps events by level and conditions.
#[derive(Debug)]
pub struct Filter {
    min_level: Option<Level>,
    level_field: String,
    missing_level: MissingLevel,
    mode: Mode,
    conditions: Vec<Condition>,
}

impl Filter {
    /// Whether the event passes the filter.
    pub fn keeps(&self, event: &Event<'_>) -> bool {
        if let Some(min) = self.min_level {
            match event.level_in(&self.level_field) {
                Some(level) if level < min => return false,
                Some(_) => {}
                None if self.missing_level == MissingLevel::Drop => return false,
                None => {}
            }
        }
        cond::matches_all(&self.conditions, self.mode, event)
    }
}

impl Plugin for Filter {
    fn init(config: Config) -> Result<Self, String> {
        let c: FilterConfig = config.parse()?;
        let min_level = match c.min_level.as_deref() {
            None => None,
            Some(s) => Some(Level::parse(s).ok_or_else(|| {
                format!("min_level: unknown level `{s}` (expected trace, debug, info, notice, warn, error or fatal)")
            })?),
        };
        cond::check_all(&c.conditions).map_err(|e| format!("conditions: {e}"))?;
        if min_level.is_none() && c.conditions.is_empty() {
            return Err(
                "give `min_level`, `conditions`, or both; this filter would keep everything"
                    .to_string(),
            );
        }
        Ok(Filter {
            min_level,
            level_field: c.level_field,
            missing_level: c.missing_level,
            mode: c.mode,
            conditions: c.conditions,
        })
    }

    fn version(&self) -> String {
        concat!("filter ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        if self.keeps(event) {
            Verdict::Keep
        } else {
            Verdict::Drop
        }
    }
}

export_plugin!(Filter);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::FilterConfig>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use sluice_plugin::{action, process_batch};

    fn filter(config: &str) -> Filter {
        Filter::init(Config::new(config)).unwrap()
    }

    fn keeps(f: &Filter, event: &str) -> bool {
        f.keeps(&Event::new(event.as_bytes()))
    }

    #[test]
    fn min_level_keeps_warn_and_above() {
        let f = filter(r#"{"min_level":"warn"}"#);
        assert!(keeps(&f, r#"{"level":"warn"}"#));
        assert!(keeps(&f, r#"{"level":"ERROR"}"#));
        assert!(keeps(&f, r#"{"level":"critical"}"#));
        assert!(!keeps(&f, r#"{"level":"info"}"#));
        assert!(!keeps(&f, r#"{"level":"debug"}"#));
        assert!(keeps(&f, r#"{"message":"no level"}"#));
    }

    #[test]
    fn missing_level_can_drop() {
        let f = filter(r#"{"min_level":"warn","missing_level":"drop"}"#);
        assert!(!keeps(&f, r#"{"message":"no level"}"#));
        assert!(!keeps(&f, r#"{"level":"chatty"}"#));
    }

    #[test]
    fn custom_level_field() {
        let f = filter(r#"{"min_level":"error","level_field":"severity"}"#);
        assert!(keeps(&f, r#"{"severity":"error","level":"debug"}"#));
        assert!(!keeps(&f, r#"{"severity":"info","level":"error"}"#));
    }

    #[test]
    fn conditions_combine_with_level() {
        let f = filter(
            r#"{"min_level":"warn","conditions":[{"field":"service","one_of":["payments","auth"]}]}"#,
        );
        assert!(keeps(&f, r#"{"level":"error","service":"auth"}"#));
        assert!(!keeps(&f, r#"{"level":"error","service":"orders"}"#));
        assert!(!keeps(&f, r#"{"level":"info","service":"auth"}"#));
    }

    #[test]
    fn any_mode() {
        let f = filter(
            r#"{"mode":"any","conditions":[{"field":"a","exists":true},{"field":"b","equals":true}]}"#,
        );
        assert!(keeps(&f, r#"{"a":null}"#));
        assert!(keeps(&f, r#"{"b":true}"#));
        assert!(!keeps(&f, r#"{"c":1}"#));
    }

    #[test]
    fn config_errors_are_clear() {
        let err = Filter::init(Config::new(r#"{"min_level":"loud"}"#)).unwrap_err();
        assert!(err.contains("unknown level `loud`"), "{err}");
        let err = Filter::init(Config::new(r#"{"min_levle":"warn"}"#)).unwrap_err();
        assert!(err.contains("unknown field `min_levle`"), "{err}");
        let err = Filter::init(Config::new("{}")).unwrap_err();
        assert!(err.contains("keep everything"), "{err}");
    }

    #[test]
    fn packed_batch_verdicts() {
        let f = filter(r#"{"min_level":"warn"}"#);
        let events = [
            r#"{"level":"info"}"#,
            r#"{"level":"error"}"#,
            r#"{"level":"warn"}"#,
        ];
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for e in events {
            data.extend_from_slice(e.as_bytes());
            ends.push(data.len() as u32);
        }
        let v = process_batch(&f, &data, &ends).unwrap();
        assert_eq!(v.actions, [action::DROP, action::KEEP, action::KEEP]);
        assert!(v.ports.is_empty());
        assert!(v.data.is_empty());
    }
}
