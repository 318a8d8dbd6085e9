//! The running pipeline: build the graph, start its stages, shut it down.
//!
//! Every transform and sink owns one bounded input channel; every producer
//! (source, transform port, `_dead_letters`) holds a sender to each of its
//! consumers. Stopping the sources therefore drains the whole graph in
//! order: each stage ends when all of its senders are gone, after passing
//! on what it had.

pub mod output;
pub mod transform;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, OnError, PipelineConfig};
use crate::delivery::{DeadLetters, DEAD_LETTERS};
use crate::event::SharedBatch;
use crate::metrics::{Kind, Registry};
use crate::plugin::{bundled, LoadedPlugin, PluginError, PluginLimits, Runtime};
use crate::sink::{SinkConfig, SinkContext};
use crate::source::{SourceConfig, SourceContext};
use output::{Output, Shutdown, ShutdownTrigger};
use transform::TransformStage;

/// A checked pipeline with its plugins loaded, ready to start.
pub struct Plan {
    config: PipelineConfig,
    plugins: BTreeMap<String, LoadedPlugin>,
}

/// Load every plugin and check the graph: every input exists, no cycle.
pub async fn plan(config: PipelineConfig, runtime: Arc<Runtime>) -> anyhow::Result<Plan> {
    let mut plugins = BTreeMap::new();
    for t in &config.transforms {
        let plugin = load_plugin(&config, &t.name, runtime.clone()).await?;
        let c = &t.config;
        if c.on_error == OnError::Pass && plugin.info().masks && !c.allow_unmasked {
            return Err(config
                .locator
                .error(
                    Some(t.span.clone()),
                    format!("transforms.{}.on_error", t.name),
                    "`on_error = \"pass\"` on a masking plugin forwards unmasked data when it fails; \
                     set `allow_unmasked = true` if that is really wanted",
                )
                .into());
        }
        plugins.insert(t.name.clone(), plugin);
    }
    let plan = Plan { config, plugins };
    plan.check_graph()?;
    Ok(plan)
}

async fn load_plugin(
    config: &PipelineConfig,
    name: &str,
    runtime: Arc<Runtime>,
) -> anyhow::Result<LoadedPlugin> {
    let t = &config
        .transforms
        .iter()
        .find(|t| t.name == name)
        .expect("transform exists")
        .config;
    let key = format!("transforms.{name}");
    let plugin_ref = t.plugin.get_ref().clone();
    let json = match &t.config {
        Some(v) => serde_json::to_string(v.get_ref()).context("config table to JSON")?,
        None => "{}".to_string(),
    };
    let limits = PluginLimits {
        memory: (t.memory_mib as usize) << 20,
        time_budget: t.time_budget,
    };
    let is_path =
        plugin_ref.ends_with(".wasm") || plugin_ref.contains('/') || plugin_ref.contains('\\');
    let loc = &config.locator;
    let plugin_err = |message: String| -> anyhow::Error {
        loc.error(Some(t.plugin.span()), format!("{key}.plugin"), message)
            .into()
    };
    let (source, bytes) = if is_path {
        let path = config.resolve(Path::new(&plugin_ref));
        match std::fs::read(&path) {
            Ok(b) => (path.display().to_string(), b),
            Err(e) => {
                return Err(plugin_err(format!(
                    "cannot read plugin file {}: {e}",
                    path.display()
                )))
            }
        }
    } else {
        match bundled::get(&plugin_ref) {
            Some(b) => (format!("bundled:{plugin_ref}"), b.to_vec()),
            None => {
                return Err(plugin_err(format!(
                    "unknown bundled plugin `{plugin_ref}` (bundled: {}); a plugin file is a path ending in .wasm",
                    bundled::names().collect::<Vec<_>>().join(", ")
                )))
            }
        }
    };
    let name_owned = name.to_string();
    let result = tokio::task::spawn_blocking(move || {
        let compiled = runtime.compile(&name_owned, &bytes)?;
        runtime.load(&name_owned, &source, compiled, json, limits)
    })
    .await
    .context("plugin loading task failed")?;
    result.map_err(|e| match e {
        PluginError::Init { message, .. } => {
            let span = t.config.as_ref().map_or(t.plugin.span(), |c| c.span());
            loc.error(
                Some(span),
                format!("{key}.config"),
                format!("the plugin rejected its config: {message}"),
            )
            .into()
        }
        other => plugin_err(other.to_string()),
    })
}

/// A producer an input can name: (component, port).
type Port = (String, usize);

