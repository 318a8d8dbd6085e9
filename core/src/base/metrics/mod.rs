//! Per-component counters, counted per batch (never per event in a loop).

mod by_fields;
mod histogram;
mod tap;

pub use self::by_fields::*;
pub use self::histogram::*;
pub use self::tap::*;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters of one component.
#[derive(Debug, Default)]
pub struct ComponentMetrics {
    /// Events received (for a source: events read).
    pub events_in: AtomicU64,
    /// Events sent on (for a sink: events written).
    pub events_out: AtomicU64,
    /// Bytes of the events received.
    pub bytes_in: AtomicU64,
    /// Bytes of the events sent on or written.
    pub bytes_out: AtomicU64,
    /// Events dropped on purpose (a filter's verdict, `on_error = "drop"`).
    pub dropped: AtomicU64,
    /// Events that failed and went to the dead letters.
    pub failed: AtomicU64,
    /// Events sent to an output nobody reads (counted so none vanish unseen).
    pub discarded: AtomicU64,
    /// Plugin instances replaced after a trap, timeout or memory exhaustion.
    pub restarts: AtomicU64,
    /// Writes retried after an error (sinks).
    pub retries: AtomicU64,
    /// Connections re-established after a failure (Redis).
    pub reconnects: AtomicU64,
    /// Lines longer than `max_line`, truncated or dead-lettered (file source),
    /// or than `max_record`, skipped (dead_letters source).
    pub long_lines: AtomicU64,
    /// Files found truncated in place, as by `copytruncate` (file source).
    pub truncations: AtomicU64,
    /// Lines read back from the copy a `copytruncate` left, which the
    /// truncation would otherwise have lost (file source).
    pub rescued_lines: AtomicU64,
    /// Connections open now (a gauge; the HTTP source).
    pub connections: AtomicU64,
    /// Requests sent, retries included (network sinks).
    pub requests: AtomicU64,
    /// Events whose time field did not parse (sources; the arrival time was used).
    pub timestamps_unparsed: AtomicU64,
    /// Requests answered 503 because the pipeline had no room or was stopping
    /// (the HTTP source), which clients often drop without a trace.
    pub busy: AtomicU64,
    /// Notifications an alert sink sent, held back by its rate limit, and
    /// gave up on.
    pub alerts_sent: AtomicU64,
    pub alerts_suppressed: AtomicU64,
    pub alerts_failed: AtomicU64,
    /// Ciphertext bytes an encrypting file sink wrote.
    pub encrypted_bytes: AtomicU64,
    /// Changes of a Redis Cluster's masters seen (failovers, resharding).
    pub topology_changes: AtomicU64,
    /// Stream entries taken over from other consumers (`XCLAIM`).
    pub claimed: AtomicU64,
    /// Stream writes counted with fewer replicas than asked: their master
    /// had fewer connected.
    pub unreplicated: AtomicU64,
    /// The fingerprint and number of the age recipients an encrypting file
    /// sink uses now.
    pub recipients: Mutex<Option<(String, usize)>>,
    /// Time spent on one batch: the plugin call for a transform, the write
    /// for a sink.
    pub batch_seconds: Histogram,
    /// Why the component is not working right now (`None`: healthy).
    pub down: Mutex<Option<String>>,
    /// A sink's disk buffer, while one is open.
    pub buffer: Mutex<Option<Arc<sluice_buffer::Stats>>>,
    /// TLS handshakes that failed, by reason (listeners).
    pub tls_errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Copies of the batches leaving the component, for `sluice tap`.
    pub tap: Tap,
    /// Events counted by the values of some of their fields
    /// (`metrics = { by = [...] }`), when the component asks.
    pub by_fields: std::sync::RwLock<Option<Arc<ByFields>>>,
    /// A `hops` sink's live hop latencies.
    pub hops: Mutex<Option<Arc<crate::base::hops::HopStats>>>,
    /// A `metric` sink's declared metric.
    pub declared: Mutex<Option<Arc<crate::base::declared::Declared>>>,
    /// A transform's plugin counters (the `count` import): name -> total,
    /// at most [`MAX_PLUGIN_COUNTERS`] names.
    pub plugin_counts: Mutex<std::collections::BTreeMap<String, u64>>,
    /// The component's `type` (`file`, `redis`, ...; empty when it has
    /// none, as the dead letters): which metric families it can move.
    pub type_name: Mutex<&'static str>,
}

