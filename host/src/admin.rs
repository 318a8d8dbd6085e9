//! The admin HTTP port: `GET /health`, `GET /metrics` (Prometheus text),
//! `GET /stats` (JSON, for `sluice top`), `GET /tap` (live events, for
//! `sluice tap`), `POST /reload`, and the live page `GET /` (`/ui`) with
//! its data (`/ui/graph`, `/ui/stats`, `/ui/tap`, `/ui/shadow`), and the
//! shadow runs of `sluice plugin shadow` (`/shadow`, in `shadow`). With a
//! token, every endpoint but `/health` requires it.

mod shadow;

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

/// A response body fed by a channel: the tap's stream of lines.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// The parameters of a query string, decoded (losslessly: see `form`).
fn decoded(query: Option<&str>) -> std::collections::BTreeMap<String, String> {
    crate::source::http::form::form_pairs(query.unwrap_or("")).collect()
}

/// `field=value` (or `field!=value`) over a dotted path of an event.
struct TapFilter {
    field: String,
    value: String,
    negate: bool,
}

impl TapFilter {
    fn parse(s: &str) -> Option<TapFilter> {
        let (field, value, negate) = match s.split_once("!=") {
            Some((f, v)) => (f, v, true),
            None => {
                let (f, v) = s.split_once('=')?;
                (f, v, false)
            }
        };
        Some(TapFilter {
            field: field.trim().to_string(),
            value: value.trim().to_string(),
            negate,
        })
    }

