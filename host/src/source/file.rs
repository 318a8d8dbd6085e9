//! `type = "file"`: a file of JSON lines or text lines, read once or
//! followed as it grows.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use super::{read_lines, Format, LineDecoder, SourceContext};
use crate::config::{duration, BatchOverride, TypeTag};

/// `[sources.NAME] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// The file, relative to the pipeline file.
    pub path: PathBuf,
    /// Keep reading as the file grows, until shutdown.
    #[serde(default)]
    pub follow: bool,
    /// How often a followed file is checked for new data.
    #[serde(default = "default_poll", with = "duration")]
    pub poll_interval: Duration,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_poll() -> Duration {
    Duration::from_millis(250)
}

impl FileConfig {
    /// Read the file (resolved against the pipeline file by the topology).
    pub async fn run(self, mut ctx: SourceContext) -> anyhow::Result<()> {
        let file = tokio::fs::File::open(&self.path)
            .await
            .with_context(|| format!("source {}: cannot open {}", ctx.name, self.path.display()))?;
        let shown = self.path.display().to_string();
        let mut decoder = LineDecoder::new(self.format, &ctx.name, Some(&shown));
        let mut reader = file;
        let follow = self.follow.then_some(self.poll_interval);
        let bytes = read_lines(&mut ctx, &mut reader, &mut decoder, follow).await?;
        tracing::debug!(source = %ctx.name, path = %shown, bytes, "file source done");
        Ok(())
    }
}
