//! The bottom layer: what every component is built from, importing nothing
//! above it (no config file, no topology, no component kind).
//!
//! - [`event`]: events and packed batches, JSON helpers, the event clock.
//! - [`scan`]: the check that an event is one JSON object, catching its time
//!   candidates on the way.
//! - [`ack`]: the acknowledgement a source gets once its events are delivered.
//! - [`output`]: a component's outputs, the router that wires them, and the
//!   shutdown signal sources watch.
//! - [`metrics`]: per-component counters, the tap, the run summary.
//! - [`otlp`]: OpenTelemetry log records and events, both ways.
//! - [`nats`]: one NATS server or cluster: URLs, logins, TLS.
//! - [`redis`]: one Redis server or a Redis Cluster, and partitioned stream names.
//! - [`secrets`]: the secrets a pipeline was given, kept out of logs and answers.
//! - [`crypt`]: age encryption at rest: recipients to write, identities to read.
//! - [`written`]: the files this process's file sinks write, which no file
//!   source reads.
//! - [`settings`]: the value types component configs share (durations,
//!   sizes, batching, the `type` tag) and what `build` is given and returns.

pub mod ack;
pub mod crypt;
pub mod declared;
pub mod event;
pub mod hops;
pub mod metrics;
pub mod nats;
pub mod otlp;
pub mod output;
pub mod redis;
pub mod scan;
pub mod secrets;
pub mod settings;
pub mod timestamp;
pub mod tls;
pub mod written;
