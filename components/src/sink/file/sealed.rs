//! The age stream of one encrypted output file, and which of its lines are
//! durable.
//!
//! age encrypts in chunks of 64 KiB, each sealed with its own tag; only the
//! last chunk of a file may be shorter, and it is marked last. So a line is
//! on disk, readable by `age -d`, once the chunk that holds it is complete
//! (some later byte exists) or the file is finished. Until then it waits
//! here, in memory, unacknowledged: a `kill -9` costs each open file the
//! lines of its incomplete chunk (under 64 KiB of its stream), which its
//! sources have not been told are delivered and send again. The file sink
//! finishes ("seals") a file whose lines have waited `seal_after`.
//!
//! Ciphertext is produced into memory and written by the sink's own retry
//! loop: a failed write (disk full) is resumed where it stopped, and the
//! stream never sees an error.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flate2::write::GzEncoder;

use crate::base::crypt::Recipients;

/// age's plaintext chunk.
const CHUNK: u64 = 64 * 1024;

/// Ciphertext the stream produced and the file has not received yet.
#[derive(Clone, Default)]
struct Out(Arc<Mutex<Vec<u8>>>);

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Counts what goes into the age stream.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Age = Counting<age::stream::StreamWriter<Out>>;

enum Layers {
    Plain(Age),
    /// Compressed, then encrypted: `.gz.age`.
    Gz(GzEncoder<Age>),
}

impl Layers {
    fn fed(&self) -> u64 {
        match self {
            Layers::Plain(a) => a.n,
            Layers::Gz(g) => g.get_ref().n,
        }
    }
}

/// Lines given to the stream in one round, not yet durable.
struct Waiting {
    round: u64,
    /// Bytes in the age stream once they are in it.
    end: u64,
    since: Instant,
    lines: Vec<u8>,
}

/// One file's age stream.
pub struct Stream {
    layers: Option<Layers>,
    out: Out,
    waiting: VecDeque<Waiting>,
    /// Bytes fed into the age stream when it was finished.
    finished: Option<u64>,
}

impl Stream {
    /// A new stream to `recipients`; its header is the first output.
    pub fn new(recipients: &Recipients, gzip: bool) -> io::Result<Self> {
        let out = Out::default();
        let age = Counting {
            inner: recipients.encrypt(out.clone())?,
            n: 0,
        };
        let layers = if gzip {
            Layers::Gz(GzEncoder::new(age, flate2::Compression::fast()))
        } else {
            Layers::Plain(age)
        };
        Ok(Self {
            layers: Some(layers),
            out,
            waiting: VecDeque::new(),
            finished: None,
        })
    }

    /// Encrypt `lines` (of `round`). Memory only: it cannot fail but for a
    /// bug in a codec.
    pub fn feed(&mut self, round: u64, lines: &[u8]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let Some(layers) = self.layers.as_mut() else {
            return Err(io::Error::other("the stream is finished"));
        };
        match layers {
            Layers::Plain(a) => a.write_all(lines)?,
            Layers::Gz(g) => {
                g.write_all(lines)?;
                // Every line's compressed bytes into the age stream now, so
                // that its chunk can complete.
                g.flush()?;
            }
        }
        let end = layers.fed();
        self.waiting.push_back(Waiting {
            round,
            end,
            since: Instant::now(),
            lines: lines.to_vec(),
        });
        Ok(())
    }

    /// Finish the stream: its last chunk is the next output.
    pub fn finish(&mut self) -> io::Result<()> {
        let Some(layers) = self.layers.take() else {
            return Ok(());
        };
        let fed = layers.fed();
        let age = match layers {
            Layers::Plain(a) => a,
            Layers::Gz(g) => g.finish()?,
        };
        age.inner.finish()?;
        self.finished = Some(fed);
        Ok(())
    }

    pub fn is_finished(&self) -> bool {
        self.layers.is_none()
    }

