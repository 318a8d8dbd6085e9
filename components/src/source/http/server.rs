//! One HTTP ingest server: a request checked (auth, limits, CORS,
//! content type), its body decoded into events, the batch delivered and
//! the reply given once it is acknowledged (`ack = "delivered"`) or
//! accepted, with idempotency keys remembered.

use super::*;

pub(super) type Body = BoxBody<Bytes, Infallible>;

pub(super) fn json_reply(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))).boxed())
        .expect("static response parts are valid")
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json_reply(status, &serde_json::json!({ "error": message.into() }))
}

pub(super) struct Server {
    pub(super) cfg: HttpConfig,
    pub(super) ctx: SourceContext,
    pub(super) token: Option<String>,
    pub(super) clock: std::sync::Mutex<Clock>,
    /// The `Idempotency-Key`s seen within `idempotency_window`.
    pub(super) keys: Arc<Keys>,
    /// `max_in_flight`, in KiB: the bytes of bodies being read and parsed.
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// Whether a request with this `Authorization` header may send
    /// events (any may, without `auth_token_env`).
    pub(super) fn authorized(&self, authorization: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => authorization
                .and_then(bearer_token)
                .is_some_and(|g| same_secret(g, token)),
        }
    }

    /// Whether the pipeline has no room for a batch now (counted as busy:
    /// the request is answered at once instead of queued).
    pub(super) fn full(&self) -> bool {
        let full = !self.ctx.output.has_room();
        if full {
            ComponentMetrics::add(&self.ctx.metrics.busy, 1);
        }
        full
    }

    pub(super) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
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

    pub(super) async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
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
        let Some(reading) = self.reserve(headers, gzip) else {
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
        let mut events = match read
            .await
            .and_then(|b| Ok((self.decode(otlp, &content_type, &b)?, b.len())))
        {
            Ok(e) => e,
            Err((status, message)) => return error(status, message),
        };
        if let Some(peer) = peer {
            mark_peer(&mut events.0, &peer);
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
        accepted_answer(otlp, accepted, &rejected)
    }

    /// The bytes this request may take while it is read and parsed, out
    /// of `max_in_flight` across requests: what a gzip body may grow to,
    /// or what it says it is (`None`: not available now).
    fn reserve(
        &self,
        headers: &hyper::HeaderMap,
        gzip: bool,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let announced = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let need = match (gzip, announced) {
            (false, Some(n)) => n.min(self.cfg.max_body),
            _ => self.cfg.max_body,
        };
        self.in_flight
            .clone()
            .try_acquire_many_owned(need.div_ceil(1024).max(1) as u32)
            .ok()
    }

    /// A request's body as events: by its content type, or as OTLP (its
    /// decoding cost charged first, at most `max_events_per_request`).
    fn decode(
        &self,
        otlp: Option<crate::base::otlp::Encoding>,
        content_type: &str,
        b: &[u8],
    ) -> Result<Vec<Value>, (StatusCode, String)> {
        match otlp {
            None => body::parse(&self.cfg, content_type, b),
            Some(encoding) => {
                let _decoding = self.charge_decoding(encoding, b)?;
                let req = crate::base::otlp::decode_request(encoding, b)
                    .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
                crate::base::otlp::events_within(
                    &req,
                    self.cfg.max_events_per_request,
                    self.cfg.otlp_flatten_attributes,
                )
                .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, e))
            }
        }
    }

    /// The answer to what is not a `POST` of events by someone allowed (an
    /// unknown path, another method, a missing token) and to CORS
    /// preflights; `None` to go on.
    pub(super) fn refusal(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
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
    pub(super) fn now(&self) -> String {
        let mut clock = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.now().to_string()
    }

    /// The valid events as a batch (a `timestamp` added where missing),
    /// and the rejected ones with their reasons.
    pub(super) fn batch(&self, events: Vec<Value>, body_len: usize) -> (Batch, Vec<Rejection>) {
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
    pub(super) async fn claim(&self, key: &str) -> Result<Ticket, Response<Body>> {
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
    pub(super) async fn deliver(
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
pub(super) fn is_log_record(map: &Map<String, Value>) -> bool {
    ["levelname", "msg", "levelno", "created"]
        .iter()
        .all(|k| map.contains_key(*k))
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any
/// case, as RFC 7235 says).
pub(super) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compare a given secret with the expected one in time that does not
/// depend on where they differ (both hashed first, so not on their length).
pub(super) fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::Digest;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(expected));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `503` with `Retry-After`: the pipeline has no room now.
pub(super) fn full() -> Response<Body> {
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

/// Who sent the events, by their client certificate (mutual TLS), in
/// `_sluice.peer`.
fn mark_peer(events: &mut [Value], peer: &str) {
    for e in events {
        if let Value::Object(map) = e {
            let meta = map
                .entry("_sluice")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(meta) = meta {
                meta.insert("peer".into(), peer.into());
            }
        }
    }
}

/// The answer to events taken: OTLP's success message, or how many were
/// accepted and which were rejected.
fn accepted_answer(
    otlp: Option<crate::base::otlp::Encoding>,
    accepted: usize,
    rejected: &[Rejection],
) -> Response<Body> {
    if let Some(encoding) = otlp {
        return Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, encoding.content_type())
            .body(Full::new(Bytes::from(crate::base::otlp::success_body(encoding))).boxed())
            .expect("static response parts are valid");
    }
    let mut body = serde_json::json!({ "accepted": accepted });
    if !rejected.is_empty() {
        body["rejected"] = serde_json::to_value(rejected).unwrap_or_default();
    }
    json_reply(StatusCode::OK, &body)
}
