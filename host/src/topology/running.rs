//! A started pipeline: its tasks, its wiring, and shutdown. Changes while
//! it runs (plugin swaps, pipeline reloads) are in `reload.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, Mutex};

use super::graph::{self, Port};
use super::reload::ReloadHandle;
use super::transform::TransformStage;
use crate::base::event::SharedBatch;
use crate::base::metrics::{ComponentMetrics, Kind, Registry};
use crate::base::output::{FinishOnDrop, Output, Router, Shutdown, ShutdownTrigger};
use crate::config::{Named, OnError, PipelineConfig, TransformConfig};
use crate::delivery::buffer::DiskStage;
use crate::delivery::{DeadLetters, DeadOutput, DEAD_LETTERS};
use crate::plugin::{LoadedPlugin, Runtime};
use crate::sink::{SinkConfig, SinkContext};
use crate::source::{SourceConfig, SourceContext};

/// Whether sink `name` takes dead letters, directly or as the fallback of
/// a sink that does. Such a sink gets no dead-letter output of its own: it
/// would keep its own input open, and shutdown would never drain.
fn downstream_of_dead_letters(config: &PipelineConfig, name: &str) -> bool {
    let mut seen = vec![name.to_string()];
    let mut i = 0;
    while let Some(current) = seen.get(i).cloned() {
        i += 1;
        let Some(sink) = config.sinks.iter().find(|s| s.name == current) else {
            continue;
        };
        if sink
            .config
            .inputs()
            .iter()
            .any(|i| i.get_ref() == DEAD_LETTERS)
        {
            return true;
        }
        // Whoever falls back onto this sink feeds it too.
        for s in &config.sinks {
            if s.config.fallback().is_some_and(|f| *f.get_ref() == current)
                && !seen.contains(&s.name)
            {
                seen.push(s.name.clone());
            }
        }
    }
    false
}

/// What the pipeline knows of one running transform.
pub(super) struct TransformHandle {
    /// Hands the stage a new plugin, taken between two batches.
    pub(super) swaps: std::sync::mpsc::Sender<(LoadedPlugin, OnError)>,
    pub(super) on_error: OnError,
    /// Its config: a reload whose config has the same plugin
    /// ([`crate::plugin::loader::same_plugin`]) keeps it.
    pub(super) config: TransformConfig,
    /// The output names its plugin declared; a swap must keep them.
    pub(super) outputs: Vec<String>,
    /// SHA-256 of the running plugin, to skip reloading identical bytes.
    pub(super) hash: String,
    /// Instances of its plugin running, fixed when it started.
    pub(super) concurrency: usize,
    /// Its shadow run, if one was started.
    pub(super) shadow: Arc<super::shadow::ShadowSlot>,
    /// Its live plugin masks (a shadow's samples hide what it hid).
    pub(super) masks: bool,
}

/// The mutable state of a running pipeline, changed only under its lock.
pub(super) struct State {
    pub(super) config: PipelineConfig,
    /// Input channels of transforms and sinks, weakly: the router holds the
    /// strong senders, so a channel closes when nothing feeds it.
    pub(super) inputs: BTreeMap<String, mpsc::WeakSender<SharedBatch>>,
    /// The stop trigger of every running source.
    pub(super) sources: BTreeMap<String, ShutdownTrigger>,
    pub(super) transforms: BTreeMap<String, TransformHandle>,
    /// The dead-letter output while any component holds it.
    dead: Weak<DeadOutput>,
    /// Senders of channels just made, kept alive until the next rewire
    /// hands them to the router.
    pending: Vec<mpsc::Sender<SharedBatch>>,
    /// Shutdown was asked for: sources started from now on stop at once.
    pub(super) stopping: bool,
}

pub(super) struct Inner {
    /// Compiles the plugins of reloads and swaps.
    pub(super) runtime: Arc<Runtime>,
    pub(super) metrics: Registry,
    /// Who reads which port, changed by every rewire.
    pub(super) router: Arc<Router>,
    pub(super) state: Mutex<State>,
    /// Where every task reports how it ended, read by [`Running::wait`].
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
        Running::count_by_fields(&inner, &config);
        let dead = Running::dead_output(&inner, &mut state);
        // Consumers first, so that wiring finds their channels; then wire;
        // then the sources.
        let mut plugins = plugins;
        for s in &config.sinks {
            Running::spawn_sink(&inner, &mut state, s, &dead);
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

    /// Give every component its `metrics = { by = [...] }` (or none).
    pub(super) fn count_by_fields(inner: &Inner, config: &PipelineConfig) {
        let m = &inner.metrics;
        let typed = |c: &ComponentMetrics, t: &'static str| {
            *c.type_name.lock().unwrap_or_else(|e| e.into_inner()) = t;
        };
        for s in &config.sources {
            let c = m.component(&s.name, Kind::Source);
            c.set_by_fields(s.metrics.as_ref());
            typed(&c, s.config.type_name());
        }
        for t in &config.transforms {
            m.component(&t.name, Kind::Transform)
                .set_by_fields(t.metrics.as_ref());
        }
        for s in &config.sinks {
            let c = m.component(&s.name, Kind::Sink);
            c.set_by_fields(s.metrics.as_ref());
            typed(&c, s.config.type_name());
        }
    }

