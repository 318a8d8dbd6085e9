//! The pipeline file: `[batch]`, `[sources.NAME]`, `[transforms.NAME]`,
//! `[sinks.NAME]`.
//!
//! Loading keeps the byte span of every key so that each error names the
//! file, line, column and key. Sources and sinks are a closed set of kinds
//! chosen by their `type`; each kind is a struct with
//! `#[serde(deny_unknown_fields)]`. serde's internally tagged enums buffer
//! their content and lose spans, so the `type` dispatch is done here by hand
//! over toml's spanned document tree.

mod error;
pub mod files;
pub mod interpolate;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use error::{ConfigError, Locator};

use crate::base::settings::{bounded, duration, BatchConfig, BuildContext, BuildError, Tagged};
use crate::sink::{Sink, SinkConfig};
use crate::source::{Source, SourceConfig};

/// What a transform does with an event that makes its plugin fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Send it to `_dead_letters` with the plugin, version and error.
    #[default]
    DeadLetter,
    /// Drop it (counted).
    Drop,
    /// Forward it unchanged (fail-open; refused for masking plugins unless
    /// `allow_unmasked = true`).
    Pass,
}

/// `[transforms.NAME]`: a wasm plugin over the events of its inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A bundled plugin's name (`filter`, `route`, `mask`, `remap`, `encrypt`) or a path to a
    /// `.wasm` component, relative to the pipeline file.
    pub plugin: Spanned<String>,
    /// Components whose output this transform reads.
    pub inputs: Vec<Spanned<String>>,
    /// The table passed to the plugin's `init`, as JSON.
    #[serde(default)]
    pub config: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub on_error: OnError,
    /// Allow `on_error = "pass"` on a masking plugin.
    #[serde(default)]
    pub allow_unmasked: bool,
    /// Linear memory limit of one plugin instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Time budget of one batch call.
    #[serde(default = "default_time_budget", with = "duration")]
    pub time_budget: Duration,
    /// Wasm stack of one plugin instance, in KiB.
    #[serde(default = "default_stack_kib")]
    pub stack_kib: u64,
    /// Core instances, tables and memories one plugin instance may make
    /// (Python and JavaScript components need more than Rust ones).
    #[serde(default = "default_instances")]
    pub instances: u32,
    #[serde(default = "default_tables")]
    pub tables: u32,
    #[serde(default = "default_memories")]
    pub memories: u32,
    /// Count the events leaving it by some fields' values.
    #[serde(default)]
    pub metrics: Option<crate::base::metrics::FieldMetricsConfig>,
    /// Instances of the plugin working on consecutive batches, each on a
    /// thread of its own (output kept in batch order). Default: the
    /// machine's cores, at most [`AUTO_CONCURRENCY_MAX`]; 1 for a plugin
    /// that must see every event itself (counters across events).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// The most instances a transform runs when `concurrency` is not set.
pub const AUTO_CONCURRENCY_MAX: usize = 4;

/// Bundled plugins that keep state across events (per-key windows): one
/// instance sees every event, whatever `concurrency` says.
pub const STATEFUL_BUNDLED: [&str; 2] = ["throttle", "dedup"];

impl TransformConfig {
    /// Whether this is a bundled plugin that keeps state across events.
    pub fn is_stateful(&self) -> bool {
        STATEFUL_BUNDLED.contains(&self.plugin.get_ref().as_str())
    }

    /// How many instances of the plugin run.
    pub fn concurrency(&self) -> usize {
        if self.is_stateful() {
            return 1;
        }
        self.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(AUTO_CONCURRENCY_MAX)
        })
    }
}

fn default_instances() -> u32 {
    crate::base::settings::DEFAULT_INSTANCES
}
fn default_tables() -> u32 {
    crate::base::settings::DEFAULT_TABLES
}
fn default_memories() -> u32 {
    crate::base::settings::DEFAULT_MEMORIES
}

fn default_stack_kib() -> u64 {
    1024
}

fn default_memory_mib() -> u64 {
    64
}
fn default_time_budget() -> Duration {
    Duration::from_millis(100)
}

/// A named component of the pipeline, with the span of its table header.
#[derive(Debug, Clone)]
pub struct Named<T> {
    pub name: String,
    pub span: Range<usize>,
    pub config: T,
    /// `metrics = { by = [...] }`: its events counted by fields' values.
    pub metrics: Option<crate::base::metrics::FieldMetricsConfig>,
    /// `buffer = {...}` (sinks only): where undelivered events wait.
    pub buffer: Option<crate::base::settings::BufferConfig>,
}

