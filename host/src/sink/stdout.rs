//! `type = "stdout"`: JSON lines on standard output.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use toml::Spanned;

use super::{json_lines, SinkContext};
use crate::config::TypeTag;

/// `[sinks.NAME] type = "stdout"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    pub inputs: Vec<Spanned<String>>,
}

impl StdoutConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let mut stdout = tokio::io::stdout();
        let mut buf = Vec::new();
        while let Some(batch) = ctx.input.recv().await {
            buf.clear();
            json_lines(&batch, &mut buf);
            let started = std::time::Instant::now();
            stdout.write_all(&buf).await?;
            stdout.flush().await?;
            ctx.metrics.batch_seconds.observe(started.elapsed());
            ctx.account(&batch);
        }
        Ok(())
    }
}
