//! The one HTTP core of the network sinks: a keep-alive connection pool
//! (HTTP/1.1, TLS with the system's roots), request timeouts, gzip bodies,
//! headers and auth, and the delivery of one request with retries.
//!
//! The transport and the decision are apart, as in Vector's
//! `RetryLogic`: the core sends and retries; each sink says what an answer
//! means ([`RetryLogic::decide`]). The generic rule ([`StatusRetry`]) is
//! 2xx delivered, 408, 429 and 5xx retried (honouring `Retry-After`), any
//! other answer refused for good: those events go to the dead letters with
//! the answer's reason, never retried for ever.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::http::core";

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::base::event::SharedBatch;
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Output;
use crate::base::settings::BuildError;
use crate::delivery::backoff::parse_retry_after;
use crate::delivery::{Backoff, Breaker, DeadLetter, DeadLetters, ErrorKind};

/// First and longest wait between two attempts at a request.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Most bytes of an answer kept to read it (a refusal's reason), unless
/// the protocol reads more ([`Protocol::answer_limit`]).
pub const MAX_ANSWER: usize = 1 << 20;

/// `auth = {...}` of a network sink. Secrets come from the environment, so
/// the pipeline file holds none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer $VAR`.
    Bearer { bearer_env: String },
    /// HTTP basic auth, the password from `$VAR`.
    Basic { user: String, password_env: String },
}

/// Request bodies: as they are, or gzipped.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// A request body, ready to send (and to send again).
#[derive(Debug, Clone)]
pub struct Body {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

impl Body {
    /// `bytes`, gzipped when `compression` says so.
    pub fn new(bytes: Vec<u8>, content_type: &'static str, compression: Compression) -> Self {
        let bytes = match compression {
            Compression::None => bytes,
            Compression::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(bytes.len() / 4),
                    flate2::Compression::fast(),
                );
                enc.write_all(&bytes).expect("writing to a Vec cannot fail");
                enc.finish().expect("writing to a Vec cannot fail")
            }
        };
        Self {
            bytes: Bytes::from(bytes),
            content_type,
        }
    }
}

/// An answer: its status, headers and (the first MiB of) its body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body was longer than the protocol reads ([`Protocol::answer_limit`]):
    /// `body` is empty, and the answer must not be taken as read.
    pub truncated: bool,
}

/// What an answer means for the events of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: acknowledge them.
    Delivered,
    /// Try again (after at least `after`, if the server said).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Refused for good: to the dead letters with the reason.
    Refused(String),
    /// Some events of the request were taken and some not (a bulk answer
    /// item by item): the events at `retry` (indexes into the request's
    /// events) are sent again, those at `refused` go to the dead letters
    /// with their reason, the others are delivered.
    Partial {
        retry: Vec<usize>,
        refused: Vec<(usize, String)>,
        after: Option<Duration>,
        reason: String,
    },
}

/// How a sink reads answers.
pub trait RetryLogic: Send + Sync + 'static {
    fn decide(&self, answer: &Answer) -> Decision;
}

/// What a network sink sends and how it reads the answers: the one part
/// each sink supplies to the shared core.
pub trait Protocol: Send + Sync + 'static {
    /// The request body for these events (all of a request's, or those
    /// left to retry).
    fn encode(&self, events: &[&[u8]]) -> Body;

    /// What the answer to the request of `events` means.
    fn decide(&self, answer: &Answer, events: &[&[u8]]) -> Decision;

    /// Where the request goes (the sink's `uri`, or a path under it).
    fn uri<'a>(&'a self, core: &'a Core) -> &'a Uri {
        &core.uri
    }

    /// Most bytes of the answer to a request of `events` events that are
    /// read (an answer that lists every event grows with the batch).
    fn answer_limit(&self, events: usize) -> usize {
        let _ = events;
        MAX_ANSWER
    }
}

/// The generic rule: 2xx delivered; 408, 429, 5xx retried with
/// `Retry-After`; any other status refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusRetry;

/// An answer's reason, for logs and dead letters: its status and the
/// start of its body.
pub fn reason(answer: &Answer) -> String {
    let text = String::from_utf8_lossy(&answer.body[..answer.body.len().min(500)]);
    format!("HTTP {}: {}", answer.status.as_u16(), text.trim())
}

