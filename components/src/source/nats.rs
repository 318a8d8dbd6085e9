//! `type = "nats"`: read a NATS JetStream stream through a durable pull
//! consumer (or a core NATS subject).
//!
//! JetStream: messages are pulled `batch` at a time from the durable
//! `consumer` (created if missing: explicit acknowledgement, `ack_wait`,
//! `max_ack_pending`, `subject` as its filter). Several sluice processes
//! with the same `consumer` share the work: each message goes to one. A
//! message is acknowledged only once every sink it was routed to has
//! written it, or the dead letters have it; while a slow sink works, the
//! messages of its batches are kept from redelivery by in-progress
//! acknowledgements (`+WPI`) every half `ack_wait`. A batch a sink gave up
//! on is refused (`-NAK`) and comes again. A process killed at any point
//! leaves its messages unacknowledged: the server delivers them again
//! after `ack_wait` (at least once). A message delivered more than
//! `max_deliver` times goes to the dead letters, with its subject, stream
//! sequence and headers in the reason, and is terminated (`+TERM`) once
//! they have it.
//!
//! Without `stream`, `subject` is a core NATS subscription (with
//! `queue_group`, shared among subscribers): at most once, a message
//! published while sluice is not subscribed, or in flight when it stops,
//! is gone. Payloads are read as the file source reads lines (`format`).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::nats";

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use super::{runs_itself, Batcher, Format, LineDecoder, Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::metrics::ComponentMetrics;
use crate::base::nats::{NatsAuth, NatsTarget};
use crate::base::settings::{bounded, duration, BatchOverride, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, DeadLetter, ErrorKind};

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// `[sources.NAME] type = "nats"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `nats://host:port`, or several servers separated by commas.
    pub url: String,
    /// The JetStream stream to read; without it, `subject` is read on
    /// core NATS (at most once).
    #[serde(default)]
    pub stream: Option<String>,
    /// The durable consumer (default `sluice-NAME`, NAME the source's):
    /// processes that share it share the messages.
    #[serde(default)]
    pub consumer: Option<String>,
    /// JetStream: the consumer's filter (default: all the stream's
    /// subjects). Core NATS: the subject subscribed to (wildcards allowed).
    #[serde(default)]
    pub subject: Option<String>,
    /// Core NATS: a queue group, so that subscribers share messages.
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Messages asked for per pull (default: the batch size).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Longest a pull waits for messages.
    #[serde(default = "default_expires", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub expires: Duration,
    /// How long the server waits for an acknowledgement before it
    /// delivers a message again (in-progress acknowledgements extend it
    /// while sinks work).
    #[serde(default = "default_ack_wait", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub ack_wait: Duration,
    /// Messages delivered and not yet acknowledged, over every process of
    /// the consumer, at most (the consumer's `max_ack_pending`).
    #[serde(default = "default_max_ack_pending")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_ack_pending: i64,
    /// Deliveries after which a message goes to the dead letters.
    #[serde(default = "default_max_deliver")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_deliver: i64,
    /// How a payload is read (`auto`, `json`, `text`), as a file line.
    #[serde(default)]
    pub format: Option<Format>,
    /// Where an event without `timestamp` has its time.
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    /// How to authenticate: `{ user, password_env }`, `{ token_env }`,
    /// `{ nkey_env }` or `{ creds_file }`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// TLS: `{ ca_file, cert_file, key_file, verify }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ClientTls>,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_expires() -> Duration {
    Duration::from_millis(500)
}
fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ack_pending() -> i64 {
    10_000
}
fn default_max_deliver() -> i64 {
    5
}

/// The source, built.
#[derive(Debug, Clone)]
struct NatsSource {
    cfg: NatsSourceConfig,
    target: NatsTarget,
}

