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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use self::core::{
    Answer, Body, Compression, Core, Decision, Outlets, Protocol, RetryLogic, StatusRetry,
};
use super::{inputs_field, Sink, SinkContext, SinkKind};
use crate::base::event::SharedBatch;
use crate::base::settings::{bounded, BuildContext, BuildError};
use crate::delivery::Breaker;

/// How a request's events are laid out.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// One JSON array of the events (`application/json`).
    Json,
}

/// Declares a network sink's config: its own keys, then the keys every
/// network sink has, named, documented and checked the same way, with the
/// sink's defaults for them (`defaults { request_timeout_secs: 30,
/// max_in_flight: 4, max_events: 1000, max_bytes: 10 << 20,
/// retry_for_secs: 30 }`).
macro_rules! network_sink_config {
    (
        defaults {
            request_timeout_secs: $timeout:expr,
            max_in_flight: $in_flight:expr,
            max_events: $events:expr,
            max_bytes: $bytes:expr,
            retry_for_secs: $retry:expr $(,)?
        }
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        fn default_request_timeout() -> std::time::Duration {
            std::time::Duration::from_secs($timeout)
        }
        fn default_max_in_flight() -> usize {
            $in_flight
        }
        fn default_max_events() -> usize {
            $events
        }
        fn default_max_bytes() -> usize {
            $bytes
        }
        fn default_retry_for() -> std::time::Duration {
            std::time::Duration::from_secs($retry)
        }

        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(rename = "type")]
            _type: $crate::base::settings::TypeTag,
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Components this sink reads (may be empty for a `fallback` target).
            #[serde(default)]
            #[schemars(with = "Vec<String>")]
            pub inputs: Vec<toml::Spanned<String>>,
            #[serde(default)]
            pub compress: $crate::sink::http::core::Compression,
            /// More request headers.
            #[serde(default)]
            pub headers: std::collections::BTreeMap<String, String>,
            /// Authentication: `{ bearer_env = "VAR" }` or `{ user = "...",
            /// password_env = "VAR" }` (the secrets from the environment).
            #[serde(default)]
            pub auth: Option<$crate::sink::http::core::Auth>,
            /// Longest wait for an answer to one request.
            #[serde(default = "default_request_timeout", with = "crate::base::settings::duration")]
            #[schemars(with = "crate::base::settings::schema::Duration")]
            pub request_timeout: std::time::Duration,
            /// Requests in flight at once.
            #[serde(default = "default_max_in_flight")]
            pub max_in_flight: usize,
            /// Most events in one request (queued batches are put together up to it).
            #[serde(default = "default_max_events")]
            pub max_events: usize,
            /// Most bytes of events in one request (before gzip).
            #[serde(default = "default_max_bytes", with = "crate::base::settings::size")]
            #[schemars(with = "crate::base::settings::schema::Size")]
            pub max_bytes: usize,
            /// How long a request waits for more queued batches to fill it (up
            /// to `max_events` / `max_bytes`) before it goes; `"0s"`: it goes
            /// with what is queued.
            #[serde(default, with = "crate::base::settings::duration")]
            #[schemars(with = "crate::base::settings::schema::Duration")]
            pub max_wait: std::time::Duration,
            /// How long to retry a request before it goes to `fallback`.
            #[serde(default = "default_retry_for", with = "crate::base::settings::duration")]
            #[schemars(with = "crate::base::settings::schema::Duration")]
            pub retry_for: std::time::Duration,
            /// The sink that takes what the target would not (events marked
            /// with `_sluice_error`). Without it, requests are retried until
            /// they work.
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub fallback: Option<toml::Spanned<String>>,
            /// TLS of `https://` targets: `{ ca_file, cert_file, key_file,
            /// server_name, verify }`.
            #[serde(default)]
            pub tls: Option<$crate::base::tls::ClientTls>,
        }

        impl $name {
            /// How the sink sends its requests, within bounds.
            fn requests(
                &self,
            ) -> Result<$crate::sink::http::Requests, $crate::base::settings::BuildError> {
                let requests = $crate::sink::http::Requests {
                    max_in_flight: self.max_in_flight,
                    max_events: self.max_events,
                    max_bytes: self.max_bytes,
                    max_wait: self.max_wait,
                    retry_for: self.retry_for,
                };
                requests.check(self.request_timeout)?;
                Ok(requests)
            }

            /// The sink's client for `uri`, the value of its key `uri_key`,
            /// sending `headers`.
            fn core(
                &self,
                cx: &$crate::base::settings::BuildContext<'_>,
                uri_key: &'static str,
                uri: &str,
                headers: &std::collections::BTreeMap<String, String>,
            ) -> Result<$crate::sink::http::core::Core, $crate::base::settings::BuildError> {
                let tls = match &self.tls {
                    Some(t) => Some(t.resolved(cx).client_config(cx.name, &[])?),
                    None => None,
                };
                $crate::sink::http::core::Core::new($crate::sink::http::core::CoreConfig {
                    uri,
                    headers,
                    auth: self.auth.as_ref(),
                    compression: self.compress,
                    request_timeout: self.request_timeout,
                    tls,
                    server_name: self.tls.as_ref().and_then(|t| t.server_name.clone()),
                })
                .map_err(|e| match e.key {
                    Some("uri") => $crate::base::settings::BuildError::key(uri_key, e.message),
                    _ => e,
                })
            }
        }
    };
}
pub(crate) use network_sink_config;