impl RetryLogic for StatusRetry {
    fn decide(&self, answer: &Answer) -> Decision {
        let s = answer.status;
        if s.is_success() {
            return Decision::Delivered;
        }
        if s == StatusCode::TOO_MANY_REQUESTS
            || s == StatusCode::REQUEST_TIMEOUT
            || s.is_server_error()
        {
            let after = answer
                .headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Decision::Retry {
                after,
                reason: reason(answer),
            };
        }
        Decision::Refused(reason(answer))
    }
}

/// The client side every network sink shares.
pub struct Core {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub uri: Uri,
    headers: HeaderMap,
    request_timeout: Duration,
}

/// What a network sink's config gives the core.
pub struct CoreConfig<'a> {
    pub uri: &'a str,
    pub headers: &'a BTreeMap<String, String>,
    pub auth: Option<&'a Auth>,
    pub compression: Compression,
    pub request_timeout: Duration,
    /// The sink's own TLS (`tls = {...}`); `None`: the system's roots.
    pub tls: Option<rustls::ClientConfig>,
    /// The name the server's certificate must hold, if not the URI's host.
    pub server_name: Option<String>,
}

impl Core {
    /// Check the settings (a URI, header names, the auth variables set)
    /// and make the pool.
    pub fn new(c: CoreConfig<'_>) -> Result<Self, BuildError> {
        let uri: Uri = c
            .uri
            .parse()
            .map_err(|e| BuildError::key("uri", format!("not a URI: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(BuildError::key(
                "uri",
                "write http://HOST:PORT/PATH or https://...",
            ));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| BuildError::key("headers", format!("`{k}`: {e}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|e| BuildError::key("headers", format!("`{k}`: {e}")))?;
            headers.insert(name, value);
        }
        let env = |var: &str| {
            let value = std::env::var(var)
                .map_err(|_| BuildError::key("auth", format!("names `{var}`, which is not set")))?;
            crate::base::secrets::register(&value);
            Ok::<_, BuildError>(value)
        };
        if let Some(auth) = c.auth {
            let value = match auth {
                Auth::Bearer { bearer_env } => format!("Bearer {}", env(bearer_env)?),
                Auth::Basic { user, password_env } => {
                    use base64::Engine as _;
                    let pair = format!("{user}:{}", env(password_env)?);
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    )
                }
            };
            let mut value = HeaderValue::from_str(&value)
                .map_err(|e| BuildError::key("auth", format!("not a header value: {e}")))?;
            value.set_sensitive(true);
            headers.insert(hyper::header::AUTHORIZATION, value);
        }
        if c.compression == Compression::Gzip {
            headers.insert(
                hyper::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        let builder = match c.tls {
            Some(config) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
            None => hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| {
                    BuildError::whole(format!("cannot load the system's TLS roots: {e}"))
                })?,
        };
        let builder = builder.https_or_http();
        let builder = match c.server_name {
            Some(name) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| BuildError::key("tls", format!("server_name `{name}`: {e}")))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let https = builder.enable_http1().build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(Self {
            client,
            uri,
            headers,
            request_timeout: c.request_timeout,
        })
    }

    /// One request; an error is a connection failure or a timeout.
    pub async fn send(&self, method: Method, uri: &Uri, body: &Body) -> Result<Answer, String> {
        self.send_reading(method, uri, body, MAX_ANSWER).await
    }

    /// One request whose answer is read up to `limit` bytes (past it, the
    /// answer is `truncated`).
    pub async fn send_reading(
        &self,
        method: Method,
        uri: &Uri,
        body: &Body,
        limit: usize,
    ) -> Result<Answer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(hyper::header::CONTENT_TYPE, body.content_type);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body.bytes.clone()))
            .map_err(|e| format!("cannot make the request: {e}"))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                use std::error::Error;
                if let Some((reason, detail)) = crate::base::tls::reason_in_chain(&e) {
                    return format!("TLS with {} failed: {reason} ({detail})", self.uri);
                }
                let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
                format!("cannot reach {}: {e}{cause}", self.uri)
            })?;
            let (parts, incoming) = resp.into_parts();
            let (body, truncated) = match http_body_util::Limited::new(incoming, limit)
                .collect()
                .await
            {
                Ok(b) => (b.to_bytes(), false),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => (Bytes::new(), true),
                Err(e) => return Err(format!("reading the answer of {}: {e}", self.uri)),
            };
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
                truncated,
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer from {} within request_timeout ({:?})",
                self.uri, self.request_timeout
            )),
        }
    }

    /// Whether the target answers at all (any status below 500 but 429):
    /// what the fallback breaker's probe asks.
    pub async fn probe(&self) -> bool {
        let empty = Body {
            bytes: Bytes::new(),
            content_type: "application/json",
        };
        match self.send(Method::HEAD, &self.uri, &empty).await {
            Ok(a) => !a.status.is_server_error() && a.status != StatusCode::TOO_MANY_REQUESTS,
            Err(_) => false,
        }
    }
}

