//! What the build scripts of `sluice` (the bundled plugins it embeds) and
//! of its tests (every plugin) share: a nested cargo that builds plugin
//! packages for `wasm32-wasip2`, and change tracking of their sources.

use std::path::Path;
use std::process::Command;

/// Build plugin packages for `wasm32-wasip2` (profile `plugin`) with a
/// nested cargo into `target_dir`, a folder of its own so it does not wait
/// on the outer build's lock. `tag` sets `SLUICE_TAG` for the test-only tag
/// plugin; the outer environment's value never leaks in. Panics with what
/// to do when the build fails.
pub fn build_plugins(root: &Path, target_dir: &Path, packages: &[&str], tag: Option<&str>) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags are for the host, not for wasm.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    match tag {
        Some(t) => cmd.env("SLUICE_TAG", t),
        None => cmd.env_remove("SLUICE_TAG"),
    };
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building {packages:?} for wasm32-wasip2 failed (see above); \
         if the target is missing: rustup target add wasm32-wasip2"
    );
}

/// Rebuild when anything under `dir` changes (`target` folders aside).
pub fn watch(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                watch(&p);
            } else {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
