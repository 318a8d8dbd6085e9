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

/// Every source and sink kind a pipeline can name is in the table of
/// docs/architecture.md (its row for `source/` or `sink/`), so the map of
/// the code never lags a new kind.
#[test]
fn every_kind_is_in_the_architecture_table() {
    use sluice::base::settings::Tagged;
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let row = |part: &str| -> String {
        doc.lines()
            .find(|l| l.starts_with(&format!("| `{part}/` |")))
            .unwrap_or_else(|| panic!("docs/architecture.md has no row for `{part}/`"))
            .to_string()
    };
    for (part, kinds) in [
        ("source", sluice::source::SourceConfig::KINDS),
        ("sink", sluice::sink::SinkConfig::KINDS),
    ] {
        let row = row(part);
        let missing: Vec<_> = kinds
            .iter()
            .filter(|k| !row.contains(&format!("`{k}`")) && !row.contains(&format!("`{k}/`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/architecture.md's `{part}/` row does not list the kinds {missing:?}"
        );
    }
}
