//! sluice's sources and sinks: every kind a pipeline file can name, each a
//! `SourceKind` or `SinkKind` registered with `kinds!`, as a crate of its
//! own on `sluice-core`. The `sluice` crate re-exports both modules under
//! the same names (`sluice::source`, `sluice::sink`); the config and the
//! topology know the kinds through these enums and traits only.
//!
//! - [`source`]: `stdin`, `file` (globs, tailing, checkpoints), `generate`,
//!   `http`, `redis` (streams and lists), `nats`, `otlp`, `syslog`,
//!   `journald`, `dead_letters`, `declared_metrics`; lines to events;
//!   batching.
//! - [`sink`]: `stdout`, `file` (templated paths, rotation, gzip,
//!   retention), `redis`, `nats`, `otlp`, `syslog`, `alert`, `hops`,
//!   `metric`, and on one HTTP core `http`, `elasticsearch` and `loki`.
//!
//! Its modules log under the targets they had in the `sluice` crate
//! (`sluice::{module}`, not this crate's name), so log lines and
//! `RUST_LOG=sluice::...` filters did not change when it was split off: each
//! module that logs names its `LOG_TARGET` (`tests/all/layers.rs` checks).

// The layers below, under the names the kinds' files use for them.
use sluice_core::{base, delivery};

pub mod sink;
pub mod source;
