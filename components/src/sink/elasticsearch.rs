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

use serde::Deserialize;
use toml::Spanned;

use super::file::{Part, Template};
use super::http::core::{
    Answer, Body, Compression, Core, Decision, Protocol, RetryLogic, StatusRetry, MAX_ANSWER,
};
use super::http::NetworkSink;
use super::{inputs_field, Sink, SinkKind};
use crate::base::event::{push_json_str, scalar_text, top_fields};
use crate::base::settings::{BuildContext, BuildError};

/// The bulk action of every document.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Add or replace the document.
    #[default]
    Index,
    /// Add it only if its `_id` is new (what data streams need).
    Create,
}

super::http::network_sink_config! {
    defaults {
        request_timeout_secs: 60,
        max_in_flight: 4,
        max_events: 2000,
        max_bytes: 10 << 20,
        retry_for_secs: 60,
    }
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

impl Bulk {
    fn action_name(&self) -> &'static str {
        match self.action {
            Action::Index => "index",
            Action::Create => "create",
        }
    }

    /// The `_id` sent with an event (`id_field`'s value), if any.
    fn id_of(&self, event: &[u8]) -> Option<String> {
        let f = self.id_field.as_deref()?;
        let text = std::str::from_utf8(event).ok()?;
        let fields = top_fields(text).unwrap_or_default();
        fields
            .iter()
            .find(|(k, _)| k == f)
            .and_then(|(_, v)| scalar_text(v))
            .map(|v| v.into_owned())
    }
}

