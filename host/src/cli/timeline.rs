//! `sluice timeline`: arguments and the interactive mode.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::timeline::{self, read::parse_time_str, ComponentBy, Format, Mode, Options};

/// Logging libraries whose records `--preset` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    Loguru,
    PythonLogging,
    Monolog,
    Pino,
    Bunyan,
    Winston,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Every event in time order.
    Timeline,
    /// One section per component.
    Component,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Md,
    Json,
    /// One self-contained page: swimlanes, request waterfalls, hop histograms.
    Html,
}

/// Merge JSON-lines logs (plain or .gz) of many services into one timeline.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// Files or folders to read (folders: every .log, .json, .jsonl, .ndjson,
    /// maybe .gz, .age or .gz.age).
    #[arg(default_value = "logs")]
    pub paths: Vec<PathBuf>,
    /// Only these components (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub components: Vec<String>,
    /// The event field naming the component (default: the first of service,
    /// component, terminal, channel, app, logger; else the file name).
    #[arg(long)]
    pub component_field: Option<String>,
    /// Take the component from the file name (`trading-2026-11-23.log` -> trading).
    #[arg(long, conflicts_with = "component_field")]
    pub by_file: bool,
    /// Minimum level.
    #[arg(long, default_value = "info")]
    pub level: String,
    /// Only the last DURATION before now (`10m`, `2h`).
    #[arg(long, conflicts_with = "from")]
    pub since: Option<String>,
    /// Start of the window (RFC 3339, or `YYYY-MM-DD HH:MM:SS` in UTC).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the window.
    #[arg(long)]
    pub to: Option<String>,
    /// Only the newest N files of each component.
    #[arg(long = "files")]
    pub newest_files: Option<usize>,
    /// How events are laid out.
    #[arg(long, value_enum, default_value_t = ModeArg::Timeline)]
    pub mode: ModeArg,
    /// The field that follows a request across components (dotted paths
    /// reach into objects: `record.extra.request_id`).
    #[arg(long)]
    pub correlate: Option<String>,
    /// The field holding the time (default: timestamp, time, ts, @timestamp, ...).
    #[arg(long)]
    pub timestamp_field: Option<String>,
    /// The field holding the level (default: level, severity, lvl).
    #[arg(long)]
    pub level_field: Option<String>,
    /// The field holding the message (default: message, msg).
    #[arg(long)]
    pub message_field: Option<String>,
    /// Where a logging library keeps those fields, at once: loguru
    /// (serialize=True), python-logging, monolog, pino, bunyan, winston.
    /// The --*-field options given override it.
    #[arg(long, value_enum)]
    pub preset: Option<PresetArg>,
    /// Only events whose message or fields contain TEXT (any case).
    #[arg(long)]
    pub grep: Option<String>,
    /// Markdown for people, JSON for tools, HTML for a picture (one
    /// self-contained file: `--format html -o report.html`).
    #[arg(long, value_enum, default_value_t = FormatArg::Md)]
    pub format: FormatArg,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Every level, every time, every component: refused together with
    /// --level, --components, --since, --from or --to, which it would override.
    #[arg(long, conflicts_with_all = ["level", "components", "since", "from", "to"])]
    pub all: bool,
    /// A request idle this long (in log time) is considered finished.
    #[arg(long, default_value = "5m")]
    pub request_timeout: String,
    /// An age identity file (`age-keygen -o key.txt`) to read `.age` files with.
    #[arg(long, value_name = "KEYFILE")]
    pub identity: Option<PathBuf>,
    /// Ask for components, period, level and mode in the terminal.
    #[arg(long, short)]
    pub interactive: bool,
}

fn parse_instant(s: &str) -> anyhow::Result<i64> {
    parse_time_str(s).with_context(|| {
        format!("cannot read the time `{s}` (write RFC 3339, e.g. 2026-11-23T10:00:00Z)")
    })
}

fn duration_us(s: &str) -> anyhow::Result<i64> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("invalid duration `{s}` (write e.g. 10m, 2h)"))?;
    Ok(d.as_micros() as i64)
}

/// (timestamp, component, level, message, correlate) of each preset.
fn preset_fields(preset: Option<PresetArg>) -> [Option<&'static str>; 5] {
    match preset {
        None | Some(PresetArg::Winston) => [None; 5],
        Some(PresetArg::Loguru) => [
            Some("record.time.timestamp"),
            Some("record.name"),
            Some("record.level.name"),
            Some("record.message"),
            Some("record.extra.request_id"),
        ],
        Some(PresetArg::PythonLogging) => [
            Some("created"),
            Some("name"),
            Some("levelname"),
            Some("msg"),
            None,
        ],
        Some(PresetArg::Monolog) => [
            Some("datetime"),
            Some("channel"),
            Some("level_name"),
            Some("message"),
            Some("context.request_id"),
        ],
        Some(PresetArg::Pino | PresetArg::Bunyan) => {
            [Some("time"), Some("name"), Some("level"), Some("msg"), None]
        }
    }
}

