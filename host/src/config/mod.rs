//! The pipeline file: `[batch]`, `[sources.NAME]`, `[transforms.NAME]`,
//! `[sinks.NAME]`.
//!
//! Loading keeps the byte span of every key so that each error names the
//! file, line, column and key. Sources and sinks are a closed set of kinds
//! chosen by their `type`; each kind is a struct with
//! `#[serde(deny_unknown_fields)]`. serde's internally tagged enums buffer
//! their content and lose spans, so the `type` dispatch is done here by hand
//! over toml's spanned document tree.

mod checks;
mod error;
pub mod files;
pub mod interpolate;
pub mod schema;
mod tables;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use error::{ConfigError, Locator};
use tables::*;

use crate::base::settings::{bounded, duration, BatchConfig, BuildContext, BuildError, Tagged};
use crate::sink::{Sink, SinkConfig};
use crate::source::{Source, SourceConfig};

/// What a transform does with an event that makes its plugin fail.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A bundled plugin's name (`filter`, `route`, `mask`, `remap`,
    /// `encrypt`, `parse`, `throttle`, `dedup`) or a path to a `.wasm`
    /// component, relative to the pipeline file.
    #[schemars(with = "String")]
    pub plugin: Spanned<String>,
    /// Components whose output this transform reads.
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// The table passed to the plugin's `init`, as JSON.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub config: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub on_error: OnError,
    /// Allow `on_error = "pass"` on a masking plugin.
    #[serde(default)]
    pub allow_unmasked: bool,
    /// Linear memory limit of one plugin instance, in MiB.
    #[serde(default = "default_memory_mib")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_mib: u64,
    /// Time budget of one batch call.
    #[serde(default = "default_time_budget", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub time_budget: Duration,
    /// Wasm stack of one plugin instance, in KiB.
    #[serde(default = "default_stack_kib")]
    #[schemars(range(min = 64, max = 1024))]
    pub stack_kib: u64,
    /// Core instances, tables and memories one plugin instance may make
    /// (Python and JavaScript components need more than Rust ones).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 1000))]
    pub instances: u32,
    /// Tables one plugin instance may make.
    #[serde(default = "default_tables")]
    #[schemars(range(min = 1, max = 10_000))]
    pub tables: u32,
    /// Memories one plugin instance may make.
    #[serde(default = "default_memories")]
    #[schemars(range(min = 1, max = 100))]
    pub memories: u32,
    /// Count the events leaving it by some fields' values.
    #[serde(default)]
    pub metrics: Option<crate::base::metrics::FieldMetricsConfig>,
    /// Instances of the plugin working on consecutive batches, each on a
    /// thread of its own (output kept in batch order). Default: the
    /// machine's cores, at most 4 ([`AUTO_CONCURRENCY_MAX`]); 1 for a plugin
    /// that must see every event itself (counters across events).
    #[serde(default)]
    #[schemars(range(min = 1, max = 64))]
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
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// The test's name, printed by `sluice test`.
    pub name: String,
    /// Events fed to sources.
    #[serde(default)]
    pub inputs: Vec<TestInput>,
    /// What must come out of components.
    #[serde(default)]
    pub outputs: Vec<TestOutput>,
}

/// Events fed to one source (every other source gives nothing).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The source the events enter at.
    pub source: String,
    /// Events as tables.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub events: Vec<toml::Value>,
    /// Raw lines, read as the source would (JSON or text).
    #[serde(default)]
    pub lines: Vec<String>,
}

/// What must come out of a component (`mask`, `router.errors`, a sink).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    /// The component (a source, transform, route output such as
    /// `router.errors`, or sink) whose output is checked.
    pub component: String,
    /// Exactly these events, in order; fields the expected event lacks
    /// (such as `timestamp`) are not compared.
    #[serde(default)]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub events: Option<Vec<toml::Value>>,
    /// Exactly this many events (0: everything was dropped or went elsewhere).
    #[serde(default)]
    pub count: Option<usize>,
    /// Conditions every event that comes out must meet.
    #[serde(default)]
    pub conditions: Vec<TestCondition>,
}

/// A field condition in a test.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCondition {
    /// The field (a dotted path).
    pub field: String,
    /// It equals this value.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub equals: Option<toml::Value>,
    /// It is a string containing this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// It is not a string containing this text.
    #[serde(default)]
    pub not_contains: Option<String>,
    /// It is present (`true`) or absent (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// `[reload]`: hot reload of plugin files and of the pipeline file.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files for changes (SIGHUP and `POST /reload` work anyway).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// How long a changed file must stay unchanged before it is loaded
    /// (and, with `poll`, how often the files are checked).
    #[serde(default = "default_poll", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Root {
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default)]
    admin: Option<AdminConfig>,
    #[serde(default)]
    reload: ReloadConfig,
    #[serde(default = "default_shutdown_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    shutdown_timeout: Duration,
    #[serde(default)]
    #[schemars(with = "Vec<TestConfig>")]
    tests: Vec<Spanned<TestConfig>>,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, TransformConfig>")]
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

    /// Where a key is written in the file (its dotted path), if it is.
    pub fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.key_spans.get(key).cloned()
    }

    /// An error about a key, at its line.
    fn key_error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.locator.error(self.span_of(key), key, message)
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

pub use crate::base::settings::MAX_BATCH_EVENTS;

const HOUR: Duration = Duration::from_secs(3600);

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
