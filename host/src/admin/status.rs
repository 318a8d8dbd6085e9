//! The admin port's JSON views of the metrics: `/stats` (for `sluice
//! top`), `/health`, and the hops of the live page.

use super::*;

/// Per-component counters as JSON, for `sluice top`.
pub(super) fn stats(metrics: &Registry) -> String {
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
pub(super) fn health(metrics: &Registry) -> Response<Body> {
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

/// The `hops` sinks' hops for the live page: requests and percentiles
/// (the upper bound of the bucket that holds them), per hop.
pub(super) fn hops_json(metrics: &Registry) -> serde_json::Value {
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