    fn matches(&self, event: &serde_json::Value) -> bool {
        let mut v = event;
        for part in self.field.split('.') {
            match v.get(part) {
                Some(x) => v = x,
                None => return self.negate,
            }
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (text == self.value) != self.negate
    }
}

/// Stream a component's output as JSON lines until `limit` events or the
/// client goes away.
fn tap(admin: &Arc<Admin>, q: &std::collections::BTreeMap<String, String>) -> Response<Body> {
    let Some(component) = q.get("component") else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "give ?component=NAME\n".into(),
        );
    };
    let Some(metrics) = admin.metrics.find(component) else {
        let known: Vec<String> = admin
            .metrics
            .snapshot()
            .into_iter()
            .map(|s| s.name)
            .collect();
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no component `{component}` (known: {})\n", known.join(", ")),
        );
    };
    let filter = match q.get("filter").filter(|f| !f.is_empty()) {
        Some(f) => match TapFilter::parse(f) {
            Some(t) => Some(t),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    format!("bad filter `{f}`: write field=value\n"),
                )
            }
        },
        None => None,
    };
    let limit: Option<u64> = q.get("limit").and_then(|l| l.parse().ok());
    let taps = admin.metrics.taps.clone();
    if taps.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= MAX_TAPS {
        taps.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{MAX_TAPS} taps are open already; close one\n"),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        /// Gives the tap's place back however the task ends.
        struct Open(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _open = Open(taps);
        let mut guard = metrics.tap.subscribe();
        let mut sent = 0u64;
        loop {
            // A client that went away ends the tap at once, even when the
            // filter lets nothing through (nothing would be sent to notice).
            let batch = tokio::select! {
                _ = tx.closed() => return,
                r = guard.rx.recv() => match r {
                    Ok(b) => b,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(batches = n, "tap fell behind; copies dropped");
                        continue;
                    }
                    Err(_) => return,
                },
            };
            let mut lines = Vec::new();
            for event in batch.iter() {
                if let Some(f) = &filter {
                    match serde_json::from_slice::<serde_json::Value>(event) {
                        Ok(v) if f.matches(&v) => {}
                        _ => continue,
                    }
                }
                lines.extend_from_slice(event);
                lines.push(b'\n');
                sent += 1;
                if limit.is_some_and(|l| sent >= l) {
                    break;
                }
            }
            if crate::base::secrets::any() {
                let text = String::from_utf8_lossy(&lines);
                if let std::borrow::Cow::Owned(redacted) = crate::base::secrets::redact(&text) {
                    lines = redacted.into_bytes();
                }
            }
            if !lines.is_empty() && tx.send(Bytes::from(lines)).await.is_err() {
                return;
            }
            if limit.is_some_and(|l| sent >= l) {
                return;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(ChannelBody { rx }.boxed())
        .expect("static response parts are valid")
}

/// The pipeline as a graph for the live page: nodes (sources, transforms,
/// sinks, the dead letters when something reads them), with whether the
/// page may show their events, and edges from inputs.
pub fn graph(config: &crate::config::PipelineConfig) -> serde_json::Value {
    use serde_json::json;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let base = |input: &str| input.split_once('.').map_or(input, |(n, _)| n).to_string();
    let port = |input: &str| input.split_once('.').map(|(_, p)| p.to_string());
    for s in &config.sources {
        nodes
            .push(json!({"name": s.name, "kind": "source", "tappable": tappable(config, &s.name)}));
    }
    let mut dead = false;
    for t in &config.transforms {
        nodes.push(
            json!({"name": t.name, "kind": "transform", "plugin": t.config.plugin.get_ref(),
                          "tappable": tappable(config, &t.name)}),
        );
        for i in &t.config.inputs {
            dead |= base(i.get_ref()) == crate::delivery::DEAD_LETTERS;
            edges.push(json!({"from": base(i.get_ref()), "port": port(i.get_ref()), "to": t.name}));
        }
    }
    for s in &config.sinks {
        nodes.push(json!({"name": s.name, "kind": "sink", "tappable": tappable(config, &s.name)}));
        for i in s.config.inputs() {
            dead |= base(i.get_ref()) == crate::delivery::DEAD_LETTERS;
            edges.push(json!({"from": base(i.get_ref()), "port": port(i.get_ref()), "to": s.name}));
        }
        if let Some(f) = s.config.fallback() {
            edges.push(json!({"from": s.name, "port": "fallback", "to": f.get_ref()}));
        }
    }
    if dead {
        nodes.push(
            json!({"name": crate::delivery::DEAD_LETTERS, "kind": "dead_letters",
                          "tappable": tappable(config, crate::delivery::DEAD_LETTERS)}),
        );
    }
    json!({"nodes": nodes, "edges": edges})
}

/// Whether the live page may show `name`'s events: when the pipeline masks
/// (a transform runs the `mask` plugin), only what has passed a mask.
pub fn tappable(config: &crate::config::PipelineConfig, name: &str) -> bool {
    let is_mask = |t: &crate::config::TransformConfig| {
        let p = t.plugin.get_ref();
        p == "mask"
            || std::path::Path::new(p)
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().contains("mask"))
    };
    if !config.transforms.iter().any(|t| is_mask(&t.config)) {
        return true;
    }
    fn masked(
        config: &crate::config::PipelineConfig,
        name: &str,
        is_mask: &dyn Fn(&crate::config::TransformConfig) -> bool,
        depth: usize,
    ) -> bool {
        if depth > 64 {
            return false;
        }
        let inputs: Vec<String> = if let Some(t) = config.transforms.iter().find(|t| t.name == name)
        {
            if is_mask(&t.config) {
                return true;
            }
            t.config
                .inputs
                .iter()
                .map(|i| i.get_ref().clone())
                .collect()
        } else if let Some(s) = config.sinks.iter().find(|s| s.name == name) {
            s.config
                .inputs()
                .iter()
                .map(|i| i.get_ref().clone())
                .collect()
        } else {
            // A source, or the dead letters (which hold events as they
            // failed, before any mask).
            return false;
        };
        !inputs.is_empty()
            && inputs.iter().all(|i| {
                let base = i.split_once('.').map_or(i.as_str(), |(n, _)| n);
                masked(config, base, is_mask, depth + 1)
            })
    }
    masked(config, name, &is_mask, 0)
}

/// Per-component counters as JSON, for `sluice top`.
fn stats(metrics: &Registry) -> String {
    let components: Vec<serde_json::Value> = metrics
        .snapshot()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name, "kind": s.kind.as_str(), "events_in": s.events_in, "events_out": s.events_out,
                "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "dropped": s.dropped, "failed": s.failed,
                "discarded": s.discarded, "down": s.down,
                "buffer": s.buffer.as_ref().map(|b| serde_json::json!({
                    "events": b.events, "bytes": b.bytes, "max_bytes": b.max_bytes,
                    "oldest_seconds": b.oldest_ms as f64 / 1000.0,
                    "corrupt_records": b.corrupt_records, "dropped": b.dropped,
                    "redelivered": b.redelivered,
                })),
                "encryption": s.recipients.as_ref().map(|(fingerprint, keys)| serde_json::json!({
                    "recipients_fingerprint": fingerprint, "recipients": keys,
                    "encrypted_bytes": s.encrypted_bytes,
                })),
            })
        })
        .collect();
    let queues: serde_json::Map<String, serde_json::Value> = metrics
        .queue_depths()
        .into_iter()
        .map(|(n, d, _)| (n, d.into()))
        .collect();
    format!(
        "{}\n",
        serde_json::json!({"components": components, "queues": queues, "hops": hops_json(metrics)})
    )
}