/// Counting can be switched off as a whole, to measure what it costs.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Most plugin counter names one transform shows on `/metrics` (a plugin
/// instance may use 32; versions swapped in may use others).
pub const MAX_PLUGIN_COUNTERS: usize = 64;

impl ComponentMetrics {
    /// Add what a plugin counted (`count`) to this transform's counters.
    pub fn add_plugin_counts(&self, counts: Vec<(String, u64)>) {
        if counts.is_empty() {
            return;
        }
        let mut all = self.plugin_counts.lock().unwrap_or_else(|e| e.into_inner());
        for (name, n) in counts {
            if let Some(total) = all.get_mut(&name) {
                *total = total.saturating_add(n);
            } else if all.len() < MAX_PLUGIN_COUNTERS {
                all.insert(name, n);
            }
        }
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        if ENABLED.load(Relaxed) {
            counter.fetch_add(n as u64, Relaxed);
        }
    }

    /// Count a failed TLS handshake.
    pub fn tls_error(&self, reason: &'static str) {
        *self
            .tls_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Mark the component down, with the reason, or up again (`None`).
    pub fn set_down(&self, reason: Option<String>) {
        *self.down.lock().expect("health lock poisoned") = reason;
    }

    /// Count a batch by fields, if the component asks.
    pub fn count_fields(&self, batch: &crate::base::event::Batch) {
        if !ENABLED.load(Relaxed) {
            return;
        }
        let by = self.by_fields.read().unwrap_or_else(|e| e.into_inner());
        if let Some(by) = by.as_ref() {
            by.count(batch);
        }
    }

    /// Count by these fields from now on (`None`: not at all). The counts
    /// so far stay while the settings do.
    pub fn set_by_fields(&self, config: Option<&FieldMetricsConfig>) {
        let mut by = self.by_fields.write().unwrap_or_else(|e| e.into_inner());
        if by.as_ref().map(|b| &b.config) != config {
            *by = config.map(|c| Arc::new(ByFields::new(c.clone())));
        }
    }

    /// Which age recipients an encrypting file sink uses now (fingerprint,
    /// number of keys).
    pub fn set_recipients(&self, recipients: Option<(String, usize)>) {
        *self.recipients.lock().unwrap_or_else(|e| e.into_inner()) = recipients;
    }
}

/// What kind of component a metrics entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

/// A snapshot of one component's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub kind: Kind,
    pub events_in: u64,
    pub events_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped: u64,
    pub failed: u64,
    pub discarded: u64,
    pub restarts: u64,
    pub retries: u64,
    pub reconnects: u64,
    pub long_lines: u64,
    pub truncations: u64,
    pub rescued_lines: u64,
    pub connections: u64,
    pub requests: u64,
    pub timestamps_unparsed: u64,
    pub busy: u64,
    pub encrypted_bytes: u64,
    pub topology_changes: u64,
    pub claimed: u64,
    pub unreplicated: u64,
    /// Alert notifications: sent, suppressed, failed.
    pub alerts: [u64; 3],
    pub recipients: Option<(String, usize)>,
    pub down: Option<String>,
    /// A sink's disk buffer.
    pub buffer: Option<BufferSnapshot>,
    /// The component's `type` (empty when it has none).
    pub type_name: &'static str,
    /// Failed TLS handshakes by reason.
    pub tls_errors: Vec<(String, u64)>,
}

