//! `type = "syslog"`: syslog over UDP, TCP and TCP+TLS.
//!
//! - **UDP**: one message per datagram.
//! - **TCP**: each frame is either octet-counted (RFC 6587 `LEN SP MSG`,
//!   what `logger --octet-count` and rsyslog's `TCP_Framing="octet-counted"`
//!   send) or ends at a newline; which one is told frame by frame, so a
//!   connection may mix them. With `tls`, the listener's `tls` table.
//! - Messages are RFC 5424 or RFC 3164 ([`parse`]); each becomes one event
//!   (`timestamp`, `level`, `message`, `host`, `service`, `syslog.*`),
//!   with `source` and `_sluice.from`, the sender's address (and
//!   `_sluice.peer`, the client certificate's subject, with mutual TLS).
//! - A frame that is not syslog, or longer than `max_line`, goes to the
//!   dead letters with its bytes (cut at `max_line`) and the reason;
//!   memory stays bounded by `max_line` per connection and
//!   `max_connections` connections.
//!
//! TCP syslog has no acknowledgement: a frame read is handed on, and a
//! full pipeline pushes back by no longer reading (the sender's socket
//! buffer fills), as rsyslog expects of a receiver.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::syslog";

pub mod parse;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{Batcher, Source, SourceContext, SourceKind};
use crate::base::event::{push_json_str, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::Closed;
use crate::base::settings::{
    bounded, size, BatchOverride, BuildContext, BuildError, Task, TypeTag,
};
use crate::source::http::listener::Acceptor;

/// Which transport the source listens on.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Tcp,
    Udp,
}

/// `[sources.NAME] type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `127.0.0.1:5514`, `0.0.0.0:514`.
    pub address: String,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub mode: Mode,
    /// Longest message: a longer one goes to the dead letters, cut here.
    #[serde(default = "default_max_line", with = "size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    #[schemars(range(min = 64, max = 16 << 20))]
    pub max_line: usize,
    /// Most TCP connections open at once; others are closed at once.
    #[serde(default = "super::http::default_max_connections")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_connections: usize,
    /// TCP over TLS: `tls = { cert_file, key_file, client_ca_file }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ServerTls>,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_max_line() -> usize {
    100 << 10
}

impl SourceKind for SyslogConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        bounded("max_line", self.max_line, 64, 16 << 20)?;
        bounded("max_connections", self.max_connections, 1, 65_536)?;
        self.address.parse::<SocketAddr>().map_err(|e| {
            BuildError::key(
                "address",
                format!(
                    "`{}` is not an IP address and port ({e}): write e.g. 0.0.0.0:514",
                    self.address
                ),
            )
        })?;
        let mut cfg = self.clone();
        if let Some(tls) = &self.tls {
            if self.mode == Mode::Udp {
                return Err(BuildError::key(
                    "tls",
                    "TLS is for `mode = \"tcp\"` (syslog over UDP has no TLS)",
                ));
            }
            let tls = tls.resolved(cx);
            for warning in tls.check()? {
                tracing::warn!(target: LOG_TARGET, source = cx.name, "{warning}");
            }
            cfg.tls = Some(tls);
        }
        Ok(Box::new(cfg))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }

    fn listens_on(&self) -> Vec<(&'static str, &str)> {
        // A UDP port and a TCP port of one number do not clash.
        match self.mode {
            Mode::Tcp => vec![("address", &self.address)],
            Mode::Udp => Vec::new(),
        }
    }
}

impl Source for SyslogConfig {
    fn start(self: Box<Self>, ctx: SourceContext) -> Task {
        match self.mode {
            Mode::Tcp => Box::pin(self.run_tcp(ctx)),
            Mode::Udp => Box::pin(self.run_udp(ctx)),
        }
    }
}

/// Turns frames into events for one connection (or the UDP socket).
struct Framer {
    /// `,"source":NAME,"_sluice":{"from":ADDR[,"peer":SUBJECT]}`.
    meta: Vec<u8>,
    clock: Clock,
}

