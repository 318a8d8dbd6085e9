//! `route`: send events to named outputs by a field's value or by conditions.
//!
//! ```toml
//! [transforms.router.config]
//! field = "level"                                  # route by this field's value
//! routes = { errors = ["error", "fatal"], warnings = ["warn"] }
//! rules = [                                        # checked first, in order
//!   { output = "payments", conditions = [{ field = "service", equals = "payments" }] },
//! ]
//! ```
//!
//! Sinks read `router.errors`, `router.payments`...; events that match
//! nothing go to the default output, `router` (also `router.default`).
//! Level values are compared as levels (`WARNING` matches `warn`).

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_plugin::cond::{self, Condition, Mode};
use sluice_plugin::{export_plugin, Config, Event, Level, Plugin, Verdict};

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RouteConfig {
    /// The field (dotted) whose value picks the output, with `routes`.
    #[serde(default)]
    field: Option<String>,
    /// Output name = the value, or the values, of `field` that go to it
    /// (levels compare in any library's spelling).
    #[serde(default)]
    routes: BTreeMap<String, OneOrMany>,
    /// Outputs chosen by conditions, checked first and in order.
    #[serde(default)]
    rules: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// An output and the conditions that send an event to it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct RuleConfig {
    /// The output's name (read as `NAME.OUTPUT`).
    output: String,
    /// How `conditions` combine: `all` or `any`.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "sluice_plugin::schema::Mode"))]
    mode: Mode,
    /// The conditions.
    #[cfg_attr(test, schemars(with = "Vec<sluice_plugin::schema::Condition>"))]
    conditions: Vec<Condition>,
}

#[derive(Debug)]
struct Rule {
    port: u16,
    mode: Mode,
    conditions: Vec<Condition>,
}

/// Routes events to outputs.
#[derive(Debug)]
pub struct Route {
    outputs: Vec<String>,
    rules: Vec<Rule>,
    field: Option<String>,
    /// When routing by a level field, values compare as levels.
    by_level: bool,
    /// (value, port) pairs for `field`; a handful, so a scan beats hashing.
    values: Vec<(String, u16)>,
    levels: Vec<(Level, u16)>,
}

impl Route {
    fn port_of(outputs: &mut Vec<String>, name: &str) -> Result<u16, String> {
        if name.is_empty() || name.contains('.') || name == "default" {
            return Err(format!(
                "output name `{name}` is not allowed (empty, dotted, or `default`)"
            ));
        }
        if let Some(i) = outputs.iter().position(|o| o == name) {
            return Ok(i as u16 + 1);
        }
        outputs.push(name.to_string());
        Ok(outputs.len() as u16)
    }

    /// The output port for an event: 0 is the default output.
    pub fn port(&self, event: &Event<'_>) -> u16 {
        for rule in &self.rules {
            if cond::matches_all(&rule.conditions, rule.mode, event) {
                return rule.port;
            }
        }
        if let Some(field) = &self.field {
            if self.by_level {
                if let Some(level) = event.level_in(field) {
                    if let Some((_, p)) = self.levels.iter().find(|(l, _)| *l == level) {
                        return *p;
                    }
                }
            } else if let Some(value) = event.get_str(field) {
                if let Some((_, p)) = self.values.iter().find(|(v, _)| *v == value) {
                    return *p;
                }
            }
        }
        0
    }

    /// The output names, in port order (port 1 first).
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }
}

impl Plugin for Route {
    fn init(config: Config) -> Result<Self, String> {
        let c: RouteConfig = config.parse()?;
        if c.routes.is_empty() && c.rules.is_empty() {
            return Err(
                "give `routes` (with `field`) or `rules`; nothing would be routed".to_string(),
            );
        }
        if !c.routes.is_empty() && c.field.is_none() {
            return Err(
                "`routes` needs `field`, the field whose value picks the output".to_string(),
            );
        }
        let mut outputs = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in c.rules.into_iter().enumerate() {
            cond::check_all(&r.conditions).map_err(|e| format!("rules[{i}]: {e}"))?;
            let port =
                Self::port_of(&mut outputs, &r.output).map_err(|e| format!("rules[{i}]: {e}"))?;
            rules.push(Rule {
                port,
                mode: r.mode,
                conditions: r.conditions,
            });
        }
        let by_level = c
            .field
            .as_deref()
            .is_some_and(|f| f == "level" || f == "severity");
        let mut values = Vec::new();
        let mut levels = Vec::new();
        for (name, vals) in c.routes {
            let port =
                Self::port_of(&mut outputs, &name).map_err(|e| format!("routes.{name}: {e}"))?;
            let vals = match vals {
                OneOrMany::One(v) => vec![v],
                OneOrMany::Many(v) => v,
            };
            for v in vals {
                if by_level {
                    let l = Level::parse(&v)
                        .ok_or_else(|| format!("routes.{name}: unknown level `{v}`"))?;
                    levels.push((l, port));
                } else {
                    values.push((v, port));
                }
            }
        }
        Ok(Route {
            outputs,
            rules,
            field: c.field,
            by_level,
            values,
            levels,
        })
    }

