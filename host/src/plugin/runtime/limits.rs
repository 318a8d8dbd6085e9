//! What a plugin may use and how its failures are told: memory, tables
//! and instances (`PluginLimits`, enforced by a `ResourceLimiter`), time
//! (the epoch ticker that interrupts a call past its budget), and the
//! messages that name the limit a failure hit.

use super::*;

/// How often the epoch advances: the granularity of time budgets.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// Default wasm stack limit of an instance.
pub const DEFAULT_STACK: usize = 1 << 20;

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

/// The store's limits, remembering that a memory growth was refused: a
/// trap that follows is the plugin running out of memory, whatever the
/// guest made of the refusal (an abort, an `unreachable`).
pub(super) struct Limiter {
    pub(super) limits: StoreLimits,
    pub(super) memory_refused: bool,
    /// The largest linear memory granted so far, in bytes.
    pub(super) memory_peak: usize,
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

/// Advances every engine's epoch every [`TICK`] while a plugin call is
/// running, until dropped. With no call running it sleeps, so an idle
/// pipeline does not wake 200 times a second.
pub(super) struct EpochTicker {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) engines: Arc<Mutex<Vec<Engine>>>,
    pub(super) calls: Arc<Calls>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.calls.thread.unpark();
    }
}

/// Plugin calls running now, and the ticker thread to wake for them.
pub(crate) struct Calls {
    pub(super) running: std::sync::atomic::AtomicUsize,
    pub(super) thread: std::thread::Thread,
}

/// One plugin call running: the ticker ticks until it is dropped.
pub(super) struct Call<'a>(pub(super) &'a Calls);

impl Calls {
    pub(super) fn enter(&self) -> Call<'_> {
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

/// Classify an error that came out of wasm, by the trap code and by
/// whether the store refused memory on the way.
pub(super) fn classify(err: &wasmtime::Error, memory_refused: bool) -> ErrorKind {
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => ErrorKind::Timeout,
        Some(Trap::StackOverflow) => ErrorKind::StackOverflow,
        _ if memory_refused => ErrorKind::Memory,
        _ => ErrorKind::Trap,
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
pub(super) fn describe(
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