/// A disk buffer's fill and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BufferSnapshot {
    pub events: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    /// Age of the oldest undelivered event, in milliseconds.
    pub oldest_ms: u64,
    pub corrupt_records: u64,
    pub dropped: u64,
    pub redelivered: u64,
}

impl BufferSnapshot {
    fn of(s: &sluice_buffer::Stats) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        BufferSnapshot {
            events: s.events.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            max_bytes: s.max_size.load(Relaxed),
            oldest_ms: (s.oldest_seconds(now) * 1000.0) as u64,
            corrupt_records: s.corrupt_records.load(Relaxed),
            dropped: s.dropped.load(Relaxed),
            redelivered: s.redelivered.load(Relaxed),
        }
    }
}

/// One registered component: its name, kind and counters.
type Entry = (String, Kind, Arc<ComponentMetrics>);

/// Dead letters written, replayed and failed again, by component and kind.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterStats(Arc<Mutex<DeadLetterCounts>>);

/// (component, error kind) -> [written, replayed, failed again].
type DeadLetterCounts = BTreeMap<(String, String), [u64; 3]>;

impl DeadLetterStats {
    /// Count `n` in column `which`: 0 written, 1 replayed, 2 failed again.
    pub fn add(&self, component: &str, kind: &str, which: usize, n: u64) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((component.to_string(), kind.to_string()))
            .or_default()[which] += n;
    }

    /// Count events sent again from dead letters of `component` and `kind`.
    pub fn replayed(&self, component: &str, kind: &str, n: u64) {
        self.add(component, kind, 1, n);
    }

    /// (component, kind, written, replayed, failed again), sorted.
    pub fn rows(&self) -> Vec<(String, String, u64, u64, u64)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|((c, k), [w, r, f])| (c.clone(), k.clone(), *w, *r, *f))
            .collect()
    }
}

/// The kinds of comparison of a shadow run, in `sluice_shadow_events_total`'s order.
pub const SHADOW_OUTCOMES: [&str; 5] = ["same", "kept_vs_dropped", "routed", "replaced", "error"];

/// `sluice_shadow_events_total`: per transform, per outcome, over every
/// shadow run since the pipeline started.
#[derive(Debug, Default)]
pub struct ShadowTotals {
    counts: Mutex<BTreeMap<String, [u64; 5]>>,
}

impl ShadowTotals {
    pub fn add(&self, transform: &str, counts: &[u64; 5]) {
        let mut all = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let t = all.entry(transform.to_string()).or_default();
        for (a, b) in t.iter_mut().zip(counts) {
            *a += b;
        }
    }

    /// (transform, counts in `OUTCOMES` order).
    pub fn snapshot(&self) -> Vec<(String, [u64; 5])> {
        let all = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Every component's counters.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Reloads (of a plugin or of the pipeline) that took effect.
    pub reloads_ok: Arc<AtomicU64>,
    /// Reloads refused (compile or init error, invalid pipeline); the old
    /// version kept running.
    pub reloads_failed: Arc<AtomicU64>,
    /// Input channels of consumers, weakly, to report queue depths.
    queues: Arc<Mutex<Vec<Queue>>>,
    /// `sluice tap` streams open now (the admin port caps them).
    pub taps: Arc<AtomicUsize>,
    /// Dead letters written, replayed and failed again.
    pub dead_letters: DeadLetterStats,
    /// Shadow runs' comparisons.
    pub shadows: Arc<ShadowTotals>,
}

/// A consumer's name and its input channel.
type Queue = (
    String,
    tokio::sync::mpsc::WeakSender<crate::base::event::SharedBatch>,
);

impl Registry {
    /// The counters of a component, created on first use.
    pub fn component(&self, name: &str, kind: Kind) -> Arc<ComponentMetrics> {
        let mut entries = self.entries.lock().expect("metrics lock poisoned");
        if let Some((_, _, m)) = entries.iter().find(|(n, k, _)| n == name && *k == kind) {
            return m.clone();
        }
        let m = Arc::new(ComponentMetrics::default());
        entries.push((name.to_string(), kind, m.clone()));
        m
    }

