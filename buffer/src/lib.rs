//! sluice's disk buffer: what a sink has not yet delivered, kept on disk so
//! that a slow or down destination never pushes back onto the sources.
//!
//! A buffer is a folder of segment files (`00000000000000000042.seg`),
//! each a run of records, one record per batch:
//!
//! ```text
//! magic "SLB1" | payload length u32 | CRC32C u32 | events u32 | written (ms) u64 | payload
//! payload = the events' end offsets (u32 each) then their bytes
//! ```
//!
//! (little-endian; the CRC covers the event count, the time and the
//! payload). [`Buffer::append`] writes a group of records and `fdatasync`s
//! once before it returns: only then may the caller acknowledge the
//! events to their sources. [`Buffer::read_next`] hands records to the
//! sink in order, and [`Buffer::ack`] takes them back as delivered (or
//! not: they are read again through [`Buffer::read_retry`]). The first
//! record not yet delivered is the *ack pointer*; it and the highest
//! record handed out (the *sent pointer*) are kept in the `state` file,
//! written on every change and synced every second and on close, so a
//! restart resumes at the first undelivered record and counts the events
//! it hands out again ([`Stats::redelivered`]). Segments wholly before the
//! ack pointer are deleted.
//!
//! Crash safety: at [`Buffer::open`], the last segment is read through and
//! checked; a torn tail (a record cut by a crash, after which nothing
//! valid follows) is truncated. A record that fails its check with valid
//! records after it is corruption: it is counted
//! ([`Stats::corrupt_records`]), logged once per segment, the reader
//! finds the next valid record by its magic and goes on, and the segment
//! is moved to `quarantine/` instead of deleted once delivered. Writes
//! that fail (a full disk) are cut back to the last whole record, so
//! nothing half-written is ever read or acknowledged.
//!
//! A buffer folder is used by one process at a time (an exclusive lock on
//! its `lock` file).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The first bytes of every record.
pub const MAGIC: [u8; 4] = *b"SLB1";
/// Bytes of a record's header.
pub const HEADER: u64 = 24;
/// The largest payload a record may have (a batch is far smaller).
const MAX_PAYLOAD: u64 = 1 << 30;
/// The `state` file: magic, version, ack pointer, sent pointer, CRC32C.
const STATE_MAGIC: [u8; 4] = *b"SLBS";
const STATE_LEN: usize = 44;

/// Where a record starts: its segment and its offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// What a buffer holds and has seen, as gauges and counters for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events written and not yet delivered.
    pub events: AtomicU64,
    /// Bytes of the segment files on disk.
    pub bytes: AtomicU64,
    /// When the oldest undelivered record was written (Unix ms; 0: none).
    pub oldest_ms: AtomicU64,
    /// Records found corrupt (their events are lost; the rest delivered).
    pub corrupt_records: AtomicU64,
    /// Events the buffer refused because it was full (`drop_newest`,
    /// `dead_letter`); counted by the host.
    pub dropped: AtomicU64,
    /// Events handed out again after a restart: handed to the sink before
    /// it, not acknowledged by it (possible duplicates).
    pub redelivered: AtomicU64,
    /// The size limit (`max_size`), for fill ratios.
    pub max_size: AtomicU64,
}

impl Stats {
    /// Seconds since the oldest undelivered record was written.
    pub fn oldest_seconds(&self, now_ms: u64) -> f64 {
        match self.oldest_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            t => now_ms.saturating_sub(t) as f64 / 1000.0,
        }
    }
}

/// One record read back: a batch and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub pos: Pos,
    /// Unix milliseconds when it was written.
    pub written_ms: u64,
    /// `ends[i]` is one past the last byte of event `i` in `data`.
    pub ends: Vec<u32>,
    pub data: Vec<u8>,
}

/// What [`Buffer::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Segments kept (not yet delivered).
    pub segments: usize,
    /// Events not yet delivered (counted from the record headers).
    pub events: u64,
    pub bytes: u64,
    /// Bytes of a torn last record cut off.
    pub truncated_bytes: u64,
    /// Segments found holding a corrupt record.
    pub corrupt_segments: usize,
    /// Events that were handed out before and will be again.
    pub redelivered: u64,
}

