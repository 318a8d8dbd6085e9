//! `type = "http"`: a logging service. Apps and browser front ends `POST`
//! events to it; it validates them, answers, and queues them.
//!
//! Bodies: a JSON object, a JSON array of objects, newline-delimited JSON,
//! plain text lines (`format = "text"`), or an HTML form (what Python's
//! `logging.handlers.HTTPHandler` sends); `Content-Encoding: gzip` too. The
//! body is limited to `max_body` bytes before and after decompression, so a
//! gzip bomb is refused without the memory growing. A full pipeline answers
//! `503` with `Retry-After` rather than queueing without bound.
//!
//! With `ack = "delivered"` the response waits until every sink has written
//! the events (or `ack_timeout` passes: `504`).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::http";

mod body;
pub mod form;
mod grpc;
mod idempotency;
pub mod listener;
mod server;

use self::server::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Map, Value};

use self::body::Rejection;
use self::idempotency::{Claim, Keys, Ticket};
use self::listener::Acceptor;
use super::{Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::event::{Batch, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{
    bounded, duration, size, BatchOverride, BuildContext, BuildError, Task, TypeTag,
};

/// When the source answers a request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once the events are queued in the pipeline.
    #[default]
    Accepted,
    /// Once every sink they are routed to has written them.
    Delivered,
}

/// How request bodies are read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// JSON object, array of objects, or NDJSON (and forms).
    #[default]
    Json,
    /// Every line is a text message (JSON bodies still accepted).
    Text,
}

/// CORS for browser front ends.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins; `"*"` allows any.
    pub origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    #[serde(default = "default_max_age")]
    pub max_age: u64,
}

fn default_max_age() -> u64 {
    600
}

/// `[sources.NAME] type = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(rename = "type")]
    pub(crate) _type: TypeTag,
    /// Where to listen: `0.0.0.0:8080`.
    pub address: String,
    /// Paths that accept `POST`s (default `/api/log`).
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    #[serde(default)]
    pub format: BodyFormat,
    /// Largest body, before and after decompression: bytes or "10MiB".
    #[serde(default = "default_max_body", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    #[schemars(range(min = 1, max = 1 << 30))]
    pub max_body: usize,
    /// Fields every event must have.
    #[serde(default)]
    pub required: Vec<String>,
    /// Allowed values of `level` (any case); empty allows any.
    #[serde(default)]
    pub levels: Vec<String>,
    /// Largest string value of any field, in bytes.
    #[serde(default, with = "size::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Size>")]
    pub max_field: Option<usize>,
    /// Accept the valid events of a request and list the rejected ones,
    /// instead of refusing the whole request.
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub ack: AckMode,
    /// Longest wait for delivery with `ack = "delivered"`.
    #[serde(default = "default_ack_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub ack_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered: a retried request with
    /// the same key within it is answered without queueing its events again.
    #[serde(default = "default_idempotency_window", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub idempotency_window: Duration,
    /// Name of an environment variable holding a bearer token that every
    /// request must carry (`Authorization: Bearer ...`).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// Answers browsers' CORS preflight requests and marks answers for the
    /// origins listed, so a web page may post its logs.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Most events one request may carry (`413` beyond): a bound on what
    /// one body of tiny events (`[{},{},...]`) grows to once parsed.
    #[serde(default = "default_max_events_per_request")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_events_per_request: usize,
    /// Most bytes of request bodies being read and parsed at once, across
    /// requests (`503` with `Retry-After` beyond).
    #[serde(default = "default_max_in_flight", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    pub max_in_flight: usize,
    /// Most connections open at once; the others are answered `503` at once.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_connections: usize,
    /// Longest a client may take to send its headers, and then its body.
    #[serde(default = "default_read_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub read_timeout: Duration,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    /// Bodies are OTLP logs requests (set by the `otlp` source, not a key).
    #[serde(skip)]
    pub otlp: bool,
    /// The OTLP records' attributes at the top level (the `otlp` source's
    /// `flatten_attributes`).
    #[serde(skip)]
    pub otlp_flatten_attributes: bool,
    /// Where OTLP/gRPC is served besides (set by the `otlp` source).
    #[serde(skip)]
    pub grpc_address: Option<String>,
    /// HTTPS: `tls = { cert_file, key_file, client_ca_file, min_version }`.
    /// With `client_ca_file`, each event gets `_sluice.peer`: the subject
    /// of the client's certificate.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ServerTls>,
}

fn default_paths() -> Vec<String> {
    vec!["/api/log".to_string()]
}
pub(super) fn default_max_body() -> usize {
    10 << 20
}
pub(super) fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_max_events_per_request() -> usize {
    100_000
}
pub(super) fn default_max_in_flight() -> usize {
    64 << 20
}
const HOUR: Duration = Duration::from_secs(3600);
pub(super) fn default_max_connections() -> usize {
    1024
}
fn default_idempotency_window() -> Duration {
    Duration::from_secs(600)
}
pub(super) fn default_read_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A built HTTP source: its config and the token read from the environment.
struct HttpSource {
    cfg: HttpConfig,
    token: Option<String>,
}

