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

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::event::{Batch, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{
    duration, size, BatchOverride, BuildContext, BuildError, Task, TypeTag,
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
    _type: TypeTag,
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
    /// Name of an environment variable holding a bearer token that every
    /// request must carry (`Authorization: Bearer ...`).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// Longest a client may take to send its headers, and then its body.
    #[serde(default = "default_read_timeout", with = "duration")]
    pub read_timeout: Duration,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_paths() -> Vec<String> {
    vec!["/api/log".to_string()]
}
fn default_max_body() -> usize {
    10 << 20
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_timeout() -> Duration {
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

/// One rejected event of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Index of the event in the request (0-based).
    pub event: usize,
    /// The offending field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

struct Server {
    cfg: HttpConfig,
    ctx: SourceContext,
    token: Option<String>,
    clock: std::sync::Mutex<Clock>,
}

impl Server {
    /// Turn a body into JSON objects (or say why not).
    fn parse(&self, content_type: &str, body: &[u8]) -> Result<Vec<Value>, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        let text =
            std::str::from_utf8(body).map_err(|e| bad(format!("the body is not UTF-8: {e}")))?;
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/x-www-form-urlencoded" => return Ok(vec![form_event(text)]),
            "text/plain" if self.cfg.format == BodyFormat::Text => {
                return Ok(text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::json!({ "message": l }))
                    .collect())
            }
            "application/json" | "application/x-ndjson" | "application/jsonl" | "text/plain" | "" => {}
            other => {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content type `{other}` is not accepted: send application/json, application/x-ndjson{}", if self.cfg.format == BodyFormat::Text { " or text/plain" } else { "" }),
                ))
            }
        }
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            let v: Vec<Value> =
                serde_json::from_str(text).map_err(|e| bad(format!("malformed JSON: {e}")))?;
            return Ok(v);
        }
        // One object, or one per line.
        let mut out = Vec::new();
        let mut de = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        loop {
            match de.next() {
                None => break,
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => {
                    return Err(bad(format!("malformed JSON (event {}): {e}", out.len())))
                }
            }
        }
        if out.is_empty() {
            return Err(bad("the body holds no event".into()));
        }
        Ok(out)
    }

    /// Check one event against the configured rules.
    fn validate(&self, i: usize, v: &Value) -> Result<(), Rejection> {
        let reject = |field: Option<&str>, message: String| Rejection {
            event: i,
            field: field.map(str::to_string),
            message,
        };
        let Value::Object(map) = v else {
            return Err(reject(None, "an event must be a JSON object".into()));
        };
        for f in &self.cfg.required {
            match map.get(f) {
                None | Some(Value::Null) => {
                    return Err(reject(Some(f), format!("`{f}` is required")))
                }
                Some(Value::String(s)) if s.trim().is_empty() => {
                    return Err(reject(Some(f), format!("`{f}` is empty")))
                }
                _ => {}
            }
        }
        if !self.cfg.levels.is_empty() {
            if let Some(level) = map.get("level") {
                let ok = level
                    .as_str()
                    .is_some_and(|l| self.cfg.levels.iter().any(|a| a.eq_ignore_ascii_case(l)));
                if !ok {
                    return Err(reject(
                        Some("level"),
                        format!(
                            "level {level} is not one of: {}",
                            self.cfg.levels.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(max) = self.cfg.max_field {
            if let Some((k, len)) = longest_string(map, "") {
                if len > max {
                    return Err(reject(
                        Some(&k),
                        format!("`{k}` is {len} bytes, more than the {max} allowed"),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let mut resp = self.clone().respond(req).await;
        if let Some(cors) = &self.cfg.cors {
            let allow = if cors.origins.iter().any(|o| o == "*") {
                "*".to_string()
            } else {
                cors.origins.join(", ")
            };
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert("access-control-allow-origin", v);
            }
        }
        Ok(resp)
    }

    async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        if !self.cfg.paths.contains(&path) {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "no such path; send events to {}",
                    self.cfg.paths.join(" or ")
                ),
            );
        }
        if req.method() == Method::OPTIONS {
            if let Some(cors) = &self.cfg.cors {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header("access-control-allow-methods", "POST, OPTIONS")
                    .header(
                        "access-control-allow-headers",
                        "content-type, content-encoding, authorization",
                    )
                    .header("access-control-max-age", cors.max_age.to_string())
                    .body(Full::new(Bytes::new()).boxed())
                    .expect("static response parts are valid");
            }
        }
        if req.method() != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "send events with POST");
        }
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given != Some(token.as_str()) {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("www-authenticate", "Bearer")
                    .header(CONTENT_TYPE, "application/json")
                    .body(
                        Full::new(Bytes::from(
                            "{\"error\":\"a valid bearer token is required\"}\n",
                        ))
                        .boxed(),
                    )
                    .expect("static response parts are valid");
            }
        }
        let max = self.cfg.max_body;
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {max} bytes"),
            )
        };
        if let Some(len) = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        {
            if len > max {
                return too_large();
            }
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let gzip = match req
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
        {
            None | Some("identity") => false,
            Some(e) if e.eq_ignore_ascii_case("gzip") => true,
            Some(other) => {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content encoding `{other}` is not accepted (gzip is)"),
                )
            }
        };
        // Backpressure: a full pipeline answers at once instead of queueing.
        if !self.ctx.output.has_room() {
            return Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("retry-after", "1")
                .header(CONTENT_TYPE, "application/json")
                .body(
                    Full::new(Bytes::from(
                        "{\"error\":\"the pipeline is full; retry later\"}\n",
                    ))
                    .boxed(),
                )
                .expect("static response parts are valid");
        }
        let collected = tokio::time::timeout(
            self.cfg.read_timeout,
            Limited::new(req.into_body(), max).collect(),
        )
        .await;
        let body = match collected {
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the body took too long to arrive",
                )
            }
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return too_large()
            }
            Ok(Err(e)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the body: {e}"),
                )
            }
            Ok(Ok(b)) => b.to_bytes(),
        };
        let body = if gzip {
            // Decompress at most `max + 1` bytes: a bomb stops there.
            let mut out = Vec::new();
            let mut dec = flate2::read::MultiGzDecoder::new(&body[..]).take(max as u64 + 1);
            if let Err(e) = dec.read_to_end(&mut out) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the gzip body is corrupt: {e}"),
                );
            }
            if out.len() > max {
                return too_large();
            }
            Bytes::from(out)
        } else {
            body
        };
        let events = match self.parse(&content_type, &body) {
            Ok(e) => e,
            Err((status, message)) => return error(status, message),
        };
        let mut rejected = Vec::new();
        let mut batch = Batch::with_capacity(events.len(), body.len() + events.len() * 40);
        {
            let mut clock = self.clock.lock().expect("clock lock poisoned");
            for (i, mut v) in events.into_iter().enumerate() {
                match self.validate(i, &v) {
                    Ok(()) => {
                        if let Value::Object(map) = &mut v {
                            if !map.contains_key("timestamp") {
                                let mut with = Map::with_capacity(map.len() + 1);
                                with.insert("timestamp".into(), clock.now().into());
                                with.extend(std::mem::take(map));
                                *map = with;
                            }
                        }
                        serde_json::to_writer(&mut batch.data, &v)
                            .expect("writing to a Vec cannot fail");
                        batch.seal();
                    }
                    Err(r) => rejected.push(r),
                }
            }
        }
        if !rejected.is_empty() && !self.cfg.partial {
            ComponentMetrics::add(&self.ctx.metrics.failed, rejected.len());
            return json_reply(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": "invalid events; nothing was accepted", "rejected": rejected }),
            );
        }
        ComponentMetrics::add(&self.ctx.metrics.failed, rejected.len());
        let accepted = batch.len();
        let waiter = if self.cfg.ack == AckMode::Delivered && accepted > 0 {
            let (tx, rx) = tokio::sync::oneshot::channel();
            batch.acks.push(Ack::new(move |ok| {
                let _ = tx.send(ok);
            }));
            Some(rx)
        } else {
            None
        };
        ComponentMetrics::add(&self.ctx.metrics.events_in, accepted);
        ComponentMetrics::add(&self.ctx.metrics.bytes_in, batch.bytes());
        if self.ctx.output.send(0, batch).await.is_err() {
            return error(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is stopping");
        }
        if let Some(rx) = waiter {
            match tokio::time::timeout(self.cfg.ack_timeout, rx).await {
                Ok(Ok(true)) => {}
                Ok(_) => {
                    return error(StatusCode::BAD_GATEWAY, "the events could not be delivered")
                }
                Err(_) => {
                    return error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the events were not delivered in time",
                    )
                }
            }
        }
        let mut body = serde_json::json!({ "accepted": accepted });
        if !rejected.is_empty() {
            body["rejected"] = serde_json::to_value(&rejected).unwrap_or_default();
        }
        json_reply(StatusCode::OK, &body)
    }
}

