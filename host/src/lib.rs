//! sluice: a log pipeline whose transforms are sandboxed WebAssembly
//! components.
//!
//! A pipeline file names sources, a chain of wasm plugins and sinks; the
//! host moves packed batches of JSON events between them over bounded
//! channels, calling each plugin once per batch.
//!
//! The design record, with the path of one event and what a new source or
//! sink implements, is `docs/architecture.md` in the repository.
//!
//! # Layout
//! From the bottom up; a module imports only those listed before it.
//! [`base`] and [`delivery`] are the crate `sluice-core`, [`source`] and
//! [`sink`] the crate `sluice-components`, and [`timeline`] the crate
//! `sluice-timeline` (each re-exported here): none can import what is
//! above it.
//! - [`base`]: events and packed batches, acknowledgements, outputs and the
//!   router, metrics, and the settings every component config shares
//!   (including the `kinds!` registration and `BuildContext`/`BuildError`).
//! - [`delivery`]: dead letters, the one jittered `Backoff`, the fallback
//!   circuit breaker.
//! - [`source`]: `stdin`, `file` (globs, tailing, checkpoints), `generate`,
//!   `http`, `redis` (streams and lists), `nats`, `otlp`, `syslog`,
//!   `journald`, `dead_letters`, each a `SourceKind`; lines to events;
//!   batching.
//! - [`sink`]: `stdout`, `file` (templated paths, rotation, gzip,
//!   retention), `redis`, `nats`, `otlp`, `syslog`, `alert`, `hops`, and on
//!   one HTTP core `http`, `elasticsearch` and `loki`, each a `SinkKind`.
//! - [`config`]: the pipeline file, parsed with spans so every error names
//!   the file, line, column and key.
//! - [`plugin`]: the WIT bindings, the wasmtime runtime and its sandbox,
//!   the one plugin loader, the bundled plugins.
//! - [`topology`]: plan (load plugins, check the graph, build components),
//!   start, rewire, reload, drain and shut down; it knows components only
//!   through their interface.
//! - [`timeline`]: `sluice timeline`, many services' logs merged into one report.
//! - [`admin`]: the admin HTTP port (`/health`, `/metrics`, `POST /reload`).
//! - [`testing`]: `sluice test`, the `[[tests]]` of a pipeline file.
//! - [`cli`]: the `sluice` command line.

/// `sluice --version`: the version, the git commit it was built from and
/// the wasmtime it runs plugins on.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SLUICE_GIT_COMMIT"),
    ", wasmtime ",
    env!("SLUICE_WASMTIME_VERSION"),
    ")"
);

/// mimalloc for every binary that links sluice (the `sluice` command, its
/// tests and benches): glibc's malloc gave each batch buffer back to the
/// kernel and took it again, page faults and page clearing on every batch.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod admin;
pub use sluice_core::base;
pub mod cli;
pub mod config;
pub use sluice_core::delivery;
pub mod plugin;
pub use sluice_components::sink;
pub use sluice_components::source;
pub mod testing;
pub use sluice_timeline as timeline;
pub mod topology;
