//! What component configs share, below the pipeline file: the value types
//! of their keys (durations, sizes, batching, the `type` tag), the
//! dispatch on `type`, and what a component's `build` is given and returns.
//!
//! The pipeline file (`config`) and the component kinds (`source`, `sink`)
//! both import this; neither imports the other's internals, so there is
//! no cycle between `config` and the kinds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::ValueDeserializer;

/// The default counts of core instances, tables and memories one plugin
/// instance may make: enough for the components componentize-py and
/// componentize-js make (a Rust plugin needs a few).
pub const DEFAULT_INSTANCES: u32 = 64;
pub const DEFAULT_TABLES: u32 = 64;
pub const DEFAULT_MEMORIES: u32 = 16;

/// What a component's `build` knows of the pipeline around it.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    /// The component's name.
    pub name: &'a str,
    /// The folder of the pipeline file: relative paths resolve against it.
    pub dir: &'a Path,
    /// The pipeline's batching, before a source's own override.
    pub batch: BatchConfig,
}

impl BuildContext<'_> {
    /// Resolve a path written in the pipeline file: relative to the file.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// Resolve the path of state sluice writes (checkpoints): relative to
    /// the service's state directory when systemd gives one
    /// (`StateDirectory=`, as `$STATE_DIRECTORY`), else to the file.
    pub fn resolve_state(&self, path: &Path) -> PathBuf {
        match state_dir() {
            Some(state) if path.is_relative() => state.join(path),
            _ => self.resolve(path),
        }
    }
}

/// The state directory systemd gives a service (`$STATE_DIRECTORY`, the
/// first one when several are listed).
pub fn state_dir() -> Option<PathBuf> {
    let v = std::env::var_os("STATE_DIRECTORY")?;
    let first = std::env::split_paths(&v).next()?;
    (!first.as_os_str().is_empty()).then_some(first)
}

/// Why a component cannot be built from its config. The topology turns it
/// into a `ConfigError` (the `sluice` crate's) naming the file, line and
/// `sources.NAME.KEY`, so `sluice validate` reports it like a parse error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// The key of the component's table at fault (`auth_token_env`), if one is.
    pub key: Option<&'static str>,
    pub message: String,
}

/// Check that a setting lies within `lo..=hi`, naming the key and the
/// bounds when it does not. Every size, count and duration a config takes
/// is bounded, so that no value can ask for all the memory or never end.
pub fn bounded<T: PartialOrd + std::fmt::Debug>(
    key: &'static str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), BuildError> {
    if value < lo || value > hi {
        return Err(BuildError::key(
            key,
            format!("{value:?} is out of bounds: between {lo:?} and {hi:?}"),
        ));
    }
    Ok(())
}

impl BuildError {
    /// An error about one key of the component's table.
    pub fn key(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key: Some(key),
            message: message.into(),
        }
    }

    /// An error about the component as a whole.
    pub fn whole(message: impl Into<String>) -> Self {
        Self {
            key: None,
            message: message.into(),
        }
    }
}

/// Batching: how many events move together and how long a source waits to
/// fill a batch. What hand-made loggers call LOG_BUFFER_SIZE and
/// LOG_FLUSH_INTERVAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one batch.
    #[serde(default = "default_max_events")]
    #[schemars(range(min = 1, max = MAX_BATCH_EVENTS))]
    pub max_events: usize,
    /// Longest a source holds a partial batch before sending it.
    #[serde(default = "default_max_wait", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub max_wait: Duration,
    /// Batches in flight between two stages (the bounded channel's size);
    /// a full channel is backpressure.
    #[serde(default = "default_buffer")]
    #[schemars(range(min = 1, max = 65_536))]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchOverride {
    /// Most events in one batch of this source (instead of `[batch]`'s).
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_BATCH_EVENTS))]
    pub max_events: Option<usize>,
    /// Longest this source holds a partial batch (instead of `[batch]`'s).
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Duration>")]
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

/// `"200ms"`, `"1s"`, `"2m"` (humantime) or a number of milliseconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize, schemars::JsonSchema)]
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

    /// As it is written in a pipeline file (`"500ms"`, `"30s"`, `"1m 30s"`):
    /// how the schema shows a default.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<Raw>::deserialize(d)?.map(convert).transpose()
        }

        pub fn serialize<S: serde::Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Sizes: a number of bytes or `"512KiB"`, `"10MiB"`, `"1MB"`.
pub mod size {
    use serde::{Deserialize, Deserializer};

    /// `1048576`, `"512KiB"`, `"10MiB"`, `"1MB"`.
    pub use sluice_common::units::size as parse;

    #[derive(Deserialize, schemars::JsonSchema)]
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

