//! The open files of a file sink: which file each event goes to, rotation
//! by size and time, the least recently used file closed past
//! `max_open_files`. Blocking I/O, run off the async threads.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::file::writer";

mod outfile;
mod rotate;

use self::{outfile::*, rotate::*};

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};

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

/// The open files of one sink.
pub struct Writer {
    cfg: Arc<FileSinkConfig>,
    formatter: Formatter,
    /// (Fx: looked up once per event, where SipHash cost about 5% of a
    /// passthrough event; the map holds at most `max_open_files` keys.)
    files: FxHashMap<Vec<String>, OutFile>,
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
    refused_keys: FxHashMap<Vec<String>, (String, std::time::Instant)>,
    enc: Option<Arc<Enc>>,
    /// Encrypted files closed for good whose last chunk failed to write:
    /// retried by every flush.
    sealing: Sealing,
    /// The keys the last `append` wrote to.
    touched: FxHashSet<Vec<String>>,
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
            touched: FxHashSet::default(),
            formatter: cfg.formatter(),
            cfg,
            files: FxHashMap::default(),
            in_use,
            tidy,
            round: 0,
            clock: 0,
            refused: Vec::new(),
            refused_keys: FxHashMap::default(),
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
                let f = self.files.get_mut(&key).expect("touched above");
                if self.cfg.rotate_size.is_none() {
                    // No rotation by size: formatted where it is written
                    // from (no copy through `line`).
                    if f.pending.is_empty() {
                        f.pending_round = self.round;
                    }
                    let start = f.pending.len();
                    self.formatter.line(event, &mut f.pending);
                    f.size += (f.pending.len() - start) as u64;
                    continue;
                }
                line.clear();
                self.formatter.line(event, &mut line);
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
                    tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "the file name is refused for good; its events go to the dead letters");
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
            tracing::debug!(target: LOG_TARGET, path = %f.path.display(), "closing least recently used file");
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
            tracing::warn!(target: LOG_TARGET, path = %f.path.display(), error = %e, "cannot close file; keeping it open");
            self.files.insert(key, f);
            return;
        }
        tracing::debug!(target: LOG_TARGET, path = %f.path.display(), "closed least recently used file");
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
                    tracing::debug!(target: LOG_TARGET, path = %f.path.display(), "lines waited seal_after for their chunk: finishing the file");
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
