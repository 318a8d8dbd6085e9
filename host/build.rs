//! Builds the bundled plugins (`plugins/filter`, `route`, `mask`) for
//! `wasm32-wasip2` and embeds them in the `sluice` binary, so
//! `plugin = "filter"` works without a separate build step.
//!
//! The nested cargo uses its own target folder (`target/plugins`) so it does
//! not wait on the lock of the outer build.

use std::path::{Path, PathBuf};
use std::process::Command;

const BUNDLED: [&str; 3] = ["filter", "route", "mask"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    for dir in [
        "plugins/sdk",
        "plugins/filter",
        "plugins/route",
        "plugins/mask",
        "wit",
    ] {
        watch(&root.join(dir));
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );

    let target_dir = root.join("target").join("plugins");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in BUNDLED {
        cmd.args(["-p", &format!("sluice-{p}")]);
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
    let status = cmd
        .status()
        .expect("cannot run cargo to build the bundled plugins");
    if !status.success() {
        panic!(
            "building the bundled plugins for wasm32-wasip2 failed (see above). \
             If the target is missing: `rustup target add wasm32-wasip2`."
        );
    }

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

fn watch(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                watch(&p);
            } else {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}