/// Where a request's events go when they are not delivered.
#[derive(Clone)]
pub struct Outlets {
    pub sink: Arc<str>,
    pub metrics: Arc<ComponentMetrics>,
    pub dead: Option<DeadLetters>,
    pub fallback: Option<Output>,
    pub retry_for: Duration,
    pub breaker: Arc<Breaker>,
    /// Why the target is known down: what marks the events sent straight
    /// to the fallback while the breaker is open.
    pub down_because: Arc<std::sync::Mutex<String>>,
}

/// Deliver one request's batches: send, read the answer, retry with the
/// shared backoff while it says so (all the events, or after a partial
/// answer only those it asks again), then give up to the fallback (after
/// `retry_for`; straight away while the breaker is open) or, refused for
/// good, to the dead letters. The batches are dropped (acknowledged) only
/// when every one of their events is delivered or dead-lettered.
pub async fn deliver(
    core: Arc<Core>,
    proto: Arc<dyn Protocol>,
    out: Outlets,
    batches: Vec<SharedBatch>,
) {
    let events: Vec<&[u8]> = batches.iter().flat_map(|b| b.iter()).collect();
    // The events still to deliver, by index into `events`.
    let mut pending: Vec<usize> = (0..events.len()).collect();
    let mut delivered = 0usize;
    let started = Instant::now();
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        if out.breaker.is_open() {
            if let Some(fallback) = &out.fallback {
                let reason = out
                    .down_because
                    .lock()
                    .expect("reason lock poisoned")
                    .clone();
                to_fallback(&out, fallback, &batches, &events, &pending, &reason).await;
                break;
            }
        }
        let now: Vec<&[u8]> = pending.iter().map(|&i| events[i]).collect();
        let body = proto.encode(&now);
        let sent_at = Instant::now();
        ComponentMetrics::add(&out.metrics.requests, 1);
        let limit = proto.answer_limit(now.len());
        let sent = core
            .send_reading(Method::POST, proto.uri(&core), &body, limit)
            .await;
        let (after, reason) = match sent {
            Ok(answer) => match proto.decide(&answer, &now) {
                Decision::Delivered => {
                    out.metrics.batch_seconds.observe(sent_at.elapsed());
                    if backoff.attempts() > 0 {
                        tracing::info!(target: LOG_TARGET, sink = %out.sink, "delivering again");
                    }
                    out.metrics.set_down(None);
                    delivered += pending.len();
                    break;
                }
                Decision::Refused(reason) => {
                    let refused: Vec<(usize, String)> =
                        (0..now.len()).map(|i| (i, reason.clone())).collect();
                    refuse(&out, &batches, &now, &refused).await;
                    break;
                }
                Decision::Partial {
                    retry,
                    refused,
                    after,
                    reason,
                } => {
                    out.metrics.batch_seconds.observe(sent_at.elapsed());
                    refuse(&out, &batches, &now, &refused).await;
                    let taken = now.len() - retry.len() - refused.len();
                    delivered += taken;
                    pending = retry
                        .iter()
                        .filter_map(|&i| pending.get(i).copied())
                        .collect();
                    if pending.is_empty() {
                        out.metrics.set_down(None);
                        break;
                    }
                    (after, reason)
                }
                Decision::Retry { after, reason } => (after, reason),
            },
            Err(e) => {
                if let Some(reason) = crate::base::tls::reason_of_message(&e) {
                    out.metrics.tls_error(reason);
                }
                (None, e)
            }
        };
        ComponentMetrics::add(&out.metrics.retries, 1);
        out.metrics.set_down(Some(reason.clone()));
        if let Some(fallback) = &out.fallback {
            if started.elapsed() >= out.retry_for {
                to_fallback(&out, fallback, &batches, &events, &pending, &reason).await;
                *out.down_because.lock().expect("reason lock poisoned") = reason;
                let core = core.clone();
                out.breaker.trip(&out.sink, move || {
                    let core = core.clone();
                    async move { core.probe().await }
                });
                break;
            }
        }
        let delay = backoff.next_delay_after(after);
        if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
            tracing::warn!(target: LOG_TARGET, sink = %out.sink, error = %reason, retry_in_ms = delay.as_millis() as u64, attempts = backoff.attempts(), pending = pending.len(), "request failed; retrying");
        }
        tokio::time::sleep(delay).await;
    }
    let bytes: usize = batches.iter().map(|b| b.bytes()).sum();
    for b in &batches {
        out.metrics.tap.offer(b);
        out.metrics.count_fields(b);
    }
    let all = events.len();
    ComponentMetrics::add(&out.metrics.events_in, all);
    ComponentMetrics::add(&out.metrics.bytes_in, bytes);
    ComponentMetrics::add(&out.metrics.events_out, delivered);
    ComponentMetrics::add(&out.metrics.bytes_out, bytes * delivered / all.max(1));
}

