//! Watching plugin files and the pipeline file for hot reload.
//!
//! The folders of the files are watched (`notify`: inotify on Linux), and
//! the files looked at when something in them changes, and every 20
//! `poll_interval`s all the same; with `[reload] poll = true`, or where
//! watching cannot be set up, they are polled every `poll_interval`. A
//! change is acted on only once the file has stayed unchanged for one
//! `poll_interval`, so a `.wasm` being written is never loaded
//! half-written; an atomic rename is seen as one change. What a change
//! does is in `reload`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::reload::{count, ReloadHandle};
use crate::base::metrics::Registry;
use crate::config::PipelineConfig;
use crate::plugin::loader::is_plugin_file;

/// What identifies a version of a file on disk.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    if m.is_dir() {
        return folder_stamp(path);
    }
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// A pipeline folder changes when one of its `*.toml` files does, or one
/// comes or goes.
fn folder_stamp(dir: &Path) -> Stamp {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut latest = SystemTime::UNIX_EPOCH;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in &files {
        let s = stamp(f);
        if let Some((modified, _, _)) = s {
            latest = latest.max(modified);
        }
        (f, s).hash(&mut h);
    }
    Some((latest, files.len() as u64, h.finish()))
}

/// With the folders watched, how many `poll_interval`s pass between two
/// looks at the files when no event came.
const IDLE_POLLS: u32 = 20;

/// The folders of the watched files, and their changes.
struct Folders {
    watcher: notify::RecommendedWatcher,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
    watching: std::collections::BTreeSet<PathBuf>,
}

impl Folders {
    fn new() -> Option<Self> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if !matches!(&res, Ok(e) if e.kind.is_access()) {
                let _ = tx.send(());
            }
        });
        match watcher {
            Ok(watcher) => Some(Self {
                watcher,
                rx,
                watching: Default::default(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "cannot watch for file changes; polling every poll_interval");
                None
            }
        }
    }

    /// Watch the folder of `path` (a pipeline folder: itself) from now on.
    fn watch(&mut self, path: &Path) {
        use notify::Watcher as _;
        let folder = if path.is_dir() {
            path.to_path_buf()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if self.watching.contains(&folder) {
            return;
        }
        match self
            .watcher
            .watch(&folder, notify::RecursiveMode::NonRecursive)
        {
            Ok(()) => {
                self.watching.insert(folder);
            }
            Err(e) => {
                tracing::debug!(folder = %folder.display(), error = %e, "cannot watch folder; it is looked at every 20 polls")
            }
        }
    }

    /// Until something changes in a watched folder, or `at_most` passes.
    async fn changed(&mut self, at_most: Duration) {
        if tokio::time::timeout(at_most, self.rx.recv()).await.is_ok() {
            while self.rx.try_recv().is_ok() {}
        }
    }
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

    /// Whether a change was seen that has not been acted on yet.
    fn unsettled(&self) -> bool {
        self.seen != self.applied
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
pub(super) fn plugin_files(config: &PipelineConfig) -> BTreeMap<String, PathBuf> {
    config
        .transforms
        .iter()
        .filter(|t| is_plugin_file(t.config.plugin.get_ref()))
        .map(|t| {
            (
                t.name.clone(),
                config.resolve(Path::new(t.config.plugin.get_ref())),
            )
        })
        .collect()
}

/// Poll the pipeline file and the plugin files until the pipeline stops.
pub async fn watch(
    handle: ReloadHandle,
    pipeline: PathBuf,
    settings: crate::config::ReloadConfig,
    metrics: Registry,
) {
    let poll = settings.poll_interval;
    let mut pipeline_file = Watched::new(&pipeline);
    let mut plugins: BTreeMap<String, (PathBuf, Watched)> = BTreeMap::new();
    let mut folders = (!settings.poll).then(Folders::new).flatten();
    if let (Some(f), Some(config)) = (&mut folders, handle.config().await) {
        f.watch(&pipeline);
        for path in plugin_files(&config).values() {
            f.watch(path);
        }
    }
    loop {
        // A change not yet settled is looked at again after one poll; with
        // the folders watched, nothing else needs a look before an event.
        let unsettled = pipeline_file.unsettled() || plugins.values().any(|(_, w)| w.unsettled());
        match &mut folders {
            Some(f) if !unsettled => f.changed(poll * IDLE_POLLS).await,
            _ => tokio::time::sleep(poll).await,
        }
        let Some(config) = handle.config().await else {
            return;
        };
        if let Some(f) = &mut folders {
            f.watch(&pipeline);
            for path in plugin_files(&config).values() {
                f.watch(path);
            }
        }
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
