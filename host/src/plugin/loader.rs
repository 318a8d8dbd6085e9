//! Finding, compiling and `init`-ing the plugin of each transform of a
//! pipeline: the one loader that `plan`, reloads and plugin swaps use.
//!
//! A `plugin = "..."` names a bundled plugin or a `.wasm` file relative to
//! the pipeline file; compilation happens on a blocking thread (and comes
//! from the on-disk cache when the bytes were seen before); an `init` that
//! refuses its config is reported at the `config` key.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::{bundled, LoadedPlugin, PluginError, PluginLimits, Runtime};
use crate::config::{OnError, PipelineConfig, TransformConfig};

/// Whether a transform set up as `a` runs the same plugin as one set up as
/// `b`: the same plugin, config table and limits, compared by value (where
/// they stand in the file does not matter). A reload loads the plugin of a
/// transform again only when this changes; its inputs are rewired apart.
pub fn same_plugin(a: &TransformConfig, b: &TransformConfig) -> bool {
    a.plugin == b.plugin
        && a.config == b.config
        && a.memory_mib == b.memory_mib
        && a.time_budget == b.time_budget
        && a.stack_kib == b.stack_kib
        && (a.instances, a.tables, a.memories) == (b.instances, b.tables, b.memories)
        && a.allow_unmasked == b.allow_unmasked
}

/// Load the plugins of every transform not in `keep` (whose running
/// plugins stay).
pub async fn load_plugins(
    config: &PipelineConfig,
    runtime: &Arc<Runtime>,
    keep: &BTreeMap<String, TransformConfig>,
) -> anyhow::Result<BTreeMap<String, LoadedPlugin>> {
    let mut plugins = BTreeMap::new();
    for t in &config.transforms {
        if keep.get(&t.name).is_some_and(|k| same_plugin(k, &t.config)) {
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
pub fn is_plugin_file(plugin: &str) -> bool {
    plugin.ends_with(".wasm") || plugin.contains('/') || plugin.contains('\\')
}

/// Compile and `init` one transform's plugin, off the async threads.
pub async fn load_plugin(
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
        instances: t.instances,
        tables: t.tables,
        memories: t.memories,
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
