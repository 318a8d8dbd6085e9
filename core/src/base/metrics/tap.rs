//! The tap: a component's events copied to whoever listens (`sluice
//! tap`, the live page), at no cost when nobody does.

use super::*;

/// Live copies of a component's output for `sluice tap`. Sending costs one
/// atomic load when nobody taps; a slow tap loses copies (the broadcast
/// channel overwrites the oldest), never pipeline events.
#[derive(Debug)]
pub struct Tap {
    subscribers: AtomicUsize,
    tx: tokio::sync::broadcast::Sender<crate::base::event::SharedBatch>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            subscribers: AtomicUsize::new(0),
            tx: tokio::sync::broadcast::channel(TAP_BATCHES).0,
        }
    }
}

/// Batches a tap may fall behind before it loses copies.
pub(super) const TAP_BATCHES: usize = 64;

/// A subscription to a [`Tap`]; unsubscribes when dropped.
pub struct TapGuard<'a> {
    tap: &'a Tap,
    pub rx: tokio::sync::broadcast::Receiver<crate::base::event::SharedBatch>,
}

impl Drop for TapGuard<'_> {
    fn drop(&mut self) {
        self.tap.subscribers.fetch_sub(1, Relaxed);
    }
}

impl Tap {
    /// Whether anyone is tapping.
    pub fn active(&self) -> bool {
        self.subscribers.load(Relaxed) > 0
    }

    /// Offer a batch to the tappers.
    pub fn offer(&self, batch: &crate::base::event::SharedBatch) {
        if self.active() {
            let _ = self.tx.send(batch.clone());
        }
    }

    pub fn subscribe(&self) -> TapGuard<'_> {
        self.subscribers.fetch_add(1, Relaxed);
        TapGuard {
            tap: self,
            rx: self.tx.subscribe(),
        }
    }
}

/// Switch all metrics counting on or off (for benchmarks).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Relaxed);
}