struct Segment {
    /// Bytes written and synced (what may be read).
    len: u64,
    corrupt: bool,
    /// Corruption was logged for it.
    logged: bool,
    file: Arc<File>,
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// The segment being written.
    active: u64,
    /// The next record to read.
    read: Pos,
    /// Handed out, not yet delivered: where each ends and its events.
    outstanding: BTreeMap<Pos, (Pos, u64)>,
    /// Handed out and failed: to be read again.
    retry: VecDeque<Pos>,
    ack: Pos,
    sent: Pos,
    state: File,
}

struct Writer {
    file: File,
    id: u64,
    len: u64,
    scratch: Vec<u8>,
    /// The last append failed (a full disk, say).
    failed: bool,
}

/// An open disk buffer. Shared by its writer, its reader and the
/// acknowledgements of what it handed out (`Arc<Buffer>`).
pub struct Buffer {
    dir: PathBuf,
    segment_size: u64,
    inner: Mutex<Inner>,
    writer: Mutex<Writer>,
    stats: Arc<Stats>,
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The ids of the segment files in `dir`, in order.
fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A new, empty segment `id` in `dir`, its name synced into the folder:
/// the file to write and its entry for the reader.
fn create_segment(dir: &Path, id: u64) -> io::Result<(File, Segment)> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(segment_path(dir, id))?;
    sync_dir(dir)?;
    let segment = Segment {
        len: 0,
        corrupt: false,
        logged: false,
        file: Arc::new(file.try_clone()?),
    };
    Ok((file, segment))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// A record's header, if it looks like one that fits in `room` bytes:
/// (payload length, CRC, events, written ms).
fn header(h: &[u8], room: u64) -> Option<(u64, u32, u64, u64)> {
    if h.get(..4) != Some(&MAGIC[..]) {
        return None;
    }
    let len = u64::from(u32_at(h, 4));
    let events = u64::from(u32_at(h, 12));
    if len > MAX_PAYLOAD || HEADER + len > room || events * 4 > len {
        return None;
    }
    Some((len, u32_at(h, 8), events, u64_at(h, 16)))
}

/// Whether a whole record (`bytes`: header and payload) is intact.
fn intact(bytes: &[u8]) -> bool {
    let Some((len, crc, events, _)) = header(bytes, bytes.len() as u64) else {
        return false;
    };
    let Some(covered) = bytes.get(12..(HEADER + len) as usize) else {
        return false;
    };
    if crc32c::crc32c(covered) != crc {
        return false;
    }
    // The end offsets must rise within the data.
    let payload = &covered[12..];
    let data_len = len - events * 4;
    let mut last = 0;
    for i in 0..events as usize {
        let end = u32_at(payload, i * 4);
        if end < last || u64::from(end) > data_len {
            return false;
        }
        last = end;
    }
    true
}

/// The offset of the first intact record in `bytes` at or after `from`.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(found) = bytes.get(at..)?.windows(4).position(|w| w == MAGIC) {
        let start = at + found;
        if intact(bytes.get(start..)?) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn encode_state(ack: Pos, sent: Pos) -> [u8; STATE_LEN] {
    let mut b = [0u8; STATE_LEN];
    b[..4].copy_from_slice(&STATE_MAGIC);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&ack.segment.to_le_bytes());
    b[16..24].copy_from_slice(&ack.offset.to_le_bytes());
    b[24..32].copy_from_slice(&sent.segment.to_le_bytes());
    b[32..40].copy_from_slice(&sent.offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_state(b: &[u8]) -> Option<(Pos, Pos)> {
    if b.len() < STATE_LEN || b[..4] != STATE_MAGIC || crc32c::crc32c(&b[..40]) != u32_at(b, 40) {
        return None;
    }
    let pos = |at| Pos {
        segment: u64_at(b, at),
        offset: u64_at(b, at + 8),
    };
    Some((pos(8), pos(24)))
}

/// What walking one segment found.
struct Walk {
    /// Where the last intact record ends (the segment's usable length).
    end: u64,
    events: u64,
    /// Events of the records starting before `until`.
    events_before: u64,
    corrupt: bool,
}

/// Walk the records of segment `file` (of `len` bytes) from `from`:
/// `verify` reads every record whole and checks it (else only headers).
/// A bad record followed by an intact one is corruption (counted from
/// there on); one with nothing intact after it ends the walk.
fn walk(file: &File, len: u64, from: u64, until: Option<u64>, verify: bool) -> io::Result<Walk> {
    let mut w = Walk {
        end: from,
        events: 0,
        events_before: 0,
        corrupt: false,
    };
    let whole = if verify {
        let mut b = vec![0; (len - from.min(len)) as usize];
        file.read_exact_at(&mut b, from)?;
        Some(b)
    } else {
        None
    };
    let mut at = from;
    let mut head = [0u8; HEADER as usize];
    while at + HEADER <= len {
        let ok = match &whole {
            Some(b) => {
                let rel = (at - from) as usize;
                intact(&b[rel..]).then(|| header(&b[rel..], len - at).map(|h| (h.0, h.2)))
            }
            None => {
                file.read_exact_at(&mut head, at)?;
                Some(header(&head, len - at).map(|h| (h.0, h.2)))
            }
        }
        .flatten();
        match ok {
            Some((plen, events)) => {
                w.events += events;
                if until.is_some_and(|u| at < u) {
                    w.events_before += events;
                }
                at += HEADER + plen;
                w.end = at;
            }
            None => {
                let next = whole
                    .as_ref()
                    .and_then(|b| resync(b, (at - from) as usize + 1));
                match next {
                    Some(rel) => {
                        w.corrupt = true;
                        at = from + rel as u64;
                    }
                    None => {
                        if whole.is_none() {
                            // Only headers read: the rest is the reader's
                            // to sort out.
                            w.corrupt = true;
                            w.end = len;
                        }
                        return Ok(w);
                    }
                }
            }
        }
    }
    if at < len && whole.is_none() {
        w.end = len;
    }
    Ok(w)
}

impl Buffer {
    /// Open (or create) the buffer in `dir`, recovering from a crash: a
    /// torn last record is cut, the state file says where delivery
    /// stopped. `segment_size`: a segment is closed once it holds that
    /// much. Fails if another process holds the folder.
    pub fn open(dir: &Path, segment_size: u64) -> io::Result<(Buffer, Recovered)> {
        fs::create_dir_all(dir)?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is in use by another sluice", dir.display()),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut ids = segment_ids(dir)?;
        let state = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("state"))?;
        let mut sb = vec![0u8; STATE_LEN];
        let saved = state
            .read_exact_at(&mut sb, 0)
            .ok()
            .and_then(|()| decode_state(&sb));
        let first = ids.first().copied().unwrap_or(0);
        let (mut ack, mut sent) = saved.unwrap_or_default();
        if ack.segment < first || !ids.contains(&ack.segment) {
            let seg = ids
                .iter()
                .copied()
                .find(|&id| id >= ack.segment)
                .unwrap_or(first);
            ack = Pos {
                segment: seg,
                offset: 0,
            };
        }
        sent = sent.max(ack);
        // Delivered whole: gone.
        for &id in ids.iter().filter(|&&id| id < ack.segment) {
            fs::remove_file(segment_path(dir, id))?;
        }
        ids.retain(|&id| id >= ack.segment);
        let stats = Arc::new(Stats::default());
        let mut rec = Recovered::default();
        let mut segments = BTreeMap::new();
        let last = ids.last().copied();
        for &id in &ids {
            let path = segment_path(dir, id);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let from = if id == ack.segment {
                ack.offset.min(len)
            } else {
                0
            };
            let until = match sent.segment.cmp(&id) {
                std::cmp::Ordering::Greater => Some(u64::MAX),
                std::cmp::Ordering::Equal => Some(sent.offset),
                std::cmp::Ordering::Less => None,
            };
            let w = walk(&file, len, from, until, Some(id) == last)?;
            let mut kept = len;
            if Some(id) == last && w.end < len {
                // A torn tail: a crash cut the last write.
                tracing::warn!(segment = %path.display(), bytes = len - w.end, "disk buffer: cutting a torn last record");
                file.set_len(w.end)?;
                file.sync_all()?;
                rec.truncated_bytes += len - w.end;
                kept = w.end;
            }
            if w.corrupt {
                rec.corrupt_segments += 1;
            }
            rec.events += w.events;
            rec.redelivered += w.events_before;
            rec.bytes += kept;
            segments.insert(
                id,
                Segment {
                    len: kept,
                    corrupt: w.corrupt,
                    logged: false,
                    file: Arc::new(file),
                },
            );
        }
        rec.segments = segments.len();
        // Writes go to a new segment: a recovered one is only read.
        let active = last.map_or(ack.segment, |l| l + 1);
        let (file, segment) = create_segment(dir, active)?;
        segments.insert(active, segment);
        if segments.len() == 1 {
            ack = Pos {
                segment: active,
                offset: 0,
            };
            sent = ack;
        }
        stats.events.store(rec.events, Ordering::Relaxed);
        stats.bytes.store(rec.bytes, Ordering::Relaxed);
        stats.redelivered.store(rec.redelivered, Ordering::Relaxed);
        let buffer = Buffer {
            dir: dir.to_path_buf(),
            segment_size: segment_size.max(HEADER * 2),
            inner: Mutex::new(Inner {
                segments,
                active,
                read: ack,
                outstanding: BTreeMap::new(),
                retry: VecDeque::new(),
                ack,
                sent,
                state,
            }),
            writer: Mutex::new(Writer {
                file,
                id: active,
                len: 0,
                scratch: Vec::new(),
                failed: false,
            }),
            stats,
            _lock: lock_file,
        };
        {
            let inner = lock(&buffer.inner);
            buffer.save(&inner)?;
            inner.state.sync_data()?;
            buffer.set_oldest(&inner);
        }
        if rec.truncated_bytes > 0 || rec.corrupt_segments > 0 || rec.events > 0 {
            tracing::info!(dir = %dir.display(), events = rec.events, segments = rec.segments, truncated_bytes = rec.truncated_bytes, corrupt_segments = rec.corrupt_segments, redelivered = rec.redelivered, "disk buffer recovered");
        }
        Ok((buffer, rec))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Bytes on disk now.
    pub fn size(&self) -> u64 {
        self.stats.bytes.load(Ordering::Relaxed)
    }

    /// The bytes [`Buffer::append`] would write for batches of these
    /// sizes (events, bytes).
    pub fn record_size(events: usize, bytes: usize) -> u64 {
        HEADER + 4 * events as u64 + bytes as u64
    }

    /// Write one record per batch (`(data, ends)`) and sync them: when
    /// this returns `Ok`, they survive a crash. On an error (a full disk)
    /// nothing of the group is kept: each segment it touched is cut back
    /// to where it was.
    pub fn append(&self, batches: &[(&[u8], &[u32])]) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let failed = std::mem::take(&mut w.failed);
        let r = self.append_locked(&mut w, batches, failed);
        w.failed = r.is_err();
        r
    }

    /// Start a new segment when everything written is delivered and the
    /// one being written is a quarter full, or the last write failed: the
    /// old one is deleted at once, so a sink that keeps up keeps little on
    /// disk, and a full disk gets room back as soon as the sink has taken
    /// what it holds.
    fn roll_if_delivered(&self, w: &mut Writer, failed: bool) -> io::Result<()> {
        if w.len == 0 || (w.len < self.segment_size / 4 && !failed) {
            return Ok(());
        }
        {
            let inner = lock(&self.inner);
            let at_end = Pos {
                segment: w.id,
                offset: w.len,
            };
            if !inner.outstanding.is_empty() || !inner.retry.is_empty() || inner.read != at_end {
                return Ok(());
            }
        }
        let id = w.id + 1;
        let (file, segment) = create_segment(&self.dir, id)?;
        let mut inner = lock(&self.inner);
        inner.segments.insert(id, segment);
        inner.active = id;
        inner.read = Pos {
            segment: id,
            offset: 0,
        };
        w.file = file;
        w.id = id;
        w.len = 0;
        self.advance(&mut inner)
    }

    fn append_locked(
        &self,
        w: &mut Writer,
        batches: &[(&[u8], &[u32])],
        failed: bool,
    ) -> io::Result<()> {
        self.roll_if_delivered(w, failed)?;
        let written = now_ms();
        let start = (w.id, w.len);
        let mut touched: Vec<(u64, u64)> = vec![start];
        // Segments finished in this group: (id, final length).
        let mut done: Vec<(u64, u64)> = Vec::new();
        let mut events = 0u64;
        let result = (|| -> io::Result<()> {
            for (data, ends) in batches {
                let payload = 4 * ends.len() as u64 + data.len() as u64;
                if payload > MAX_PAYLOAD {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "batch too large for one record",
                    ));
                }
                if w.len > 0 && w.len + HEADER + payload > self.segment_size {
                    w.file.sync_data()?;
                    done.push((w.id, w.len));
                    let id = w.id + 1;
                    let (file, segment) = create_segment(&self.dir, id)?;
                    // Known to the reader now, read from once it is the
                    // active one (when this group is published).
                    lock(&self.inner).segments.insert(id, segment);
                    w.file = file;
                    w.id = id;
                    w.len = 0;
                    touched.push((id, 0));
                }
                let mut s = std::mem::take(&mut w.scratch);
                s.clear();
                s.extend_from_slice(&MAGIC);
                s.extend_from_slice(&(payload as u32).to_le_bytes());
                s.extend_from_slice(&[0; 4]);
                s.extend_from_slice(&(ends.len() as u32).to_le_bytes());
                s.extend_from_slice(&written.to_le_bytes());
                for e in *ends {
                    s.extend_from_slice(&e.to_le_bytes());
                }
                s.extend_from_slice(data);
                let crc = crc32c::crc32c(&s[12..]);
                s[8..12].copy_from_slice(&crc.to_le_bytes());
                let r = w.file.write_all(&s);
                w.len += s.len() as u64;
                w.scratch = s;
                r?;
                events += ends.len() as u64;
            }
            w.file.sync_data()
        })();
        if let Err(e) = result {
            // Nothing half-written stays: every touched segment back to
            // where this group found it.
            for &(id, len) in &touched {
                if let Some(seg) = lock(&self.inner).segments.get(&id).map(|s| s.file.clone()) {
                    let _ = seg.set_len(len);
                }
            }
            let _ = w.file.sync_data();
            w.len = touched.last().map_or(0, |t| t.1);
            // A segment begun in this group stays, empty, as the one
            // written next; the lengths the reader knows never moved.
            lock(&self.inner).active = w.id;
            return Err(e);
        }
        let mut inner = lock(&self.inner);
        inner.active = w.id;
        let mut added = 0;
        for (id, len) in done.into_iter().chain(std::iter::once((w.id, w.len))) {
            if let Some(seg) = inner.segments.get_mut(&id) {
                added += len - seg.len;
                seg.len = len;
            }
        }
        self.stats.bytes.fetch_add(added, Ordering::Relaxed);
        self.stats.events.fetch_add(events, Ordering::Relaxed);
        if self.stats.oldest_ms.load(Ordering::Relaxed) == 0 {
            self.set_oldest(&inner);
        }
        Ok(())
    }

    /// Persist the pointers (written now, synced by [`Buffer::sync`]).
    fn save(&self, inner: &Inner) -> io::Result<()> {
        inner
            .state
            .write_all_at(&encode_state(inner.ack, inner.sent), 0)
    }

    /// Sync the state file: after this, a power loss hands out again only
    /// what was not delivered when it was called.
    pub fn sync(&self) -> io::Result<()> {
        let inner = lock(&self.inner);
        inner.state.sync_data()
    }

    /// The next record, in order, if one is written; `None` when the
    /// reader has caught up with the writer.
    pub fn read_next(&self) -> io::Result<Option<Record>> {
        loop {
            let mut inner = lock(&self.inner);
            let read = inner.read;
            let active = inner.active;
            let Some(seg) = inner.segments.get(&read.segment) else {
                // Its segment is gone (quarantined and delivered): on to
                // the next one.
                match inner.segments.range(read.segment..).next() {
                    Some((&id, _)) => {
                        inner.read = Pos {
                            segment: id,
                            offset: 0,
                        };
                        continue;
                    }
                    None => return Ok(None),
                }
            };
            if read.offset + HEADER > seg.len {
                if read.segment >= active {
                    return Ok(None);
                }
                let next = inner
                    .segments
                    .range(read.segment + 1..)
                    .next()
                    .map_or(active, |(&id, _)| id);
                inner.read = Pos {
                    segment: next,
                    offset: 0,
                };
                // Nothing handed out before it: the segments behind go.
                self.advance(&mut inner)?;
                continue;
            }
            let (file, len) = (seg.file.clone(), seg.len);
            drop(inner);
            match read_record(&file, read, len)? {
                Some(record) => {
                    let next = Pos {
                        segment: read.segment,
                        offset: read.offset
                            + HEADER
                            + 4 * record.ends.len() as u64
                            + record.data.len() as u64,
                    };
                    let mut inner = lock(&self.inner);
                    inner
                        .outstanding
                        .insert(read, (next, record.ends.len() as u64));
                    inner.read = next;
                    if next > inner.sent {
                        inner.sent = next;
                        self.save(&inner)?;
                    }
                    return Ok(Some(record));
                }
                None => {
                    // Corrupt: count it, and go on from the next intact
                    // record of the segment.
                    self.stats.corrupt_records.fetch_add(1, Ordering::Relaxed);
                    let mut rest = vec![0; (len - read.offset) as usize];
                    file.read_exact_at(&mut rest, read.offset)?;
                    let skip = resync(&rest, 1).map_or(len - read.offset, |r| r as u64);
                    let mut inner = lock(&self.inner);
                    let path = segment_path(&self.dir, read.segment);
                    if let Some(seg) = inner.segments.get_mut(&read.segment) {
                        seg.corrupt = true;
                        if !seg.logged {
                            seg.logged = true;
                            tracing::warn!(segment = %path.display(), offset = read.offset, "disk buffer: corrupt record skipped; the segment goes to quarantine/ once the rest of it is delivered");
                        }
                    }
                    if inner.read == read {
                        inner.read = Pos {
                            segment: read.segment,
                            offset: read.offset + skip,
                        };
                    }
                    self.advance(&mut inner)?;
                }
            }
        }
    }

    /// A record handed out before whose delivery failed, to hand out again.
    pub fn read_retry(&self) -> io::Result<Option<Record>> {
        let (pos, file, len) = {
            let mut inner = lock(&self.inner);
            let Some(pos) = inner.retry.pop_front() else {
                return Ok(None);
            };
            let Some(seg) = inner.segments.get(&pos.segment) else {
                return Ok(None);
            };
            (pos, seg.file.clone(), seg.len)
        };
        read_record(&file, pos, len)
    }

    /// Whether records wait to be handed out again.
    pub fn has_retries(&self) -> bool {
        !lock(&self.inner).retry.is_empty()
    }

    /// Whether every record written has been handed out and delivered.
    pub fn is_drained(&self) -> bool {
        let inner = lock(&self.inner);
        inner.outstanding.is_empty()
            && inner.read.segment >= inner.active
            && inner
                .segments
                .get(&inner.active)
                .is_none_or(|s| inner.read.offset >= s.len)
    }

    /// Records handed out and not yet delivered.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner).outstanding.len()
    }

    /// The record at `pos` was delivered (`true`) or not (`false`: it is
    /// handed out again by [`Buffer::read_retry`]).
    pub fn ack(&self, pos: Pos, delivered: bool) -> io::Result<()> {
        let mut inner = lock(&self.inner);
        if !delivered {
            if inner.outstanding.contains_key(&pos) {
                inner.retry.push_back(pos);
            }
            return Ok(());
        }
        let Some((_, events)) = inner.outstanding.remove(&pos) else {
            return Ok(());
        };
        sub(&self.stats.events, events);
        self.advance(&mut inner)
    }

    /// Move the ack pointer to the first record not delivered; delete
    /// (or quarantine) the segments wholly before it.
    fn advance(&self, inner: &mut Inner) -> io::Result<()> {
        let ack = inner
            .outstanding
            .keys()
            .next()
            .copied()
            .unwrap_or(inner.read);
        if ack == inner.ack {
            return Ok(());
        }
        inner.ack = ack;
        self.save(inner)?;
        let gone: Vec<u64> = inner
            .segments
            .range(..ack.segment)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            let Some(seg) = inner.segments.remove(&id) else {
                continue;
            };
            sub(&self.stats.bytes, seg.len);
            let path = segment_path(&self.dir, id);
            if seg.corrupt {
                let q = self.dir.join("quarantine");
                fs::create_dir_all(&q)?;
                let to = q.join(path.file_name().unwrap_or_default());
                fs::rename(&path, &to)?;
                tracing::warn!(segment = %to.display(), "disk buffer: corrupt segment quarantined (its intact records were delivered)");
            } else {
                fs::remove_file(&path)?;
            }
        }
        self.set_oldest(inner);
        Ok(())
    }

    /// Read the time of the record at the ack pointer into the stats.
    fn set_oldest(&self, inner: &Inner) {
        let ack = inner.ack;
        let t = inner
            .segments
            .get(&ack.segment)
            .filter(|s| ack.offset + HEADER <= s.len)
            .and_then(|s| {
                let mut h = [0u8; HEADER as usize];
                s.file.read_exact_at(&mut h, ack.offset).ok()?;
                header(&h, s.len - ack.offset).map(|h| h.3)
            })
            .or_else(|| {
                // The ack pointer at a segment's end: the next segment's
                // first record, if any.
                let (_, s) = inner.segments.range(ack.segment + 1..).next()?;
                let mut h = [0u8; HEADER as usize];
                s.file.read_exact_at(&mut h, 0).ok()?;
                header(&h, s.len).map(|h| h.3)
            })
            .unwrap_or(0);
        self.stats.oldest_ms.store(t, Ordering::Relaxed);
    }

    /// Persist and sync the pointers (a clean stop).
    pub fn close(&self) -> io::Result<()> {
        let inner = lock(&self.inner);
        self.save(&inner)?;
        inner.state.sync_data()
    }
}

