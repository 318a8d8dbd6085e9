//! A transform stage: a plugin over the batches of its input channel, on
//! blocking threads (wasm calls are synchronous and CPU-bound).
//!
//! With `concurrency` above 1, that many instances of the plugin, each on a
//! thread of its own and with its own store, take consecutive batches from
//! the one input; each batch gets a sequence number as it is taken, and its
//! output leaves only after the output of every batch before it, so the
//! next stage sees the batches in the order they came. A plugin swap takes
//! effect at one batch for every instance: the batches taken before it are
//! finished by the old version, every batch after it by the new one.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::mpsc;

use sluice_common::action;

use crate::base::event::{check_object, Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::{FinishOnDrop, Output};
use crate::config::OnError;
use crate::delivery::{DeadLetter, DeadLetters, ErrorKind};
use crate::plugin::bindings::Verdicts;
use crate::plugin::{plugin_reason, verdicts, CallError, LoadedPlugin, PluginError};

use super::shadow::{Fate, ShadowSlot};

/// A running transform's parts.
pub struct TransformStage {
    pub name: Arc<str>,
    pub plugin: LoadedPlugin,
    pub input: mpsc::Receiver<SharedBatch>,
    pub output: Output,
    /// Its dead letters (the plugin's source and version are added here).
    pub dead: DeadLetters,
    pub metrics: Arc<ComponentMetrics>,
    pub on_error: OnError,
    /// New versions of the plugin (hot reload), taken between two batches.
    pub swaps: std::sync::mpsc::Receiver<(LoadedPlugin, OnError)>,
    /// Instances of the plugin working on consecutive batches (at least 1).
    pub concurrency: usize,
    /// A new version tried beside the live one (`sluice plugin shadow`).
    pub shadow: Arc<ShadowSlot>,
}

/// What one batch became.
struct Outcome {
    /// One batch per output port.
    ports: Vec<Batch>,
    dropped: usize,
    /// Events that failed on their own, with the error.
    failed: Vec<(Vec<u8>, CallError)>,
}

/// One version of the plugin: the one the stage started with, or a swap.
struct Version {
    generation: u64,
    on_error: OnError,
    dead: DeadLetters,
    /// The plugin as loaded: the first instance to take up this version
    /// runs it.
    loaded: Mutex<Option<LoadedPlugin>>,
    /// The others run replicas of it (same compiled code and config).
    seed: Mutex<LoadedPlugin>,
}

impl Version {
    fn new(generation: u64, plugin: LoadedPlugin, on_error: OnError, dead: &DeadLetters) -> Self {
        Self {
            generation,
            on_error,
            dead: dead.for_plugin(plugin.source(), &plugin.version()),
            seed: Mutex::new(plugin.detached()),
            loaded: Mutex::new(Some(plugin)),
        }
    }

    /// A live instance of this version for one worker.
    fn instance(&self) -> Result<LoadedPlugin, PluginError> {
        if let Some(plugin) = lock(&self.loaded).take() {
            return Ok(plugin);
        }
        lock(&self.seed).replica()
    }
}

/// Where the batches come from: taken one at a time, numbered as taken.
struct Intake {
    input: mpsc::Receiver<SharedBatch>,
    swaps: std::sync::mpsc::Receiver<(LoadedPlugin, OnError)>,
    /// The transform's dead letters, without a plugin version.
    dead: DeadLetters,
    version: Arc<Version>,
    next: u64,
}

/// Whose output leaves next.
struct Turn {
    next: u64,
    /// Downstream closed, or a worker died holding a batch: no more output.
    stopped: bool,
}

/// What the workers of one stage share.
struct Shared {
    name: Arc<str>,
    output: Output,
    metrics: Arc<ComponentMetrics>,
    intake: Mutex<Intake>,
    turn: Mutex<Turn>,
    turned: Condvar,
    shadow: Arc<ShadowSlot>,
    /// Finishes the output when the last worker is gone.
    _finish: FinishOnDrop,
}

/// A batch taken: its output must leave in its turn. Dropped unsent (a
/// panic), it stops the stage rather than leave the later batches waiting.
struct Ticket<'a> {
    shared: &'a Shared,
    seq: u64,
    sent: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut turn = lock(&self.shared.turn);
        if self.sent {
            turn.next += 1;
        } else {
            turn.stopped = true;
        }
        self.shared.turned.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The next batch, its ticket and the version to process it with; a
    /// swap that came in before it takes effect from this batch on.
    fn take(&self) -> Option<(Ticket<'_>, SharedBatch, Arc<Version>)> {
        let mut intake = lock(&self.intake);
        let batch = intake.input.blocking_recv()?;
        while let Ok((plugin, on_error)) = intake.swaps.try_recv() {
            tracing::info!(transform = %self.name, version = %plugin.version(), "plugin swapped");
            let generation = intake.version.generation + 1;
            intake.version = Arc::new(Version::new(generation, plugin, on_error, &intake.dead));
        }
        let seq = intake.next;
        intake.next += 1;
        let ticket = Ticket {
            shared: self,
            seq,
            sent: false,
        };
        Some((ticket, batch, intake.version.clone()))
    }

    /// Send a batch's output once every batch taken before it has sent
    /// its own. False when downstream has closed.
    fn send(&self, mut ticket: Ticket<'_>, ports: Vec<Batch>, batch: &SharedBatch) -> bool {
        {
            let mut turn = lock(&self.turn);
            while turn.next != ticket.seq && !turn.stopped {
                turn = self
                    .turned
                    .wait(turn)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if turn.stopped {
                return false;
            }
        }
        for (port, mut out) in ports.into_iter().enumerate() {
            if !out.is_empty() {
                out.acks = batch.acks.clone();
            }
            if self.output.blocking_send(port, out).is_err() {
                tracing::debug!(transform = %self.name, "downstream closed; stopping");
                return false;
            }
        }
        ticket.sent = true;
        true
    }
}

/// One instance of the plugin at work.
struct Worker {
    name: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    plugin: LoadedPlugin,
    version: Arc<Version>,
}

impl TransformStage {
    /// Run until the input closes: the workers on blocking threads.
    pub async fn run(self) -> anyhow::Result<()> {
        let TransformStage {
            name,
            plugin,
            input,
            output,
            dead,
            metrics,
            on_error,
            swaps,
            concurrency,
            shadow,
        } = self;
        let version = Arc::new(Version::new(0, plugin, on_error, &dead));
        let shared = Arc::new(Shared {
            name: name.clone(),
            _finish: FinishOnDrop(output.clone()),
            output,
            metrics: metrics.clone(),
            intake: Mutex::new(Intake {
                input,
                swaps,
                dead,
                version: version.clone(),
                next: 0,
            }),
            turn: Mutex::new(Turn {
                next: 0,
                stopped: false,
            }),
            turned: Condvar::new(),
            shadow,
        });
        let mut handles = Vec::with_capacity(concurrency.max(1));
        for i in 0..concurrency.max(1) {
            let (shared, version) = (shared.clone(), version.clone());
            handles.push(tokio::task::spawn_blocking(move || {
                // The first worker runs the plugin as loaded; a replica
                // that fails to start leaves the stage one worker short.
                let plugin = match version.instance() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(transform = %shared.name, worker = i, error = %e, "cannot start another instance of the plugin; running with fewer");
                        return;
                    }
                };
                let worker = Worker {
                    name: shared.name.clone(),
                    metrics: shared.metrics.clone(),
                    plugin,
                    version,
                };
                worker.run(&shared);
            }));
        }
        drop(shared);
        for handle in handles {
            handle.await.map_err(|e| anyhow::anyhow!("crashed: {e}"))?;
        }
        tracing::debug!(transform = %name, "input closed; transform done");
        Ok(())
    }
}

