//! Finishing a file: rotation by size or age to the next free number,
//! compression and sealing handed to the tidy thread.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::file::writer::rotate";

use super::*;

/// Where a file closed for good goes: the tidier, or the sealing list when
/// its last encrypted bytes cannot be written yet.
pub(super) struct Finishing<'a> {
    pub(super) cfg: &'a FileSinkConfig,
    pub(super) in_use: &'a InUse,
    pub(super) tidy: &'a std::sync::mpsc::Sender<Job>,
    pub(super) sealing: &'a mut Sealing,
}

impl Finishing<'_> {
    /// Finish the encrypted file `f` (its last chunk), then hand it to the
    /// tidier; on failure keep it for the next flush.
    pub(super) fn finish(self, key: &[String], mut f: OutFile) {
        match f.finish_here(self.cfg.sync) {
            Ok(()) => {
                self.in_use.lock().expect("in-use lock").remove(&f.path);
                crate::base::written::mark(&f.path);
                tracing::debug!(target: LOG_TARGET, path = %f.path.display(), "encrypted file finished");
                let _ = self.tidy.send(Job::Finished(f.path, key.to_vec()));
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot finish encrypted file; retrying");
                self.sealing.push((key.to_vec(), f));
            }
        }
    }
}

/// Finish `f` if its period's path changed, or rotate it if it is older
/// than `rotate_every`.
pub(super) fn check_due(to: Finishing<'_>, key: &[String], f: &mut OutFile, now: DateTime<Utc>) {
    let cfg = to.cfg;
    if cfg.path.template.has_time() {
        let current = cfg.path.render(key, now);
        if current != f.path {
            if f.enc.is_some() {
                let done = std::mem::replace(f, OutFile::new(current.clone(), f.enc.clone()));
                to.in_use.lock().expect("in-use lock").insert(current);
                if done.stream.is_none() {
                    // Never opened: its lines go to the new period's file.
                    to.in_use.lock().expect("in-use lock").remove(&done.path);
                    f.pending = done.pending;
                    f.pending_round = done.pending_round;
                    return;
                }
                tracing::debug!(target: LOG_TARGET, path = %done.path.display(), "period over; finishing encrypted file");
                to.finish(key, done);
                return;
            }
            if let Err(e) = f.write_pending().and_then(|()| f.sync(cfg.sync)) {
                tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot finish file; retrying later");
                return;
            }
            let done = std::mem::replace(f, OutFile::new(current.clone(), None));
            let mut set = to.in_use.lock().expect("in-use lock");
            set.remove(&done.path);
            set.insert(current);
            drop(set);
            tracing::debug!(target: LOG_TARGET, path = %done.path.display(), "period over; file finished");
            let _ = to.tidy.send(Job::Finished(done.path, key.to_vec()));
            return;
        }
    }
    if let Some(every) = cfg.rotate_every {
        let age = SystemTime::from(now)
            .duration_since(f.started)
            .unwrap_or_default();
        if f.size > 0 && age >= every {
            rotate(to, key, f, now);
        }
    }
}

/// Close `f`, move it to `PATH.N` (the next free N) and start a new file.
/// An encrypted file is moved first and finished there (`PATH.N.age`).
pub(super) fn rotate(to: Finishing<'_>, key: &[String], f: &mut OutFile, now: DateTime<Utc>) {
    let cfg = to.cfg;
    if f.enc.is_some() {
        // Its lines so far into its own stream (opening it if this round
        // began it), so that the rotation falls between them and the next.
        if let Err(e) = f.write_pending() {
            tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot rotate encrypted file; retrying later");
            return;
        }
        if f.stream.is_none() {
            // Nothing of it on disk: nothing to rotate.
            return;
        }
        let target = next_rotated(&f.path, &cfg.path.suffix);
        // A path that no longer leads to our file (moved by a tool): the
        // stream is finished wherever the file is now.
        if f.file.is_some() && f.still_there() {
            if let Err(e) = std::fs::rename(&f.path, &target) {
                tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot rotate encrypted file; appending to it");
                return;
            }
        }
        tracing::debug!(target: LOG_TARGET, path = %f.path.display(), to = %target.display(), "rotated");
        let mut old = std::mem::replace(f, OutFile::new(f.path.clone(), f.enc.clone()));
        f.started = now.into();
        old.path = target;
        to.in_use
            .lock()
            .expect("in-use lock")
            .insert(old.path.clone());
        to.finish(key, old);
        return;
    }
    if let Err(e) = f.write_pending().and_then(|()| f.sync(cfg.sync)) {
        tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot rotate file; retrying later");
        return;
    }
    f.file = None;
    let target = next_rotated(&f.path, "");
    match std::fs::rename(&f.path, &target) {
        Ok(()) => {
            tracing::debug!(target: LOG_TARGET, path = %f.path.display(), to = %target.display(), "rotated");
            crate::base::written::mark(&target);
            let _ = to.tidy.send(Job::Finished(target, key.to_vec()));
        }
        // Gone already (removed by hand): start afresh all the same.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot rotate file; appending to it");
            return;
        }
    }
    f.size = 0;
    f.started = now.into();
}

/// `STEM.N` + `suffix` for the smallest N above every existing
/// `STEM.N[.gz][.age]`, where `path` is `STEM` + `suffix` (`.age`,
/// `.gz.age` for encrypted files, nothing for plain ones).
pub(super) fn next_rotated(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.strip_suffix(suffix).unwrap_or(&name);
    let prefix = format!("{stem}.");
    let dir = path.parent().unwrap_or(Path::new("."));
    let last = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix(&prefix)?;
            let number = crate::base::crypt::Packing::strip(rest);
            // Nine digits at most: never a number that could overflow, and
            // sluice never rotates a billion times.
            (number.len() <= 9)
                .then(|| number.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0);
    dir.join(format!("{stem}.{}{suffix}", last + 1))
}
