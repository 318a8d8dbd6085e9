//! `type = "redis"`: `XADD` events to a Redis stream, pipelined per batch.
//!
//! While Redis is unreachable the sink retries with exponential backoff and
//! jitter (marked down in `/health`); the bounded channel in front of it
//! fills and backpressure reaches the sources. With `fallback = "SINK"`,
//! after `retry_for` the batch goes to that sink instead, each event marked
//! with the error, so logging goes on while the queue is down. Once a batch
//! has gone that way the target is known down: later batches go straight to
//! the fallback (no `retry_for` wait each) while a background `PING` probes
//! Redis, and writes go back to it once it answers (`delivery::Breaker`).
//!
//! `url = "redis+cluster://..."` (or `cluster = true`) writes to a Redis
//! Cluster. `partitions = N` with `stream = "logs:{N}"` spreads events over
//! N streams (`logs:{0}` ...), each its own hash tag and so on one shard:
//! by the hash of `partition_by` (events with the same value keep their
//! order), or round robin. Each partition's events go as one pipeline, the
//! partitions of a batch at once; a partition that failed is retried alone.
//! `replicas = 1` makes a write count only once that many replicas hold it
//! (`WAIT`), so a master killed right after answering loses nothing. A
//! write the replicas did not confirm within `replica_timeout` is waited for
//! again, not written again; only one whose connection was lost (a master
//! gone) is written again (at least once).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::redis";

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use toml::Spanned;

use super::{inputs_field, runs_itself, to_fallback, Sink, SinkContext, SinkKind};
use crate::base::event::{dotted, top_fields, value_text, Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::redis::{check_partitions, partition_of, streams, Conn, Target};
use crate::base::settings::{bounded, duration, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, Breaker};

/// How often a master known to have fewer replicas than `replicas` is
/// asked again.
const RECHECK_REPLICAS: Duration = Duration::from_secs(1);

/// What the writes of a run keep between batches.
struct Written<'a> {
    target: &'a Target,
    /// The connection, made again after a failed write.
    con: Option<Conn>,
    metrics: std::sync::Arc<ComponentMetrics>,
    /// The partitions whose master has fewer replicas than `replicas`:
    /// how many it has, as last asked, and when.
    unreplicated: std::collections::HashMap<u32, (u32, Instant)>,
}

/// What a partition of a batch still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// Its events written (again).
    Write,
    /// Its write, done, confirmed by the replicas.
    Confirm,
}

/// How an event is laid out in a stream entry.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One field (`field`, default `event`) holding the JSON.
    #[default]
    Json,
    /// One stream field per top-level field (objects as JSON text).
    Fields,
}

/// `[sinks.NAME] type = "redis"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `redis://host:port/db`, or a cluster: `redis+cluster://host:port,host:port/`.
    pub url: String,
    /// `url` is a Redis Cluster node (the client finds the others).
    #[serde(default)]
    pub cluster: bool,
    /// TLS of a `rediss://` URL: `{ ca_file, cert_file, key_file, verify }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ClientTls>,
    /// The stream, or with `partitions` its name with `{N}`: `logs:{N}`.
    pub stream: String,
    /// Spread events over this many streams (one per `{N}`).
    #[serde(default)]
    pub partitions: Option<u32>,
    /// The field (dotted path) whose value picks the partition; without
    /// it, events go round robin.
    #[serde(default)]
    pub partition_by: Option<String>,
    /// Replicas that must hold a write before it counts (`WAIT`); 0: the
    /// master's answer is enough.
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub replicas: u32,
    /// Longest wait for `replicas`; past it the write is retried.
    #[serde(default = "default_replica_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub replica_timeout: Duration,
    /// Components this sink reads (may be empty for a `fallback` target).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// Trim the stream to about this many entries (`MAXLEN ~`).
    #[serde(default)]
    pub maxlen: Option<u64>,
    #[serde(default)]
    pub layout: Layout,
    /// The field of the `json` layout.
    #[serde(default = "default_field")]
    pub field: String,
    /// How long to retry a batch before it goes to `fallback`.
    #[serde(default = "default_retry_for", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub retry_for: Duration,
    /// The sink that takes batches Redis would not (events marked with
    /// `_sluice_error`). Without it, the sink retries until Redis is back.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Spanned<String>>,
}

/// First and longest wait between two attempts at a batch.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn default_field() -> String {
    "event".to_string()
}
fn default_replica_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(30)
}