/// A pipeline file, parsed and checked for shape (not yet for topology,
/// which needs the plugins' outputs: see `topology::build`).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The file, for error messages and to resolve relative paths.
    pub locator: Locator,
    /// Where each key of the file is (`batch.max_events`,
    /// `sources.app.batch.max_events`), so that a value refused after
    /// parsing is reported at its own line.
    key_spans: Arc<BTreeMap<String, Range<usize>>>,
    /// The sinks written as `[metrics.NAME]` tables (declared metrics):
    /// their errors name `metrics.NAME`.
    metric_tables: Arc<std::collections::BTreeSet<String>>,
    pub batch: BatchConfig,
    pub admin: Option<AdminConfig>,
    pub reload: ReloadConfig,
    /// How long a stop may take to drain what is in flight; past it the
    /// process exits and what is undelivered stays unacknowledged, so the
    /// sources read it again next time.
    pub shutdown_timeout: Duration,
    /// `[[tests]]`: pipeline unit tests, run by `sluice test`.
    pub tests: Vec<Spanned<TestConfig>>,
    pub sources: Vec<Named<SourceConfig>>,
    pub transforms: Vec<Named<TransformConfig>>,
    pub sinks: Vec<Named<SinkConfig>>,
}

/// `[admin]`: the admin HTTP port (`/health`, `/metrics`, `POST /reload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to listen on, e.g. `127.0.0.1:9598`.
    pub address: String,
    /// An environment variable holding a token every endpoint but
    /// `/health` then requires (`Authorization: Bearer TOKEN`, or
    /// `?token=TOKEN` to open the live page in a browser).
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// Host names the admin port answers to besides IP addresses and
    /// `localhost` (`hosts = ["sluice.internal"]`): a request whose `Host`
    /// is another name is refused, so a page on another site cannot reach
    /// the port through DNS rebinding.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// HTTPS on the admin port (as a listener's `tls` table; paths
    /// relative to the pipeline file).
    #[serde(default)]
    pub tls: Option<crate::base::tls::ServerTls>,
}

impl AdminConfig {
    /// The token `auth_token_env` names (registered as a secret), if set.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(var) = &self.auth_token_env else {
            return Ok(None);
        };
        let token = std::env::var(var)
            .ok()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("[admin] auth_token_env names `{var}`, which is not set")
            })?;
        crate::base::secrets::register(&token);
        Ok(Some(token))
    }
}

/// `[[tests]]`: a pipeline unit test. Events go in at sources, and what
/// comes out of components is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    pub name: String,
    #[serde(default)]
    pub inputs: Vec<TestInput>,
    #[serde(default)]
    pub outputs: Vec<TestOutput>,
}

/// Events fed to one source (every other source gives nothing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    pub source: String,
    /// Events as tables.
    #[serde(default)]
    pub events: Vec<toml::Value>,
    /// Raw lines, read as the source would (JSON or text).
    #[serde(default)]
    pub lines: Vec<String>,
}

/// What must come out of a component (`mask`, `router.errors`, a sink).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    pub component: String,
    /// Exactly these events, in order; fields the expected event lacks
    /// (such as `timestamp`) are not compared.
    #[serde(default)]
    pub events: Option<Vec<toml::Value>>,
    /// Exactly this many events (0: everything was dropped or went elsewhere).
    #[serde(default)]
    pub count: Option<usize>,
    /// Conditions every event that comes out must meet.
    #[serde(default)]
    pub conditions: Vec<TestCondition>,
}

/// A field condition in a test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCondition {
    pub field: String,
    #[serde(default)]
    pub equals: Option<toml::Value>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub not_contains: Option<String>,
    #[serde(default)]
    pub exists: Option<bool>,
}

/// `[reload]`: hot reload of plugin files and of the pipeline file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files for changes (SIGHUP and `POST /reload` work anyway).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// How long a changed file must stay unchanged before it is loaded
    /// (and, with `poll`, how often the files are checked).
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    /// Check every `poll_interval` instead of watching the files' folders
    /// for changes (for filesystems that do not report them).
    #[serde(default)]
    pub poll: bool,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}
