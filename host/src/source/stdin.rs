//! `type = "stdin"`: lines from standard input.

use serde::Deserialize;

use super::{read_lines, runs_itself, Format, LineDecoder, Source, SourceContext, SourceKind};
use crate::base::settings::{BatchOverride, BuildContext, BuildError, TypeTag};

/// `[sources.NAME] type = "stdin"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

impl SourceKind for StdinConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        Ok(Box::new(self.clone()))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(StdinConfig);

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
