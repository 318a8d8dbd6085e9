//! The plugin runtime: one engine, one linker, a compiled component and an
//! `InstancePre` per plugin, and a sandboxed store per instance.
//!
//! Sandbox: WASI is linked with no capability granted (no preopened
//! directories, no environment, no sockets, no inherited stdio); each store
//! has a memory limit; each call has an epoch deadline. A trap poisons a
//! store, so after any trap the instance is dropped and the next call gets
//! a fresh one from the `InstancePre` (cheap: no compilation, no linking).

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

/// How often the epoch advances: the granularity of time budgets.
const TICK: Duration = Duration::from_millis(5);
/// Default wasm stack limit of an instance.
pub const DEFAULT_STACK: usize = 1 << 20;

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

/// Per-plugin sandbox limits.
#[derive(Debug, Clone, Copy)]
pub struct PluginLimits {
    /// Linear memory of one instance, in bytes.
    pub memory: usize,
    /// Time budget of one call.
    pub time_budget: Duration,
    /// Wasm stack of one instance, in bytes.
    pub stack: usize,
    /// Core instances, tables and memories one component may make: a Rust
    /// plugin needs a few, a Python (componentize-py) or JavaScript
    /// (componentize-js) one a few dozen.
    pub instances: u32,
    pub tables: u32,
    pub memories: u32,
}

pub use crate::base::settings::{DEFAULT_INSTANCES, DEFAULT_MEMORIES, DEFAULT_TABLES};

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: 64 << 20,
            time_budget: Duration::from_millis(100),
            stack: DEFAULT_STACK,
            instances: DEFAULT_INSTANCES,
            tables: DEFAULT_TABLES,
            memories: DEFAULT_MEMORIES,
        }
    }
}

/// The state of one instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    /// The transform's name, to tag what the plugin logs.
    plugin: Arc<str>,
    /// What the plugin prints on stdout and stderr, for `tracing` and for
    /// the errors of calls that trap.
    outputs: Outputs,
    /// What the current call added to the plugin's counters (`count`):
    /// kept once the call succeeds, forgotten if it fails (its batch is
    /// run again in parts).
    counting: Counts,
    /// A refused counter name was logged already.
    count_refused: bool,
}

/// A plugin's counters: (name, total), at most [`MAX_COUNTERS`].
pub type Counts = Vec<(String, u64)>;

/// Most counter names one plugin instance may use.
pub const MAX_COUNTERS: usize = 32;

/// A counter name: 1 to 64 of `a-z`, `0-9` and `_`.
fn counter_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Add `delta` to `name` in `counts`; false when the name is refused or
/// there is no room for another.
pub fn add_count(counts: &mut Counts, name: &str, delta: u64) -> bool {
    if let Some((_, n)) = counts.iter_mut().find(|(k, _)| k == name) {
        *n = n.saturating_add(delta);
        return true;
    }
    if !counter_name_ok(name) || counts.len() >= MAX_COUNTERS {
        return false;
    }
    counts.push((name.to_string(), delta));
    true
}

/// The store's limits, remembering that a memory growth was refused: a
/// trap that follows is the plugin running out of memory, whatever the
/// guest made of the refusal (an abort, an `unreachable`).
struct Limiter {
    limits: StoreLimits,
    memory_refused: bool,
    /// The largest linear memory granted so far, in bytes.
    memory_peak: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        if matches!(allowed, Ok(true)) {
            self.memory_peak = self.memory_peak.max(desired);
        } else {
            self.memory_refused = true;
        }
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::PluginImports for HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn count(&mut self, name: String, delta: u64) {
        if !add_count(&mut self.counting, &name, delta) && !self.count_refused {
            self.count_refused = true;
            tracing::warn!(plugin = &*self.plugin, name = %name.chars().take(80).collect::<String>(), "counter ignored: names are 1 to 64 of a-z, 0-9 and _, at most {MAX_COUNTERS} of them");
        }
    }
}

impl bindings::sluice::plugin::types::Host for HostState {}

/// Advances every engine's epoch every [`TICK`] while a plugin call is
/// running, until dropped. With no call running it sleeps, so an idle
/// pipeline does not wake 200 times a second.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    engines: Arc<Mutex<Vec<Engine>>>,
    calls: Arc<Calls>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.calls.thread.unpark();
    }
}