    /// A number of bytes: how the schema shows a default.
    pub fn serialize<S: serde::Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n as u64)
    }

    pub mod option {
        use serde::Deserializer;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
            super::deserialize(d).map(Some)
        }

        pub fn serialize<S: serde::Serializer>(n: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
            match n {
                Some(n) => super::serialize(n, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// How the pipeline file's own value types look in the JSON Schema
/// (`sluice schema`): stand-ins named in `#[schemars(with = ...)]`.
pub mod schema;

/// Tags the `type` key is consumed by [`Tagged`] dispatch; variant structs
/// declare it so `deny_unknown_fields` accepts it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub struct TypeTag(#[allow(dead_code)] String);

impl TypeTag {
    /// The tag of a config made in code (one kind built on another's).
    pub fn new(kind: &str) -> Self {
        Self(kind.to_string())
    }
}

/// Most events in one batch: a bound on the memory one batch can take
/// (batches are allocated for this many events).
pub const MAX_BATCH_EVENTS: usize = 1_000_000;

/// The task a started source or sink is: it runs until its input closes (a
/// sink) or it is told to stop (a source), and says how it ended.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Declares the closed set of kinds of one component family: the enum that
/// a `[sources.NAME]` or `[sinks.NAME]` table becomes, its `type` dispatch,
/// and access to the chosen kind through the family's interface. Adding a
/// kind is one line here plus the kind's own file.
#[macro_export]
macro_rules! kinds {
    (
        $(#[$meta:meta])*
        pub enum $enum:ident: dyn $trait:ident {
            $( $(#[$vmeta:meta])* $kind:literal => $variant:ident($ty:ty), )*
        }
        internal {
            $( $(#[$imeta:meta])* $ivariant:ident($ity:ty), )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $( $(#[$vmeta])* $variant($ty), )*
            $( $(#[$imeta])* $ivariant($ity), )*
        }

        impl $crate::base::settings::Tagged for $enum {
            const KINDS: &'static [&'static str] = &[$($kind),*];

            fn from_kind(
                kind: &str,
                table: ::toml::de::ValueDeserializer<'_>,
            ) -> Result<Self, ::toml::de::Error> {
                match kind {
                    $( $kind => Ok($enum::$variant($crate::base::settings::variant(table)?)), )*
                    other => unreachable!("kind {other} is not in KINDS"),
                }
            }
        }

        impl $enum {
            /// Each kind a pipeline file can name, with the JSON Schema of
            /// its table (`sluice schema`).
            pub fn kind_schemas(
                generator: &mut ::schemars::SchemaGenerator,
            ) -> Vec<(&'static str, ::schemars::Schema)> {
                vec![$( ($kind, <$ty as ::schemars::JsonSchema>::json_schema(generator)), )*]
            }

            /// The `type` it was chosen by (`"internal"` for the kinds a
            /// pipeline file cannot name).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $( $enum::$variant(_) => $kind, )*
                    $( $enum::$ivariant(_) => "internal", )*
                }
            }

            /// The chosen kind, through the interface every kind implements.
            pub fn kind(&self) -> &dyn $trait {
                match self {
                    $( $enum::$variant(c) => c, )*
                    $( $enum::$ivariant(c) => c, )*
                }
            }

            /// The same, mutably.
            pub fn kind_mut(&mut self) -> &mut dyn $trait {
                match self {
                    $( $enum::$variant(c) => c, )*
                    $( $enum::$ivariant(c) => c, )*
                }
            }
        }
    };
}
pub use crate::kinds;

/// `buffer = {...}` of a sink: where the events it has not delivered wait.
/// `memory` (the default): in its bounded input channel, so a slow sink
/// pushes back onto the sources. `disk`: in a segment log on disk, so the
/// sources are acknowledged as soon as the events are there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferConfig {
    Memory,
    Disk(DiskBufferConfig),
}

/// `buffer = { type = "disk", ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskBufferConfig {
    /// Most bytes on disk (`"1GiB"`, the default); past it `when_full`.
    #[serde(default = "default_buffer_size", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    pub max_size: usize,
    #[serde(default)]
    pub when_full: WhenFull,
    /// The folder (default: `buffers/PIPELINE/SINK` under the state
    /// directory, or `.sluice/buffers/PIPELINE/SINK` next to the pipeline
    /// file without one).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

fn default_buffer_size() -> usize {
    1 << 30
}

/// What a full disk buffer does with new events.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Take nothing more until there is room: backpressure reaches the
    /// sources (HTTP 503, files and streams not read).
    #[default]
    Block,
    /// Drop the new events (counted in `sluice_buffer_dropped_total`).
    DropNewest,
    /// Send the new events to the dead letters, with the reason.
    DeadLetter,
}

impl DiskBufferConfig {
    /// Check the bounds.
    pub fn check(&self) -> Result<(), BuildError> {
        bounded("buffer.max_size", self.max_size, 1 << 20, 1 << 44)
    }
}
