//! A plugin's stdout and stderr, captured instead of discarded: what a
//! guest prints (a Rust panic message, a Python traceback, a JS `throw`)
//! reaches the host's `tracing` tagged with the plugin's name, and the last
//! lines of stderr go with the error of a call that traps, so that a dead
//! letter says why. Bounded: past [`CAPACITY`] bytes between two drains the
//! rest is dropped (counted), and a write never blocks or fails the guest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Most bytes kept between two drains (one plugin call).
pub const CAPACITY: usize = 64 << 10;

/// Most lines logged after one call; the others are counted.
const MAX_LINES: usize = 20;

/// Lines of stderr attached to a trap's error.
const TAIL_LINES: usize = 5;

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

/// One output stream of a plugin instance.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    /// What was written since the last drain, and how many bytes were
    /// dropped past the capacity.
    pub fn drain(&self) -> (Vec<u8>, usize) {
        let mut b = self.buffer.lock().expect("capture lock poisoned");
        (std::mem::take(&mut b.bytes), std::mem::take(&mut b.dropped))
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut b = self.buffer.lock().expect("capture lock poisoned");
        let room = CAPACITY.saturating_sub(b.bytes.len());
        let kept = buf.len().min(room);
        b.bytes.extend_from_slice(&buf[..kept]);
        b.dropped += buf.len() - kept;
        // Taken whole either way: the guest never waits on its output.
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A plugin's stdout and stderr.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    pub stdout: Capture,
    pub stderr: Capture,
}

impl Outputs {
    /// Log what the plugin printed during a call (stderr as warnings), and
    /// return the last lines of its stderr.
    pub fn flush(&self, plugin: &str) -> Vec<String> {
        self.drain(plugin, false)
    }

    /// What the plugin printed during a call that failed: the last lines
    /// of its stderr, for the error, logged at debug level only (the
    /// error carries them once per failing event, however many times the
    /// batch is split to find it).
    pub fn take_failed(&self, plugin: &str) -> Vec<String> {
        self.drain(plugin, true)
    }

    fn drain(&self, plugin: &str, failed: bool) -> Vec<String> {
        let mut tail = Vec::new();
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (bytes, dropped) = capture.drain();
            if bytes.is_empty() && dropped == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            for line in lines.iter().take(MAX_LINES) {
                if failed {
                    tracing::debug!(%plugin, stream, "{line}");
                } else if stream == "stderr" {
                    tracing::warn!(%plugin, stream, "{line}");
                } else {
                    tracing::info!(%plugin, stream, "{line}");
                }
            }
            if !failed && (lines.len() > MAX_LINES || dropped > 0) {
                tracing::warn!(%plugin, stream, lines = lines.len().saturating_sub(MAX_LINES), bytes = dropped, "more plugin output not logged");
            }
            if stream == "stderr" {
                let from = lines.len().saturating_sub(TAIL_LINES);
                tail = lines[from..].iter().map(|l| l.to_string()).collect();
            }
        }
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_bounded_and_never_refused() {
        use tokio::io::AsyncWriteExt;
        let o = Outputs::default();
        let mut w = Box::into_pin(o.stderr.async_stream());
        w.write_all(b"first\nsecond\n").await.unwrap();
        w.write_all(&vec![b'x'; CAPACITY]).await.unwrap();
        let (bytes, dropped) = o.stderr.drain();
        assert_eq!(bytes.len(), CAPACITY);
        assert_eq!(dropped, 13);
        w.write_all(b"a\nb\nc\nd\ne\nf\ng\n").await.unwrap();
        assert_eq!(o.flush("p"), ["c", "d", "e", "f", "g"]);
        assert_eq!(o.stderr.drain(), (Vec::new(), 0));
    }
}
