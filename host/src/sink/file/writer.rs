//! The open files of a file sink: which file each event goes to, rotation
//! by size and time, the least recently used file closed past
//! `max_open_files`. Blocking I/O, run off the async threads.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::format::Formatter;
use super::tidy::Job;
use super::{FileSinkConfig, Sync};
use crate::base::event::SharedBatch;

/// A write the file sink must retry: which file, what failed, and the OS's
/// error, whose kind tells a passing failure (disk full) from a lasting one.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sync {}: {source}", path.display())]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths the sink may write to: the tidier never compresses or deletes them.
pub type InUse = Arc<Mutex<HashSet<PathBuf>>>;

/// One output file.
struct OutFile {
    path: PathBuf,
    /// `None` until opened, and after a failed write (reopened on retry).
    file: Option<File>,
    /// Inode of the open file: a path that leads elsewhere is reopened.
    ino: u64,
    /// Bytes in the file, counting `pending`: what `rotate_size` compares.
    size: u64,
    /// When the current file was started: what `rotate_every` measures.
    started: SystemTime,
    /// Lines formatted this round, not yet written.
    pending: Vec<u8>,
    /// Written since the last `fsync`.
    dirty: bool,
    /// The writer's clock at the last use, for least-recently-used closing.
    used: u64,
    /// The round in which rotation by time was last checked.
    checked: u64,
}

/// The open files of one sink.
pub struct Writer {
    cfg: Arc<FileSinkConfig>,
    formatter: Formatter,
    files: HashMap<Vec<String>, OutFile>,
    in_use: InUse,
    tidy: std::sync::mpsc::Sender<Job>,
    /// Counts rounds (one call of `append` or `sweep`).
    round: u64,
    /// Counts uses of files, for least-recently-used closing.
    clock: u64,
    /// Events that can never be written, with the reason: the sink sends
    /// them to the dead letters and goes on.
    pub refused: Vec<(Vec<u8>, String)>,
    /// Keys whose file the filesystem refuses for good (a name too long, a
    /// folder where the file should be), why and since when: their events
    /// are refused without trying again for [`REFUSE_FOR`].
    refused_keys: HashMap<Vec<String>, (String, std::time::Instant)>,
}

/// How long a refused file name is not tried again (an operator may move
/// the folder that was in the way). Could become config.
const REFUSE_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a failed open or write can never succeed by retrying: the name
/// itself is refused.
fn permanent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        InvalidFilename | IsADirectory | NotADirectory | InvalidInput
    )
}

impl Writer {
    pub fn new(
        cfg: Arc<FileSinkConfig>,
        in_use: InUse,
        tidy: std::sync::mpsc::Sender<Job>,
    ) -> Self {
        Self {
            formatter: cfg.formatter(),
            cfg,
            files: HashMap::new(),
            in_use,
            tidy,
            round: 0,
            clock: 0,
            refused: Vec::new(),
            refused_keys: HashMap::new(),
        }
    }

    /// Format every event into its file's pending bytes, rotating files
    /// that are due. Nothing here fails: writes happen in [`Self::flush`].
    pub fn append(&mut self, batches: &[SharedBatch], now: DateTime<Utc>) {
        self.round += 1;
        let mut line = Vec::with_capacity(1024);
        let mut last_key: Option<Vec<String>> = None;
        for batch in batches {
            for event in batch.iter() {
                let key = self.cfg.path.key(event, &self.cfg.missing);
                if last_key.as_ref() != Some(&key) {
                    self.touch(&key, now);
                    last_key = Some(key.clone());
                }
                if let Some((reason, _)) = self.refused_keys.get(&key) {
                    self.refused.push((event.to_vec(), reason.clone()));
                    continue;
                }
                line.clear();
                self.formatter.line(event, &mut line);
                let f = self.files.get_mut(&key).expect("touched above");
                if let Some(max) = self.cfg.rotate_size {
                    if f.size > 0 && f.size + line.len() as u64 > max as u64 {
                        rotate(&self.cfg, &self.tidy, &key, f, now);
                    }
                }
                f.pending.extend_from_slice(&line);
                f.size += line.len() as u64;
            }
        }
    }

