//! Hot reload: what a changed plugin file or pipeline file does (the
//! reload that the watcher of `watch`, SIGHUP and `POST /reload`
//! trigger), as a difference between the running pipeline and the new
//! one. A new version that fails to compile or to `init` is refused and
//! the running one keeps going.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::graph;
use super::running::{Inner, Running, State};
use super::{check_components, outputs_of};
use crate::base::metrics::Registry;
use crate::config::{PipelineConfig, TransformConfig};
use crate::delivery::DeadOutput;
use crate::plugin::loader::{load_plugin, load_plugins};
use crate::plugin::LoadedPlugin;

use super::watch::plugin_files;
pub use super::watch::watch;

/// Reload the pipeline file, then every plugin file whose bytes changed.
/// Each failure is logged and counted; what failed keeps its old version.
pub async fn reload_all(
    handle: &ReloadHandle,
    pipeline: &Path,
    metrics: &Registry,
    force: bool,
) -> anyhow::Result<()> {
    let config = PipelineConfig::load(pipeline)?;
    let result = handle.reload_with(config.clone(), force).await;
    count(
        metrics,
        &result,
        "pipeline",
        &pipeline.display().to_string(),
    );
    result?;
    let mut first_error = None;
    for name in plugin_files(&config).keys() {
        let result = handle.reload_plugin(name).await;
        match &result {
            Ok(false) => {}
            Ok(true) => count(metrics, &Ok(()), "plugin", name),
            Err(e) => {
                count(metrics, &Err(anyhow::anyhow!("{e:#}")), "plugin", name);
                first_error.get_or_insert(anyhow::anyhow!("transform {name}: {e:#}"));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(super) fn count(metrics: &Registry, result: &anyhow::Result<()>, what: &str, name: &str) {
    match result {
        Ok(()) => {
            metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(what, name, "reloaded");
        }
        Err(e) => {
            metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(what, name, error = %format!("{e:#}"), "reload refused; the running version stays");
        }
    }
}

/// The plugin of a shadow run.
pub enum ShadowPlugin {
    /// A bundled plugin, by name.
    Bundled(String),
    /// A component's bytes, and what to call it (its file name).
    Bytes(String, Vec<u8>),
}

/// Whether the live plugin of `name` masks.
async fn tconfig_masks(inner: &Arc<Inner>, name: &str) -> bool {
    let state = inner.state.lock().await;
    state.transforms.get(name).is_some_and(|h| h.masks)
}

/// A handle to change a running pipeline: reload it, swap plugins.
#[derive(Clone)]
pub struct ReloadHandle {
    inner: Weak<Inner>,
}

impl ReloadHandle {
    pub(super) fn new(inner: &Arc<Inner>) -> Self {
        Self {
            inner: Arc::downgrade(inner),
        }
    }

    /// Apply a new configuration. On error the running pipeline is left
    /// untouched.
    pub async fn reload(&self, config: PipelineConfig) -> anyhow::Result<()> {
        self.reload_with(config, false).await
    }

    /// The same; with `force`, a sink whose disk buffer still holds events
    /// may be removed (its events stay in its folder).
    pub async fn reload_with(&self, config: PipelineConfig, force: bool) -> anyhow::Result<()> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the pipeline has stopped"))?;
        Running::reload(&inner, config, force).await
    }

    /// Load a transform's plugin file again and swap it in if its bytes
    /// changed. `Ok(false)`: unchanged.
    pub async fn reload_plugin(&self, transform: &str) -> anyhow::Result<bool> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the pipeline has stopped"))?;
        Running::reload_plugin(&inner, transform).await
    }

    /// Start a shadow run of `plugin` (a bundled name, or a component's
    /// bytes) beside transform `spec.transform`'s live plugin. `config`
    /// (JSON) replaces the transform's config table for the shadow.
    pub async fn start_shadow(
        &self,
        plugin: ShadowPlugin,
        config: Option<String>,
        mut spec: super::shadow::ShadowSpec,
    ) -> anyhow::Result<serde_json::Value> {
        let inner = self.inner()?;
        let name = spec.transform.clone();
        let (tconfig, pipeline, outputs) = {
            let state = inner.state.lock().await;
            let h = state
                .transforms
                .get(&name)
                .ok_or_else(|| anyhow::anyhow!("no transform `{name}`"))?;
            anyhow::ensure!(
                h.shadow.active().is_none(),
                "a shadow already runs beside `{name}`: `sluice plugin shadow stop` it first"
            );
            (h.config.clone(), state.config.clone(), h.outputs.clone())
        };
        let json = match config {
            Some(c) => {
                let v: serde_json::Value = serde_json::from_str(&c)
                    .map_err(|e| anyhow::anyhow!("--config is not JSON: {e}"))?;
                anyhow::ensure!(v.is_object(), "--config must be a JSON object");
                c
            }
            None => match &tconfig.config {
                Some(v) => serde_json::to_string(v.get_ref())?,
                None => "{}".into(),
            },
        };
        let (source, bytes) = match plugin {
            ShadowPlugin::Bundled(b) => (
                format!("bundled:{b}"),
                crate::plugin::bundled::get(&b)
                    .ok_or_else(|| anyhow::anyhow!("unknown bundled plugin `{b}`"))?
                    .to_vec(),
            ),
            ShadowPlugin::Bytes(label, b) => (label, b),
        };
        let limits = crate::plugin::PluginLimits {
            memory: (spec.memory_mib.unwrap_or(tconfig.memory_mib) as usize) << 20,
            time_budget: spec.time_budget.unwrap_or(tconfig.time_budget),
            stack: (tconfig.stack_kib as usize) << 10,
            instances: tconfig.instances,
            tables: tconfig.tables,
            memories: tconfig.memories,
        };
        let runtime = inner.runtime.clone();
        let shadow_name = format!("{name} (shadow)");
        let plugin = tokio::task::spawn_blocking(move || {
            let compiled = runtime.compile_with_stack(&shadow_name, &bytes, limits.stack)?;
            runtime.load(&shadow_name, &source, compiled, json, limits)
        })
        .await??;
        anyhow::ensure!(
            plugin.info().outputs == outputs,
            "the shadow declares outputs {:?}, the live plugin of `{name}` {:?}: a shadow must keep them (it could not be promoted)",
            plugin.info().outputs,
            outputs
        );
        spec.masks = plugin.info().masks || tconfig_masks(&inner, &name).await;
        spec.hide_values = !crate::admin::tappable(&pipeline, &name);
        let state = inner.state.lock().await;
        let h = state
            .transforms
            .get(&name)
            .ok_or_else(|| anyhow::anyhow!("`{name}` was removed while its shadow was loading"))?;
        anyhow::ensure!(
            h.shadow.active().is_none(),
            "a shadow already runs beside `{name}`"
        );
        let shadow = super::shadow::Shadow::start(spec, plugin);
        tracing::info!(transform = %name, shadow = %shadow.status()["version"], "shadow run started");
        h.shadow.set(shadow.clone());
        Ok(shadow.status())
    }

    /// Every transform's shadow run (running or ended), or one's.
    pub async fn shadow_status(
        &self,
        transform: Option<&str>,
    ) -> anyhow::Result<serde_json::Value> {
        let inner = self.inner()?;
        let state = inner.state.lock().await;
        if let Some(t) = transform {
            anyhow::ensure!(state.transforms.contains_key(t), "no transform `{t}`");
        }
        let all: Vec<serde_json::Value> = state
            .transforms
            .iter()
            .filter(|(n, _)| transform.is_none_or(|t| t == n.as_str()))
            .filter_map(|(_, h)| h.shadow.get().map(|s| s.status()))
            .collect();
        Ok(serde_json::json!({ "shadows": all }))
    }

    /// End a transform's shadow run, discarding it.
    pub async fn stop_shadow(&self, transform: &str) -> anyhow::Result<serde_json::Value> {
        let inner = self.inner()?;
        let state = inner.state.lock().await;
        let h = state
            .transforms
            .get(transform)
            .ok_or_else(|| anyhow::anyhow!("no transform `{transform}`"))?;
        let s = h
            .shadow
            .active()
            .ok_or_else(|| anyhow::anyhow!("no shadow runs beside `{transform}`"))?;
        s.end("stopped");
        Ok(s.status())
    }

    /// Make the shadow the live plugin: handed to the stage as a hot
    /// reload is (the batches taken before go through the old version,
    /// every later one through the new; nothing lost or doubled). Until
    /// the pipeline is reloaded: the pipeline file still names the old one.
    pub async fn promote_shadow(&self, transform: &str) -> anyhow::Result<serde_json::Value> {
        let inner = self.inner()?;
        let mut state = inner.state.lock().await;
        let h = state
            .transforms
            .get_mut(transform)
            .ok_or_else(|| anyhow::anyhow!("no transform `{transform}`"))?;
        let s = h
            .shadow
            .active()
            .ok_or_else(|| anyhow::anyhow!("no shadow runs beside `{transform}`"))?;
        s.end("promoted");
        h.swaps
            .send((s.plugin(), h.on_error))
            .map_err(|_| anyhow::anyhow!("transform `{transform}` has stopped"))?;
        h.hash = s.hash();
        h.masks = h.masks || s.masks();
        inner
            .metrics
            .reloads_ok
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(transform, version = %s.status()["version"], "shadow promoted: it is the live plugin from the next batch");
        Ok(s.status())
    }

    fn inner(&self) -> anyhow::Result<Arc<Inner>> {
        self.inner
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the pipeline has stopped"))
    }

    /// The current configuration.
    pub async fn config(&self) -> Option<PipelineConfig> {
        let inner = self.inner.upgrade()?;
        let state = inner.state.lock().await;
        Some(state.config.clone())
    }
}

impl Running {
    /// Load a transform's plugin again; swap it in if its bytes changed.
    async fn reload_plugin(inner: &Arc<Inner>, name: &str) -> anyhow::Result<bool> {
        // Compile aside, without the lock: a Python or JavaScript component
        // takes seconds, and the running plugin goes on meanwhile.
        let config = {
            let state = inner.state.lock().await;
            anyhow::ensure!(state.transforms.contains_key(name), "no transform `{name}`");
            state.config.clone()
        };
        let plugin = load_plugin(&config, name, inner.runtime.clone()).await?;
        let state = inner.state.lock().await;
        let setup = |c: &PipelineConfig| {
            c.transforms
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.config.clone())
        };
        anyhow::ensure!(
            match (setup(&state.config), setup(&config)) {
                (Some(now), Some(then)) => crate::plugin::loader::same_plugin(&now, &then),
                _ => false,
            },
            "the pipeline was reloaded while `{name}`'s plugin was loading; the reload loaded it"
        );
        let handle = state
            .transforms
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("no transform `{name}`"))?;
        if plugin.hash() == handle.hash {
            return Ok(false);
        }
        anyhow::ensure!(
            plugin.info().outputs == handle.outputs,
            "the new plugin of `{name}` declares outputs {:?} instead of {:?}; edit the pipeline file to change outputs",
            plugin.info().outputs,
            handle.outputs
        );
        let hash = plugin.hash().to_string();
        let masks = plugin.info().masks;
        handle
            .swaps
            .send((plugin, handle.on_error))
            .map_err(|_| anyhow::anyhow!("transform `{name}` has stopped"))?;
        drop(state);
        let mut state = inner.state.lock().await;
        if let Some(h) = state.transforms.get_mut(name) {
            h.hash = hash;
            h.masks = masks;
        }
        Ok(true)
    }

    /// Apply a new configuration: load and check everything first, then
    /// stop what is gone, swap what changed and start what is new.
    async fn reload(inner: &Arc<Inner>, new: PipelineConfig, force: bool) -> anyhow::Result<()> {
        let mut state = inner.state.lock().await;
        anyhow::ensure!(!state.stopping, "the pipeline is stopping");
        let old = state.config.clone();
        // 1. Load what changed and check the new graph, touching nothing.
        let keep: BTreeMap<String, TransformConfig> = state
            .transforms
            .iter()
            .map(|(n, t)| (n.clone(), t.config.clone()))
            .collect();
        let mut loaded = load_plugins(&new, &inner.runtime, &keep).await?;
        let running: BTreeMap<String, Vec<String>> = state
            .transforms
            .iter()
            .filter(|(n, _)| new.transforms.iter().any(|t| &t.name == *n))
            .map(|(n, t)| (n.clone(), t.outputs.clone()))
            .collect();
        let outputs = outputs_of(&loaded, &running);
        graph::check(&new, &outputs)?;
        // Every source and sink is built as `validate` and a start build
        // them, so what either refuses is refused here, before anything
        // running is touched (not found later by a task that dies).
        check_components(&new)?;
        // A shadow compares against the plugin it started beside: a
        // reload ends it (its status stays until the next one starts).
        for h in state.transforms.values() {
            h.shadow.end("the pipeline was reloaded");
        }
        check_swaps(&state, &loaded, &new)?;
        let stranded = stranded_buffers(&old, &new);
        if !stranded.is_empty() && !force {
            let list: Vec<String> = stranded
                .iter()
                .map(|(n, d, e)| format!("`{n}` ({e} events in {})", d.display()))
                .collect();
            anyhow::bail!(
                "sink {} would leave events in its disk buffer: deliver them first, or reload with force (POST /reload?force=true) to leave them on disk",
                list.join(", ")
            );
        }
        let dead = Running::dead_output(inner, &mut state);

        // 2. Stop what is gone or changed; drains behind it.
        let restart_sources = stop_gone(&mut state, &old, &new);
        // Forced: the removed sinks' buffers stop handing out at once
        // (their sinks would otherwise drain them first).
        for (name, dir, n) in &stranded {
            tracing::warn!(sink = %name, dir = %dir.display(), events = n, "reload forced: the sink goes; its disk buffer keeps its events");
            crate::delivery::buffer::stop(dir);
        }
        state.config = new.clone();
        Running::count_by_fields(inner, &new);

        // 3. Swap changed plugins; start what is new.
        for t in &new.transforms {
            match (state.transforms.get_mut(&t.name), loaded.remove(&t.name)) {
                (Some(h), Some(plugin)) => {
                    h.config = t.config.clone();
                    h.hash = plugin.hash().to_string();
                    h.masks = plugin.info().masks;
                    h.on_error = t.config.on_error;
                    let _ = h.swaps.send((plugin, t.config.on_error));
                }
                (None, Some(plugin)) => {
                    Running::spawn_transform(inner, &mut state, &t.name, &t.config, plugin, &dead)
                }
                _ => {}
            }
        }
        for s in &new.sinks {
            if !state.inputs.contains_key(&s.name) {
                Running::spawn_sink(inner, &mut state, s, &dead);
            }
        }
        Running::rewire(inner, &mut state)?;
        start_sources(inner, &mut state, &new, &restart_sources, &dead);
        tracing::info!(
            sources = new.sources.len(),
            transforms = new.transforms.len(),
            sinks = new.sinks.len(),
            "pipeline reloaded"
        );
        Ok(())
    }
}

