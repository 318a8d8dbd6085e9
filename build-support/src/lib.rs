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

/// Rebuild when `path` changes. Written relative to the package (cargo
/// reads a relative path from the package's root): an absolute one names
/// the checkout that last ran the script, so a build of another checkout
/// of the same sources into the same target folder (a CI clone, a
/// worktree) would find that one unchanged and keep its outputs, such as
/// the plugins it embedded.
pub fn rerun_if_changed(path: &Path) {
    let relative = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .and_then(|manifest| relative_to(path, &manifest));
    let shown = relative.as_deref().unwrap_or(path);
    println!("cargo:rerun-if-changed={}", shown.display());
}

/// `path` from `base` (`../plugins/x` from `host`), when both are absolute
/// and share a first component.
fn relative_to(path: &Path, base: &Path) -> Option<std::path::PathBuf> {
    if !path.is_absolute() || !base.is_absolute() {
        return None;
    }
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return None;
    }
    let mut out = std::path::PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    Some(out)
}

/// Rebuild when anything under `dir` changes (`target` folders aside).
pub fn watch(dir: &Path) {
    rerun_if_changed(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "target") {
                    continue;
                }
                watch(&p);
            } else {
                rerun_if_changed(&p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::{Path, PathBuf};

    #[test]
    fn paths_are_written_from_the_package() {
        let host = Path::new("/w/main/host");
        let cases = [
            (
                "/w/main/plugins/parse/src/lib.rs",
                Some("../plugins/parse/src/lib.rs"),
            ),
            ("/w/main/host/build.rs", Some("build.rs")),
            ("/w/main/host", Some(".")),
            ("/w/main/.git/HEAD", Some("../.git/HEAD")),
            ("/elsewhere/x", None),
            ("relative/x", None),
        ];
        for (path, want) in cases {
            assert_eq!(
                relative_to(Path::new(path), host),
                want.map(PathBuf::from),
                "{path}"
            );
        }
    }
}
