//! sluice's bottom layers, as a crate of their own so that the rule "the
//! base imports nothing above it" is a compile error, not prose: this crate
//! depends on no sluice crate but `sluice-common` and `sluice-buffer`. The
//! `sluice` crate re-exports both modules under the same names
//! (`sluice::base`, `sluice::delivery`).
//!
//! - [`base`]: events and packed batches, the JSON check, event times,
//!   acknowledgements, outputs and the router, metrics, the protocols'
//!   shared parts (OTLP, Redis, NATS, TLS, age), and the settings every
//!   component config shares (including the [`kinds!`] registration and
//!   `BuildContext`/`BuildError`).
//! - [`delivery`]: dead letters, the one jittered `Backoff`, the fallback
//!   circuit breaker, the disk buffer's glue.
//!
//! Its modules log under the targets they had in the `sluice` crate
//! (`sluice::{module}`, not this crate's name), so log lines and
//! `RUST_LOG=sluice::...` filters did not change when it was split off: each
//! module that logs names its `LOG_TARGET` (`tests/all/layers.rs` checks).

pub mod base;
pub mod delivery;
