//! `type = "redis"`: a Redis stream read through a consumer group.
//!
//! Entries are acknowledged (`XACK`, and `XDEL` with `delete_after_ack`)
//! only once every sink they were routed to has written them, or they were
//! dropped: each batch carries an acknowledgement token that fires when the
//! last copy of the batch is gone. On start a consumer first re-reads its
//! own pending entries; entries idle longer than `claim_idle` in other
//! (crashed) consumers are claimed with `XAUTOCLAIM`; an entry delivered
//! more than `max_deliveries` times goes to the dead letters (and is acked
//! once they are written). Several sluice processes in one group share the
//! stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{runs_itself, Batcher, Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::event::{check_object, push_json_str, Batch, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BatchOverride, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, DeadLetter, ErrorKind};

/// `[sources.NAME] type = "redis"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSourceConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    pub stream: String,
    pub group: String,
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
    pub block: Duration,
    /// Where a new group starts: `"$"` (new entries only) or `"0"` (all).
    #[serde(default = "default_start")]
    pub start: String,
    /// Deliveries after which an entry is dead-lettered.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u64,
    /// Idle time after which another consumer's pending entries are taken.
    #[serde(default = "default_claim_idle", with = "duration")]
    pub claim_idle: Duration,
    /// Other consumers of the group idle this long with nothing pending are
    /// removed (`XGROUP DELCONSUMER`), so dead ones do not pile up; `"0s"`
    /// keeps them.
    #[serde(default = "default_remove_idle_consumers", with = "duration")]
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

/// A value as JSON, losslessly: text as a string, other bytes as
/// `{"base64": "..."}`.
pub fn lossless(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            use base64::Engine as _;
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

/// An entry's fields as a JSON object (for dead letters), values lossless.
fn fields_json(entry: &Entry) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = entry
        .fields
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), lossless(v)))
        .collect();
    serde_json::to_vec(&map).expect("a map of JSON values serializes")
}

/// One stream entry: its ID and field/value pairs.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Entries of an `[[id, [f, v, ...]], ...]` reply. Deleted entries (whose
/// fields are nil) come back with no fields.
pub fn parse_entries(v: &Value) -> Vec<Entry> {
    array(v)
        .iter()
        .filter_map(|e| {
            let parts = array(e);
            let id = text(parts.first()?)?;
            let kv = parts.get(1).map(array).unwrap_or(&[]);
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((bytes(p.first()?)?, bytes(p.get(1)?)?)))
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply (RESP2 array or RESP3 map).
fn read_reply(v: &Value) -> Vec<Entry> {
    match v {
        Value::Nil => Vec::new(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(_, entries)| parse_entries(entries))
            .collect(),
        other => array(other)
            .iter()
            .flat_map(|s| array(s).get(1).map(parse_entries).unwrap_or_default())
            .collect(),
    }
}

/// Turn an entry into an event: one field holding a JSON object is that
/// object; otherwise the fields become an object of strings.
pub fn entry_event(
    entry: &Entry,
    id_field: &str,
    clock: &mut Clock,
    times: Option<&crate::base::timestamp::TimestampRules>,
    metrics: Option<&crate::base::metrics::ComponentMetrics>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if entry.fields.is_empty() {
        return Err("the entry has no fields (deleted?)".into());
    }
    let mut body: Vec<u8> = Vec::new();
    let single_json = entry.fields.len() == 1 && entry.fields[0].1.first() == Some(&b'{');
    let has_timestamp;
    if single_json {
        let v = &entry.fields[0].1;
        let info = check_object(v).map_err(|e| {
            format!(
                "field `{}` is not a JSON object: {e}",
                String::from_utf8_lossy(&entry.fields[0].0)
            )
        })?;
        has_timestamp = info.has_timestamp;
        body.extend_from_slice(v.trim_ascii());
    } else {
        let mut map = serde_json::Map::new();
        for (k, v) in &entry.fields {
            map.insert(String::from_utf8_lossy(k).into_owned(), lossless(v));
        }
        has_timestamp = map.contains_key("timestamp");
        serde_json::to_writer(&mut body, &map).expect("writing to a Vec cannot fail");
    }
    // `{` + [timestamp,] + [id,] + rest
    out.push(b'{');
    let mut first = true;
    if !has_timestamp {
        out.extend_from_slice(b"\"timestamp\":\"");
        match crate::source::event_time(times, &body, metrics) {
            Some(t) => out.extend_from_slice(t.as_bytes()),
            None => out.extend_from_slice(clock.now().as_bytes()),
        }
        out.push(b'"');
        first = false;
    }
    if !id_field.is_empty() {
        if !first {
            out.push(b',');
        }
        push_json_str(out, id_field);
        out.push(b':');
        push_json_str(out, &entry.id);
        first = false;
    }
    let rest = body[1..].trim_ascii_start();
    if !first && rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// First and longest wait between two attempts to reach Redis.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Connect, retrying with backoff until it works or shutdown.
async fn connect(
    client: &redis::Client,
    ctx: &SourceContext,
    what: &str,
) -> Option<MultiplexedConnection> {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        match client.get_multiplexed_async_connection().await {
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
                tracing::warn!(source = %ctx.name, error = %e, retry_in_ms = delay.as_millis() as u64, "redis connection failed");
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
fn lost_connection(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// One consumer of a group, as `XINFO CONSUMERS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub pending: i64,
    pub idle_ms: i64,
}

/// The consumers of an `XINFO CONSUMERS` reply (a list of flat key/value
/// lists in RESP2, of maps in RESP3).
pub fn consumers(v: &Value) -> Vec<Consumer> {
    array(v)
        .iter()
        .map(|c| {
            let pairs: Vec<(String, &Value)> = match c {
                Value::Map(m) => m.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
                other => array(other)
                    .chunks(2)
                    .filter_map(|p| Some((text(p.first()?)?, p.get(1)?)))
                    .collect(),
            };
            let int = |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| match v {
                        Value::Int(n) => Some(*n),
                        other => text(other)?.parse().ok(),
                    })
                    .unwrap_or(0)
            };
            Consumer {
                name: pairs
                    .iter()
                    .find(|(k, _)| k == "name")
                    .and_then(|(_, v)| text(v))
                    .unwrap_or_default(),
                pending: int("pending"),
                idle_ms: int("idle"),
            }
        })
        .collect()
}

/// Acknowledges entries as their events are delivered.
async fn acker(
    client: redis::Client,
    stream: String,
    group: String,
    delete: bool,
    metrics: Arc<ComponentMetrics>,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    while let Some(mut ids) = rx.recv().await {
        // Gather what else is waiting into one round trip.
        while let Ok(more) = rx.try_recv() {
            ids.extend(more);
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        loop {
            if con.is_none() {
                con = client.get_multiplexed_async_connection().await.ok();
            }
            if let Some(c) = con.as_mut() {
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&stream).arg(&group).arg(&ids).ignore();
                if delete {
                    pipe.cmd("XDEL").arg(&stream).arg(&ids).ignore();
                }
                match pipe.query_async::<()>(c).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, entries = ids.len(), "XACK failed; retrying");
                        con = None;
                    }
                }
            }
            ComponentMetrics::add(&metrics.retries, 1);
            backoff.wait().await;
        }
    }
}