fn sub(a: &AtomicU64, n: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

/// The record at `pos` in a segment of `len` bytes: `None` if it is
/// corrupt.
fn read_record(file: &File, pos: Pos, len: u64) -> io::Result<Option<Record>> {
    let mut h = [0u8; HEADER as usize];
    file.read_exact_at(&mut h, pos.offset)?;
    let Some((plen, _, events, written_ms)) = header(&h, len - pos.offset) else {
        return Ok(None);
    };
    let mut whole = vec![0u8; (HEADER + plen) as usize];
    file.read_exact_at(&mut whole, pos.offset)?;
    if !intact(&whole) {
        return Ok(None);
    }
    let payload = &whole[HEADER as usize..];
    let n = events as usize;
    let ends = (0..n).map(|i| u32_at(payload, i * 4)).collect();
    let data = payload[n * 4..].to_vec();
    Ok(Some(Record {
        pos,
        written_ms,
        ends,
        data,
    }))
}

/// One segment as [`inspect`] sees it.
#[derive(Debug, Clone, Default)]
pub struct SegmentReport {
    pub file: PathBuf,
    pub bytes: u64,
    pub records: u64,
    pub events: u64,
    /// Records failing their check, and bytes after the last intact one.
    pub corrupt_records: u64,
    pub torn_bytes: u64,
    /// Oldest and newest write times (Unix ms).
    pub first_ms: u64,
    pub last_ms: u64,
}

/// What a buffer folder holds, read without changing it.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The ack and sent pointers of its state file, if it is readable.
    pub pointers: Option<(Pos, Pos)>,
    pub segments: Vec<SegmentReport>,
    /// Events not yet delivered (from the ack pointer on).
    pub pending_events: u64,
    pub quarantined: Vec<PathBuf>,
    /// Whether a running sluice holds it.
    pub in_use: bool,
}