/// The objects whose members a preset's records show beside the message.
fn shown_from(preset: PresetArg) -> Vec<String> {
    let paths: &[&str] = match preset {
        // Not `text` (the formatted line) nor the rest of `record`
        // (file, function, line, process, thread, elapsed).
        PresetArg::Loguru => &["record.extra", "record.exception"],
        PresetArg::Monolog => &["context", "extra"],
        _ => &[],
    };
    paths.iter().map(|p| p.to_string()).collect()
}

/// The top-level fields a preset's library writes on every record.
fn hidden(preset: PresetArg) -> Vec<String> {
    let names: &[&str] = match preset {
        PresetArg::PythonLogging => &[
            "args",
            "levelno",
            "pathname",
            "filename",
            "module",
            "lineno",
            "funcName",
            "msecs",
            "relativeCreated",
            "thread",
            "threadName",
            "processName",
            "process",
            "taskName",
        ],
        PresetArg::Pino | PresetArg::Bunyan => &["pid", "hostname", "v"],
        _ => &[],
    };
    names.iter().map(|p| p.to_string()).collect()
}

/// Read records with `preset`'s fields.
fn apply_preset(o: &mut Options, preset: PresetArg) {
    let [time, component, level, message, correlate] = preset_fields(Some(preset));
    o.fields.timestamp = time.map(str::to_string);
    o.fields.level = level.map(str::to_string);
    o.fields.message = message.map(str::to_string);
    o.fields.shown_from = shown_from(preset);
    o.fields.hidden = hidden(preset);
    if let Some(c) = component {
        o.component_by = ComponentBy::Field(c.to_string());
    }
    if let Some(c) = correlate {
        o.correlate = c.to_string();
    }
}

