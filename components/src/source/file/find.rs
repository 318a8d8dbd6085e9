//! Finding the files a `path` glob names, without the traps of a plain
//! recursive glob: directories are known by device and inode, so a symlink
//! loop (`a/link -> a`) is walked once and reported, not followed for
//! ever; the depth is limited; and files the pipeline's own file sinks
//! write are never taken.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Deepest a `**` descends below the glob's fixed part (a bound that could
/// become config).
pub const MAX_DEPTH: usize = 32;

/// What one walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Files matching the glob, in the order found.
    pub files: Vec<PathBuf>,
    /// Directories not entered again: a symlink loop, or past [`MAX_DEPTH`].
    pub skipped: Vec<(PathBuf, &'static str)>,
    /// Matching files a sink of this pipeline writes.
    pub own_output: Vec<PathBuf>,
}

fn is_glob(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// The files `pattern` matches now.
pub fn find(pattern: &Path) -> Found {
    let mut found = Found::default();
    let text = pattern.to_string_lossy();
    let Ok(glob) = glob::Pattern::new(&text) else {
        return found;
    };
    // The fixed folder the walk starts from, and how deep it may go.
    let mut base = PathBuf::new();
    let mut rest = Vec::new();
    for c in pattern.components() {
        let part = c.as_os_str().to_string_lossy();
        if rest.is_empty() && !is_glob(&part) {
            base.push(c.as_os_str());
        } else {
            rest.push(part.into_owned());
        }
    }
    if rest.is_empty() {
        // No glob at all: the file itself.
        if let Ok(m) = std::fs::metadata(pattern) {
            if m.is_file() {
                keep(pattern.to_path_buf(), &mut found);
            }
        }
        return found;
    }
    let depth = if rest.iter().any(|p| p == "**") {
        MAX_DEPTH
    } else {
        rest.len()
    };
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    let start = if base.as_os_str().is_empty() || base.components().all(|c| c == Component::CurDir)
    {
        PathBuf::from(".")
    } else {
        base.clone()
    };
    let mut visited = HashSet::new();
    if let Ok(m) = std::fs::metadata(&start) {
        visited.insert(identity(&m));
    }
    walk(
        &start,
        &base,
        depth,
        &glob,
        options,
        &mut visited,
        &mut found,
    );
    found
}

fn keep(path: PathBuf, found: &mut Found) {
    if crate::base::written::is_ours(&path) {
        found.own_output.push(path);
    } else {
        found.files.push(path);
    }
}

#[cfg(unix)]
fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

#[allow(clippy::too_many_arguments)]
fn walk(
    dir: &Path,
    shown: &Path,
    depth: usize,
    glob: &glob::Pattern,
    options: glob::MatchOptions,
    visited: &mut HashSet<(u64, u64)>,
    found: &mut Found,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let path = shown.join(&name);
        // Follow symlinks: a linked folder or file is read as what it links to.
        let Ok(m) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if m.is_file() {
            if glob.matches_path_with(&path, options) {
                keep(path, found);
            }
        } else if m.is_dir() {
            if depth <= 1 {
                if depth == 1 && glob.as_str().contains("**") {
                    found.skipped.push((path, "deeper than the depth limit"));
                }
                continue;
            }
            if !visited.insert(identity(&m)) {
                found
                    .skipped
                    .push((path, "a symlink loop (this folder was walked already)"));
                continue;
            }
            walk(
                &entry.path(),
                &path,
                depth - 1,
                glob,
                options,
                visited,
                found,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_loops_are_walked_once_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("logs/a");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("x.log"), "x\n").unwrap();
        std::fs::write(d.path().join("logs/top.log"), "t\n").unwrap();
        std::os::unix::fs::symlink(d.path().join("logs"), a.join("loop")).unwrap();
        let found = find(&d.path().join("logs/**/*.log"));
        let names: Vec<String> = found
            .files
            .iter()
            .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["logs/a/x.log", "logs/top.log"]);
        assert_eq!(found.skipped.len(), 1, "{:?}", found.skipped);
        assert!(found.skipped[0].1.contains("loop"));
    }

    #[test]
    fn plain_globs_and_paths() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("a.log"), "").unwrap();
        std::fs::write(d.path().join("b.txt"), "").unwrap();
        std::fs::write(d.path().join("sub/c.log"), "").unwrap();
        let found = find(&d.path().join("*.log"));
        assert_eq!(
            found.files,
            [d.path().join("a.log")],
            "`*` stays in its folder"
        );
        let found = find(&d.path().join("a.log"));
        assert_eq!(found.files, [d.path().join("a.log")]);
        assert!(find(&d.path().join("none.log")).files.is_empty());
    }
}
