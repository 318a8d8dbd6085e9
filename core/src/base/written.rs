//! The files this process's file sinks write.
//!
//! A file source never reads one of them: a glob that takes in a sink's
//! output (directly, or through a symlink) would feed every event back into
//! the pipeline without end. Files are known by their canonical path (links
//! resolved), recorded when a sink opens, rotates or compresses one; not
//! by inode, which the filesystem reuses once a file is deleted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

fn ours() -> &'static Mutex<HashSet<PathBuf>> {
    static OURS: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    OURS.get_or_init(Mutex::default)
}

/// A file sink writes the file at `path` (which exists).
pub fn mark(path: &Path) {
    if let Ok(p) = std::fs::canonicalize(path) {
        ours().lock().expect("written lock poisoned").insert(p);
    }
}

/// Whether a file sink of this process writes (or wrote) the file `path`
/// leads to.
pub fn is_ours(path: &Path) -> bool {
    // No file sink has written anything (none in the pipeline): no lookup.
    if ours().lock().expect("written lock poisoned").is_empty() {
        return false;
    }
    let Ok(p) = std::fs::canonicalize(path) else {
        return false;
    };
    ours().lock().expect("written lock poisoned").contains(&p)
}
