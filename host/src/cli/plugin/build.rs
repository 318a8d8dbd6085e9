//! `sluice plugin build`: run the project's toolchain with the flags that
//! work for sluice, then compile the component for this machine so the
//! first `sluice run` starts at once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};

use super::kits::{Lang, MANIFEST};
use crate::plugin::Runtime;

/// A project's `sluice-plugin.toml`.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub lang: Lang,
}

impl Manifest {
    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a project made by `sluice plugin new`?)",
                path.display(),
                dir.display()
            )
        })?;
        let manifest: Manifest =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        // The name makes the output's file name: `../../x` or `/tmp/x`
        // would write outside the project.
        super::check_name(&manifest.name).with_context(|| format!("{}: `name`", path.display()))?;
        Ok(manifest)
    }
}

/// Where sluice looks for language toolchains it did not find on `PATH`:
/// `$SLUICE_TOOLS_DIR`, else `$XDG_CACHE_HOME/sluice/tools`, else
/// `~/.cache/sluice/tools` (where `scripts/setup-plugin-tools` installs).
pub fn tools_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|d: &OsString| !d.is_empty());
    if let Some(dir) = var("SLUICE_TOOLS_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cache = var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("sluice").join("tools"))
}

/// A program: in the project (`node_modules/.bin`), in the tools folder,
/// or on `PATH`. A project's own `node_modules/.bin` comes first, as npm
/// scripts do: building a project runs its tools, so build only projects
/// you trust (the README says so).
fn find_tool(project: &Path, name: &str, in_tools: &[&str]) -> Option<PathBuf> {
    let local = project.join("node_modules").join(".bin").join(name);
    if local.is_file() {
        return Some(local);
    }
    if let Some(tools) = tools_dir() {
        for sub in in_tools {
            let p = tools.join(sub).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    on_path(name)
}

/// A program on `PATH`.
pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tools_hint() -> String {
    tools_dir().map_or_else(
        || "~/.cache/sluice/tools".to_string(),
        |d| d.display().to_string(),
    )
}

fn missing(tool: &str, lang: Lang) -> anyhow::Error {
    anyhow::anyhow!(
        "{tool} is not installed (looked in node_modules/.bin, {}, and PATH). Install the versions sluice is tested with, once:\n    {}",
        tools_hint(),
        super::setup::hint(lang)
    )
}

/// Run a toolchain's command, showing it; its failure says so.
pub(super) fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    eprintln!("  running {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); its messages are above");
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut parts: Vec<OsString> = vec![cmd.get_program().to_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_owned()));
    parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where a build records what it was built from: `{"inputs": SHA256,
/// "output": SHA256}`.
const STAMP: &str = ".sluice-build";

/// What a build's output depends on: every file of the project but what
/// builds write (`target/`, `build/`, `node_modules/`, `__pycache__/`,
/// `*.wasm`, hidden files) and the samples (`test/`, `pipeline.toml`), by
/// path and content, with the language, this
/// sluice's version and the toolchain's file (a new componentize-py or
/// componentize-js rebuilds).
pub(super) fn inputs_hash(dir: &Path, lang: Lang) -> anyhow::Result<String> {
    use sha2::Digest;
    fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                || ["target", "build", "node_modules", "__pycache__"].contains(&name.as_ref())
                // The sample test and the sample pipeline are not built in.
                || (dir == root && ["test", "pipeline.toml"].contains(&name.as_ref()))
                || name.ends_with(".wasm")
            {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(root, &entry.path(), files)?;
            } else if kind.is_file() {
                files.push(
                    entry
                        .path()
                        .strip_prefix(root)
                        .unwrap_or(&entry.path())
                        .to_path_buf(),
                );
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files).with_context(|| format!("listing {}", dir.display()))?;
    files.sort();
    let mut h = sha2::Sha256::new();
    h.update(format!("{} {}\0", lang.title(), env!("CARGO_PKG_VERSION")));
    let tool = match lang {
        Lang::Python => find_tool(dir, "componentize-py", &["py/bin"]),
        Lang::Js | Lang::Ts => find_tool(dir, "componentize-js", &["js/node_modules/.bin"]),
        Lang::Rust => None,
    };
    if let Some(meta) = tool
        .and_then(|t| std::fs::canonicalize(t).ok())
        .and_then(|t| std::fs::metadata(&t).ok().map(|m| (t, m)))
    {
        h.update(format!(
            "{:?} {:?} {}\0",
            meta.0,
            meta.1.modified().ok(),
            meta.1.len()
        ));
    }
    for f in &files {
        let bytes =
            std::fs::read(dir.join(f)).with_context(|| format!("reading {}", f.display()))?;
        h.update(f.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(crate::plugin::runtime::hex(&h.finalize()))
}

fn file_hash(path: &Path) -> Option<String> {
    use sha2::Digest;
    std::fs::read(path)
        .ok()
        .map(|b| crate::plugin::runtime::hex(&sha2::Sha256::digest(&b)))
}

/// Whether `out` was built from these very inputs (and is untouched since).
fn up_to_date(dir: &Path, out: &Path, inputs: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(STAMP)) else {
        return false;
    };
    let Ok(stamp) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    stamp["inputs"] == inputs && file_hash(out).is_some_and(|h| stamp["output"] == h)
}

/// Build the project in `dir`; returns the path of the component.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    build_with(dir, false)
}

/// [`build`]; with `force`, even when the sources did not change since the
/// last build. Unchanged sources give the same bytes: componentize-py and
/// componentize-js snapshot an interpreter that read the clock and random
/// numbers while starting, so two runs of them differ (their issues #247
/// and #321); sluice keeps the last output when nothing it was built from
/// changed, so the compile cache and a running pipeline see no change.
pub fn build_with(dir: &Path, force: bool) -> anyhow::Result<PathBuf> {
    // The toolchains run in the project: paths given to them must not be
    // relative to where sluice was started (`plugin build my-plugin`).
    let dir = &std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let manifest = Manifest::load(dir)?;
    let out = dir.join(format!("{}.wasm", manifest.name));
    let inputs = inputs_hash(dir, manifest.lang)?;
    if !force && up_to_date(dir, &out, &inputs) {
        eprintln!(
            "{} is up to date (nothing it is built from changed since the last build; --force builds anyway)",
            out.display()
        );
        precompile(&out)?;
        return Ok(out);
    }
    let started = Instant::now();
    eprintln!(
        "building {} ({}) in {}",
        manifest.name,
        manifest.lang.title(),
        dir.display()
    );
    match manifest.lang {
        Lang::Python => build_python(dir, &out)?,
        Lang::Js | Lang::Ts => build_js(dir, &out, manifest.lang)?,
        Lang::Rust => build_rust(dir, &out, &manifest.name)?,
    }
    ship_config_schema(dir, &out)?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("the toolchain wrote no {}", out.display()))?
        .len();
    eprintln!(
        "built {} ({:.1} MB) in {:.1} s",
        out.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    if let Some(output) = file_hash(&out) {
        let stamp = serde_json::json!({"inputs": inputs, "output": output});
        // Only a cache of the last build: losing it costs a rebuild.
        let _ = std::fs::write(dir.join(STAMP), format!("{stamp}\n"));
    }
    precompile(&out)?;
    Ok(out)
}

/// The project's `config.schema.json` (a JSON Schema of its `config`
/// table), if it has one, put in the component as the custom section
/// `sluice schema` and editors read, unless the toolchain already put one
/// there (Rust's `sluice_plugin::config_schema!`).
fn ship_config_schema(dir: &Path, out: &Path) -> anyhow::Result<()> {
    use crate::plugin::sections;
    let path = dir.join("config.schema.json");
    let Ok(text) = std::fs::read(&path) else {
        return Ok(());
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let mut wasm = std::fs::read(out).with_context(|| format!("reading {}", out.display()))?;
    if sections::custom_section(&wasm, sections::CONFIG_SCHEMA).is_some() {
        return Ok(());
    }
    sections::append_custom_section(&mut wasm, sections::CONFIG_SCHEMA, &text);
    std::fs::write(out, wasm).with_context(|| format!("writing {}", out.display()))
}

/// componentize-py over the project's `app` module.
fn build_python(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let tool = find_tool(dir, "componentize-py", &["py/bin"])
        .ok_or_else(|| missing("componentize-py", Lang::Python))?;
    let mut cmd = Command::new(tool);
    cmd.current_dir(dir)
        .args(["-d", "wit", "-w", "plugin", "componentize", "app", "-o"])
        .arg(out);
    run(&mut cmd, "componentize-py")?;
    Ok(())
}

/// JavaScript (TypeScript first compiled by tsc, with a line table for
/// errors) through componentize-js.
fn build_js(dir: &Path, out: &Path, lang: Lang) -> anyhow::Result<()> {
    let entry = if lang == Lang::Ts {
        let tsc = find_tool(dir, "tsc", &["js/node_modules/.bin"])
            .ok_or_else(|| missing("tsc (TypeScript)", Lang::Ts))?;
        let mut cmd = Command::new(tsc);
        cmd.current_dir(dir).args(["-p", ".", "--sourceMap"]);
        run(&mut cmd, "tsc")?;
        // tsc compiles plugin.ts; the helper it imports is already
        // JavaScript. It learns where each line of build/plugin.js
        // came from, so errors name plugin.ts's lines.
        let mut helper =
            std::fs::read_to_string(dir.join("sluice.js")).context("reading sluice.js")?;
        if let Some(table) = std::fs::read_to_string(dir.join("build/plugin.js.map"))
            .ok()
            .and_then(|m| source_lines(&m))
        {
            helper.push_str(&format!(
                "\nSOURCE_LINES = {};\n",
                serde_json::json!({"generated": "plugin.js", "source": table.0, "lines": table.1})
            ));
        }
        std::fs::write(dir.join("build").join("sluice.js"), helper)
            .context("writing sluice.js next to the compiled plugin")?;
        PathBuf::from("build/plugin.js")
    } else {
        PathBuf::from("plugin.js")
    };
    let tool = find_tool(dir, "componentize-js", &["js/node_modules/.bin"])
        .ok_or_else(|| missing("componentize-js", lang))?;
    let mut cmd = Command::new(tool);
    // sluice links no wasi:http: leave out the HTTP client and the
    // fetch-event entry point, which would import it.
    cmd.current_dir(dir)
        .args([
            "--wit",
            "wit",
            "-n",
            "plugin",
            "-d",
            "http",
            "-d",
            "fetch-event",
            "-o",
        ])
        .arg(out)
        .arg(entry);
    run(&mut cmd, "componentize-js")?;
    Ok(())
}

/// cargo for wasm32-wasip2 (the target checked first), the component
/// copied next to the manifest.
fn build_rust(dir: &Path, out: &Path, name: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        })
        .unwrap_or(true); // no rustup: let cargo say what is missing
    if !installed {
        bail!(
            "the wasm32-wasip2 target is not installed. Install it with:\n    {}",
            super::setup::hint(Lang::Rust)
        );
    }
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"]);
    run(&mut cmd, "cargo")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { dir.join(t) })
        .unwrap_or_else(|| dir.join("target"));
    let built = target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, out)
        .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
    Ok(())
}

