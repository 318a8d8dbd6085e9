//! `type = "otlp"`: events out as OTLP/HTTP protobuf logs
//! (`POST {endpoint}/v1/logs`) to an OpenTelemetry Collector or any OTLP
//! receiver, on the shared HTTP core: batching, gzip, auth, retries with
//! the shared backoff (`429`, `502`, `503`, `504` and other 5xx, honouring
//! `Retry-After`), the fallback breaker, and a request refused for good
//! (`400`) dead-lettered with the receiver's reason.
//!
//! The mapping is the `otlp` source's reversed ([`crate::base::otlp`]):
//! `level` gives the severity number and text, `message` the body,
//! `trace_id`/`span_id` the trace context, `resource` and the fields named
//! in `resource_fields` the resource, every other field the attributes.
//! An answer with `partial_success` (records the receiver dropped) is
//! logged with its reason: OTLP does not say which records those were.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::otlp";

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use toml::Spanned;

use super::http::core::{Answer, Body, Compression, Decision, Protocol, RetryLogic, StatusRetry};
use super::http::NetworkSink;
use super::{inputs_field, Sink, SinkKind};
use crate::base::settings::{BuildContext, BuildError};

super::http::network_sink_config! {
    defaults {
        request_timeout_secs: 10,
        max_in_flight: 4,
        max_events: 1000,
        max_bytes: 4 << 20,
        retry_for_secs: 60,
    }
    /// `[sinks.NAME] type = "otlp"`.
    pub struct OtlpSinkConfig {
        /// The receiver: `http://collector:4318` (logs go to `/v1/logs`
        /// under it), or the full URL of its logs path.
        pub endpoint: String,
        /// Resource attributes taken from event fields: attribute -> field.
        #[serde(default = "default_resource_fields")]
        pub resource_fields: BTreeMap<String, String>,
    }
}

fn default_resource_fields() -> BTreeMap<String, String> {
    BTreeMap::from([("service.name".to_string(), "service".to_string())])
}

/// The URL logs are posted to: `endpoint`, with `/v1/logs` added unless
/// it already names that path.
fn logs_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/logs") {
        e.to_string()
    } else {
        format!("{e}/v1/logs")
    }
}

impl SinkKind for OtlpSinkConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let requests = self.requests()?;
        let core = self.core(cx, "endpoint", &logs_url(&self.endpoint), &self.headers)?;
        for (attr, field) in &self.resource_fields {
            if attr.is_empty() || field.is_empty() {
                return Err(BuildError::key(
                    "resource_fields",
                    "write `\"attribute.name\" = \"event_field\"` pairs",
                ));
            }
        }
        Ok(Box::new(NetworkSink {
            core: Arc::new(core),
            proto: Arc::new(Otlp {
                resource_fields: self.resource_fields.clone(),
                compression: self.compress,
            }),
            requests,
        }))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}

struct Otlp {
    resource_fields: BTreeMap<String, String>,
    compression: Compression,
}

impl Protocol for Otlp {
    fn encode(&self, events: &[&[u8]]) -> Body {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let req = crate::base::otlp::to_request(events, &self.resource_fields, now);
        Body::new(
            req.encode_to_vec(),
            "application/x-protobuf",
            self.compression,
        )
    }

    fn decide(&self, answer: &Answer, events: &[&[u8]]) -> Decision {
        let decision = StatusRetry.decide(answer);
        if decision == Decision::Delivered {
            if let Ok(resp) = ExportLogsServiceResponse::decode(&answer.body[..]) {
                if let Some(p) = resp.partial_success.filter(|p| p.rejected_log_records > 0) {
                    tracing::warn!(target: LOG_TARGET, rejected = p.rejected_log_records,
                        of = events.len(),
                        reason = %p.error_message,
                        "the OTLP receiver dropped some log records of a request (partial_success)"
                    );
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::logs_url;

    #[test]
    fn the_logs_path_is_added_once() {
        assert_eq!(logs_url("http://c:4318"), "http://c:4318/v1/logs");
        assert_eq!(logs_url("http://c:4318/"), "http://c:4318/v1/logs");
        assert_eq!(logs_url("http://c:4318/v1/logs"), "http://c:4318/v1/logs");
        assert_eq!(logs_url("http://gw/otlp"), "http://gw/otlp/v1/logs");
    }
}
