//! Per-component counters, counted per batch (never per event in a loop).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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
}

impl ComponentMetrics {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Relaxed);
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
}

/// One registered component: its name, kind and counters.
type Entry = (String, Kind, Arc<ComponentMetrics>);

/// Every component's counters.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Reloads (of a plugin or of the pipeline) that took effect.
    pub reloads_ok: Arc<AtomicU64>,
    /// Reloads refused (compile or init error, invalid pipeline); the old
    /// version kept running.
    pub reloads_failed: Arc<AtomicU64>,
}

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
            })
            .collect()
    }

    /// One snapshot by component name.
    pub fn get(&self, name: &str) -> Option<Snapshot> {
        self.snapshot().into_iter().find(|s| s.name == name)
    }

    /// The end-of-run summary table: events in/out/dropped per stage.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:<20} {:>12} {:>12} {:>10} {:>10} {:>10}",
            "kind", "component", "in", "out", "dropped", "failed", "discarded"
        );
        for s in self.snapshot() {
            let _ = writeln!(
                out,
                "{:<10} {:<20} {:>12} {:>12} {:>10} {:>10} {:>10}",
                s.kind.as_str(),
                s.name,
                s.events_in,
                s.events_out,
                s.dropped,
                s.failed,
                s.discarded
            );
        }
        out
    }
}