impl Worker {
    fn run(mut self, shared: &Shared) {
        let ports = shared.output.ports().max(1);
        while let Some((ticket, batch, version)) = shared.take() {
            if version.generation != self.version.generation {
                self.take_up(version);
            }
            ComponentMetrics::add(&self.metrics.events_in, batch.len());
            ComponentMetrics::add(&self.metrics.bytes_in, batch.bytes());
            let mut outcome = Outcome {
                // Most events leave on the default port: room for all of
                // them there, so it is filled without a reallocation.
                // (Sized when the first verdicts are applied: a plugin that
                // replaces every event hands over its own buffer instead.)
                ports: (0..ports).map(|_| Batch::default()).collect(),
                dropped: 0,
                failed: Vec::new(),
            };
            let shadow = shared.shadow.active().filter(|s| s.wants(batch.len()));
            let mut fates = shadow.as_ref().map(|_| Vec::with_capacity(batch.len()));
            let started = std::time::Instant::now();
            self.isolate(&batch, &mut outcome, fates.as_mut());
            let took = started.elapsed();
            self.metrics.add_plugin_counts(self.plugin.take_counts());
            self.metrics.batch_seconds.observe(took);
            if let (Some(shadow), Some(fates)) = (shadow, fates) {
                shadow.submit(&batch, fates, took.as_nanos() as u64);
            }
            self.settle(&mut outcome, &batch.acks);
            ComponentMetrics::add(&self.metrics.dropped, outcome.dropped);
            if !shared.send(ticket, outcome.ports, &batch) {
                return;
            }
        }
    }

