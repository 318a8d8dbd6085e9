//! OTLP/gRPC logs for the `otlp` source (`grpc_address`), on tonic: the
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` method of
//! the `opentelemetry-proto` crate's generated server, gzip accepted.
//!
//! The same server state as OTLP/HTTP: bearer auth (the `authorization`
//! metadata), backpressure (`UNAVAILABLE`, which OTLP exporters retry),
//! `max_body` per message, `max_events_per_request`, and `ack =
//! "delivered"`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use hyper::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::Server;
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Shutdown;

struct Logs {
    server: Arc<Server>,
}

/// The gRPC status for an HTTP refusal of the shared server.
fn status_of(status: StatusCode, what: &str) -> Status {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(what.to_string()),
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(what.to_string()),
        StatusCode::BAD_GATEWAY => Status::unavailable(what.to_string()),
        _ => Status::internal(what.to_string()),
    }
}

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let s = &self.server;
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
        let req = request.into_inner();
        let size = req.encoded_len();
        let events = crate::base::otlp::events_within(&req, s.cfg.max_events_per_request)
            .map_err(Status::invalid_argument)?;
        drop(req);
        let (batch, rejected) = s.batch(events, size);
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
}

/// Where `grpc_address` listens, or why it cannot.
pub(super) fn address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|e| {
        format!("`{text}` is not an IP address and port ({e}): write e.g. 0.0.0.0:4317")
    })
}

/// Serve OTLP/gRPC on `address` until shutdown.
pub(super) async fn serve(
    server: Arc<Server>,
    address: SocketAddr,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let name = server.ctx.name.clone();
    let max = server.cfg.max_body;
    let svc = LogsServiceServer::new(Logs { server })
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max);
    tracing::info!(source = %name, address = %address, "otlp/grpc listening");
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_shutdown(address, async move { shutdown.wait().await })
        .await
        .with_context(|| format!("source {name}: cannot serve OTLP/gRPC on {address}"))
}