/// The longest string in an object (recursively): (dotted path, bytes).
fn longest_string(map: &Map<String, Value>, prefix: &str) -> Option<(String, usize)> {
    let mut best: Option<(String, usize)> = None;
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let candidate = match v {
            Value::String(s) => Some((path, s.len())),
            Value::Object(m) => longest_string(m, &path),
            _ => None,
        };
        if let Some(c) = candidate {
            if best.as_ref().is_none_or(|b| c.1 > b.1) {
                best = Some(c);
            }
        }
    }
    best
}

/// Decode `application/x-www-form-urlencoded` text (`+` is a space, `%XX`
/// a byte). A malformed escape is kept as it is.
pub fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a form or a query string.
pub fn form_pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k), form_decode(v))
    })
}

/// An HTML form as an event. Python's `logging.handlers.HTTPHandler` posts
/// a LogRecord's attributes this way: its `levelname`, `msg` and `name`
/// become `level`, `message` and `logger` when those are absent.
fn form_event(text: &str) -> Value {
    let mut map = Map::new();
    for (k, v) in form_pairs(text) {
        map.insert(k, Value::String(v));
    }
    for (from, to) in [
        ("levelname", "level"),
        ("msg", "message"),
        ("name", "logger"),
    ] {
        if !map.contains_key(to) {
            if let Some(v) = map.get(from).cloned() {
                let v = if to == "level" {
                    Value::String(v.as_str().unwrap_or("").to_lowercase())
                } else {
                    v
                };
                map.insert(to.to_string(), v);
            }
        }
    }
    if let Some(Value::String(created)) = map.get("created") {
        if !map.contains_key("timestamp") {
            if let Ok(secs) = created.parse::<f64>() {
                if let Some(t) = chrono::DateTime::from_timestamp_micros((secs * 1e6) as i64) {
                    map.insert(
                        "timestamp".into(),
                        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                            .into(),
                    );
                }
            }
        }
    }
    Value::Object(map)
}

