//! A component's outputs: per port, the channels of every consumer.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::event::{Batch, SharedBatch};
use crate::metrics::ComponentMetrics;

/// The senders of one component, by output port (0 is the default output).
#[derive(Debug, Clone)]
pub struct Output {
    /// `ports[p]` holds a sender per consumer of port `p`; empty when no
    /// component reads that port.
    ports: Vec<Vec<mpsc::Sender<SharedBatch>>>,
    metrics: Arc<ComponentMetrics>,
}

/// Every consumer of an output has gone away (the pipeline is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("downstream components have stopped")]
pub struct Closed;

impl Output {
    pub fn new(ports: Vec<Vec<mpsc::Sender<SharedBatch>>>, metrics: Arc<ComponentMetrics>) -> Self {
        Self { ports, metrics }
    }

    /// Whether any component reads any port.
    pub fn has_consumers(&self) -> bool {
        self.ports.iter().any(|p| !p.is_empty())
    }

    /// Number of ports.
    pub fn ports(&self) -> usize {
        self.ports.len()
    }

    fn account(&self, port: usize, batch: &Batch) -> Option<&[mpsc::Sender<SharedBatch>]> {
        let consumers = self.ports.get(port).map(Vec::as_slice).unwrap_or(&[]);
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
        for tx in consumers {
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
        for tx in consumers {
            sent |= tx.blocking_send(batch.clone()).is_ok();
        }
        sent.then_some(()).ok_or(Closed)
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

    /// Whether shutdown was requested.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
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
