//! Accepting connections, for the HTTP source and the admin port alike:
//! at most `max_connections` at once (the others get a `503` at once),
//! accept errors (`EMFILE`: out of file descriptors) backed off and logged
//! once per run of failures instead of in a hot loop, and finished
//! connections reaped as they end, so memory follows the connections open,
//! not the connections ever made. Dropping the acceptor drops every
//! connection still open (and what it streams, such as a tap).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::http::listener";

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::base::metrics::ComponentMetrics;
use crate::delivery::Backoff;

/// First and longest wait after a failed accept.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// The answer to a connection past the limit.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: 46\r\nconnection: close\r\n\r\n{\"error\":\"too many connections; retry later\"}\n";

/// A listener and the connections it accepted.
pub struct Acceptor {
    listener: TcpListener,
    /// What it serves, for logs: `source web`, `admin`.
    what: String,
    max: usize,
    connections: JoinSet<()>,
    /// Where the number of connections open is reported (`sluice_connections`).
    metrics: Option<Arc<ComponentMetrics>>,
    backoff: Backoff,
    /// Failures since the last accept that worked, and when they began.
    failing: Option<(u64, Instant)>,
    /// What a connection past the limit is sent before it is closed.
    busy: &'static [u8],
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: impl Into<String>, max: usize) -> Self {
        Self {
            listener,
            what: what.into(),
            max: max.max(1),
            connections: JoinSet::new(),
            metrics: None,
            backoff: Backoff::new(ACCEPT_RETRY_FIRST, ACCEPT_RETRY_MAX),
            failing: None,
            busy: BUSY,
        }
    }

    /// Send `reply` to a connection past the limit instead of HTTP's
    /// `503` (empty: just close it).
    pub fn with_busy_reply(mut self, reply: &'static [u8]) -> Self {
        self.busy = reply;
        self
    }

    /// Report the connections open in these metrics.
    pub fn with_metrics(mut self, metrics: Arc<ComponentMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self) {
        if let Some(m) = &self.metrics {
            m.connections
                .store(self.connections.len() as u64, Ordering::Relaxed);
        }
    }

    fn reap(&mut self) {
        while let Some(ended) = self.connections.try_join_next() {
            self.ended(ended);
        }
        self.count();
    }

    /// A connection's task ended. One that panicked is a bug on a path
    /// that faces input: the component is marked down (so `/health`
    /// fails and says why) instead of the panic passing unseen.
    fn ended(&self, ended: Result<(), tokio::task::JoinError>) {
        let Err(e) = ended else { return };
        if !e.is_panic() {
            return;
        }
        let reason = format!(
            "a connection handler panicked: {}",
            panic_message(e.into_panic().as_ref())
        );
        tracing::error!(target: LOG_TARGET, what = %self.what, %reason, "connection handler panicked");
        if let Some(m) = &self.metrics {
            m.set_down(Some(reason));
        }
    }

    /// The next connection to serve. Connections past the limit are
    /// answered `503` here; accept errors are waited out.
    pub async fn next(&mut self) -> TcpStream {
        loop {
            self.reap();
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                // A connection ending frees a place: reap it now.
                Some(ended) = self.connections.join_next(), if !self.connections.is_empty() => {
                    self.ended(ended);
                    continue;
                }
            };
            match accepted {
                Ok((stream, _)) => {
                    if let Some((n, since)) = self.failing.take() {
                        tracing::info!(target: LOG_TARGET, what = %self.what, failures = n, for_ms = since.elapsed().as_millis() as u64, "accepting connections again");
                        self.backoff.reset();
                    }
                    if self.connections.len() >= self.max {
                        tracing::debug!(target: LOG_TARGET, what = %self.what, max = self.max, "connection refused: too many open");
                        if let Some(m) = &self.metrics {
                            ComponentMetrics::add(&m.busy, 1);
                        }
                        self.connections.spawn(refuse(stream, self.busy));
                        continue;
                    }
                    return stream;
                }
                Err(e) => {
                    match &mut self.failing {
                        Some((n, _)) => *n += 1,
                        None => {
                            tracing::warn!(target: LOG_TARGET, what = %self.what, error = %e, "accept failed; backing off (logged once until it works again)");
                            self.failing = Some((1, Instant::now()));
                        }
                    }
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Serve a connection on its own task.
    pub fn spawn(&mut self, connection: impl Future<Output = ()> + Send + 'static) {
        self.connections.spawn(connection);
        self.count();
    }

    /// Stop accepting; let connections in flight end within `grace`, then
    /// drop the rest.
    pub async fn drain(mut self, grace: Duration) {
        drop(self.listener);
        let _ = tokio::time::timeout(grace, async {
            while self.connections.join_next().await.is_some() {}
        })
        .await;
        self.connections.abort_all();
    }
}

/// The text of a panic's payload (`panic!("...")` gives a `&str` or a
/// `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Answer `503` (or `reply`) and close, without waiting on a slow client.
async fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    if !reply.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply)).await;
    }
    let _ = stream.shutdown().await;
}
