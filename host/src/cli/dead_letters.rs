//! `sluice dead-letters list | show | replay`: look at what failed, and
//! send it through a pipeline again once the cause is fixed, each event
//! once however often the replay is run.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use toml::Spanned;

use crate::base::metrics::Registry;
use crate::config::{Named, PipelineConfig};
use crate::delivery::dead_letters::{
    replaying, Line, LineCutter, Record, ReplayLog, DEAD_LETTERS, DEFAULT_MAX_RECORD,
};
use crate::plugin::Runtime;
use crate::sink::{CaptureConfig, SinkConfig};
use crate::source::{MemoryConfig, SourceConfig};
use crate::topology;

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Count dead letters by component and kind of error.
    List {
        /// A dead-letter file (JSON lines, plain or .gz).
        file: PathBuf,
        #[command(flatten)]
        select: Select,
    },
    /// Print the selected records, one JSON object per line.
    Show {
        file: PathBuf,
        #[command(flatten)]
        select: Select,
        /// Print only the original events.
        #[arg(long)]
        events: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Send the selected events through a pipeline again: its source
    /// SOURCE emits them (its other sources nothing), its transforms and
    /// sinks run as configured. Events sent are remembered in
    /// FILE.replayed, so a replay run twice sends nothing twice; events that
    /// fail again are written to a new dead-letter file (attempt + 1).
    Replay {
        file: PathBuf,
        /// The pipeline file (or folder) to send them through.
        #[arg(long)]
        into: PathBuf,
        /// The source of that pipeline that emits them.
        #[arg(long)]
        source: String,
        #[command(flatten)]
        select: Select,
        /// Show what would be sent; send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where events that fail again go (default: FILE.failed-TIME.jsonl).
        #[arg(long)]
        failed: Option<PathBuf>,
    },
}

/// Which records: every filter given must hold.
#[derive(Debug, Clone, Default, Args)]
pub struct Select {
    /// Only this kind of error (trap, timeout, plugin_error, rejected, ...); repeatable.
    #[arg(long)]
    pub kind: Vec<String>,
    /// Only from this component; repeatable.
    #[arg(long)]
    pub component: Vec<String>,
    /// Only dead letters written at or after this (RFC 3339, or a duration ago: 10m, 2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Only dead letters written before this.
    #[arg(long)]
    pub until: Option<String>,
    /// Only events whose FIELD equals VALUE (dotted paths); repeatable.
    #[arg(long = "field", value_name = "FIELD=VALUE")]
    pub fields: Vec<String>,
}

type Time = chrono::DateTime<chrono::Utc>;

fn parse_time(s: &str) -> anyhow::Result<Time> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = humantime::parse_duration(s)
        .with_context(|| format!("`{s}` is neither an RFC 3339 time nor a duration like 10m"))?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(ago)?)
}

struct Filter {
    kinds: Vec<String>,
    components: Vec<String>,
    since: Option<Time>,
    until: Option<Time>,
    fields: Vec<(String, String)>,
}

impl Filter {
    fn new(s: &Select) -> anyhow::Result<Filter> {
        let fields = s
            .fields
            .iter()
            .map(|f| {
                f.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("--field `{f}`: write FIELD=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Filter {
            kinds: s.kind.clone(),
            components: s.component.clone(),
            since: s.since.as_deref().map(parse_time).transpose()?,
            until: s.until.as_deref().map(parse_time).transpose()?,
            fields,
        })
    }

    fn keeps(&self, r: &Record) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&r.kind) {
            return false;
        }
        if !self.components.is_empty() && !self.components.contains(&r.component) {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.timestamp) else {
                return false;
            };
            let t = t.with_timezone(&chrono::Utc);
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        if !self.fields.is_empty() {
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&r.event) else {
                return false;
            };
            for (path, want) in &self.fields {
                let got = event.as_object().and_then(|o| sluice_common::get(o, path));
                let text = match got {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => return false,
                };
                if &text != want {
                    return false;
                }
            }
        }
        true
    }
}

