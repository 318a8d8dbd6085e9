//! `type = "elasticsearch"` (OpenSearch too): events indexed through the
//! `_bulk` API, on the shared HTTP core.
//!
//! A bulk answer with `errors: true` is read item by item: items refused
//! with 429 or 5xx are sent again alone, items refused for their content
//! (a mapping or parsing error) go to the dead letters with Elasticsearch's
//! reason, and the rest are acknowledged. With `id_field`, each document's
//! `_id` comes from the event, so a retry after a lost answer never indexes
//! it twice (with `action = "create"` the second attempt is answered 409
//! and counted as delivered).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::{Part, Template};
use super::http::core::{
    Answer, Body, Compression, Core, Decision, Protocol, RetryLogic, StatusRetry,
};
use super::http::NetworkSink;
use super::{inputs_field, Sink, SinkKind};
use crate::base::event::{push_json_str, scalar_text, top_fields};
use crate::base::settings::{BuildContext, BuildError};

/// The bulk action of every document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Add or replace the document.
    #[default]
    Index,
    /// Add it only if its `_id` is new (what data streams need).
    Create,
}

super::http::network_sink_config! {
    /// `[sinks.NAME] type = "elasticsearch"`.
    pub struct ElasticsearchConfig {
        /// The cluster: `http://127.0.0.1:9200` (requests go to `/_bulk`).
        pub endpoint: String,
        /// The index of each event: `{field}`, `{field|lower}`, `{%Y.%m.%d}`
        /// (UTC, when sent); lowercased, characters Elasticsearch refuses
        /// made `_`.
        #[serde(default = "default_index")]
        pub index: String,
        #[serde(default)]
        pub action: Action,
        /// The field whose value is the document `_id` (idempotent retries).
        #[serde(default)]
        pub id_field: Option<String>,
    }
}

fn default_index() -> String {
    "logs-{%Y.%m.%d}".to_string()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_in_flight() -> usize {
    4
}
fn default_max_events() -> usize {
    2000
}
fn default_max_bytes() -> usize {
    10 << 20
}
fn default_retry_for() -> Duration {
    Duration::from_secs(60)
}

/// The bulk protocol of one sink.
struct Bulk {
    index: Template,
    action: Action,
    id_field: Option<String>,
    compression: Compression,
    uri: hyper::Uri,
}

/// A name part of an index: lowercase, without what Elasticsearch refuses.
fn index_part(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':' => out.push('_'),
            c if c.is_control() => out.push('_'),
            c => out.extend(c.to_lowercase()),
        }
    }
}

impl Bulk {
    /// The index and `_id` of an event.
    fn target(
        &self,
        event: &[u8],
        now: &chrono::DateTime<chrono::Utc>,
    ) -> (String, Option<String>) {
        let text = std::str::from_utf8(event).unwrap_or("{}");
        let fields = top_fields(text).unwrap_or_default();
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| scalar_text(v))
        };
        let mut index = String::new();
        for part in &self.index.parts {
            match part {
                Part::Literal(s) => index_part(s, &mut index),
                Part::Field(name, case) => {
                    let v = field(name);
                    index_part(&case.apply(v.as_deref().unwrap_or("unknown")), &mut index)
                }
                Part::Time(fmt) => index_part(&now.format(fmt).to_string(), &mut index),
                Part::Rest => {}
            }
        }
        let id = self
            .id_field
            .as_deref()
            .and_then(|f| field(f).map(|v| v.into_owned()));
        (index, id)
    }
}

