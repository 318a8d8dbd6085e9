//! A custom plugin written with the SDK, to copy as a starting point.
//!
//! It drops health-check noise, tags slow requests, and sends events of
//! chosen services to their own output:
//!
//! ```toml
//! [transforms.tidy]
//! plugin = "path/to/sluice_sample.wasm"
//! inputs = ["app"]
//! config = { drop_paths = ["/health"], slow_ms = 1000, vip_services = ["payments"] }
//! ```
//!
//! Its outputs: `tidy` (default) and `tidy.vip`.

use serde::Deserialize;
use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Events whose `data.path` is one of these are dropped.
    #[serde(default)]
    drop_paths: Vec<String>,
    /// Events with `duration_ms` at least this get `"slow": true`.
    #[serde(default)]
    slow_ms: Option<u64>,
    /// Events of these services go to the `vip` output.
    #[serde(default)]
    vip_services: Vec<String>,
}

impl Sample {
    /// The verdict for one event: plain Rust, unit-tested natively.
    pub fn decide(&self, event: &Event<'_>) -> Verdict {
        if let Some(path) = event.get_str("data.path") {
            if self.drop_paths.iter().any(|p| *p == path) {
                return Verdict::Drop;
            }
        }
        let vip = event
            .get_str("service")
            .is_some_and(|s| self.vip_services.iter().any(|v| *v == s));
        let port = u16::from(vip);
        let slow = match (
            self.slow_ms,
            event.get("duration_ms").and_then(|d| d.as_u64()),
        ) {
            (Some(limit), Some(ms)) => ms >= limit,
            _ => false,
        };
        if slow {
            let mut value = match event.to_value() {
                Ok(v) => v,
                Err(_) => return Verdict::Drop,
            };
            value["slow"] = true.into();
            return Verdict::ReplaceRoute(value.to_string().into_bytes(), port);
        }
        Verdict::Route(port)
    }
}

impl Plugin for Sample {
    fn init(config: Config) -> Result<Self, String> {
        config.parse()
    }

    fn outputs(&self) -> Vec<String> {
        vec!["vip".to_string()]
    }

    fn version(&self) -> String {
        concat!("sample ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        self.decide(event)
    }
}

export_plugin!(Sample);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample::init(Config::new(
            r#"{"drop_paths":["/health"],"slow_ms":1000,"vip_services":["payments"]}"#,
        ))
        .unwrap()
    }

    #[test]
    fn drops_health_checks() {
        let e = Event::new(br#"{"data":{"path":"/health"}}"#);
        assert_eq!(sample().decide(&e), Verdict::Drop);
    }

    #[test]
    fn routes_vip_services() {
        let e = Event::new(br#"{"service":"payments","duration_ms":5}"#);
        assert_eq!(sample().decide(&e), Verdict::Route(1));
        let e = Event::new(br#"{"service":"auth","duration_ms":5}"#);
        assert_eq!(sample().decide(&e), Verdict::Route(0));
    }

    #[test]
    fn tags_slow_requests() {
        let e = Event::new(br#"{"service":"auth","duration_ms":1500}"#);
        match sample().decide(&e) {
            Verdict::ReplaceRoute(bytes, 0) => {
                assert_eq!(
                    String::from_utf8(bytes).unwrap(),
                    r#"{"service":"auth","duration_ms":1500,"slow":true}"#
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = Sample::init(Config::new(r#"{"drop_path":[]}"#)).unwrap_err();
        assert!(err.contains("unknown field `drop_path`"), "{err}");
    }
}
