//! A started pipeline: its tasks, its wiring, and changes while it runs
//! (plugin swaps, pipeline reloads, shutdown).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, Mutex};

use super::graph::{self, Port};
use super::output::{FinishOnDrop, Output, Router, Shutdown, ShutdownTrigger};
use super::transform::TransformStage;
use super::{load_plugins, outputs_of, plugin_key};
use crate::config::{Named, OnError, PipelineConfig, TransformConfig};
use crate::delivery::{DeadLetters, DeadOutput, DEAD_LETTERS};
use crate::event::SharedBatch;
use crate::metrics::{Kind, Registry};
use crate::plugin::{LoadedPlugin, Runtime};
use crate::sink::{SinkConfig, SinkContext};
use crate::source::{SourceConfig, SourceContext};

/// What the pipeline knows of one running transform.
struct TransformHandle {
    swaps: std::sync::mpsc::Sender<(LoadedPlugin, OnError)>,
    on_error: OnError,
    /// `plugin_key` of its config: a reload with the same key keeps it.
    key: String,
    outputs: Vec<String>,
    /// SHA-256 of the running plugin, to skip reloading identical bytes.
    hash: String,
}

/// The mutable state of a running pipeline, changed only under its lock.
struct State {
    config: PipelineConfig,
    /// Input channels of transforms and sinks, weakly: the router holds the
    /// strong senders, so a channel closes when nothing feeds it.
    inputs: BTreeMap<String, mpsc::WeakSender<SharedBatch>>,
    sources: BTreeMap<String, ShutdownTrigger>,
    transforms: BTreeMap<String, TransformHandle>,
    /// The dead-letter output while any component holds it.
    dead: Weak<DeadOutput>,
    /// Senders of channels just made, kept alive until the next rewire
    /// hands them to the router.
    pending: Vec<mpsc::Sender<SharedBatch>>,
    stopping: bool,
}

struct Inner {
    runtime: Arc<Runtime>,
    metrics: Registry,
    router: Arc<Router>,
    state: Mutex<State>,
    done_tx: mpsc::UnboundedSender<(String, anyhow::Result<()>)>,
    /// Tasks started and not yet finished.
    active: AtomicUsize,
}

/// A started pipeline.
pub struct Running {
    inner: Arc<Inner>,
    done_rx: mpsc::UnboundedReceiver<(String, anyhow::Result<()>)>,
}

/// Stops a running pipeline from elsewhere (signal handlers, tests).
#[derive(Clone)]
pub struct StopHandle {
    inner: Weak<Inner>,
}

impl StopHandle {
    /// Ask the sources to stop; everything behind them drains.
    pub fn trigger(&self) {
        if let Some(inner) = self.inner.upgrade() {
            tokio::spawn(async move { Running::stop_all(&inner).await });
        }
    }
}

/// A handle to change a running pipeline: reload it, swap plugins.
#[derive(Clone)]
pub struct ReloadHandle {
    inner: Weak<Inner>,
}

impl ReloadHandle {
    /// Apply a new configuration. On error the running pipeline is left
    /// untouched.
    pub async fn reload(&self, config: PipelineConfig) -> anyhow::Result<()> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| anyhow::anyhow!("the pipeline has stopped"))?;
        Running::reload(&inner, config).await
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

    /// The current configuration.
    pub async fn config(&self) -> Option<PipelineConfig> {
        let inner = self.inner.upgrade()?;
        let state = inner.state.lock().await;
        Some(state.config.clone())
    }
}