impl Protocol for Bulk {
    fn encode(&self, events: &[&[u8]]) -> Body {
        let now = chrono::Utc::now();
        let bytes: usize = events.iter().map(|e| e.len() + 64).sum();
        let mut out = Vec::with_capacity(bytes);
        let action = match self.action {
            Action::Index => "index",
            Action::Create => "create",
        };
        for e in events {
            let (index, id) = self.target(e, &now);
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(action.as_bytes());
            out.extend_from_slice(b"\":{\"_index\":");
            push_json_str(&mut out, &index);
            if let Some(id) = id {
                out.extend_from_slice(b",\"_id\":");
                push_json_str(&mut out, &id);
            }
            out.extend_from_slice(b"}}\n");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Body::new(out, "application/x-ndjson", self.compression)
    }

    fn decide(&self, answer: &Answer, events: &[&[u8]]) -> Decision {
        if !answer.status.is_success() {
            return StatusRetry.decide(answer);
        }
        let Ok(reply) = serde_json::from_slice::<BulkReply>(&answer.body) else {
            return Decision::Retry {
                after: None,
                reason: "the bulk answer is not JSON".into(),
            };
        };
        if !reply.errors {
            return Decision::Delivered;
        }
        if reply.items.len() != events.len() {
            return Decision::Retry {
                after: None,
                reason: format!(
                    "a bulk answer of {} items for {} documents",
                    reply.items.len(),
                    events.len()
                ),
            };
        }
        let (mut retry, mut refused) = (Vec::new(), Vec::new());
        for (i, item) in reply.items.iter().enumerate() {
            let Some(result) = item.values().next() else {
                retry.push(i);
                continue;
            };
            let status = result.status;
            let exists = status == 409 && self.action == Action::Create && self.id_field.is_some();
            if (200..300).contains(&status) || exists {
                continue;
            }
            if status == 429 || status >= 500 {
                retry.push(i);
                continue;
            }
            let (kind, reason) = result
                .error
                .as_ref()
                .map(|e| (e.kind.as_str(), e.reason.as_str()))
                .unwrap_or(("error", ""));
            refused.push((
                i,
                format!("elasticsearch refused the document ({status} {kind}): {reason}"),
            ));
        }
        Decision::Partial {
            reason: format!(
                "{} documents throttled or failed, retried alone",
                retry.len()
            ),
            retry,
            refused,
            after: None,
        }
    }

    fn uri<'a>(&'a self, _: &'a Core) -> &'a hyper::Uri {
        &self.uri
    }
}

/// What matters of a bulk answer.
#[derive(Debug, Deserialize)]
struct BulkReply {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<BulkError>,
}

#[derive(Debug, Deserialize)]
struct BulkError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

impl SinkKind for ElasticsearchConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let requests = self.requests()?;
        let index = Template::parse(&self.index, false).map_err(|e| BuildError::key("index", e))?;
        let bulk_uri = format!("{}/_bulk", self.endpoint.trim_end_matches('/'));
        let core = self.core("endpoint", &self.endpoint, &self.headers)?;
        let uri = bulk_uri
            .parse()
            .map_err(|e| BuildError::key("endpoint", format!("not a URI: {e}")))?;
        Ok(Box::new(NetworkSink {
            proto: Arc::new(Bulk {
                index,
                action: self.action,
                id_field: self.id_field.clone(),
                compression: self.compress,
                uri,
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

    fn bulk(index: &str, action: Action, id: Option<&str>) -> Bulk {
        Bulk {
            index: Template::parse(index, false).unwrap(),
            action,
            id_field: id.map(str::to_string),
            compression: Compression::None,
            uri: "http://x/_bulk".parse().unwrap(),
        }
    }

    #[test]
    fn bulk_bodies_name_index_and_id() {
        let b = bulk("Logs-{service}-{%Y}", Action::Create, Some("id"));
        let body = b.encode(&[br#"{"service":"Or ders","id":"a-1","n":1}"#, br#"{"n":2}"#]);
        let text = String::from_utf8(body.bytes.to_vec()).unwrap();
        let year = chrono::Utc::now().format("%Y").to_string();
        assert_eq!(
            text,
            format!("{{\"create\":{{\"_index\":\"logs-or_ders-{year}\",\"_id\":\"a-1\"}}}}\n{{\"service\":\"Or ders\",\"id\":\"a-1\",\"n\":1}}\n{{\"create\":{{\"_index\":\"logs-unknown-{year}\"}}}}\n{{\"n\":2}}\n")
        );
    }

    #[test]
    fn bulk_answers_are_read_item_by_item() {
        let b = bulk("logs", Action::Create, Some("id"));
        let answer = |body: &str| Answer {
            status: hyper::StatusCode::OK,
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        let events: Vec<&[u8]> = vec![b"{}"; 4];
        assert_eq!(
            b.decide(&answer(r#"{"errors":false,"items":[]}"#), &events),
            Decision::Delivered
        );
        let partial = r#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#;
        match b.decide(&answer(partial), &events) {
            Decision::Partial { retry, refused, .. } => {
                assert_eq!(retry, [1]);
                assert_eq!(refused.len(), 1);
                assert_eq!(refused[0].0, 2);
                assert!(
                    refused[0].1.contains("mapper_parsing_exception"),
                    "{}",
                    refused[0].1
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