    /// Switch to a newer version of the plugin. Should its instance fail
    /// to start, this worker keeps the old one and tries again at its next
    /// batch.
    fn take_up(&mut self, version: Arc<Version>) {
        match version.instance() {
            Ok(plugin) => {
                self.plugin = plugin;
                self.version = version;
            }
            Err(e) => {
                tracing::warn!(transform = %self.name, error = %e, "cannot start an instance of the new plugin; this batch keeps the old one");
            }
        }
    }
    /// Process a batch; when the plugin fails on it, split it in halves
    /// until each failure is pinned to one event (a bad event costs itself,
    /// not its batch).
    fn isolate(&mut self, batch: &Batch, outcome: &mut Outcome, mut fates: Option<&mut Vec<Fate>>) {
        if batch.is_empty() {
            return;
        }
        let restarting = self.plugin.needs_restart();
        let result = self.plugin.process(&batch.data, &batch.ends);
        if restarting {
            ComponentMetrics::add(&self.metrics.restarts, 1);
        }
        match result {
            Ok(v) => apply(v, batch, outcome, self.plugin.bundled(), fates),
            Err(e) if batch.len() == 1 => {
                let e = CallError {
                    message: crate::plugin::alone(&e.message).to_string(),
                    ..e
                };
                if let Some(f) = fates {
                    f.push(Fate::Failed(format!("{}: {}", e.kind.as_str(), e.message)));
                }
                outcome.failed.push((batch.get(0).to_vec(), e))
            }
            // Each timeout costs a whole time budget: go event by event
            // (one more timeout per looping event) rather than bisect
            // (a timeout per level).
            Err(e) if e.kind == ErrorKind::Timeout => {
                tracing::debug!(transform = %self.name, events = batch.len(), error = %e, "batch timed out; isolating one by one");
                for i in 0..batch.len() {
                    self.isolate(&batch.slice(i..i + 1), outcome, fates.as_deref_mut());
                }
            }
            Err(e) => {
                tracing::debug!(transform = %self.name, events = batch.len(), error = %e, "batch failed; isolating");
                let mid = batch.len() / 2;
                self.isolate(&batch.slice(0..mid), outcome, fates.as_deref_mut());
                self.isolate(&batch.slice(mid..batch.len()), outcome, fates);
            }
        }
    }

    /// Send the failed events where `on_error` says.
    fn settle(&self, outcome: &mut Outcome, acks: &[Arc<crate::base::ack::Ack>]) {
        if outcome.failed.is_empty() {
            return;
        }
        let dead = &self.version.dead;
        match self.version.on_error {
            OnError::DeadLetter => {
                let letters: Vec<DeadLetter<'_>> = outcome
                    .failed
                    .iter()
                    .map(|(event, e)| DeadLetter {
                        event,
                        kind: e.kind,
                        message: e.message.clone(),
                    })
                    .collect();
                if !dead.has_reader() {
                    // Nothing will hold these events: a source waiting to
                    // answer (HTTP, `ack = "delivered"`) must not say 200.
                    acks.iter().for_each(|a| a.lose());
                }
                dead.blocking_send(&self.metrics, &letters, acks);
            }
            OnError::Drop => {
                tracing::warn!(transform = %self.name, count = outcome.failed.len(), error = %outcome.failed[0].1, "failed events dropped");
                ComponentMetrics::add(&self.metrics.failed, outcome.failed.len());
            }
            OnError::Pass => {
                tracing::warn!(transform = %self.name, count = outcome.failed.len(), error = %outcome.failed[0].1, "failed events passed through unchanged");
                ComponentMetrics::add(&self.metrics.failed, outcome.failed.len());
                for (event, _) in &outcome.failed {
                    outcome.ports[0].push(event);
                }
            }
        }
    }
}

