//! `sluice plugin setup [--lang L]`: install the toolchain versions the
//! kits are tested with into the tools folder, once.
//!
//! Idempotent: a language whose pinned tools are there and start is left
//! as it is; anything else is installed again from scratch into its own
//! folder (`py/`, a virtualenv; `js/`, an npm prefix), never elsewhere.
//! `scripts/setup-plugin-tools` installs the same pins (a test holds them
//! together).

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use super::build::{on_path, run, tools_dir};
use super::kits::Lang;

/// componentize-py, from PyPI.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// @bytecodealliance/componentize-js, jco (its `preview2-shim` comes with
/// it) and typescript, from npm.
pub const COMPONENTIZE_JS: &str = "0.23.0";
pub const JCO: &str = "1.35.0";
pub const TYPESCRIPT: &str = "5.9.3";

/// The command that installs what `lang` needs: what every missing-tool
/// hint of `plugin build` says.
pub fn hint(lang: Lang) -> String {
    let lang = match lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
        Lang::Ts => "ts",
    };
    format!("sluice plugin setup --lang {lang}")
}

/// The first line a program prints with `args`, if it starts and succeeds.
fn output_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A JSON file's `version`.
fn package_version(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

fn python(tools: &Path) -> anyhow::Result<()> {
    let py = tools.join("py");
    let tool = py.join("bin").join("componentize-py");
    if output_of(&tool, &["--version"]).is_some_and(|v| v.ends_with(COMPONENTIZE_PY)) {
        eprintln!(
            "Python: componentize-py {COMPONENTIZE_PY} is ready in {}",
            py.display()
        );
        return Ok(());
    }
    let python3 = on_path("python3")
        .context("python3 is not installed (Debian: apt-get install python3 python3-venv)")?;
    eprintln!(
        "Python: installing componentize-py {COMPONENTIZE_PY} into {}",
        py.display()
    );
    let _ = std::fs::remove_dir_all(&py);
    run(
        Command::new(&python3).args(["-m", "venv"]).arg(&py),
        "python3 -m venv (Debian: apt-get install python3-venv if it fails)",
    )?;
    run(
        Command::new(py.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("componentize-py=={COMPONENTIZE_PY}"),
        ]),
        "pip install componentize-py",
    )?;
    let got = output_of(&tool, &["--version"]).context("componentize-py does not start")?;
    eprintln!("Python: ready ({got})");
    Ok(())
}

fn js(tools: &Path) -> anyhow::Result<()> {
    let prefix = tools.join("js");
    let modules = prefix.join("node_modules");
    let pinned = [
        ("@bytecodealliance/componentize-js", COMPONENTIZE_JS),
        ("@bytecodealliance/jco", JCO),
        ("typescript", TYPESCRIPT),
    ];
    let whole = pinned.iter().all(|(p, v)| {
        package_version(&modules.join(p).join("package.json")).as_deref() == Some(*v)
    }) && output_of(
        &modules.join(".bin").join("componentize-js"),
        &["--version"],
    )
    .is_some()
        && modules.join(".bin").join("tsc").is_file();
    if whole {
        eprintln!(
            "JavaScript and TypeScript: componentize-js {COMPONENTIZE_JS}, jco {JCO} and typescript {TYPESCRIPT} are ready in {}",
            prefix.display()
        );
        return Ok(());
    }
    let npm =
        on_path("npm").context("npm is not installed (Debian: apt-get install nodejs npm)")?;
    eprintln!(
        "JavaScript and TypeScript: installing componentize-js {COMPONENTIZE_JS}, jco {JCO} and typescript {TYPESCRIPT} into {}",
        prefix.display()
    );
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    let mut cmd = Command::new(npm);
    cmd.args(["install", "--prefix"]).arg(&prefix).args([
        "--no-audit",
        "--no-fund",
        "--loglevel",
        "error",
    ]);
    for (p, v) in pinned {
        cmd.arg(format!("{p}@{v}"));
    }
    run(&mut cmd, "npm install")?;
    output_of(
        &modules.join(".bin").join("componentize-js"),
        &["--version"],
    )
    .context("componentize-js does not start after npm install")?;
    eprintln!("JavaScript and TypeScript: ready");
    Ok(())
}

fn rust() -> anyhow::Result<()> {
    let rustup = on_path("rustup")
        .context("rustup is not installed: see https://rustup.rs, then run this again")?;
    run(
        Command::new(rustup).args(["target", "add", "wasm32-wasip2"]),
        "rustup target add wasm32-wasip2",
    )?;
    eprintln!("Rust: ready (wasm32-wasip2)");
    Ok(())
}

/// Install what `lang` needs (every language without one).
pub fn setup(lang: Option<Lang>) -> anyhow::Result<()> {
    let tools = tools_dir().context("no tools folder: set SLUICE_TOOLS_DIR or HOME")?;
    std::fs::create_dir_all(&tools).with_context(|| format!("creating {}", tools.display()))?;
    match lang {
        Some(Lang::Python) => python(&tools),
        Some(Lang::Js | Lang::Ts) => js(&tools),
        Some(Lang::Rust) => rust(),
        None => {
            python(&tools)?;
            js(&tools)?;
            rust()
        }
    }
}