impl Plan {
    /// The loaded plugin of a transform.
    pub fn plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Resolve an input name (`gen`, `router`, `router.errors`) to a port.
    fn resolve_input(&self, input: &str) -> Result<Port, String> {
        let (name, port) = match input.split_once('.') {
            Some((n, p)) => (n, Some(p)),
            None => (input, None),
        };
        if name == DEAD_LETTERS && port.is_none() {
            return Ok((name.to_string(), 0));
        }
        if self.config.sources.iter().any(|s| s.name == name) {
            return match port {
                None => Ok((name.to_string(), 0)),
                Some(p) => Err(format!(
                    "source `{name}` has no output `{p}`; sources have one output"
                )),
            };
        }
        if let Some(plugin) = self.plugins.get(name) {
            let outputs = &plugin.info().outputs;
            return match port {
                None | Some("default") => Ok((name.to_string(), 0)),
                Some(p) => match outputs.iter().position(|o| o == p) {
                    Some(i) => Ok((name.to_string(), i + 1)),
                    None => Err(format!(
                        "transform `{name}` has no output `{p}` (its outputs: {})",
                        std::iter::once("default")
                            .chain(outputs.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                },
            };
        }
        let known: Vec<&str> = self
            .config
            .sources
            .iter()
            .map(|s| s.name.as_str())
            .chain(self.config.transforms.iter().map(|t| t.name.as_str()))
            .chain(std::iter::once(DEAD_LETTERS))
            .collect();
        Err(format!(
            "unknown input `{input}` (known: {})",
            known.join(", ")
        ))
    }

    /// Every consumer with its inputs resolved.
    fn edges(&self) -> Result<Vec<(String, Vec<Port>)>, ConfigError> {
        let loc = &self.config.locator;
        let mut out = Vec::new();
        let consumers = self
            .config
            .transforms
            .iter()
            .map(|t| ("transforms", &t.name, t.config.inputs.as_slice()))
            .chain(
                self.config
                    .sinks
                    .iter()
                    .map(|s| ("sinks", &s.name, s.config.inputs())),
            );
        for (section, name, inputs) in consumers {
            let key = format!("{section}.{name}.inputs");
            if inputs.is_empty() {
                return Err(loc.error(None, key, "needs at least one input"));
            }
            let mut ports = Vec::new();
            for input in inputs {
                let port = self
                    .resolve_input(input.get_ref())
                    .map_err(|m| loc.error(Some(input.span()), key.clone(), m))?;
                if section == "transforms" && port.0 == DEAD_LETTERS {
                    return Err(loc.error(
                        Some(input.span()),
                        key,
                        "only sinks may read `_dead_letters` (a transform there could feed its own failures back)",
                    ));
                }
                ports.push(port);
            }
            out.push((name.clone(), ports));
        }
        Ok(out)
    }

    fn check_graph(&self) -> Result<(), ConfigError> {
        let edges = self.edges()?;
        // Depth-first search over transform -> transform edges.
        let deps: BTreeMap<&str, Vec<&str>> = edges
            .iter()
            .filter(|(n, _)| self.plugins.contains_key(n))
            .map(|(n, ports)| {
                let ins = ports
                    .iter()
                    .map(|(p, _)| p.as_str())
                    .filter(|p| self.plugins.contains_key(*p))
                    .collect();
                (n.as_str(), ins)
            })
            .collect();
        fn visit<'a>(
            n: &'a str,
            deps: &BTreeMap<&'a str, Vec<&'a str>>,
            stack: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<&'a str>> {
            if let Some(i) = stack.iter().position(|s| *s == n) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(n);
                return Some(cycle);
            }
            if done.contains(n) {
                return None;
            }
            stack.push(n);
            for d in deps.get(n).into_iter().flatten() {
                if let Some(c) = visit(d, deps, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(n);
            None
        }
        let mut done = BTreeSet::new();
        for n in deps.keys() {
            if let Some(cycle) = visit(n, &deps, &mut Vec::new(), &mut done) {
                let t = self
                    .config
                    .transforms
                    .iter()
                    .find(|t| t.name == cycle[0])
                    .expect("transform");
                let span = t.config.inputs.first().map(|i| i.span());
                return Err(self.config.locator.error(
                    span,
                    format!("transforms.{}.inputs", cycle[0]),
                    format!("cycle: {}", cycle.join(" -> ")),
                ));
            }
        }
        // Outputs nobody reads are legal but usually a mistake.
        let read: BTreeSet<&Port> = edges.iter().flat_map(|(_, p)| p).collect();
        for s in &self.config.sources {
            if !read.contains(&(s.name.clone(), 0)) {
                tracing::warn!(source = %s.name, "no component reads this source; its events are discarded");
            }
        }
        Ok(())
    }

    /// Start every stage.
    pub fn start(mut self, metrics: Registry) -> anyhow::Result<Running> {
        let edges = self.edges()?;
        let (trigger, shutdown) = Shutdown::new();
        let buffer = self.config.batch.buffer;

        // One input channel per consumer; senders grouped by producer port.
        let mut receivers: BTreeMap<String, mpsc::Receiver<SharedBatch>> = BTreeMap::new();
        let mut senders: BTreeMap<Port, Vec<mpsc::Sender<SharedBatch>>> = BTreeMap::new();
        for (consumer, ports) in &edges {
            let (tx, rx) = mpsc::channel(buffer);
            receivers.insert(consumer.clone(), rx);
            for port in ports.iter().collect::<BTreeSet<_>>() {
                senders.entry(port.clone()).or_default().push(tx.clone());
            }
        }
        let dl_read = senders.contains_key(&(DEAD_LETTERS.to_string(), 0));
        let mut output_of = |name: &str, ports: usize, kind: Kind| {
            let list = (0..ports)
                .map(|p| senders.remove(&(name.to_string(), p)).unwrap_or_default())
                .collect();
            Output::new(list, metrics.component(name, kind))
        };

        let mut tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        // Dead letters: one channel from every component, fanned out by a
        // forwarding task to the sinks that read `_dead_letters`.
        let dl_tx = if dl_read {
            let dl_output = output_of(DEAD_LETTERS, 1, Kind::Source);
            let (tx, mut rx) = mpsc::channel::<SharedBatch>(buffer);
            tasks.push((
                DEAD_LETTERS.to_string(),
                tokio::spawn(async move {
                    while let Some(batch) = rx.recv().await {
                        let batch = Arc::try_unwrap(batch).unwrap_or_else(|b| (*b).clone());
                        if dl_output.send(0, batch).await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                }),
            ));
            Some(tx)
        } else {
            None
        };

        for t in &self.config.transforms {
            let plugin = self.plugins.remove(&t.name).expect("plugin loaded in plan");
            let ports = plugin.info().outputs.len() + 1;
            let dead = DeadLetters::new(&t.name, dl_tx.clone())
                .for_plugin(plugin.source(), &plugin.version());
            let stage = TransformStage {
                name: t.name.as_str().into(),
                output: output_of(&t.name, ports, Kind::Transform),
                input: receivers.remove(&t.name).expect("receiver per transform"),
                metrics: metrics.component(&t.name, Kind::Transform),
                dead,
                on_error: t.config.on_error,
                plugin,
            };
            let handle = tokio::task::spawn_blocking(move || {
                stage.run();
                Ok(())
            });
            tasks.push((t.name.clone(), handle));
        }

        for s in &self.config.sinks {
            let ctx = SinkContext {
                name: s.name.as_str().into(),
                input: receivers.remove(&s.name).expect("receiver per sink"),
                metrics: metrics.component(&s.name, Kind::Sink),
            };
            let handle = match s.config.clone() {
                SinkConfig::Stdout(c) => tokio::spawn(c.run(ctx)),
                SinkConfig::File(mut c) => {
                    c.path = self.config.resolve(&c.path);
                    tokio::spawn(c.run(ctx))
                }
            };
            tasks.push((s.name.clone(), handle));
        }

        for s in &self.config.sources {
            let ctx = SourceContext {
                name: s.name.as_str().into(),
                batch: self.config.batch.with(s.config.batch()),
                output: output_of(&s.name, 1, Kind::Source),
                dead: DeadLetters::new(&s.name, dl_tx.clone()),
                metrics: metrics.component(&s.name, Kind::Source),
                shutdown: shutdown.clone(),
            };
            let handle = match s.config.clone() {
                SourceConfig::Stdin(c) => tokio::spawn(c.run(ctx)),
                SourceConfig::File(mut c) => {
                    c.path = self.config.resolve(&c.path);
                    tokio::spawn(c.run(ctx))
                }
                SourceConfig::Generate(c) => tokio::spawn(c.run(ctx)),
            };
            tasks.push((s.name.clone(), handle));
        }
        drop(dl_tx);
        Ok(Running {
            tasks,
            trigger,
            metrics,
        })
    }
}

/// A started pipeline.
pub struct Running {
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    trigger: ShutdownTrigger,
    metrics: Registry,
}

impl Running {
    /// Ask the sources to stop; the rest drains behind them.
    pub fn shutdown(&self) {
        self.trigger.trigger();
    }

    /// A handle that can stop the pipeline from elsewhere.
    pub fn stop_handle(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    pub fn metrics(&self) -> &Registry {
        &self.metrics
    }

    /// Wait for every stage to finish. A failing stage stops the sources so
    /// that the others drain; the first error is returned.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Running { tasks, trigger, .. } = self;
        let count = tasks.len();
        let (tx, mut rx) = mpsc::channel(count.max(1));
        for (name, handle) in tasks {
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = match handle.await {
                    Ok(r) => r,
                    Err(e) => Err(anyhow::anyhow!("crashed: {e}")),
                };
                let _ = tx.send((name, result)).await;
            });
        }
        drop(tx);
        let mut first_error = None;
        while let Some((name, result)) = rx.recv().await {
            if let Err(e) = result {
                tracing::error!(component = %name, error = %format!("{e:#}"), "component failed; stopping the pipeline");
                trigger.trigger();
                first_error.get_or_insert(e.context(format!("component {name} failed")));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
