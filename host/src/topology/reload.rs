//! Hot reload: watching plugin files and the pipeline file, and the
//! reload that SIGHUP and `POST /reload` trigger.
//!
//! Files are polled (no inotify dependency; works on every filesystem). A
//! change is acted on only once the file has stopped changing for one poll,
//! so a `.wasm` being written is never loaded half-written; an atomic
//! rename is seen as one change. A new version that fails to compile or to
//! `init` is refused and the running one keeps going.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::running::ReloadHandle;
use crate::config::PipelineConfig;
use crate::metrics::Registry;

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// One watched file: the version last acted on, and the one seen last poll.
#[derive(Debug, Default)]
struct Watched {
    applied: Stamp,
    seen: Stamp,
}

impl Watched {
    fn new(path: &Path) -> Self {
        let s = stamp(path);
        Self {
            applied: s,
            seen: s,
        }
    }

    /// Whether the file changed and has been stable since the last poll.
    fn settled_change(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        let stable = now == self.seen;
        self.seen = now;
        if stable && now != self.applied && now.is_some() {
            self.applied = now;
            return true;
        }
        false
    }
}

/// The plugin files of a pipeline's transforms: transform -> path.
fn plugin_files(config: &PipelineConfig) -> BTreeMap<String, PathBuf> {
    config
        .transforms
        .iter()
        .filter(|t| super::is_plugin_file(t.config.plugin.get_ref()))
        .map(|t| {
            (
                t.name.clone(),
                config.resolve(Path::new(t.config.plugin.get_ref())),
            )
        })
        .collect()
}

/// Reload the pipeline file, then every plugin file whose bytes changed.
/// Each failure is logged and counted; what failed keeps its old version.
pub async fn reload_all(
    handle: &ReloadHandle,
    pipeline: &Path,
    metrics: &Registry,
) -> anyhow::Result<()> {
    let config = PipelineConfig::load(pipeline)?;
    let result = handle.reload(config.clone()).await;
    count(
        metrics,
        &result,
        "pipeline",
        &pipeline.display().to_string(),
    );
    result?;
    let mut first_error = None;
    for name in plugin_files(&config).keys() {
        let result = handle.reload_plugin(name).await;
        match &result {
            Ok(false) => {}
            Ok(true) => count(metrics, &Ok(()), "plugin", name),
            Err(e) => {
                count(metrics, &Err(anyhow::anyhow!("{e:#}")), "plugin", name);
                first_error.get_or_insert(anyhow::anyhow!("transform {name}: {e:#}"));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn count(metrics: &Registry, result: &anyhow::Result<()>, what: &str, name: &str) {
    match result {
        Ok(()) => {
            metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(what, name, "reloaded");
        }
        Err(e) => {
            metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(what, name, error = %format!("{e:#}"), "reload refused; the running version stays");
        }
    }
}

/// Poll the pipeline file and the plugin files until the pipeline stops.
pub async fn watch(handle: ReloadHandle, pipeline: PathBuf, poll: Duration, metrics: Registry) {
    let mut pipeline_file = Watched::new(&pipeline);
    let mut plugins: BTreeMap<String, (PathBuf, Watched)> = BTreeMap::new();
    loop {
        tokio::time::sleep(poll).await;
        let Some(config) = handle.config().await else {
            return;
        };
        // Track the plugin files of the current configuration.
        let files = plugin_files(&config);
        plugins.retain(|name, (path, _)| files.get(name) == Some(path));
        for (name, path) in files {
            plugins.entry(name).or_insert_with(|| {
                let w = Watched::new(&path);
                (path, w)
            });
        }
        if pipeline_file.settled_change(&pipeline) {
            let result = match PipelineConfig::load(&pipeline) {
                Ok(c) => handle.reload(c).await,
                Err(e) => Err(e),
            };
            count(
                &metrics,
                &result,
                "pipeline",
                &pipeline.display().to_string(),
            );
            continue;
        }
        for (name, (path, watched)) in plugins.iter_mut() {
            if watched.settled_change(path) {
                match handle.reload_plugin(name).await {
                    Ok(false) => {
                        tracing::debug!(transform = %name, "plugin file touched, bytes unchanged")
                    }
                    Ok(true) => count(&metrics, &Ok(()), "plugin", name),
                    Err(e) => count(&metrics, &Err(e), "plugin", name),
                }
            }
        }
    }
}
