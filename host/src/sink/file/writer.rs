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
use super::sealed::Stream;
use super::tidy::Job;
use super::{FileSinkConfig, Sync};
use crate::base::crypt::Recipients;
use crate::base::event::SharedBatch;
use crate::base::metrics::ComponentMetrics;

/// A [`Finishing`] from the writer's fields, borrowed one by one (a method
/// would borrow the whole writer, and its map of files is in use).
macro_rules! finishing {
    ($w:ident) => {
        Finishing {
            cfg: &$w.cfg,
            in_use: &$w.in_use,
            tidy: &$w.tidy,
            sealing: &mut $w.sealing,
        }
    };
}

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

/// What an encrypting sink's files share.
pub struct Enc {
    pub recipients: Recipients,
    /// Compressed, then encrypted (`.gz.age`).
    pub gzip: bool,
    /// Where the ciphertext written is counted.
    pub metrics: Arc<ComponentMetrics>,
}

/// A file closed for good whose last bytes are still to be written.
type Sealing = Vec<(Vec<String>, OutFile)>;

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
    /// The round of the oldest line in `pending`.
    pending_round: u64,
    /// Set when the sink encrypts: the file is an age stream.
    enc: Option<Arc<Enc>>,
    /// The age stream of the open file.
    stream: Option<Stream>,
    /// Ciphertext not yet written (a failed write resumes here).
    cipher: Vec<u8>,
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
    enc: Option<Arc<Enc>>,
    /// Encrypted files closed for good whose last chunk failed to write:
    /// retried by every flush.
    sealing: Sealing,
    /// The keys the last `append` wrote to.
    touched: HashSet<Vec<String>>,
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
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        let enc = cfg.encrypt.as_ref().map(|e| {
            Arc::new(Enc {
                recipients: e.keys.clone().expect("resolved by build"),
                gzip: cfg.compress,
                metrics,
            })
        });
        Self {
            enc,
            sealing: Vec::new(),
            touched: HashSet::new(),
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
        self.touched.clear();
        let mut line = Vec::with_capacity(1024);
        let mut last_key: Option<Vec<String>> = None;
        for batch in batches {
            for event in batch.iter() {
                let key = self.cfg.path.key(event, &self.cfg.missing, now);
                if last_key.as_ref() != Some(&key) {
                    self.touch(&key, now);
                    if self.enc.is_some() && !self.touched.contains(&key) {
                        self.touched.insert(key.clone());
                    }
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
                        let to = finishing!(self);
                        rotate(to, &key, f, now);
                    }
                }
                if f.pending.is_empty() {
                    f.pending_round = self.round;
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
            let mut f = OutFile::new(path.clone(), self.enc.clone());
            // Open now: a name the filesystem refuses for good is known
            // before any event is queued for it.
            let opened = match f.enc {
                Some(_) => f.open_sealed(self.cfg.sync),
                None => f.open().map(|_| ()),
            };
            if let Err(e) = opened {
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
        let to = finishing!(self);
        check_due(to, key, f, now);
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
        if f.enc.is_some() {
            tracing::debug!(path = %f.path.display(), "closing least recently used file");
            let to = finishing!(self);
            if f.stream.is_some() {
                to.finish(&key, f);
            } else {
                self.in_use.lock().expect("in-use lock").remove(&f.path);
            }
            return;
        }
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
        // Encrypted files closed for good whose last chunk did not go out.
        for (key, mut f) in std::mem::take(&mut self.sealing) {
            match f.finish_here(self.cfg.sync) {
                Ok(()) => {
                    self.in_use.lock().expect("in-use lock").remove(&f.path);
                    crate::base::written::mark(&f.path);
                    let _ = self.tidy.send(Job::Finished(f.path, key));
                }
                Err(source) => {
                    first_error.get_or_insert(WriteError::Write {
                        path: f.path.clone(),
                        source,
                    });
                    self.sealing.push((key, f));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The oldest round whose lines for `key` are not durable yet (an
    /// encrypted file's incomplete chunk).
    pub fn waiting_round(&self, key: &[String]) -> Option<u64> {
        let open = self.files.get(key).and_then(OutFile::waiting_round);
        let sealing = self
            .sealing
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, f)| f.waiting_round())
            .min();
        open.into_iter().chain(sealing).min()
    }

    /// The keys the last `append` wrote to (encrypting sinks).
    pub fn touched(&self) -> Vec<Vec<String>> {
        self.touched.iter().cloned().collect()
    }

    /// The number of the last round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Finish every encrypted file with lines of `round` or earlier still
    /// waiting for their chunk to complete (too much held in memory).
    pub fn seal_waiting(&mut self, round: u64, now: DateTime<Utc>) {
        for (key, f) in self.files.iter_mut() {
            if f.waiting_round().is_some_and(|r| r <= round) {
                let to = finishing!(self);
                rotate(to, key, f, now);
            }
        }
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
        let seal_after = self.cfg.encrypt.as_ref().map(|e| e.seal_after);
        for (key, f) in self.files.iter_mut() {
            f.checked = self.round;
            let to = finishing!(self);
            check_due(to, key, f, now);
            // Lines waiting too long for their chunk to complete: finish
            // the file so that they are durable (and acknowledged).
            if let (Some(after), Some(since)) = (seal_after, f.waiting_since()) {
                if since.elapsed() >= after {
                    tracing::debug!(path = %f.path.display(), "lines waited seal_after for their chunk: finishing the file");
                    let to = finishing!(self);
                    rotate(to, key, f, now);
                }
            }
        }
    }

    /// The keys of the open files (for retention sweeps).
    pub fn keys(&self) -> Vec<Vec<String>> {
        self.files.keys().cloned().collect()
    }

    /// Write and sync everything, then close every file (at shutdown).
    pub fn close(&mut self) -> Result<(), WriteError> {
        self.flush()?;
        if self.enc.is_some() {
            // Synced at shutdown whatever `sync` says, as plain files are.
            for f in self.files.values_mut() {
                f.finish_here(Sync::Batch)
                    .map_err(|source| WriteError::Write {
                        path: f.path.clone(),
                        source,
                    })?;
            }
        }
        self.sync_dirty()?;
        for f in self.files.values_mut() {
            f.file = None;
        }
        Ok(())
    }
}

/// Where a file closed for good goes: the tidier, or the sealing list when
/// its last encrypted bytes cannot be written yet.
struct Finishing<'a> {
    cfg: &'a FileSinkConfig,
    in_use: &'a InUse,
    tidy: &'a std::sync::mpsc::Sender<Job>,
    sealing: &'a mut Sealing,
}

impl Finishing<'_> {
    /// Finish the encrypted file `f` (its last chunk), then hand it to the
    /// tidier; on failure keep it for the next flush.
    fn finish(self, key: &[String], mut f: OutFile) {
        match f.finish_here(self.cfg.sync) {
            Ok(()) => {
                self.in_use.lock().expect("in-use lock").remove(&f.path);
                crate::base::written::mark(&f.path);
                tracing::debug!(path = %f.path.display(), "encrypted file finished");
                let _ = self.tidy.send(Job::Finished(f.path, key.to_vec()));
            }
            Err(e) => {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot finish encrypted file; retrying");
                self.sealing.push((key.to_vec(), f));
            }
        }
    }
}

/// Finish `f` if its period's path changed, or rotate it if it is older
/// than `rotate_every`.
fn check_due(to: Finishing<'_>, key: &[String], f: &mut OutFile, now: DateTime<Utc>) {
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
                tracing::debug!(path = %done.path.display(), "period over; finishing encrypted file");
                to.finish(key, done);
                return;
            }
            if let Err(e) = f.write_pending().and_then(|()| f.sync(cfg.sync)) {
                tracing::warn!(path = %f.path.display(), error = %e, "cannot finish file; retrying later");
                return;
            }
            let done = std::mem::replace(f, OutFile::new(current.clone(), None));
            let mut set = to.in_use.lock().expect("in-use lock");
            set.remove(&done.path);
            set.insert(current);
            drop(set);
            tracing::debug!(path = %done.path.display(), "period over; file finished");
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
fn rotate(to: Finishing<'_>, key: &[String], f: &mut OutFile, now: DateTime<Utc>) {
    let cfg = to.cfg;
    if f.enc.is_some() {
        // Its lines so far into its own stream (opening it if this round
        // began it), so that the rotation falls between them and the next.
        if let Err(e) = f.write_pending() {
            tracing::warn!(path = %f.path.display(), error = %e, "cannot rotate encrypted file; retrying later");
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
                tracing::warn!(path = %f.path.display(), error = %e, "cannot rotate encrypted file; appending to it");
                return;
            }
        }
        tracing::debug!(path = %f.path.display(), to = %target.display(), "rotated");
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
        tracing::warn!(path = %f.path.display(), error = %e, "cannot rotate file; retrying later");
        return;
    }
    f.file = None;
    let target = next_rotated(&f.path, "");
    match std::fs::rename(&f.path, &target) {
        Ok(()) => {
            tracing::debug!(path = %f.path.display(), to = %target.display(), "rotated");
            crate::base::written::mark(&target);
            let _ = to.tidy.send(Job::Finished(target, key.to_vec()));
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

/// `STEM.N` + `suffix` for the smallest N above every existing
/// `STEM.N[.gz][.age]`, where `path` is `STEM` + `suffix` (`.age`,
/// `.gz.age` for encrypted files, nothing for plain ones).
fn next_rotated(path: &Path, suffix: &str) -> PathBuf {
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

/// Write all of `buf` to `file`: how much was written, and whether all was.
fn write_out(file: &mut File, buf: &[u8]) -> (usize, std::io::Result<()>) {
    let mut done = 0;
    let r = loop {
        if done == buf.len() {
            break Ok(());
        }
        match file.write(&buf[done..]) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    (done, r)
}

impl OutFile {
    /// An entry for `path`, which may already exist (appended to; an
    /// encrypted one is moved aside when opened).
    fn new(path: PathBuf, enc: Option<Arc<Enc>>) -> Self {
        let meta = std::fs::metadata(&path).ok().filter(|_| enc.is_none());
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
            pending_round: 0,
            enc,
            stream: None,
            cipher: Vec::new(),
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
            // Read too: a torn last line is looked for before appending.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .create(true)
                .append(true)
                .open(&self.path)?;
            cut_torn_tail(&file, &self.path)?;
            self.ino = inode(&file.metadata()?);
            crate::base::written::mark(&self.path);
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Make sure an age stream is open at `path`. An age file cannot be
    /// appended to: one already there (finished at the last shutdown, or
    /// cut by a crash) is moved aside as the next rotated file. A file of
    /// ours that was moved away is finished where it is; one that was
    /// deleted is given up, and its lines not yet durable start the new one.
    fn open_sealed(&mut self, sync: Sync) -> std::io::Result<()> {
        if self.file.is_some() && !self.still_there() {
            let deleted = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_none_or(|m| links(&m) == 0);
            if deleted {
                tracing::warn!(path = %self.path.display(), "encrypted file deleted while open; its lines not yet durable go to a new one");
                self.cipher.clear();
                self.file = None;
                if let Some((round, mut lines)) = self.stream.take().and_then(Stream::abandon) {
                    if self.pending.is_empty() {
                        self.pending_round = round;
                    }
                    self.pending_round = self.pending_round.min(round);
                    lines.extend_from_slice(&self.pending);
                    self.pending = lines;
                }
            } else {
                tracing::info!(path = %self.path.display(), "encrypted file moved away while open; finished where it is now");
                let pending = std::mem::take(&mut self.pending);
                self.finish_here(sync)?;
                self.pending = pending;
            }
        }
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::symlink_metadata(&self.path).is_ok() {
            let suffix = match self.enc.as_ref().is_some_and(|e| e.gzip) {
                true => ".gz.age",
                false => ".age",
            };
            let aside = next_rotated(&self.path, suffix);
            std::fs::rename(&self.path, &aside)?;
            crate::base::written::mark(&aside);
            tracing::info!(path = %self.path.display(), to = %aside.display(), "an earlier encrypted file was there (age files cannot be appended to); moved it aside");
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.path)?;
        let enc = self.enc.as_ref().expect("an encrypted file");
        let mut stream = Stream::new(&enc.recipients, enc.gzip)?;
        self.ino = inode(&file.metadata()?);
        crate::base::written::mark(&self.path);
        self.cipher = stream.take();
        self.stream = Some(stream);
        self.file = Some(file);
        Ok(())
    }

    fn still_there(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| inode(&m) == self.ino)
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.enc.is_some() {
            return self.write_sealed();
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = (|| {
            self.open()?;
            let file = self.file.as_mut().expect("opened above");
            let (done, r) = write_out(file, &self.pending);
            self.pending.drain(..done);
            self.dirty |= done > 0;
            r
        })();
        if result.is_err() {
            self.file = None;
        }
        result
    }

    /// Encrypt the pending lines and write the ciphertext. The file stays
    /// open on failure (an age stream cannot be reopened); the next call
    /// writes what is left.
    fn write_sealed(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() && self.cipher.is_empty() {
            return Ok(());
        }
        self.open_sealed(Sync::None)?;
        let stream = self.stream.as_mut().expect("opened above");
        stream.feed(self.pending_round, &self.pending)?;
        self.pending.clear();
        self.cipher.extend(stream.take());
        self.write_cipher()?;
        self.stream.as_mut().expect("opened above").written();
        Ok(())
    }

    fn write_cipher(&mut self) -> std::io::Result<()> {
        if self.cipher.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            return Err(std::io::Error::other("the encrypted file is not open"));
        };
        let (done, r) = write_out(file, &self.cipher);
        self.cipher.drain(..done);
        self.dirty |= done > 0;
        if let Some(enc) = &self.enc {
            ComponentMetrics::add(&enc.metrics.encrypted_bytes, done);
        }
        r
    }

    /// Finish the age stream of this file where it is: the pending lines,
    /// the last chunk, a sync (unless `sync = "none"`), then close it.
    /// Resumes a finish that failed.
    fn finish_here(&mut self, sync: Sync) -> std::io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if !stream.is_finished() {
            stream.feed(self.pending_round, &self.pending)?;
            self.pending.clear();
            stream.finish()?;
        }
        self.cipher.extend(stream.take());
        self.write_cipher()?;
        self.sync(sync)?;
        self.stream.as_mut().expect("checked above").written();
        self.stream = None;
        self.file = None;
        Ok(())
    }

    /// The oldest round of lines of this file not durable yet.
    fn waiting_round(&self) -> Option<u64> {
        let pending = (!self.pending.is_empty()).then_some(self.pending_round);
        let stream = self.stream.as_ref().and_then(Stream::waiting).map(|w| w.0);
        pending.into_iter().chain(stream).min()
    }

    /// Since when the oldest line not yet durable has waited.
    fn waiting_since(&self) -> Option<std::time::Instant> {
        self.stream.as_ref().and_then(Stream::waiting).map(|w| w.1)
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
fn links(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

#[cfg(not(unix))]
fn links(_: &std::fs::Metadata) -> u64 {
    1
}

/// How far back a torn last line is looked for.
const TORN_MAX: u64 = 1 << 20;

/// A file this sink appends to ends with a newline, unless a crash (`kill
/// -9`) cut a write in two: that torn last line was never acknowledged
/// (its events are sent again by their source), so it is cut off before
/// appending, rather than glued to the next line.
fn cut_torn_tail(file: &File, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let from = len.saturating_sub(TORN_MAX);
    let mut tail = vec![0u8; (len - from) as usize];
    file.read_exact_at(&mut tail, from)?;
    let keep = match memchr::memrchr(b'\n', &tail) {
        Some(i) => from + i as u64 + 1,
        None if from == 0 => 0,
        // No newline in the last MiB: not a line of ours; left as it is.
        None => return Ok(()),
    };
    tracing::warn!(path = %path.display(), cut_bytes = len - keep, "the file ends inside a line (a write cut by a crash): that part is cut off; its events are delivered again");
    file.set_len(keep)
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

    /// A line torn by `kill -9` mid-write is cut off before appending, not
    /// glued to the next line (seen as `..."stream_id":"17964-29{"timestamp"...`).
    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("out.log");
        for (before, after) in [
            (
                "{\"n\":1}\n{\"n\":2}\n{\"n\":3,\"pa",
                "{\"n\":1}\n{\"n\":2}\n",
            ),
            ("{\"n\":1}\n", "{\"n\":1}\n"),
            ("{\"n\":1,\"cut", ""),
            ("", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .unwrap();
            cut_torn_tail(&file, &path).unwrap();
            (&file).write_all(b"{\"n\":4}\n").unwrap();
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("{after}{{\"n\":4}}\n")
            );
        }
    }

    #[test]
    fn rotation_numbers_never_overflow() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a.log");
        assert_eq!(next_rotated(&path, ""), d.path().join("a.log.1"));
        std::fs::write(d.path().join("a.log.7.gz"), "").unwrap();
        assert_eq!(next_rotated(&path, ""), d.path().join("a.log.8"));
        // Not sluice's: too many digits to be a rotation it made.
        std::fs::write(d.path().join("a.log.18446744073709551615"), "").unwrap();
        assert_eq!(next_rotated(&path, ""), d.path().join("a.log.8"));
        // Encrypted: the number goes before `.age`, counting every form.
        std::fs::write(d.path().join("a.log.9.gz.age"), "").unwrap();
        assert_eq!(
            next_rotated(&d.path().join("a.log.age"), ".age"),
            d.path().join("a.log.10.age")
        );
    }
}
