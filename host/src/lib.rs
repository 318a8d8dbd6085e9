//! sluice: a log pipeline whose transforms are sandboxed WebAssembly
//! components.
//!
//! A pipeline file names sources, a chain of wasm plugins and sinks; the
//! host moves packed batches of JSON events between them over bounded
//! channels, calling each plugin once per batch.
//!
//! # Layout
//! - [`config`]: the pipeline file, parsed with spans so every error names
//!   the file, line, column and key.
//! - [`topology`]: the graph: plan (load plugins, check inputs and cycles),
//!   start, drain and shut down.
//! - [`source`]: `stdin`, `file` (globs, tailing, checkpoints), `generate`,
//!   `http`, `redis`; lines to events; batching.
//! - [`plugin`]: the WIT bindings, the wasmtime runtime and its sandbox,
//!   the bundled plugins.
//! - [`sink`]: `stdout`, `file` (templated paths, rotation, gzip,
//!   retention), `redis`.
//! - [`delivery`]: dead letters.
//! - [`event`]: packed batches and event helpers.
//! - [`metrics`]: per-component counters and the run summary.
//! - [`timeline`]: `sluice timeline`, many services' logs merged into one report.
//! - [`admin`]: the admin HTTP port (`/health`, `/metrics`, `POST /reload`).
//! - [`testing`]: `sluice test`, the `[[tests]]` of a pipeline file.
//! - [`cli`]: the `sluice` command line.

pub mod admin;
pub mod base;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod plugin;
pub mod sink;
pub mod source;
pub mod testing;
pub mod timeline;
pub mod topology;