impl SourceKind for RedisSourceConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
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
        redis::Client::open(self.url.as_str())
            .map_err(|e| BuildError::key("url", format!("not a Redis URL: {e}")))?;
        Ok(Box::new(self.clone()))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(RedisSourceConfig);

impl RedisSourceConfig {
    /// `XGROUP CREATE ... MKSTREAM` at `start`; a group that exists already
    /// (another process, a restart) is fine.
    async fn create_group(&self, con: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
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
        let client = redis::Client::open(self.url.as_str())
            .with_context(|| format!("source {}: bad redis url", ctx.name))?;
        let consumer = self
            .consumer
            .clone()
            .unwrap_or_else(|| default_consumer(&ctx.name));
        let count = self.count.unwrap_or(ctx.batch.max_events).max(1);
        // Connect and make sure the group exists. A server that wants a
        // password we lack (NOAUTH) is treated as one that refuses ours
        // (WRONGPASS): a clear reason in /health, retried with backoff.
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let mut shutdown = ctx.shutdown.clone();
        let mut reader = loop {
            let Some(mut reader) = connect(&client, &ctx, "reader").await else {
                return Ok(());
            };
            match self.create_group(&mut reader).await {
                Ok(()) => break reader,
                Err(e) if refused_auth(&e) => {
                    let reason = format!("redis refused us: {e} (give the password in `url`: redis://:PASSWORD@host:port/)");
                    if backoff.attempts() == 0 {
                        tracing::warn!(source = %ctx.name, error = %e, "{reason}");
                    }
                    ctx.metrics.set_down(Some(reason));
                    ComponentMetrics::add(&ctx.metrics.retries, 1);
                    tokio::select! {
                        _ = shutdown.wait() => return Ok(()),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "source {}: XGROUP CREATE failed: {e}",
                        ctx.name
                    ))
                }
            }
        };
        ctx.metrics.set_down(None);
        tracing::info!(source = %ctx.name, stream = %self.stream, group = %self.group, %consumer, "reading redis stream");

        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Vec<String>>();
        let acker = tokio::spawn(acker(
            client.clone(),
            self.stream.clone(),
            self.group.clone(),
            self.delete_after_ack,
            ctx.metrics.clone(),
            ack_rx,
        ));
        let mut clock = Clock::default();
        // First our own pending entries (from before a restart), then new ones.
        let mut pending_cursor = Some("0".to_string());
        // Where the next `XAUTOCLAIM` goes on: claiming continues round
        // after round until no idle entry is left, then waits.
        let mut claim_cursor: Option<String> = None;
        let mut last_claim = tokio::time::Instant::now() - self.claim_idle;
        // Errors that are not a lost connection (the group deleted, a key of
        // another type): retried with backoff, logged once per kind.
        let mut failing: Option<String> = None;
        backoff.reset();
        while !shutdown.is_set() {
            let mut redelivered = false;
            let claiming = claim_cursor.is_some() || last_claim.elapsed() >= self.claim_idle / 2;
            let entries: redis::RedisResult<Vec<Entry>> = if let Some(cursor) =
                pending_cursor.clone()
            {
                redelivered = true;
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&self.group)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(&cursor)
                    .query_async::<Value>(&mut reader)
                    .await
                    .map(|v| read_reply(&v))
            } else if claiming {
                if claim_cursor.is_none() {
                    last_claim = tokio::time::Instant::now();
                    self.remove_idle_consumers(&mut reader, &consumer, &ctx)
                        .await;
                }
                redelivered = true;
                let from = claim_cursor.take().unwrap_or_else(|| "0-0".to_string());
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&consumer)
                    .arg(self.claim_idle.as_millis() as u64)
                    .arg(&from)
                    .arg("COUNT")
                    .arg(count)
                    .query_async::<Value>(&mut reader)
                    .await
                    .map(|v| {
                        let reply = array(&v);
                        claim_cursor = reply.first().and_then(text).filter(|next| next != "0-0");
                        reply.get(1).map(parse_entries).unwrap_or_default()
                    })
            } else {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(&self.group)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("BLOCK")
                    .arg(self.block.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&self.stream)
                    .arg(">");
                tokio::select! {
                    _ = shutdown.wait() => break,
                    r = cmd.query_async::<Value>(&mut reader) => r.map(|v| read_reply(&v)),
                }
            };
            let entries = match entries {
                Ok(e) => e,
                Err(e) if lost_connection(&e) => {
                    tracing::warn!(source = %ctx.name, error = %e, "redis read failed; reconnecting");
                    ctx.metrics
                        .set_down(Some(format!("redis read failed: {e}")));
                    match connect(&client, &ctx, "reader").await {
                        Some(c) => {
                            reader = c;
                            // A read whose reply was lost with the connection
                            // left entries pending for us: read those again.
                            pending_cursor = Some("0".to_string());
                            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
                            ctx.metrics.set_down(None);
                            tracing::info!(source = %ctx.name, "reconnected to redis");
                            continue;
                        }
                        None => break,
                    }
                }
                Err(e) => {
                    let kind = e.code().unwrap_or("error").to_string();
                    let reason = if kind == "NOGROUP" {
                        format!(
                            "the stream `{}` or its group `{}` is gone (deleted, or Redis restarted without persistence); recreating it at `{}`",
                            self.stream, self.group, self.start
                        )
                    } else {
                        format!("redis refused the read: {e}")
                    };
                    if failing.as_deref() != Some(kind.as_str()) {
                        tracing::warn!(source = %ctx.name, error = %e, "{reason}");
                        failing = Some(kind.clone());
                    }
                    ctx.metrics.set_down(Some(reason));
                    ComponentMetrics::add(&ctx.metrics.retries, 1);
                    if kind == "NOGROUP" {
                        match self.create_group(&mut reader).await {
                            Ok(()) => {
                                pending_cursor = Some("0".to_string());
                                claim_cursor = None;
                                tracing::info!(source = %ctx.name, stream = %self.stream, group = %self.group, start = %self.start, "consumer group recreated");
                                continue;
                            }
                            Err(e) => {
                                tracing::debug!(source = %ctx.name, error = %e, "recreating the group failed")
                            }
                        }
                    }
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            };
            if failing.take().is_some() {
                tracing::info!(source = %ctx.name, "reading again");
                ctx.metrics.set_down(None);
                backoff.reset();
            }
            if let Some(cursor) = &mut pending_cursor {
                match entries.last() {
                    Some(e) => *cursor = e.id.clone(),
                    None => pending_cursor = None,
                }
            }
            if entries.is_empty() {
                continue;
            }
            // Delivery counts of redelivered entries (new ones have one).
            let deliveries: HashMap<String, u64> = if redelivered {
                let first = &entries[0].id;
                let last = &entries[entries.len() - 1].id;
                let v: Value = redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(first)
                    .arg(last)
                    .arg(entries.len() * 2)
                    .query_async(&mut reader)
                    .await
                    .unwrap_or(Value::Nil);
                array(&v)
                    .iter()
                    .filter_map(|p| {
                        let p = array(p);
                        let id = text(p.first()?)?;
                        let n = match p.get(3)? {
                            Value::Int(n) => *n as u64,
                            other => text(other)?.parse().ok()?,
                        };
                        Some((id, n))
                    })
                    .collect()
            } else {
                HashMap::new()
            };
            self.deliver(&ctx, entries, &deliveries, &ack_tx, &mut clock)
                .await?;
        }
        drop(ack_tx);
        // Acks of batches still in the pipeline arrive as sinks write them.
        let _ = tokio::time::timeout(Duration::from_secs(60), acker).await;
        Ok(())
    }

    /// Remove the group's other consumers that have been idle longer than
    /// `remove_idle_consumers` with nothing pending: what crashed or moved
    /// processes leave behind. Entries pending to a consumer are never
    /// lost this way (those consumers are kept until claimed from).
    async fn remove_idle_consumers(
        &self,
        con: &mut MultiplexedConnection,
        me: &str,
        ctx: &SourceContext,
    ) {
        if self.remove_idle_consumers.is_zero() {
            return;
        }
        let Ok(v) = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.stream)
            .arg(&self.group)
            .query_async::<Value>(con)
            .await
        else {
            return;
        };
        let limit = self.remove_idle_consumers.as_millis() as i64;
        for c in consumers(&v) {
            if c.name == me || c.pending > 0 || c.idle_ms < limit {
                continue;
            }
            let removed: redis::RedisResult<i64> = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&c.name)
                .query_async(con)
                .await;
            if removed.is_ok() {
                tracing::info!(source = %ctx.name, group = %self.group, consumer = %c.name, idle_s = c.idle_ms / 1000, "removed an idle consumer with nothing pending");
            }
        }
    }

    /// Send entries on as one batch whose acknowledgement XACKs them;
    /// entries that cannot be events, or were delivered too often, go to
    /// the dead letters (and are acked once those are written).
    async fn deliver(
        &self,
        ctx: &SourceContext,
        entries: Vec<Entry>,
        deliveries: &HashMap<String, u64>,
        ack_tx: &mpsc::UnboundedSender<Vec<String>>,
        clock: &mut Clock,
    ) -> anyhow::Result<()> {
        let mut batch = Batch::with_capacity(entries.len(), entries.len() * 200);
        let mut ids = Vec::with_capacity(entries.len());
        let mut dead: Vec<(Vec<u8>, ErrorKind, String, String)> = Vec::new();
        for e in &entries {
            let n = deliveries.get(&e.id).copied().unwrap_or(1);
            let mut raw = Vec::new();
            let decoded = entry_event(
                e,
                &self.id_field,
                clock,
                self.timestamp.as_ref(),
                Some(&ctx.metrics),
                &mut raw,
            );
            if n > self.max_deliveries {
                let event = if decoded.is_ok() { raw } else { fields_json(e) };
                dead.push((
                    event,
                    ErrorKind::Decode,
                    format!(
                        "entry {} delivered {n} times (max_deliveries = {})",
                        e.id, self.max_deliveries
                    ),
                    e.id.clone(),
                ));
                continue;
            }
            match decoded {
                Ok(()) => {
                    batch.data.extend_from_slice(&raw);
                    batch.seal();
                    ids.push(e.id.clone());
                }
                Err(reason) => dead.push((
                    fields_json(e),
                    ErrorKind::Decode,
                    format!("entry {}: {reason}", e.id),
                    e.id.clone(),
                )),
            }
        }
        if !dead.is_empty() {
            let dead_ids: Vec<String> = dead.iter().map(|d| d.3.clone()).collect();
            let tx = ack_tx.clone();
            let ack = Ack::new(move |ok| {
                if ok {
                    let _ = tx.send(dead_ids);
                }
            });
            let letters: Vec<DeadLetter<'_>> = dead
                .iter()
                .map(|(event, kind, message, _)| DeadLetter {
                    event,
                    kind: *kind,
                    message: message.clone(),
                })
                .collect();
            ctx.dead.send(&ctx.metrics, &letters, &[ack]).await;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let tx = ack_tx.clone();
        batch.acks.push(Ack::new(move |ok| {
            // Not delivered: leave the entries pending; they will be read
            // again (after a restart, or claimed by another consumer).
            if ok {
                let _ = tx.send(ids);
            }
        }));
        let mut batcher = Batcher::new(ctx.batch);
        batcher.batch = batch;
        batcher.pushed();
        batcher.flush(ctx).await?;
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
        entry_event(e, "stream_id", &mut Clock::default(), None, None, &mut out).unwrap();
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
            None,
            None,
            &mut out
        )
        .is_err());
    }
}
