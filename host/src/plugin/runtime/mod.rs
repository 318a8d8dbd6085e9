//! The plugin runtime: one engine, one linker, a compiled component and an
//! `InstancePre` per plugin, and a sandboxed store per instance.
//!
//! Sandbox: WASI is linked with no capability granted (no preopened
//! directories, no environment, no sockets, no inherited stdio); each store
//! has a memory limit; each call has an epoch deadline. A trap poisons a
//! store, so after any trap the instance is dropped and the next call gets
//! a fresh one from the `InstancePre` (cheap: no compilation, no linking).
//!
//! Here: engines, compilation and its cache. Beside it: `instance` (a
//! loaded plugin, its instances and calls), `contract` (the host's imports
//! and state), `limits` (what a plugin may use, the epoch ticker, failure
//! messages), `verdicts`.

mod contract;
mod instance;
mod limits;
mod verdicts;

pub use self::instance::LoadedPlugin;

pub use self::contract::{add_count, Counts, HostState, MAX_COUNTERS};
pub(crate) use self::limits::Calls;
pub use self::limits::{
    alone, PluginLimits, DEFAULT_INSTANCES, DEFAULT_MEMORIES, DEFAULT_STACK, DEFAULT_TABLES,
};
pub(crate) use self::verdicts::check_verdicts;
pub use self::verdicts::{plugin_reason, verdicts};
use self::{contract::*, limits::*};

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, Info, LogLevel, Plugin, PluginPre, Verdicts};
use sluice_common::action;

use super::capture::Outputs;
use crate::delivery::ErrorKind;

/// Errors loading a plugin, naming it.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin}: not a WebAssembly component: {message}")]
    NotAComponent { plugin: String, message: String },
    #[error("plugin {plugin}: not a component of the sluice:plugin world: {message}")]
    WrongWorld { plugin: String, message: String },
    #[error("plugin {plugin}: init rejected the config: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin {plugin}: init failed ({kind}): {message}", kind = kind.as_str())]
    InitTrap {
        plugin: String,
        kind: ErrorKind,
        message: String,
    },
}

/// A failed `process` call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct CallError {
    pub kind: ErrorKind,
    pub message: String,
}

/// An engine and its linker. wasmtime sets the wasm stack limit per
/// engine, so there is one per stack size in use (almost always one).
struct EngineSet {
    engine: Engine,
    linker: Linker<HostState>,
}

/// The engines, linkers and the compilation cache, shared by all plugins.
pub struct Runtime {
    engines: Mutex<BTreeMap<usize, Arc<EngineSet>>>,
    /// Epoch interruption (time budgets) on; off only to measure its cost.
    epochs: bool,
    cache_dir: Option<PathBuf>,
    ticker: EpochTicker,
}

/// A compiled plugin, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pre: PluginPre<HostState>,
    engine: Engine,
    /// The calls the epoch ticker counts.
    calls: Arc<Calls>,
    /// Hex SHA-256 of the component's bytes: its version for dead letters.
    pub hash: String,
}