    /// Read every counter.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        let entries = self.entries.lock().expect("metrics lock poisoned");
        entries
            .iter()
            .map(|(name, kind, m)| Snapshot {
                name: name.clone(),
                kind: *kind,
                events_in: m.events_in.load(Relaxed),
                events_out: m.events_out.load(Relaxed),
                bytes_in: m.bytes_in.load(Relaxed),
                bytes_out: m.bytes_out.load(Relaxed),
                dropped: m.dropped.load(Relaxed),
                failed: m.failed.load(Relaxed),
                discarded: m.discarded.load(Relaxed),
                restarts: m.restarts.load(Relaxed),
                retries: m.retries.load(Relaxed),
                reconnects: m.reconnects.load(Relaxed),
                long_lines: m.long_lines.load(Relaxed),
                truncations: m.truncations.load(Relaxed),
                rescued_lines: m.rescued_lines.load(Relaxed),
                connections: m.connections.load(Relaxed),
                requests: m.requests.load(Relaxed),
                timestamps_unparsed: m.timestamps_unparsed.load(Relaxed),
                busy: m.busy.load(Relaxed),
                encrypted_bytes: m.encrypted_bytes.load(Relaxed),
                topology_changes: m.topology_changes.load(Relaxed),
                claimed: m.claimed.load(Relaxed),
                unreplicated: m.unreplicated.load(Relaxed),
                alerts: [
                    m.alerts_sent.load(Relaxed),
                    m.alerts_suppressed.load(Relaxed),
                    m.alerts_failed.load(Relaxed),
                ],
                recipients: m
                    .recipients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
                down: m.down.lock().expect("health lock poisoned").clone(),
                buffer: m
                    .buffer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_deref()
                    .map(BufferSnapshot::of),
                tls_errors: m
                    .tls_errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(r, n)| (r.to_string(), *n))
                    .collect(),
                type_name: *m.type_name.lock().unwrap_or_else(|e| e.into_inner()),
            })
            .collect()
    }

    /// Every component's counters, with their histograms.
    pub fn components(&self) -> Vec<(String, Kind, Arc<ComponentMetrics>)> {
        self.entries.lock().expect("metrics lock poisoned").clone()
    }

    /// Register the input channel of a consumer, to report its depth.
    pub fn queue(
        &self,
        name: &str,
        tx: &tokio::sync::mpsc::Sender<crate::base::event::SharedBatch>,
    ) {
        let mut queues = self.queues.lock().expect("metrics lock poisoned");
        queues.retain(|(n, _)| n != name);
        queues.push((name.to_string(), tx.downgrade()));
    }

    /// Batches waiting in each consumer's input channel.
    pub fn queue_depths(&self) -> Vec<(String, usize, usize)> {
        let queues = self.queues.lock().expect("metrics lock poisoned");
        queues
            .iter()
            .filter_map(|(n, w)| {
                let tx = w.upgrade()?;
                Some((
                    n.clone(),
                    tx.max_capacity() - tx.capacity(),
                    tx.max_capacity(),
                ))
            })
            .collect()
    }

    /// A component's metrics by name, if it exists.
    pub fn find(&self, name: &str) -> Option<Arc<ComponentMetrics>> {
        let entries = self.entries.lock().expect("metrics lock poisoned");
        entries
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, m)| m.clone())
    }

    /// One snapshot by component name.
    pub fn get(&self, name: &str) -> Option<Snapshot> {
        self.snapshot().into_iter().find(|s| s.name == name)
    }

    /// The end-of-run summary table: events in/out/dropped per stage.
    /// The run summary: sources, then transforms, then sinks, each in
    /// `order` (the pipeline file's order; names not in it last).
    pub fn summary(&self, order: &[&str]) -> String {
        let mut rows = self.snapshot();
        let rank = |k: Kind| match k {
            Kind::Source => 0,
            Kind::Transform => 1,
            Kind::Sink => 2,
        };
        rows.sort_by_key(|s| {
            let at = order
                .iter()
                .position(|n| *n == s.name)
                .unwrap_or(usize::MAX);
            (rank(s.kind), at)
        });
        table(
            &[
                "kind",
                "component",
                "in",
                "out",
                "dropped",
                "failed",
                "discarded",
            ],
            2,
            rows.iter().map(|s| {
                vec![
                    s.kind.as_str().to_string(),
                    s.name.clone(),
                    s.events_in.to_string(),
                    s.events_out.to_string(),
                    s.dropped.to_string(),
                    s.failed.to_string(),
                    s.discarded.to_string(),
                ]
            }),
        )
    }
}

