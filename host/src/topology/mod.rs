//! The running pipeline: build the graph, start its stages, shut it down.
//!
//! Every transform and sink owns one bounded input channel; every producer
//! (source, transform port, `_dead_letters`) holds a sender to each of its
//! consumers. Stopping the sources therefore drains the whole graph in
//! order: each stage ends when all of its senders are gone, after passing
//! on what it had.

pub mod output;
pub mod transform;

pub mod graph;
pub mod reload;
pub mod running;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{OnError, PipelineConfig, TransformConfig};
use crate::plugin::{bundled, LoadedPlugin, PluginError, PluginLimits, Runtime};
pub use running::Running;

/// A checked pipeline with its plugins loaded, ready to start.
pub struct Plan {
    config: PipelineConfig,
    plugins: BTreeMap<String, LoadedPlugin>,
    runtime: Arc<Runtime>,
}

/// Load every plugin and check the graph: every input exists, no cycle.
pub async fn plan(config: PipelineConfig, runtime: Arc<Runtime>) -> anyhow::Result<Plan> {
    let plugins = load_plugins(&config, &runtime, &BTreeMap::new()).await?;
    graph::check(&config, &outputs_of(&plugins, &BTreeMap::new()))?;
    Ok(Plan {
        config,
        plugins,
        runtime,
    })
}

/// The output names of every transform: from freshly loaded plugins, else
/// from the running ones.
pub(crate) fn outputs_of(
    loaded: &BTreeMap<String, LoadedPlugin>,
    running: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = running.clone();
    for (name, p) in loaded {
        out.insert(name.clone(), p.info().outputs.clone());
    }
    out
}

/// What identifies a transform's plugin setup: a reload rebuilds the
/// transform when this changes.
pub(crate) fn plugin_key(t: &TransformConfig) -> String {
    format!(
        "{}|{}|{}|{:?}|{}",
        t.plugin.get_ref(),
        t.config
            .as_ref()
            .map(|c| serde_json::to_string(c.get_ref()).unwrap_or_default())
            .unwrap_or_default(),
        t.memory_mib,
        t.time_budget,
        t.allow_unmasked
    )
}

/// Load the plugins of every transform not in `keep` (whose running
/// plugins stay).
pub(crate) async fn load_plugins(
    config: &PipelineConfig,
    runtime: &Arc<Runtime>,
    keep: &BTreeMap<String, String>,
) -> anyhow::Result<BTreeMap<String, LoadedPlugin>> {
    let mut plugins = BTreeMap::new();
    for t in &config.transforms {
        if keep.get(&t.name) == Some(&plugin_key(&t.config)) {
            continue;
        }
        let plugin = load_plugin(config, &t.name, runtime.clone()).await?;
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
    Ok(plugins)
}

/// Whether a `plugin = "..."` names a file (a path, or ending in `.wasm`)
/// rather than a bundled plugin.
pub(crate) fn is_plugin_file(plugin: &str) -> bool {
    plugin.ends_with(".wasm") || plugin.contains('/') || plugin.contains('\\')
}

/// Compile and `init` one transform's plugin, off the async threads.
pub(crate) async fn load_plugin(
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
        stack: (t.stack_kib as usize) << 10,
    };
    let is_path = is_plugin_file(&plugin_ref);
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
        let compiled = runtime.compile_with_stack(&name_owned, &bytes, limits.stack)?;
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

impl Plan {
    /// The loaded plugin of a transform.
    pub fn plugin(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.get(name)
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Start every stage.
    pub fn start(self, metrics: Registry) -> anyhow::Result<Running> {
        Running::start(self.config, self.plugins, self.runtime, metrics)
    }
}

use crate::metrics::Registry;
