//! Builds every plugin (`plugins/*` but the SDK, and the test-only ones in
//! `tests/plugins/*`) for `wasm32-wasip2`, and generates for the tests:
//!
//! - a constant per plugin with the path of its component (`FILTER`, ...);
//! - `for_each_plugin!(m)`, which calls `m!(name)` for each plugin; the test
//!   crate uses it to refer to a test module per plugin, so adding a plugin
//!   without a test fails the build.
//!
//! In the manner of wasmtime's `crates/test-programs/artifacts/build.rs`.

use std::path::{Path, PathBuf};

use sluice_build_support::{build_plugins, rerun_if_changed, watch};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let mut plugins: Vec<(String, String, PathBuf)> = Vec::new(); // (name, package, dir)
    for base in [root.join("plugins"), manifest.join("plugins")] {
        rerun_if_changed(&base);
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("Cargo.toml").exists())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
            if name == "sdk" {
                continue;
            }
            let package = package_name(&dir.join("Cargo.toml"));
            plugins.push((name, package, dir));
        }
    }
    for dir in [
        root.join("plugins"),
        root.join("common"),
        root.join("wit"),
        manifest.join("plugins"),
    ] {
        watch(&dir);
    }

    let target_dir = root.join("target").join("plugins");
    let packages: Vec<&str> = plugins.iter().map(|(_, p, _)| p.as_str()).collect();
    build_plugins(&root, &target_dir, &packages, None);

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut code = String::new();
    let mut each = String::from(
        "#[allow(unused_macros)]\nmacro_rules! for_each_plugin {\n    ($m:ident) => {\n",
    );
    for (name, package, _) in &plugins {
        let file = package.replace('-', "_");
        let wasm = target_dir
            .join("wasm32-wasip2")
            .join("plugin")
            .join(format!("{file}.wasm"));
        let copy = out.join(format!("{name}.wasm"));
        std::fs::copy(&wasm, &copy).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
        code.push_str(&format!(
            "/// The `{name}` plugin's component.\n#[allow(dead_code)]\npub const {}: &str = {:?};\n",
            name.to_uppercase(),
            copy.display().to_string()
        ));
        each.push_str(&format!("        $m!({name});\n"));
    }
    each.push_str("    };\n}\n");

    // The tag plugin once more, as version `b`, in a target folder of its
    // own so the two builds do not rebuild each other.
    let target_b = root.join("target").join("plugins-tag-b");
    build_plugins(&root, &target_b, &["sluice-test-tag"], Some("b"));
    let copy = out.join("tag_b.wasm");
    std::fs::copy(
        target_b
            .join("wasm32-wasip2")
            .join("plugin")
            .join("sluice_test_tag.wasm"),
        &copy,
    )
    .unwrap();
    code.push_str(&format!("/// The `tag` plugin built as version `b`.\n#[allow(dead_code)]\npub const TAG_B: &str = {:?};\n", copy.display().to_string()));
    code.push_str(&each);
    std::fs::write(out.join("plugins.rs"), code).unwrap();
}

fn package_name(manifest: &Path) -> String {
    let text = std::fs::read_to_string(manifest).unwrap();
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no package name in {}", manifest.display()))
}
