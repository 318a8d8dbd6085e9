//! A transform stage: a plugin over the batches of its input channel, on a
//! blocking thread (wasm calls are synchronous and CPU-bound).

use std::sync::Arc;

use tokio::sync::mpsc;

use sluice_plugin::action;

use crate::base::event::{check_object, Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::{FinishOnDrop, Output};
use crate::config::OnError;
use crate::delivery::{DeadLetter, DeadLetters, ErrorKind};
use crate::plugin::bindings::Verdicts;
use crate::plugin::{CallError, LoadedPlugin};

/// A running transform's parts.
pub struct TransformStage {
    pub name: Arc<str>,
    pub plugin: LoadedPlugin,
    pub input: mpsc::Receiver<SharedBatch>,
    pub output: Output,
    pub dead: DeadLetters,
    pub metrics: Arc<ComponentMetrics>,
    pub on_error: OnError,
    /// New versions of the plugin (hot reload), taken between two batches.
    pub swaps: std::sync::mpsc::Receiver<(LoadedPlugin, OnError)>,
}

/// What one batch became.
struct Outcome {
    /// One batch per output port.
    ports: Vec<Batch>,
    dropped: usize,
    /// Events that failed on their own, with the error.
    failed: Vec<(Vec<u8>, CallError)>,
}

impl TransformStage {
    /// Run until the input closes. Blocking: call from `spawn_blocking`.
    pub fn run(mut self) {
        let _finish = FinishOnDrop(self.output.clone());
        let ports = self.output.ports().max(1);
        while let Some(batch) = self.input.blocking_recv() {
            // A new version takes over between two batches: the batch in
            // hand was finished by the old one.
            while let Ok((plugin, on_error)) = self.swaps.try_recv() {
                self.on_error = on_error;
                self.dead = self.dead.for_plugin(plugin.source(), &plugin.version());
                tracing::info!(transform = %self.name, version = %plugin.version(), "plugin swapped");
                self.plugin = plugin;
            }
            ComponentMetrics::add(&self.metrics.events_in, batch.len());
            ComponentMetrics::add(&self.metrics.bytes_in, batch.bytes());
            let mut outcome = Outcome {
                ports: (0..ports).map(|_| Batch::default()).collect(),
                dropped: 0,
                failed: Vec::new(),
            };
            let started = std::time::Instant::now();
            self.isolate(&batch, &mut outcome);
            self.metrics.batch_seconds.observe(started.elapsed());
            self.settle(&mut outcome, &batch.acks);
            ComponentMetrics::add(&self.metrics.dropped, outcome.dropped);
            for (port, mut out) in outcome.ports.into_iter().enumerate() {
                if !out.is_empty() {
                    out.acks = batch.acks.clone();
                }
                if self.output.blocking_send(port, out).is_err() {
                    tracing::debug!(transform = %self.name, "downstream closed; stopping");
                    return;
                }
            }
        }
        tracing::debug!(transform = %self.name, "input closed; transform done");
    }

    /// Process a batch; when the plugin fails on it, split it in halves
    /// until each failure is pinned to one event (a bad event costs itself,
    /// not its batch).
    fn isolate(&mut self, batch: &Batch, outcome: &mut Outcome) {
        if batch.is_empty() {
            return;
        }
        let restarting = self.plugin.needs_restart();
        let result = self.plugin.process(&batch.data, &batch.ends);
        if restarting {
            ComponentMetrics::add(&self.metrics.restarts, 1);
        }
        match result {
            Ok(v) => apply(&v, batch, outcome, self.plugin.bundled()),
            Err(e) if batch.len() == 1 => outcome.failed.push((batch.get(0).to_vec(), e)),
            // Each timeout costs a whole time budget: go event by event
            // (one more timeout per looping event) rather than bisect
            // (a timeout per level).
            Err(e) if e.kind == ErrorKind::Timeout => {
                tracing::debug!(transform = %self.name, events = batch.len(), error = %e, "batch timed out; isolating one by one");
                for i in 0..batch.len() {
                    self.isolate(&batch.slice(i..i + 1), outcome);
                }
            }
            Err(e) => {
                tracing::debug!(transform = %self.name, events = batch.len(), error = %e, "batch failed; isolating");
                let mid = batch.len() / 2;
                self.isolate(&batch.slice(0..mid), outcome);
                self.isolate(&batch.slice(mid..batch.len()), outcome);
            }
        }
    }

    /// Send the failed events where `on_error` says.
    fn settle(&self, outcome: &mut Outcome, acks: &[Arc<crate::base::ack::Ack>]) {
        if outcome.failed.is_empty() {
            return;
        }
        match self.on_error {
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
                if !self.dead.has_reader() {
                    // Nothing will hold these events: a source waiting to
                    // answer (HTTP, `ack = "delivered"`) must not say 200.
                    acks.iter().for_each(|a| a.lose());
                }
                self.dead.blocking_send(&self.metrics, &letters, acks);
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
/// with escaped strings, and its tests parse what it writes).
fn apply(v: &Verdicts, batch: &Batch, outcome: &mut Outcome, trusted: bool) {
    let mut replaced = 0usize;
    let mut start = 0usize;
    for (i, (&action, event)) in v.actions.iter().zip(batch.iter()).enumerate() {
        let port = v.ports.get(i).map_or(0, |&p| usize::from(p));
        // Verdicts were checked against the plugin's declared outputs.
        let last = outcome.ports.len() - 1;
        let out = &mut outcome.ports[port.min(last)];
        match action {
            action::DROP => outcome.dropped += 1,
            action::KEEP => out.push(event),
            _ => {
                let end = v.ends[replaced] as usize;
                let new = &v.data[start..end];
                start = end;
                replaced += 1;
                // A replacement must still be an event: a JSON object.
                if trusted {
                    out.push(new);
                    continue;
                }
                match check_object(new) {
                    Ok(_) => out.push(new),
                    Err(e) => outcome.failed.push((
                        event.to_vec(),
                        CallError {
                            kind: ErrorKind::InvalidOutput,
                            message: format!(
                                "the plugin replaced the event with invalid JSON: {e}"
                            ),
                        },
                    )),
                }
            }
        }
    }
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
                apply(&v, &batch, &mut outcome, false);
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
