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

use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use toml::Spanned;

use super::{inputs_field, marked, runs_itself, Sink, SinkContext, SinkKind};
use crate::base::event::{Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, Breaker};

/// How an event is laid out in a stream entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One field (`field`, default `event`) holding the JSON.
    #[default]
    Json,
    /// One stream field per top-level field (objects as JSON text).
    Fields,
}

/// `[sinks.NAME] type = "redis"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    pub url: String,
    pub stream: String,
    /// Components this sink reads (may be empty for a `fallback` target).
    #[serde(default)]
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
    pub retry_for: Duration,
    /// The sink that takes batches Redis would not (events marked with
    /// `_sluice_error`). Without it, the sink retries until Redis is back.
    #[serde(default)]
    pub fallback: Option<Spanned<String>>,
}

/// First and longest wait between two attempts at a batch.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

fn default_field() -> String {
    "event".to_string()
}
fn default_retry_for() -> Duration {
    Duration::from_secs(30)
}

impl SinkKind for RedisSinkConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        redis::Client::open(self.url.as_str())
            .map_err(|e| BuildError::key("url", format!("not a Redis URL: {e}")))?;
        Ok(Box::new(self.clone()))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}
runs_itself!(RedisSinkConfig);

impl RedisSinkConfig {
    fn command(&self, pipe: &mut redis::Pipeline, event: &[u8]) {
        let cmd = pipe.cmd("XADD").arg(&self.stream);
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

    async fn write(
        &self,
        con: &mut Option<MultiplexedConnection>,
        client: &redis::Client,
        batch: &Batch,
    ) -> redis::RedisResult<()> {
        if con.is_none() {
            *con = Some(client.get_multiplexed_async_connection().await?);
        }
        let mut pipe = redis::pipe();
        for e in batch.iter() {
            self.command(&mut pipe, e);
        }
        let c = con.as_mut().expect("connected above");
        let result = pipe.query_async::<()>(c).await;
        if result.is_err() {
            *con = None;
        }
        result
    }

    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url.as_str())
            .with_context(|| format!("sink {}: bad redis url", ctx.name))?;
        let mut con = None;
        let breaker = Breaker::default();
        // The last error, for the events marked while the breaker is open.
        let mut last_error = String::new();
        while let Some(batch) = ctx.input.recv().await {
            let started = Instant::now();
            if let (true, Some(fallback)) = (breaker.is_open(), &ctx.fallback) {
                ComponentMetrics::add(&ctx.metrics.failed, batch.len());
                if fallback.send(0, marked(&batch, &last_error)).await.is_err() {
                    batch.acks.iter().for_each(|a| a.fail());
                }
                continue;
            }
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            loop {
                match self.write(&mut con, &client, &batch).await {
                    Ok(()) => {
                        if backoff.attempts() > 0 {
                            tracing::info!(sink = %ctx.name, "redis is back");
                            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
                        }
                        ctx.metrics.set_down(None);
                        ctx.account(&batch);
                        break;
                    }
                    Err(e) => {
                        let reason = format!("cannot XADD to {}: {e}", self.stream);
                        ctx.metrics.set_down(Some(reason.clone()));
                        ComponentMetrics::add(&ctx.metrics.retries, 1);
                        if let (Some(_), Some(fallback)) = (&self.fallback, &ctx.fallback) {
                            if started.elapsed() >= self.retry_for {
                                tracing::warn!(sink = %ctx.name, events = batch.len(), error = %reason, "sending the batch to the fallback sink");
                                ComponentMetrics::add(&ctx.metrics.failed, batch.len());
                                if fallback.send(0, marked(&batch, &reason)).await.is_err() {
                                    batch.acks.iter().for_each(|a| a.fail());
                                }
                                let client = client.clone();
                                breaker.trip(&ctx.name, move || ping(client.clone()));
                                last_error = reason;
                                con = None;
                                break;
                            }
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(sink = %ctx.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
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

/// Whether Redis answers a `PING` on a new connection, within a second.
async fn ping(client: redis::Client) -> bool {
    let attempt = async {
        let mut c = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(_))
    )
}
