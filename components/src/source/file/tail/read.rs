//! Reading a tailed file: its new bytes into lines (plain or gzip), a
//! truncation caught and what it would lose rescued, long lines cut or
//! dead-lettered, multi-line records held until whole.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::file::tail::read";

use super::*;

impl Tailer {
    /// Read what `id` has now. Whether anything was read.
    pub(super) fn read(&mut self, id: FileId) -> Result<bool, Closed> {
        let Some(t) = self.files.get_mut(&id) else {
            return Ok(false);
        };
        if t.done {
            return Ok(false);
        }
        if t.gz {
            return self.read_gz(id).map(|()| true);
        }
        let len = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, path = %t.path.display(), error = %e, "cannot stat file");
                return Ok(false);
            }
        };
        // Shorter than our position, or new first bytes (truncated, then
        // written past our position before we looked): truncated in place.
        let rewritten = t.fingerprint.len > 0
            && fingerprint_or_empty(&t.file, t.fingerprint.len) != t.fingerprint;
        if len < t.start + t.buf.len() as u64 || rewritten {
            self.truncated(id)?;
            return Ok(true);
        }
        let mut read_total = 0;
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let t = self.files.get_mut(&id).expect("present above");
            let at = t.start + t.buf.len() as u64;
            let n = match read_at(&t.file, &mut chunk, at) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(target: LOG_TARGET, path = %t.path.display(), error = %e, "read failed");
                    break;
                }
            };
            if n == 0 {
                if !self.cfg.follow {
                    t.done = true;
                }
                break;
            }
            t.grew_at = Instant::now();
            if t.fingerprint.len < FINGERPRINT_BYTES {
                if let Ok(f) = fingerprint(&t.file, FINGERPRINT_BYTES) {
                    t.fingerprint = f;
                }
            }
            t.buf.extend_from_slice(&chunk[..n]);
            read_total += n;
            self.lines(id)?;
            if read_total >= READ_TURN {
                break;
            }
        }
        Ok(read_total > 0)
    }

    /// Turn the whole lines of `id`'s buffer into events.
    pub(super) fn lines(&mut self, id: FileId) -> Result<(), Closed> {
        let max_line = self.cfg.max_line;
        let long_lines = self.cfg.long_lines;
        let metrics = self.ctx.as_ref().expect("held").metrics.clone();
        let t = self.files.get_mut(&id).expect("caller checked");
        let mut pos = 0;
        let mut full = false;
        while let Some(i) = memchr::memchr(b'\n', &t.buf[pos..]) {
            let line = &t.buf[pos..pos + i];
            let (from, to) = (t.start + pos as u64, t.start + (pos + i + 1) as u64);
            if t.skipping {
                t.skipping = false;
            } else if line.len() > max_line
                && (long_lines == LongLines::DeadLetter || t.records.is_plain())
            {
                long_line(
                    &mut self.batcher,
                    &mut t.decoder,
                    (long_lines, &metrics),
                    &t.path,
                    &line[..max_line],
                );
            } else if t.records.is_plain() {
                self.batcher.line(&mut t.decoder, line);
            } else {
                if line.len() > max_line {
                    ComponentMetrics::add(&metrics.long_lines, 1);
                }
                let line = &line[..line.len().min(max_line)];
                t.records
                    .line(line, from, to, &mut self.batcher, &mut t.decoder, &metrics);
            }
            pos += i + 1;
            if !t.gz {
                // Never past a record still held.
                self.marks
                    .insert(id, t.records.held_from().unwrap_or(to).min(to));
            }
            if self.batcher.is_full() {
                full = true;
                break;
            }
        }
        t.buf.drain(..pos);
        t.start += pos as u64;
        if full {
            self.flush()?;
            return self.lines(id);
        }
        // A line already longer than allowed: deal with it now rather than
        // hold it all in memory.
        if t.buf.len() > max_line && !t.skipping {
            long_line(
                &mut self.batcher,
                &mut t.decoder,
                (long_lines, &metrics),
                &t.path,
                &t.buf[..max_line],
            );
            t.skipping = true;
        }
        if t.skipping && !t.buf.is_empty() {
            t.start += t.buf.len() as u64;
            t.buf.clear();
            if !t.gz {
                self.marks.insert(id, t.start);
            }
        }
        Ok(())
    }

    /// `id` shrank below our position: truncated in place. Read what we
    /// had not from the copy beside it, then start again at 0.
    pub(super) fn truncated(&mut self, id: FileId) -> Result<(), Closed> {
        let t = self.files.get_mut(&id).expect("caller checked");
        let at = t.start + t.buf.len() as u64;
        tracing::info!(target: LOG_TARGET, path = %t.path.display(), at, "file truncated; reading it again from the start");
        ComponentMetrics::add(&self.ctx.as_ref().expect("held").metrics.truncations, 1);
        if let Some(copy) = find_copy(&t.path, id, t.fingerprint, at) {
            let rest = std::fs::File::open(&copy).and_then(|mut f| {
                let mut v = Vec::new();
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at))?;
                f.read_to_end(&mut v)?;
                Ok(v)
            });
            if let Ok(rest) = rest {
                let t = self.files.get_mut(&id).expect("caller checked");
                t.buf.extend_from_slice(&rest);
                if !t.buf.ends_with(b"\n") && !t.buf.is_empty() {
                    t.buf.push(b'\n');
                }
                let lines = memchr::memchr_iter(b'\n', &rest).count();
                tracing::info!(target: LOG_TARGET, path = %t.path.display(), copy = %copy.display(), lines, "read the truncated lines from the copy");
                ComponentMetrics::add(
                    &self.ctx.as_ref().expect("held").metrics.rescued_lines,
                    lines,
                );
                self.lines(id)?;
            }
        }
        self.finish_records(id);
        let t = self.files.get_mut(&id).expect("caller checked");
        t.buf.clear();
        t.skipping = false;
        t.start = 0;
        t.fingerprint = Fingerprint::of(b"");
        self.marks.insert(id, 0);
        Ok(())
    }

    pub(super) fn read_gz(&mut self, id: FileId) -> Result<(), Closed> {
        let t = self.files.get_mut(&id).expect("caller checked");
        let len = t.file.metadata().map(|m| m.len()).unwrap_or(0);
        let file = match t.file.try_clone() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, path = %t.path.display(), error = %e, "cannot read file");
                t.done = true;
                return Ok(());
            }
        };
        let mut reader = match crate::base::crypt::unpack(
            &t.path,
            file,
            self.cfg.identities.as_ref(),
        ) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, path = %t.path.display(), error = %e, "cannot read file");
                t.done = true;
                return Ok(());
            }
        };
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let t = self.files.get_mut(&id).expect("present");
                    // The line in progress was cut by the crash: it is not
                    // an event (the lines before it are).
                    tracing::warn!(target: LOG_TARGET, path = %t.path.display(), error = %e, cut_bytes = t.buf.len(), "cannot decompress or decrypt further (cut short by a crash?); stopping at this point, without the cut line");
                    t.buf.clear();
                    0
                }
            };
            let t = self.files.get_mut(&id).expect("present");
            if n == 0 {
                if !t.buf.is_empty() {
                    t.buf.push(b'\n');
                }
                // Positions in a compressed file are its compressed size:
                // read whole, or not at all.
                self.lines(id)?;
                self.finish_records(id);
                let t = self.files.get_mut(&id).expect("present");
                t.buf.clear();
                t.start = len;
                t.done = true;
                self.marks.insert(id, len);
                return Ok(());
            }
            t.buf.extend_from_slice(&chunk[..n]);
            // Offsets inside a .gz mean nothing on disk: count from 0 and
            // fix the mark at the end.
            self.lines(id)?;
        }
    }

    /// Emit `id`'s partial last line, if it has one.
    pub(super) fn emit_partial(&mut self, id: FileId) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        if t.buf.is_empty() || t.skipping || t.gz {
            return;
        }
        let from = t.start;
        t.start += t.buf.len() as u64;
        if t.records.is_plain() {
            self.batcher.line(&mut t.decoder, &t.buf);
        } else {
            let metrics = self.ctx.as_ref().expect("held").metrics.clone();
            let line = std::mem::take(&mut t.buf);
            t.records.line(
                &line,
                from,
                t.start,
                &mut self.batcher,
                &mut t.decoder,
                &metrics,
            );
        }
        t.buf.clear();
        self.marks
            .insert(id, t.records.held_from().unwrap_or(t.start).min(t.start));
    }

    /// Let go of every record the file holds (its end was reached, or it
    /// is closed).
    pub(super) fn finish_records(&mut self, id: FileId) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        if t.records.is_plain() || t.records.held_from().is_none() {
            return;
        }
        t.records.finish(&mut self.batcher, &mut t.decoder);
        if !t.gz {
            self.marks.insert(id, t.start);
        }
    }

    /// Let go of the multiline records held past their timeout.
    pub(super) fn expire_records(&mut self) {
        for (id, t) in self.files.iter_mut() {
            let Some(due) = t.records.due_at() else {
                continue;
            };
            if Instant::now() < due {
                continue;
            }
            t.records.expire(&mut self.batcher, &mut t.decoder);
            if !t.gz {
                let to = t.start;
                self.marks
                    .insert(*id, t.records.held_from().unwrap_or(to).min(to));
            }
        }
    }

    /// When the next held record is due.
    pub(super) fn records_due(&self) -> Option<Instant> {
        self.files.values().filter_map(|t| t.records.due_at()).min()
    }
}

/// The first `max_line` bytes of a longer line, as `long_lines` says;
/// counted in `long_lines`.
pub(super) fn long_line(
    batcher: &mut Batcher,
    decoder: &mut LineDecoder,
    (mode, metrics): (LongLines, &ComponentMetrics),
    path: &Path,
    head: &[u8],
) {
    ComponentMetrics::add(&metrics.long_lines, 1);
    match mode {
        LongLines::Truncate => batcher.line(decoder, head),
        LongLines::DeadLetter => batcher.reject(
            head,
            format!(
                "line longer than max_line ({} bytes) in {}; its first {} bytes are here",
                head.len(),
                path.display(),
                head.len()
            ),
        ),
    }
}