impl Protocol for Bulk {
    fn encode(&self, events: &[&[u8]]) -> Body {
        let now = chrono::Utc::now();
        let bytes: usize = events.iter().map(|e| e.len() + 64).sum();
        let mut out = Vec::with_capacity(bytes);
        let action = self.action_name();
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

    /// Each document is acknowledged only by its own item of the answer:
    /// the items must be as many as the documents, each under the action
    /// sent, and with `id_field`, carry the document's `_id` (an answer
    /// out of order is not read by position). An answer that does not
    /// account for every document (`{}`, `[]`, too few or too many items,
    /// an `_id` out of place, a body past the read limit) acknowledges
    /// nothing: the request is retried (and counted in `retries`).
    fn decide(&self, answer: &Answer, events: &[&[u8]]) -> Decision {
        if !answer.status.is_success() {
            return StatusRetry.decide(answer);
        }
        let retry = |reason: String| Decision::Retry {
            after: None,
            reason,
        };
        if answer.truncated {
            return retry(format!(
                "the bulk answer for {} documents is longer than the {} bytes read for it",
                events.len(),
                self.answer_limit(events.len())
            ));
        }
        let reply = match serde_json::from_slice::<BulkReply>(&answer.body) {
            Ok(r) => r,
            Err(e) => return retry(format!("the bulk answer is not a bulk reply: {e}")),
        };
        let Some(items) = reply.items else {
            return retry("the bulk answer has no `items`: it acknowledges nothing".into());
        };
        if items.len() != events.len() {
            return retry(format!(
                "a bulk answer of {} items for {} documents",
                items.len(),
                events.len()
            ));
        }
        let action = self.action_name();
        let (mut again, mut refused) = (Vec::new(), Vec::new());
        for (i, (item, event)) in items.iter().zip(events).enumerate() {
            let result = match (item.len(), item.get(action)) {
                (1, Some(result)) => result,
                _ => {
                    return retry(format!(
                        "item {i} of the bulk answer is not one `{action}` result"
                    ))
                }
            };
            if let Some(id) = self.id_of(event) {
                if result.id.as_deref() != Some(id.as_str()) {
                    return retry(format!(
                        "item {i} of the bulk answer is for `_id` {:?}, not {id:?}: answered out of order",
                        result.id.as_deref().unwrap_or("")
                    ));
                }
            }
            let status = result.status;
            let exists = status == 409 && self.action == Action::Create && self.id_field.is_some();
            if (200..300).contains(&status) || exists {
                continue;
            }
            if status == 429 || status >= 500 {
                again.push(i);
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
        if again.is_empty() && refused.is_empty() {
            return Decision::Delivered;
        }
        Decision::Partial {
            reason: format!(
                "{} documents throttled or failed, retried alone",
                again.len()
            ),
            retry: again,
            refused,
            after: None,
        }
    }

    /// An item is a few hundred bytes (index, `_id`, version, shards; an
    /// error's reason more): 4 KiB per document beyond the common 1 MiB.
    fn answer_limit(&self, events: usize) -> usize {
        MAX_ANSWER.saturating_add(events.saturating_mul(4096))
    }

    fn uri<'a>(&'a self, _: &'a Core) -> &'a hyper::Uri {
        &self.uri
    }
}

/// What matters of a bulk answer.
/// A bulk answer. `errors` is not trusted: every item is read.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct BulkReply {
    #[serde(default)]
    items: Option<Vec<BTreeMap<String, BulkItem>>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct BulkItem {
    status: u16,
    #[serde(rename = "_id", default)]
    id: Option<String>,
    #[serde(default)]
    error: Option<BulkError>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct BulkError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
}

impl SinkKind for ElasticsearchConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let requests = self.requests()?;
        let index = Template::parse(&self.index, false).map_err(|e| BuildError::key("index", e))?;
        let bulk_uri = format!("{}/_bulk", self.endpoint.trim_end_matches('/'));
        let core = self.core(cx, "endpoint", &self.endpoint, &self.headers)?;
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
    use proptest::prelude::*;

    proptest! {
        /// Any answer body: never a panic, and a document is acknowledged
        /// only when the answer has an item for it.
        #[test]
        fn prop_bulk_answers_never_acknowledge_unseen_documents(
            body in "[{}\\[\\],:\"a-z_0-9 ]{0,200}",
            n in 1usize..4,
        ) {
            let b = bulk("logs", Action::Index, None);
            let events: Vec<&[u8]> = vec![b"{}"; n];
            let answer = Answer {
                status: hyper::StatusCode::OK,
                headers: hyper::HeaderMap::new(),
                body: bytes::Bytes::from(body.clone()),
                truncated: false,
            };
            let decided = b.decide(&answer, &events);
            if decided == Decision::Delivered {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                prop_assert_eq!(v["items"].as_array().map(Vec::len), Some(n));
            }
        }
    }

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
            truncated: false,
        };
        let events: Vec<&[u8]> = vec![
            br#"{"id":"a"}"#,
            br#"{"id":"b"}"#,
            br#"{"id":"c"}"#,
            br#"{"id":"d"}"#,
        ];
        let partial = r#"{"errors":true,"items":[
            {"create":{"_id":"a","status":201}},
            {"create":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"_id":"d","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#;
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
        let all = r#"{"errors":false,"items":[{"create":{"_id":"a","status":201}},{"create":{"_id":"b","status":201}},
            {"create":{"_id":"c","status":201}},{"create":{"_id":"d","status":201}}]}"#;
        assert_eq!(b.decide(&answer(all), &events), Decision::Delivered);
    }

    /// #36: a 200 with `{}`, `[]` or no items acknowledged every document,
    /// and items out of order dead-lettered the wrong event.
    #[test]
    fn answers_that_account_for_no_document_acknowledge_none() {
        let b = bulk("logs", Action::Index, Some("id"));
        let answer = |body: &str, truncated: bool| Answer {
            status: hyper::StatusCode::OK,
            headers: hyper::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
            truncated,
        };
        let events: Vec<&[u8]> = vec![br#"{"id":"a"}"#, br#"{"id":"b"}"#];
        let retried = |body: &str, truncated: bool| {
            matches!(
                b.decide(&answer(body, truncated), &events),
                Decision::Retry { .. }
            )
        };
        assert!(retried("{}", false));
        assert!(retried("[]", false));
        assert!(retried(r#"{"errors":false,"items":[]}"#, false));
        assert!(retried(r#"{"errors":false}"#, false));
        assert!(retried(
            r#"{"errors":false,"items":[{"index":{"_id":"a","status":201}}]}"#,
            false
        ));
        // Out of order: the 400 is b's, not a's.
        assert!(retried(
            r#"{"errors":true,"items":[{"index":{"_id":"b","status":400}},{"index":{"_id":"a","status":201}}]}"#,
            false
        ));
        // Another action than the one sent.
        assert!(retried(
            r#"{"errors":false,"items":[{"create":{"_id":"a","status":201}},{"create":{"_id":"b","status":201}}]}"#,
            false
        ));
        let ok = r#"{"errors":false,"items":[{"index":{"_id":"a","status":201}},{"index":{"_id":"b","status":200}}]}"#;
        assert!(retried(ok, true), "a truncated answer is not read");
        assert_eq!(b.decide(&answer(ok, false), &events), Decision::Delivered);
        // Without `id_field`, items are matched by position and count.
        let plain = bulk("logs", Action::Index, None);
        let events: Vec<&[u8]> = vec![b"{}", b"{}"];
        let two = r#"{"errors":false,"items":[{"index":{"_id":"x1","status":201}},{"index":{"_id":"x2","status":201}}]}"#;
        assert_eq!(
            plain.decide(&answer(two, false), &events),
            Decision::Delivered
        );
    }

    /// #36: a valid 1.34 MB answer to 6,000 documents was read as empty and
    /// the batch retried forever; the limit grows with the batch.
    #[test]
    fn the_answer_read_grows_with_the_batch() {
        let b = bulk("logs", Action::Index, None);
        let item = r#"{"index":{"_index":"logs-2026.12.05","_id":"Xq3vZJMBxSg9-2tqdl1E","_version":1,"result":"created","_shards":{"total":2,"successful":1,"failed":0},"_seq_no":123456,"_primary_term":1,"status":201}}"#;
        let answer_len = 40 + 6000 * (item.len() + 1);
        assert!(answer_len > MAX_ANSWER);
        assert!(b.answer_limit(6000) > answer_len);
    }
}
