//! `sluice plugin new | build | test`: write, build and try plugins in
//! Rust, Python, JavaScript and TypeScript, anywhere on disk.
//!
//! - `kits`: the WIT, helpers, SDK sources and templates inside the binary.
//! - `build`: the toolchain of each language, and compiling ahead.
//! - `test`: a component over JSON lines, verdict by verdict.

pub mod build;
pub mod dev;
pub mod kits;
pub mod setup;
pub mod test;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use kits::Lang;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin project in NAME/ (or --dir): the logic, the WIT,
    /// the language's helper, a sample test and a pipeline that runs it.
    New {
        /// The plugin's name (letters, digits, `-` and `_`).
        name: String,
        /// Its language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the project in DIR (default: .) into NAME.wasm with its
    /// language's toolchain, then compile it for this machine.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Build even if nothing the component is built from changed since
        /// the last build (which otherwise keeps its bytes).
        #[arg(long)]
        force: bool,
    },
    /// Run a plugin over JSON lines on stdin and print one verdict per line.
    Test {
        /// A component (.wasm), or a project folder (its NAME.wasm).
        plugin: PathBuf,
        /// The plugin's config table, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Events per call, as a pipeline batches them.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Compare the verdicts with this file (as `plugin test` prints
        /// them); exit 1 at the first difference.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// With `--expect FILE`: write the verdicts into FILE instead of
        /// comparing (after a change you meant), showing what changed.
        #[arg(long, requires = "expect")]
        update: bool,
    },
    /// Compile a component for this machine into the cache, so that the
    /// first `sluice run` that loads it starts at once.
    Compile { plugin: PathBuf },
    /// The edit loop: build on every change of the project, run its
    /// sample test, and keep a pipeline running that swaps each new build
    /// in.
    Dev {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A pipeline to run beside (it reloads the plugin on each build).
        #[arg(long)]
        pipeline: Option<PathBuf>,
    },
    /// Install the toolchain versions sluice is tested with (componentize-py,
    /// componentize-js and typescript, the wasm32-wasip2 target) into the
    /// tools folder; what is there and right is left alone.
    Setup {
        /// One language (default: all of them).
        #[arg(long, value_enum)]
        lang: Option<Lang>,
    },
    /// The cache of compiled components: list it, or prune it to a size.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Try a new version of a transform's plugin on live traffic before it
    /// takes over: `sluice plugin shadow --transform T NEW.wasm` runs it
    /// beside the live one on the same batches and compares their verdicts
    /// event by event (only the live output is used); then `status`,
    /// `promote` or `stop`. Through the running pipeline's admin port.
    Shadow(crate::cli::shadow::ShadowArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheAction {
    /// Each compiled component, most recently used first, and the total.
    List,
    /// Remove the least recently used until the cache holds at most
    /// `--max-size` (default: SLUICE_CACHE_MAX_SIZE, else 1GiB; `0`
    /// empties it).
    Prune {
        #[arg(long)]
        max_size: Option<String>,
    },
}

pub async fn main(command: PluginCommand) -> anyhow::Result<()> {
    if let PluginCommand::Shadow(args) = command {
        return crate::cli::shadow::main(args).await;
    }
    tokio::task::spawn_blocking(move || run(command)).await?
}

fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            new(&name, lang, &dir)
        }
        PluginCommand::Build { dir, force } => build::build_with(&dir, force).map(|_| ()),
        PluginCommand::Compile { plugin } => build::precompile(&component(&plugin)?),
        PluginCommand::Cache { action } => cache(action),
        PluginCommand::Shadow(_) => unreachable!("run by `main`"),
        PluginCommand::Setup { lang } => setup::setup(lang),
        PluginCommand::Dev { dir, pipeline } => dev::dev(&dir, pipeline),
        PluginCommand::Test {
            plugin,
            config,
            batch,
            expect,
            update,
        } => {
            let wasm = component(&plugin)?;
            let stdin = std::io::stdin();
            let mut printed = Vec::new();
            let tally = test::run(&wasm, &config, batch.max(1), stdin.lock(), &mut printed)?;
            let text = String::from_utf8(printed).expect("JSON is UTF-8");
            print!("{text}");
            eprintln!(
                "{} events: {} kept, {} dropped, {} replaced, {} routed, {} failed",
                tally.kept + tally.dropped + tally.replaced + tally.failed,
                tally.kept,
                tally.dropped,
                tally.replaced,
                tally.routed,
                tally.failed
            );
            if let (Some(path), true) = (&expect, update) {
                let before = std::fs::read_to_string(path).unwrap_or_default();
                match test::compare(&text, &before) {
                    Ok(()) => eprintln!("{} is up to date", path.display()),
                    Err(diff) => {
                        std::fs::write(path, &text)
                            .with_context(|| format!("writing {}", path.display()))?;
                        eprintln!("updated {}: {diff}", path.display());
                    }
                }
            } else if let Some(path) = expect {
                let want = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                if let Err(diff) = test::compare(&text, &want) {
                    bail!("the verdicts differ from {}: {diff}", path.display());
                }
                eprintln!("the verdicts match {}", path.display());
            } else if tally.failed > 0 {
                bail!("{} event(s) failed", tally.failed);
            }
            Ok(())
        }
    }
}

