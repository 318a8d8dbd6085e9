//! `type = "file"`: JSON lines appended to a file.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use toml::Spanned;

use super::{json_lines, SinkContext};
use crate::config::TypeTag;

/// When written data is forced to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// Leave it to the OS (data survives a crash of sluice, not of the machine).
    #[default]
    None,
    /// `fsync` after every batch.
    Batch,
}

/// `[sinks.NAME] type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// The file, relative to the pipeline file; parent folders are created.
    pub path: PathBuf,
    pub inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub sync: Sync,
}

impl FileSinkConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("sink {}: cannot create {}", ctx.name, dir.display()))?;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .with_context(|| format!("sink {}: cannot open {}", ctx.name, self.path.display()))?;
        let mut buf = Vec::new();
        while let Some(first) = ctx.input.recv().await {
            // Write whatever else is already queued in the same system call.
            buf.clear();
            json_lines(&first, &mut buf);
            ctx.account(&first);
            while buf.len() < 4 << 20 {
                match ctx.input.try_recv() {
                    Ok(batch) => {
                        json_lines(&batch, &mut buf);
                        ctx.account(&batch);
                    }
                    Err(_) => break,
                }
            }
            file.write_all(&buf).await.with_context(|| {
                format!("sink {}: cannot write {}", ctx.name, self.path.display())
            })?;
            if self.sync == Sync::Batch {
                file.sync_data().await?;
            }
        }
        file.flush().await?;
        file.sync_data().await.ok();
        Ok(())
    }
}
