//! The admin HTTP port: `GET /health`, `GET /metrics` (Prometheus text),
//! `POST /reload`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Registry;
use crate::topology::reload::reload_all;
use crate::topology::running::ReloadHandle;

/// What the admin endpoints read and act on.
pub struct Admin {
    pub metrics: Registry,
    pub reload: ReloadHandle,
    pub pipeline: PathBuf,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// A counter family: its name, help text, and how to read it off a snapshot.
type Counter = (
    &'static str,
    &'static str,
    fn(&crate::metrics::Snapshot) -> u64,
);

/// The metrics in the Prometheus text format.
pub fn prometheus(metrics: &Registry) -> String {
    let snaps = metrics.snapshot();
    let mut out = String::new();
    let counters: [Counter; 8] = [
        (
            "sluice_events_in_total",
            "Events received by a component.",
            |s| s.events_in,
        ),
        (
            "sluice_events_out_total",
            "Events sent on (or written, for sinks).",
            |s| s.events_out,
        ),
        (
            "sluice_bytes_in_total",
            "Bytes of the events received.",
            |s| s.bytes_in,
        ),
        (
            "sluice_bytes_out_total",
            "Bytes of the events sent on or written.",
            |s| s.bytes_out,
        ),
        (
            "sluice_events_dropped_total",
            "Events dropped on purpose.",
            |s| s.dropped,
        ),
        (
            "sluice_events_failed_total",
            "Events that failed (dead-lettered, or dropped/passed by on_error).",
            |s| s.failed,
        ),
        (
            "sluice_events_discarded_total",
            "Events sent to an output nobody reads.",
            |s| s.discarded,
        ),
        (
            "sluice_plugin_restarts_total",
            "Plugin instances replaced after a trap.",
            |s| s.restarts,
        ),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in &snaps {
            let _ = writeln!(
                out,
                "{name}{{component=\"{}\",kind=\"{}\"}} {}",
                s.name,
                s.kind.as_str(),
                get(s)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP sluice_reloads_total Reloads by result.\n# TYPE sluice_reloads_total counter"
    );
    let _ = writeln!(
        out,
        "sluice_reloads_total{{result=\"ok\"}} {}",
        metrics.reloads_ok.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "sluice_reloads_total{{result=\"failed\"}} {}",
        metrics.reloads_failed.load(Ordering::Relaxed)
    );
    out
}

async fn handle(
    admin: Arc<Admin>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/health") => reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}\n".into(),
        ),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            prometheus(&admin.metrics),
        ),
        (&Method::POST, "/reload") => {
            match reload_all(&admin.reload, &admin.pipeline, &admin.metrics).await {
                Ok(()) => reply(
                    StatusCode::OK,
                    "application/json",
                    "{\"result\":\"ok\"}\n".into(),
                ),
                Err(e) => reply(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "application/json",
                    format!(
                        "{}\n",
                        serde_json::json!({"result": "failed", "error": format!("{e:#}")})
                    ),
                ),
            }
        }
        (_, "/health" | "/metrics" | "/reload") => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    })
}

/// Bind the admin port; returns the bound address and the serving task.
pub async fn serve(
    address: &str,
    admin: Admin,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("admin: cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    let admin = Arc::new(admin);
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accept failed");
                    continue;
                }
            };
            let admin = admin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(admin.clone(), req));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin: connection ended with an error");
                }
            });
        }
    });
    tracing::info!(address = %local, "admin port listening");
    Ok((local, task))
}
