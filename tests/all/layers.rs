//! The layering rules as checks on the manifests: what
//! docs/architecture.md says the host never does, it cannot do.

use std::collections::BTreeSet;

use crate::util::root;

fn manifest(path: &str) -> toml::Table {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    text.parse().unwrap()
}

/// The names of a manifest's `[dependencies]` (not dev or build ones).
fn dependencies(path: &str) -> BTreeSet<String> {
    manifest(path)
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// The workspace's crates that are plugins (built to wasm and run in the
/// sandbox): those whose path is under `plugins/` or `tests/plugins/`.
fn plugin_crates() -> BTreeSet<String> {
    let root = manifest("Cargo.toml");
    let deps = root["workspace"]["dependencies"].as_table().unwrap();
    let plugins: BTreeSet<String> = deps
        .iter()
        .filter(|(_, v)| {
            v.get("path")
                .and_then(toml::Value::as_str)
                .is_some_and(|p| p.starts_with("plugins/") || p.starts_with("tests/plugins/"))
        })
        .map(|(k, _)| k.clone())
        .collect();
    assert!(plugins.contains("sluice-plugin") && plugins.contains("sluice-encrypt"));
    plugins
}

/// Plugin code never runs in the host on event data: the host's library
/// links no plugin crate, not even the SDK (what both sides need is in
/// `sluice-common`). Only its benches may, to compare native with wasm.
#[test]
fn the_host_links_no_plugin_crate() {
    let host = dependencies("host/Cargo.toml");
    let linked: Vec<_> = plugin_crates().intersection(&host).cloned().collect();
    assert!(
        linked.is_empty(),
        "host/Cargo.toml [dependencies] lists plugin crates {linked:?}: move what the host needs of them into common/ (sluice-common)"
    );
}

/// The shared crate stays small: it runs on both sides, so it depends on
/// nothing but serde (and serde_json).
#[test]
fn the_shared_crate_depends_on_serde_only() {
    let common = dependencies("common/Cargo.toml");
    let want: BTreeSet<String> = ["serde", "serde_json"].map(String::from).into();
    assert_eq!(common, want);
}
