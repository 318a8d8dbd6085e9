//! The command line: `sluice run`, `validate`, `timeline`, `plugin`, ...

pub mod dead_letters;
pub mod decrypt_fields;
pub mod ops;
pub mod plugin;
mod service;
pub mod shadow;
pub mod timeline;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::PipelineConfig;
use crate::plugin::Runtime;
use crate::topology;

/// sluice: a log pipeline whose transforms are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "sluice", version = crate::VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Log level of sluice's own logs (error, warn, info, debug, trace), or a
    /// tracing filter such as `sluice=debug`. `RUST_LOG` overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// Format of sluice's own logs (always on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline until its finite sources are done, or until Ctrl-C /
    /// SIGTERM (which drain in-flight events to the sinks first).
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Do not print the end-of-run summary on stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a pipeline file: syntax, keys, inputs, cycles, and that every
    /// plugin loads and accepts its config. Prints each error with
    /// file:line:column and the key.
    Validate {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Merge many services' JSON-lines logs into one Markdown timeline with
    /// statistics and per-hop latencies of correlated requests.
    Timeline(Box<timeline::TimelineArgs>),
    /// Print the events leaving a component of a running pipeline, live
    /// (through its [admin] port). A slow tap loses copies, never events.
    Tap {
        /// The pipeline file of the running pipeline (for its admin address).
        pipeline: PathBuf,
        /// The source, transform or sink to watch.
        #[arg(long)]
        component: String,
        /// Only events with FIELD=VALUE (or FIELD!=VALUE); dotted paths allowed.
        #[arg(long)]
        filter: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Show per-component event rates of a running pipeline, live.
    #[command(alias = "stats")]
    Top {
        /// The pipeline file of the running pipeline (for its admin address).
        pipeline: PathBuf,
        /// Refresh interval.
        #[arg(long, default_value = "1s")]
        interval: String,
        /// Stop after this many refreshes.
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Run the `[[tests]]` of a pipeline file: events in at sources, checks
    /// on what comes out of components. Exits 1 when a test fails.
    Test {
        /// The pipeline file.
        pipeline: PathBuf,
    },
    /// Write, build and try plugins: `sluice plugin new NAME --lang
    /// rust|python|js|ts`, `sluice plugin build`, `sluice plugin test`.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Look at dead letters and send them through a pipeline again:
    /// `list`, `show`, `replay`.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// Restore the fields the `encrypt` plugin sealed in a JSON-lines file:
    /// `sluice decrypt-fields --identity key.txt events.jsonl`.
    DecryptFields(decrypt_fields::DecryptFieldsArgs),
    /// Look at a sink's disk buffer: `sluice buffer inspect PATH` prints
    /// its segments, events waiting, oldest event and corruption found.
    #[command(subcommand)]
    Buffer(BufferCommand),
    /// Print the manual page (roff): `sluice man > /usr/local/share/man/man1/sluice.1`.
    Man,
    /// Print the JSON Schema (draft 2020-12) of a pipeline file, for
    /// editors (Taplo, Even Better TOML): `sluice schema > pipeline.schema.json`.
    /// With `--markdown`, the reference of every key (docs/reference.md).
    Schema {
        /// The reference of every key as Markdown instead.
        #[arg(long)]
        markdown: bool,
        /// Print the config schema a plugin component ships instead (a
        /// bundled plugin's name or a `.wasm` file).
        #[arg(long, conflicts_with = "markdown")]
        plugin: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum BufferCommand {
    /// Print a disk buffer's segments, counts, oldest event and any
    /// corruption, without changing it (safe while sluice runs).
    Inspect {
        /// The buffer's folder (`buffer.path`, or
        /// `.sluice/buffers/PIPELINE/SINK` next to the pipeline file).
        path: PathBuf,
    },
}

fn buffer_main(command: BufferCommand) -> anyhow::Result<()> {
    let BufferCommand::Inspect { path } = command;
    anyhow::ensure!(path.is_dir(), "{} is not a folder", path.display());
    let r = sluice_buffer::inspect(&path)
        .map_err(|e| anyhow::anyhow!(e).context(format!("reading {}", path.display())))?;
    let at = |ms: u64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64).map_or_else(
            || "-".to_string(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    };
    println!(
        "disk buffer {}{}",
        path.display(),
        if r.in_use {
            " (in use by a running sluice)"
        } else {
            ""
        }
    );
    match r.pointers {
        Some((ack, sent)) => println!(
            "delivered up to segment {} offset {}; handed out up to segment {} offset {}",
            ack.segment, ack.offset, sent.segment, sent.offset
        ),
        None => {
            println!("no readable state file: everything is handed out again at the next start")
        }
    }
    println!("| segment | bytes | records | events | first written | last written | corrupt records | torn bytes |\n| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |");
    for s in &r.segments {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.file.file_name().unwrap_or_default().to_string_lossy(),
            s.bytes,
            s.records,
            s.events,
            if s.records > 0 {
                at(s.first_ms)
            } else {
                "-".into()
            },
            if s.records > 0 {
                at(s.last_ms)
            } else {
                "-".into()
            },
            s.corrupt_records,
            s.torn_bytes
        );
    }
    let oldest = r
        .segments
        .iter()
        .filter(|s| s.records > 0)
        .map(|s| s.first_ms)
        .min();
    println!(
        "waiting: {} events; oldest record kept: {}; corrupt records: {}; quarantined segments: {}",
        r.pending_events,
        oldest.map_or_else(|| "-".to_string(), at),
        r.segments.iter().map(|s| s.corrupt_records).sum::<u64>(),
        r.quarantined.len()
    );
    for q in &r.quarantined {
        println!("  quarantined: {}", q.display());
    }
    Ok(())
}

/// Set up `tracing` on stderr.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, and never with NO_COLOR set
    // (https://no-color.org): logs captured to a file stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // Secrets given to the pipeline never reach the log.
        .with_writer(|| crate::base::secrets::Redacting(std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Run the command line.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Validate { pipeline } => {
            let config = PipelineConfig::load(&pipeline)?;
            config.admin_token()?;
            let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
            let plan = topology::plan(config, runtime).await?;
            let c = plan.config();
            println!(
                "{}: ok ({} sources, {} transforms, {} sinks)",
                pipeline.display(),
                c.sources.len(),
                c.transforms.len(),
                c.sinks.len()
            );
            Ok(())
        }
        Command::Run { pipeline, quiet } => service::run(&pipeline, quiet).await,
        Command::Timeline(args) => {
            tokio::task::spawn_blocking(move || timeline::main(*args)).await?
        }
        Command::Tap {
            pipeline,
            component,
            filter,
            limit,
        } => ops::tap(&pipeline, &component, filter.as_deref(), limit).await,
        Command::Top {
            pipeline,
            interval,
            iterations,
        } => {
            let interval = humantime::parse_duration(&interval)
                .with_context(|| format!("invalid interval `{interval}`"))?;
            ops::top(&pipeline, interval, iterations).await
        }
        Command::Test { pipeline } => {
            let config = PipelineConfig::load(&pipeline)?;
            let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
            let failed = crate::testing::run_all(&config, runtime, &mut std::io::stdout()).await?;
            anyhow::ensure!(failed == 0, "{failed} pipeline test(s) failed");
            Ok(())
        }
        Command::Plugin(command) => plugin::main(command).await,
        Command::DeadLetters(command) => dead_letters::main(command).await,
        Command::DecryptFields(args) => decrypt_fields::main(args),
        Command::Buffer(command) => buffer_main(command),
        Command::Schema {
            plugin: Some(plugin),
            ..
        } => {
            let wasm = match crate::plugin::bundled::get(&plugin) {
                Some(bytes) => bytes.to_vec(),
                None => std::fs::read(&plugin).with_context(|| format!("reading {plugin}"))?,
            };
            let schema = crate::plugin::sections::config_schema(&wasm).ok_or_else(|| {
                anyhow::anyhow!(
                    "{plugin} ships no config schema (a custom section `{}` holding JSON; \
                     Rust plugins add it with `sluice_plugin::config_schema!`)",
                    crate::plugin::sections::CONFIG_SCHEMA
                )
            })?;
            let text = serde_json::to_string_pretty(&schema)? + "\n";
            print(text.as_bytes())
        }
        Command::Schema { markdown, .. } => {
            let schema = crate::config::schema::pipeline();
            let text = if markdown {
                crate::config::schema::markdown(&schema)
            } else {
                serde_json::to_string_pretty(&schema)? + "\n"
            };
            print(text.as_bytes())
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            print(&out)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Into a buffer: clap_complete panics when its writer fails,
            // and a reader may close the pipe early (`| grep -q`).
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut out);
            print(&out)
        }
    }
}

/// Write `bytes` to stdout. A reader that closed the pipe before the end
/// (`| head`, `| grep -q`) has what it wanted: not an error.
fn print(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