impl Runtime {
    /// Build the engine. `cache_dir` holds compiled components by content
    /// hash (`None`: compile every time).
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::with_epochs(cache_dir, true)
    }

    /// A runtime without epoch interruption: time budgets are not enforced
    /// and a looping plugin hangs its stage. Only for measuring what the
    /// interruption checks cost (`just bench`).
    pub fn without_time_budgets(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::with_epochs(cache_dir, false)
    }

    fn with_epochs(cache_dir: Option<PathBuf>, epochs: bool) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engines: Arc<Mutex<Vec<Engine>>> = Arc::default();
        let (flag, ticking) = (stop.clone(), engines.clone());
        let (calls_tx, calls_rx) = std::sync::mpsc::channel::<Arc<Calls>>();
        let thread = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || {
                let Ok(calls) = calls_rx.recv() else { return };
                while !flag.load(Ordering::Relaxed) {
                    // Nothing to interrupt: sleep until a call begins (an
                    // unpark before the park makes it return at once).
                    if calls.running.load(Ordering::SeqCst) == 0 {
                        std::thread::park_timeout(Duration::from_secs(1));
                        continue;
                    }
                    std::thread::sleep(TICK);
                    for e in ticking.lock().expect("engine list lock").iter() {
                        e.increment_epoch();
                    }
                }
            })?;
        let calls = Arc::new(Calls {
            running: std::sync::atomic::AtomicUsize::new(0),
            thread: thread.thread().clone(),
        });
        let _ = calls_tx.send(calls.clone());
        if let Some(dir) = &cache_dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the plugin cache; compiling without it");
            }
        }
        let runtime = Self {
            engines: Mutex::new(BTreeMap::new()),
            epochs,
            cache_dir,
            ticker: EpochTicker {
                stop,
                engines,
                calls,
            },
        };
        runtime.engine_set(DEFAULT_STACK)?;
        Ok(runtime)
    }

    /// The engine for a stack size, made on first use.
    fn engine_set(&self, stack: usize) -> anyhow::Result<Arc<EngineSet>> {
        let mut engines = self.engines.lock().expect("engine lock");
        if let Some(set) = engines.get(&stack) {
            return Ok(set.clone());
        }
        let mut config = Config::new();
        // Measured: a component call costs ~230 ns without concurrency
        // support and ~1 µs with it, and we never call concurrently.
        config.concurrency_support(false);
        config.epoch_interruption(self.epochs);
        config.max_wasm_stack(stack);
        // `SLUICE_PERF_MAP=1`: name the plugins' compiled functions in
        // /tmp/perf-PID.map, so `perf record` / `perf report` can show them.
        if std::env::var_os("SLUICE_PERF_MAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        self.ticker
            .engines
            .lock()
            .expect("engine list lock")
            .push(engine.clone());
        let set = Arc::new(EngineSet { engine, linker });
        engines.insert(stack, set.clone());
        Ok(set)
    }

    /// The default cache folder: `$SLUICE_CACHE_DIR`, else `cache/` in the
    /// service's state directory (`$STATE_DIRECTORY`, under systemd), else
    /// `$XDG_CACHE_HOME/sluice`, else `~/.cache/sluice`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(d) = std::env::var_os("SLUICE_CACHE_DIR") {
            return Some(PathBuf::from(d));
        }
        if let Some(state) = crate::base::settings::state_dir() {
            return Some(state.join("cache"));
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(d).join("sluice"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("sluice"))
    }

    fn cache_path(&self, engine: &Engine, hash: &str) -> Option<PathBuf> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let compat = h.finish();
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{compat:016x}.cwasm", &hash[..32])))
    }

    /// Compile (or load from the cache) a component and check that it is
    /// one of our world. Slow on a cache miss: call it off the hot path.
    pub fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Compiled, PluginError> {
        self.compile_with_stack(plugin, bytes, DEFAULT_STACK)
    }

    /// [`Runtime::compile`] for instances with a wasm stack of `stack` bytes.
    pub fn compile_with_stack(
        &self,
        plugin: &str,
        bytes: &[u8],
        stack: usize,
    ) -> Result<Compiled, PluginError> {
        let set = self
            .engine_set(stack)
            .map_err(|e| PluginError::NotAComponent {
                plugin: plugin.to_string(),
                message: format!("cannot configure an engine with a {stack}-byte stack: {e:#}"),
            })?;
        let hash = hex(&Sha256::digest(bytes));
        let cached = self.cache_path(&set.engine, &hash);
        let load = || {
            cached
                .as_deref()
                .and_then(|p| self.load_cached(&set.engine, p))
        };
        // Missed: compile under the entry's lock, looking again once it is
        // ours (another process may have compiled the same bytes meanwhile).
        let mut lock = None;
        let hit = load().or_else(|| {
            lock = cached.as_deref().and_then(super::cache::lock);
            lock.as_ref().and_then(|_| load())
        });
        let component = match hit {
            Some(c) => c,
            None => {
                if bytes.len() > 1 << 20 {
                    // A Python or JavaScript component takes seconds.
                    tracing::info!(
                        plugin,
                        size_mb = format!("{:.1}", bytes.len() as f64 / 1e6),
                        "compiling plugin for this machine (first load of these bytes; cached afterwards)"
                    );
                }
                let started = std::time::Instant::now();
                let component =
                    Component::new(&set.engine, bytes).map_err(|e| PluginError::NotAComponent {
                        plugin: plugin.to_string(),
                        message: format!("{e:#}"),
                    })?;
                tracing::info!(
                    plugin,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled plugin"
                );
                if let Some(path) = &cached {
                    store_cached(path, &component);
                    if let Some(dir) = path.parent() {
                        let p = super::cache::prune(dir, super::cache::max_size(), Some(path));
                        if p.removed > 0 {
                            tracing::info!(removed = p.removed, freed_mb = p.freed >> 20, "pruned the plugin cache (least recently used first; SLUICE_CACHE_MAX_SIZE)");
                        }
                    }
                }
                component
            }
        };
        drop(lock);
        let pre = set
            .linker
            .instantiate_pre(&component)
            .and_then(PluginPre::new)
            .map_err(|e| PluginError::WrongWorld {
                plugin: plugin.to_string(),
                message: match refused_imports(&component, &set.engine) {
                    refused if refused.is_empty() => format!("{e:#}"),
                    refused => explain_refused(&refused),
                },
            })?;
        Ok(Compiled {
            pre,
            engine: set.engine.clone(),
            calls: self.ticker.calls.clone(),
            hash,
        })
    }

    fn load_cached(&self, engine: &Engine, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one we wrote with `Component::serialize` under
        // a name that includes the engine's compatibility hash; wasmtime
        // also checks the header and refuses an incompatible artifact.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(c) => {
                super::cache::touch(path);
                Some(c)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable cached plugin");
                None
            }
        }
    }

    /// Instantiate a compiled plugin and `init` it with its config (JSON).
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        source: &str,
        compiled: Compiled,
        config_json: String,
        limits: PluginLimits,
    ) -> Result<LoadedPlugin, PluginError> {
        let mut plugin = LoadedPlugin {
            name: name.into(),
            source: source.to_string(),
            _runtime: self.clone(),
            compiled,
            config: config_json,
            limits,
            info: Info {
                outputs: Vec::new(),
                masks: false,
                version: String::new(),
            },
            instance: None,
            counts: Counts::new(),
        };
        plugin.info = plugin.fresh_instance()?;
        Ok(plugin)
    }

    /// Compile and load a plugin file in one step.
    pub fn load_file(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        config_json: String,
        limits: PluginLimits,
    ) -> Result<LoadedPlugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: name.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
        let compiled = self.compile(name, &bytes)?;
        self.load(
            name,
            &path.display().to_string(),
            compiled,
            config_json,
            limits,
        )
    }
}

