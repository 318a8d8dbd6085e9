//! `type = "stdin"`: lines from standard input.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::stdin";

use serde::Deserialize;

use super::records::Records;
use super::{read_lines, runs_itself, Format, LineDecoder, Source, SourceContext, SourceKind};
use crate::base::settings::{bounded, size, BatchOverride, BuildContext, BuildError, TypeTag};
use crate::base::timestamp::TimestampRules;

/// `[sources.NAME] type = "stdin"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    #[serde(default)]
    pub format: Format,
    /// Longest line kept whole: a longer one is cut to its first `max_line`
    /// bytes (counted in `sluice_file_long_lines_total`).
    #[serde(default = "default_max_line", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    #[schemars(range(min = 1, max = 1 << 30))]
    pub max_line: usize,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<TimestampRules>,
    /// Join several lines into one record (see the file source).
    #[serde(default)]
    pub multiline: Option<super::records::MultilineConfig>,
}

fn default_max_line() -> usize {
    1 << 20
}

impl SourceKind for StdinConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        bounded("max_line", self.max_line, 1, 1 << 30)?;
        if let Some(m) = &self.multiline {
            m.build(self.max_line)?;
        }
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
        let mut decoder = LineDecoder::new(self.format, &ctx.name, None)
            .with_times(self.timestamp.clone(), ctx.metrics.clone());
        let multiline = match &self.multiline {
            Some(m) => Some(std::sync::Arc::new(
                m.build(self.max_line)
                    .map_err(|e| anyhow::anyhow!("source {}: {e}", ctx.name))?,
            )),
            None => None,
        };
        let mut records = Records::new(self.format, multiline, self.max_line, None);
        let mut stdin = tokio::io::stdin();
        let bytes = read_lines(
            &mut ctx,
            &mut stdin,
            &mut decoder,
            &mut records,
            self.max_line,
        )
        .await?;
        tracing::debug!(target: LOG_TARGET, source = %ctx.name, bytes, "stdin closed");
        Ok(())
    }
}
