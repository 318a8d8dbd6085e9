//! Hot reload: watching plugin files and the pipeline file, and the
//! reload that SIGHUP and `POST /reload` trigger.
//!
//! The folders of the files are watched (`notify`: inotify on Linux), and
//! the files looked at when something in them changes, and every 20
//! `poll_interval`s all the same; with `[reload] poll = true`, or where
//! watching cannot be set up, they are polled every `poll_interval`. A
//! change is acted on only once the file has stayed unchanged for one
//! `poll_interval`, so a `.wasm` being written is never loaded
//! half-written; an atomic rename is seen as one change. A new version that fails to compile or to
//! `init` is refused and the running one keeps going.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::graph;
use super::running::{Inner, Running};
use super::{check_components, outputs_of};
use crate::base::metrics::Registry;
use crate::config::{PipelineConfig, TransformConfig};
use crate::plugin::loader::{is_plugin_file, load_plugin, load_plugins};

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    if m.is_dir() {
        return folder_stamp(path);
    }
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// A pipeline folder changes when one of its `*.toml` files does, or one
/// comes or goes.
fn folder_stamp(dir: &Path) -> Stamp {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut latest = SystemTime::UNIX_EPOCH;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let s = stamp(f);
        if let Some((modified, _, _)) = s {
            latest = latest.max(modified);
        }
        (f, s).hash(&mut h);
    }
    Some((latest, files.len() as u64, h.finish()))
}

/// With the folders watched, how many `poll_interval`s pass between two
/// looks at the files when no event came.
const IDLE_POLLS: u32 = 20;

/// The folders of the watched files, and their changes.
struct Folders {
    watcher: notify::RecommendedWatcher,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
    watching: std::collections::BTreeSet<PathBuf>,
}

impl Folders {
    fn new() -> Option<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if !matches!(&res, Ok(e) if e.kind.is_access()) {
                let _ = tx.send(());
            }
        });
        match watcher {
            Ok(watcher) => Some(Self {
                watcher,
                rx,
                watching: Default::default(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "cannot watch for file changes; polling every poll_interval");
                None
            }
        }
    }

    /// Watch the folder of `path` (a pipeline folder: itself) from now on.
    fn watch(&mut self, path: &Path) {
        use notify::Watcher as _;
        let folder = if path.is_dir() {
            path.to_path_buf()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if self.watching.contains(&folder) {
            return;
        }
        match self
            .watcher
            .watch(&folder, notify::RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                self.watching.insert(folder);
            }
            Err(e) => {
                tracing::debug!(folder = %folder.display(), error = %e, "cannot watch folder; it is looked at every 20 polls")
            }
        }
    }

    /// Until something changes in a watched folder, or `at_most` passes.
    async fn changed(&mut self, at_most: Duration) {
        if tokio::time::timeout(at_most, self.rx.recv()).await.is_ok() {
            while self.rx.try_recv().is_ok() {}
        }
    }
}

/// One watched file: the version last acted on, and the one seen last poll.
#[derive(Debug, Default)]
struct Watched {
    applied: Stamp,
    seen: Stamp,
}

impl Watched {
    fn new(path: &Path) -> Self {
        let s = stamp(path);
        Self {
            applied: s,
            seen: s,
        }
    }

    /// Whether a change was seen that has not been acted on yet.
    fn unsettled(&self) -> bool {
        self.seen != self.applied
    }

    /// Whether the file changed and has been stable since the last poll.
    fn settled_change(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        let stable = now == self.seen;
        self.seen = now;
        if stable && now != self.applied && now.is_some() {
            self.applied = now;
            return true;
        }
        false
    }
}

/// The plugin files of a pipeline's transforms: transform -> path.
fn plugin_files(config: &PipelineConfig) -> BTreeMap<String, PathBuf> {
    config
        .transforms
        .iter()
        .filter(|t| is_plugin_file(t.config.plugin.get_ref()))
        .map(|t| {
            (
                t.name.clone(),
                config.resolve(Path::new(t.config.plugin.get_ref())),
            )
        })
        .collect()
}

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

fn count(metrics: &Registry, result: &anyhow::Result<()>, what: &str, name: &str) {
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

/// Poll the pipeline file and the plugin files until the pipeline stops.
pub async fn watch(
    handle: ReloadHandle,
    pipeline: PathBuf,
    settings: crate::config::ReloadConfig,
    metrics: Registry,
) {
    let poll = settings.poll_interval;
    let mut pipeline_file = Watched::new(&pipeline);
    let mut plugins: BTreeMap<String, (PathBuf, Watched)> = BTreeMap::new();
    let mut folders = (!settings.poll).then(Folders::new).flatten();
    if let (Some(f), Some(config)) = (&mut folders, handle.config().await) {
        f.watch(&pipeline);
        for path in plugin_files(&config).values() {
            f.watch(path);
        }
    }
    loop {
        // A change not yet settled is looked at again after one poll; with
        // the folders watched, nothing else needs a look before an event.
        let unsettled = pipeline_file.unsettled() || plugins.values().any(|(_, w)| w.unsettled());
        match &mut folders {
            Some(f) if !unsettled => f.changed(poll * IDLE_POLLS).await,
            _ => tokio::time::sleep(poll).await,
        }
        let Some(config) = handle.config().await else {
            return;
        };
        if let Some(f) = &mut folders {
            f.watch(&pipeline);
            for path in plugin_files(&config).values() {
                f.watch(path);
            }
        }
        // Track the plugin files of the current configuration.
        let files = plugin_files(&config);
        plugins.retain(|name, (path, _)| files.get(name) == Some(path));
        for (name, path) in files {
            plugins.entry(name).or_insert_with(|| {
                let w = Watched::new(&path);
                (path, w)
            });
        }
        if pipeline_file.settled_change(&pipeline) {
            let result = match PipelineConfig::load(&pipeline) {
                Ok(c) => handle.reload(c).await,
                Err(e) => Err(e),
            };
            count(
                &metrics,
                &result,
                "pipeline",
                &pipeline.display().to_string(),
            );
            continue;
        }
        for (name, (path, watched)) in plugins.iter_mut() {
            if watched.settled_change(path) {
                match handle.reload_plugin(name).await {
                    Ok(false) => {
                        tracing::debug!(transform = %name, "plugin file touched, bytes unchanged")
                    }
                    Ok(true) => count(&metrics, &Ok(()), "plugin", name),
                    Err(e) => count(&metrics, &Err(e), "plugin", name),
                }
            }
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
        for (name, plugin) in &loaded {
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
        // A sink whose disk buffer holds events is not removed (nor its
        // buffer moved or turned into memory) unless forced: its events
        // would wait in a folder nothing reads.
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
        // New sources start now; changed ones once the old one has ended
        // (they share a name, which the wiring uses).
        for s in &new.sources {
            if state.sources.contains_key(&s.name) {
                continue;
            }
            if restart_sources.contains(&s.name) {
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
                Running::spawn_source(inner, &mut state, s, &dead);
            }
        }
        tracing::info!(
            sources = new.sources.len(),
            transforms = new.transforms.len(),
            sinks = new.sinks.len(),
            "pipeline reloaded"
        );
        Ok(())
    }
}