impl Framer {
    fn new(source: &str, from: Option<SocketAddr>, peer: Option<&str>) -> Framer {
        let mut meta = Vec::new();
        meta.extend_from_slice(b",\"source\":");
        push_json_str(&mut meta, source);
        if from.is_some() || peer.is_some() {
            meta.extend_from_slice(b",\"_sluice\":{");
            if let Some(f) = from {
                meta.extend_from_slice(b"\"from\":");
                push_json_str(&mut meta, &f.to_string());
            }
            if let Some(p) = peer {
                if from.is_some() {
                    meta.push(b',');
                }
                meta.extend_from_slice(b"\"peer\":");
                push_json_str(&mut meta, p);
            }
            meta.push(b'}');
        }
        Framer {
            meta,
            clock: Clock::default(),
        }
    }

    /// One frame: an event in the batch, or a dead letter saying why.
    fn frame(&mut self, frame: &[u8], batcher: &mut Batcher) {
        let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
        let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
        if frame.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(frame);
        match parse::parse(&text, &chrono::Local::now) {
            Ok(m) => {
                let arrival = self.clock.now();
                parse::write_event(&m, arrival, &self.meta, &mut batcher.batch.data);
                batcher.batch.seal();
                batcher.pushed();
            }
            Err(reason) => batcher.reject(frame, reason),
        }
    }
}

/// Cuts a TCP byte stream into frames: octet-counted or newline-ended,
/// told per frame; longer than `max` bytes is dead-lettered, cut.
struct Splitter {
    buf: Vec<u8>,
    max: usize,
    /// Bytes still to drop: the rest of an octet-counted frame too long.
    skip: usize,
    /// Inside a newline-ended frame too long: drop to its newline.
    skip_line: bool,
}

impl Splitter {
    fn new(max: usize) -> Splitter {
        Splitter {
            buf: Vec::with_capacity(64 << 10),
            max,
            skip: 0,
            skip_line: false,
        }
    }

    /// Hand every whole frame in the buffer to `f` (with the frame too
    /// long, its reason); keep the partial last one.
    fn frames(&mut self, metrics: &ComponentMetrics, mut f: impl FnMut(&[u8], Option<String>)) {
        let mut at = 0;
        loop {
            let b = &self.buf[at..];
            if self.skip > 0 {
                let n = self.skip.min(b.len());
                self.skip -= n;
                at += n;
                if self.skip > 0 {
                    break;
                }
                continue;
            }
            if self.skip_line {
                match memchr::memchr(b'\n', b) {
                    Some(i) => {
                        self.skip_line = false;
                        at += i + 1;
                        continue;
                    }
                    None => {
                        at += b.len();
                        break;
                    }
                }
            }
            // Line ends and padding between frames.
            let pad = b
                .iter()
                .take_while(|c| matches!(c, b'\n' | b'\r' | b'\0' | b' '))
                .count();
            if pad > 0 {
                at += pad;
                continue;
            }
            if b.is_empty() {
                break;
            }
            // Octet counting: digits, a space, then that many bytes.
            let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 && digits == b.len() && digits < 10 {
                break; // the count is not whole yet
            }
            if (1..10).contains(&digits) && b.get(digits) == Some(&b' ') {
                let len: usize = std::str::from_utf8(&b[..digits])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                let body = &b[digits + 1..];
                if len > self.max {
                    // Its first `max` bytes go to the dead letters; the
                    // rest is dropped as it comes.
                    if body.len() < self.max {
                        break;
                    }
                    ComponentMetrics::add(&metrics.long_lines, 1);
                    f(
                        &body[..self.max],
                        Some(format!(
                            "an octet-counted frame of {len} bytes is longer than max_line ({} bytes); its first bytes are here",
                            self.max
                        )),
                    );
                    let taken = body.len().min(len);
                    at += digits + 1 + taken;
                    self.skip = len - taken;
                    continue;
                }
                if body.len() < len {
                    break;
                }
                f(&body[..len], None);
                at += digits + 1 + len;
                continue;
            }
            // Newline-ended.
            match memchr::memchr(b'\n', &b[..b.len().min(self.max + 1)]) {
                Some(i) => {
                    f(&b[..i], None);
                    at += i + 1;
                }
                None if b.len() > self.max => {
                    ComponentMetrics::add(&metrics.long_lines, 1);
                    f(
                        &b[..self.max],
                        Some(format!(
                            "a message longer than max_line ({} bytes) without a newline; its first bytes are here",
                            self.max
                        )),
                    );
                    // Dropped to its newline, which may be here already.
                    match memchr::memchr(b'\n', &b[self.max..]) {
                        Some(i) => at += self.max + i + 1,
                        None => {
                            at += b.len();
                            self.skip_line = true;
                        }
                    }
                }
                None => break,
            }
        }
        self.buf.drain(..at);
    }
}