fn preset_name(preset: PresetArg) -> String {
    preset
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The logging library whose records a line is, by the keys only it
/// writes: loguru's `serialize=True` (`text` and `record.time`), Python
/// logging's `__dict__` (`created`, `levelname`), Monolog (`datetime`,
/// `level_name`, `channel`), pino and bunyan (numeric `time` and `level`,
/// `msg`). Winston's and sluice's own records need no preset.
fn shape_of(v: &serde_json::Value) -> Option<PresetArg> {
    let has = |k: &str| v.get(k).is_some();
    if v.get("text").is_some_and(|t| t.is_string()) && v.pointer("/record/time/timestamp").is_some()
    {
        Some(PresetArg::Loguru)
    } else if v.get("created").is_some_and(|t| t.is_number()) && has("levelname") {
        Some(PresetArg::PythonLogging)
    } else if has("datetime") && has("level_name") && has("channel") {
        Some(PresetArg::Monolog)
    } else if v.get("time").is_some_and(|t| t.is_number())
        && v.get("level").is_some_and(|l| l.is_number())
        && has("msg")
    {
        Some(PresetArg::Pino)
    } else {
        None
    }
}

/// The preset most of the first lines of the files read as (up to 16 files,
/// 32 lines each), with how many lines matched of how many read; none
/// when no shape has half of them.
fn detect_preset(o: &Options) -> Option<(PresetArg, usize, usize)> {
    let files = timeline::read::discover(&o.paths).ok()?;
    let mut votes: Vec<(PresetArg, usize)> = Vec::new();
    let mut lines = 0;
    for f in files.iter().take(16) {
        let Ok(reader) = timeline::read::open(&f.path, o.identities.as_ref()) else {
            continue;
        };
        for line in reader.lines().take(32) {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            lines += 1;
            if let Some(p) = shape_of(&v) {
                match votes.iter_mut().find(|(q, _)| *q == p) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((p, 1)),
                }
            }
        }
    }
    let (p, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
    (n * 2 >= lines).then_some((p, n, lines))
}

impl TimelineArgs {
    /// Whether the fields to read were left to the defaults (no preset, no
    /// `--*-field`): then a detected shape is worth proposing.
    fn fields_left_default(&self) -> bool {
        self.preset.is_none()
            && self.timestamp_field.is_none()
            && self.level_field.is_none()
            && self.message_field.is_none()
            && self.component_field.is_none()
            && !self.by_file
    }

    fn options(&self) -> anyhow::Result<Options> {
        let now = chrono::Utc::now().timestamp_micros();
        let from = match (&self.since, &self.from) {
            (Some(s), _) => Some(now - duration_us(s)?),
            (None, Some(f)) => Some(parse_instant(f)?),
            (None, None) => None,
        };
        let to = self.to.as_deref().map(parse_instant).transpose()?;
        let preset = preset_fields(self.preset);
        let pick = |given: &Option<String>, i: usize| {
            given.clone().or_else(|| preset[i].map(str::to_string))
        };
        let component_field = pick(&self.component_field, 1);
        let component_by = match (&component_field, self.by_file) {
            (Some(f), false) => ComponentBy::Field(f.clone()),
            (_, true) => ComponentBy::FileName,
            (None, false) => ComponentBy::Auto,
        };
        Ok(Options {
            paths: self.paths.clone(),
            components: if self.all {
                Vec::new()
            } else {
                self.components.clone()
            },
            component_by,
            min_level: (!self.all).then(|| self.level.clone()),
            from: if self.all { None } else { from },
            to: if self.all { None } else { to },
            newest_files: self.newest_files,
            mode: match self.mode {
                ModeArg::Timeline => Mode::Timeline,
                ModeArg::Component => Mode::Component,
            },
            correlate: pick(&self.correlate, 4).unwrap_or_else(|| "request_id".to_string()),
            fields: crate::timeline::read::FieldNames {
                timestamp: pick(&self.timestamp_field, 0),
                level: pick(&self.level_field, 2),
                message: pick(&self.message_field, 3),
                shown_from: self.preset.map(shown_from).unwrap_or_default(),
                hidden: self.preset.map(hidden).unwrap_or_default(),
            },
            grep: self.grep.clone(),
            format: match self.format {
                FormatArg::Md => Format::Markdown,
                FormatArg::Json => Format::Json,
                FormatArg::Html => Format::Html,
            },
            request_timeout_us: duration_us(&self.request_timeout)?,
            identities: match &self.identity {
                Some(p) => {
                    Some(crate::base::crypt::Identities::from_file(p).map_err(anyhow::Error::msg)?)
                }
                None => None,
            },
        })
    }
}

/// Run `sluice timeline`.
pub fn main(args: TimelineArgs) -> anyhow::Result<()> {
    let mut options = args.options()?;
    let mut output = args.output.clone();
    if args.interactive {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut stdout = std::io::stdout();
        if args.fields_left_default() {
            if let Some((preset, n, lines)) = detect_preset(&options) {
                let name = preset_name(preset);
                let answer = prompt(
                    &mut input,
                    &mut stdout,
                    &format!("{n} of the first {lines} records read look like {name}'s: read them with --preset {name}? (yes, no)"),
                    "yes",
                )?;
                if matches!(answer.to_ascii_lowercase().as_str(), "yes" | "y") {
                    apply_preset(&mut options, preset);
                }
            }
        }
        let asked = ask(&mut options, output.is_none(), &mut input, &mut stdout)?;
        output = output.or(asked);
    }
    let summary = match &output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            let s = timeline::run(&options, &mut w)?;
            w.flush()?;
            s
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout());
            let s = timeline::run(&options, &mut w)?;
            w.flush()?;
            s
        }
    };
    if summary.events == 0 {
        eprintln!(
            "sluice timeline: no events match these filters (files read: {})",
            summary.files.len()
        );
    }
    if summary.events == 0 || summary.no_timestamp > 0 {
        if let Some((preset, n, lines)) = args
            .fields_left_default()
            .then(|| detect_preset(&options))
            .flatten()
        {
            let name = preset_name(preset);
            eprintln!(
                "sluice timeline: {n} of the first {lines} records read look like {name}'s: try --preset {name}"
            );
        }
    }
    if summary.malformed + summary.no_timestamp > 0 {
        eprintln!(
            "sluice timeline: {} malformed lines and {} lines without a timestamp were left out (listed in the report)",
            summary.malformed, summary.no_timestamp
        );
    }
    if let Some(path) = output {
        eprintln!(
            "wrote {}: {} events from {} files",
            path.display(),
            summary.events,
            summary.files.len()
        );
    }
    Ok(())
}

fn prompt(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    question: &str,
    default: &str,
) -> anyhow::Result<String> {
    write!(out, "{question} [{default}]: ")?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let answer = line.trim();
    Ok(if answer.is_empty() {
        default.to_string()
    } else {
        answer.to_string()
    })
}