fn cache(action: CacheAction) -> anyhow::Result<()> {
    use crate::plugin::cache;
    let dir = crate::plugin::Runtime::default_cache_dir()
        .context("no cache folder: set SLUICE_CACHE_DIR or HOME")?;
    match action {
        CacheAction::List => {
            let entries = cache::list(&dir);
            let now = std::time::SystemTime::now();
            for e in &entries {
                let ago = now.duration_since(e.used).unwrap_or_default().as_secs();
                println!(
                    "{:>8.1} MB  used {:>6} s ago  {}",
                    e.bytes as f64 / 1e6,
                    ago,
                    e.path.display()
                );
            }
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            println!(
                "{} compiled components, {:.1} MB in {} (bound: {:.0} MB)",
                entries.len(),
                total as f64 / 1e6,
                dir.display(),
                cache::max_size() as f64 / 1e6
            );
        }
        CacheAction::Prune { max_size } => {
            let max = match max_size {
                Some(s) => crate::base::settings::size::parse(&s)
                    .map_err(|e| anyhow::anyhow!("--max-size: {e}"))?
                    as u64,
                None => cache::max_size(),
            };
            let p = cache::prune(&dir, max, None);
            println!(
                "removed {} ({:.1} MB); kept {} ({:.1} MB) in {}",
                p.removed,
                p.freed as f64 / 1e6,
                p.kept,
                p.kept_bytes as f64 / 1e6,
                dir.display()
            );
        }
    }
    Ok(())
}

/// A `.wasm` path, or a project folder's built component.
fn component(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        let manifest = build::Manifest::load(path)?;
        let wasm = path.join(format!("{}.wasm", manifest.name));
        anyhow::ensure!(
            wasm.is_file(),
            "{} is not built yet: run `sluice plugin build {}`",
            wasm.display(),
            path.display()
        );
        return Ok(wasm);
    }
    Ok(path.to_path_buf())
}

/// Whether `name` is a plugin name: letters, digits, `-` and `_`,
/// starting with a letter, at most 64 bytes (so `NAME.wasm` is a file in
/// the project, never a path out of it).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
    {
        bail!("`{name}` is not a plugin name: use letters, digits, `-` and `_`, starting with a letter (at most 64)");
    }
    Ok(())
}

fn new(name: &str, lang: Lang, dir: &Path) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    for (path, text) in kits::project(name, lang) {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("created {} ({}) in {}", name, lang.title(), dir.display());
    println!("next:");
    println!("    cd {}", dir.display());
    println!("    sluice plugin build");
    println!("    sluice plugin test {name}.wasm --expect test/expected.jsonl < test/events.jsonl");
    println!("    sluice run pipeline.toml < test/events.jsonl");
    Ok(())
}