impl SourceKind for NatsSourceConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        if let Some(n) = self.batch_size {
            bounded("batch_size", n, 1, 100_000)?;
        }
        bounded(
            "expires",
            self.expires,
            Duration::from_millis(10),
            Duration::from_secs(60),
        )?;
        bounded(
            "ack_wait",
            self.ack_wait,
            Duration::from_millis(200),
            Duration::from_secs(86_400),
        )?;
        bounded("max_ack_pending", self.max_ack_pending, 1, 10_000_000)?;
        bounded("max_deliver", self.max_deliver, 1, 1_000_000)?;
        let target = NatsTarget::open(&self.url, self.auth.as_ref(), self.tls.as_ref(), cx)?;
        match &self.stream {
            Some(s) if s.is_empty() || s.contains(['.', '*', '>', ' ']) => {
                return Err(BuildError::key(
                    "stream",
                    format!("`{s}` is no stream name"),
                ));
            }
            Some(_) => {
                if self.queue_group.is_some() {
                    return Err(BuildError::key(
                        "queue_group",
                        "is for core NATS: the processes of a JetStream `consumer` share its messages already",
                    ));
                }
            }
            None => {
                if self.subject.is_none() {
                    return Err(BuildError::key(
                        "subject",
                        "missing: give `stream` (JetStream, acknowledged) or `subject` (core NATS, at most once)",
                    ));
                }
                if self.consumer.is_some() {
                    return Err(BuildError::key(
                        "consumer",
                        "is for JetStream: give `stream`",
                    ));
                }
            }
        }
        if let Some(s) = &self.subject {
            if s.is_empty() || s.split('.').any(str::is_empty) || s.contains(char::is_whitespace) {
                return Err(BuildError::key(
                    "subject",
                    format!("`{s}` is no NATS subject"),
                ));
            }
        }
        Ok(Box::new(NatsSource {
            cfg: self.clone(),
            target,
        }))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(NatsSource);

/// What becomes of a delivered batch's messages: `+ACK` (or `+TERM` for
/// dead letters) when delivered, else `-NAK`.
struct Settle {
    ackers: Arc<Vec<Acker>>,
    kind: AckKind,
}

impl Settle {
    /// The settling of `ackers` once their batch is delivered (`ok`) or
    /// not; `dead`: they went to the dead letters.
    fn of(ackers: Arc<Vec<Acker>>, ok: bool, dead: bool) -> Self {
        let kind = match (ok, dead) {
            (true, false) => AckKind::Ack,
            (true, true) => AckKind::Term,
            (false, _) => AckKind::Nak(None),
        };
        Self { ackers, kind }
    }
}

