//! Work on closed files, off the write path: gzip them, then delete what
//! `keep_for` and `keep_files` no longer keep. One thread per sink.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::file::tidy";

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::Utc;

use super::writer::InUse;
use super::FileSinkConfig;

/// What the tidier is asked to do.
pub enum Job {
    /// A file is closed for good (rotated, or its period is over); the key
    /// names its family.
    Finished(PathBuf, Vec<String>),
    /// Apply retention to these families and every one seen before.
    Sweep(Vec<Vec<String>>),
}

/// Run jobs until the sender is dropped.
pub fn run(cfg: Arc<FileSinkConfig>, in_use: InUse, jobs: std::sync::mpsc::Receiver<Job>) {
    let mut known: HashSet<Vec<String>> = HashSet::new();
    for job in jobs {
        match job {
            Job::Finished(path, key) => {
                // Encrypted files are compressed before encryption, as written.
                if cfg.compress && cfg.encrypt.is_none() {
                    match compress(&path, &in_use) {
                        Compressed::Done(bytes) => {
                            tracing::debug!(target: LOG_TARGET, path = %path.display(), bytes, "compressed")
                        }
                        // Retention (or an operator) removed it first.
                        Compressed::Gone => {
                            tracing::debug!(target: LOG_TARGET, path = %path.display(), "gone before it was compressed")
                        }
                        Compressed::InUse => {}
                        Compressed::NotRemoved(e) => {
                            tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "compressed but cannot remove")
                        }
                        Compressed::Failed(e) => {
                            tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "cannot compress; leaving it as it is")
                        }
                    }
                }
                retain(&cfg, &in_use, &key);
                known.insert(key);
            }
            Job::Sweep(keys) => {
                known.extend(keys);
                for key in &known {
                    retain(&cfg, &in_use, key);
                }
            }
        }
    }
}

/// What became of a file to compress.
#[derive(Debug)]
pub enum Compressed {
    /// `path.gz` holds its bytes (this many) and the original is gone.
    Done(u64),
    /// It no longer existed (retention removed it first): nothing to do.
    Gone,
    /// The sink writes it again: compressed, but the original is kept.
    InUse,
    /// Compressed, but the original could not be removed.
    NotRemoved(std::io::Error),
    /// Left as it is.
    Failed(std::io::Error),
}

/// Gzip `path` into `path.gz` (appended as a further gzip member if that
/// exists) and remove it. A failure leaves the original in place.
pub fn compress(path: &Path, in_use: &InUse) -> Compressed {
    if path.extension().is_some_and(|e| e == "gz") {
        return Compressed::InUse;
    }
    let gz = append_ext(path, "gz");
    let tmp = append_ext(path, "gz.tmp");
    let result = (|| -> std::io::Result<u64> {
        let mut input = std::fs::File::open(path)?;
        // Retention goes by age: the compressed file keeps the original's.
        let modified = input.metadata()?.modified()?;
        let out = std::fs::File::create(&tmp)?;
        let mut enc = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(out),
            flate2::Compression::fast(),
        );
        let n = std::io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.set_modified(modified)?;
        out.sync_all()?;
        drop(out);
        if gz.exists() {
            let mut existing = std::fs::OpenOptions::new().append(true).open(&gz)?;
            existing.write_all(&std::fs::read(&tmp)?)?;
            existing.set_modified(modified)?;
            existing.sync_all()?;
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, &gz)?;
        }
        crate::base::written::mark(&gz);
        Ok(n)
    })();
    match result {
        Ok(bytes) => {
            // The sink may have started writing it again meanwhile (a late
            // period switch): then keep it, it will be finished again.
            if in_use.lock().expect("in-use lock").contains(path) {
                return Compressed::InUse;
            }
            match std::fs::remove_file(path) {
                Ok(()) => Compressed::Done(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Compressed::Done(bytes),
                Err(e) => Compressed::NotRemoved(e),
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::NotFound && !path.exists() {
                Compressed::Gone
            } else {
                Compressed::Failed(e)
            }
        }
    }
}

fn append_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Compress leftovers and delete what retention no longer keeps among the
/// closed files of `key`'s family.
fn retain(cfg: &FileSinkConfig, in_use: &InUse, key: &[String]) {
    let now = Utc::now();
    // The current file, and the one of a moment ago: a write may be on its
    // way there even if the period just changed.
    let current = [
        cfg.path.render(key, now),
        cfg.path.render(key, now - chrono::Duration::seconds(2)),
    ];
    let family = cfg.path.family(key);
    let Some(dir) = current[0].parent() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut members: Vec<(PathBuf, SystemTime)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !family.is_match(&path.to_string_lossy()) || current.contains(&path) {
            continue;
        }
        if in_use.lock().expect("in-use lock").contains(&path) {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        members.push((path, modified));
    }
    if cfg.compress && cfg.encrypt.is_none() {
        for (path, _) in &mut members {
            if path.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            compress(path, in_use);
            *path = append_ext(path, "gz");
        }
        members.retain(|(p, _)| p.exists());
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
    }
    members.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let cutoff = cfg.keep_for.and_then(|d| SystemTime::now().checked_sub(d));
    for (i, (path, modified)) in members.iter().enumerate() {
        let too_old = cutoff.is_some_and(|c| *modified < c);
        let too_many = cfg.keep_files.is_some_and(|n| i >= n);
        if too_old || too_many {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(target: LOG_TARGET, path = %path.display(), too_old, too_many, "removed by retention")
                }
                Err(e) => {
                    tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "cannot remove old file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_removed_first_is_gone_not_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let in_use = InUse::default();
        let path = d.path().join("app.log.1");
        assert!(matches!(compress(&path, &in_use), Compressed::Gone));
        std::fs::write(&path, "line\n").unwrap();
        assert!(matches!(compress(&path, &in_use), Compressed::Done(5)));
        assert!(!path.exists() && d.path().join("app.log.1.gz").exists());
    }
}