impl SinkKind for RedisSinkConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        bounded("replicas", self.replicas, 0, 16)?;
        bounded(
            "replica_timeout",
            self.replica_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        check_partitions(&self.stream, self.partitions).map_err(|(k, m)| BuildError::key(k, m))?;
        if self.partition_by.is_some() && self.partitions.is_none() {
            return Err(BuildError::key(
                "partition_by",
                "needs `partitions` (and `{N}` in `stream`)",
            ));
        }
        let mut cfg = self.clone();
        cfg.tls = self.tls.as_ref().map(|t| t.resolved(cx));
        if let Some(t) = &cfg.tls {
            // The files read and checked as any client's.
            t.client_config(cx.name, &[])?;
        }
        Target::open_tls(&cfg.url, cfg.cluster, cfg.tls.as_ref())
            .map_err(|e| BuildError::key("url", e))?;
        Ok(Box::new(cfg))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}
runs_itself!(RedisSinkConfig);

impl RedisSinkConfig {
    fn command(&self, pipe: &mut redis::Pipeline, stream: &str, event: &[u8]) {
        let cmd = pipe.cmd("XADD").arg(stream);
        if let Some(n) = self.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        match self.layout {
            Layout::Json => {
                cmd.arg(&self.field).arg(event);
            }
            Layout::Fields => {
                match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(event) {
                    Ok(map) if !map.is_empty() => {
                        for (k, v) in map {
                            let v = match v {
                                serde_json::Value::String(s) => s,
                                other => other.to_string(),
                            };
                            cmd.arg(k).arg(v);
                        }
                    }
                    _ => {
                        cmd.arg(&self.field).arg(event);
                    }
                }
            }
        }
        cmd.ignore();
    }

    /// The partition of each event of `batch` (all 0 without partitions).
    fn partitions_of(&self, batch: &Batch, next: &mut u32) -> Vec<u32> {
        let Some(n) = self.partitions else {
            return vec![0; batch.len()];
        };
        batch
            .iter()
            .map(|e| match &self.partition_by {
                Some(path) => {
                    let text = std::str::from_utf8(e).unwrap_or_default();
                    let fields = top_fields(text).unwrap_or_default();
                    let key = dotted(&fields, path).map(|v| value_text(v.get()));
                    partition_of(key.as_deref().unwrap_or_default().as_bytes(), n)
                }
                None => {
                    *next = (*next + 1) % n;
                    *next
                }
            })
            .collect()
    }

