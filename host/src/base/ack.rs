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
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

impl Ack {
    /// A token that calls `done(delivered)` when the last holder drops it.
    pub fn new(done: impl FnOnce(bool) + Send + 'static) -> Arc<Ack> {
        Arc::new(Ack {
            done: std::sync::Mutex::new(Some(Box::new(done))),
            failed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Mark the events as not delivered.
    pub fn fail(&self) {
        self.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let done = self.done.get_mut().ok().and_then(Option::take);
        if let Some(done) = done {
            done(!self.failed.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
}
