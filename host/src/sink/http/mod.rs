//! `type = "http"`: batches of events POSTed to any URL, as NDJSON or a
//! JSON array: for Logstash, Vector, Fluent Bit's HTTP input, or a service
//! of one's own.
//!
//! Built on [`core`], the HTTP core every network sink shares: a keep-alive
//! pool, TLS with the system's roots, gzip, auth, `max_in_flight` requests
//! at once, retries with the shared backoff honouring `Retry-After`, the
//! fallback breaker, and events refused for good (a 4xx) dead-lettered with
//! the answer's reason. A request's events are acknowledged only after a
//! 2xx covers them.

pub mod core;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use self::core::{
    Answer, Auth, Body, Compression, Core, CoreConfig, Decision, Outlets, Protocol, RetryLogic,
    StatusRetry,
};
use super::{inputs_field, Sink, SinkContext, SinkKind};
use crate::base::settings::{bounded, duration, size, BuildContext, BuildError, TypeTag};
use crate::delivery::Breaker;

/// How a request's events are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of the events (`application/json`).
    Json,
}

/// `[sinks.NAME] type = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Where batches are POSTed: `http://host:port/path` or `https://...`.
    pub uri: String,
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub compress: Compression,
    /// More request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Longest wait for an answer to one request.
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Most events in one request (queued batches are put together up to it).
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Most bytes of events in one request (before gzip).
    #[serde(default = "default_max_bytes", with = "size")]
    pub max_bytes: usize,
    /// How long to retry a request before it goes to `fallback`.
    /// How long a request waits for more queued batches to fill it (up to
    /// `max_events` / `max_bytes`) before it goes; `"0s"`: it goes with
    /// what is queued.
    #[serde(default, with = "duration")]
    pub max_wait: Duration,
    #[serde(default = "default_retry_for", with = "duration")]
    pub retry_for: Duration,
    /// The sink that takes what the target would not (events marked with
    /// `_sluice_error`). Without it, requests are retried until they work.
    #[serde(default)]
    pub fallback: Option<Spanned<String>>,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    4
}
fn default_max_events() -> usize {
    1000
}
fn default_max_bytes() -> usize {
    10 << 20
}
fn default_retry_for() -> Duration {
    Duration::from_secs(30)
}

impl SinkKind for HttpSinkConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let requests = Requests {
            max_in_flight: self.max_in_flight,
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            max_wait: self.max_wait,
            retry_for: self.retry_for,
        };
        requests.check(self.request_timeout)?;
        let core = Core::new(CoreConfig {
            uri: &self.uri,
            headers: &self.headers,
            auth: self.auth.as_ref(),
            compression: self.compress,
            request_timeout: self.request_timeout,
        })?;
        Ok(Box::new(NetworkSink {
            core: Arc::new(core),
            proto: Arc::new(Generic {
                encoding: self.encoding,
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

/// The generic sink's protocol: its events as NDJSON or one JSON array,
/// and [`StatusRetry`] for the answers.
struct Generic {
    encoding: Encoding,
    compression: Compression,
}

impl Protocol for Generic {
    fn encode(&self, events: &[&[u8]]) -> Body {
        let bytes: usize = events.iter().map(|e| e.len() + 1).sum();
        let mut out = Vec::with_capacity(bytes + 2);
        let content_type = match self.encoding {
            Encoding::Ndjson => {
                for e in events {
                    out.extend_from_slice(e);
                    out.push(b'\n');
                }
                "application/x-ndjson"
            }
            Encoding::Json => {
                out.push(b'[');
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(e);
                }
                out.push(b']');
                "application/json"
            }
        };
        Body::new(out, content_type, self.compression)
    }

    fn decide(&self, answer: &Answer, _: &[&[u8]]) -> Decision {
        StatusRetry.decide(answer)
    }
}

/// How a network sink groups and sends its requests.
pub struct Requests {
    pub max_in_flight: usize,
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
    pub retry_for: Duration,
}

impl Requests {
    /// Every network sink's limits, checked the same way.
    pub fn check(&self, request_timeout: Duration) -> Result<(), BuildError> {
        bounded("max_in_flight", self.max_in_flight, 1, 1024)?;
        bounded("max_events", self.max_events, 1, 1_000_000)?;
        bounded("max_bytes", self.max_bytes, 1, 1 << 30)?;
        bounded(
            "request_timeout",
            request_timeout,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        bounded(
            "max_wait",
            self.max_wait,
            Duration::ZERO,
            Duration::from_secs(60),
        )?;
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )
    }
}

/// A built network sink: its client, its protocol, how it sends.
pub struct NetworkSink {
    pub core: Arc<Core>,
    pub proto: Arc<dyn Protocol>,
    pub requests: Requests,
}

impl Sink for NetworkSink {
    fn start(self: Box<Self>, ctx: SinkContext) -> crate::base::settings::Task {
        Box::pin(run_requests(ctx, self.core, self.proto, self.requests))
    }
}

/// The run of every network sink: put queued batches together into
/// requests (up to `max_events` and `max_bytes`), keep `max_in_flight` of
/// them going (a full set is backpressure), each delivered by
/// [`core::deliver`] with the sink's protocol.
pub async fn run_requests(
    mut ctx: SinkContext,
    core: Arc<Core>,
    proto: Arc<dyn Protocol>,
    r: Requests,
) -> anyhow::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(r.max_in_flight));
    let out = Outlets {
        sink: ctx.name.clone(),
        metrics: ctx.metrics.clone(),
        dead: ctx.dead.clone(),
        fallback: ctx.fallback.clone(),
        retry_for: r.retry_for,
        breaker: Arc::new(Breaker::default()),
        down_because: Arc::default(),
    };
    let mut requests = tokio::task::JoinSet::new();
    while let Some(first) = ctx.input.recv().await {
        let (mut events, mut bytes) = (first.len(), first.bytes());
        let mut batches = vec![first];
        let until = tokio::time::Instant::now() + r.max_wait;
        while events < r.max_events && bytes < r.max_bytes {
            let next = match ctx.input.try_recv() {
                Ok(b) => Some(b),
                Err(_) if r.max_wait.is_zero() => None,
                // Wait for more, up to `max_wait` after the first.
                Err(_) => tokio::time::timeout_at(until, ctx.input.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            let Some(b) = next else { break };
            events += b.len();
            bytes += b.bytes();
            batches.push(b);
        }
        let slot = slots.clone().acquire_owned().await?;
        while requests.try_join_next().is_some() {}
        let (core, proto, out) = (core.clone(), proto.clone(), out.clone());
        requests.spawn(async move {
            self::core::deliver(core, proto, out, batches).await;
            drop(slot);
        });
    }
    while requests.join_next().await.is_some() {}
    Ok(())
}
