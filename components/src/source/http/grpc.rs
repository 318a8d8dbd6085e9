//! OTLP/gRPC logs for the `otlp` source (`grpc_address`): the
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` method, on
//! tonic's gRPC framing and hyper's HTTP/2, gzip accepted.
//!
//! The same server state and limits as OTLP/HTTP: bearer auth (the
//! `authorization` metadata), backpressure (`UNAVAILABLE`, which OTLP
//! exporters retry), `max_body` per message, `max_events_per_request`
//! counted on the wire before decoding, the bytes being read and decoded
//! charged against `max_in_flight`, at most `max_connections` connections
//! (accepted by the HTTP source's [`Acceptor`]), and a connection with no
//! request for `read_timeout` closed (HTTP/2 keep-alive pings find peers
//! that are gone). tonic's generated server is not used: it decodes the
//! message before any handler could count what decoding takes, so the
//! codec here hands over the bytes and the handler decodes them.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::http::grpc";

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use tonic::codec::{BufferSettings, Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::codegen::{BoxFuture, EnabledCompressionEncodings, StdError};
use tonic::{Request, Response, Status};

use super::listener::Acceptor;
use super::Server;
use crate::base::metrics::ComponentMetrics;
use crate::base::otlp::Encoding;
use crate::base::output::Shutdown;

/// The one method served.
const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// An `Export` request's bytes, as they came (gunzipped).
struct RawExport(Bytes);

/// Hands the message's bytes over undecoded.
struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = RawExport;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<RawExport>, Status> {
        Ok(Some(RawExport(src.copy_to_bytes(src.remaining()))))
    }
}

/// Requests as bytes, answers encoded by prost.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportLogsServiceResponse;
    type Decode = RawExport;
    type Encoder = tonic_prost::ProstEncoder<ExportLogsServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// The gRPC status for an HTTP refusal of the shared server.
fn status_of(status: StatusCode, what: &str) -> Status {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(what.to_string()),
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(what.to_string()),
        StatusCode::BAD_GATEWAY => Status::unavailable(what.to_string()),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
            Status::invalid_argument(what.to_string())
        }
        _ => Status::internal(what.to_string()),
    }
}

async fn export(
    s: Arc<Server>,
    request: Request<RawExport>,
) -> Result<Response<ExportLogsServiceResponse>, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if !s.authorized(authorization) {
        return Err(Status::unauthenticated("a valid bearer token is required"));
    }
    if s.full() {
        return Err(Status::unavailable("the pipeline is full; retry later"));
    }
    let raw = request.into_inner().0;
    let size = raw.len();
    // The message's bytes and what decoding them takes, out of
    // `max_in_flight` as for OTLP/HTTP.
    let Ok(reading) = s
        .in_flight
        .clone()
        .try_acquire_many_owned(size.div_ceil(1024).max(1) as u32)
    else {
        ComponentMetrics::add(&s.ctx.metrics.busy, 1);
        return Err(Status::unavailable("the pipeline is full; retry later"));
    };
    let events = {
        let _decoding = s
            .charge_decoding(Encoding::Protobuf, &raw)
            .map_err(|(code, what)| status_of(code, &what))?;
        let req = ExportLogsServiceRequest::decode(raw).map_err(|e| {
            Status::invalid_argument(format!("not an ExportLogsServiceRequest: {e}"))
        })?;
        crate::base::otlp::events_within(
            &req,
            s.cfg.max_events_per_request,
            s.cfg.otlp_flatten_attributes,
        )
        .map_err(Status::invalid_argument)?
    };
    let (batch, rejected) = s.batch(events, size);
    drop(reading);
    if !rejected.is_empty() {
        ComponentMetrics::add(&s.ctx.metrics.failed, rejected.len());
        return Err(Status::invalid_argument(format!(
            "{} invalid log records; nothing was accepted",
            rejected.len()
        )));
    }
    if let Err(refused) = s.deliver(batch, None).await {
        let what = match refused.status() {
            StatusCode::SERVICE_UNAVAILABLE => "the pipeline is stopping",
            StatusCode::GATEWAY_TIMEOUT => "the records were not delivered in time",
            _ => "the records could not be delivered",
        };
        return Err(status_of(refused.status(), what));
    }
    Ok(Response::new(ExportLogsServiceResponse {
        partial_success: None,
    }))
}

/// The `Export` method, for tonic's unary framing.
struct ExportMethod(Arc<Server>);

impl tonic::server::UnaryService<RawExport> for ExportMethod {
    type Response = ExportLogsServiceResponse;
    type Future = BoxFuture<Response<ExportLogsServiceResponse>, Status>;

    fn call(&mut self, request: Request<RawExport>) -> Self::Future {
        Box::pin(export(self.0.clone(), request))
    }
}

/// When a connection last had a request in flight.
struct Activity {
    active: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn idle_for(&self) -> Duration {
        if self.active.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }
}

/// A request in flight on a connection (ended when dropped, answered or
/// cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self
            .0
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The service of one connection: `Export`, anything else unimplemented.
#[derive(Clone)]
struct Logs {
    server: Arc<Server>,
    activity: Arc<Activity>,
}

impl<B> tower_service::Service<hyper::Request<B>> for Logs
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = hyper::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: hyper::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT {
            return Box::pin(async {
                Ok(
                    Status::unimplemented("this server takes OTLP logs only (LogsService/Export)")
                        .into_http(),
                )
            });
        }
        self.activity.active.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(self.activity.clone());
        let server = self.server.clone();
        Box::pin(async move {
            let _in_flight = in_flight;
            let max = server.cfg.max_body;
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(ExportMethod(server), req).await)
        })
    }
}

/// Where `grpc_address` listens, or why it cannot.
pub(super) fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|e| {
        format!("`{text}` is not an IP address and port ({e}): write e.g. 127.0.0.1:4317")
    })
}

/// Serve one connection until it ends, it has been idle `idle` long, or
/// the source stops (then requests in flight finish).
async fn connection<S>(stream: S, logs: Logs, idle: Duration, mut shutdown: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = logs.activity.clone();
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(idle))
        .keep_alive_timeout(idle.min(Duration::from_secs(20)))
        .serve_connection(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(logs),
        );
    tokio::pin!(conn);
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)));
    let mut closing: Option<Instant> = None;
    loop {
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(target: LOG_TARGET, error = %e, "otlp/grpc: connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => match closing {
                // A peer that does not take the GOAWAY is cut off.
                Some(since) if since.elapsed() > Duration::from_secs(5) => return,
                Some(_) => {}
                None if activity.idle_for() >= idle => {
                    tracing::debug!(target: LOG_TARGET, idle_ms = idle.as_millis() as u64, "otlp/grpc: closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                None => {}
            },
            _ = shutdown.wait(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
        }
    }
}

/// Serve OTLP/gRPC on `address` until shutdown.
pub(super) async fn serve(
    server: Arc<Server>,
    address: SocketAddr,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = server.ctx.name.clone();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("source {name}: cannot serve OTLP/gRPC on {address}: {e}"))?;
    tracing::info!(target: LOG_TARGET, source = %name, address = %address, "otlp/grpc listening");
    let mut acceptor = Acceptor::new(
        listener,
        format!("source {name} (grpc)"),
        server.cfg.max_connections,
    );
    let idle = server.cfg.read_timeout;
    // TLS as the HTTP side has it (`tls`), offering HTTP/2.
    let tls = match &server.cfg.tls {
        Some(t) => Some(
            crate::base::tls::TlsListener::new(
                t,
                &name,
                &[b"h2"],
                Some(server.ctx.metrics.clone()),
            )
            .map_err(|e| anyhow::anyhow!("source {name}: tls (grpc): {e}"))?,
        ),
        None => None,
    };
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            stream = acceptor.next() => {
                let logs = Logs {
                    server: server.clone(),
                    activity: Arc::new(Activity {
                        active: AtomicUsize::new(0),
                        last: Mutex::new(Instant::now()),
                    }),
                };
                let shutdown = shutdown.clone();
                match tls.clone() {
                    None => acceptor.spawn(connection(stream, logs, idle, shutdown)),
                    Some(tls) => acceptor.spawn(async move {
                        if let Some((stream, _)) = tls.accept(stream).await {
                            connection(stream, logs, idle, shutdown).await;
                        }
                    }),
                }
            }
        }
    }
    acceptor.drain(Duration::from_secs(5)).await;
    Ok(())
}
