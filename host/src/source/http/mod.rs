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

mod body;
pub mod form;
mod grpc;
mod idempotency;
pub mod listener;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Once the events are queued in the pipeline.
    #[default]
    Accepted,
    /// Once every sink they are routed to has written them.
    Delivered,
}

/// How request bodies are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// JSON object, array of objects, or NDJSON (and forms).
    #[default]
    Json,
    /// Every line is a text message (JSON bodies still accepted).
    Text,
}

/// CORS for browser front ends.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub max_body: usize,
    /// Fields every event must have.
    #[serde(default)]
    pub required: Vec<String>,
    /// Allowed values of `level` (any case); empty allows any.
    #[serde(default)]
    pub levels: Vec<String>,
    /// Largest string value of any field, in bytes.
    #[serde(default, with = "size::option")]
    pub max_field: Option<usize>,
    /// Accept the valid events of a request and list the rejected ones,
    /// instead of refusing the whole request.
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub ack: AckMode,
    /// Longest wait for delivery with `ack = "delivered"`.
    #[serde(default = "default_ack_timeout", with = "duration")]
    pub ack_timeout: Duration,
    /// How long an `Idempotency-Key` is remembered: a retried request with
    /// the same key within it is answered without queueing its events again.
    #[serde(default = "default_idempotency_window", with = "duration")]
    pub idempotency_window: Duration,
    /// Name of an environment variable holding a bearer token that every
    /// request must carry (`Authorization: Bearer ...`).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Most events one request may carry (`413` beyond): a bound on what
    /// one body of tiny events (`[{},{},...]`) grows to once parsed.
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// Most bytes of request bodies being read and parsed at once, across
    /// requests (`503` with `Retry-After` beyond).
    #[serde(default = "default_max_in_flight", with = "size")]
    pub max_in_flight: usize,
    /// Most connections open at once; the others are answered `503` at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Longest a client may take to send its headers, and then its body.
    #[serde(default = "default_read_timeout", with = "duration")]
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

type Body = BoxBody<Bytes, Infallible>;

fn json_reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))).boxed())
        .expect("static response parts are valid")
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_reply(status, &serde_json::json!({ "error": message.into() }))
}