/// A reload swaps a running transform's plugin only when its outputs stay
/// (the wiring depends on them); a new `concurrency` waits for a start.
fn check_swaps(
    state: &State,
    loaded: &BTreeMap<String, LoadedPlugin>,
    new: &PipelineConfig,
) -> anyhow::Result<()> {
    for (name, plugin) in loaded {
        if let Some(h) = state.transforms.get(name) {
            anyhow::ensure!(
                plugin.info().outputs == h.outputs,
                "transform `{name}`: its outputs change ({:?} -> {:?}); that needs a restart",
                h.outputs,
                plugin.info().outputs
            );
        }
    }
    for t in &new.transforms {
        if let Some(h) = state.transforms.get(&t.name) {
            let asked = t.config.concurrency();
            if h.concurrency != asked {
                tracing::warn!(
                    transform = %t.name,
                    running = h.concurrency,
                    asked,
                    "a running transform keeps its number of instances; a new `concurrency` takes effect at the next start"
                );
            }
        }
    }
    Ok(())
}

/// The sinks whose disk buffer holds events and that the new
/// configuration removes (or whose buffer it moves or turns into memory):
/// name, folder, events waiting. They are not removed unless forced: their
/// events would wait in a folder nothing reads.
fn stranded_buffers(
    old: &PipelineConfig,
    new: &PipelineConfig,
) -> Vec<(String, std::path::PathBuf, u64)> {
    let mut stranded = Vec::new();
    for s in &old.sinks {
        let Some((dir, _)) = old.buffer_dir(s) else {
            continue;
        };
        let kept = new
            .sinks
            .iter()
            .find(|n| n.name == s.name)
            .and_then(|n| new.buffer_dir(n))
            .is_some_and(|(d, _)| d == dir);
        if kept {
            continue;
        }
        match crate::delivery::buffer::waiting(&dir) {
            Some(n) if n > 0 => stranded.push((s.name.clone(), dir, n)),
            _ => {}
        }
    }
    stranded
}

