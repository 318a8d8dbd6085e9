//! The running pipeline: build the graph, start its stages, shut it down.
//!
//! Every transform and sink owns one bounded input channel; every producer
//! (source, transform port, `_dead_letters`) holds a sender to each of its
//! consumers. Stopping the sources therefore drains the whole graph in
//! order: each stage ends when all of its senders are gone, after passing
//! on what it had.

pub mod graph;
pub mod reload;
pub mod running;
pub mod shadow;
pub mod transform;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::base::metrics::Registry;
use crate::config::PipelineConfig;
use crate::plugin::loader::load_plugins;
use crate::plugin::{LoadedPlugin, Runtime};
pub use running::Running;

/// A checked pipeline with its plugins loaded, ready to start.
pub struct Plan {
    config: PipelineConfig,
    plugins: BTreeMap<String, LoadedPlugin>,
    runtime: Arc<Runtime>,
}

/// Load every plugin, check the graph (every input exists, no cycle) and
/// build every source and sink (what their `build` checks), so that what
/// `sluice validate` accepts can start.
pub async fn plan(config: PipelineConfig, runtime: Arc<Runtime>) -> anyhow::Result<Plan> {
    let plugins = load_plugins(&config, &runtime, &BTreeMap::new()).await?;
    graph::check(&config, &outputs_of(&plugins, &BTreeMap::new()))?;
    check_components(&config)?;
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

/// Build every source and sink of `config` without starting them.
pub(crate) fn check_components(config: &PipelineConfig) -> anyhow::Result<()> {
    for s in &config.sources {
        config.build_source(s)?;
    }
    for s in &config.sinks {
        config.build_sink(s)?;
    }
    Ok(())
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