    /// Write what the partitions in `todo` still need to their streams in
    /// `names` (one pipeline each, all at once; `groups[p]` are the indexes
    /// of partition `p`'s events); what is left in `todo` afterwards failed,
    /// with the first error. A write that replicas did not confirm in time
    /// is not written again: only waited for again, on the same connection
    /// (`WAIT` counts that connection's writes), unless it is lost.
    async fn write(
        &self,
        state: &mut Written<'_>,
        batch: &Batch,
        names: &[String],
        groups: &[Vec<usize>],
        todo: &mut Vec<(u32, Left)>,
    ) -> Result<(), String> {
        if state.con.is_none() {
            let c = state.target.connect().await;
            state.con = Some(c.map_err(|e| format!("cannot XADD to {}: {e}", self.stream))?);
        }
        let c = state.con.clone().expect("connected above");
        let events: Vec<&[u8]> = batch.iter().collect();
        let writes = todo.iter().map(|&(p, left)| {
            let stream = &names[p as usize];
            let mut c = c.clone();
            let replicas = self.replicas;
            let timeout = self.replica_timeout.as_millis() as u64;
            // A master known to have fewer replicas than asked (one was
            // promoted in a dead master's place) is waited for with what it
            // has, asked again every second, not for `replica_timeout` each
            // write.
            let known = state
                .unreplicated
                .get(&p)
                .map(|&(have, at)| (have, at.elapsed() < RECHECK_REPLICAS));
            let mut pipe = redis::pipe();
            match left {
                Left::Write => {
                    for &i in &groups[p as usize] {
                        self.command(&mut pipe, stream, events[i]);
                    }
                }
                // A keyed command, so that a cluster sends the `WAIT` to
                // the stream's master.
                Left::Confirm => {
                    pipe.cmd("XLEN").arg(stream).ignore();
                }
            }
            async move {
                let mut short = None;
                if let Some((have, fresh)) = known {
                    let have = match fresh {
                        true => have,
                        false => c.replicas_of(stream).await.unwrap_or(have),
                    };
                    short = (have < replicas).then_some((have, !fresh));
                }
                let need = short.map_or(replicas, |(have, _)| have);
                if need > 0 {
                    pipe.cmd("WAIT").arg(need).arg(timeout);
                }
                let r = match pipe.query_async::<Vec<i64>>(&mut c).await {
                    Ok(acked) => match acked.last() {
                        Some(&n) if need > 0 && n < i64::from(need) => {
                            // Fewer replicas than asked confirmed it: has
                            // the master fewer?
                            match c.replicas_of(stream).await {
                                Ok(have) if have < need && n >= i64::from(have) => {
                                    Ok(Some((have, true)))
                                }
                                _ => Err((Left::Confirm, format!(
                                    "{stream}: written on the master, but {n} of {need} replicas confirmed it in time; waiting for them again"
                                ))),
                            }
                        }
                        _ => Ok(short),
                    },
                    Err(e) => Err((Left::Write, format!("cannot XADD to {stream}: {e}"))),
                };
                (p, r)
            }
        });
        let results = futures_util::future::join_all(writes).await;
        let mut first: Option<String> = None;
        let mut lost = false;
        todo.clear();
        for (p, r) in results {
            match r {
                Ok(Some((have, asked))) => {
                    let now = Instant::now();
                    match state.unreplicated.entry(p) {
                        std::collections::hash_map::Entry::Vacant(v) => {
                            tracing::warn!(target: LOG_TARGET, stream = %names[p as usize], replicas = self.replicas, connected = have, "the stream's master has fewer replicas than `replicas`; writing with what it has");
                            v.insert((have, now));
                        }
                        std::collections::hash_map::Entry::Occupied(mut o) if asked => {
                            o.insert((have, now));
                        }
                        std::collections::hash_map::Entry::Occupied(_) => {}
                    }
                    ComponentMetrics::add(&state.metrics.unreplicated, 1);
                }
                Ok(None) => {
                    if state.unreplicated.remove(&p).is_some() {
                        tracing::info!(target: LOG_TARGET, stream = %names[p as usize], replicas = self.replicas, "the stream's master has its replicas again");
                    }
                }
                Err((left, e)) => {
                    lost |= left == Left::Write;
                    todo.push((p, left));
                    first.get_or_insert(e);
                }
            }
        }
        if lost {
            // A new connection has no writes for `WAIT` to count: what was
            // waiting for its replicas is written again (at least once).
            state.con = None;
            for (_, left) in todo.iter_mut() {
                *left = Left::Write;
            }
        }
        first.map_or(Ok(()), Err)
    }

    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let target = Target::open_tls(&self.url, self.cluster, self.tls.as_ref())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("sink {}: bad redis url", ctx.name))?;
        let (_stop_watch, stop) = tokio::sync::oneshot::channel();
        tokio::spawn(crate::base::redis::watch_topology(
            target.clone(),
            ctx.name.clone(),
            ctx.metrics.clone(),
            stop,
        ));
        let mut next = 0u32;
        let names = streams(&self.stream, self.partitions);
        let mut state = Written {
            target: &target,
            con: None,
            metrics: ctx.metrics.clone(),
            unreplicated: Default::default(),
        };
        let breaker = Breaker::default();
        // The last error, for the events marked while the breaker is open.
        let mut last_error = String::new();
        while let Some(batch) = ctx.input.recv().await {
            let started = Instant::now();
            if let (true, Some(fallback)) = (breaker.is_open(), &ctx.fallback) {
                to_fallback(&ctx, fallback, &batch, &last_error).await;
                continue;
            }
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            let mut groups = vec![Vec::new(); names.len()];
            for (i, p) in self
                .partitions_of(&batch, &mut next)
                .into_iter()
                .enumerate()
            {
                groups[p as usize].push(i);
            }
            let mut todo: Vec<(u32, Left)> = (0..names.len() as u32)
                .filter(|&p| !groups[p as usize].is_empty())
                .map(|p| (p, Left::Write))
                .collect();
            loop {
                match self
                    .write(&mut state, &batch, &names, &groups, &mut todo)
                    .await
                {
                    Ok(()) => {
                        if backoff.attempts() > 0 {
                            tracing::info!(target: LOG_TARGET, sink = %ctx.name, "redis is back");
                            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
                        }
                        ctx.metrics.set_down(None);
                        ctx.account(&batch);
                        break;
                    }
                    Err(reason) => {
                        ctx.metrics.set_down(Some(reason.clone()));
                        ComponentMetrics::add(&ctx.metrics.retries, 1);
                        if let (Some(_), Some(fallback)) = (&self.fallback, &ctx.fallback) {
                            if started.elapsed() >= self.retry_for {
                                tracing::warn!(target: LOG_TARGET, sink = %ctx.name, events = batch.len(), error = %reason, "sending the batch to the fallback sink");
                                to_fallback(&ctx, fallback, &batch, &reason).await;
                                let target = target.clone();
                                breaker.trip(&ctx.name, move || {
                                    let target = target.clone();
                                    async move { target.ping().await }
                                });
                                last_error = reason;
                                state.con = None;
                                break;
                            }
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(target: LOG_TARGET, sink = %ctx.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            drop::<SharedBatch>(batch);
        }
        Ok(())
    }
}
