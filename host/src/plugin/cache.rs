//! The cache of compiled components: `HASH-ENGINE.cwasm` files in the
//! cache folder, one per version of a plugin's bytes and engine.
//!
//! - **One compile per change.** A process that misses the cache takes an
//!   exclusive lock on `HASH-ENGINE.lock` before compiling and looks again
//!   once it has it, so `sluice plugin build` and a running pipeline that
//!   reloads the same bytes compile them once, not twice at once.
//! - **Bounded.** A load touches its file; after each new entry the cache
//!   is pruned, least recently used first, to `SLUICE_CACHE_MAX_SIZE`
//!   (default 1 GiB; a Python or JavaScript plugin is 30-40 MB compiled).
//!   `sluice plugin cache list|prune` shows and prunes it by hand.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The default bound of the cache folder.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// One compiled component in the cache.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: PathBuf,
    pub bytes: u64,
    /// When it was last loaded (or written).
    pub used: SystemTime,
}

/// The bound from `SLUICE_CACHE_MAX_SIZE` (`500MiB`, `2GiB`), else the
/// default.
pub fn max_size() -> u64 {
    std::env::var("SLUICE_CACHE_MAX_SIZE")
        .ok()
        .and_then(|s| crate::base::settings::size::parse(&s).ok())
        .map_or(DEFAULT_MAX_SIZE, |n| n as u64)
}

/// Mark an entry used now (its modification time: what pruning reads).
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Hold the compile lock of an entry: blocks while another process
/// compiles the same bytes. `None` when the lock cannot be taken (no
/// cache folder, a file system without locks): compile anyway.
pub fn lock(entry: &Path) -> Option<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(entry.with_extension("lock"))
        .ok()?;
    f.lock().ok()?;
    Some(f)
}

/// The entries of a cache folder, most recently used first.
pub fn list(dir: &Path) -> Vec<Entry> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut entries: Vec<Entry> = read
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(Entry {
                path: e.path(),
                bytes: meta.len(),
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .collect();
    entries.sort_by(|a, b| b.used.cmp(&a.used).then_with(|| a.path.cmp(&b.path)));
    entries
}

/// What a prune did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub freed: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Remove the least recently used entries until the folder holds at most
/// `max_bytes` (never `keep`, the entry just written), and lock files
/// whose entry is gone and that nobody holds.
pub fn prune(dir: &Path, max_bytes: u64, keep: Option<&Path>) -> Pruned {
    let entries = list(dir);
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    let mut out = Pruned::default();
    // Oldest first.
    for e in entries.iter().rev() {
        if total <= max_bytes {
            break;
        }
        if Some(e.path.as_path()) == keep {
            continue;
        }
        if std::fs::remove_file(&e.path).is_ok() {
            total -= e.bytes;
            out.removed += 1;
            out.freed += e.bytes;
        }
    }
    out.kept = entries.len() - out.removed;
    out.kept_bytes = total;
    if let Ok(read) = std::fs::read_dir(dir) {
        for lock in read.flatten().map(|e| e.path()) {
            if lock.extension().is_some_and(|x| x == "lock")
                && !lock.with_extension("cwasm").exists()
            {
                if let Ok(f) = File::options().write(true).open(&lock) {
                    if f.try_lock().is_ok() {
                        let _ = std::fs::remove_file(&lock);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn prunes_the_least_recently_used_to_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let p = d.path().join(format!("{name}.cwasm"));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            // a is the oldest, d the newest.
            f.set_modified(now - Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        std::fs::write(d.path().join("gone.lock"), b"").unwrap();
        touch(&d.path().join("a.cwasm"));
        let keep = d.path().join("b.cwasm");
        let p = prune(d.path(), 2500, Some(&keep));
        assert_eq!(
            (p.removed, p.freed, p.kept, p.kept_bytes),
            (2, 2000, 2, 2000)
        );
        let left: Vec<String> = list(d.path())
            .iter()
            .map(|e| e.path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["a", "b"], "a was used last; b was just written");
        assert!(!d.path().join("gone.lock").exists());
    }
}