    pub(super) fn dead_output(inner: &Arc<Inner>, state: &mut State) -> Arc<DeadOutput> {
        if let Some(d) = state.dead.upgrade() {
            return d;
        }
        inner.router.revive(DEAD_LETTERS);
        let d = Arc::new(DeadOutput(
            Output::new(
                DEAD_LETTERS,
                1,
                inner.router.clone(),
                inner.metrics.component(DEAD_LETTERS, Kind::Source),
            ),
            inner.metrics.dead_letters.clone(),
        ));
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
        let metrics = inner.metrics.find(name);
        let name = name.to_string();
        tokio::spawn(async move {
            use futures_util::FutureExt;
            // A component that panics is dead: say so on /health, and stop
            // the pipeline as for any failed component, instead of leaving
            // `wait` counting a task that will never report.
            let result = match std::panic::AssertUnwindSafe(task).catch_unwind().await {
                Ok(result) => result,
                Err(payload) => {
                    let reason = format!(
                        "panicked: {}",
                        crate::source::http::listener::panic_message(payload.as_ref())
                    );
                    Err(anyhow::anyhow!(reason))
                }
            };
            if let (Err(e), Some(m)) = (&result, &metrics) {
                m.set_down(Some(format!("{e:#}")));
            }
            let _ = done.send((name, result));
        });
    }

    pub(super) fn spawn_sink(
        inner: &Arc<Inner>,
        state: &mut State,
        s: &Named<SinkConfig>,
        dead: &Arc<DeadOutput>,
    ) {
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
        let metrics = inner.metrics.component(&s.name, Kind::Sink);
        let dead = (!downstream_of_dead_letters(&state.config, &s.name))
            .then(|| DeadLetters::new(&s.name, dead.clone()));
        // A disk buffer stands between the channel and the sink.
        let (input, stage) = match state.config.buffer_dir(s) {
            Some((dir, config)) => {
                let (to_sink, input) = mpsc::channel(buffer.clamp(1, 4));
                let stage = DiskStage {
                    name: s.name.as_str().into(),
                    dir,
                    config,
                    front: rx,
                    to_sink,
                    metrics: metrics.clone(),
                    dead: dead.clone(),
                };
                (input, Some(stage))
            }
            None => (rx, None),
        };
        let ctx = SinkContext {
            name: s.name.as_str().into(),
            input,
            metrics,
            fallback,
            dead,
        };
        // Checked by `plan` already; an error now (a variable unset since)
        // ends this sink's task with it.
        let sink = state.config.build_sink(s);
        Running::track(inner, &s.name, async move {
            let _finish = finish;
            let sink = sink?;
            match stage {
                None => sink.start(ctx).await,
                Some(stage) => {
                    let (buffered, written) = tokio::join!(stage.run(), sink.start(ctx));
                    buffered.and(written)
                }
            }
        });
    }

    pub(super) fn spawn_transform(
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
        let concurrency = config.concurrency();
        let shadow = Arc::new(super::shadow::ShadowSlot::default());
        state.transforms.insert(
            name.to_string(),
            TransformHandle {
                swaps: swap_tx,
                config: config.clone(),
                on_error: config.on_error,
                outputs: outputs.clone(),
                hash: plugin.hash().to_string(),
                concurrency,
                shadow: shadow.clone(),
                masks: plugin.info().masks,
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
            dead: DeadLetters::new(name, dead.clone()),
            on_error: config.on_error,
            plugin,
            swaps: swap_rx,
            concurrency,
            shadow,
        };
        Running::track(inner, name, stage.run());
    }

    pub(super) fn spawn_source(
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
            batch: state.config.batch.with(s.config.kind().batch()),
            output: output.clone(),
            dead: DeadLetters::new(&s.name, dead.clone()),
            metrics: inner.metrics.component(&s.name, Kind::Source),
            shutdown,
            registry: inner.metrics.clone(),
        };
        let source = state.config.build_source(s);
        Running::track(inner, &s.name, async move {
            let _finish = FinishOnDrop(output);
            source?.start(ctx).await
        });
    }

    /// Wire every producer port to the channels of its current consumers.
    /// Producers that are draining after a reload keep their old edges.
    pub(super) fn rewire(inner: &Arc<Inner>, state: &mut State) -> anyhow::Result<()> {
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
        ReloadHandle::new(&self.inner)
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
}