/// Read a dead-letter file; lines that are not records are counted.
pub fn read(path: &Path) -> anyhow::Result<(Vec<Record>, usize)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|x| x == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        )))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut reader = reader;
    let mut records = Vec::new();
    let mut unreadable = 0;
    // Cut in bounded pieces: a record past DEFAULT_MAX_RECORD is counted
    // unreadable, never held whole.
    let mut cutter = LineCutter::new(DEFAULT_MAX_RECORD);
    let mut lines = Vec::new();
    loop {
        lines.clear();
        let taken = cutter
            .feed(&mut reader, &mut lines, 64 << 20)
            .with_context(|| format!("reading {}", path.display()))?;
        let last = taken == 0;
        if last {
            lines.extend(cutter.finish());
        }
        for line in lines.drain(..) {
            let Line::Whole(line) = line else {
                unreadable += 1;
                continue;
            };
            let Ok(text) = std::str::from_utf8(&line) else {
                unreadable += 1;
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            match Record::parse(text) {
                Ok(r) => records.push(r),
                Err(_) => unreadable += 1,
            }
        }
        if last {
            break;
        }
    }
    Ok((records, unreadable))
}

fn selected(file: &Path, select: &Select) -> anyhow::Result<Vec<Record>> {
    let filter = Filter::new(select)?;
    let (records, unreadable) = read(file)?;
    if unreadable > 0 {
        eprintln!(
            "{unreadable} line(s) of {} are not dead letters; skipped",
            file.display()
        );
    }
    Ok(records.into_iter().filter(|r| filter.keeps(r)).collect())
}