/// From a source map (version 3), the original line (1-based; 0 when
/// unknown) of each line of the generated file, and the source's name:
/// the first segment of each generated line that names a source position.
pub fn source_lines(map: &str) -> Option<(String, Vec<u32>)> {
    let map: serde_json::Value = serde_json::from_str(map).ok()?;
    let source = map["sources"].get(0)?.as_str()?;
    let source = source.rsplit('/').next().unwrap_or(source).to_string();
    let mappings = map["mappings"].as_str()?;
    let digit = |c: u8| -> Option<i64> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as i64)
    };
    let mut lines = Vec::new();
    let mut src_line: i64 = 0;
    for line in mappings.split(';') {
        let mut first: Option<u32> = None;
        for segment in line.split(',').filter(|s| !s.is_empty()) {
            // Base64 VLQ: five bits a digit, continued while bit 5 is set;
            // the lowest bit of a value is its sign.
            let mut fields = Vec::with_capacity(5);
            let (mut value, mut shift) = (0i64, 0u32);
            for &b in segment.as_bytes() {
                let d = digit(b)?;
                value += (d & 31) << shift;
                if d & 32 != 0 {
                    shift += 5;
                    if shift > 60 {
                        return None;
                    }
                } else {
                    fields.push(if value & 1 == 1 {
                        -(value >> 1)
                    } else {
                        value >> 1
                    });
                    (value, shift) = (0, 0);
                }
            }
            if fields.len() >= 4 {
                src_line += fields[2];
                if first.is_none() {
                    first = u32::try_from(src_line + 1).ok();
                }
            }
        }
        lines.push(first.unwrap_or(0));
    }
    Some((source, lines))
}

