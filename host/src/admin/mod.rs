//! The admin HTTP port: `GET /health`, `GET /metrics` (Prometheus text),
//! `GET /stats` (JSON, for `sluice top`), `GET /tap` (live events, for
//! `sluice tap`), `POST /reload`, and the live page `GET /` (`/ui`) with
//! its data (`/ui/graph`, `/ui/stats`, `/ui/tap`, `/ui/shadow`), and the
//! shadow runs of `sluice plugin shadow` (`/shadow`, in `shadow`). With a
//! token, every endpoint but `/health` requires it.
//!
//! Here: the router and the server. Beside it: `auth` (the token, the
//! `Host` names accepted, cross-site refusal), `tap` (live events),
//! `graph` (the pipeline as the live page draws it), `exposition`
//! (`/metrics`), `status` (`/stats`, `/health`, the hops), `shadow`.

mod auth;
mod exposition;
mod graph;
mod shadow;
mod status;
mod tap;

pub use self::exposition::prometheus;
pub use self::graph::{graph, tappable};
use self::{auth::*, exposition::*, status::*, tap::*};

use std::convert::Infallible;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::middleware::Next;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::base::metrics::Registry;
use crate::source::http::listener::Acceptor;
use crate::topology::reload::reload_all;
use crate::topology::reload::ReloadHandle;

/// What the admin endpoints read and act on.
pub struct Admin {
    pub metrics: Registry,
    pub reload: ReloadHandle,
    pub pipeline: PathBuf,
    /// What `auth_token_env` names: required by every endpoint but `/health`.
    pub token: Option<String>,
    /// `[admin] hosts`: names accepted in `Host` besides IP addresses and
    /// `localhost`.
    pub hosts: Vec<String>,
    /// `[admin] tls`: the port speaks HTTPS.
    pub tls: Option<Arc<crate::base::tls::TlsListener>>,
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    // No answer shows a secret the pipeline was given (a reload error
    // quoting a URL, say).
    let body = match crate::base::secrets::redact(&body) {
        std::borrow::Cow::Borrowed(_) => body,
        std::borrow::Cow::Owned(redacted) => redacted,
    };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("static response parts are valid")
}

type AdminState = State<Arc<Admin>>;

async fn page() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from_static(include_bytes!("ui.html"))).boxed())
        .expect("static response parts are valid")
}

async fn ui_graph(State(admin): AdminState) -> Response<Body> {
    match admin.reload.config().await {
        Some(config) => reply(
            StatusCode::OK,
            "application/json",
            format!("{}\n", graph(&config)),
        ),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the pipeline has stopped\n".into(),
        ),
    }
}

async fn ui_tap(State(admin): AdminState, RawQuery(q): RawQuery) -> Response<Body> {
    let q = decoded(q.as_deref());
    let config = admin.reload.config().await;
    let component = q.get("component").cloned().unwrap_or_default();
    match config.map(|c| tappable(&c, &component)) {
        Some(true) => tap(&admin, &q),
        _ => reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            format!("`{component}` is upstream of a mask: its events are not shown here (tap a component after the mask)\n"),
        ),
    }
}

async fn reload(State(admin): AdminState, RawQuery(q): RawQuery) -> Response<Body> {
    // `?force=true`: a sink whose disk buffer holds events may go.
    let force = q
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .any(|p| matches!(p, "force" | "force=true" | "force=1" | "force=yes"));
    match reload_all(&admin.reload, &admin.pipeline, &admin.metrics, force).await {
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

/// The admin port's routes, behind the token check.
pub fn router(admin: Arc<Admin>) -> Router {
    let stats_json = |State(a): AdminState| async move {
        reply(StatusCode::OK, "application/json", stats(&a.metrics))
    };
    Router::new()
        .route(
            "/health",
            get(|State(a): AdminState| async move { health(&a.metrics) }),
        )
        .route("/", get(page))
        .route("/ui", get(page))
        .route("/ui/graph", get(ui_graph))
        .route("/ui/stats", get(stats_json))
        .route("/ui/tap", get(ui_tap))
        .route("/stats", get(stats_json))
        .route(
            "/tap",
            get(|State(a): AdminState, RawQuery(q): RawQuery| async move {
                tap(&a, &decoded(q.as_deref()))
            }),
        )
        .route(
            "/metrics",
            get(|State(a): AdminState| async move {
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    prometheus(&a.metrics),
                )
            }),
        )
        .route("/reload", post(reload))
        .route(
            "/shadow",
            post(shadow::start)
                .get(shadow::status)
                // A Python or JavaScript component is tens of MB.
                .layer(axum::extract::DefaultBodyLimit::max(512 << 20)),
        )
        .route(
            "/ui/shadow",
            post(shadow::start)
                .get(shadow::status)
                .layer(axum::extract::DefaultBodyLimit::max(512 << 20)),
        )
        .route("/shadow/promote", post(shadow::promote))
        .route("/shadow/stop", post(shadow::stop))
        .route("/ui/shadow/promote", post(shadow::promote))
        .route("/ui/shadow/stop", post(shadow::stop))
        .method_not_allowed_fallback(|| async {
            reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".into(),
            )
        })
        .fallback(|| async { reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()) })
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            require_token,
        ))
        .with_state(admin)
}

/// Bind the admin port; returns the bound address and the serving task.
pub async fn serve(
    address: &str,
    admin: Admin,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_listener(bind(address).await?, admin)
}

/// Most connections the admin port serves at once; a bound on what a
/// flood of clients can hold (could become config).
const MAX_CONNECTIONS: usize = 64;

/// Most taps streaming at once (each parses what it filters).
const MAX_TAPS: usize = 16;

/// Listen on the admin address (before the pipeline starts, so that a port
/// in use is reported before anything runs).
pub async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("admin: cannot listen on {address}: {e}"))
}

/// Serve the admin port on a listener from [`bind`].
pub fn serve_listener(
    listener: TcpListener,
    admin: Admin,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let local = listener.local_addr()?;
    let tls = admin.tls.clone();
    let router = router(Arc::new(admin));
    // Dropping the acceptor (the task is aborted when the pipeline ends)
    // drops every connection still open, and so every tap still streaming.
    let mut acceptor = Acceptor::new(listener, "admin", MAX_CONNECTIONS);
    let task = tokio::spawn(async move {
        loop {
            let stream = acceptor.next().await;
            let service = hyper_util::service::TowerToHyperService::new(router.clone());
            let tls = tls.clone();
            acceptor.spawn(async move {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let ended = match tls {
                    None => {
                        builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                    }
                    Some(tls) => match tls.accept(stream).await {
                        Some((stream, _)) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        None => return,
                    },
                };
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "admin: connection ended with an error");
                }
            });
        }
    });
    tracing::info!(address = %local, "admin port listening");
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_counts_are_exposed_by_component_and_error() {
        let metrics = Registry::default();
        metrics.dead_letters.add("mask", "trap", 0, 3);
        metrics.dead_letters.replayed("mask", "trap", 2);
        metrics.dead_letters.add("mask", "trap", 2, 1);
        let text = prometheus(&metrics);
        for line in [
            "# TYPE sluice_dead_letters_total counter",
            "sluice_dead_letters_total{component=\"mask\",error=\"trap\"} 3",
            "sluice_dead_letters_replayed_total{component=\"mask\",error=\"trap\"} 2",
            "sluice_dead_letters_failed_again_total{component=\"mask\",error=\"trap\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