impl SourceKind for HttpConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        bounded("max_body", self.max_body, 1, 1 << 30)?;
        let mut cfg = self.clone();
        if let Some(tls) = &self.tls {
            let tls = tls.resolved(cx);
            for warning in tls.check()? {
                tracing::warn!(target: LOG_TARGET, source = cx.name, "{warning}");
            }
            cfg.tls = Some(tls);
        }
        bounded(
            "max_events_per_request",
            self.max_events_per_request,
            1,
            1_000_000,
        )?;
        bounded("max_in_flight", self.max_in_flight, self.max_body, 16 << 30)?;
        bounded("max_connections", self.max_connections, 1, 65_536)?;
        if let Some(f) = self.max_field {
            bounded("max_field", f, 1, self.max_body)?;
        }
        bounded(
            "ack_timeout",
            self.ack_timeout,
            Duration::from_millis(1),
            HOUR,
        )?;
        bounded(
            "read_timeout",
            self.read_timeout,
            Duration::from_millis(1),
            HOUR,
        )?;
        bounded(
            "idempotency_window",
            self.idempotency_window,
            Duration::ZERO,
            24 * HOUR,
        )?;
        if let Some(g) = &self.grpc_address {
            grpc::address(g).map_err(|e| BuildError::key("grpc_address", e))?;
        }
        let token = match &self.auth_token_env {
            Some(var) => {
                let token = std::env::var(var).map_err(|_| {
                    BuildError::key("auth_token_env", format!("names `{var}`, which is not set"))
                })?;
                crate::base::secrets::register(&token);
                Some(token)
            }
            None => None,
        };
        Ok(Box::new(HttpSource { cfg, token }))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }

    fn listens_on(&self) -> Vec<(&'static str, &str)> {
        vec![("address", &self.address)]
    }
}

impl Source for HttpSource {
    fn start(self: Box<Self>, ctx: SourceContext) -> Task {
        Box::pin(self.cfg.run(self.token, ctx))
    }
}

impl HttpConfig {
    /// Serve until shutdown; `token` is what `auth_token_env` names.
    async fn run(self, token: Option<String>, ctx: SourceContext) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.address)
            .await
            .with_context(|| format!("source {}: cannot listen on {}", ctx.name, self.address))?;
        let local: SocketAddr = listener.local_addr()?;
        tracing::info!(target: LOG_TARGET, source = %ctx.name, address = %local, paths = ?self.paths, "http source listening");
        let mut shutdown = ctx.shutdown.clone();
        let read_timeout = self.read_timeout;
        let tls = match &self.tls {
            Some(t) => Some(
                crate::base::tls::TlsListener::new(
                    t,
                    &ctx.name,
                    &[b"http/1.1"],
                    Some(ctx.metrics.clone()),
                )
                .map_err(|e| anyhow::anyhow!("source {}: tls: {e}", ctx.name))?,
            ),
            None => None,
        };
        let server = Arc::new(Server {
            keys: Keys::new(self.idempotency_window),
            in_flight: Arc::new(tokio::sync::Semaphore::new(self.max_in_flight / 1024)),
            cfg: self,
            ctx,
            token,
            clock: std::sync::Mutex::new(Clock::default()),
        });
        let mut acceptor = Acceptor::new(
            listener,
            format!("source {}", server.ctx.name),
            server.cfg.max_connections,
        )
        .with_metrics(server.ctx.metrics.clone());
        let mut grpc = match &server.cfg.grpc_address {
            Some(g) => {
                let address = grpc::address(g).map_err(anyhow::Error::msg)?;
                Some(tokio::spawn(grpc::serve(
                    server.clone(),
                    address,
                    server.ctx.shutdown.clone(),
                )))
            }
            None => None,
        };
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                ended = async { grpc.as_mut().expect("guarded").await }, if grpc.is_some() => {
                    grpc = None;
                    match ended {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(e),
                        Err(e) => anyhow::bail!("source {}: OTLP/gRPC crashed: {e}", server.ctx.name),
                    }
                }
                stream = acceptor.next() => {
                    let server = server.clone();
                    let tls = tls.clone();
                    acceptor.spawn(async move {
                        let builder = {
                            let mut b = hyper::server::conn::http1::Builder::new();
                            b.timer(TokioTimer::new()).header_read_timeout(read_timeout);
                            b
                        };
                        let ended = match tls {
                            None => {
                                let service = service_fn(move |req| server.clone().handle(req));
                                builder.serve_connection(TokioIo::new(stream), service).await
                            }
                            Some(tls) => {
                                let Some((stream, peer)) = tls.accept(stream).await else {
                                    return;
                                };
                                let service = service_fn(move |mut req: Request<Incoming>| {
                                    if let Some(p) = &peer {
                                        req.extensions_mut().insert(p.clone());
                                    }
                                    server.clone().handle(req)
                                });
                                builder.serve_connection(TokioIo::new(stream), service).await
                            }
                        };
                        if let Err(e) = ended {
                            tracing::debug!(target: LOG_TARGET, error = %e, "http source: connection ended with an error");
                        }
                    });
                }
            }
        }
        // Stop accepting; let requests in flight finish (they hold the
        // output), but not forever.
        acceptor.drain(Duration::from_secs(5)).await;
        if let Some(grpc) = grpc {
            // It stops on the same shutdown; requests in flight finish.
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), grpc).await {
                tracing::warn!(target: LOG_TARGET, error = %format!("{e:#}"), "otlp/grpc ended with an error");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_in_any_case_compared_whole() {
        assert_eq!(bearer_token("Bearer s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("bearer  s3cret "), Some("s3cret"));
        assert_eq!(bearer_token("BEARER s3cret"), Some("s3cret"));
        assert_eq!(bearer_token("Basic czNjcmV0"), None);
        assert!(same_secret("s3cret", "s3cret"));
        assert!(!same_secret("s3cre", "s3cret"));
        assert!(!same_secret("s3creT", "s3cret"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size::parse("10MiB"), Ok(10 << 20));
        assert_eq!(size::parse("512KiB"), Ok(512 << 10));
        assert_eq!(size::parse("1MB"), Ok(1_000_000));
        assert_eq!(size::parse("42"), Ok(42));
        assert!(size::parse("10 parsecs").is_err());
    }
}
