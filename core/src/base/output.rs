//! A component's outputs: per port, the channels of every consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::base::event::{Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;

/// A producer's port: (component name, port number; 0 is the default).
pub type Port = (String, usize);

/// Who reads which port: the wiring of the running graph. Producers look
/// their consumers up per batch, so a reload can rewire the graph (add or
/// remove sinks and transforms) between two batches.
#[derive(Debug, Default)]
pub struct Router {
    state: std::sync::RwLock<RouterState>,
}

#[derive(Debug, Default)]
struct RouterState {
    edges: BTreeMap<Port, Vec<mpsc::Sender<SharedBatch>>>,
    /// Producers that have ended: never wired again, so that the channels
    /// of their consumers can close.
    finished: BTreeSet<String>,
}

impl Router {
    /// The consumers of a port, right now.
    fn consumers(&self, port: &Port) -> Vec<mpsc::Sender<SharedBatch>> {
        let state = self.state.read().expect("router lock poisoned");
        state.edges.get(port).cloned().unwrap_or_default()
    }

    /// Whether anyone reads any port of `producer`.
    pub fn is_read(&self, producer: &str) -> bool {
        let state = self.state.read().expect("router lock poisoned");
        state.edges.keys().any(|(p, _)| p == producer)
    }

    /// Replace the wiring. Ports of finished producers are left out.
    pub fn rewire(&self, edges: BTreeMap<Port, Vec<mpsc::Sender<SharedBatch>>>) {
        let mut state = self.state.write().expect("router lock poisoned");
        let finished = state.finished.clone();
        state.edges = edges
            .into_iter()
            .filter(|((p, _), _)| !finished.contains(p))
            .collect();
    }

    /// The current wiring (weakly: it does not keep channels open).
    pub fn snapshot(&self) -> BTreeMap<Port, Vec<mpsc::WeakSender<SharedBatch>>> {
        let state = self.state.read().expect("router lock poisoned");
        state
            .edges
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(mpsc::Sender::downgrade).collect()))
            .collect()
    }

    /// A producer has ended: drop its edges so its consumers can finish.
    pub fn finish(&self, producer: &str) {
        let mut state = self.state.write().expect("router lock poisoned");
        state.edges.retain(|(p, _), _| p != producer);
        state.finished.insert(producer.to_string());
    }

    /// Whether a producer has ended.
    pub fn is_finished(&self, producer: &str) -> bool {
        let state = self.state.read().expect("router lock poisoned");
        state.finished.contains(producer)
    }

    /// A producer of this name starts (again, after a reload).
    pub fn revive(&self, producer: &str) {
        let mut state = self.state.write().expect("router lock poisoned");
        state.finished.remove(producer);
    }
}

/// The output side of one component: sends a batch to whoever reads a port.
#[derive(Debug, Clone)]
pub struct Output {
    name: Arc<str>,
    ports: usize,
    router: Arc<Router>,
    metrics: Arc<ComponentMetrics>,
}

/// Every consumer of an output has gone away (the pipeline is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("downstream components have stopped")]
pub struct Closed;

impl Output {
    pub fn new(
        name: &str,
        ports: usize,
        router: Arc<Router>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Self {
            name: name.into(),
            ports,
            router,
            metrics,
        }
    }

    /// Whether any component reads any port.
    pub fn has_consumers(&self) -> bool {
        self.router.is_read(&self.name)
    }

    /// Whether every consumer of the default port has room for a batch now.
    pub fn has_room(&self) -> bool {
        self.router
            .consumers(&(self.name.to_string(), 0))
            .iter()
            .all(|tx| tx.capacity() > 0)
    }

    /// Number of ports.
    pub fn ports(&self) -> usize {
        self.ports
    }

    fn account(&self, port: usize, batch: &Batch) -> Option<Vec<mpsc::Sender<SharedBatch>>> {
        if self.metrics.tap.active() {
            self.metrics.tap.offer(&Arc::new(batch.copy_events()));
        }
        self.metrics.count_fields(batch);
        let consumers = self.router.consumers(&(self.name.to_string(), port));
        if consumers.is_empty() {
            ComponentMetrics::add(&self.metrics.discarded, batch.len());
            return None;
        }
        ComponentMetrics::add(&self.metrics.events_out, batch.len());
        ComponentMetrics::add(&self.metrics.bytes_out, batch.bytes());
        Some(consumers)
    }

    /// Send a batch to every consumer of `port`, waiting for room.
    pub async fn send(&self, port: usize, batch: Batch) -> Result<(), Closed> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(consumers) = self.account(port, &batch) else {
            return Ok(());
        };
        let batch = Arc::new(batch);
        let mut sent = false;
        for tx in &consumers {
            sent |= tx.send(batch.clone()).await.is_ok();
        }
        sent.then_some(()).ok_or(Closed)
    }

    /// The same as [`Output::send`], from a blocking thread.
    pub fn blocking_send(&self, port: usize, batch: Batch) -> Result<(), Closed> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(consumers) = self.account(port, &batch) else {
            return Ok(());
        };
        let batch = Arc::new(batch);
        let mut sent = false;
        for tx in &consumers {
            sent |= tx.blocking_send(batch.clone()).is_ok();
        }
        sent.then_some(()).ok_or(Closed)
    }

    /// This producer has ended (see [`Router::finish`]).
    pub fn finish(&self) {
        self.router.finish(&self.name);
    }
}

/// Ends a producer when dropped, however its task ends.
pub struct FinishOnDrop(pub Output);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Tells sources to stop. Transforms and sinks stop when their inputs close,
/// so stopping the sources drains the whole pipeline in order.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The sending half of [`Shutdown`].
#[derive(Debug, Clone)]
pub struct ShutdownTrigger {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx: tx.into() }, Shutdown { rx })
    }

    /// Whether shutdown was requested (or the trigger is gone: the
    /// pipeline was dropped, and nobody could stop us any more).
    pub fn is_set(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Wait until shutdown is requested.
    pub async fn wait(&mut self) {
        // An error means the trigger is gone: nobody can stop us any more,
        // which only happens when the runtime itself is ending.
        let _ = self.rx.wait_for(|v| *v).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}