/// Plugin calls running now, and the ticker thread to wake for them.
pub(crate) struct Calls {
    running: std::sync::atomic::AtomicUsize,
    thread: std::thread::Thread,
}

/// One plugin call running: the ticker ticks until it is dropped.
struct Call<'a>(&'a Calls);

impl Calls {
    fn enter(&self) -> Call<'_> {
        if self.running.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Call(self)
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
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

/// What the host links for plugins: WASI without a network, host files,
/// environment or HTTP (sockets are linked but every address is refused;
/// there are no preopened folders), and the `sluice:plugin` world.
const LINKED: [&str; 7] = [
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "sluice:plugin/",
];

/// The imports of a component that the host does not link.
fn refused_imports(component: &Component, engine: &Engine) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| {
            name != "log" && name != "count" && !LINKED.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

fn explain_refused(refused: &[String]) -> String {
    let mut message = format!(
        "this component imports {}, which sluice does not give plugins (a plugin gets no network, HTTP or host access)",
        refused.join(", ")
    );
    if refused.iter().any(|r| r.starts_with("wasi:http/")) {
        message.push_str(
            "; componentize-js adds wasi:http unless told not to: build with \
             `componentize-js -d http -d fetch-event` (`sluice plugin build` does)",
        );
    }
    message
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

/// Classify an error that came out of wasm, by the trap code and by
/// whether the store refused memory on the way.
fn classify(err: &wasmtime::Error, memory_refused: bool) -> ErrorKind {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => ErrorKind::Timeout,
        Some(Trap::StackOverflow) => ErrorKind::StackOverflow,
        _ if memory_refused => ErrorKind::Memory,
        _ => ErrorKind::Trap,
    }
}

struct Instance {
    store: Store<HostState>,
    plugin: Plugin,
}

/// A plugin ready to process batches: its compiled form, its config, and
/// a live instance (re-made after any trap).
pub struct LoadedPlugin {
    name: Arc<str>,
    /// Where it came from: a path, or `bundled:NAME`.
    source: String,
    /// Keeps the runtime, and so the epoch ticker that enforces time
    /// budgets, alive as long as the plugin.
    _runtime: Arc<Runtime>,
    compiled: Compiled,
    /// The JSON config given to every new instance's `init`.
    config: String,
    limits: PluginLimits,
    info: Info,
    /// `None` after a trap, until the next call makes a fresh one.
    instance: Option<Instance>,
    /// What successful calls added to the plugin's counters since they
    /// were last taken ([`LoadedPlugin::take_counts`]).
    counts: Counts,
}

impl LoadedPlugin {
    /// Whether it is one of sluice's own bundled plugins, whose
    /// replacements are valid JSON objects by construction (and tested so).
    pub fn bundled(&self) -> bool {
        self.source.starts_with("bundled:")
    }

    /// The time budget of one call.
    pub fn time_budget(&self) -> std::time::Duration {
        self.limits.time_budget
    }

    /// The linear memory one instance may have, in bytes.
    pub fn memory_limit(&self) -> usize {
        self.limits.memory
    }

    /// What the plugin said about itself at `init`.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn hash(&self) -> &str {
        &self.compiled.hash
    }

    /// Where the plugin came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The plugin's version and content hash, for dead letters.
    pub fn version(&self) -> String {
        format!(
            "{} (sha256:{})",
            self.info.version,
            &self.compiled.hash[..16]
        )
    }

    /// The same plugin, compiled code, config and limits, without a live
    /// instance: what [`LoadedPlugin::replica`] copies.
    pub fn detached(&self) -> LoadedPlugin {
        LoadedPlugin {
            name: self.name.clone(),
            source: self.source.clone(),
            _runtime: self._runtime.clone(),
            compiled: self.compiled.clone(),
            config: self.config.clone(),
            limits: self.limits,
            info: self.info.clone(),
            instance: None,
            counts: Counts::new(),
        }
    }

    /// Another instance of the same compiled plugin with the same config,
    /// `init`-ed afresh: what a transform with `concurrency` above 1 runs
    /// on its other threads. It shares nothing with this one but the
    /// compiled code.
    pub fn replica(&self) -> Result<LoadedPlugin, PluginError> {
        let mut plugin = self.detached();
        plugin.info = plugin.fresh_instance()?;
        Ok(plugin)
    }

    fn fresh_instance(&mut self) -> Result<Info, PluginError> {
        let outputs = Outputs::default();
        let state = HostState {
            // No capability but output: no files, env, args, sockets or
            // stdin; stdout and stderr go to the host's logs, bounded.
            wasi: WasiCtx::builder()
                .stdout(outputs.stdout.clone())
                .stderr(outputs.stderr.clone())
                .build(),
            table: ResourceTable::new(),
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory)
                    .instances(self.limits.instances as usize)
                    .tables(self.limits.tables as usize)
                    .memories(self.limits.memories as usize)
                    .trap_on_grow_failure(true)
                    .build(),
                memory_refused: false,
                memory_peak: 0,
            },
            plugin: self.name.clone(),
            outputs,
            counting: Counts::new(),
            count_refused: false,
        };
        let mut store = Store::new(&self.compiled.engine, state);
        store.limiter(|s| &mut s.limits);
        let calls = self.compiled.calls.clone();
        let _call = calls.enter();
        store.set_epoch_deadline(self.deadline_ticks());
        let name = self.name.clone();
        let limits = self.limits;
        let trap = |e: wasmtime::Error, store: &Store<HostState>| {
            let stderr = store.data().outputs.take_failed(&name);
            let kind = classify(&e, store.data().limits.memory_refused);
            PluginError::InitTrap {
                plugin: name.to_string(),
                kind,
                message: describe(kind, &e, &limits, &stderr),
            }
        };
        let plugin = match self.compiled.pre.instantiate(&mut store) {
            Ok(p) => p,
            Err(e) => return Err(trap(e, &store)),
        };
        let info = match plugin.call_init(&mut store, &self.config) {
            Ok(r) => r,
            Err(e) => return Err(trap(e, &store)),
        }
        .map_err(|message| PluginError::Init {
            plugin: self.name.to_string(),
            message,
        })?;
        store.data().outputs.flush(&self.name);
        self.instance = Some(Instance { store, plugin });
        Ok(info)
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.time_budget.as_micros() / TICK.as_micros()) as u64 + 1
    }

    /// What the plugin counted (`count`) in the calls that succeeded since
    /// the last time: the caller adds it to the transform's metrics.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// The largest linear memory the current instance has been given, in
    /// bytes (0 when there is none): what the plugin's state costs.
    pub fn memory_peak(&self) -> usize {
        self.instance
            .as_ref()
            .map_or(0, |i| i.store.data().limits.memory_peak)
    }

    /// Whether the current instance was dropped after a trap.
    pub fn needs_restart(&self) -> bool {
        self.instance.is_none()
    }

    /// Process one packed batch. After a trap, timeout or memory
    /// exhaustion the instance is dropped; the next call makes a new one.
    pub fn process(&mut self, data: &[u8], ends: &[u32]) -> Result<Verdicts, CallError> {
        if self.instance.is_none() {
            self.fresh_instance().map_err(|e| CallError {
                kind: match &e {
                    PluginError::InitTrap { kind, .. } => *kind,
                    _ => ErrorKind::PluginError,
                },
                message: format!("restarting the plugin failed: {e}"),
            })?;
        }
        let ticks = self.deadline_ticks();
        let inst = self.instance.as_mut().expect("instance was just made");
        let calls = self.compiled.calls.clone();
        let call = calls.enter();
        inst.store.set_epoch_deadline(ticks);
        inst.store.data_mut().counting.clear();
        let result = inst.plugin.call_process(&mut inst.store, data, ends);
        drop(call);
        let counted = std::mem::take(&mut inst.store.data_mut().counting);
        let outputs = &inst.store.data().outputs;
        match result {
            Ok(Ok(v)) => {
                for (name, n) in counted {
                    add_count(&mut self.counts, &name, n);
                }
                outputs.flush(&self.name);
                check_verdicts(&v, data.len(), ends.len(), self.info.outputs.len()).map(|()| v)
            }
            Ok(Err(message)) => {
                outputs.take_failed(&self.name);
                Err(CallError {
                    kind: ErrorKind::PluginError,
                    message,
                })
            }
            Err(e) => {
                let stderr = outputs.take_failed(&self.name);
                let kind = classify(&e, inst.store.data().limits.memory_refused);
                self.instance = None;
                Err(CallError {
                    kind,
                    message: describe(kind, &e, &self.limits, &stderr),
                })
            }
        }
    }
}