/// A built HTTP source: its config and the token read from the environment.
struct HttpSource {
    cfg: HttpConfig,
    token: Option<String>,
}

impl SourceKind for HttpConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        let token = match &self.auth_token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                BuildError::key("auth_token_env", format!("names `{var}`, which is not set"))
            })?),
            None => None,
        };
        Ok(Box::new(HttpSource {
            cfg: self.clone(),
            token,
        }))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
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
        let server = Arc::new(Server {
            cfg: self,
            ctx,
            token,
            clock: std::sync::Mutex::new(Clock::default()),
        });
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "http source: accept failed");
                            continue;
                        }
                    };
                    let server = server.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| server.clone().handle(req));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(read_timeout)
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "http source: connection ended with an error");
                        }
                    });
                }
            }
        }
        // Stop accepting; let requests in flight finish (they hold the
        // output), but not forever.
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size::parse("10MiB"), Ok(10 << 20));
        assert_eq!(size::parse("512KiB"), Ok(512 << 10));
        assert_eq!(size::parse("1MB"), Ok(1_000_000));
        assert_eq!(size::parse("42"), Ok(42));
        assert!(size::parse("10 parsecs").is_err());
    }

    #[test]
    fn python_logging_forms() {
        let e =
            form_event("name=app&msg=disk+full%21&levelname=WARNING&created=1795428000.5&lineno=3");
        assert_eq!(e["message"], "disk full!");
        assert_eq!(e["level"], "warning");
        assert_eq!(e["logger"], "app");
        assert_eq!(e["timestamp"], "2026-11-23T10:00:00.500Z");
    }

    #[test]
    fn form_decoding_keeps_malformed_escapes() {
        assert_eq!(form_decode("a+b%21%zz%"), "a b!%zz%");
        // A `%` before a multi-byte character must not split it.
        assert_eq!(form_decode("x%é"), "x%é");
    }
}
