//! `type = "file"`: JSON lines appended to a file.
//!
//! A failed write (the folder deleted, the disk full) marks the sink down
//! (`/health` says why), and the same bytes are retried with exponential
//! backoff until they are written: nothing is lost, and backpressure
//! reaches the sources meanwhile. The file is reopened when its path no
//! longer leads to the open file (deleted or moved away by a rotation tool).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use toml::Spanned;

use super::{json_lines, SinkContext};
use crate::config::TypeTag;
use crate::metrics::ComponentMetrics;

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
    /// Components this sink reads (may be empty for a `fallback` target).
    #[serde(default)]
    pub inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub sync: Sync,
}

/// First and longest wait between two attempts at a failed write.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

struct Open {
    file: tokio::fs::File,
    #[cfg(unix)]
    ino: u64,
}

impl FileSinkConfig {
    async fn open(&self) -> std::io::Result<Open> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await?;
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata().await?);
        Ok(Open {
            file,
            #[cfg(unix)]
            ino,
        })
    }

    /// Whether the path still leads to the open file.
    #[cfg(unix)]
    async fn still_there(&self, open: &Open) -> bool {
        match tokio::fs::metadata(&self.path).await {
            Ok(m) => std::os::unix::fs::MetadataExt::ino(&m) == open.ino,
            Err(_) => false,
        }
    }

    #[cfg(not(unix))]
    async fn still_there(&self, _open: &Open) -> bool {
        true
    }

    async fn write(&self, file: &mut Option<Open>, buf: &[u8]) -> std::io::Result<()> {
        if let Some(open) = file.as_ref() {
            if !self.still_there(open).await {
                *file = None;
            }
        }
        if file.is_none() {
            *file = Some(self.open().await?);
        }
        let open = file.as_mut().expect("opened above");
        let result = async {
            open.file.write_all(buf).await?;
            if self.sync == Sync::Batch {
                open.file.sync_data().await?;
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            *file = None;
        }
        result
    }

    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let mut file = None;
        let mut buf = Vec::new();
        while let Some(first) = ctx.input.recv().await {
            // Write whatever else is already queued in the same system call.
            buf.clear();
            json_lines(&first, &mut buf);
            let mut batches = vec![first];
            while buf.len() < 4 << 20 {
                match ctx.input.try_recv() {
                    Ok(batch) => {
                        json_lines(&batch, &mut buf);
                        batches.push(batch);
                    }
                    Err(_) => break,
                }
            }
            let started = Instant::now();
            let mut delay = RETRY_FIRST;
            loop {
                match self.write(&mut file, &buf).await {
                    Ok(()) => break,
                    Err(e) => {
                        let reason = format!("cannot write {}: {e}", self.path.display());
                        tracing::warn!(sink = %ctx.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
                        ctx.metrics.set_down(Some(reason));
                        ComponentMetrics::add(&ctx.metrics.retries, 1);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            }
            if ctx
                .metrics
                .down
                .lock()
                .expect("health lock poisoned")
                .is_some()
            {
                tracing::info!(sink = %ctx.name, "writing again");
                ctx.metrics.set_down(None);
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            for b in &batches {
                ctx.account(b);
            }
        }
        if let Some(mut open) = file {
            open.file.flush().await?;
            open.file.sync_data().await.ok();
        }
        Ok(())
    }
}
