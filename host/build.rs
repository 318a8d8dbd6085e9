//! Builds the bundled plugins (`plugins/filter`, `route`, `mask`, `remap`,
//! `encrypt`, `parse`, `throttle`, `dedup`) for
//! `wasm32-wasip2` and embeds them in the `sluice` binary, so
//! `plugin = "filter"` works without a separate build step.
//!
//! The nested cargo uses its own target folder (`target/plugins`) so it does
//! not wait on the lock of the outer build.

use std::path::PathBuf;

use sluice_build_support::{build_plugins, rerun_if_changed, watch};

const BUNDLED: [&str; 8] = [
    "filter", "route", "mask", "remap", "encrypt", "parse", "throttle", "dedup",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    version(&root);
    for dir in [
        "plugins/sdk",
        "common",
        "plugins/filter",
        "plugins/route",
        "plugins/mask",
        "plugins/remap",
        "plugins/encrypt",
        "plugins/parse",
        "plugins/throttle",
        "plugins/dedup",
        "wit",
    ] {
        watch(&root.join(dir));
    }
    rerun_if_changed(&root.join("Cargo.toml"));
    rerun_if_changed(&root.join("Cargo.lock"));

    let target_dir = root.join("target").join("plugins");
    let packages = BUNDLED.map(|p| format!("sluice-{p}"));
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    build_plugins(&root, &target_dir, &packages, None);

    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut code = String::from("/// The bundled plugins: (name, component bytes).\npub const BUNDLED: &[(&str, &[u8])] = &[\n");
    for p in BUNDLED {
        let wasm = target_dir
            .join("wasm32-wasip2")
            .join("plugin")
            .join(format!("sluice_{p}.wasm"));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        // Copy, so a later plugin rebuild cannot change bytes under rustc.
        let copy = out.join(format!("{p}.wasm"));
        std::fs::copy(&wasm, &copy).unwrap();
        code.push_str(&format!(
            "    (\"{p}\", include_bytes!({:?})),\n",
            copy.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("bundled.rs"), code).unwrap();
}

/// `SLUICE_GIT_COMMIT` and `SLUICE_WASMTIME_VERSION` for `sluice --version`.
fn version(root: &std::path::Path) {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=9", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SLUICE_GIT_COMMIT={commit}");
    // Rebuilt when HEAD moves (a commit, a checkout), not on every edit.
    let git = root.join(".git");
    let mut watched = vec![git.join("HEAD"), git.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            watched.push(git.join(r));
        }
    }
    for p in watched.iter().filter(|p| p.exists()) {
        rerun_if_changed(p);
    }
    // The wasmtime this build links, from the lock file.
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SLUICE_WASMTIME_VERSION={wasmtime}");
}
