//! The fallback circuit breaker, for every sink that has a `fallback`.
//!
//! Once a sink has retried a batch for its whole `retry_for` and given it to
//! the fallback, its target is known down: making every later batch wait
//! `retry_for` again would turn one outage into a stall of the whole
//! pipeline. So the breaker opens: batches go straight to the fallback,
//! while a probe in the background (a `PING`, a `HEAD`) tries the target
//! with the shared [`Backoff`] until it answers, and then the breaker closes
//! and batches go to the target again.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::delivery::breaker";

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Backoff;

/// First and longest wait between two probes of a target known down.
const PROBE_FIRST: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(2);

/// Open (target down, batches to the fallback) or closed (batches to the
/// target), with the background probe that closes it.
#[derive(Debug, Default)]
pub struct Breaker {
    /// Set by `trip`, cleared by the probe once the target answers.
    open: Arc<AtomicBool>,
    /// The running probe, stopped when the breaker is dropped.
    probe: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Breaker {
    /// Whether the target is known down: send batches to the fallback now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The target is known down: open, and probe it in the background
    /// (`probe` answers whether the target works) until it answers.
    pub fn trip<F, Fut>(&self, sink: &str, mut probe: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send,
    {
        if self.open.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(target: LOG_TARGET, %sink, "target down: batches go straight to the fallback while it is probed");
        let open = self.open.clone();
        let sink = sink.to_string();
        let mut slot = self.probe.lock().expect("breaker lock poisoned");
        if let Some(old) = slot.take() {
            old.abort();
        }
        *slot = Some(tokio::spawn(async move {
            let mut backoff = Backoff::new(PROBE_FIRST, PROBE_MAX);
            loop {
                backoff.wait().await;
                if probe().await {
                    open.store(false, Ordering::Release);
                    tracing::info!(target: LOG_TARGET, %sink, probes = backoff.attempts(), "target answers again: batches go to it");
                    return;
                }
            }
        }));
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        if let Some(p) = self.probe.get_mut().ok().and_then(Option::take) {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn opens_until_the_probe_answers() {
        let b = Breaker::default();
        assert!(!b.is_open());
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        b.trip("s", move || {
            let t = t.clone();
            async move { t.fetch_add(1, Ordering::SeqCst) >= 2 }
        });
        assert!(b.is_open());
        for _ in 0..100 {
            if !b.is_open() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!b.is_open(), "closed once the probe answered");
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }
}