/// Apply a plugin's verdicts to its batch. A replacement must still be an
/// event, a JSON object: checked, unless the plugin is `trusted` (a bundled
/// one: its output is written by serde, or spliced into a checked event
/// with escaped strings, and its tests parse what it writes). With
/// `fates`, what became of each event is recorded for a shadow run.
fn apply(
    v: Verdicts,
    batch: &Batch,
    outcome: &mut Outcome,
    trusted: bool,
    fates: Option<&mut Vec<Fate>>,
) {
    if let Some(f) = fates {
        super::shadow::fates(&v, batch.len(), trusted, f);
    }
    if outcome.ports[0].is_empty() && replaces_all(&v, trusted) {
        // Every event replaced, on the default port: the plugin's buffer
        // is the new batch as it is (no copy of each event).
        let out = &mut outcome.ports[0];
        out.data = v.data;
        out.ends = v.ends;
        // (Bytes after the last event, which a plugin may leave, are not
        // an event, and would join the next one pushed.)
        out.data
            .truncate(out.ends.last().map_or(0, |&e| e as usize));
        return;
    }
    if outcome.ports[0].data.capacity() == 0 {
        // Most events leave on the default port: room for all of them.
        let bytes = batch.bytes().max(v.data.len());
        outcome.ports[0] = Batch::with_capacity(batch.len(), bytes);
    }
    for ((action, port, entry), event) in verdicts(&v).zip(batch.iter()) {
        // Verdicts were checked against the plugin's declared outputs.
        let last = outcome.ports.len() - 1;
        let out = &mut outcome.ports[usize::from(port).min(last)];
        match action {
            action::DROP => outcome.dropped += 1,
            action::KEEP => out.push(event),
            action::FAIL => outcome.failed.push((
                event.to_vec(),
                CallError {
                    kind: ErrorKind::PluginError,
                    message: plugin_reason(entry),
                },
            )),
            // A replacement must still be an event: a JSON object.
            _ if trusted => out.push(entry),
            _ => match check_object(entry) {
                Ok(_) => out.push(entry),
                Err(e) => outcome.failed.push((
                    event.to_vec(),
                    CallError {
                        kind: ErrorKind::InvalidOutput,
                        message: format!("the plugin replaced the event with invalid JSON: {e}"),
                    },
                )),
            },
        }
    }
}

/// Whether the verdicts replace every event of the batch with a valid
/// event on the default port (checked here unless the plugin is trusted).
fn replaces_all(v: &Verdicts, trusted: bool) -> bool {
    v.ports.iter().all(|&p| p == 0)
        && v.actions.iter().all(|&a| a == action::REPLACE)
        && (trusted || verdicts(v).all(|(_, _, entry)| check_object(entry).is_ok()))
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever verdicts a plugin returns: refused by the check, or
        /// applied without a panic, every event accounted for once.
        #[test]
        fn prop_packed_verdicts(
            actions in proptest::collection::vec(0u8..4, 0..12),
            ports in proptest::collection::vec(0u16..4, 0..12),
            replacements in proptest::collection::vec("\\PC{0,20}", 0..12),
            events in 0usize..12,
            outputs in 0usize..3,
        ) {
            let batch = Batch::from_events((0..events).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>().iter().map(|s| s.as_bytes()));
            let mut data = Vec::new();
            let mut ends = Vec::new();
            for r in &replacements {
                data.extend_from_slice(r.as_bytes());
                ends.push(data.len() as u32);
            }
            let v = Verdicts { actions, ports, data, ends };
            if crate::plugin::runtime::check_verdicts(&v, batch.bytes(), batch.len(), outputs).is_ok() {
                let mut outcome = Outcome {
                    ports: (0..=outputs).map(|_| Batch::default()).collect(),
                    dropped: 0,
                    failed: Vec::new(),
                };
                apply(v, &batch, &mut outcome, false, None);
                let out: usize = outcome.ports.iter().map(Batch::len).sum();
                prop_assert_eq!(out + outcome.dropped + outcome.failed.len(), events);
                for b in &outcome.ports {
                    for e in b.iter() {
                        prop_assert!(check_object(e).is_ok());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        Outcome {
            ports: vec![Batch::default(), Batch::default()],
            dropped: 0,
            failed: Vec::new(),
        }
    }

    /// A plugin that replaces every event hands its buffer over: the new
    /// batch holds exactly its events (bytes it left after the last one
    /// are not an event), and an invalid one from an untrusted plugin
    /// still fails alone.
    #[test]
    fn a_whole_replacement_becomes_the_batch() {
        let batch = Batch::from_events([&b"{\"a\":1}"[..], b"{\"a\":2}"]);
        let data = b"{\"b\":1}{\"b\":2}left over".to_vec();
        let v = Verdicts {
            actions: vec![action::REPLACE, action::REPLACE],
            ports: Vec::new(),
            data,
            ends: vec![7, 14],
        };
        let mut out = outcome();
        apply(v, &batch, &mut out, false, None);
        let events: Vec<&[u8]> = out.ports[0].iter().collect();
        assert_eq!(events, [&b"{\"b\":1}"[..], b"{\"b\":2}"]);
        assert_eq!(out.ports[0].bytes(), 14);
        out.ports[0].push(b"{\"c\":3}");
        assert_eq!(out.ports[0].get(2), b"{\"c\":3}");

        let v = Verdicts {
            actions: vec![action::REPLACE, action::REPLACE],
            ports: Vec::new(),
            data: b"{\"b\":1}not json".to_vec(),
            ends: vec![7, 15],
        };
        let mut out = outcome();
        apply(v, &batch, &mut out, false, None);
        assert_eq!(out.ports[0].iter().collect::<Vec<_>>(), [&b"{\"b\":1}"[..]]);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].0, b"{\"a\":2}");
    }
}
