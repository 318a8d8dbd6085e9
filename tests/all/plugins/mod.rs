//! Each plugin's component, exercised through the real runtime. One module
//! per plugin built by `build.rs` (enforced by `assert_plugin_tested!`).

pub mod chaos;
pub mod contract_0_1_0;
pub mod dedup;
pub mod encrypt;
pub mod filter;
pub mod mask;
pub mod noop;
pub mod parse;
pub mod remap;
pub mod route;
pub mod sample;
pub mod tag;
pub mod throttle;

use std::path::Path;

use sluice::base::event::Batch;
use sluice::plugin::bindings::Verdicts;
use sluice::plugin::{LoadedPlugin, PluginLimits};

use crate::util::runtime;

/// Load a plugin component with a JSON config.
pub fn load(path: &str, config: &str) -> LoadedPlugin {
    runtime()
        .load_file(
            "test",
            Path::new(path),
            config.to_string(),
            PluginLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Run events through a plugin once.
pub fn process(plugin: &mut LoadedPlugin, events: &[&str]) -> Verdicts {
    let batch = Batch::from_events(events.iter().map(|e| e.as_bytes()));
    plugin
        .process(&batch.data, &batch.ends)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The replaced events of a verdict list, as text.
pub fn replacements(v: &Verdicts) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in &v.ends {
        out.push(String::from_utf8(v.data[start..end as usize].to_vec()).unwrap());
        start = end as usize;
    }
    out
}