/// Read a buffer folder through, checking every record.
pub fn inspect(dir: &Path) -> io::Result<Report> {
    let mut report = Report {
        in_use: File::open(dir.join("lock"))
            .ok()
            .is_some_and(|f| matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock))),
        ..Report::default()
    };
    let mut sb = Vec::new();
    if let Ok(mut f) = File::open(dir.join("state")) {
        use std::io::Read;
        let _ = f.read_to_end(&mut sb);
    }
    report.pointers = decode_state(&sb);
    let ack = report.pointers.map(|p| p.0).unwrap_or_default();
    for id in segment_ids(dir)? {
        let path = segment_path(dir, id);
        let bytes = fs::read(&path)?;
        let mut s = SegmentReport {
            file: path,
            bytes: bytes.len() as u64,
            ..SegmentReport::default()
        };
        let mut at = 0usize;
        while at < bytes.len() {
            let rest = &bytes[at..];
            if intact(rest) {
                let (plen, _, events, written) =
                    header(rest, rest.len() as u64).unwrap_or((0, 0, 0, 0));
                s.records += 1;
                s.events += events;
                if (Pos {
                    segment: id,
                    offset: at as u64,
                }) >= ack
                {
                    report.pending_events += events;
                }
                if s.first_ms == 0 {
                    s.first_ms = written;
                }
                s.last_ms = written;
                at += (HEADER + plen) as usize;
            } else {
                match resync(&bytes, at + 1) {
                    Some(next) => {
                        s.corrupt_records += 1;
                        at = next;
                    }
                    None => {
                        s.torn_bytes = (bytes.len() - at) as u64;
                        break;
                    }
                }
            }
        }
        report.segments.push(s);
    }
    if let Ok(q) = fs::read_dir(dir.join("quarantine")) {
        for e in q.flatten() {
            report.quarantined.push(e.path());
        }
        report.quarantined.sort();
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