/// A text table whose columns are as wide as their widest cell: the first
/// `left` columns aligned left, the others right, two spaces between.
/// Cells past the header's columns are appended as they are (a status).
pub fn table(header: &[&str], left: usize, rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            match widths.get(i) {
                Some(&w) if i < left => line.push_str(&format!("{cell:<w$}")),
                Some(&w) => line.push_str(&format!("{cell:>w$}")),
                None => line.push_str(cell),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod table_tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_names() {
        let t = table(
            &["kind", "component", "in"],
            2,
            [
                vec![
                    "source".into(),
                    "a-very-long-component-name".into(),
                    "5".into(),
                ],
                vec!["sink".into(), "out".into(), "1234567".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{t}");
        assert!(lines[2].starts_with("sink    out  "), "{t}");
    }

    #[test]
    fn the_summary_lists_sources_transforms_then_sinks_in_pipeline_order() {
        let r = Registry::default();
        r.component("z_sink", Kind::Sink);
        r.component("b_source", Kind::Source);
        r.component("mask", Kind::Transform);
        r.component("a_source", Kind::Source);
        r.component("filter", Kind::Transform);
        let s = r.summary(&["b_source", "a_source", "mask", "filter", "z_sink"]);
        let names: Vec<&str> = s
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap())
            .collect();
        assert_eq!(names, ["b_source", "a_source", "mask", "filter", "z_sink"]);
    }
}

#[cfg(test)]
mod by_field_tests {
    use super::*;
    use crate::base::event::Batch;

    #[test]
    fn counts_by_values_nested_and_missing_with_a_cap() {
        let by = ByFields::new(FieldMetricsConfig {
            by: vec!["channel".into(), "ctx.level".into()],
            max_series: 3,
        });
        let events = [
            &br#"{"channel":"app","ctx":{"level":"error"}}"#[..],
            br#"{"channel":"app","ctx":{"level":"error"}}"#,
            br#"{"channel":"db","ctx":{"level":"info"}}"#,
            br#"{"channel":7}"#,
            br#"{"channel":"x","ctx":{"level":"warn"}}"#,
            br#"{"channel":"y"}"#,
            b"not json",
        ];
        by.count(&Batch::from_events(events));
        let got = by.read();
        let total: u64 = got.iter().map(|(_, n)| n).sum();
        assert_eq!(total, 7);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&(vec!["app".into(), "error".into()], 2)));
        assert!(got.iter().any(|(k, _)| k == &[OTHER, OTHER]));
        assert_eq!(by.labels, ["channel", "ctx_level"]);
    }

    #[test]
    fn labels_that_cannot_be() {
        let c = |by: &[&str]| FieldMetricsConfig {
            by: by.iter().map(|s| s.to_string()).collect(),
            max_series: 10,
        };
        assert!(c(&["channel", "level"]).check().is_ok());
        assert!(c(&["kind"]).check().unwrap_err().contains("`kind`"));
        assert!(c(&["a.b", "a_b"]).check().unwrap_err().contains("a_b"));
        assert!(c(&[]).check().is_err());
        assert_eq!(label_name("9lives.x"), "_9lives_x");
    }
}
