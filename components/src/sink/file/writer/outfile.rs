//! One output file: opened (its torn last line cut), written from its
//! pending bytes, sealed with age when the sink encrypts, synced, and
//! known by its inode and links (moved or deleted under the sink).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::file::writer::outfile";

use super::*;

/// One output file.
pub(super) struct OutFile {
    pub(super) path: PathBuf,
    /// `None` until opened, and after a failed write (reopened on retry).
    pub(super) file: Option<File>,
    /// Inode of the open file: a path that leads elsewhere is reopened.
    pub(super) ino: u64,
    /// Bytes in the file, counting `pending`: what `rotate_size` compares.
    pub(super) size: u64,
    /// When the current file was started: what `rotate_every` measures.
    pub(super) started: SystemTime,
    /// Lines formatted this round, not yet written.
    pub(super) pending: Vec<u8>,
    /// Written since the last `fsync`.
    pub(super) dirty: bool,
    /// The writer's clock at the last use, for least-recently-used closing.
    pub(super) used: u64,
    /// The round in which rotation by time was last checked.
    pub(super) checked: u64,
    /// The round of the oldest line in `pending`.
    pub(super) pending_round: u64,
    /// Set when the sink encrypts: the file is an age stream.
    pub(super) enc: Option<Arc<Enc>>,
    /// The age stream of the open file.
    pub(super) stream: Option<Stream>,
    /// Ciphertext not yet written (a failed write resumes here).
    pub(super) cipher: Vec<u8>,
}

/// Write all of `buf` to `file`: how much was written, and whether all was.
pub(super) fn write_out(file: &mut File, buf: &[u8]) -> (usize, std::io::Result<()>) {
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
    pub(super) fn new(path: PathBuf, enc: Option<Arc<Enc>>) -> Self {
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

    pub(super) fn open(&mut self) -> std::io::Result<&mut File> {
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
    pub(super) fn open_sealed(&mut self, sync: Sync) -> std::io::Result<()> {
        if self.file.is_some() && !self.still_there() {
            let deleted = self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_none_or(|m| links(&m) == 0);
            if deleted {
                tracing::warn!(target: LOG_TARGET, path = %self.path.display(), "encrypted file deleted while open; its lines not yet durable go to a new one");
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
                tracing::info!(target: LOG_TARGET, path = %self.path.display(), "encrypted file moved away while open; finished where it is now");
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
            tracing::info!(target: LOG_TARGET, path = %self.path.display(), to = %aside.display(), "an earlier encrypted file was there (age files cannot be appended to); moved it aside");
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

    pub(super) fn still_there(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| inode(&m) == self.ino)
    }

    pub(super) fn write_pending(&mut self) -> std::io::Result<()> {
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
    pub(super) fn write_sealed(&mut self) -> std::io::Result<()> {
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

    pub(super) fn write_cipher(&mut self) -> std::io::Result<()> {
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
    pub(super) fn finish_here(&mut self, sync: Sync) -> std::io::Result<()> {
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
    pub(super) fn waiting_round(&self) -> Option<u64> {
        let pending = (!self.pending.is_empty()).then_some(self.pending_round);
        let stream = self.stream.as_ref().and_then(Stream::waiting).map(|w| w.0);
        pending.into_iter().chain(stream).min()
    }

    /// Since when the oldest line not yet durable has waited.
    pub(super) fn waiting_since(&self) -> Option<std::time::Instant> {
        self.stream.as_ref().and_then(Stream::waiting).map(|w| w.1)
    }

    pub(super) fn sync(&mut self, sync: Sync) -> std::io::Result<()> {
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
pub(super) fn links(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::nlink(m)
}

#[cfg(not(unix))]
pub(super) fn links(_: &std::fs::Metadata) -> u64 {
    1
}

/// How far back a torn last line is looked for.
pub(super) const TORN_MAX: u64 = 1 << 20;

/// A file this sink appends to ends with a newline, unless a crash (`kill
/// -9`) cut a write in two: that torn last line was never acknowledged
/// (its events are sent again by their source), so it is cut off before
/// appending, rather than glued to the next line.
pub(super) fn cut_torn_tail(file: &File, path: &std::path::Path) -> std::io::Result<()> {
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
    tracing::warn!(target: LOG_TARGET, path = %path.display(), cut_bytes = len - keep, "the file ends inside a line (a write cut by a crash): that part is cut off; its events are delivered again");
    file.set_len(keep)
}

#[cfg(unix)]
pub(super) fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
pub(super) fn inode(_: &std::fs::Metadata) -> u64 {
    0
}