/// The interactive questions; returns where to write the report when
/// `ask_output` (no `-o` was given).
fn ask(
    o: &mut Options,
    ask_output: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<Option<PathBuf>> {
    let inputs = timeline::inputs(o)?;
    let mut components: Vec<(String, u64)> = Vec::new();
    for s in &inputs.scans {
        for (c, n) in &s.components {
            match components.iter_mut().find(|(x, _)| x == c) {
                Some((_, total)) => *total += n,
                None => components.push((c.clone(), *n)),
            }
        }
    }
    components.sort();
    writeln!(
        out,
        "sluice timeline: {} files, {} components",
        inputs.files.len(),
        components.len()
    )?;
    for (i, (c, n)) in components.iter().enumerate() {
        writeln!(out, "  {}) {c} ({n} events)", i + 1)?;
    }
    loop {
        let answer = prompt(
            input,
            out,
            "Components (numbers or names, comma-separated)",
            "all",
        )?;
        if answer == "all" {
            o.components.clear();
            break;
        }
        let mut chosen = Vec::new();
        let mut bad = None;
        for part in answer.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<usize>() {
                Ok(n) if (1..=components.len()).contains(&n) => {
                    chosen.push(components[n - 1].0.clone())
                }
                _ if components.iter().any(|(c, _)| c.eq_ignore_ascii_case(part)) => {
                    chosen.push(part.to_string())
                }
                _ => bad = Some(part.to_string()),
            }
        }
        match bad {
            Some(b) => writeln!(out, "unknown component `{b}`; try again")?,
            None => {
                o.components = chosen;
                break;
            }
        }
    }
    loop {
        let answer = prompt(input, out, "Period (e.g. 10m, 2h, or all)", "all")?;
        if answer == "all" {
            o.from = None;
            o.to = None;
            break;
        }
        match duration_us(&answer) {
            Ok(d) => {
                o.from = Some(chrono::Utc::now().timestamp_micros() - d);
                o.to = None;
                break;
            }
            Err(e) => writeln!(out, "{e}; try again")?,
        }
    }
    let level = prompt(
        input,
        out,
        "Minimum level (trace, debug, info, warn, error)",
        "info",
    )?;
    o.min_level = Some(level);
    loop {
        match prompt(input, out, "Mode (timeline, component)", "timeline")?.as_str() {
            "timeline" => o.mode = Mode::Timeline,
            "component" => o.mode = Mode::Component,
            other => {
                writeln!(out, "unknown mode `{other}`; try again")?;
                continue;
            }
        }
        break;
    }
    if !ask_output {
        return Ok(None);
    }
    let path = prompt(input, out, "Output file", "timeline.md")?;
    Ok(Some(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_of_logging_libraries() {
        let shape = |line: &str| shape_of(&serde_json::from_str(line).unwrap());
        let loguru = r#"{"text":"2026-12-06 | INFO | m\n","record":{"time":{"repr":"x","timestamp":1796474732.5},"name":"__main__","message":"m"}}"#;
        assert_eq!(shape(loguru), Some(PresetArg::Loguru));
        let python = r#"{"name":"shop","msg":"m","levelname":"INFO","created":1796474732.5}"#;
        assert_eq!(shape(python), Some(PresetArg::PythonLogging));
        let monolog = r#"{"message":"m","context":{},"level":200,"level_name":"INFO","channel":"app","datetime":"2026-12-06T10:00:00.000000+01:00"}"#;
        assert_eq!(shape(monolog), Some(PresetArg::Monolog));
        let pino = r#"{"level":30,"time":1796474732500,"pid":1,"hostname":"h","msg":"m"}"#;
        assert_eq!(shape(pino), Some(PresetArg::Pino));
        // sluice's own records and winston's read with the defaults.
        for plain in [
            r#"{"timestamp":"2026-12-06T10:00:00Z","level":"info","message":"m"}"#,
            r#"{"level":"info","message":"m","timestamp":"2026-12-06T10:00:00.000Z"}"#,
            r#"{"time":"2026-12-06T10:00:00Z","level":"info","msg":"m"}"#,
        ] {
            assert_eq!(shape(plain), None, "{plain}");
        }
    }

    #[test]
    fn interactive_mode_asks_no_output_file_when_one_was_given() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("orders.log"),
            "{\"timestamp\":\"2026-11-23T10:00:00Z\",\"service\":\"orders\",\"message\":\"x\"}\n",
        )
        .unwrap();
        let base = Options {
            paths: vec![d.path().to_path_buf()],
            ..Options::default()
        };
        let answers = "all\nall\ninfo\ntimeline\nreport.md\n";
        let mut o = base.clone();
        let mut out = Vec::new();
        let asked = ask(&mut o, false, &mut answers.as_bytes(), &mut out).unwrap();
        assert_eq!(asked, None);
        assert!(!String::from_utf8_lossy(&out).contains("Output file"));
        let mut o = base;
        let mut out = Vec::new();
        let asked = ask(&mut o, true, &mut answers.as_bytes(), &mut out).unwrap();
        assert_eq!(asked, Some(PathBuf::from("report.md")));
    }
}