    /// Make `key`'s file ready for this round: opened in the map (closing the
    /// least recently used one past the limit), on the current period's
    /// path, rotated if it is older than `rotate_every`.
    fn touch(&mut self, key: &[String], now: DateTime<Utc>) {
        self.clock += 1;
        if let Some((_, at)) = self.refused_keys.get(key) {
            if at.elapsed() < REFUSE_FOR {
                return;
            }
            self.refused_keys.remove(key);
        }
        if !self.files.contains_key(key) {
            if self.files.len() >= self.cfg.max_open_files.max(1) {
                self.close_least_recent();
            }
            let path = self.cfg.path.render(key, now);
            let mut f = OutFile::new(path.clone());
            // Open now: a name the filesystem refuses for good is known
            // before any event is queued for it.
            if let Err(e) = f.open() {
                if permanent(&e) {
                    let reason = format!("cannot write {}: {e}", path.display());
                    tracing::warn!(path = %path.display(), error = %e, "the file name is refused for good; its events go to the dead letters");
                    self.refused_keys
                        .insert(key.to_vec(), (reason, std::time::Instant::now()));
                    return;
                }
            }
            self.in_use
                .lock()
                .expect("in-use lock")
                .insert(path.clone());
            self.files.insert(key.to_vec(), f);
        }
        let f = self.files.get_mut(key).expect("inserted above");
        f.used = self.clock;
        if f.checked == self.round {
            return;
        }
        f.checked = self.round;
        check_due(&self.cfg, &self.in_use, &self.tidy, key, f, now);
    }