/// Acknowledges (or refuses) settled messages, in the order batches end.
async fn settler(
    name: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    // Messages read and not yet settled, for the log at the end.
    pending: Arc<AtomicUsize>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
) {
    while let Some(s) = rx.recv().await {
        let kind = s.kind;
        // Acknowledgements are published (not confirmed one by one: a
        // confirmed `AckSync` per message cost half the source's rate and
        // did not lower the redeliveries of a failover, measured); one
        // that cannot be sent (disconnected) is tried again, and one lost
        // with a dying server means the message comes again.
        let mut todo: Vec<&Acker> = s.ackers.iter().collect();
        let mut failed = 0usize;
        for attempt in 0..3 {
            let mut left = Vec::new();
            for a in todo {
                if a.ack_with(kind).await.is_err() {
                    left.push(a);
                }
            }
            todo = left;
            failed = todo.len();
            if failed == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        pending.fetch_sub(s.ackers.len(), Ordering::Relaxed);
        if failed > 0 {
            // The server delivers them again after `ack_wait`.
            tracing::warn!(target: LOG_TARGET, source = %name, messages = failed, "nats: acknowledgements not sent (disconnected); the messages come again");
            ComponentMetrics::add(&metrics.retries, 1);
        }
    }
}

/// Sends in-progress acknowledgements for `ackers` every `every` until
/// `done` fires.
fn keep_alive(ackers: Arc<Vec<Acker>>, every: Duration, mut done: oneshot::Receiver<()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut done => return,
                _ = tick.tick() => {
                    for a in ackers.iter() {
                        let _ = a.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    });
}

/// `attempt` until it works (`None`: shutdown came first), the source
/// marked down with the error meanwhile.
async fn retrying<T, F, Fut>(ctx: &SourceContext, warning: &str, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        match attempt().await {
            Ok(v) => {
                ctx.metrics.set_down(None);
                return Some(v);
            }
            Err(e) => {
                if backoff.attempts() == 0 {
                    tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, "{warning}");
                }
                ctx.metrics.set_down(Some(e));
                ComponentMetrics::add(&ctx.metrics.retries, 1);
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

impl NatsSource {
    async fn connect(&self, ctx: &SourceContext) -> Option<async_nats::Client> {
        retrying(ctx, "cannot connect to nats; retrying", || {
            self.target.connect(&ctx.name, &ctx.metrics)
        })
        .await
    }

    async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let Some(client) = self.connect(&ctx).await else {
            return Ok(());
        };
        let result = match self.cfg.stream.clone() {
            Some(stream) => self.jetstream(&ctx, &client, &stream).await,
            None => self.core(&ctx, &client).await,
        };
        // What was acknowledged is sent before the process goes.
        let _ = tokio::time::timeout(Duration::from_secs(5), client.flush()).await;
        result
    }

    /// The durable consumer, created if missing (retried until the stream
    /// exists).
    async fn consumer(
        &self,
        ctx: &SourceContext,
        js: &async_nats::jetstream::Context,
        stream: &str,
        durable: &str,
    ) -> Option<async_nats::jetstream::consumer::Consumer<pull::Config>> {
        let config = pull::Config {
            durable_name: Some(durable.to_string()),
            filter_subject: self.cfg.subject.clone().unwrap_or_default(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.cfg.ack_wait,
            // One delivery more than ours, so that sluice sees the message
            // that went over and dead-letters it.
            max_deliver: self.cfg.max_deliver + 1,
            max_ack_pending: self.cfg.max_ack_pending,
            ..Default::default()
        };
        retrying(ctx, "nats: retrying", || async {
            let s = js
                .get_stream(stream)
                .await
                .map_err(|e| format!("no stream `{stream}`: {e}"))?;
            s.get_or_create_consumer(durable, config.clone())
                .await
                .map_err(|e| format!("cannot open the consumer `{durable}` of `{stream}`: {e}"))
        })
        .await
    }

    async fn jetstream(
        &self,
        ctx: &SourceContext,
        client: &async_nats::Client,
        stream: &str,
    ) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(client.clone());
        let durable = self
            .cfg
            .consumer
            .clone()
            .unwrap_or_else(|| format!("sluice-{}", ctx.name));
        let Some(consumer) = self.consumer(ctx, &js, stream, &durable).await else {
            return Ok(());
        };
        tracing::info!(target: LOG_TARGET, source = %ctx.name, %stream, consumer = %durable, "reading nats jetstream");
        let count = self.cfg.batch_size.unwrap_or(ctx.batch.max_events).max(1);
        let pending = Arc::new(AtomicUsize::new(0));
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let settler = tokio::spawn(settler(
            ctx.name.clone(),
            ctx.metrics.clone(),
            pending.clone(),
            settle_rx,
        ));
        let mut decoder =
            LineDecoder::new(self.cfg.format.unwrap_or(Format::Auto), &ctx.name, None)
                .with_times(self.cfg.timestamp.clone(), ctx.metrics.clone());
        let mut shutdown = ctx.shutdown.clone();
        let result = loop {
            if shutdown.is_set() {
                break Ok(());
            }
            let pulled = retrying(ctx, "nats: retrying", || async {
                consumer
                    .batch()
                    .max_messages(count)
                    .expires(self.cfg.expires)
                    .messages()
                    .await
                    .map_err(|e| format!("cannot pull from `{stream}`: {e}"))
            })
            .await;
            let Some(mut messages) = pulled else {
                break Ok(());
            };
            let mut got = Vec::with_capacity(count);
            loop {
                let next = tokio::select! {
                    // Messages already read but not delivered come again
                    // after `ack_wait`.
                    _ = shutdown.wait() => None,
                    m = messages.next() => m,
                };
                match next {
                    Some(Ok(m)) => got.push(m),
                    Some(Err(e)) => {
                        tracing::debug!(target: LOG_TARGET, source = %ctx.name, error = %e, "nats: pull ended");
                        break;
                    }
                    None => break,
                }
            }
            if got.is_empty() {
                continue;
            }
            pending.fetch_add(got.len(), Ordering::Relaxed);
            if let Err(closed) = self.deliver(ctx, &mut decoder, got, &settle_tx).await {
                break Err(anyhow::Error::new(closed));
            }
        };
        drop(settle_tx);
        // Acknowledgements of batches still in the pipeline arrive as sinks
        // write them.
        let _ = tokio::time::timeout(Duration::from_secs(60), settler).await;
        let left = pending.load(Ordering::Relaxed);
        if left > 0 {
            tracing::info!(target: LOG_TARGET, source = %ctx.name, messages = left, "nats: messages read and not acknowledged at stop; the server delivers them again");
        }
        result
    }

    /// One pull's messages into a batch (and the dead letters), settled
    /// when all of them are delivered.
    async fn deliver(
        &self,
        ctx: &SourceContext,
        decoder: &mut LineDecoder,
        messages: Vec<async_nats::jetstream::Message>,
        settle: &mpsc::UnboundedSender<Settle>,
    ) -> Result<(), crate::base::output::Closed> {
        let mut batcher = Batcher::new(ctx.batch);
        let mut ackers = Vec::with_capacity(messages.len());
        let mut over: Vec<(Vec<u8>, String, Acker)> = Vec::new();
        for m in messages {
            let (delivered, seq) = m
                .info()
                .map_or((1, 0), |i| (i.delivered, i.stream_sequence));
            let (m, acker) = m.split();
            if delivered > self.cfg.max_deliver {
                let mut reason = format!(
                    "message {seq} of `{}` (subject {}) delivered {delivered} times (max_deliver = {})",
                    self.cfg.stream.as_deref().unwrap_or_default(),
                    m.subject,
                    self.cfg.max_deliver
                );
                if let Some(h) = &m.headers {
                    let mut all: Vec<String> = h
                        .iter()
                        .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}: {v}")))
                        .collect();
                    all.sort();
                    if !all.is_empty() {
                        reason.push_str("; headers: ");
                        reason.push_str(&all.join(", "));
                    }
                }
                over.push((m.payload.to_vec(), reason, acker));
                continue;
            }
            batcher.line(decoder, &m.payload);
            ackers.push(acker);
        }
        if !over.is_empty() {
            let (letters, dead_ackers): (Vec<_>, Vec<_>) = over
                .into_iter()
                .map(|(event, reason, acker)| ((event, reason), acker))
                .unzip();
            let dead_ackers = Arc::new(dead_ackers);
            let tx = settle.clone();
            let ack = Ack::new(move |ok| {
                let _ = tx.send(Settle::of(dead_ackers, ok, true));
            });
            let letters: Vec<DeadLetter<'_>> = letters
                .iter()
                .map(|(event, reason)| DeadLetter {
                    event,
                    kind: ErrorKind::Decode,
                    message: reason.clone(),
                })
                .collect();
            tracing::warn!(target: LOG_TARGET, source = %ctx.name, messages = letters.len(), "nats: messages over max_deliver go to the dead letters");
            ctx.dead.send(&ctx.metrics, &letters, &[ack]).await;
        }
        if ackers.is_empty() {
            return Ok(());
        }
        let ackers = Arc::new(ackers);
        let (stop_tx, stop_rx) = oneshot::channel();
        keep_alive(
            ackers.clone(),
            (self.cfg.ack_wait / 2).max(Duration::from_millis(100)),
            stop_rx,
        );
        let tx = settle.clone();
        let ack = Ack::new(move |ok| {
            let _ = stop_tx.send(());
            let _ = tx.send(Settle::of(ackers, ok, false));
        });
        batcher.flush_acked(ctx, ack).await
    }

    /// Core NATS: at most once.
    async fn core(&self, ctx: &SourceContext, client: &async_nats::Client) -> anyhow::Result<()> {
        let subject = self.cfg.subject.clone().unwrap_or_default();
        let mut sub = match &self.cfg.queue_group {
            Some(g) => client.queue_subscribe(subject.clone(), g.clone()).await,
            None => client.subscribe(subject.clone()).await,
        }
        .map_err(|e| anyhow::anyhow!("source {}: cannot subscribe to {subject}: {e}", ctx.name))?;
        tracing::info!(target: LOG_TARGET, source = %ctx.name, %subject, queue_group = ?self.cfg.queue_group, "reading core nats (at most once)");
        let mut decoder =
            LineDecoder::new(self.cfg.format.unwrap_or(Format::Auto), &ctx.name, None)
                .with_times(self.cfg.timestamp.clone(), ctx.metrics.clone());
        let mut batcher = Batcher::new(ctx.batch);
        let mut shutdown = ctx.shutdown.clone();
        loop {
            let deadline = batcher.deadline();
            let next = tokio::select! {
                _ = shutdown.wait() => break,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    batcher.flush(ctx).await?;
                    continue;
                }
                m = sub.next() => m,
            };
            let Some(m) = next else { break };
            batcher.line(&mut decoder, &m.payload);
            if batcher.is_full() {
                batcher.flush(ctx).await?;
            }
        }
        batcher.flush(ctx).await?;
        let _ = sub.unsubscribe().await;
        Ok(())
    }
}
