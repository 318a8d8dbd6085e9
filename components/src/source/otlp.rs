//! `type = "otlp"`: OpenTelemetry logs over OTLP/HTTP (`POST /v1/logs`,
//! protobuf or JSON, gzip or not), what an OpenTelemetry SDK's or
//! Collector's OTLP/HTTP exporter sends, and with `grpc_address` over
//! OTLP/gRPC too (`LogsService/Export`, on tonic).
//!
//! The HTTP source's server with an OTLP body: the same limits (body size
//! before and after gunzip, connections, bytes in flight), backpressure
//! (`503` with `Retry-After`, which OTLP exporters retry), bearer auth and
//! `ack = "delivered"`. Each log record becomes one event as
//! [`crate::base::otlp`] maps it (resource, scope, severity, trace
//! context and attributes kept), and the answer is an empty
//! `ExportLogsServiceResponse` in the request's encoding.

use std::time::Duration;

use serde::Deserialize;

use super::http::{AckMode, BodyFormat, HttpConfig};
use super::{Source, SourceKind};
use crate::base::settings::{duration, size, BatchOverride, BuildContext, BuildError, TypeTag};

/// `[sources.NAME] type = "otlp"`. Its limits default as the HTTP
/// source's do.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Where to listen (OTLP/HTTP's port is 4318). The default is loopback
    /// only: listening beyond this machine takes an explicit address.
    #[serde(default = "default_address")]
    pub address: String,
    /// Where OTLP/gRPC is served too (`0.0.0.0:4317`); none: HTTP only.
    #[serde(default)]
    pub grpc_address: Option<String>,
    /// HTTPS for OTLP/HTTP (as the `http` source's `tls`).
    #[serde(default)]
    pub tls: Option<crate::base::tls::ServerTls>,
    /// The path logs are posted to.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest body, before and after decompression.
    #[serde(default = "super::http::default_max_body", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    pub max_body: usize,
    /// Most log records one request may carry.
    #[serde(default = "super::http::default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// Most bytes of bodies being read and parsed at once.
    #[serde(default = "super::http::default_max_in_flight", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    pub max_in_flight: usize,
    /// Most connections open at once; more wait to be accepted.
    #[serde(default = "super::http::default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "super::http::default_read_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub read_timeout: Duration,
    /// A variable holding the bearer token every request must carry.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    #[serde(default)]
    pub ack: AckMode,
    #[serde(default = "super::http::default_ack_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub ack_timeout: Duration,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
    /// The record's attributes as top-level fields (`order_id`, not
    /// `attributes.order_id`), the shape the `http` source gives Python's
    /// `HTTPHandler` records; an attribute named as a field the event
    /// already has stays under `attributes`.
    #[serde(default)]
    pub flatten_attributes: bool,
}

fn default_address() -> String {
    "127.0.0.1:4318".to_string()
}
fn default_path() -> String {
    "/v1/logs".to_string()
}

impl OtlpSourceConfig {
    /// The HTTP source this one is.
    fn http(&self) -> HttpConfig {
        HttpConfig {
            _type: TypeTag::new("http"),
            address: self.address.clone(),
            paths: vec![self.path.clone()],
            format: BodyFormat::Json,
            max_body: self.max_body,
            required: Vec::new(),
            levels: Vec::new(),
            max_field: None,
            partial: false,
            ack: self.ack,
            ack_timeout: self.ack_timeout,
            idempotency_window: Duration::ZERO,
            auth_token_env: self.auth_token_env.clone(),
            cors: None,
            max_events_per_request: self.max_events_per_request,
            max_in_flight: self.max_in_flight,
            max_connections: self.max_connections,
            read_timeout: self.read_timeout,
            batch: self.batch,
            timestamp: None,
            otlp: true,
            otlp_flatten_attributes: self.flatten_attributes,
            grpc_address: self.grpc_address.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl SourceKind for OtlpSourceConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        if !self.path.starts_with('/') {
            return Err(BuildError::key("path", "write a path that starts with `/`"));
        }
        self.http().build(cx)
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }

    fn listens_on(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("address", self.address.as_str())];
        if let Some(g) = &self.grpc_address {
            out.push(("grpc_address", g.as_str()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #36: an `otlp` source without `address` listened on every interface.
    #[test]
    fn listens_on_loopback_unless_told_otherwise() {
        let c: OtlpSourceConfig = toml::from_str("type = \"otlp\"").unwrap();
        assert_eq!(c.address, "127.0.0.1:4318");
        assert_eq!(c.grpc_address, None);
    }
}
