//! `type = "redis"`: a Redis stream read through a consumer group.
//!
//! Entries are acknowledged (`XACK`, and `XDEL` with `delete_after_ack`)
//! only once every sink they were routed to has written them, or they were
//! dropped: each batch carries an acknowledgement token that fires when the
//! last copy of the batch is gone. On start a consumer first re-reads its
//! own pending entries; entries idle longer than `claim_idle` in other
//! (crashed) consumers are claimed (`XPENDING ... IDLE`, then `XCLAIM`),
//! and so are this consumer's own when they are not in its pipeline (their
//! delivery failed, or an ack or a reply was lost with a failed-over
//! master): an entry still on its way through the pipeline is never read
//! twice by the process that holds it; an entry delivered
//! more than `max_deliveries` times goes to the dead letters (and is acked
//! once they are written). Several sluice processes in one group share the
//! stream.
//!
//! On a Redis Cluster (`redis+cluster://...` or `cluster = true`) and with
//! `partitions = N` (`stream = "logs:{N}"`, as the sink writes them), the
//! processes of a group share the partitions instead: each says it is
//! alive in a sorted set (`sluice:members:GROUP:STREAM`, every third of
//! `member_ttl`), and partition `p` belongs to the `p % W`-th of the `W`
//! live members, so a partition is read by one process at a time and its
//! order holds. A process that joins or leaves (or stops answering for
//! `member_ttl`) moves partitions: a join or a leave bumps
//! `sluice:members:GROUP:STREAM:epoch`, which every member looks at every
//! twentieth of `member_ttl` (50-500 ms), so the others give up a
//! joiner's share within one look, and a joiner announces itself one
//! look before it reads (processes started together split at once). The
//! new owner first waits for the entries the old one still has pending
//! (acked as its sinks write them, or claimed once idle for `claim_idle`),
//! then reads new ones.
//!
//! Here: the settings, connecting, and the run of one process. Beside it:
//! `entries` (replies made into events), `group` (one read of a stream,
//! delivery and acknowledgement), `members` (who reads which partition).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::redis";

mod entries;
mod group;
mod members;

