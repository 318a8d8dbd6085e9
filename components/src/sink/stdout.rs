//! `type = "stdout"`: JSON lines on standard output.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use toml::Spanned;

use super::{inputs_field, json_lines, runs_itself, Sink, SinkContext, SinkKind};
use crate::base::settings::{BuildContext, BuildError, TypeTag};

/// `[sinks.NAME] type = "stdout"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Components this sink reads (may be empty for a `fallback` target).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
}

impl SinkKind for StdoutConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(self.clone()))
    }

    inputs_field!();
}
runs_itself!(StdoutConfig);

impl StdoutConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let mut stdout = tokio::io::stdout();
        let mut buf = Vec::new();
        while let Some(batch) = ctx.input.recv().await {
            buf.clear();
            json_lines(&batch, &mut buf);
            let started = std::time::Instant::now();
            if let Err(e) = async {
                stdout.write_all(&buf).await?;
                stdout.flush().await
            }
            .await
            {
                // The batch is not written: its sources must not be told so.
                batch.acks.iter().for_each(|a| a.fail());
                return Err(e.into());
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            ctx.account(&batch);
        }
        Ok(())
    }
}
