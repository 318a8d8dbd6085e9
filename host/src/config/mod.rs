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

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

pub use error::{ConfigError, Locator};

use crate::sink::SinkConfig;
use crate::source::SourceConfig;

/// Batching: how many events move together and how long a source waits to
/// fill a batch. What hand-made loggers call LOG_BUFFER_SIZE and
/// LOG_FLUSH_INTERVAL.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one batch.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Longest a source holds a partial batch before sending it.
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait: Duration,
    /// Batches in flight between two stages (the bounded channel's size);
    /// a full channel is backpressure.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
}

fn default_max_events() -> usize {
    1024
}
fn default_max_wait() -> Duration {
    Duration::from_millis(200)
}
fn default_buffer() -> usize {
    8
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
            max_wait: default_max_wait(),
            buffer: default_buffer(),
        }
    }
}

/// A source's override of the pipeline's batching.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOverride {
    #[serde(default)]
    pub max_events: Option<usize>,
    #[serde(default, with = "duration::option")]
    pub max_wait: Option<Duration>,
}

impl BatchConfig {
    /// These settings with a source's overrides applied.
    pub fn with(self, o: Option<BatchOverride>) -> Self {
        let o = o.unwrap_or_default();
        Self {
            max_events: o.max_events.unwrap_or(self.max_events),
            max_wait: o.max_wait.unwrap_or(self.max_wait),
            buffer: self.buffer,
        }
    }
}

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A bundled plugin's name (`filter`, `route`, `mask`) or a path to a
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
}

/// A pipeline file, parsed and checked for shape (not yet for topology,
/// which needs the plugins' outputs: see `topology::build`).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The file, for error messages and to resolve relative paths.
    pub locator: Locator,
    pub batch: BatchConfig,
    pub admin: Option<AdminConfig>,
    pub reload: ReloadConfig,
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
    /// How often the files are checked.
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
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
    #[serde(default)]
    tests: Vec<Spanned<TestConfig>>,
    #[serde(default)]
    transforms: BTreeMap<String, Spanned<TransformConfig>>,
}

/// Names a user may not give a component: they mean something already.
pub const RESERVED: [&str; 1] = ["_dead_letters"];

impl PipelineConfig {
    /// Read and parse a pipeline file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read pipeline file {}: {e}", path.display()))?;
        Ok(Self::parse(path, &text)?)
    }

    /// Parse pipeline text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let locator = Locator::new(path, text);
        let mut doc = DeTable::parse(text).map_err(|e| locator.from_toml(&e, ""))?;
        let sources = take(doc.get_mut(), "sources");
        let sinks = take(doc.get_mut(), "sinks");
        let root: Root = Root::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| {
            let mut err = locator.from_toml(&e, "");
            // `sources` and `sinks` were taken out before this read.
            if err.message.starts_with("unknown field") {
                if let Some(i) = err.message.find(", expected") {
                    err.message.truncate(i);
                    err.message.push_str(", expected one of `batch`, `admin`, `reload`, `sources`, `transforms`, `sinks`");
                }
            }
            err
        })?;

        let sources = tagged::<SourceConfig>(&locator, "sources", sources)?;
        let sinks = tagged::<SinkConfig>(&locator, "sinks", sinks)?;
        let transforms = root
            .transforms
            .into_iter()
            .map(|(name, t)| Named {
                name,
                span: t.span(),
                config: t.into_inner(),
            })
            .collect::<Vec<_>>();

        let config = Self {
            locator,
            batch: root.batch,
            admin: root.admin,
            reload: root.reload,
            tests: root.tests,
            sources,
            transforms,
            sinks,
        };
        config.check_names()?;
        Ok(config)
    }

    fn check_names(&self) -> Result<(), ConfigError> {
        if self.batch.max_events == 0 {
            return Err(self
                .locator
                .error(None, "batch.max_events", "must be at least 1"));
        }
        if self.batch.buffer == 0 {
            return Err(self
                .locator
                .error(None, "batch.buffer", "must be at least 1"));
        }
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
            .chain(self.sinks.iter().map(|s| ("sinks", &s.name, &s.span)));
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

    /// Resolve a path written in the pipeline file: relative to the file.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.locator
                .file()
                .parent()
                .unwrap_or(Path::new("."))
                .join(path)
        }
    }
}

fn take<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let k = table.keys().find(|k| k.get_ref() == key)?.clone();
    table.remove(&k)
}

/// A kind chosen by a `type` key: the closed set of sources or sinks.
pub trait Tagged: Sized {
    /// The accepted values of `type`.
    const KINDS: &'static [&'static str];
    /// Deserialize the table of kind `kind`.
    fn from_kind(kind: &str, table: ValueDeserializer<'_>) -> Result<Self, toml::de::Error>;
}

/// Deserialize one variant struct from a spanned table, keeping spans.
pub fn variant<T: DeserializeOwned>(table: ValueDeserializer<'_>) -> Result<T, toml::de::Error> {
    T::deserialize(table)
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
    for (name, entry) in entries {
        let name = name.into_inner().to_string();
        let prefix = format!("{section}.{name}");
        let entry_span = entry.span();
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
        });
    }
    Ok(out)
}

/// `"200ms"`, `"1s"`, `"2m"` (humantime) or a number of milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Millis(u64),
    }

    fn convert<E: serde::de::Error>(raw: Raw) -> Result<Duration, E> {
        match raw {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(s) => humantime::parse_duration(&s).map_err(|e| {
                E::custom(format!(
                    "invalid duration `{s}`: {e} (write e.g. \"200ms\", \"5s\", \"2m\")"
                ))
            }),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        convert(Raw::deserialize(d)?)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<Raw>::deserialize(d)?.map(convert).transpose()
        }
    }
}

/// Sizes: a number of bytes or `"512KiB"`, `"10MiB"`, `"1MB"`.
pub mod size {
    use serde::{Deserialize, Deserializer};

    /// `1048576`, `"512KiB"`, `"10MiB"`, `"1MB"`.
    pub fn parse(s: &str) -> Result<usize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("invalid size `{s}`"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "kib" => 1024.0,
            "m" | "mb" => 1e6,
            "mib" => 1048576.0,
            "g" | "gb" => 1e9,
            "gib" => 1073741824.0,
            other => {
                return Err(format!(
                    "invalid size unit `{other}` in `{s}` (write e.g. 10MiB)"
                ))
            }
        };
        Ok((n * mult) as usize)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(usize),
        S(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(n),
            Raw::S(s) => parse(&s).map_err(serde::de::Error::custom),
        }
    }

    pub mod option {
        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// Tags the `type` key is consumed by [`Tagged`] dispatch; variant structs
/// declare it so `deny_unknown_fields` accepts it.
#[derive(Debug, Clone, Deserialize)]
pub struct TypeTag(#[allow(dead_code)] String);