/// Compile a component for this machine into the cache (what `sluice run`
/// would do on its first load), showing that it happens.
pub fn precompile(wasm: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let runtime = Runtime::new(Runtime::default_cache_dir())?;
    eprintln!(
        "compiling {} for this machine (a large component takes a while, once)...",
        wasm.display()
    );
    let started = Instant::now();
    runtime
        .compile("plugin", &bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "ready in {:.1} s: `sluice run` loads it from the cache",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// #36: `name = "../../outside/evil"` made `plugin build` write
    /// outside the project.
    #[test]
    fn source_maps_give_each_generated_line_its_source_line() {
        // Line 1 <- 1; line 2: no mapping; line 3 <- 4 (+3, `G`);
        // line 4 <- 2 (-2, `F`), its second segment ignored.
        let map = r#"{"version":3,"sources":["../plugin.ts"],"mappings":"AAAA;;AAGA;AAFA,EAAE"}"#;
        assert_eq!(
            source_lines(map),
            Some(("plugin.ts".to_string(), vec![1, 0, 4, 2]))
        );
        assert_eq!(source_lines(r#"{"sources":[],"mappings":""}"#), None);
        assert!(source_lines(r#"{"sources":["a"],"mappings":"A!"}"#).is_none());
    }

    #[test]
    fn a_manifest_name_cannot_leave_the_project() {
        let d = tempfile::tempdir().unwrap();
        for name in ["../../outside/evil", "/tmp/evil", "a/b", "", ".hidden"] {
            std::fs::write(
                d.path().join(MANIFEST),
                format!("name = {name:?}\nlang = \"rust\"\n"),
            )
            .unwrap();
            let e = Manifest::load(d.path()).unwrap_err();
            assert!(
                format!("{e:#}").contains("not a plugin name"),
                "{name}: {e:#}"
            );
        }
        std::fs::write(
            d.path().join(MANIFEST),
            "name = \"ok-name\"\nlang = \"rust\"\n",
        )
        .unwrap();
        assert_eq!(Manifest::load(d.path()).unwrap().name, "ok-name");
    }
}
