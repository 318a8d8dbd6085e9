//! Waking the file source when its files change, through `notify`
//! (inotify on Linux), instead of looking every `poll_interval`: a new
//! line is read within milliseconds, and an idle source sleeps.
//!
//! The folder a glob's walk starts from is watched (recursively when the
//! glob reaches below it): data written to a file in it, and files made,
//! moved or deleted there, wake the reader; the last ask it to look for
//! files again. Events of the reader's own opening and reading (`Access`)
//! are ignored. Since events can be missed (a network filesystem, a
//! rotated file moved to another folder, an overflowing queue), the reader
//! still looks at everything every [`RECHECK`]. Where watching cannot be
//! set up, or with `poll = true`, the source polls as before.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};

use crate::base::output::Shutdown;

/// How often a watched source looks at its files all the same.
pub const RECHECK: Duration = Duration::from_secs(1);

enum Wake {
    /// Something changed; `rescan`: files may have come or gone.
    Changed { rescan: bool },
    /// The source is stopping.
    Stop,
}

/// What a wait ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Files were written to.
    Changed,
    /// Files were made, moved or deleted: glob again.
    Rescan,
    /// Nothing happened within the wait.
    Timeout,
    /// The source is stopping.
    Stop,
}

/// A watch on the folder of a source's files.
pub struct Watch {
    rx: mpsc::Receiver<Wake>,
    _watcher: notify::RecommendedWatcher,
    pub folder: PathBuf,
}

/// The folder a glob's walk starts from, and whether matches may lie below
/// its own entries (a `*` folder or `**`).
pub fn folder_of(pattern: &Path) -> (PathBuf, bool) {
    let mut base = PathBuf::new();
    let mut rest = 0;
    for c in pattern.components() {
        let part = c.as_os_str().to_string_lossy();
        if rest == 0 && !part.contains(['*', '?', '[']) {
            base.push(c.as_os_str());
        } else {
            rest += 1;
        }
    }
    match rest {
        // A plain file: its folder, where it is made and rotated.
        0 => (
            base.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            false,
        ),
        1 => (base, false),
        _ => (base, true),
    }
}

impl Watch {
    /// Watch the folder of `pattern`; a stop of `shutdown` ends any wait.
    pub fn start(
        pattern: &Path,
        shutdown: Shutdown,
        handle: &tokio::runtime::Handle,
    ) -> Result<Watch, notify::Error> {
        let (tx, rx) = mpsc::channel();
        let events = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let rescan = match &res {
                    Ok(e) => match e.kind {
                        // Our own opening and reading of the files.
                        EventKind::Access(_) => return,
                        EventKind::Create(_)
                        | EventKind::Remove(_)
                        | EventKind::Modify(ModifyKind::Name(_)) => true,
                        _ => false,
                    },
                    // A lost event (the queue overflowed): look everywhere.
                    Err(_) => true,
                };
                let _ = events.send(Wake::Changed { rescan });
            })?;
        let (folder, recursive) = folder_of(pattern);
        let mode = if recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher.watch(&folder, mode)?;
        let mut stop = shutdown;
        handle.spawn(async move {
            stop.wait().await;
            let _ = tx.send(Wake::Stop);
        });
        Ok(Watch {
            rx,
            _watcher: watcher,
            folder,
        })
    }

    /// Wait at most `timeout` for a change (all the changes waiting are
    /// taken at once).
    pub fn wait(&self, timeout: Duration) -> Waited {
        let first = match self.rx.recv_timeout(timeout) {
            Ok(w) => w,
            Err(mpsc::RecvTimeoutError::Timeout) => return Waited::Timeout,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Waited::Stop,
        };
        let mut out = Waited::Changed;
        for w in std::iter::once(first).chain(self.rx.try_iter()) {
            match w {
                Wake::Stop => return Waited::Stop,
                Wake::Changed { rescan: true } => out = Waited::Rescan,
                Wake::Changed { rescan: false } => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_a_glob_starts_from() {
        let f = |p: &str| folder_of(Path::new(p));
        assert_eq!(f("/var/log/app.log"), (PathBuf::from("/var/log"), false));
        assert_eq!(f("/var/log/*.log"), (PathBuf::from("/var/log"), false));
        assert_eq!(f("/var/log/*/app.log"), (PathBuf::from("/var/log"), true));
        assert_eq!(f("/var/log/**/*.log"), (PathBuf::from("/var/log"), true));
        assert_eq!(f("app.log"), (PathBuf::from("."), false));
    }
}
