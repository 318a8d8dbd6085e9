//! The log files a timeline reads: found in folders, named for their
//! component, opened (compressed ones too).

use super::*;

/// A log file to read.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    /// Component from the file name, the fallback for events without one.
    pub name_component: String,
    pub modified: std::time::SystemTime,
}

/// The component a file name suggests: its name up to the first `-`, `_` or `.`.
pub fn component_of_file(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cut = name.find(['-', '_', '.']).unwrap_or(name.len());
    let c = &name[..cut];
    if c.is_empty() {
        name
    } else {
        c.to_string()
    }
}

pub(super) fn is_log_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = sluice_core::base::crypt::Packing::strip(&name);
    // A rotated file, as sluice's file sink and logrotate name it: `NAME.log.3`.
    let name = match name.rsplit_once('.') {
        Some((stem, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => stem,
        _ => name,
    };
    [".log", ".json", ".jsonl", ".ndjson"]
        .iter()
        .any(|e| name.ends_with(e))
}

/// The log files under `paths` (files as given; folders searched recursively
/// for `.log`, `.json`, `.jsonl`, `.ndjson`, each maybe rotated (`.N`) and
/// maybe `.gz`).
pub fn discover(paths: &[PathBuf]) -> anyhow::Result<Vec<LogFile>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut files).with_context(|| format!("cannot list {}", p.display()))?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|path| {
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            Ok(LogFile {
                name_component: component_of_file(&path),
                path,
                modified,
            })
        })
        .collect()
}

pub(super) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_log_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Open a log file, decrypting `.age` (with `identities`) and
/// decompressing `.gz`.
pub fn open(
    path: &Path,
    identities: Option<&sluice_core::base::crypt::Identities>,
) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    sluice_core::base::crypt::unpack(path, file, identities).with_context(|| {
        match sluice_core::base::crypt::Packing::of(path).encrypted && identities.is_none() {
            true => format!("cannot read {} (give --identity KEYFILE)", path.display()),
            false => format!("cannot read {}", path.display()),
        }
    })
}
