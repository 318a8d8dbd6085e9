//! Plugins: wasm components that transform batches.
//!
//! - `bindings`: the generated host side of the WIT contract.
//! - `runtime`: the engine, the on-disk compilation cache, sandboxed
//!   instances and the failure model (trap, timeout, memory).
//! - `cache`: the compiled components on disk: one compile per change
//!   across processes, bounded by size, least recently used pruned first.
//! - `bundled`: the plugins shipped inside the `sluice` binary.
//! - `loader`: the plugin of each transform of a pipeline, found, compiled
//!   (or taken from the cache) and `init`-ed: the only way plugins are loaded.

pub mod bindings;
pub mod bundled;
pub mod cache;
pub mod capture;
pub mod loader;
pub mod runtime;
pub mod sections;

pub use runtime::{
    alone, plugin_reason, verdicts, CallError, LoadedPlugin, PluginError, PluginLimits, Runtime,
};