impl Running {
    pub(crate) fn start(
        config: PipelineConfig,
        plugins: BTreeMap<String, LoadedPlugin>,
        runtime: Arc<Runtime>,
        metrics: Registry,
    ) -> anyhow::Result<Running> {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            runtime,
            metrics,
            router: Arc::new(Router::default()),
            state: Mutex::new(State {
                config: config.clone(),
                inputs: BTreeMap::new(),
                sources: BTreeMap::new(),
                transforms: BTreeMap::new(),
                dead: Weak::new(),
                pending: Vec::new(),
                stopping: false,
            }),
            done_tx,
            active: AtomicUsize::new(0),
        });
        let mut state = inner.state.try_lock().expect("new state is unlocked");
        let dead = Running::dead_output(&inner, &mut state);
        // Consumers first, so that wiring finds their channels; then wire;
        // then the sources.
        let mut plugins = plugins;
        for s in &config.sinks {
            Running::spawn_sink(&inner, &mut state, s);
        }
        for t in &config.transforms {
            let plugin = plugins.remove(&t.name).expect("plugin loaded in plan");
            Running::spawn_transform(&inner, &mut state, &t.name, &t.config, plugin, &dead);
        }
        Running::rewire(&inner, &mut state)?;
        for s in &config.sources {
            Running::spawn_source(&inner, &mut state, s, &dead);
        }
        drop(dead);
        drop(state);
        Ok(Running { inner, done_rx })
    }

    fn dead_output(inner: &Arc<Inner>, state: &mut State) -> Arc<DeadOutput> {
        if let Some(d) = state.dead.upgrade() {
            return d;
        }
        inner.router.revive(DEAD_LETTERS);
        let d = Arc::new(DeadOutput(Output::new(
            DEAD_LETTERS,
            1,
            inner.router.clone(),
            inner.metrics.component(DEAD_LETTERS, Kind::Source),
        )));
        state.dead = Arc::downgrade(&d);
        d
    }

    fn track(
        inner: &Arc<Inner>,
        name: &str,
        task: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        inner.active.fetch_add(1, Ordering::SeqCst);
        let done = inner.done_tx.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let result = task.await;
            let _ = done.send((name, result));
        });
    }

    fn spawn_sink(inner: &Arc<Inner>, state: &mut State, s: &Named<SinkConfig>) {
        let buffer = state.config.batch.buffer;
        let (tx, rx) = mpsc::channel(buffer);
        state.inputs.insert(s.name.clone(), tx.downgrade());
        inner.metrics.queue(&s.name, &tx);
        state.pending.push(tx);
        let fallback = s.config.fallback().map(|_| {
            inner.router.revive(&s.name);
            Output::new(
                &s.name,
                1,
                inner.router.clone(),
                inner.metrics.component(&s.name, Kind::Sink),
            )
        });
        let finish = fallback.clone().map(FinishOnDrop);
        let ctx = SinkContext {
            name: s.name.as_str().into(),
            input: rx,
            metrics: inner.metrics.component(&s.name, Kind::Sink),
            fallback,
        };
        let config = s.config.resolved(&state.config);
        let name = s.name.clone();
        Running::track(inner, &name, async move {
            let _finish = finish;
            match config {
                SinkConfig::Stdout(c) => c.run(ctx).await,
                SinkConfig::File(c) => c.run(ctx).await,
                SinkConfig::Capture(c) => c.run(ctx).await,
                SinkConfig::Redis(c) => c.run(ctx).await,
            }
        });
    }

    fn spawn_transform(
        inner: &Arc<Inner>,
        state: &mut State,
        name: &str,
        config: &TransformConfig,
        plugin: LoadedPlugin,
        dead: &Arc<DeadOutput>,
    ) {
        let (tx, rx) = mpsc::channel(state.config.batch.buffer);
        state.inputs.insert(name.to_string(), tx.downgrade());
        inner.metrics.queue(name, &tx);
        state.pending.push(tx);
        let (swap_tx, swap_rx) = std::sync::mpsc::channel();
        let outputs = plugin.info().outputs.clone();
        state.transforms.insert(
            name.to_string(),
            TransformHandle {
                swaps: swap_tx,
                key: plugin_key(config),
                on_error: config.on_error,
                outputs: outputs.clone(),
                hash: plugin.hash().to_string(),
            },
        );
        inner.router.revive(name);
        let stage = TransformStage {
            name: name.into(),
            output: Output::new(
                name,
                outputs.len() + 1,
                inner.router.clone(),
                inner.metrics.component(name, Kind::Transform),
            ),
            input: rx,
            metrics: inner.metrics.component(name, Kind::Transform),
            dead: DeadLetters::new(name, dead.clone())
                .for_plugin(plugin.source(), &plugin.version()),
            on_error: config.on_error,
            plugin,
            swaps: swap_rx,
        };
        Running::track(inner, name, async move {
            let handle = tokio::task::spawn_blocking(move || stage.run());
            handle.await.map_err(|e| anyhow::anyhow!("crashed: {e}"))
        });
    }

    fn spawn_source(
        inner: &Arc<Inner>,
        state: &mut State,
        s: &Named<SourceConfig>,
        dead: &Arc<DeadOutput>,
    ) {
        let (trigger, shutdown) = Shutdown::new();
        if state.stopping {
            trigger.trigger();
        }
        state.sources.insert(s.name.clone(), trigger);
        inner.router.revive(&s.name);
        let output = Output::new(
            &s.name,
            1,
            inner.router.clone(),
            inner.metrics.component(&s.name, Kind::Source),
        );
        let ctx = SourceContext {
            name: s.name.as_str().into(),
            batch: state.config.batch.with(s.config.batch()),
            output: output.clone(),
            dead: DeadLetters::new(&s.name, dead.clone()),
            metrics: inner.metrics.component(&s.name, Kind::Source),
            shutdown,
        };
        let config = s.config.resolved(&state.config);
        Running::track(inner, &s.name, async move {
            let _finish = FinishOnDrop(output);
            match config {
                SourceConfig::Stdin(c) => c.run(ctx).await,
                SourceConfig::File(c) => c.run(ctx).await,
                SourceConfig::Generate(c) => c.run(ctx).await,
                SourceConfig::Memory(c) => c.run(ctx).await,
                SourceConfig::Http(c) => c.run(ctx).await,
                SourceConfig::Redis(c) => c.run(ctx).await,
            }
        });
    }

    /// Wire every producer port to the channels of its current consumers.
    /// Producers that are draining after a reload keep their old edges.
    fn rewire(inner: &Arc<Inner>, state: &mut State) -> anyhow::Result<()> {
        let outputs: BTreeMap<String, Vec<String>> = state
            .transforms
            .iter()
            .map(|(n, t)| (n.clone(), t.outputs.clone()))
            .collect();
        let edges = graph::edges(&state.config, &outputs)?;
        let mut wiring: BTreeMap<Port, Vec<mpsc::Sender<SharedBatch>>> = BTreeMap::new();
        for (consumer, ports) in &edges {
            let Some(tx) = state
                .inputs
                .get(consumer)
                .and_then(mpsc::WeakSender::upgrade)
            else {
                continue;
            };
            for port in ports.iter().collect::<std::collections::BTreeSet<_>>() {
                wiring.entry(port.clone()).or_default().push(tx.clone());
            }
        }
        let current: std::collections::BTreeSet<&str> = state
            .config
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(state.config.transforms.iter().map(|t| t.name.as_str()))
            .chain(std::iter::once(DEAD_LETTERS))
            .collect();
        for (port, senders) in inner.router.snapshot() {
            if !current.contains(port.0.as_str()) {
                let live: Vec<_> = senders
                    .iter()
                    .filter_map(mpsc::WeakSender::upgrade)
                    .collect();
                wiring.entry(port).or_default().extend(live);
            }
        }
        inner.router.rewire(wiring);
        state.pending.clear();
        Ok(())
    }

    async fn stop_all(inner: &Arc<Inner>) {
        let mut state = inner.state.lock().await;
        state.stopping = true;
        for trigger in state.sources.values() {
            trigger.trigger();
        }
    }

    /// Ask the sources to stop; the rest drains behind them.
    pub async fn shutdown(&self) {
        Running::stop_all(&self.inner).await;
    }

    /// A handle that stops the pipeline from elsewhere.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// A handle that reloads the pipeline from elsewhere.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            inner: Arc::downgrade(&self.inner),
        }
    }

    pub fn metrics(&self) -> &Registry {
        &self.inner.metrics
    }

    /// Wait for every task to finish. A failing component stops the sources
    /// so the others drain; the first error is returned.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        while self.inner.active.load(Ordering::SeqCst) > 0 {
            let Some((name, result)) = self.done_rx.recv().await else {
                break;
            };
            self.inner.active.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = result {
                tracing::error!(component = %name, error = %format!("{e:#}"), "component failed; stopping the pipeline");
                Running::stop_all(&self.inner).await;
                first_error.get_or_insert(e.context(format!("component {name} failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn reload_plugin(inner: &Arc<Inner>, name: &str) -> anyhow::Result<bool> {
        let state = inner.state.lock().await;
        let handle = state
            .transforms
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("no transform `{name}`"))?;
        let plugin = super::load_plugin(&state.config, name, inner.runtime.clone()).await?;
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
        handle
            .swaps
            .send((plugin, handle.on_error))
            .map_err(|_| anyhow::anyhow!("transform `{name}` has stopped"))?;
        drop(state);
        let mut state = inner.state.lock().await;
        if let Some(h) = state.transforms.get_mut(name) {
            h.hash = hash;
        }
        Ok(true)
    }

    async fn reload(inner: &Arc<Inner>, new: PipelineConfig) -> anyhow::Result<()> {
        let mut state = inner.state.lock().await;
        anyhow::ensure!(!state.stopping, "the pipeline is stopping");
        let old = state.config.clone();
        // 1. Load what changed and check the new graph, touching nothing.
        let keep: BTreeMap<String, String> = state
            .transforms
            .iter()
            .map(|(n, t)| (n.clone(), t.key.clone()))
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
        let dead = Running::dead_output(inner, &mut state);

        // 2. Stop what is gone or changed; drains behind it.
        let mut restart_sources = Vec::new();
        for s in &old.sources {
            let kept = new
                .sources
                .iter()
                .find(|n| n.name == s.name)
                .is_some_and(|n| format!("{:?}", n.config) == format!("{:?}", s.config));
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
                .is_some_and(|n| n.config.restart_key() == s.config.restart_key());
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
        state.config = new.clone();

        // 3. Swap changed plugins; start what is new.
        for t in &new.transforms {
            match (state.transforms.get_mut(&t.name), loaded.remove(&t.name)) {
                (Some(h), Some(plugin)) => {
                    h.key = plugin_key(&t.config);
                    h.hash = plugin.hash().to_string();
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
                Running::spawn_sink(inner, &mut state, s);
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