async fn to_fallback(
    out: &Outlets,
    fallback: &Output,
    batches: &[SharedBatch],
    events: &[&[u8]],
    pending: &[usize],
    reason: &str,
) {
    tracing::debug!(target: LOG_TARGET, sink = %out.sink, events = pending.len(), "to the fallback sink");
    ComponentMetrics::add(&out.metrics.failed, pending.len());
    let mut left = crate::base::event::Batch::with_capacity(pending.len(), pending.len() * 256);
    for &i in pending {
        left.push(events[i]);
    }
    // The fallback's write acknowledges the sources: it carries their acks.
    left.acks = batches
        .iter()
        .flat_map(|b| b.acks.iter().cloned())
        .collect();
    if fallback
        .send(0, crate::sink::marked(&left, reason))
        .await
        .is_err()
    {
        left.acks.iter().for_each(|a| a.fail());
    }
}

/// Events the target refused for good (`refused`: indexes into `events`,
/// with their reasons): dead letters.
async fn refuse(
    out: &Outlets,
    batches: &[SharedBatch],
    events: &[&[u8]],
    refused: &[(usize, String)],
) {
    if refused.is_empty() {
        return;
    }
    let letters: Vec<DeadLetter<'_>> = refused
        .iter()
        .filter_map(|(i, reason)| {
            Some(DeadLetter {
                event: events.get(*i)?,
                kind: ErrorKind::Rejected,
                message: reason.clone(),
            })
        })
        .collect();
    match &out.dead {
        Some(dead) => {
            let acks: Vec<_> = batches
                .iter()
                .flat_map(|b| b.acks.iter().cloned())
                .collect();
            dead.send(&out.metrics, &letters, &acks).await;
        }
        None => {
            ComponentMetrics::add(&out.metrics.failed, letters.len());
            tracing::error!(target: LOG_TARGET, sink = %out.sink, events = letters.len(), error = %letters[0].message, "events refused for good are lost: this sink reads the dead letters itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Answer {
            truncated: false,
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn statuses_decide_delivered_retry_or_refused() {
        let l = StatusRetry;
        assert_eq!(l.decide(&answer(200, &[], "")), Decision::Delivered);
        assert_eq!(l.decide(&answer(204, &[], "")), Decision::Delivered);
        assert_eq!(
            l.decide(&answer(429, &[("retry-after", "7")], "slow down")),
            Decision::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429: slow down".into()
            }
        );
        assert!(matches!(
            l.decide(&answer(503, &[], "")),
            Decision::Retry { after: None, .. }
        ));
        assert_eq!(
            l.decide(&answer(400, &[], "mapper_parsing_exception")),
            Decision::Refused("HTTP 400: mapper_parsing_exception".into())
        );
        assert!(matches!(
            l.decide(&answer(404, &[], "")),
            Decision::Refused(_)
        ));
    }
}