network_sink_config! {
    defaults {
        request_timeout_secs: 30,
        max_in_flight: 4,
        max_events: 1000,
        max_bytes: 10 << 20,
        retry_for_secs: 30,
    }
    /// `[sinks.NAME] type = "http"`.
    pub struct HttpSinkConfig {
        /// Where batches are POSTed: `http://host:port/path` or `https://...`.
        pub uri: String,
        #[serde(default)]
        pub encoding: Encoding,
    }
}

impl SinkKind for HttpSinkConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        let requests = self.requests()?;
        let core = self.core(cx, "uri", &self.uri, &self.headers)?;
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

/// Cut a batch into pieces of at most `max_events` events and `max_bytes`
/// bytes (an event larger than `max_bytes` goes alone), each holding the
/// batch's acknowledgements, so a source is answered once every piece is.
fn split(
    batch: SharedBatch,
    max_events: usize,
    max_bytes: usize,
    into: &mut VecDeque<SharedBatch>,
) {
    if batch.len() <= max_events && batch.bytes() <= max_bytes {
        into.push_back(batch);
        return;
    }
    let mut start = 0;
    while start < batch.len() {
        let (mut end, mut bytes) = (start, 0usize);
        while end < batch.len() && end - start < max_events {
            let size = batch.get(end).len();
            if end > start && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            end += 1;
        }
        let mut piece = batch.slice(start..end);
        piece.acks = batch.acks.clone();
        into.push_back(Arc::new(piece));
        start = end;
    }
}

/// The run of every network sink: put queued batches together into
/// requests (up to `max_events` and `max_bytes`; a larger batch is cut),
/// keep `max_in_flight` of them going (a full set is backpressure), each
/// delivered by [`core::deliver`] with the sink's protocol.
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
    // Pieces of batches cut to the request limits, not sent yet.
    let mut queue: VecDeque<SharedBatch> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match ctx.input.recv().await {
                Some(b) => split(b, r.max_events, r.max_bytes, &mut queue),
                None => break,
            }
        }
        let first = queue.pop_front().expect("a piece was just queued");
        let (mut events, mut bytes) = (first.len(), first.bytes());
        let mut batches = vec![first];
        let until = tokio::time::Instant::now() + r.max_wait;
        while events < r.max_events && bytes < r.max_bytes {
            if queue.is_empty() {
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
                split(b, r.max_events, r.max_bytes, &mut queue);
            }
            let b = queue.front().expect("a piece was just queued");
            if events + b.len() > r.max_events || bytes + b.bytes() > r.max_bytes {
                break;
            }
            let b = queue.pop_front().expect("checked above");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ack::Ack;
    use crate::base::event::Batch;

    #[test]
    fn a_batch_past_the_limits_is_cut_and_each_piece_holds_its_acks() {
        let events: Vec<String> = (0..10).map(|i| format!("{{\"n\":{i}}}")).collect();
        let mut batch = Batch::from_events(events.iter().map(|e| e.as_bytes()));
        let acked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let a = acked.clone();
        batch.acks.push(Ack::new(move |ok| {
            a.store(ok, std::sync::atomic::Ordering::SeqCst)
        }));
        let mut queue = VecDeque::new();
        split(Arc::new(batch), 3, usize::MAX, &mut queue);
        let sizes: Vec<usize> = queue.iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let all: Vec<&[u8]> = queue.iter().flat_map(|b| b.iter()).collect();
        assert_eq!(all, events.iter().map(|e| e.as_bytes()).collect::<Vec<_>>());
        // By bytes: 7-byte events, at most 15 bytes a piece -> 2 each.
        let mut by_bytes = VecDeque::new();
        split(queue[0].clone(), 100, 15, &mut by_bytes);
        assert_eq!(by_bytes.iter().map(|b| b.len()).collect::<Vec<_>>(), [2, 1]);
        // The source hears once every piece is gone.
        queue.pop_front();
        drop(by_bytes);
        assert!(!acked.load(std::sync::atomic::Ordering::SeqCst));
        queue.clear();
        assert!(acked.load(std::sync::atomic::Ordering::SeqCst));
    }
}