pub async fn main(command: DeadLettersCommand) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List { file, select } => {
            let records = selected(&file, &select)?;
            let mut counts: BTreeMap<(String, String), (usize, u64)> = BTreeMap::new();
            for r in &records {
                let e = counts
                    .entry((r.component.clone(), r.kind.clone()))
                    .or_default();
                e.0 += 1;
                e.1 = e.1.max(r.attempt);
            }
            let done = ReplayLog::load(&file)?;
            let pending = records.iter().filter(|r| !done.has(r)).count();
            println!(
                "{:<24} {:<16} {:>8} {:>12}",
                "component", "kind", "events", "max attempt"
            );
            for ((c, k), (n, a)) in &counts {
                println!("{c:<24} {k:<16} {n:>8} {a:>12}");
            }
            println!("{} dead letters, {pending} not replayed yet", records.len());
            Ok(())
        }
        DeadLettersCommand::Show {
            file,
            select,
            events,
            limit,
        } => {
            let mut out = std::io::stdout().lock();
            for r in selected(&file, &select)?
                .iter()
                .take(limit.unwrap_or(usize::MAX))
            {
                if events {
                    out.write_all(&r.event)?;
                } else {
                    write!(out, "{}", r.value)?;
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        DeadLettersCommand::Replay {
            file,
            into,
            source,
            select,
            dry_run,
            failed,
        } => replay(&file, &into, &source, &select, dry_run, failed).await,
    }
}

async fn replay(
    file: &Path,
    into: &Path,
    source: &str,
    select: &Select,
    dry_run: bool,
    failed: Option<PathBuf>,
) -> anyhow::Result<()> {
    // One replay of a file at a time: a second waits for the first, then
    // reads what it saved and sends only what is left (the lock is the
    // dead-letter file's own, advisory, so the pipeline writing it is not
    // held up).
    let lock =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    if !dry_run && lock.try_lock().is_err() {
        eprintln!(
            "another replay of {} is running; waiting for it",
            file.display()
        );
        lock.lock()
            .with_context(|| format!("cannot lock {}", file.display()))?;
    }
    let mut checkpoint = ReplayLog::load(file)?;
    let all = selected(file, select)?;
    let (done, todo): (Vec<Record>, Vec<Record>) = all.into_iter().partition(|r| checkpoint.has(r));
    if !done.is_empty() {
        eprintln!(
            "{} selected dead letter(s) were replayed before; skipped",
            done.len()
        );
    }
    if dry_run {
        for r in &todo {
            println!(
                "would replay {} (attempt {}) from {} ({}): {}",
                r.id, r.attempt, r.component, r.kind, r.message
            );
        }
        println!(
            "{} event(s) would be sent to {source} of {}",
            todo.len(),
            into.display()
        );
        return Ok(());
    }
    if todo.is_empty() {
        println!("nothing to replay");
        return Ok(());
    }
    let (config, again) = replay_config(into, source, &todo)?;
    for r in &todo {
        replaying(&r.id, r.attempt);
    }
    let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
    let plan = topology::plan(config, runtime).await?;
    let metrics = Registry::default();
    plan.start(metrics.clone())?.wait().await?;
    for r in &todo {
        metrics.dead_letters.replayed(&r.component, &r.kind, 1);
    }
    let again = std::mem::take(&mut *again.lock().expect("capture lock poisoned"));
    // What was delivered is saved as replayed before anything else can
    // fail; what failed again only once it is written to its file (else a
    // next replay sends it again, and nothing is lost).
    let failed_ids: std::collections::BTreeSet<String> = again
        .iter()
        .filter_map(|l| Record::parse(&String::from_utf8_lossy(l)).ok())
        .map(|r| r.id)
        .collect();
    let (failing, delivered): (Vec<&Record>, Vec<&Record>) =
        todo.iter().partition(|r| failed_ids.contains(&r.id));
    checkpoint.insert_and_save(delivered)?;
    if !again.is_empty() {
        write_failed(file, failed, &again)?;
    }
    checkpoint.insert_and_save(failing)?;
    drop(lock);
    println!(
        "replayed {} event(s) through {source} of {}: {} delivered, {} failed again",
        todo.len(),
        into.display(),
        todo.len() - again.len().min(todo.len()),
        again.len()
    );
    Ok(())
}

/// The lines a capture sink took.
type Captured = Arc<Mutex<Vec<Vec<u8>>>>;

/// `into`'s pipeline made to replay `todo`: its sources give nothing but
/// `source`, which gives the events; what fails again is caught (the
/// returned list), not written where the pipeline writes its dead
/// letters; no admin port, watch, tests or disk buffers.
fn replay_config(
    into: &Path,
    source: &str,
    todo: &[Record],
) -> anyhow::Result<(PipelineConfig, Captured)> {
    let mut config = PipelineConfig::load(into)?;
    if !config.sources.iter().any(|s| s.name == source) {
        let known: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "{} has no source `{source}` (sources: {})",
            into.display(),
            known.join(", ")
        );
    }
    config.admin = None;
    config.reload.watch = false;
    config.tests.clear();
    let lines: Vec<Vec<u8>> = todo.iter().map(|r| r.event.clone()).collect();
    let lines = Arc::new(lines);
    for s in &mut config.sources {
        s.config = SourceConfig::Memory(MemoryConfig {
            lines: if s.name == source {
                lines.clone()
            } else {
                Arc::new(Vec::new())
            },
        });
    }
    // What fails again is caught here, not written where the pipeline
    // writes its dead letters.
    config.sinks.retain_mut(|s| {
        let inputs = s.config.kind_mut().inputs_mut();
        let had = inputs.len();
        inputs.retain(|i| i.get_ref() != DEAD_LETTERS);
        !(had > 0 && inputs.is_empty())
    });
    // A replay waits for its sinks itself: no disk buffer (the running
    // pipeline holds them).
    for s in &mut config.sinks {
        s.buffer = None;
    }
    let again = Arc::new(Mutex::new(Vec::new()));
    let span = config.sources[0].span.clone();
    config.sinks.push(Named {
        metrics: None,
        buffer: None,
        name: "__replay_failed".into(),
        span: span.clone(),
        config: SinkConfig::Capture(CaptureConfig {
            inputs: vec![Spanned::new(span, DEAD_LETTERS.to_string())],
            events: again.clone(),
        }),
    });
    Ok((config, again))
}

/// Append what failed again to `failed` (default: FILE.failed-TIME.jsonl)
/// and sync it.
fn write_failed(file: &Path, failed: Option<PathBuf>, again: &[Vec<u8>]) -> anyhow::Result<()> {
    let path = failed.unwrap_or_else(|| {
        let mut name = file.as_os_str().to_owned();
        name.push(format!(
            ".failed-{}.jsonl",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        PathBuf::from(name)
    });
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    for line in again {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    out.sync_all()?;
    eprintln!(
        "{} event(s) failed again: written to {}",
        again.len(),
        path.display()
    );
    Ok(())
}