/// 200 when every component works, 503 with the reasons otherwise.
fn health(metrics: &Registry) -> Response<Body> {
    let down: Vec<serde_json::Value> = metrics
        .snapshot()
        .into_iter()
        .filter_map(|s| {
            s.down
                .map(|reason| serde_json::json!({"component": s.name, "reason": reason}))
        })
        .collect();
    if down.is_empty() {
        reply(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}\n".into(),
        )
    } else {
        reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            format!("{}\n", serde_json::json!({"status": "down", "down": down})),
        )
    }
}

/// A counter family: its name, help text, and how to read it off a snapshot.
type Counter = (
    &'static str,
    &'static str,
    fn(&crate::base::metrics::Snapshot) -> u64,
);

/// The metrics in the Prometheus text format.
/// Whether a component of its kind and `type` can move the family `name`
/// (families no component can move are left out of `/metrics`, and a
/// family lists only the components that can move it).
fn moves(name: &str, s: &crate::base::metrics::Snapshot) -> bool {
    use crate::base::metrics::Kind::{Sink, Source, Transform};
    let t = s.type_name;
    match name {
        "sluice_plugin_restarts_total" => s.kind == Transform,
        "sluice_file_long_lines_total" => {
            s.kind == Source && matches!(t, "file" | "stdin" | "syslog" | "dead_letters")
        }
        "sluice_file_truncations_total" | "sluice_file_rescued_lines_total" => {
            s.kind == Source && t == "file"
        }
        "sluice_requests_total" => {
            s.kind == Sink && matches!(t, "http" | "elasticsearch" | "loki" | "otlp")
        }
        "sluice_http_busy_total" => s.kind == Source && matches!(t, "http" | "otlp"),
        "sluice_timestamps_unparsed_total" => {
            s.kind == Source && matches!(t, "file" | "stdin" | "http" | "redis" | "internal")
        }
        "sluice_redis_topology_changes_total" => t == "redis",
        "sluice_redis_claimed_total" => s.kind == Source && t == "redis",
        "sluice_redis_unreplicated_writes_total" => s.kind == Sink && t == "redis",
        "sluice_reconnects_total" => t == "redis" || (s.kind == Sink && t == "syslog"),
        "sluice_write_retries_total" => s.kind == Sink || (s.kind == Source && t == "redis"),
        "sluice_connections" => s.kind == Source && matches!(t, "http" | "otlp" | "syslog"),
        _ => true,
    }
}

/// Every `hops` sink's stats, by component name.
fn hop_stats(metrics: &Registry) -> Vec<(String, Arc<crate::base::hops::HopStats>)> {
    metrics
        .components()
        .into_iter()
        .filter_map(|(c, _, m)| {
            let h = m.hops.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
            Some((c, h))
        })
        .collect()
}