impl SyslogConfig {
    async fn run_tcp(self, ctx: SourceContext) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.address)
            .await
            .with_context(|| format!("source {}: cannot listen on {}", ctx.name, self.address))?;
        let tls = match &self.tls {
            Some(t) => Some(
                crate::base::tls::TlsListener::new(t, &ctx.name, &[], Some(ctx.metrics.clone()))
                    .map_err(|e| anyhow::anyhow!("source {}: tls: {e}", ctx.name))?,
            ),
            None => None,
        };
        tracing::info!(target: LOG_TARGET, source = %ctx.name, address = %listener.local_addr()?, tls = tls.is_some(), "syslog source listening (tcp)");
        let mut acceptor = Acceptor::new(
            listener,
            format!("source {}", ctx.name),
            self.max_connections,
        )
        .with_metrics(ctx.metrics.clone())
        .with_busy_reply(b"");
        let mut shutdown = ctx.shutdown.clone();
        let ctx = Arc::new(ctx);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                stream = acceptor.next() => {
                    let ctx = ctx.clone();
                    let tls = tls.clone();
                    let max = self.max_line;
                    acceptor.spawn(async move {
                        let from = stream.peer_addr().ok();
                        let ended = match tls {
                            None => {
                                let framer = Framer::new(&ctx.name, from, None);
                                connection(&ctx, stream, framer, max).await
                            }
                            Some(tls) => {
                                let Some((stream, peer)) = tls.accept(stream).await else {
                                    return;
                                };
                                let framer = Framer::new(&ctx.name, from, peer.as_ref().map(|p| &*p.0));
                                connection(&ctx, stream, framer, max).await
                            }
                        };
                        if let Err(e) = ended {
                            tracing::debug!(target: LOG_TARGET, error = %e, "syslog connection ended: the pipeline is stopping");
                        }
                    });
                }
            }
        }
        // What was read is sent; connections still open are closed.
        acceptor.drain(Duration::from_secs(5)).await;
        Ok(())
    }

    async fn run_udp(self, ctx: SourceContext) -> anyhow::Result<()> {
        let socket = bind_udp(&self.address).with_context(|| {
            format!("source {}: cannot listen on udp {}", ctx.name, self.address)
        })?;
        tracing::info!(target: LOG_TARGET, source = %ctx.name, address = %socket.local_addr()?, "syslog source listening (udp)");
        let mut shutdown = ctx.shutdown.clone();
        let mut batcher = Batcher::new(ctx.batch);
        let mut buf = vec![0u8; 65_536];
        let mut framers: std::collections::HashMap<SocketAddr, Framer> = Default::default();
        loop {
            let deadline = batcher.deadline();
            let got = tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    batcher.flush(&ctx).await?;
                    continue;
                }
                r = socket.recv_from(&mut buf) => r,
            };
            let (n, from) = match got {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(target: LOG_TARGET, source = %ctx.name, error = %e, "udp receive failed");
                    continue;
                }
            };
            // A framer per sender (its address in each event), bounded.
            if framers.len() >= 4096 && !framers.contains_key(&from) {
                framers.clear();
            }
            let framer = framers
                .entry(from)
                .or_insert_with(|| Framer::new(&ctx.name, Some(from), None));
            let datagram = &buf[..n];
            if n > self.max_line {
                ComponentMetrics::add(&ctx.metrics.long_lines, 1);
                batcher.reject(
                    &datagram[..self.max_line],
                    format!(
                        "a datagram of {n} bytes is longer than max_line ({} bytes); its first bytes are here",
                        self.max_line
                    ),
                );
            } else {
                framer.frame(datagram, &mut batcher);
            }
            if batcher.is_due() {
                batcher.flush(&ctx).await?;
            }
        }
        batcher.flush(&ctx).await?;
        Ok(())
    }
}