    /// The ciphertext produced since the last call, to write.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut *self.out.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Everything taken so far is in the file: the lines whose chunks are
    /// complete are durable (after a sync, where the sink syncs).
    pub fn written(&mut self) {
        let durable = match (self.finished, &self.layers) {
            (Some(_), _) => u64::MAX,
            (None, Some(l)) => {
                // age holds a full chunk back until a byte follows it (the
                // last chunk may be a full one).
                let fed = l.fed();
                fed.saturating_sub(1) / CHUNK * CHUNK
            }
            (None, None) => 0,
        };
        while self.waiting.front().is_some_and(|w| w.end <= durable) {
            self.waiting.pop_front();
        }
    }

    /// The oldest round with lines not yet durable, and since when.
    pub fn waiting(&self) -> Option<(u64, Instant)> {
        self.waiting.front().map(|w| (w.round, w.since))
    }

    /// Give up the stream (its file was deleted): the lines not yet durable,
    /// and the oldest round among them, to write elsewhere.
    pub fn abandon(self) -> Option<(u64, Vec<u8>)> {
        let round = self.waiting.front()?.round;
        Some((
            round,
            self.waiting.into_iter().flat_map(|w| w.lines).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn keys() -> (
        Recipients,
        crate::base::crypt::Identities,
        tempfile::TempDir,
    ) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("key.txt");
        std::fs::write(&path, id.to_string().expose_secret()).unwrap();
        let r = Recipients::parse([id.to_public().to_string().as_str()]).unwrap();
        (
            r,
            crate::base::crypt::Identities::from_file(&path).unwrap(),
            d,
        )
    }

    #[test]
    fn lines_are_durable_once_their_chunk_is_complete() {
        let (r, ids, _d) = keys();
        let mut s = Stream::new(&r, false).unwrap();
        let mut file = s.take();
        assert!(!file.is_empty(), "the header comes first");
        let line = vec![b'x'; 999];
        let mut line = line;
        line.push(b'\n');
        // 65 lines of 1000 bytes: the first chunk (65536) is not complete.
        for round in 1..=65 {
            s.feed(round, &line).unwrap();
        }
        file.extend(s.take());
        s.written();
        assert_eq!(s.waiting().unwrap().0, 1, "nothing durable yet");
        // One more byte completes the first chunk: rounds 1..=65 end at
        // most at 65000 < 65536, so all of them are durable; 66 is not.
        s.feed(66, &line).unwrap();
        file.extend(s.take());
        s.written();
        assert_eq!(s.waiting().unwrap().0, 66);
        // What is on disk now decrypts up to the chunk, then says truncated.
        let mut got = Vec::new();
        {
            let mut rd = ids.decrypt(&file[..]).unwrap();
            let mut buf = [0u8; 8192];
            loop {
                match rd.read(&mut buf) {
                    Ok(0) => panic!("not finished, cannot end cleanly"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
        }
        assert_eq!(got.len(), 65536);
        s.finish().unwrap();
        file.extend(s.take());
        s.written();
        assert!(s.waiting().is_none());
        let mut all = Vec::new();
        ids.decrypt(&file[..])
            .unwrap()
            .read_to_end(&mut all)
            .unwrap();
        assert_eq!(all.len(), 66 * 1000);
    }

    #[test]
    fn compressed_streams_decrypt_then_gunzip() {
        let (r, ids, _d) = keys();
        let mut s = Stream::new(&r, true).unwrap();
        let mut file = s.take();
        let mut plain = Vec::new();
        for i in 0..20_000 {
            let l = format!("{{\"n\":{i},\"message\":\"hello\"}}\n");
            s.feed(i, l.as_bytes()).unwrap();
            plain.extend_from_slice(l.as_bytes());
        }
        file.extend(s.take());
        s.finish().unwrap();
        file.extend(s.take());
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(ids.decrypt(&file[..]).unwrap())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn an_abandoned_stream_gives_back_what_was_not_durable() {
        let (r, _ids, _d) = keys();
        let mut s = Stream::new(&r, false).unwrap();
        s.feed(3, b"a\n").unwrap();
        s.feed(4, b"b\n").unwrap();
        let _ = s.take();
        s.written();
        assert_eq!(s.abandon(), Some((3, b"a\nb\n".to_vec())));
    }
}