pub use self::entries::*;
use self::{group::*, members::*};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::Value;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{runs_itself, Batcher, Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::event::{check_object, push_json_str, scan_object, Batch, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::redis::{check_partitions, streams, Conn, Target};
use crate::base::settings::{bounded, duration, BatchOverride, BuildContext, BuildError, TypeTag};
use crate::base::timestamp::{Candidates, Found};
use crate::delivery::{Backoff, DeadLetter, ErrorKind};

/// `[sources.NAME] type = "redis"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `redis://127.0.0.1:6379/0`, or a cluster: `redis+cluster://host:port,host:port/`.
    pub url: String,
    /// `url` is a Redis Cluster node (the client finds the others).
    #[serde(default)]
    pub cluster: bool,
    /// TLS of a `rediss://` URL: `{ ca_file, cert_file, key_file, verify }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ClientTls>,
    /// Read this many partition streams (`stream` names them with `{N}`),
    /// shared out among the group's processes.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// With `partitions`: how long a process may stay silent before the
    /// others take its partitions.
    #[serde(default = "default_member_ttl", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub member_ttl: Duration,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    /// The stream read through `group` (or give `list`).
    #[serde(default)]
    pub stream: String,
    /// The consumer group (created if missing): the processes of one group
    /// share the stream's entries.
    #[serde(default)]
    pub group: String,
    /// A Redis list that applications `RPUSH` to, read as a reliable queue
    /// instead of a stream (see `redis_list`).
    #[serde(default)]
    pub list: Option<String>,
    /// With `list`: where values wait, read, until delivered (default
    /// `{LIST}:processing:CONSUMER`).
    #[serde(default)]
    pub processing_list: Option<String>,
    /// With `list`: how values are read, as the file source reads lines
    /// (`auto`: a JSON object is the event, any other value `{"message":
    /// VALUE}`; `json`: anything but an object goes to the dead letters;
    /// `text`).
    #[serde(default)]
    pub format: Option<super::Format>,
    /// With `list`: most values read and not yet delivered (in the
    /// processing list) at once; reading waits below it. What a `kill -9`
    /// can deliver twice (default: four reads' `count`).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// This consumer's name in the group (default: the host name and the
    /// source's name, stable across restarts; set it to run several sluice
    /// processes on one host).
    #[serde(default)]
    pub consumer: Option<String>,
    /// Entries asked for per read (default: the batch size).
    #[serde(default)]
    pub count: Option<usize>,
    /// Longest a read waits for new entries.
    #[serde(default = "default_block", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub block: Duration,
    /// Where a new group starts: `"$"` (new entries only) or `"0"` (all).
    #[serde(default = "default_start")]
    pub start: String,
    /// Deliveries after which an entry is dead-lettered.
    #[serde(default = "default_max_deliveries")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_deliveries: u64,
    /// Idle time after which another consumer's pending entries are taken.
    #[serde(default = "default_claim_idle", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub claim_idle: Duration,
    /// Other consumers of the group idle this long with nothing pending are
    /// removed (`XGROUP DELCONSUMER`), so dead ones do not pile up; `"0s"`
    /// keeps them.
    #[serde(default = "default_remove_idle_consumers", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub remove_idle_consumers: Duration,
    /// `XDEL` entries once acknowledged.
    #[serde(default)]
    pub delete_after_ack: bool,
    /// Field that receives the entry ID in each event (`""`: none).
    #[serde(default = "default_id_field")]
    pub id_field: String,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_member_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_block() -> Duration {
    Duration::from_millis(500)
}
fn default_start() -> String {
    "$".to_string()
}
fn default_max_deliveries() -> u64 {
    5
}
fn default_claim_idle() -> Duration {
    Duration::from_secs(60)
}
fn default_remove_idle_consumers() -> Duration {
    Duration::from_secs(3600)
}
fn default_id_field() -> String {
    "stream_id".to_string()
}

/// The default consumer name: the host name and the source's name, the
/// same after a restart, so a restarted process reads its own pending
/// entries again instead of leaving a dead consumer behind.
pub fn default_consumer(source: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".to_string());
    format!("{host}-{source}")
}

/// First and longest wait between two attempts to reach Redis.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Connect, retrying with backoff until it works or shutdown.
pub(super) async fn connect(target: &Target, ctx: &SourceContext, what: &str) -> Option<Conn> {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        match target.connect().await {
            Ok(c) => return Some(c),
            Err(e) => {
                let delay = backoff.next_delay();
                ComponentMetrics::add(&ctx.metrics.retries, 1);
                let hint = if refused_auth(&e) {
                    " (check the password in `url`: redis://:PASSWORD@host:port/)"
                } else {
                    ""
                };
                ctx.metrics
                    .set_down(Some(format!("cannot connect to redis ({what}): {e}{hint}")));
                tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, retry_in_ms = delay.as_millis() as u64, "redis connection failed");
                tokio::select! {
                    _ = shutdown.wait() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Whether Redis refused our credentials: none given where a password is
/// needed (`NOAUTH`), or a wrong one (`WRONGPASS`).
fn refused_auth(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        || e.kind() == redis::ErrorKind::AuthenticationFailed
}

/// Whether a failed command lost the connection (reconnect), rather than
/// being refused by the server (retry on the same connection).
pub(super) fn lost_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl SourceKind for RedisSourceConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        if let Some(n) = self.count {
            bounded("count", n, 1, 1_000_000)?;
        }
        bounded(
            "block",
            self.block,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        bounded("max_deliveries", self.max_deliveries, 1, 1_000_000)?;
        bounded(
            "claim_idle",
            self.claim_idle,
            Duration::from_millis(1),
            Duration::from_secs(86_400),
        )?;
        bounded(
            "remove_idle_consumers",
            self.remove_idle_consumers,
            Duration::ZERO,
            Duration::from_secs(30 * 86_400),
        )?;
        bounded(
            "member_ttl",
            self.member_ttl,
            Duration::from_millis(300),
            Duration::from_secs(3600),
        )?;
        match &self.list {
            Some(list) => {
                if list.is_empty() {
                    return Err(BuildError::key("list", "empty: name the Redis list"));
                }
                if let Some(f @ (super::Format::Cri | super::Format::Docker)) = self.format {
                    return Err(BuildError::key(
                        "format",
                        format!("{f:?} is for container log files: give auto, json or text"),
                    ));
                }
                if let Some(n) = self.max_in_flight {
                    bounded("max_in_flight", n, 1, 1_000_000)?;
                }
                for (key, set) in [
                    ("stream", !self.stream.is_empty()),
                    ("group", !self.group.is_empty()),
                    ("partitions", self.partitions.is_some()),
                ] {
                    if set {
                        return Err(BuildError::key(
                            key,
                            "is for a stream; with `list` the values are read from a list (give one of `stream` and `list`)",
                        ));
                    }
                }
            }
            None => {
                if self.stream.is_empty() {
                    return Err(BuildError::key(
                        "stream",
                        "missing: give `stream` (a Redis stream, with `group`) or `list` (a Redis list that applications RPUSH to)",
                    ));
                }
                if self.group.is_empty() {
                    return Err(BuildError::key(
                        "group",
                        "missing: the consumer group that reads `stream` (created if it does not exist)",
                    ));
                }
                if self.processing_list.is_some() {
                    return Err(BuildError::key("processing_list", "is for `list`"));
                }
                if self.max_in_flight.is_some() {
                    return Err(BuildError::key(
                        "max_in_flight",
                        "is for `list`: a stream's pending entries are bounded by `count` and the pipeline",
                    ));
                }
                if self.format.is_some() {
                    return Err(BuildError::key(
                        "format",
                        "is for `list`: a stream entry's fields are the event",
                    ));
                }
                check_partitions(&self.stream, self.partitions)
                    .map_err(|(k, m)| BuildError::key(k, m))?;
            }
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

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(RedisSourceConfig);

impl RedisSourceConfig {
    /// `XGROUP CREATE ... MKSTREAM` at `start`; a group that exists already
    /// (another process, a restart) is fine.
    async fn create_group(&self, con: &mut Conn, stream: &str) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(&self.group)
            .arg(&self.start)
            .arg("MKSTREAM")
            .query_async(con)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => Ok(()),
        }
    }

    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        if let Some(list) = self.list.clone() {
            return super::redis_list::run(self, list, ctx).await;
        }
        let target = Target::open_tls(&self.url, self.cluster, self.tls.as_ref())
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("source {}: bad redis url", ctx.name))?;
        let consumer = self
            .consumer
            .clone()
            .unwrap_or_else(|| default_consumer(&ctx.name));
        let count = self.count.unwrap_or(ctx.batch.max_events).max(1);
        let names = streams(&self.stream, self.partitions);
        // Connect and make sure the groups exist. A server that wants a
        // password we lack (NOAUTH) is treated as one that refuses ours
        // (WRONGPASS): a clear reason in /health, retried with backoff.
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut shutdown = ctx.shutdown.clone();
        let mut reader = 'connect: loop {
            let Some(mut reader) = connect(&target, &ctx, "reader").await else {
                return Ok(());
            };
            let mut refused = None;
            for stream in &names {
                match self.create_group(&mut reader, stream).await {
                    Ok(()) => {}
                    Err(e) if refused_auth(&e) || lost_connection(&e) => {
                        refused = Some(e);
                        break;
                    }
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "source {}: XGROUP CREATE {stream} failed: {e}",
                            ctx.name
                        ))
                    }
                }
            }
            let Some(e) = refused else {
                break 'connect reader;
            };
            let reason = if refused_auth(&e) {
                format!("redis refused us: {e} (give the password in `url`: redis://:PASSWORD@host:port/)")
            } else {
                format!("redis went away while the groups were made: {e}")
            };
            if backoff.attempts() == 0 {
                tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, "{reason}");
            }
            ctx.metrics.set_down(Some(reason));
            ComponentMetrics::add(&ctx.metrics.retries, 1);
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        };
        ctx.metrics.set_down(None);
        tracing::info!(target: LOG_TARGET, source = %ctx.name, stream = %self.stream, partitions = self.partitions.unwrap_or(1), group = %self.group, %consumer, cluster = target.is_cluster(), "reading redis stream");

        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Acked>();
        let in_flight = Arc::new(InFlight::default());
        let acker = tokio::spawn(acker(
            target.clone(),
            self.group.clone(),
            self.delete_after_ack,
            ctx.metrics.clone(),
            in_flight.clone(),
            ack_rx,
        ));
        let (_stop_watch, stop) = tokio::sync::oneshot::channel();
        tokio::spawn(crate::base::redis::watch_topology(
            target.clone(),
            ctx.name.clone(),
            ctx.metrics.clone(),
            stop,
        ));
        let times = Candidates::new(self.timestamp.as_ref());
        let io = Io {
            target: &target,
            ctx: &ctx,
            consumer: &consumer,
            count,
            ack_tx: &ack_tx,
            in_flight: &in_flight,
            times: &times,
        };
        let result = match self.partitions {
            None => self.run_one(&io, &mut reader, &names[0]).await,
            Some(_) => self.run_partitioned(&io, &mut reader, &names).await,
        };
        drop(ack_tx);
        // Acks of batches still in the pipeline arrive as sinks write them.
        let _ = tokio::time::timeout(Duration::from_secs(60), acker).await;
        result
    }

    /// One stream, read with blocking reads on a connection of its own.
    async fn run_one(&self, io: &Io<'_>, reader: &mut Conn, stream: &str) -> anyhow::Result<()> {
        let ctx = io.ctx;
        let mut shutdown = ctx.shutdown.clone();
        let mut part = Partition::new(stream, self.claim_idle, false);
        let mut clock = Clock::default();
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        while !shutdown.is_set() {
            let mut con = reader.clone();
            let read = tokio::select! {
                _ = shutdown.wait() => break,
                r = self.step(io, &mut part, &mut con, Some(self.block)) => r,
            };
            match read {
                Ok(Some((entries, deliveries))) => {
                    if part.failing.take().is_some() {
                        tracing::info!(target: LOG_TARGET, source = %ctx.name, "reading again");
                        ctx.metrics.set_down(None);
                        backoff.reset();
                    }
                    self.deliver(io, &part.stream, entries, &deliveries, &mut clock)
                        .await?;
                }
                Ok(None) => {}
                Err(e) => {
                    if !self
                        .recover(io, reader, std::slice::from_mut(&mut part), 0, e)
                        .await
                    {
                        break;
                    }
                    if part.failing.is_some() {
                        tokio::select! {
                            _ = shutdown.wait() => break,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1-0".into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn event(e: &Entry) -> serde_json::Value {
        let mut out = Vec::new();
        entry_event(
            e,
            "stream_id",
            &mut Clock::default(),
            &Candidates::new(None),
            None,
            &mut out,
        )
        .unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn one_json_field_is_the_event() {
        let v = event(&entry(&[("event", r#"{"timestamp":"t","level":"error"}"#)]));
        assert_eq!(
            v,
            serde_json::json!({"stream_id":"1-0","timestamp":"t","level":"error"})
        );
    }

    #[test]
    fn field_pairs_become_an_object() {
        let v = event(&entry(&[("level", "warn"), ("message", "disk")]));
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "disk");
        assert_eq!(v["stream_id"], "1-0");
        assert!(v["timestamp"].is_string());
    }

    #[test]
    fn binary_values_stay_lossless() {
        let e = Entry {
            id: "1-0".into(),
            fields: vec![
                (b"level".to_vec(), b"warn".to_vec()),
                (b"blob".to_vec(), vec![0xff, 0x00, 0x80]),
            ],
        };
        let v = event(&e);
        assert_eq!(v["blob"], serde_json::json!({ "base64": "/wCA" }));
        let dead: serde_json::Value = serde_json::from_slice(&fields_json(&e)).unwrap();
        assert_eq!(
            dead,
            serde_json::json!({ "level": "warn", "blob": { "base64": "/wCA" } })
        );
    }

    #[test]
    fn consumers_of_an_xinfo_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"name".to_vec()),
            Value::BulkString(b"w1".to_vec()),
            Value::BulkString(b"pending".to_vec()),
            Value::Int(3),
            Value::BulkString(b"idle".to_vec()),
            Value::Int(1500),
        ])]);
        assert_eq!(
            consumers(&reply),
            [Consumer {
                name: "w1".into(),
                pending: 3,
                idle_ms: 1500
            }]
        );
    }

    #[test]
    fn broken_json_is_refused() {
        let mut out = Vec::new();
        assert!(entry_event(
            &entry(&[("event", "{broken")]),
            "",
            &mut Clock::default(),
            &Candidates::new(None),
            None,
            &mut out
        )
        .is_err());
    }
}