/// A UDP socket with a large receive buffer (bursts of datagrams are
/// otherwise dropped by the kernel before they are read).
fn bind_udp(address: &str) -> std::io::Result<tokio::net::UdpSocket> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Read frames from one connection until it ends or the pipeline stops.
async fn connection<S: AsyncRead + Unpin>(
    ctx: &SourceContext,
    mut stream: S,
    mut framer: Framer,
    max: usize,
) -> Result<(), Closed> {
    let mut batcher = Batcher::new(ctx.batch);
    let mut split = Splitter::new(max);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let deadline = batcher.deadline();
        if split.buf.capacity() - split.buf.len() < 16 << 10 {
            split.buf.reserve(64 << 10);
        }
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                batcher.flush(ctx).await?;
                continue;
            }
            r = stream.read_buf(&mut split.buf) => r,
        };
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(target: LOG_TARGET, source = %ctx.name, error = %e, "syslog connection read failed");
                break;
            }
        }
        split.frames(&ctx.metrics, |frame, long| match long {
            None => framer.frame(frame, &mut batcher),
            Some(reason) => batcher.reject(frame, reason),
        });
        if batcher.is_due() {
            batcher.flush(ctx).await?;
        }
    }
    // A last frame without its newline is still a frame.
    if !split.buf.is_empty() && split.skip == 0 && !split.skip_line {
        let rest = std::mem::take(&mut split.buf);
        framer.frame(&rest, &mut batcher);
    }
    batcher.flush(ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<(Vec<u8>, bool)> {
        let metrics = ComponentMetrics::default();
        let mut s = Splitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.buf.extend_from_slice(c);
            s.frames(&metrics, |f, long| out.push((f.to_vec(), long.is_some())));
        }
        out
    }

    #[test]
    fn octet_counting_and_newlines_mixed_across_reads() {
        let got = split(
            &[
                b"11 <13>hello w",
                b"o",
                b"rld<14>plain\n",
                b"5 <1>ab4 <2>x\n",
            ],
            100,
        );
        let frames: Vec<&[u8]> = got.iter().map(|(f, _)| &f[..]).collect();
        assert_eq!(
            frames,
            vec![&b"<13>hello w"[..], b"orld<14>plain", b"<1>ab", b"<2>x"]
        );
    }

    #[test]
    fn counted_frames_hold_newlines() {
        let got = split(&[b"12 <13>a\nb\nc\nd\n10 <13>x\ny\nz"], 100);
        assert_eq!(got[0].0, b"<13>a\nb\nc\nd\n");
        assert_eq!(got.len(), 1, "the second frame is not whole yet");
    }

    #[test]
    fn long_frames_are_cut_and_the_stream_goes_on() {
        let long = format!("300 <13>{}", "x".repeat(296));
        let got = split(&[long.as_bytes(), b"5 <1>ab"], 64);
        assert_eq!(got.len(), 2);
        assert!(got[0].1 && got[0].0.len() == 64);
        assert_eq!(got[1], (b"<1>ab".to_vec(), false));
        let line = format!("<13>{}\n<14>next\n", "y".repeat(500));
        let got = split(&[&line.as_bytes()[..200], &line.as_bytes()[200..]], 64);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].1);
        assert_eq!(got[1], (b"<14>next".to_vec(), false));
        // All in one read: the frame after the long one is kept.
        let got = split(&[line.as_bytes()], 64);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[1], (b"<14>next".to_vec(), false));
    }

    proptest::proptest! {
        /// Any bytes in any chunks: no panic, memory within the bound.
        #[test]
        fn any_stream_stays_bounded(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(1usize..50, 1..20)
        ) {
            let metrics = ComponentMetrics::default();
            let mut s = Splitter::new(64);
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at >= data.len() { break; }
                let end = (at + c).min(data.len());
                s.buf.extend_from_slice(&data[at..end]);
                at = end;
                s.frames(&metrics, |f, _| assert!(f.len() <= 64 + 10));
                proptest::prop_assert!(s.buf.len() <= 64 + 12, "{}", s.buf.len());
            }
        }
    }
}
