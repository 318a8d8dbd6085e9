//! `Idempotency-Key`: a client that retries a request (after a `504`, a
//! timeout, a lost connection) sends the same key again, and the events are
//! not queued twice.
//!
//! The first request with a key claims it. A request that finds its key
//! claimed does not queue its events: it waits (up to `ack_timeout`) for the
//! first one's outcome and answers as if it had been that request, marked
//! `"duplicate": true`. If the first request failed (refused, or its events
//! could not be delivered), the key is released and the retry goes through
//! as a new request. Keys are remembered for `idempotency_window`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Most keys remembered at once; the oldest are forgotten past it. A bound
/// on memory that could become config.
const MAX_KEYS: usize = 100_000;

/// What became of the request that claimed a key: `None` while in flight,
/// then whether its events were delivered (or queued, with `ack =
/// "accepted"`), and how many were accepted.
pub(super) type Outcome = Option<(bool, usize)>;

struct Claimed {
    at: Instant,
    outcome: watch::Receiver<Outcome>,
}

/// The keys seen within the window.
#[derive(Default)]
pub(super) struct Keys {
    window: Duration,
    seen: Mutex<HashMap<String, Claimed>>,
}

/// What a request with a key does.
pub(super) enum Claim {
    /// The key is new: process the request, and report through the ticket.
    New(Ticket),
    /// Another request has the key: wait for its outcome.
    Taken(watch::Receiver<Outcome>),
}

/// The right to process the request of a key. Dropped without an outcome
/// (the request was refused), it releases the key.
pub(super) struct Ticket {
    key: String,
    keys: Arc<Keys>,
    tx: Arc<watch::Sender<Outcome>>,
    reported: bool,
}

impl Keys {
    pub(super) fn new(window: Duration) -> Arc<Self> {
        Arc::new(Self {
            window,
            seen: Mutex::default(),
        })
    }

    /// Claim `key`, or learn who has it.
    pub(super) fn claim(self: &Arc<Self>, key: &str) -> Claim {
        let mut seen = self.seen.lock().expect("idempotency lock poisoned");
        let now = Instant::now();
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, c| now.duration_since(c.at) < self.window);
            if seen.len() >= MAX_KEYS {
                let oldest = seen
                    .iter()
                    .min_by_key(|(_, c)| c.at)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    seen.remove(&k);
                }
            }
        }
        if let Some(c) = seen.get(key) {
            if now.duration_since(c.at) < self.window {
                return Claim::Taken(c.outcome.clone());
            }
        }
        let (tx, rx) = watch::channel(None);
        seen.insert(
            key.to_string(),
            Claimed {
                at: now,
                outcome: rx,
            },
        );
        Claim::New(Ticket {
            key: key.to_string(),
            keys: self.clone(),
            tx: Arc::new(tx),
            reported: false,
        })
    }

    fn release(&self, key: &str) {
        self.seen
            .lock()
            .expect("idempotency lock poisoned")
            .remove(key);
    }
}

impl Ticket {
    /// The events of the request are on their way (`accepted` of them):
    /// `report(true)` once they are delivered (or queued), `report(false)`
    /// if they could not be, which releases the key.
    pub(super) fn reporter(mut self, accepted: usize) -> impl FnOnce(bool) + Send + 'static {
        self.reported = true;
        let (tx, keys, key) = (self.tx.clone(), self.keys.clone(), self.key.clone());
        move |ok| {
            if !ok {
                keys.release(&key);
            }
            tx.send_replace(Some((ok, accepted)));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.reported {
            self.keys.release(&self.key);
            self.tx.send_replace(Some((false, 0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_processed_once_and_released_on_failure() {
        let keys = Keys::new(Duration::from_secs(60));
        let Claim::New(t) = keys.claim("k") else {
            panic!("a new key")
        };
        let Claim::Taken(mut rx) = keys.claim("k") else {
            panic!("taken while in flight")
        };
        assert_eq!(*rx.borrow(), None);
        t.reporter(3)(true);
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), Some((true, 3)));
        assert!(matches!(keys.claim("k"), Claim::Taken(_)), "remembered");

        let Claim::New(t) = keys.claim("j") else {
            panic!("a new key")
        };
        drop(t); // refused before its events were sent
        assert!(matches!(keys.claim("j"), Claim::New(_)), "released");
        let Claim::New(t) = keys.claim("i") else {
            panic!("a new key")
        };
        t.reporter(1)(false);
        assert!(
            matches!(keys.claim("i"), Claim::New(_)),
            "undelivered: released"
        );
    }

    #[tokio::test]
    async fn keys_expire_after_the_window() {
        let keys = Keys::new(Duration::from_millis(30));
        let Claim::New(t) = keys.claim("k") else {
            panic!()
        };
        t.reporter(1)(true);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(matches!(keys.claim("k"), Claim::New(_)));
    }
}
