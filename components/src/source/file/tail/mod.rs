//! The reading half of the file source: finding files, reading what they
//! add, following rotations and truncations, and saving positions.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::file::tail";

mod read;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{FileConfig, LongLines, ReadFrom};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Closed;
use crate::source::checkpoint::Checkpoints;
use crate::source::fingerprint::{
    file_id, find_copy, fingerprint, fingerprint_or_empty, read_at, FileId, Fingerprint,
    FINGERPRINT_BYTES,
};
use crate::source::records::{Kubernetes, Multiline, Records};
use crate::source::{Batcher, LineDecoder, SourceContext};

/// Most bytes read from one file before the others get a turn.
const READ_TURN: usize = 4 << 20;
/// Size of one read.
const CHUNK: usize = 256 << 10;
/// Longest wait for the last batches' delivery at the end, to save their
/// positions.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(30);
/// How often positions are saved while running.
const SAVE_EVERY: Duration = Duration::from_millis(200);

/// One file being read.
struct Tail {
    path: PathBuf,
    file: File,
    /// File offset of `buf[0]`: everything before it has made events.
    start: u64,
    /// Bytes read past `start`, not yet a whole line.
    buf: Vec<u8>,
    /// Inside a line longer than `max_line`: skip to its newline.
    skipping: bool,
    fingerprint: Fingerprint,
    decoder: LineDecoder,
    /// Container lines unwrapped and multiline records joined.
    records: Records,
    /// Last time data arrived (for `partial_timeout`).
    grew_at: Instant,
    /// Since when the path no longer leads to this file.
    gone_since: Option<Instant>,
    /// A `.gz`, `.age` or `.gz.age` file, read whole once.
    gz: bool,
    /// Read to its end (for files read once).
    done: bool,
}

/// Reads every file the glob finds, on a blocking thread.
pub(super) struct Tailer {
    cfg: FileConfig,
    /// Given up at the end so the pipeline drains while the last positions
    /// wait for delivery.
    ctx: Option<SourceContext>,
    handle: tokio::runtime::Handle,
    checkpoints: Option<Checkpoints>,
    batcher: Batcher,
    files: HashMap<FileId, Tail>,
    /// Files in the order they were found: read in that order.
    order: Vec<FileId>,
    /// Position after the last line of each file in the current batch.
    marks: HashMap<FileId, u64>,
    /// Globs done so far.
    scans: u64,
    /// When the last glob was done (one per `poll_interval`).
    scanned_at: Option<Instant>,
    /// Identity and name of every file with a position, for saving.
    known: HashMap<FileId, (Fingerprint, PathBuf)>,
    /// Files deleted and read to their end: their positions are dropped.
    retired: Vec<FileId>,
    /// Paths already warned about (a loop, our own output): once each.
    warned: std::collections::HashSet<PathBuf>,
    /// Why files that match were not read (encrypted without identity,
    /// compressed without `gzip`), for the error when none is left.
    skipped: Option<&'static str>,
    /// Changes to the files' folder, when it is watched (`follow` without
    /// `poll`); `None`: polled every `poll_interval`.
    watch: Option<super::watch::Watch>,
    multiline: Option<std::sync::Arc<Multiline>>,
}

impl Tailer {
    pub(super) fn new(
        cfg: FileConfig,
        ctx: SourceContext,
        handle: tokio::runtime::Handle,
        checkpoints: Option<Checkpoints>,
        known: HashMap<FileId, (Fingerprint, PathBuf)>,
    ) -> Self {
        let watch = (cfg.follow && !cfg.poll)
            .then(|| super::watch::Watch::start(&cfg.path, ctx.shutdown.clone(), &handle))
            .and_then(|w| match w {
                Ok(w) => {
                    tracing::debug!(target: LOG_TARGET, source = %ctx.name, folder = %w.folder.display(), "watching for changes");
                    Some(w)
                }
                Err(e) => {
                    tracing::info!(target: LOG_TARGET, source = %ctx.name, error = %e, "cannot watch the files' folder; polling every poll_interval");
                    None
                }
            });
        // Checked by `build`; a failure here would be a bug, and costs the
        // multiline joining, not the source.
        let multiline = cfg
            .multiline
            .as_ref()
            .and_then(|m| match m.build(cfg.max_line) {
                Ok(m) => Some(std::sync::Arc::new(m)),
                Err(e) => {
                    tracing::error!(target: LOG_TARGET, source = %ctx.name, error = %e, "multiline rules refused");
                    None
                }
            });
        Tailer {
            multiline,
            watch,
            batcher: Batcher::new(ctx.batch),
            cfg,
            ctx: Some(ctx),
            handle,
            checkpoints,
            files: HashMap::new(),
            order: Vec::new(),
            marks: HashMap::new(),
            scans: 0,
            scanned_at: None,
            known,
            retired: Vec::new(),
            warned: std::collections::HashSet::new(),
            skipped: None,
        }
    }