    fn close_least_recent(&mut self) {
        let Some(key) = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.used)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let mut f = self.files.remove(&key).expect("found above");
        if let Err(e) = f.write_pending().and_then(|()| f.sync(self.cfg.sync)) {
            // Keep it rather than lose its lines; the map grows by one.
            tracing::warn!(path = %f.path.display(), error = %e, "cannot close file; keeping it open");
            self.files.insert(key, f);
            return;
        }
        tracing::debug!(path = %f.path.display(), "closed least recently used file");
        self.in_use.lock().expect("in-use lock").remove(&f.path);
    }

    /// Write every file's pending bytes. On error the bytes not yet written
    /// stay pending, and the next call writes them (and nothing twice).
    pub fn flush(&mut self) -> Result<(), WriteError> {
        let mut first_error = None;
        let mut refused = Vec::new();
        for (key, f) in self.files.iter_mut() {
            if let Err(source) = f.write_pending() {
                if permanent(&source) {
                    refused.push((
                        key.clone(),
                        format!("cannot write {}: {source}", f.path.display()),
                    ));
                    continue;
                }
                first_error.get_or_insert(WriteError::Write {
                    path: f.path.clone(),
                    source,
                });
            }
        }
        // A name refused for good (a new period's or rotation's path): its
        // lines go to the dead letters as they are, instead of being
        // retried forever.
        for (key, reason) in refused {
            let f = self.files.remove(&key).expect("found above");
            self.in_use.lock().expect("in-use lock").remove(&f.path);
            for line in f.pending.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                self.refused.push((line.to_vec(), reason.clone()));
            }
            self.refused_keys
                .insert(key, (reason, std::time::Instant::now()));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `fsync` every file written since the last one.
    pub fn sync_dirty(&mut self) -> Result<(), WriteError> {
        for f in self.files.values_mut() {
            f.sync(Sync::Batch).map_err(|source| WriteError::Sync {
                path: f.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Rotate or finish the files that are due even though nothing was
    /// written to them (an idle channel at midnight).
    pub fn sweep(&mut self, now: DateTime<Utc>) {
        self.round += 1;
        for (key, f) in self.files.iter_mut() {
            f.checked = self.round;
            check_due(&self.cfg, &self.in_use, &self.tidy, key, f, now);
        }
    }

    /// The keys of the open files (for retention sweeps).
    pub fn keys(&self) -> Vec<Vec<String>> {
        self.files.keys().cloned().collect()
    }

    /// Write and sync everything, then close every file (at shutdown).
    pub fn close(&mut self) -> Result<(), WriteError> {
        self.flush()?;
        self.sync_dirty()?;
        for f in self.files.values_mut() {
            f.file = None;
        }
        Ok(())
    }
}

/// Finish `f` if its period's path changed, or rotate it if it is older
/// than `rotate_every`.
fn check_due(
    cfg: &FileSinkConfig,
    in_use: &InUse,
    tidy: &std::sync::mpsc::Sender<Job>,
    key: &[String],
    f: &mut OutFile,
    now: DateTime<Utc>,
) {
    if cfg.path.template.has_time() {
        let current = cfg.path.render(key, now);
        if current != f.path {
            if let Err(e) = f.write_pending().and_then(|()| f.sync(cfg.sync)) {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot finish file; retrying later");
                return;
            }
            let done = std::mem::replace(f, OutFile::new(current.clone()));
            let mut set = in_use.lock().expect("in-use lock");
            set.remove(&done.path);
            set.insert(current);
            drop(set);
            tracing::debug!(path = %done.path.display(), "period over; file finished");
            let _ = tidy.send(Job::Finished(done.path, key.to_vec()));
            return;
        }
    }
    if let Some(every) = cfg.rotate_every {
        let age = SystemTime::from(now)
            .duration_since(f.started)
            .unwrap_or_default();
        if f.size > 0 && age >= every {
            rotate(cfg, tidy, key, f, now);
        }
    }
}

/// Close `f`, move it to `PATH.N` (the next free N) and start a new file.
fn rotate(
    cfg: &FileSinkConfig,
    tidy: &std::sync::mpsc::Sender<Job>,
    key: &[String],
    f: &mut OutFile,
    now: DateTime<Utc>,
) {
    if let Err(e) = f.write_pending().and_then(|()| f.sync(cfg.sync)) {
        tracing::warn!(path = %f.path.display(), error = %e, "cannot rotate file; retrying later");
        return;
    }
    f.file = None;
    let target = next_rotated(&f.path);
    match std::fs::rename(&f.path, &target) {
        Ok(()) => {
            tracing::debug!(path = %f.path.display(), to = %target.display(), "rotated");
            crate::base::written::mark(&target);
            let _ = tidy.send(Job::Finished(target, key.to_vec()));
        }
        // Gone already (removed by hand): start afresh all the same.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %f.path.display(), error = %e, "cannot rotate file; appending to it");
            return;
        }
    }
    f.size = 0;
    f.started = now.into();
}

/// `PATH.N` for the smallest N above every existing `PATH.N[.gz]`.
fn next_rotated(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!("{name}.");
    let dir = path.parent().unwrap_or(Path::new("."));
    let last = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix(&prefix)?;
            let number = rest.strip_suffix(".gz").unwrap_or(rest);
            // Nine digits at most: never a number that could overflow, and
            // sluice never rotates a billion times.
            (number.len() <= 9)
                .then(|| number.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0);
    dir.join(format!("{name}.{}", last + 1))
}

impl OutFile {
    /// An entry for `path`, which may already exist (appended to).
    fn new(path: PathBuf) -> Self {
        let meta = std::fs::metadata(&path).ok();
        Self {
            size: meta.as_ref().map_or(0, |m| m.len()),
            started: meta
                .and_then(|m| m.created().or_else(|_| m.modified()).ok())
                .unwrap_or_else(SystemTime::now),
            path,
            file: None,
            ino: 0,
            pending: Vec::new(),
            dirty: false,
            used: 0,
            checked: 0,
        }
    }

    fn open(&mut self) -> std::io::Result<&mut File> {
        // A path that no longer leads to the open file (deleted, moved by a
        // rotation tool): reopen.
        if self.file.is_some() && !self.still_there() {
            self.file = None;
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.ino = inode(&file.metadata()?);
            crate::base::written::mark(&self.path);
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    fn still_there(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| inode(&m) == self.ino)
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (|| {
            self.open()?;
            let file = self.file.as_mut().expect("opened above");
            let mut done = 0;
            let r = loop {
                match file.write(&self.pending[done..]) {
                    Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        if done == self.pending.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            self.pending.drain(..done);
            self.dirty |= done > 0;
            r
        })();
        if result.is_err() {
            self.file = None;
        }
        result
    }

    fn sync(&mut self, sync: Sync) -> std::io::Result<()> {
        if sync == Sync::None || !self.dirty {
            return Ok(());
        }
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_numbers_never_overflow() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        assert_eq!(next_rotated(&path), d.path().join("a.log.1"));
        std::fs::write(d.path().join("a.log.7.gz"), "").unwrap();
        assert_eq!(next_rotated(&path), d.path().join("a.log.8"));
        // Not sluice's: too many digits to be a rotation it made.
        std::fs::write(d.path().join("a.log.18446744073709551615"), "").unwrap();
        assert_eq!(next_rotated(&path), d.path().join("a.log.8"));
    }
}