fn store_cached(path: &Path, component: &Component) {
    let result = component
        .serialize()
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            // Write aside and rename, so a concurrent reader never sees half a file.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled plugin");
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_counters_are_named_and_bounded() {
        let mut c = Counts::new();
        assert!(add_count(&mut c, "evicted_keys", 2));
        assert!(add_count(&mut c, "evicted_keys", u64::MAX));
        assert_eq!(c, [("evicted_keys".to_string(), u64::MAX)]);
        for bad in ["", "Upper", "with space", "dash-ed", &"x".repeat(65)] {
            assert!(!add_count(&mut c, bad, 1), "{bad}");
        }
        for i in 1..MAX_COUNTERS {
            assert!(add_count(&mut c, &format!("n{i}"), 1));
        }
        assert!(!add_count(&mut c, "one_more", 1));
        assert!(add_count(&mut c, "n1", 1), "a known name still adds");
        assert_eq!(c.len(), MAX_COUNTERS);
    }

    #[test]
    fn failures_lead_with_the_reason_and_the_setting() {
        let limits = PluginLimits::default();
        let trap = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let stderr: Vec<String> = [
            "thread '<unnamed>' panicked at src/lib.rs:58:32:",
            "chaos: asked to panic",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            describe(ErrorKind::Trap, &trap, &limits, &stderr),
            "panicked: chaos: asked to panic (at src/lib.rs:58:32)"
        );
        assert_eq!(
            describe(ErrorKind::Trap, &trap, &limits, &[]),
            format!("trapped: {}", Trap::UnreachableCodeReached)
        );
        let interrupt = wasmtime::Error::new(Trap::Interrupt);
        assert_eq!(
            describe(ErrorKind::Timeout, &interrupt, &limits, &[]),
            "timed out after time_budget = 100ms"
        );
        let oom = ["memory allocation of 68222976 bytes failed".to_string()];
        assert_eq!(
            describe(ErrorKind::Memory, &trap, &limits, &oom),
            "needed more than memory_mib = 64; the plugin's stderr: memory allocation of 68222976 bytes failed"
        );
    }
}