/// The metrics declared by `metric` sinks, then what they could not count.
fn declared(metrics: &Registry, out: &mut String) {
    let all: Vec<(String, Arc<crate::base::declared::Declared>)> = metrics
        .components()
        .into_iter()
        .filter_map(|(c, _, m)| {
            let d = m
                .declared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()?;
            Some((c, d))
        })
        .collect();
    if all.is_empty() {
        return;
    }
    for (_, d) in &all {
        d.write(out);
    }
    for (i, (name, help)) in [
        (
            "sluice_metric_folded_total",
            "Events a metric sink counted in its `other` series: its max_series was reached.",
        ),
        (
            "sluice_metric_no_value_total",
            "Events a metric sink matched without a number in its value field (not counted).",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (component, d) in &all {
            let (folded, no_value) = d.losses();
            let _ = writeln!(
                out,
                "{name}{{component=\"{}\"}} {}",
                escape_label(component),
                [folded, no_value][i]
            );
        }
    }
}

/// The `hops` sinks' families: one histogram per hop, and what bounds them.
fn hop_latencies(metrics: &Registry, out: &mut String) {
    let all = hop_stats(metrics);
    if all.is_empty() {
        return;
    }
    let name = "sluice_hop_latency_seconds";
    let _ = writeln!(out, "# HELP {name} Time from a request's last event in one component to its first in the next (a hops sink; as sluice timeline measures it).\n# TYPE {name} histogram");
    for (component, h) in &all {
        for hop in h.read() {
            let labels = format!(
                "component=\"{component}\",from=\"{}\",to=\"{}\"",
                escape_label(&hop.from),
                escape_label(&hop.to)
            );
            for (i, c) in hop.cumulative.iter().enumerate() {
                let le = crate::base::metrics::BUCKETS
                    .get(i)
                    .map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", hop.sum);
            let _ = writeln!(
                out,
                "{name}_count{{{labels}}} {}",
                hop.cumulative.last().copied().unwrap_or(0)
            );
        }
    }
    let _ = writeln!(out, "# HELP sluice_hop_requests_held Requests a hops sink follows now (at most its max_requests).\n# TYPE sluice_hop_requests_held gauge");
    for (component, h) in &all {
        let _ = writeln!(
            out,
            "sluice_hop_requests_held{{component=\"{component}\"}} {}",
            h.held.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP sluice_hop_requests_forgotten_total Requests a hops sink stopped following: beyond max_requests, or unseen for request_timeout.\n# TYPE sluice_hop_requests_forgotten_total counter");
    for (component, h) in &all {
        for (reason, n) in [
            ("max_requests", &h.forgotten_full),
            ("request_timeout", &h.forgotten_idle),
        ] {
            let _ = writeln!(
                out,
                "sluice_hop_requests_forgotten_total{{component=\"{component}\",reason=\"{reason}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(out, "# HELP sluice_hop_out_of_order_total Events older than the segment of their request they would follow (no hop measured).\n# TYPE sluice_hop_out_of_order_total counter");
    for (component, h) in &all {
        let _ = writeln!(
            out,
            "sluice_hop_out_of_order_total{{component=\"{component}\"}} {}",
            h.out_of_order.load(Ordering::Relaxed)
        );
    }
}

/// The `hops` sinks' hops for the live page: requests and percentiles
/// (the upper bound of the bucket that holds them), per hop.
fn hops_json(metrics: &Registry) -> serde_json::Value {
    hop_stats(metrics)
        .into_iter()
        .map(|(component, h)| {
            let hops: Vec<serde_json::Value> = h
                .read()
                .iter()
                .map(|hop| {
                    serde_json::json!({
                        "from": &*hop.from, "to": &*hop.to,
                        "requests": hop.cumulative.last().copied().unwrap_or(0),
                        "p50": hop.percentile(50.0), "p95": hop.percentile(95.0),
                        "p99": hop.percentile(99.0),
                    })
                })
                .collect();
            serde_json::json!({
                "component": component, "correlation": h.correlation,
                "held": h.held.load(Ordering::Relaxed), "hops": hops,
            })
        })
        .collect()
}

pub fn prometheus(metrics: &Registry) -> String {
    let snaps = metrics.snapshot();
    let mut out = String::new();
    let counters: [Counter; 19] = [
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
        (
            "sluice_file_long_lines_total",
            "Lines longer than max_line, truncated or dead-lettered.",
            |s| s.long_lines,
        ),
        (
            "sluice_file_truncations_total",
            "Files found truncated in place (copytruncate).",
            |s| s.truncations,
        ),
        (
            "sluice_file_rescued_lines_total",
            "Lines a truncation would have lost, read from the copy it left.",
            |s| s.rescued_lines,
        ),
        (
            "sluice_requests_total",
            "Requests a network sink sent (retries included).",
            |s| s.requests,
        ),
        (
            "sluice_http_busy_total",
            "Requests the HTTP source answered 503: the pipeline was full or stopping.",
            |s| s.busy,
        ),
        (
            "sluice_timestamps_unparsed_total",
            "Events whose time field a source could not parse (it used the arrival time).",
            |s| s.timestamps_unparsed,
        ),
        (
            "sluice_redis_topology_changes_total",
            "Changes of a Redis Cluster's masters a component saw (failovers, resharding).",
            |s| s.topology_changes,
        ),
        (
            "sluice_redis_claimed_total",
            "Stream entries a Redis source took over from other consumers (XCLAIM).",
            |s| s.claimed,
        ),
        (
            "sluice_redis_unreplicated_writes_total",
            "Stream writes a Redis sink counted with fewer replicas than `replicas`: their master had fewer connected.",
            |s| s.unreplicated,
        ),
        (
            "sluice_reconnects_total",
            "Connections re-established after a failure.",
            |s| s.reconnects,
        ),
        (
            "sluice_write_retries_total",
            "Writes retried after an error.",
            |s| s.retries,
        ),
    ];
    for (name, help, get) in counters {
        let movers: Vec<_> = snaps.iter().filter(|s| moves(name, s)).collect();
        if movers.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for s in movers {
            let _ = writeln!(
                out,
                "{name}{{component=\"{}\",kind=\"{}\"}} {}",
                s.name,
                s.kind.as_str(),
                get(s)
            );
        }
    }
    let encrypting: Vec<_> = snaps.iter().filter(|s| s.recipients.is_some()).collect();
    if !encrypting.is_empty() {
        let _ = writeln!(out, "# HELP sluice_file_encrypted_bytes_total Ciphertext bytes an encrypting file sink wrote.\n# TYPE sluice_file_encrypted_bytes_total counter");
        for s in &encrypting {
            let _ = writeln!(
                out,
                "sluice_file_encrypted_bytes_total{{component=\"{}\",kind=\"sink\"}} {}",
                s.name, s.encrypted_bytes
            );
        }
        let _ = writeln!(out, "# HELP sluice_file_encryption_recipients The age recipients an encrypting file sink uses now, by fingerprint (SHA-256 of the sorted keys).\n# TYPE sluice_file_encryption_recipients gauge");
        for s in &encrypting {
            let (fingerprint, keys) = s.recipients.as_ref().expect("filtered above");
            let _ = writeln!(
                out,
                "sluice_file_encryption_recipients{{component=\"{}\",kind=\"sink\",fingerprint=\"{fingerprint}\"}} {keys}",
                s.name
            );
        }
    }
    let alerting: Vec<_> = snaps.iter().filter(|s| s.alerts != [0; 3]).collect();
    if !alerting.is_empty() {
        let _ = writeln!(out, "# HELP sluice_alerts_total Notifications of alert sinks: sent, suppressed by max_per_minute, failed (given up after retry_for).\n# TYPE sluice_alerts_total counter");
        for s in &alerting {
            for (result, n) in ["sent", "suppressed", "failed"].iter().zip(s.alerts) {
                let _ = writeln!(
                    out,
                    "sluice_alerts_total{{component=\"{}\",kind=\"sink\",result=\"{result}\"}} {n}",
                    s.name
                );
            }
        }
    }
    let counted: Vec<(String, std::collections::BTreeMap<String, u64>)> = metrics
        .components()
        .into_iter()
        .filter_map(|(c, _, m)| {
            let counts = m
                .plugin_counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            (!counts.is_empty()).then_some((c, counts))
        })
        .collect();
    if !counted.is_empty() {
        let _ = writeln!(out, "# HELP sluice_plugin_count_total What plugins counted through the host (the count import), by transform and name.\n# TYPE sluice_plugin_count_total counter");
        for (component, counts) in &counted {
            for (name, n) in counts {
                let _ = writeln!(
                    out,
                    "sluice_plugin_count_total{{component=\"{}\",name=\"{name}\"}} {n}",
                    escape_label(component)
                );
            }
        }
    }
    let _ = writeln!(out, "# HELP sluice_component_up Whether the component works (0: see /health).\n# TYPE sluice_component_up gauge");
    for s in &snaps {
        let _ = writeln!(
            out,
            "sluice_component_up{{component=\"{}\",kind=\"{}\"}} {}",
            s.name,
            s.kind.as_str(),
            u8::from(s.down.is_none())
        );
    }
    let tls: Vec<_> = snaps.iter().filter(|s| !s.tls_errors.is_empty()).collect();
    if !tls.is_empty() {
        let _ = writeln!(out, "# HELP sluice_tls_errors_total TLS handshakes that failed, by reason.\n# TYPE sluice_tls_errors_total counter");
        for s in &tls {
            for (reason, n) in &s.tls_errors {
                let _ = writeln!(
                    out,
                    "sluice_tls_errors_total{{component=\"{}\",kind=\"{}\",reason=\"{}\"}} {n}",
                    s.name,
                    s.kind.as_str(),
                    escape_label(reason)
                );
            }
        }
    }
    let buffered: Vec<_> = snaps
        .iter()
        .filter_map(|s| Some((&s.name, s.buffer.as_ref()?)))
        .collect();
    if !buffered.is_empty() {
        type Get = fn(&crate::base::metrics::BufferSnapshot) -> String;
        let families: [(&str, &str, &str, Get); 7] = [
            ("sluice_buffer_events", "gauge", "Events in a sink's disk buffer, not yet delivered.", |b| b.events.to_string()),
            ("sluice_buffer_bytes", "gauge", "Bytes of a sink's disk buffer on disk.", |b| b.bytes.to_string()),
            ("sluice_buffer_max_bytes", "gauge", "The max_size of a sink's disk buffer.", |b| b.max_bytes.to_string()),
            ("sluice_buffer_oldest_seconds", "gauge", "Age of the oldest undelivered event in a sink's disk buffer.", |b| format!("{:.3}", b.oldest_ms as f64 / 1000.0)),
            ("sluice_buffer_corrupt_records_total", "counter", "Records of a disk buffer found corrupt (their events lost, the rest delivered; the segment quarantined).", |b| b.corrupt_records.to_string()),
            ("sluice_buffer_dropped_total", "counter", "Events a full disk buffer refused (when_full = drop_newest or dead_letter).", |b| b.dropped.to_string()),
            ("sluice_buffer_redelivered_total", "counter", "Events handed to the sink again after a restart (handed out before it, not acknowledged: possible duplicates).", |b| b.redelivered.to_string()),
        ];
        for (name, kind, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (component, b) in &buffered {
                let _ = writeln!(
                    out,
                    "{name}{{component=\"{component}\",kind=\"sink\"}} {}",
                    get(b)
                );
            }
        }
    }
    let listening: Vec<_> = snaps
        .iter()
        .filter(|s| moves("sluice_connections", s))
        .collect();
    if !listening.is_empty() {
        let _ = writeln!(out, "# HELP sluice_connections Connections open now (sources that take connections).\n# TYPE sluice_connections gauge");
    }
    for s in listening {
        let _ = writeln!(
            out,
            "sluice_connections{{component=\"{}\",kind=\"source\"}} {}",
            s.name, s.connections
        );
    }
    let depths = metrics.queue_depths();
    let _ = writeln!(out, "# HELP sluice_queue_batches Batches waiting in a component's input channel.\n# TYPE sluice_queue_batches gauge");
    for (name, depth, _) in &depths {
        let _ = writeln!(out, "sluice_queue_batches{{component=\"{name}\"}} {depth}");
    }
    let _ = writeln!(out, "# HELP sluice_queue_capacity_batches Size of a component's input channel.\n# TYPE sluice_queue_capacity_batches gauge");
    for (name, _, cap) in &depths {
        let _ = writeln!(
            out,
            "sluice_queue_capacity_batches{{component=\"{name}\"}} {cap}"
        );
    }
    let by_fields: Vec<_> = metrics
        .components()
        .into_iter()
        .filter_map(|(c, k, m)| {
            let by = m
                .by_fields
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()?;
            Some((c, k, by))
        })
        .collect();
    if !by_fields.is_empty() {
        let name = "sluice_events_by_field_total";
        let _ = writeln!(out, "# HELP {name} Events of a component by the values of the fields its metrics.by names (label sets past max_series count as \"other\").\n# TYPE {name} counter");
        for (component, kind, by) in &by_fields {
            for (values, n) in by.read() {
                let mut labels = format!("component=\"{component}\",kind=\"{}\"", kind.as_str());
                for (label, value) in by.labels.iter().zip(&values) {
                    let _ = write!(labels, ",{label}=\"{}\"", escape_label(value));
                }
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
        }
    }
    hop_latencies(metrics, &mut out);
    declared(metrics, &mut out);
    let name = "sluice_batch_duration_seconds";
    let _ = writeln!(out, "# HELP {name} Time to process one batch: the plugin call (transforms), the write (sinks).\n# TYPE {name} histogram");
    for (component, kind, m) in metrics.components() {
        if kind == crate::base::metrics::Kind::Source {
            continue;
        }
        let (cumulative, sum) = m.batch_seconds.read();
        let labels = format!("component=\"{component}\",kind=\"{}\"", kind.as_str());
        for (i, c) in cumulative.iter().enumerate() {
            let le = crate::base::metrics::BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "{name}_count{{{labels}}} {}",
            cumulative.last().copied().unwrap_or(0)
        );
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
    let rows = metrics.dead_letters.rows();
    for (i, (name, help)) in [
        (
            "sluice_dead_letters_total",
            "Dead letters written, by the component that failed the event and why.",
        ),
        (
            "sluice_dead_letters_replayed_total",
            "Events sent again from dead letters, by where and why they had failed.",
        ),
        (
            "sluice_dead_letters_failed_again_total",
            "Replayed events that failed again.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (component, kind, written, replayed, again) in &rows {
            let v = [written, replayed, again][i];
            let _ = writeln!(
                out,
                "{name}{{component=\"{}\",error=\"{}\"}} {v}",
                escape_label(component),
                escape_label(kind)
            );
        }
    }
    shadow::prometheus(metrics, &mut out);
    out
}

/// Whether a request carries the admin token (`Authorization: Bearer`,
/// or `?token=` for a browser opening the page), compared in constant time.
fn authorized(admin: &Admin, headers: &hyper::HeaderMap, query: Option<&str>) -> bool {
    let Some(token) = &admin.token else {
        return true;
    };
    let given = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| decoded(query).remove("token"));
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// The host part of a `Host` header: `[::1]:9598` -> `::1`,
/// `example.com:80` -> `example.com`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

/// Whether a `Host` names this port: an IP address (DNS rebinding needs a
/// name), `localhost`, or a name of `[admin] hosts`.
fn host_allowed(admin: &Admin, host: &str) -> bool {
    let name = host_name(host);
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || admin.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Why a request that changes state (`POST`) is refused, if it is: one a
/// page on another site could send is. A browser sends a form (or a
/// `fetch` without a preflight) only as `application/x-www-form-urlencoded`,
/// `multipart/form-data` or `text/plain`, so a JSON content type is
/// required; an `Origin` must be this port's own; and with a token set, it
/// must come in the `Authorization` header (not a `?token=` link).
fn cross_site(admin: &Admin, headers: &hyper::HeaderMap, host: &str) -> Option<&'static str> {
    let json = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            // Neither is a type a foreign page's form may send without a
            // CORS preflight (which this port never answers).
            let t = t.trim();
            t.eq_ignore_ascii_case("application/json") || t.eq_ignore_ascii_case("application/wasm")
        });
    if !json {
        return Some("a POST to the admin port needs `Content-Type: application/json` (or `application/wasm` for a component)");
    }
    if let Some(origin) = headers.get(hyper::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !own {
            return Some("a POST from another origin is refused");
        }
    }
    if admin.token.is_some() && headers.get(hyper::header::AUTHORIZATION).is_none() {
        return Some("a POST carries the token in `Authorization: Bearer TOKEN`");
    }
    None
}

/// The middleware in front of every route: the `Host` must name this
/// port, a `POST` must not be one a foreign page could send, and with a
/// token, every endpoint but `/health` requires it.
async fn require_token(
    State(admin): State<Arc<Admin>>,
    req: axum::extract::Request,
    next: Next,
) -> axum::response::Response {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !host_allowed(&admin, &host) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "text/plain",
            format!("this admin port does not answer to `Host: {host}` (add the name to [admin] hosts)\n"),
        )
        .into_response();
    }
    if req.method() == hyper::Method::POST {
        if let Some(why) = cross_site(&admin, req.headers(), &host) {
            return reply(StatusCode::FORBIDDEN, "text/plain", format!("{why}\n")).into_response();
        }
    }
    if req.uri().path() != "/health" && !authorized(&admin, req.headers(), req.uri().query()) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("content-type", "text/plain")
            .header("www-authenticate", "Bearer")
            .body(
                Full::new(Bytes::from_static(
                    b"this admin port wants its token: Authorization: Bearer TOKEN (or ?token=TOKEN for the page)\n",
                ))
                .boxed(),
            )
            .expect("static response parts are valid")
            .into_response();
    }
    next.run(req).await
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

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