    fn outputs(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn version(&self) -> String {
        concat!("route ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        Verdict::Route(self.port(event))
    }
}

export_plugin!(Route);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::RouteConfig>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use sluice_plugin::process_batch;

    fn route(config: &str) -> Route {
        Route::init(Config::new(config)).unwrap()
    }

    fn port(r: &Route, e: &str) -> u16 {
        r.port(&Event::new(e.as_bytes()))
    }

    #[test]
    fn routes_by_level_value() {
        let r =
            route(r#"{"field":"level","routes":{"errors":["error","fatal"],"warnings":"warn"}}"#);
        assert_eq!(r.output_names(), ["errors", "warnings"]);
        assert_eq!(port(&r, r#"{"level":"ERROR"}"#), 1);
        assert_eq!(port(&r, r#"{"level":"critical"}"#), 1);
        assert_eq!(port(&r, r#"{"level":"warning"}"#), 2);
        assert_eq!(port(&r, r#"{"level":"info"}"#), 0);
        assert_eq!(port(&r, r#"{"message":"x"}"#), 0);
    }

    #[test]
    fn routes_by_plain_field() {
        let r = route(r#"{"field":"service","routes":{"pay":["payments","billing"]}}"#);
        assert_eq!(port(&r, r#"{"service":"billing"}"#), 1);
        assert_eq!(port(&r, r#"{"service":"auth"}"#), 0);
    }

    #[test]
    fn rules_come_first() {
        let r = route(
            r#"{"field":"level","routes":{"errors":"error"},
                "rules":[{"output":"pay","conditions":[{"field":"service","equals":"payments"}]}]}"#,
        );
        assert_eq!(r.output_names(), ["pay", "errors"]);
        assert_eq!(port(&r, r#"{"level":"error","service":"payments"}"#), 1);
        assert_eq!(port(&r, r#"{"level":"error","service":"auth"}"#), 2);
    }

    /// #43: twelve 5xx codes had to be listed with `one_of`.
    #[test]
    fn rules_compare_numbers() {
        let r = route(
            r#"{"rules":[{"output":"errors","conditions":[{"field":"status","gte":500,"lt":600}]},
                         {"output":"slow","conditions":[{"field":"upstream_ms","gt":1000}]}]}"#,
        );
        assert_eq!(r.output_names(), ["errors", "slow"]);
        assert_eq!(port(&r, r#"{"status":503,"upstream_ms":2000}"#), 1);
        assert_eq!(port(&r, r#"{"status":"599"}"#), 1);
        assert_eq!(port(&r, r#"{"status":404,"upstream_ms":1500.5}"#), 2);
        assert_eq!(port(&r, r#"{"status":600}"#), 0);
        assert_eq!(port(&r, r#"{"status":"unknown"}"#), 0);
    }

    #[test]
    fn shared_output_names_share_a_port() {
        let r = route(
            r#"{"field":"level","routes":{"alerts":"error"},
                "rules":[{"output":"alerts","conditions":[{"field":"page","exists":true}]}]}"#,
        );
        assert_eq!(r.output_names(), ["alerts"]);
    }

    #[test]
    fn config_errors() {
        let e = Route::init(Config::new("{}")).unwrap_err();
        assert!(e.contains("nothing would be routed"), "{e}");
        let e = Route::init(Config::new(r#"{"routes":{"a":"x"}}"#)).unwrap_err();
        assert!(e.contains("needs `field`"), "{e}");
        let e = Route::init(Config::new(r#"{"field":"level","routes":{"a":"loud"}}"#)).unwrap_err();
        assert!(e.contains("unknown level `loud`"), "{e}");
        let e = Route::init(Config::new(r#"{"field":"x","routes":{"default":"y"}}"#)).unwrap_err();
        assert!(e.contains("not allowed"), "{e}");
    }

    #[test]
    fn packed_ports() {
        let r = route(r#"{"field":"level","routes":{"errors":"error"}}"#);
        let data = br#"{"level":"info"}{"level":"error"}"#;
        let v = process_batch(&r, data, &[16, 33]).unwrap();
        assert_eq!(v.ports, [0, 1]);
        let v = process_batch(&r, &data[..16], &[16]).unwrap();
        assert!(v.ports.is_empty(), "all-default batches carry no ports");
    }
}
