//! `/metrics`: the metrics in the Prometheus text format, the families
//! of every component, the hops and the declared metrics.

use super::*;
use crate::base::metrics::Snapshot;

/// A counter family: its name, help text, and how to read it off a snapshot.
pub(super) type Counter = (
    &'static str,
    &'static str,
    fn(&crate::base::metrics::Snapshot) -> u64,
);

/// Whether a component of its kind and `type` can move the family `name`
/// (families no component can move are left out of `/metrics`, and a
/// family lists only the components that can move it).
pub(super) fn moves(name: &str, s: &crate::base::metrics::Snapshot) -> bool {
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
pub(super) fn hop_stats(metrics: &Registry) -> Vec<(String, Arc<crate::base::hops::HopStats>)> {
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
pub(super) fn declared(metrics: &Registry, out: &mut String) {
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
pub(super) fn hop_latencies(metrics: &Registry, out: &mut String) {
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

/// The metrics in the Prometheus text format: each group of families
/// written by its part, in this order.
pub fn prometheus(metrics: &Registry) -> String {
    let parts: [Part; 16] = [
        counters,
        encryption,
        alerts,
        plugin_counts,
        component_up,
        tls_errors,
        buffers,
        connections,
        queues,
        by_fields,
        |m, _, o| hop_latencies(m, o),
        |m, _, o| declared(m, o),
        batch_durations,
        reloads,
        dead_letters,
        |m, _, o| shadow::prometheus(m, o),
    ];
    let snaps = metrics.snapshot();
    let mut out = String::new();
    for part in parts {
        part(metrics, &snaps, &mut out);
    }
    out
}

/// A group of families of `/metrics`: written from the registry and a
/// snapshot of every component, taken once.
type Part = fn(&Registry, &[Snapshot], &mut String);

/// The counters every component kind may move, by component.
fn counters(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// What encrypting file sinks wrote, and the recipients they use now.
fn encryption(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// Notifications of alert sinks, by result.
fn alerts(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// What plugins counted through the `count` import.
fn plugin_counts(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// Whether each component works.
fn component_up(_: &Registry, snaps: &[Snapshot], out: &mut String) {
    let _ = writeln!(out, "# HELP sluice_component_up Whether the component works (0: see /health).\n# TYPE sluice_component_up gauge");
    for s in snaps {
        let _ = writeln!(
            out,
            "sluice_component_up{{component=\"{}\",kind=\"{}\"}} {}",
            s.name,
            s.kind.as_str(),
            u8::from(s.down.is_none())
        );
    }
}

/// Failed TLS handshakes, by reason.
fn tls_errors(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// Disk buffers of sinks.
fn buffers(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// Open connections of the sources that take them.
fn connections(_: &Registry, snaps: &[Snapshot], out: &mut String) {
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
}

/// Input channels: batches waiting, and their size.
fn queues(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// Events by the values of `metrics.by` fields.
fn by_fields(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// Time to process one batch, as a histogram.
fn batch_durations(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// Reloads by result.
fn reloads(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// Dead letters written, replayed and failed again.
fn dead_letters(metrics: &Registry, _: &[Snapshot], out: &mut String) {
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
}

/// A Prometheus label value: backslash, quote and newline escaped.
pub(super) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