/// Stop the sources, sinks and transforms that are gone or changed (what
/// is behind them drains); the sources that come back changed, to start
/// once the old one has ended.
fn stop_gone(state: &mut State, old: &PipelineConfig, new: &PipelineConfig) -> Vec<String> {
    let mut restart_sources = Vec::new();
    for s in &old.sources {
        let kept = new
            .sources
            .iter()
            .find(|n| n.name == s.name)
            .is_some_and(|n| n.config == s.config);
        if !kept {
            if let Some(t) = state.sources.remove(&s.name) {
                t.trigger();
            }
            if new.sources.iter().any(|n| n.name == s.name) {
                restart_sources.push(s.name.clone());
            }
        }
    }
    for s in &old.sinks {
        let kept = new
            .sinks
            .iter()
            .find(|n| n.name == s.name)
            .is_some_and(|n| n.config.same_settings(&s.config) && n.buffer == s.buffer);
        if !kept {
            state.inputs.remove(&s.name);
        }
    }
    for t in &old.transforms {
        if !new.transforms.iter().any(|n| n.name == t.name) {
            state.inputs.remove(&t.name);
            state.transforms.remove(&t.name);
        }
    }
    restart_sources
}

/// New sources start now; changed ones once the old one has ended (they
/// share a name, which the wiring uses).
fn start_sources(
    inner: &Arc<Inner>,
    state: &mut State,
    new: &PipelineConfig,
    restart: &[String],
    dead: &Arc<DeadOutput>,
) {
    for s in &new.sources {
        if state.sources.contains_key(&s.name) {
            continue;
        }
        if restart.contains(&s.name) {
            let inner2 = inner.clone();
            let s = s.clone();
            let dead = dead.clone();
            tokio::spawn(async move {
                while !inner2.router.is_finished(&s.name) {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let mut state = inner2.state.lock().await;
                Running::spawn_source(&inner2, &mut state, &s, &dead);
                if let Err(e) = Running::rewire(&inner2, &mut state) {
                    tracing::error!(source = %s.name, error = %e, "rewiring the restarted source failed");
                }
            });
        } else {
            Running::spawn_source(inner, state, s, dead);
        }
    }
}