/// The message of a call over one event, without the place the plugin's
/// helper gave it in that call (`event 0: `): the event is known, and its
/// number in a one-event call says nothing about the input.
pub fn alone(message: &str) -> &str {
    message.strip_prefix("event 0: ").unwrap_or(message)
}

/// A trap as a user reads it: the reason and the setting that bounds it
/// first (`timed out after time_budget = 100ms`), then what the plugin
/// wrote to stderr (a panic's message); no wasm backtrace (its frames are
/// `<unknown>` in a stripped plugin).
fn describe(
    kind: ErrorKind,
    e: &wasmtime::Error,
    limits: &PluginLimits,
    stderr: &[String],
) -> String {
    let said: Vec<&str> = stderr
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect();
    let reason = match kind {
        ErrorKind::Timeout => format!(
            "timed out after time_budget = {}",
            humantime::format_duration(limits.time_budget)
        ),
        ErrorKind::Memory => format!("needed more than memory_mib = {}", limits.memory >> 20),
        ErrorKind::StackOverflow => {
            format!("overflowed its stack of stack_kib = {}", limits.stack >> 10)
        }
        _ => {
            // A Rust panic: `thread '...' panicked at FILE:LINE:COL:` then
            // the message.
            if let Some(i) = said.iter().position(|l| l.contains(" panicked at ")) {
                let at = said[i]
                    .split(" panicked at ")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches(':');
                let message = said[i + 1..].join(" | ");
                return format!("panicked: {message} (at {at})");
            }
            match e.downcast_ref::<Trap>() {
                Some(t) => format!("trapped: {t}"),
                None => e.root_cause().to_string(),
            }
        }
    };
    if said.is_empty() {
        reason
    } else {
        format!("{reason}; the plugin's stderr: {}", said.join(" | "))
    }
}

