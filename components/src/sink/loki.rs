//! `type = "loki"`: events pushed to Grafana Loki (`/loki/api/v1/push`,
//! JSON, gzip if asked), on the shared HTTP core.
//!
//! Labels come from event fields (`labels = { service = "{service}" }`),
//! with a cap on how many distinct label sets one sink creates (Loki's
//! index suffers from unbounded ones): past `max_label_sets`, events go to
//! one overflow stream (`sluice_overflow="true"`), counted and logged. The
//! log line is the `message` field (the whole event when it has none); the
//! other top-level fields go along as structured metadata. Entries are
//! sent in timestamp order within each stream. An entry Loki refuses for
//! good ("entry out of order", "too far behind": a `400` naming it) goes to
//! the dead letters with Loki's reason while the rest of the push is
//! delivered, as Loki ingests them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use toml::Spanned;

use super::file::{Part, Template};
use super::http::core::{
    Answer, Body, Compression, Core, Decision, Protocol, RetryLogic, StatusRetry,
};
use super::http::NetworkSink;
use super::{inputs_field, Sink, SinkKind};
use crate::base::event::{scalar_text, top_fields};
use crate::base::settings::{bounded, BuildContext, BuildError};

super::http::network_sink_config! {
    defaults {
        request_timeout_secs: 30,
        max_in_flight: 1,
        max_events: 2000,
        max_bytes: 4 << 20,
        retry_for_secs: 60,
    }
    /// `[sinks.NAME] type = "loki"`.
    pub struct LokiConfig {
        /// Loki: `http://127.0.0.1:3100` (pushes go to `/loki/api/v1/push`).
        pub endpoint: String,
        /// Stream labels: name -> template over event fields (`"{service}"`).
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        /// Most distinct label sets this sink creates; past it, events go to
        /// the overflow stream.
        #[serde(default = "default_max_label_sets")]
        #[schemars(range(min = 1, max = 1000000))]
        pub max_label_sets: usize,
        /// The field that is the log line (the whole event when it lacks it).
        #[serde(default = "default_message_field")]
        pub message_field: String,
        /// Send the other top-level fields as structured metadata.
        #[serde(default = "default_true")]
        pub structured_metadata: bool,
        /// `X-Scope-OrgID` for a multi-tenant Loki.
        #[serde(default)]
        pub tenant: Option<String>,
    }
}

fn default_max_label_sets() -> usize {
    1000
}
fn default_message_field() -> String {
    "message".to_string()
}
fn default_true() -> bool {
    true
}

/// The label set of events past `max_label_sets`.
const OVERFLOW: &str = "{sluice_overflow=\"true\"}";

/// The push protocol of one sink.
struct Push {
    labels: Vec<(String, Template)>,
    max_label_sets: usize,
    message_field: String,
    metadata: bool,
    compression: Compression,
    uri: hyper::Uri,
    /// The label sets created so far (their `{a="b"}` text).
    seen: Mutex<HashSet<String>>,
}

/// One entry of a push, and the event it came from.
struct Entry {
    stream: String,
    labels: BTreeMap<String, String>,
    ns: i128,
    line: String,
    metadata: BTreeMap<String, String>,
    event: usize,
}

/// Labels as Loki writes them: `{a="x", b="y"}`.
fn label_text(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// A time as Go prints it (`time.Time.String()`, in UTC), which is how
/// Loki names an entry it refuses: `2026-11-23 10:00:00.5 +0000 UTC`.
pub fn go_time(ns: i128) -> String {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let frac = ns.rem_euclid(1_000_000_000) as u32;
    let t = chrono::DateTime::from_timestamp(secs, frac).unwrap_or_default();
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac > 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

impl Push {
    fn entry(&self, event: &[u8], i: usize, now_ns: i128) -> Entry {
        let text = std::str::from_utf8(event).unwrap_or("{}");
        let fields = top_fields(text).unwrap_or_default();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| scalar_text(v))
        };
        let mut labels = BTreeMap::new();
        for (name, template) in &self.labels {
            let mut value = String::new();
            for part in &template.parts {
                match part {
                    Part::Literal(s) => value.push_str(s),
                    Part::Field(f, case) => {
                        value.push_str(&case.apply(field(f).as_deref().unwrap_or("unknown")))
                    }
                    Part::Time(fmt) => value.push_str(&chrono::Utc::now().format(fmt).to_string()),
                    Part::Rest => {}
                }
            }
            labels.insert(name.clone(), value);
        }
        let mut stream = label_text(&labels);
        {
            let mut seen = self.seen.lock().expect("label sets lock poisoned");
            if !seen.contains(&stream) {
                if seen.len() >= self.max_label_sets {
                    labels = BTreeMap::from([("sluice_overflow".to_string(), "true".to_string())]);
                    stream = OVERFLOW.to_string();
                } else {
                    seen.insert(stream.clone());
                }
            }
        }
        let ns = field("timestamp")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .map_or(now_ns, i128::from);
        let line = field(&self.message_field)
            .map(|m| m.into_owned())
            .unwrap_or_else(|| text.to_string());
        let mut metadata = BTreeMap::new();
        if self.metadata {
            for (k, v) in &fields {
                if k == &self.message_field || k == "timestamp" {
                    continue;
                }
                if let Some(v) = scalar_text(v) {
                    metadata.insert(k.to_string(), v.into_owned());
                }
            }
        }
        Entry {
            stream,
            labels,
            ns,
            line,
            metadata,
            event: i,
        }
    }

    /// The entries of `events`, grouped by stream in timestamp order.
    fn entries(&self, events: &[&[u8]]) -> BTreeMap<String, Vec<Entry>> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as i128;
        let mut streams: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            let entry = self.entry(e, i, now);
            streams.entry(entry.stream.clone()).or_default().push(entry);
        }
        for entries in streams.values_mut() {
            entries.sort_by_key(|e| e.ns);
        }
        streams
    }
}

