//! Delivery: what happens between "an event reached a sink" and "its
//! source may forget it".
//!
//! - Acknowledgements ([`crate::base::ack::Ack`], in the base layer because
//!   batches carry them): a source is answered (`XACK`, a checkpoint, an
//!   HTTP response) only once every sink its events were routed to has made
//!   them durable, or they were dropped on purpose.
//! - [`dead_letters`]: events that cannot go on, with the reason, on the
//!   reserved output `_dead_letters`.
//! - [`backoff`]: the one jittered, `Retry-After`-aware [`Backoff`] that
//!   every retrying component uses.
//! - [`breaker`]: the fallback circuit breaker: once a target is known down,
//!   batches go straight to the `fallback` while a probe watches for its
//!   return.
//! - [`buffer`]: a sink's disk buffer, between its input channel and the
//!   sink: sources are acknowledged once their events are on disk, and the
//!   sink reads them back.

pub mod backoff;
pub mod breaker;
pub mod buffer;
pub mod dead_letters;

pub use backoff::Backoff;
pub use breaker::Breaker;
pub use dead_letters::{DeadLetter, DeadLetters, DeadOutput, ErrorKind, DEAD_LETTERS};
