//! The layering rules as checks on the manifests: what
//! docs/architecture.md says the host never does, it cannot do.

use std::collections::BTreeSet;

use crate::util::{root, tree};

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

/// The crate graph drawn in docs/architecture.md ("`crate -> deps`" lines)
/// is the manifests' own: each host-side crate's sluice dependencies,
/// exactly. The base layer below the config and the components is the
/// crate `sluice-core`, which cannot depend on `sluice` (cargo refuses
/// cycles): its rule is the compiler's.
#[test]
fn the_crate_graph_in_the_docs_is_the_manifests() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let drawn: Vec<(String, BTreeSet<String>)> = doc
        .lines()
        .filter_map(|l| l.split_once(" -> "))
        .filter(|(c, _)| c.starts_with("sluice"))
        .map(|(c, deps)| {
            let deps = deps
                .split(", ")
                .filter(|d| *d != "(none)")
                .map(String::from)
                .collect();
            (c.to_string(), deps)
        })
        .collect();
    let crates = [
        ("sluice", "host/Cargo.toml"),
        ("sluice-components", "components/Cargo.toml"),
        ("sluice-core", "core/Cargo.toml"),
        ("sluice-timeline", "timeline/Cargo.toml"),
        ("sluice-buffer", "buffer/Cargo.toml"),
        ("sluice-common", "common/Cargo.toml"),
    ];
    assert_eq!(
        drawn.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        crates.map(|(c, _)| c),
        "docs/architecture.md draws these crates"
    );
    for ((name, deps), (_, path)) in drawn.iter().zip(crates) {
        let real: BTreeSet<String> = dependencies(path)
            .into_iter()
            .filter(|d| d.starts_with("sluice"))
            .collect();
        assert_eq!(&real, deps, "{name}'s sluice dependencies ({path})");
    }
    assert!(!dependencies("core/Cargo.toml").contains("sluice"));
    assert!(!dependencies("components/Cargo.toml").contains("sluice"));
}

/// The crates split from `sluice` log under the targets their modules
/// had in the `sluice` crate (`sluice::delivery::buffer`, not `sluice_core::...`): every log
/// macro there names its module's `LOG_TARGET`, so log lines and
/// `RUST_LOG=sluice::...` filters did not change with the split.
#[test]
fn the_split_crates_log_under_sluice_targets() {
    let mut bad = Vec::new();
    for (src, krate) in [
        ("components/src", ""),
        ("core/src", ""),
        ("timeline/src", "timeline::"),
    ] {
        let src = root().join(src);
        for file in tree(&src).into_iter().filter(|f| f.ends_with(".rs")) {
            let text = std::fs::read_to_string(src.join(&file)).unwrap();
            let module = file.trim_end_matches(".rs").trim_end_matches("/mod");
            let want = format!(
                "const LOG_TARGET: &str = \"sluice::{krate}{}\";",
                module.replace('/', "::")
            );
            let levels = ["error", "warn", "info", "debug", "trace"];
            let count = |how: &str| -> usize {
                levels
                    .iter()
                    .map(|level| text.matches(&format!("tracing::{level}!({how}")).count())
                    .sum()
            };
            let calls = count("");
            if calls != count("target: LOG_TARGET") || (calls > 0 && !text.contains(&want)) {
                bad.push(file);
            }
        }
    }
    assert!(
        bad.is_empty(),
        "log macros without `target: LOG_TARGET` (or the wrong target) in {bad:?}"
    );
}