impl Protocol for Push {
    fn encode(&self, events: &[&[u8]]) -> Body {
        let streams: Vec<serde_json::Value> = self
            .entries(events)
            .into_values()
            .map(|entries| {
                let labels = entries[0].labels.clone();
                let values: Vec<serde_json::Value> = entries
                    .into_iter()
                    .map(|e| {
                        let mut v = vec![
                            serde_json::Value::from(e.ns.to_string()),
                            serde_json::Value::from(e.line),
                        ];
                        if !e.metadata.is_empty() {
                            v.push(serde_json::to_value(e.metadata).unwrap_or_default());
                        }
                        serde_json::Value::Array(v)
                    })
                    .collect();
                serde_json::json!({ "stream": labels, "values": values })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "streams": streams }))
            .expect("JSON values serialize");
        Body::new(body, "application/json", self.compression)
    }

    fn decide(&self, answer: &Answer, events: &[&[u8]]) -> Decision {
        if answer.status != hyper::StatusCode::BAD_REQUEST {
            return StatusRetry.decide(answer);
        }
        // Loki ingests the acceptable entries of a push and names the ones
        // it refused, one per line: "entry with timestamp T ignored,
        // reason: 'R' for stream: S".
        let text = String::from_utf8_lossy(&answer.body);
        let mentioned: Vec<(&str, &str, &str)> = text
            .lines()
            .filter_map(|l| {
                let rest = l.split("entry with timestamp ").nth(1)?;
                let (time, rest) = rest.split_once(" ignored, reason: '")?;
                let (reason, rest) = rest.split_once("' for stream: ")?;
                Some((time, reason, rest.trim().trim_end_matches(',')))
            })
            .collect();
        if mentioned.is_empty() {
            return StatusRetry.decide(answer);
        }
        let mut refused = Vec::new();
        for entries in self.entries(events).values() {
            for e in entries {
                let time = go_time(e.ns);
                if let Some((_, reason, _)) = mentioned
                    .iter()
                    .find(|(t, _, s)| *t == time && *s == e.stream)
                {
                    refused.push((e.event, format!("loki refused the entry: {reason}")));
                }
            }
        }
        if refused.is_empty() {
            return Decision::Refused(super::http::core::reason(answer));
        }
        Decision::Partial {
            retry: Vec::new(),
            reason: format!("{} entries refused by loki", refused.len()),
            refused,
            after: None,
        }
    }

    fn uri<'a>(&'a self, _: &'a Core) -> &'a hyper::Uri {
        &self.uri
    }
}

impl SinkKind for LokiConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded("max_label_sets", self.max_label_sets, 1, 1_000_000)?;
        let requests = self.requests()?;
        let mut labels = Vec::new();
        for (name, text) in &self.labels {
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if !valid || name.is_empty() {
                return Err(BuildError::key(
                    "labels",
                    format!("`{name}` is not a Loki label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
            let t = Template::parse(text, false)
                .map_err(|e| BuildError::key("labels", format!("{name}: {e}")))?;
            labels.push((name.clone(), t));
        }
        let mut headers = self.headers.clone();
        if let Some(t) = &self.tenant {
            headers.insert("x-scope-orgid".into(), t.clone());
        }
        let core = self.core(cx, "endpoint", &self.endpoint, &headers)?;

        let uri = format!("{}/loki/api/v1/push", self.endpoint.trim_end_matches('/'))
            .parse()
            .map_err(|e| BuildError::key("endpoint", format!("not a URI: {e}")))?;
        Ok(Box::new(NetworkSink {
            proto: Arc::new(Push {
                labels,
                max_label_sets: self.max_label_sets,
                message_field: self.message_field.clone(),
                metadata: self.structured_metadata,
                compression: self.compress,
                uri,
                seen: Mutex::default(),
            }),
            core: Arc::new(core),
            requests,
        }))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_times_as_loki_names_them() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00.5Z").unwrap();
        assert_eq!(
            go_time(t.timestamp_nanos_opt().unwrap() as i128),
            "2026-11-23 10:00:00.5 +0000 UTC"
        );
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(
            go_time(t.timestamp_nanos_opt().unwrap() as i128),
            "2026-11-23 10:00:00 +0000 UTC"
        );
        assert_eq!(
            label_text(&BTreeMap::from([
                ("a".into(), "x\"y".into()),
                ("b".into(), "z".into())
            ])),
            "{a=\"x\\\"y\", b=\"z\"}"
        );
    }
}
