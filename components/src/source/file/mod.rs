//! `type = "file"`: files of JSON or text lines, read once or tailed.
//!
//! `path` may be a glob (`logs/*.log`); with `follow`, new files are picked
//! up and every file is followed as it grows, the way Fluent Bit's tail
//! does. Files are known by device, inode and a fingerprint of their first
//! bytes, so a rotation by rename-and-create reads the old file to its end
//! (for `rotate_wait`) and the new one from its start; a file truncated in
//! place (`copytruncate`) is read again from 0, after the lines it held past
//! our position are read from the copy if the copy lies beside it. With
//! `checkpoint`, positions are saved once delivered, and a restart resumes
//! there.
//!
//! Reading is blocking I/O on a thread of its own; batches are handed to
//! the async pipeline from it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::checkpoint::Checkpoints;
use super::{runs_itself, Format, Source, SourceContext, SourceKind};
use crate::base::settings::{
    bounded, duration, size, BatchOverride, BuildContext, BuildError, TypeTag,
};

const HOUR: Duration = Duration::from_secs(3600);

/// Where a file found at start without a checkpoint is read from.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    /// Only what is written from now on (files that appear later are read
    /// from their beginning all the same).
    End,
}

/// What happens to a line longer than `max_line`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LongLines {
    /// Its first `max_line` bytes become the event; the rest is skipped.
    #[default]
    Truncate,
    /// Its first `max_line` bytes go to the dead letters.
    DeadLetter,
}

/// `[sources.NAME] type = "file"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// A file or a glob, relative to the pipeline file.
    #[serde(deserialize_with = "glob_pattern")]
    pub path: PathBuf,
    /// Keep reading as files grow and appear, until shutdown.
    #[serde(default)]
    pub follow: bool,
    /// How often files are checked for new data, and the glob for new
    /// files, when they are polled.
    #[serde(default = "default_poll", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub poll_interval: Duration,
    /// Poll every `poll_interval` instead of watching the files' folder for
    /// changes (for filesystems that do not report them, such as NFS).
    #[serde(default)]
    pub poll: bool,
    #[serde(default)]
    pub format: Format,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    /// Where read positions are saved (a JSON file); none: not saved.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Longest line; longer ones are handled by `long_lines`.
    #[serde(default = "default_max_line", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    #[schemars(range(min = 1, max = 1 << 30))]
    pub max_line: usize,
    #[serde(default)]
    pub long_lines: LongLines,
    /// Emit a last line that has no newline yet after this long without
    /// growth; without it, such a line waits for its newline.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Duration>")]
    pub partial_timeout: Option<Duration>,
    /// How long a file that was moved away or deleted is still read.
    #[serde(default = "default_rotate_wait", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub rotate_wait: Duration,
    /// Read `*.gz` files whole, decompressed (otherwise they are skipped).
    #[serde(default)]
    pub gzip: bool,
    /// An age identity file (`age-keygen` writes one): `*.age` and
    /// `*.gz.age` files are read whole, decrypted (otherwise skipped).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// The identities, once `build` has read them.
    #[serde(skip)]
    pub identities: Option<crate::base::crypt::Identities>,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
    /// Join several lines into one record: `{ start = "REGEX" }`,
    /// `{ continue = "REGEX" }` or `{ preset = "python" | "java" | "go" }`.
    #[serde(default)]
    pub multiline: Option<super::records::MultilineConfig>,
    /// With `format = "cri"` or `"docker"`: add `kubernetes` (namespace,
    /// pod, uid, container) read from the file's path.
    #[serde(default)]
    pub kubernetes: bool,
}

fn default_poll() -> Duration {
    Duration::from_millis(250)
}
fn default_max_line() -> usize {
    1 << 20
}
fn default_rotate_wait() -> Duration {
    Duration::from_secs(5)
}

fn glob_pattern<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d)?;
    glob::Pattern::new(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid glob: {e}")))?;
    Ok(PathBuf::from(text))
}

pub mod find;
mod tail;
mod watch;

impl SourceKind for FileConfig {
    /// The config with its paths resolved against the pipeline file.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        bounded("max_line", self.max_line, 1, 1 << 30)?;
        bounded(
            "poll_interval",
            self.poll_interval,
            Duration::from_millis(1),
            HOUR,
        )?;
        bounded("rotate_wait", self.rotate_wait, Duration::ZERO, 24 * HOUR)?;
        if let Some(m) = &self.multiline {
            m.build(self.max_line)?;
        }
        if self.kubernetes && !matches!(self.format, Format::Cri | Format::Docker) {
            return Err(BuildError::key(
                "kubernetes",
                "reads container log files: set `format = \"cri\"` or `\"docker\"` too",
            ));
        }
        let mut c = self.clone();
        c.path = cx.resolve(&c.path);
        c.checkpoint = c.checkpoint.map(|p| cx.resolve_state(&p));
        if let Some(file) = &c.identity_file {
            let ids = crate::base::crypt::Identities::from_file(&cx.resolve(file))
                .map_err(|e| BuildError::key("identity_file", e))?;
            c.identities = Some(ids);
        }
        Ok(Box::new(c))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(FileConfig);

impl FileConfig {
    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let checkpoints = self
            .checkpoint
            .as_deref()
            .map(Checkpoints::load)
            .transpose()?;
        let known = checkpoints
            .as_ref()
            .map(|c| {
                c.saved()
                    .map(|s| (s.id, (s.fingerprint, s.path.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let handle = tokio::runtime::Handle::current();
        let name = ctx.name.clone();
        tokio::task::spawn_blocking(move || {
            tail::Tailer::new(self, ctx, handle, checkpoints, known).run()
        })
        .await
        .with_context(|| format!("source {name}: the reading thread failed"))?
    }
}
