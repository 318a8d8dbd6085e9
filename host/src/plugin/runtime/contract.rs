//! The host's side of the plugin contract: the state a store holds (WASI,
//! captured output, limits) and the imports a plugin calls (`log`,
//! `count`), and what a component may import besides.

use super::*;

/// The state of one instance's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limits: Limiter,
    /// The transform's name, to tag what the plugin logs.
    pub(super) plugin: Arc<str>,
    /// What the plugin prints on stdout and stderr, for `tracing` and for
    /// the errors of calls that trap.
    pub(super) outputs: Outputs,
    /// What the current call added to the plugin's counters (`count`):
    /// kept once the call succeeds, forgotten if it fails (its batch is
    /// run again in parts).
    pub(super) counting: Counts,
    /// A refused counter name was logged already.
    pub(super) count_refused: bool,
}

/// A plugin's counters: (name, total), at most [`MAX_COUNTERS`].
pub type Counts = Vec<(String, u64)>;

/// Most counter names one plugin instance may use.
pub const MAX_COUNTERS: usize = 32;

/// A counter name: 1 to 64 of `a-z`, `0-9` and `_`.
pub(super) fn counter_name_ok(name: &str) -> bool {
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

/// What the host links for plugins: WASI without a network, host files,
/// environment or HTTP (sockets are linked but every address is refused;
/// there are no preopened folders), and the `sluice:plugin` world.
pub(super) const LINKED: [&str; 7] = [
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:cli/",
    "wasi:filesystem/",
    "wasi:sockets/",
    "sluice:plugin/",
];

/// The imports of a component that the host does not link.
pub(super) fn refused_imports(component: &Component, engine: &Engine) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| {
            name != "log" && name != "count" && !LINKED.iter().any(|p| name.starts_with(p))
        })
        .collect()
}

pub(super) fn explain_refused(refused: &[String]) -> String {
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