    fn ctx(&self) -> &SourceContext {
        self.ctx.as_ref().expect("context is held until the end")
    }

    pub(super) fn run(mut self) -> anyhow::Result<()> {
        let mut saved_at = Instant::now();
        // Whether every file was read to its end (not stopped on the way).
        let mut finished = false;
        let result = loop {
            if self.ctx().shutdown.is_set() {
                break Ok(());
            }
            self.scan();
            if !self.cfg.follow && self.files.is_empty() {
                break Err(match self.skipped.take() {
                    Some(why) => anyhow::anyhow!(
                        "source {}: no file it can read matches {} ({why})",
                        self.ctx().name,
                        self.cfg.path.display()
                    ),
                    None => anyhow::anyhow!(
                        "source {}: no file matches {}",
                        self.ctx().name,
                        self.cfg.path.display()
                    ),
                });
            }
            let mut progressed = false;
            for id in self.order.clone() {
                match self.read(id) {
                    Ok(p) => progressed |= p,
                    Err(Closed) => return Ok(()),
                }
            }
            if let Err(Closed) = self.housekeeping() {
                return Ok(());
            }
            if saved_at.elapsed() >= SAVE_EVERY {
                self.save();
                saved_at = Instant::now();
            }
            if !self.cfg.follow && self.files.values().all(|t| t.done) {
                finished = true;
                break Ok(());
            }
            if !progressed {
                let idle = self.idle();
                let records = self
                    .records_due()
                    .map_or(idle, |d| d.saturating_duration_since(Instant::now()));
                let wait = self
                    .batcher
                    .deadline()
                    .map(|d| d.into_std().saturating_duration_since(Instant::now()))
                    .unwrap_or(idle)
                    .min(idle)
                    .min(records)
                    .max(Duration::from_millis(1));
                match &self.watch {
                    None => std::thread::sleep(wait),
                    Some(w) => match w.wait(wait) {
                        super::watch::Waited::Rescan => self.scanned_at = None,
                        super::watch::Waited::Changed
                        | super::watch::Waited::Timeout
                        | super::watch::Waited::Stop => {}
                    },
                }
            }
        };
        // Files read once end with their last line, newline or not; a
        // stop on the way leaves the line being read for the next run (the
        // checkpoint is at its start): emitted now, it would be cut short.
        if finished {
            for id in self.order.clone() {
                self.emit_partial(id);
                self.finish_records(id);
            }
        }
        let _ = self.flush();
        let ctx = self.ctx.take().expect("held until here");
        drop(ctx);
        if let Some(c) = &self.checkpoints {
            let waited = Instant::now();
            while c.pending() > 0 && waited.elapsed() < FINAL_ACK_WAIT {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.save();
        result
    }

    /// How long to wait when nothing happens: a watched source wakes on
    /// changes, and looks anyway every `watch::RECHECK`.
    fn idle(&self) -> Duration {
        match self.watch {
            Some(_) => super::watch::RECHECK.max(self.cfg.poll_interval),
            None => self.cfg.poll_interval,
        }
    }

    /// Find the files the glob matches now.
    fn scan(&mut self) {
        let idle = self.idle();
        let due = self.scanned_at.is_none_or(|t| t.elapsed() >= idle);
        if (!self.cfg.follow && self.scans > 0) || !due {
            return;
        }
        self.scans += 1;
        self.scanned_at = Some(Instant::now());
        let found = super::find::find(&self.cfg.path);
        for (dir, why) in found.skipped {
            if self.warned.insert(dir.clone()) {
                tracing::warn!(target: LOG_TARGET, source = %self.ctx().name, path = %dir.display(), "not entered: {why}");
            }
        }
        for path in found.own_output {
            // A file opened before a sink of ours began writing it (it
            // existed already) is let go as soon as we know.
            let before = self.files.len();
            self.files.retain(|_, t| t.path != path);
            if self.files.len() != before {
                let files = &self.files;
                self.order.retain(|id| files.contains_key(id));
                tracing::warn!(target: LOG_TARGET, source = %self.ctx().name, path = %path.display(), "stopped reading a file a sink of this pipeline writes");
            }
            if self.warned.insert(path.clone()) {
                tracing::warn!(target: LOG_TARGET, source = %self.ctx().name, path = %path.display(), "not read: a file sink of this pipeline writes it (reading it would feed its events back for ever)");
            }
        }
        for path in found.files {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = file_id(&meta);
            if let Some(t) = self.files.get_mut(&id) {
                // Renamed to another name the glob matches: same file.
                if t.path != path {
                    t.path = path;
                    t.gone_since = None;
                }
                continue;
            }
            let packing = crate::base::crypt::Packing::of(&path);
            if packing.encrypted && self.cfg.identities.is_none() {
                tracing::debug!(target: LOG_TARGET, source = %self.ctx().name, path = %path.display(), "skipping encrypted file (set identity_file to read it)");
                self.skipped = Some("encrypted files are read with identity_file set");
                continue;
            }
            if packing.compressed && !packing.encrypted && !self.cfg.gzip {
                tracing::debug!(target: LOG_TARGET, source = %self.ctx().name, path = %path.display(), "skipping compressed file (set gzip = true to read it)");
                self.skipped = Some("compressed files are read with gzip = true");
                continue;
            }
            let gz = packing.packed();
            if let Err(e) = self.open(id, path.clone(), meta.len(), gz) {
                tracing::warn!(target: LOG_TARGET, source = %self.ctx().name, path = %path.display(), error = %e, "cannot open file");
            }
        }
    }

    fn open(&mut self, id: FileId, path: PathBuf, len: u64, gz: bool) -> std::io::Result<()> {
        let file = File::open(&path)?;
        let fingerprint = fingerprint(&file, FINGERPRINT_BYTES)?;
        let resumed = self
            .checkpoints
            .as_ref()
            .and_then(|c| c.resume(id, |n| fingerprint_or_empty(&file, n)));
        let start = match resumed {
            // Shorter than the saved position: truncated while we were away.
            Some(offset) if offset <= len => offset,
            Some(_) => 0,
            None if self.scans == 1 && self.cfg.read_from == ReadFrom::End && !gz => len,
            None => 0,
        };
        let shown = path.display().to_string();
        tracing::debug!(target: LOG_TARGET, source = %self.ctx().name, path = %shown, start, resumed = resumed.is_some(), "reading file");
        let records = Records::new(
            self.cfg.format,
            self.multiline.clone(),
            self.cfg.max_line,
            if self.cfg.kubernetes {
                Kubernetes::of_path(&path)
            } else {
                None
            },
        );
        let decoder = LineDecoder::new(self.cfg.format, &self.ctx().name, Some(&shown))
            .with_times(self.cfg.timestamp.clone(), self.ctx().metrics.clone());
        self.files.insert(
            id,
            Tail {
                path,
                file,
                start,
                buf: Vec::new(),
                skipping: false,
                fingerprint,
                decoder,
                records,
                grew_at: Instant::now(),
                gone_since: None,
                gz,
                done: gz && start >= len && len > 0,
            },
        );
        self.order.push(id);
        Ok(())
    }

    fn housekeeping(&mut self) -> Result<(), Closed> {
        if let Some(timeout) = self.cfg.partial_timeout {
            let due: Vec<FileId> = self
                .files
                .iter()
                .filter(|(_, t)| !t.buf.is_empty() && t.grew_at.elapsed() >= timeout)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                self.emit_partial(id);
            }
        }
        self.expire_records();
        if self.cfg.follow {
            let mut retired = Vec::new();
            for (id, t) in self.files.iter_mut() {
                let here = std::fs::metadata(&t.path).is_ok_and(|m| file_id(&m) == *id);
                if here {
                    t.gone_since = None;
                    continue;
                }
                let since = *t.gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.cfg.rotate_wait
                    && t.grew_at.elapsed() >= self.cfg.rotate_wait
                {
                    retired.push(*id);
                }
            }
            for id in retired {
                self.emit_partial(id);
                self.finish_records(id);
                let t = self.files.remove(&id).expect("listed above");
                self.order.retain(|o| *o != id);
                tracing::debug!(target: LOG_TARGET, path = %t.path.display(), "file moved away or deleted and read to its end; closed");
                // Were it still matched under another name, the glob would
                // have found it: it will not be read again.
                self.retired.push(id);
            }
        }
        if self.batcher.is_due() {
            self.flush()?;
        }
        Ok(())
    }

    /// Send the current batch, with a token that saves its positions once
    /// delivered.
    fn flush(&mut self) -> Result<(), Closed> {
        let marks: Vec<(FileId, u64)> = self.marks.drain().collect();
        if let Some(c) = &self.checkpoints {
            if !marks.is_empty() {
                if self.batcher.batch.is_empty() {
                    c.reached(marks);
                } else {
                    self.batcher.batch.acks.push(c.in_flight(marks));
                }
            }
        }
        let ctx = self.ctx.as_ref().expect("held");
        self.handle.block_on(self.batcher.flush(ctx))
    }

    fn save(&mut self) {
        let Some(c) = &self.checkpoints else {
            return;
        };
        for id in self.retired.drain(..) {
            c.forget(id);
            self.known.remove(&id);
        }
        for (id, t) in &self.files {
            self.known.insert(*id, (t.fingerprint, t.path.clone()));
        }
        if let Err(e) = c.save(&self.known) {
            tracing::warn!(target: LOG_TARGET, error = %format!("{e:#}"), "cannot save checkpoints");
        }
    }
}
