//! `type = "stdin"`: lines from standard input.

use serde::Deserialize;

use super::{read_lines, Format, LineDecoder, SourceContext};
use crate::config::{BatchOverride, TypeTag};

/// `[sources.NAME] type = "stdin"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

impl StdinConfig {
    /// Read standard input to its end.
    pub async fn run(self, mut ctx: SourceContext) -> anyhow::Result<()> {
        let mut decoder = LineDecoder::new(self.format, &ctx.name, None);
        let mut stdin = tokio::io::stdin();
        let bytes = read_lines(&mut ctx, &mut stdin, &mut decoder).await?;
        tracing::debug!(source = %ctx.name, bytes, "stdin closed");
        Ok(())
    }
}