struct Server {
    cfg: HttpConfig,
    ctx: SourceContext,
    token: Option<String>,
    clock: std::sync::Mutex<Clock>,
    /// The `Idempotency-Key`s seen within `idempotency_window`.
    keys: Arc<Keys>,
    /// `max_in_flight`, in KiB: the bytes of bodies being read and parsed.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// Whether a request with this `Authorization` header may send
    /// events (any may, without `auth_token_env`).
    fn authorized(&self, authorization: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => authorization
                .and_then(bearer_token)
                .is_some_and(|g| same_secret(g, token)),
        }
    }

    /// Whether the pipeline has no room for a batch now (counted as busy:
    /// the request is answered at once instead of queued).
    fn full(&self) -> bool {
        let full = !self.ctx.output.has_room();
        if full {
            ComponentMetrics::add(&self.ctx.metrics.busy, 1);
        }
        full
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let Some(cors) = &self.cfg.cors else {
            return Ok(self.clone().respond(req).await);
        };
        // CORS answers name the one origin asking, if it is allowed: a list
        // in the header is invalid, and browsers would refuse every origin.
        let origin = req.headers().get(hyper::header::ORIGIN).cloned();
        let any = cors.origins.iter().any(|o| o == "*");
        let allowed = origin
            .as_ref()
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| any || cors.origins.iter().any(|a| a == o));
        if req.method() == Method::OPTIONS && !allowed {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "this origin may not send events here (cors.origins)",
            ));
        }
        let mut resp = self.clone().respond(req).await;
        let headers = resp.headers_mut();
        if any {
            headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        } else {
            headers.insert(hyper::header::VARY, HeaderValue::from_static("origin"));
            // Not a browser's request (no Origin): with one allowed origin,
            // naming it is still a valid answer.
            let single = || match cors.origins.as_slice() {
                [only] => HeaderValue::from_str(only).ok(),
                _ => None,
            };
            let allow = match origin {
                Some(o) => allowed.then_some(o),
                None => single(),
            };
            if let Some(o) = allow {
                headers.insert("access-control-allow-origin", o);
            }
        }
        Ok(resp)
    }

    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if let Some(refused) = self.refusal(&req) {
            return refused;
        }
        let headers = req.headers();
        let gzip = match body::check_headers(headers, self.cfg.max_body) {
            Ok(g) => g,
            Err((status, message)) => return error(status, message),
        };
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut ticket = None;
        if let Some(key) = key.filter(|k| !k.is_empty()) {
            match self.claim(&key).await {
                Ok(t) => ticket = Some(t),
                Err(answer) => return answer,
            }
        }
        // Backpressure: a full pipeline answers at once instead of queueing.
        if self.full() {
            return full();
        }
        // The bytes this request may take while it is read and parsed, out
        // of `max_in_flight` across requests: what a gzip body may grow to,
        // or what it says it is.
        let announced = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let need = match (gzip, announced) {
            (false, Some(n)) => n.min(self.cfg.max_body),
            _ => self.cfg.max_body,
        };
        let Ok(reading) = self
            .in_flight
            .clone()
            .try_acquire_many_owned(need.div_ceil(1024).max(1) as u32)
        else {
            ComponentMetrics::add(&self.ctx.metrics.busy, 1);
            return full();
        };
        let peer = req
            .extensions()
            .get::<crate::base::tls::Peer>()
            .map(|p| p.0.clone());
        let read = body::read(
            req.into_body(),
            gzip,
            self.cfg.max_body,
            self.cfg.read_timeout,
        );
        let otlp = match self.cfg.otlp {
            false => None,
            true => match crate::base::otlp::Encoding::of(&content_type) {
                Some(e) => Some(e),
                None => {
                    return error(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "send OTLP logs as application/x-protobuf or application/json",
                    )
                }
            },
        };
        let events = match read.await.and_then(|b| {
            let events = match otlp {
                None => body::parse(&self.cfg, &content_type, &b)?,
                Some(encoding) => {
                    let _decoding = self.charge_decoding(encoding, &b)?;
                    let req = crate::base::otlp::decode_request(encoding, &b)
                        .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
                    crate::base::otlp::events_within(
                        &req,
                        self.cfg.max_events_per_request,
                        self.cfg.otlp_flatten_attributes,
                    )
                    .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, e))?
                }
            };
            Ok((events, b.len()))
        }) {
            Ok(e) => e,
            Err((status, message)) => return error(status, message),
        };
        let mut events = events;
        if let Some(peer) = peer {
            // Who sent them, by their client certificate (mutual TLS).
            for e in &mut events.0 {
                if let serde_json::Value::Object(map) = e {
                    let meta = map
                        .entry("_sluice")
                        .or_insert_with(|| serde_json::Value::Object(Default::default()));
                    if let serde_json::Value::Object(meta) = meta {
                        meta.insert("peer".into(), peer.as_ref().into());
                    }
                }
            }
        }
        let (batch, rejected) = self.batch(events.0, events.1);
        drop(reading);
        ComponentMetrics::add(&self.ctx.metrics.failed, rejected.len());
        if !rejected.is_empty() && !self.cfg.partial {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "invalid events; nothing was accepted", "rejected": rejected }),
            );
        }
        let accepted = batch.len();
        if let Err(refused) = self.deliver(batch, ticket).await {
            return refused;
        }
        if let Some(encoding) = otlp {
            return Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, encoding.content_type())
                .body(Full::new(Bytes::from(crate::base::otlp::success_body(encoding))).boxed())
                .expect("static response parts are valid");
        }
        let mut body = serde_json::json!({ "accepted": accepted });
        if !rejected.is_empty() {
            body["rejected"] = serde_json::to_value(&rejected).unwrap_or_default();
        }
        json_reply(StatusCode::OK, &body)
    }

    /// The answer to what is not a `POST` of events by someone allowed (an
    /// unknown path, another method, a missing token) and to CORS
    /// preflights; `None` to go on.
    fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let path = req.uri().path();
        if !self.cfg.paths.iter().any(|p| p == path) {
            if self.cfg.otlp {
                return Some(error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no such path; this OTLP source takes logs at {} (traces and metrics are not taken)",
                        self.cfg.paths.join(" or ")
                    ),
                ));
            }
            return Some(error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such path; send events to {}",
                    self.cfg.paths.join(" or ")
                ),
            ));
        }
        if req.method() == Method::OPTIONS {
            if let Some(cors) = &self.cfg.cors {
                return Some(
                    Response::builder()
                        .status(StatusCode::NO_CONTENT)
                        .header("access-control-allow-methods", "POST, OPTIONS")
                        .header(
                            "access-control-allow-headers",
                            "content-type, content-encoding, authorization",
                        )
                        .header("access-control-max-age", cors.max_age.to_string())
                        .body(Full::new(Bytes::new()).boxed())
                        .expect("static response parts are valid"),
                );
            }
        }
        if req.method() != Method::POST {
            return Some(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "send events with POST",
            ));
        }
        let authorization = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !self.authorized(authorization) {
            return Some(
                Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("www-authenticate", "Bearer")
                    .header(CONTENT_TYPE, "application/json")
                    .body(
                        Full::new(Bytes::from(
                            "{\"error\":\"a valid bearer token is required\"}\n",
                        ))
                        .boxed(),
                    )
                    .expect("static response parts are valid"),
            );
        }
        None
    }

    /// Before an OTLP body is decoded: refuse it past
    /// `max_events_per_request` records (counted on the wire), and hold
    /// what decoding it will take out of `max_in_flight` (decoding
    /// multiplies size: two bytes of an empty record are hundreds in
    /// memory). The permit is held while the request is decoded.
    pub(super) fn charge_decoding(
        &self,
        encoding: crate::base::otlp::Encoding,
        body: &[u8],
    ) -> Result<tokio::sync::OwnedSemaphorePermit, (StatusCode, String)> {
        let cost =
            crate::base::otlp::cost(encoding, body).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        let max = self.cfg.max_events_per_request;
        if cost.records.is_some_and(|n| n > max) {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("more than {max} log records in one request (max_events_per_request)"),
            ));
        }
        let kib = cost.bytes.div_ceil(1024).max(1);
        if kib > self.cfg.max_in_flight / 1024 {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "this request decodes to about {} MiB, more than max_in_flight ({} MiB)",
                    cost.bytes >> 20,
                    self.cfg.max_in_flight >> 20
                ),
            ));
        }
        self.in_flight
            .clone()
            .try_acquire_many_owned(kib as u32)
            .map_err(|_| {
                ComponentMetrics::add(&self.ctx.metrics.busy, 1);
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests are being decoded; retry later".to_string(),
                )
            })
    }

    /// The arrival time for an event without one. The lock is held for
    /// the clock's read alone (nothing in it can panic), and a poisoned
    /// one is still a clock.
    fn now(&self) -> String {
        let mut clock = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.now().to_string()
    }

    /// The valid events as a batch (a `timestamp` added where missing),
    /// and the rejected ones with their reasons.
    fn batch(&self, events: Vec<Value>, body_len: usize) -> (Batch, Vec<Rejection>) {
        let mut rejected = Vec::new();
        let mut batch = Batch::with_capacity(events.len(), body_len + events.len() * 40);
        for (i, mut v) in events.into_iter().enumerate() {
            if let Value::Object(map) = &mut v {
                // Python's logging.handlers.HTTPHandler posts a LogRecord's
                // attributes as a form, every value a string: map it to the
                // common fields (message formatted with its args, typed
                // values) before it is checked.
                if is_log_record(map) {
                    sluice_common::presets::apply(sluice_common::Preset::PythonLogging, map);
                }
            }
            if let Err(r) = body::validate(&self.cfg, i, &v) {
                rejected.push(r);
                continue;
            }
            if let Value::Object(map) = &mut v {
                if !map.contains_key("timestamp") {
                    let own = crate::source::event_time_of(
                        self.cfg.timestamp.as_ref(),
                        map,
                        Some(&self.ctx.metrics),
                    );
                    let mut with = Map::with_capacity(map.len() + 1);
                    with.insert(
                        "timestamp".into(),
                        own.map_or_else(|| self.now().into(), Into::into),
                    );
                    with.extend(std::mem::take(map));
                    *map = with;
                }
            }
            serde_json::to_writer(&mut batch.data, &v).expect("writing to a Vec cannot fail");
            batch.seal();
        }
        (batch, rejected)
    }

    /// Claim an `Idempotency-Key`; when another request has it, wait for
    /// that one and answer as it did (`Err` holds the answer).
    async fn claim(&self, key: &str) -> Result<Ticket, Response<Body>> {
        loop {
            let mut rx = match self.keys.claim(key) {
                Claim::New(t) => return Ok(t),
                Claim::Taken(rx) => rx,
            };
            let outcome = tokio::time::timeout(self.cfg.ack_timeout, rx.wait_for(Option::is_some))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| *v));
            match outcome {
                Some((true, accepted)) => {
                    return Err(json_reply(
                        StatusCode::OK,
                        &serde_json::json!({ "accepted": accepted, "duplicate": true }),
                    ))
                }
                // The first request failed and released the key: go on as new.
                Some((false, _)) => continue,
                None => {
                    return Err(error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "a request with this Idempotency-Key is still being delivered; retry later",
                    ))
                }
            }
        }
    }

    /// Send the batch on; with `ack = "delivered"`, wait until every sink
    /// has it (or say why not). The ticket of its idempotency key hears
    /// what became of it.
    async fn deliver(
        &self,
        mut batch: Batch,
        ticket: Option<Ticket>,
    ) -> Result<(), Response<Body>> {
        let accepted = batch.len();
        let mut report = ticket.map(|t| t.reporter(accepted));
        let waiting = self.cfg.ack == AckMode::Delivered && !batch.is_empty();
        let (tx, mut rx) = tokio::sync::watch::channel(None::<bool>);
        let ack = waiting.then(|| {
            let report = report.take();
            let ack = Ack::strict(move |ok| {
                tx.send_replace(Some(ok));
                if let Some(r) = report {
                    r(ok);
                }
            });
            batch.acks.push(ack.clone());
            ack
        });
        ComponentMetrics::add(&self.ctx.metrics.events_in, batch.len());
        ComponentMetrics::add(&self.ctx.metrics.bytes_in, batch.bytes());
        let sent = self.ctx.output.send(0, batch).await.is_ok();
        // Ours is the last hold on the ack if the batch went nowhere.
        if let Some(ack) = ack {
            if !sent {
                ack.fail();
            }
        }
        if let Some(r) = report {
            r(sent);
        }
        if !sent {
            ComponentMetrics::add(&self.ctx.metrics.busy, 1);
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the pipeline is stopping",
            ));
        }
        if !waiting {
            return Ok(());
        }
        let outcome = tokio::time::timeout(self.cfg.ack_timeout, rx.wait_for(Option::is_some))
            .await
            .map(|r| r.ok().and_then(|v| *v));
        match outcome {
            Ok(Some(true)) => Ok(()),
            Ok(_) => Err(error(
                StatusCode::BAD_GATEWAY,
                "the events could not be delivered (a sink gave up on them, or a plugin failed on them and no sink reads the dead letters)",
            )),
            Err(_) => Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "the events were not delivered in time",
            )),
        }
    }
}

/// Whether an object is a Python `LogRecord`'s attributes (what
/// `HTTPHandler` sends).
fn is_log_record(map: &Map<String, Value>) -> bool {
    ["levelname", "msg", "levelno", "created"]
        .iter()
        .all(|k| map.contains_key(*k))
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any
/// case, as RFC 7235 says).
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compare a given secret with the expected one in time that does not
/// depend on where they differ (both hashed first, so not on their length).
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::Digest;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `503` with `Retry-After`: the pipeline has no room now.
fn full() -> Response<Body> {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("retry-after", "1")
        .header(CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(
                "{\"error\":\"the pipeline is full; retry later\"}\n",
            ))
            .boxed(),
        )
        .expect("static response parts are valid")
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
                tracing::warn!(source = cx.name, "{warning}");
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
        tracing::info!(source = %ctx.name, address = %local, paths = ?self.paths, "http source listening");
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
                            tracing::debug!(error = %e, "http source: connection ended with an error");
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
                tracing::warn!(error = %format!("{e:#}"), "otlp/grpc ended with an error");
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