fn default_poll() -> Duration {
    Duration::from_millis(500)
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            poll_interval: default_poll(),
            poll: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    reload: ReloadConfig,
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    shutdown_timeout: Duration,
    #[serde(default)]
    tests: Vec<Spanned<TestConfig>>,
    #[serde(default)]
    transforms: BTreeMap<String, Spanned<TransformConfig>>,
}

/// Names a user may not give a component: they mean something already.
pub const RESERVED: [&str; 1] = ["_dead_letters"];

impl PipelineConfig {
    /// Read and parse a pipeline file.
    /// A folder is read as one pipeline: its `*.toml` files in name order
    /// (see [`files`]).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let files = files::pipeline_files(path)?;
        Ok(Self::parse_files(&files, &|name| std::env::var(name).ok())?)
    }

    /// Parse pipeline text; `path` names it in errors. `${VAR}` takes
    /// variables from the environment.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with_env(path, text, &|name| std::env::var(name).ok())
    }

    /// [`PipelineConfig::parse`] with the variables of `env`.
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::parse_files(&[(path.to_path_buf(), text.to_string())], env)
    }

    /// Parse a pipeline made of several files (merged as [`files`] says).
    pub fn parse_files(
        files: &[(PathBuf, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let locator = Locator::of_files(files);
        let mut doc = files::parse_merged(files, &locator)?;
        let dir = locator.file().parent().unwrap_or(Path::new("."));
        interpolate::interpolate(doc.get_mut(), dir, env)
            .map_err(|e| locator.error(Some(e.span), e.key, e.message))?;
        let mut key_spans = BTreeMap::new();
        collect_spans(doc.get_ref(), "", &mut key_spans);
        let sources = take(doc.get_mut(), "sources");
        let sinks = take(doc.get_mut(), "sinks");
        let metric_tables = take(doc.get_mut(), "metrics");
        let root: Root = Root::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
            let mut err = locator.from_toml(&e, "");
            // `sources` and `sinks` were taken out before this read.
            if err.message.starts_with("unknown field") {
                if let Some(i) = err.message.find(", expected") {
                    err.message.truncate(i);
                    err.message.push_str(", expected one of `batch`, `admin`, `reload`, `shutdown_timeout`, `sources`, `transforms`, `sinks`, `metrics`");
                }
            }
            err
        })?;

        let sources = tagged::<SourceConfig>(&locator, "sources", sources)?;
        let mut sinks = tagged::<SinkConfig>(&locator, "sinks", sinks)?;
        let declared = declared_metrics(&locator, metric_tables)?;
        let metric_tables = declared.iter().map(|m| m.name.clone()).collect();
        sinks.extend(declared);
        let transforms = root
            .transforms
            .into_iter()
            .map(|(name, t)| Named {
                name,
                span: t.span(),
                metrics: t.get_ref().metrics.clone(),
                buffer: None,
                config: t.into_inner(),
            })
            .collect::<Vec<_>>();

        let config = Self {
            locator,
            key_spans: Arc::new(key_spans),
            metric_tables: Arc::new(metric_tables),
            batch: root.batch,
            admin: root.admin,
            reload: root.reload,
            shutdown_timeout: root.shutdown_timeout,
            tests: root.tests,
            sources,
            transforms,
            sinks,
        };
        config.check_names()?;
        config.check_metric_names()?;
        config.check_bounds()?;
        config.check_listeners()?;
        Ok(config)
    }

    /// No two listeners (the admin port, HTTP sources) on one address: the
    /// second would fail to start only once the pipeline runs.
    fn check_listeners(&self) -> Result<(), ConfigError> {
        let mut listeners: Vec<(String, &str)> = Vec::new();
        if let Some(a) = &self.admin {
            listeners.push(("admin.address".into(), &a.address));
        }
        for s in &self.sources {
            for (key, a) in s.config.kind().listens_on() {
                listeners.push((format!("sources.{}.{key}", s.name), a));
            }
        }
        let resolve = |a: &str| -> Vec<std::net::SocketAddr> {
            std::net::ToSocketAddrs::to_socket_addrs(a)
                .map(|it| it.filter(|s| s.port() != 0).collect())
                .unwrap_or_default()
        };
        let clash = |a: &std::net::SocketAddr, b: &std::net::SocketAddr| {
            a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        for (i, (key, address)) in listeners.iter().enumerate() {
            let mine = resolve(address);
            for (other_key, other) in &listeners[..i] {
                let theirs = resolve(other);
                if mine.iter().any(|a| theirs.iter().any(|b| clash(a, b))) {
                    return Err(self.key_error(
                        key,
                        format!("`{address}` is where {other_key} (`{other}`) listens already; give each listener its own address"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where a key is written in the file (its dotted path), if it is.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.key_spans.get(key).cloned()
    }

    /// An error about a key, at its line.
    fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.locator.error(self.span_of(key), key, message)
    }

    /// Every size, count and duration of the pipeline's own settings and
    /// of its transforms within bounds (the kinds check theirs in `build`).
    fn check_bounds(&self) -> Result<(), ConfigError> {
        let check =
            |key: String, r: Result<(), BuildError>| r.map_err(|e| self.key_error(&key, e.message));
        let by_fields = self
            .sources
            .iter()
            .map(|c| ("sources", &c.name, &c.metrics))
            .chain(
                self.transforms
                    .iter()
                    .map(|c| ("transforms", &c.name, &c.metrics)),
            )
            .chain(self.sinks.iter().map(|c| ("sinks", &c.name, &c.metrics)));
        for (section, name, m) in by_fields {
            if let Some(m) = m {
                let key = |k: &str| format!("{section}.{name}.metrics.{k}");
                m.check().map_err(|e| {
                    let k = if e.starts_with("max_series") {
                        "max_series"
                    } else {
                        "by"
                    };
                    self.locator.error(
                        self.span_of(&key(k)).or(self.span_of(&key("by"))),
                        key(k),
                        e,
                    )
                })?;
            }
        }
        let b = &self.batch;
        check(
            "batch.max_events".into(),
            bounded("", b.max_events, 1, MAX_BATCH_EVENTS),
        )?;
        check("batch.buffer".into(), bounded("", b.buffer, 1, 65_536))?;
        check(
            "batch.max_wait".into(),
            bounded("", b.max_wait, Duration::ZERO, HOUR),
        )?;
        check(
            "shutdown_timeout".into(),
            bounded("", self.shutdown_timeout, Duration::ZERO, HOUR),
        )?;
        check(
            "reload.poll_interval".into(),
            bounded(
                "",
                self.reload.poll_interval,
                Duration::from_millis(10),
                HOUR,
            ),
        )?;
        for s in &self.sources {
            let Some(o) = s.config.kind().batch() else {
                continue;
            };
            let prefix = format!("sources.{}.batch", s.name);
            if let Some(n) = o.max_events {
                check(
                    format!("{prefix}.max_events"),
                    bounded("", n, 1, MAX_BATCH_EVENTS),
                )?;
            }
            if let Some(w) = o.max_wait {
                check(
                    format!("{prefix}.max_wait"),
                    bounded("", w, Duration::ZERO, HOUR),
                )?;
            }
        }
        for t in &self.transforms {
            let c = &t.config;
            let prefix = format!("transforms.{}", t.name);
            check(
                format!("{prefix}.memory_mib"),
                bounded("", c.memory_mib, 1, 4096),
            )?;
            // The plugin runs on a thread with a 2 MiB stack: more wasm
            // stack than that would overflow the thread, not the plugin.
            check(
                format!("{prefix}.stack_kib"),
                bounded("", c.stack_kib, 64, 1024),
            )?;
            check(
                format!("{prefix}.instances"),
                bounded("", c.instances, 1, 1000),
            )?;
            check(format!("{prefix}.tables"), bounded("", c.tables, 1, 10_000))?;
            if let Some(n) = c.concurrency {
                check(format!("{prefix}.concurrency"), bounded("", n, 1, 64))?;
                if n > 1 && c.is_stateful() {
                    check(
                        format!("{prefix}.concurrency"),
                        Err(crate::base::settings::BuildError::key(
                            "",
                            format!(
                                "`{}` keeps per-key state across events: it runs as one instance (remove `concurrency`)",
                                c.plugin.get_ref()
                            ),
                        )),
                    )?;
                }
            }
            check(
                format!("{prefix}.memories"),
                bounded("", c.memories, 1, 100),
            )?;
            check(
                format!("{prefix}.time_budget"),
                bounded(
                    "",
                    c.time_budget,
                    Duration::from_millis(1),
                    Duration::from_secs(60),
                ),
            )?;
        }
        Ok(())
    }

    fn check_names(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let all = self
            .sources
            .iter()
            .map(|s| ("sources", &s.name, &s.span))
            .chain(
                self.transforms
                    .iter()
                    .map(|t| ("transforms", &t.name, &t.span)),
            )
            .chain(
                self.sinks
                    .iter()
                    .map(|s| (self.sink_section(&s.name), &s.name, &s.span)),
            );
        for (kind, name, span) in all {
            let key = format!("{kind}.{name}");
            if RESERVED.contains(&name.as_str()) || name.contains('.') || name.is_empty() {
                return Err(self.locator.error(
                    Some(span.clone()),
                    key,
                    "this name is reserved or contains a dot; pick another",
                ));
            }
            if let Some(other) = seen.insert(name, kind) {
                return Err(self.locator.error(
                    Some(span.clone()),
                    key,
                    format!(
                        "the name `{name}` is already used by {other}.{name}; names must be unique"
                    ),
                ));
            }
        }
        if self.sources.is_empty() {
            return Err(self.locator.error(
                None,
                "sources",
                "a pipeline needs at least one source",
            ));
        }
        if self.sinks.is_empty() {
            return Err(self
                .locator
                .error(None, "sinks", "a pipeline needs at least one sink"));
        }
        Ok(())
    }

    /// No two `metric` sinks declare one name: `/metrics` would carry the
    /// family twice, which Prometheus refuses whole.
    fn check_metric_names(&self) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &self.sinks {
            let SinkConfig::Metric(m) = &s.config else {
                continue;
            };
            let metric = m.metric_name(&s.name);
            if let Some(other) = seen.insert(metric, &s.name) {
                let key = match m.name {
                    Some(_) => format!("{}.{}.name", self.sink_section(&s.name), s.name),
                    None => format!("{}.{}", self.sink_section(&s.name), s.name),
                };
                let span = self.span_of(&key).unwrap_or_else(|| s.span.clone());
                return Err(self.locator.error(
                    Some(span),
                    key,
                    format!(
                        "the metric `{metric}` is declared by {}.{other} already; give each its own name",
                        self.sink_section(other)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The folder of the pipeline file: relative paths resolve against it.
    /// The folder and settings of sink `s`'s disk buffer, if it has one:
    /// `path`, else `buffers/PIPELINE/SINK` under the state directory, or
    /// `.sluice/buffers/PIPELINE/SINK` next to the pipeline file.
    pub fn buffer_dir(
        &self,
        s: &Named<SinkConfig>,
    ) -> Option<(PathBuf, crate::base::settings::DiskBufferConfig)> {
        let crate::base::settings::BufferConfig::Disk(d) = s.buffer.as_ref()? else {
            return None;
        };
        let path = match &d.path {
            Some(p) => self.build_context(&s.name).resolve_state(p),
            None => {
                let pipeline = self
                    .locator
                    .file()
                    .file_stem()
                    .map_or_else(|| "pipeline".into(), |s| s.to_string_lossy().into_owned());
                let rel = Path::new("buffers").join(pipeline).join(&s.name);
                match crate::base::settings::state_dir() {
                    Some(state) => state.join(rel),
                    None => self.dir().join(".sluice").join(rel),
                }
            }
        };
        Some((path, d.clone()))
    }

    pub fn dir(&self) -> &Path {
        self.locator.file().parent().unwrap_or(Path::new("."))
    }

    /// Resolve a path written in the pipeline file: relative to the file.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.build_context("").resolve(path)
    }

    /// The admin token `[admin] auth_token_env` names, if one does; an
    /// unset variable is an error at that key's line.
    pub fn admin_token(&self) -> Result<Option<String>, ConfigError> {
        match &self.admin {
            Some(a) => a
                .token()
                .map_err(|e| self.key_error("admin.auth_token_env", e.to_string())),
            None => Ok(None),
        }
    }

    /// What the `build` of component `name` is given.
    pub fn build_context<'a>(&'a self, name: &'a str) -> BuildContext<'a> {
        BuildContext {
            name,
            dir: self.dir(),
            batch: self.batch,
        }
    }

    /// Build a source, as `sluice validate` and a start do: an error names
    /// the file, line and `sources.NAME.KEY`.
    pub fn build_source(&self, s: &Named<SourceConfig>) -> Result<Box<dyn Source>, ConfigError> {
        s.config
            .kind()
            .build(&self.build_context(&s.name))
            .map_err(|e| self.build_error("sources", s, e))
    }

    /// Build a sink; errors as [`PipelineConfig::build_source`].
    pub fn build_sink(&self, s: &Named<SinkConfig>) -> Result<Box<dyn Sink>, ConfigError> {
        if let Some(crate::base::settings::BufferConfig::Disk(d)) = &s.buffer {
            d.check().map_err(|e| self.build_error("sinks", s, e))?;
        }
        s.config
            .kind()
            .build(&self.build_context(&s.name))
            .map_err(|e| self.build_error("sinks", s, e))
    }

    /// Where sink `name` was written: `sinks`, or `metrics` for a
    /// `[metrics.NAME]` table.
    fn sink_section(&self, name: &str) -> &'static str {
        if self.metric_tables.contains(name) {
            "metrics"
        } else {
            "sinks"
        }
    }

    fn build_error<T>(&self, section: &str, c: &Named<T>, e: BuildError) -> ConfigError {
        let section = match section {
            "sinks" => self.sink_section(&c.name),
            other => other,
        };
        // A `[metrics.NAME]` table says `type` where a sink says `metric`.
        let e = match (section, e.key) {
            ("metrics", Some("metric")) => BuildError {
                key: Some("type"),
                ..e
            },
            _ => e,
        };
        let key = match e.key {
            Some(k) => format!("{section}.{}.{k}", c.name),
            None => format!("{section}.{}", c.name),
        };
        let span = self.span_of(&key).unwrap_or_else(|| c.span.clone());
        self.locator.error(Some(span), key, e.message)
    }
}

/// Most events in one batch: a bound on the memory one batch can take
/// (batches are allocated for this many events).
pub const MAX_BATCH_EVENTS: usize = 1_000_000;

const HOUR: Duration = Duration::from_secs(3600);

/// Record the span of every key of `table` (and of its tables) under its
/// dotted path.
fn collect_spans(table: &DeTable<'_>, prefix: &str, out: &mut BTreeMap<String, Range<usize>>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let DeValue::Table(t) = v.get_ref() {
            collect_spans(t, &path, out);
        }
        out.insert(path, k.span());
    }
}

fn take<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let k = table.keys().find(|k| k.get_ref() == key)?.clone();
    table.remove(&k)
}

/// `[metrics.NAME]`: a metric declared in a table of its own, `type` its
/// kind (`counter`, `gauge`, `histogram`); the same as a `metric` sink
/// named NAME (`sink/metric.rs`), and run as one.
fn declared_metrics(
    locator: &Locator,
    value: Option<Spanned<DeValue<'_>>>,
) -> Result<Vec<Named<SinkConfig>>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        return Err(locator.error(
            Some(span),
            "metrics",
            "expected tables of named metrics: [metrics.NAME]",
        ));
    };
    let mut out = Vec::new();
    for (name, mut entry) in entries {
        let name = name.into_inner().to_string();
        let prefix = format!("metrics.{name}");
        let entry_span = entry.span();
        let DeValue::Table(fields) = entry.get_mut() else {
            return Err(locator.error(Some(entry_span), prefix, "expected a table"));
        };
        if let Some(m) = take(fields, "metric") {
            return Err(locator.error(
                Some(m.span()),
                format!("{prefix}.metric"),
                "in [metrics.NAME], `type` says what it is (counter, gauge or histogram)",
            ));
        }
        let Some(kind) = take(fields, "type") else {
            return Err(locator.error(
                Some(entry_span),
                format!("{prefix}.type"),
                "missing `type`: counter, gauge or histogram",
            ));
        };
        // As a `metric` sink: `metric` is the kind, `type` the sink's.
        let at = kind.span();
        fields.insert(Spanned::new(at.clone(), "metric".into()), kind);
        fields.insert(
            Spanned::new(at.clone(), "type".into()),
            Spanned::new(at, DeValue::String("metric".into())),
        );
        let config = crate::sink::metric::MetricConfig::deserialize(ValueDeserializer::from(entry))
            .map_err(|e| {
                let mut err = locator.from_toml(&e, &prefix);
                if err.key.ends_with(".metric") {
                    err.key = format!("{prefix}.type");
                    err.message = err.message.replace("`metric`", "`type`");
                }
                err
            })?;
        out.push(Named {
            name,
            span: entry_span,
            config: SinkConfig::Metric(config),
            metrics: None,
            buffer: None,
        });
    }
    Ok(out)
}

fn tagged<T: Tagged>(
    locator: &Locator,
    section: &str,
    value: Option<Spanned<DeValue<'_>>>,
) -> Result<Vec<Named<T>>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        return Err(locator.error(Some(span), section, "expected a table of named components"));
    };
    let mut out = Vec::new();
    for (name, mut entry) in entries {
        let name = name.into_inner().to_string();
        let prefix = format!("{section}.{name}");
        let entry_span = entry.span();
        // `metrics` is a key of every component, not of its kind.
        let metrics = match entry.get_mut() {
            DeValue::Table(fields) => take(fields, "metrics"),
            _ => None,
        };
        let metrics = metrics
            .map(|m| {
                crate::base::metrics::FieldMetricsConfig::deserialize(ValueDeserializer::from(m))
                    .map_err(|e| locator.from_toml(&e, &format!("{prefix}.metrics")))
            })
            .transpose()?;
        // `buffer` too, of every sink.
        let buffer = match entry.get_mut() {
            DeValue::Table(fields) => take(fields, "buffer"),
            _ => None,
        };
        let buffer = match buffer {
            Some(b) if section != "sinks" => {
                return Err(locator.error(
                    Some(b.span()),
                    format!("{prefix}.buffer"),
                    "`buffer` is a key of sinks",
                ))
            }
            Some(b) => {
                let span = b.span();
                let parsed =
                    crate::base::settings::BufferConfig::deserialize(ValueDeserializer::from(b));
                Some(parsed.map_err(|e| match e.span() {
                    Some(_) => locator.from_toml(&e, &format!("{prefix}.buffer")),
                    // Errors of a value taken out of its table carry no
                    // place: the `buffer` value's own.
                    None => locator.error(
                        Some(span),
                        format!("{prefix}.buffer"),
                        e.message().trim().to_string(),
                    ),
                })?)
            }
            None => None,
        };
        let DeValue::Table(fields) = entry.get_ref() else {
            return Err(locator.error(Some(entry_span), prefix, "expected a table"));
        };
        let kind = fields
            .iter()
            .find(|(k, _)| k.get_ref() == "type")
            .map(|(_, v)| v);
        let kind = match kind.map(|v| (v.span(), v.get_ref())) {
            Some((_, DeValue::String(s))) if T::KINDS.contains(&s.as_ref()) => s.to_string(),
            Some((span, DeValue::String(s))) => {
                return Err(locator.error(
                    Some(span),
                    format!("{prefix}.type"),
                    format!(
                        "unknown type `{s}`, expected one of: {}",
                        T::KINDS.join(", ")
                    ),
                ))
            }
            Some((span, _)) => {
                return Err(locator.error(
                    Some(span),
                    format!("{prefix}.type"),
                    "expected a string",
                ));
            }
            None => {
                return Err(locator.error(
                    Some(entry_span),
                    format!("{prefix}.type"),
                    format!("missing `type`, expected one of: {}", T::KINDS.join(", ")),
                ))
            }
        };
        let config = T::from_kind(&kind, ValueDeserializer::from(entry))
            .map_err(|e| locator.from_toml(&e, &prefix))?;
        out.push(Named {
            name,
            span: entry_span,
            config,
            metrics,
            buffer,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Pipeline-file-shaped text: keys, tables and values in any order.
    fn pipeline_text() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            Just("[sources.a]".to_string()),
            Just("[sinks.out]".to_string()),
            Just("[transforms.t]".to_string()),
            Just("[batch]".to_string()),
            Just("type = \"generate\"".to_string()),
            Just("type = \"stdout\"".to_string()),
            Just("inputs = [\"a\"]".to_string()),
            "[a-z_]{1,12} = [0-9]{1,20}".prop_map(|s| s),
            "[a-z_.]{1,12} = \"[^\"\\\\]{0,12}\"".prop_map(|s| s),
            "\\PC{0,30}".prop_map(|s| s),
        ];
        proptest::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
    }

    proptest! {
        /// Whatever the text, parsing answers (no panic), and an error
        /// names a line of the file.
        #[test]
        fn prop_pipeline_files_never_panic(text in pipeline_text()) {
            if let Err(e) = PipelineConfig::parse(Path::new("p.toml"), &text) {
                prop_assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e}");
            }
        }
    }
}