/// A plugin's verdicts must describe exactly the batch it was given.
pub(crate) fn check_verdicts(
    v: &Verdicts,
    _data_len: usize,
    events: usize,
    outputs: usize,
) -> Result<(), CallError> {
    let bad = |message: String| {
        Err(CallError {
            kind: ErrorKind::InvalidOutput,
            message,
        })
    };
    if v.actions.len() != events {
        return bad(format!("{} actions for {events} events", v.actions.len()));
    }
    if !v.ports.is_empty() && v.ports.len() != events {
        return bad(format!("{} ports for {events} events", v.ports.len()));
    }
    if let Some(p) = v.ports.iter().find(|&&p| usize::from(p) > outputs) {
        return bad(format!(
            "port {p} but the plugin declared {outputs} outputs"
        ));
    }
    let mut replaced = 0;
    for &a in &v.actions {
        match a {
            action::DROP | action::KEEP => {}
            action::REPLACE | action::FAIL => replaced += 1,
            other => return bad(format!("unknown action {other}")),
        }
    }
    if replaced != v.ends.len() {
        return bad(format!(
            "{replaced} replaced or failed events but {} replacement offsets",
            v.ends.len()
        ));
    }
    let mut prev = 0u32;
    for &e in &v.ends {
        if e < prev || e as usize > v.data.len() {
            return bad(format!(
                "replacement offset {e} out of order or past {} bytes",
                v.data.len()
            ));
        }
        prev = e;
    }
    Ok(())
}

/// Each event's verdict, from verdicts [`check_verdicts`] accepted: its
/// action, its port and its entry of `data` (the new event of a
/// replacement, the reason of a dead letter; empty for the others).
pub fn verdicts(v: &Verdicts) -> impl Iterator<Item = (u8, u16, &[u8])> + '_ {
    let (mut start, mut next) = (0usize, 0usize);
    v.actions.iter().enumerate().map(move |(i, &a)| {
        let port = v.ports.get(i).copied().unwrap_or(0);
        let entry: &[u8] = if a == action::REPLACE || a == action::FAIL {
            let end = v.ends.get(next).map_or(start, |&e| e as usize);
            next += 1;
            let entry = v.data.get(start..end).unwrap_or_default();
            start = end;
            entry
        } else {
            &[]
        };
        (a, port, entry)
    })
}

/// Longest reason a plugin may give for one dead-lettered event.
const MAX_REASON: usize = 4096;

/// A plugin's reason for dead-lettering an event, as text: invalid UTF-8
/// replaced, cut at [`MAX_REASON`] bytes (on a character boundary).
pub fn plugin_reason(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    if text.is_empty() {
        text.push_str("the plugin gave no reason");
    }
    text
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
