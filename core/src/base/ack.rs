//! Acknowledgements: how a source learns that its events are delivered.
//!
//! A source that must answer someone (an HTTP client, a Redis `XACK`, a file
//! checkpoint) puts an [`Ack`] on the batches it sends; every stage passes
//! the tokens of its input on with its output; a sink drops a batch only
//! once it is durable. The last holder's drop calls the source back.

use std::sync::Arc;

/// What an [`Ack`] calls, with whether the events were delivered.
type AckCallback = Box<dyn FnOnce(bool) + Send>;

/// An acknowledgement owed to a source (an HTTP response, a queue `ACK`).
///
/// Batches carry it by `Arc`; a transform's output batches carry the
/// tokens of its input batch; sinks drop batches only once written. So the
/// last `Arc` goes away exactly when every event it covers has been made
/// durable by every sink it was routed to, or dropped on purpose, and
/// dropping it calls the source back. A sink that gives up on a batch calls
/// [`Ack::fail`] first.
pub struct Ack {
    done: std::sync::Mutex<Option<AckCallback>>,
    failed: std::sync::atomic::AtomicBool,
    /// Some events it covers went nowhere on purpose of the pipeline, not
    /// of the user: dead letters that no sink reads.
    lost: std::sync::atomic::AtomicBool,
    /// Whether lost events count as not delivered (see [`Ack::strict`]).
    strict: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl Ack {
    /// A token that calls `done(delivered)` when the last holder drops it.
    pub fn new(done: impl FnOnce(bool) + Send + 'static) -> Arc<Ack> {
        Self::make(done, false)
    }

    /// The same, for a source that answers someone waiting (an HTTP client
    /// with `ack = "delivered"`): events lost as dead letters nobody reads
    /// count as not delivered, so the client hears of the failure. Sources
    /// that re-read what is not delivered (a queue, a file) use
    /// [`Ack::new`], or a failing plugin would hold them back for ever.
    pub fn strict(done: impl FnOnce(bool) + Send + 'static) -> Arc<Ack> {
        Self::make(done, true)
    }

    fn make(done: impl FnOnce(bool) + Send + 'static, strict: bool) -> Arc<Ack> {
        Arc::new(Ack {
            done: std::sync::Mutex::new(Some(Box::new(done))),
            failed: std::sync::atomic::AtomicBool::new(false),
            lost: std::sync::atomic::AtomicBool::new(false),
            strict,
        })
    }

    /// Mark the events as not delivered.
    pub fn fail(&self) {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Some of the events went to dead letters that no sink reads.
    pub fn lose(&self) {
        self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let done = self.done.get_mut().ok().and_then(Option::take);
        if let Some(done) = done {
            let failed = self.failed.load(std::sync::atomic::Ordering::Relaxed);
            let lost = self.strict && self.lost.load(std::sync::atomic::Ordering::Relaxed);
            done(!failed && !lost);
        }
    }
}
