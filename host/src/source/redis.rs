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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub member_ttl: Duration,
    /// Where an event without `timestamp` has its time (see `base::timestamp`).
    #[serde(default)]
    pub timestamp: Option<crate::base::timestamp::TimestampRules>,
    /// The stream read through `group` (or give `list`).
    #[serde(default)]
    pub stream: String,
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
    times: &Candidates,
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
        // The time candidates caught in one pass over the body, as the
        // line sources do (no tree of the event is built).
        let mut caught = vec![None; times.heads.len()];
        let found = scan_object(&body, &times.heads, times.filter, &mut caught)
            .map(|_| times.find(&caught))
            .unwrap_or(Found::Absent);
        match found {
            Found::Time(t) => t.write(out),
            found => {
                if found == Found::Unparsable {
                    if let Some(m) = metrics {
                        crate::base::metrics::ComponentMetrics::add(&m.timestamps_unparsed, 1);
                    }
                }
                out.extend_from_slice(clock.now().as_bytes());
            }
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
pub(super) fn lost_connection(e: &redis::RedisError) -> bool {
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

/// Entries of one stream to acknowledge.
type Acked = (Arc<str>, Vec<String>);

/// The entries this process has sent into its pipeline and not yet
/// acknowledged, per stream: neither claimed nor re-read while there.
#[derive(Default)]
struct InFlight(std::sync::Mutex<HashMap<Arc<str>, std::collections::HashSet<String>>>);

impl InFlight {
    fn add(&self, stream: &Arc<str>, ids: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(stream.clone())
            .or_default()
            .extend(ids.iter().cloned());
    }

    fn remove(&self, stream: &str, ids: &[String]) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = m.get_mut(stream) {
            for id in ids {
                set.remove(id);
            }
        }
    }

    /// Drop from `items` those whose id (`None`: not this process's to
    /// check) is in flight on `stream`.
    fn retain_absent<T>(&self, stream: &str, items: &mut Vec<T>, id: impl Fn(&T) -> Option<&str>) {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = m.get(stream) {
            items.retain(|item| id(item).is_none_or(|id| !set.contains(id)));
        }
    }
}

/// Acknowledges entries as their events are delivered: what is waiting is
/// gathered, one pipeline per stream, the streams at once (on a cluster
/// each goes to its own shard); a stream whose ack failed is retried.
async fn acker(
    target: Target,
    group: String,
    delete: bool,
    metrics: Arc<ComponentMetrics>,
    in_flight: Arc<InFlight>,
    mut rx: mpsc::UnboundedReceiver<Acked>,
) {
    let mut con: Option<Conn> = None;
    while let Some((stream, ids)) = rx.recv().await {
        let mut todo: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        todo.entry(stream).or_default().extend(ids);
        while let Ok((stream, more)) = rx.try_recv() {
            todo.entry(stream).or_default().extend(more);
        }
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        while !todo.is_empty() {
            if con.is_none() {
                con = target.connect().await.ok();
            }
            if let Some(c) = con.as_ref() {
                let acks = todo.iter().map(|(stream, ids)| {
                    let mut pipe = redis::pipe();
                    pipe.cmd("XACK")
                        .arg(&**stream)
                        .arg(&group)
                        .arg(ids)
                        .ignore();
                    if delete {
                        pipe.cmd("XDEL").arg(&**stream).arg(ids).ignore();
                    }
                    let mut c = c.clone();
                    let stream = stream.clone();
                    async move { (stream, pipe.query_async::<()>(&mut c).await) }
                });
                let mut failed = false;
                for (stream, r) in futures_util::future::join_all(acks).await {
                    match r {
                        Ok(()) => {
                            if let Some(ids) = todo.remove(&stream) {
                                in_flight.remove(&stream, &ids);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, %stream, "XACK failed; retrying");
                            failed = true;
                        }
                    }
                }
                if !failed {
                    break;
                }
                con = None;
            }
            ComponentMetrics::add(&metrics.retries, 1);
            backoff.wait().await;
        }
    }
}

/// What every read of a source shares.
struct Io<'a> {
    target: &'a Target,
    ctx: &'a SourceContext,
    consumer: &'a str,
    count: usize,
    ack_tx: &'a mpsc::UnboundedSender<Acked>,
    in_flight: &'a Arc<InFlight>,
    /// Where an event without `timestamp` has its time, ready to be caught
    /// in the pass that checks it.
    times: &'a Candidates,
}

impl Io<'_> {
    /// The acknowledgement of entries sent into the pipeline, in flight
    /// until it fires: delivered, they are acked; not delivered, they stay
    /// pending, and are claimed again once idle for `claim_idle` (or read
    /// after a restart, or by another consumer once this one is gone).
    fn ack(&self, stream: &Arc<str>, ids: Vec<String>) -> Arc<Ack> {
        self.in_flight.add(stream, &ids);
        let tx = self.ack_tx.clone();
        let in_flight = self.in_flight.clone();
        let stream = stream.clone();
        Ack::new(move |ok| {
            if ok {
                let _ = tx.send((stream, ids));
            } else {
                in_flight.remove(&stream, &ids);
            }
        })
    }
}

/// The first and longest wait after a round of partition reads that found nothing.
const IDLE_FIRST: Duration = Duration::from_millis(5);
const IDLE_MAX: Duration = Duration::from_millis(100);
/// How often a partition just taken over checks what its former owner holds.
const TAKEOVER_CHECK: Duration = Duration::from_millis(200);

/// Where the reading of one stream stands.
struct Partition {
    stream: Arc<str>,
    /// Re-reading our own pending entries, from here.
    pending_cursor: Option<String>,
    /// Where the next claim round (`XPENDING ... IDLE`) goes on: claiming
    /// continues round after round until no idle entry is left, then waits.
    claim_cursor: Option<String>,
    last_claim: tokio::time::Instant,
    last_sweep: tokio::time::Instant,
    /// Errors that are not a lost connection (the group deleted, a key of
    /// another type): retried with backoff, logged once per kind.
    failing: Option<String>,
    /// Taken over from another process: new entries wait until what the
    /// others hold pending is acked or claimed.
    taking_over: bool,
}

impl Partition {
    fn new(stream: &str, claim_idle: Duration, taking_over: bool) -> Partition {
        let long_ago = tokio::time::Instant::now()
            .checked_sub(claim_idle)
            .unwrap_or_else(tokio::time::Instant::now);
        Partition {
            stream: stream.into(),
            pending_cursor: Some("0".to_string()),
            claim_cursor: None,
            last_claim: long_ago,
            last_sweep: long_ago,
            failing: None,
            taking_over,
        }
    }
}

/// The live processes of a partitioned group, in a sorted set scored by
/// the (Redis server's) time each last said it was alive.
struct Members {
    key: String,
    me: String,
    ttl: Duration,
}

/// How often a member looks at the group's epoch between heartbeats: a
/// twentieth of `member_ttl`, between 50 ms and 500 ms.
fn epoch_poll(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

impl Members {
    /// The counter bumped by every join and leave (`KEY:epoch`): a member
    /// that sees it move beats at once and takes its new share, instead of
    /// at its next heartbeat.
    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.key)
    }

    /// Add ourselves to the set (scored by the server's clock, in ms).
    async fn add(&self, con: &mut Conn) -> redis::RedisResult<i64> {
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(con).await?;
        let now = secs * 1000 + micros / 1000;
        let ttl = self.ttl.as_millis() as i64;
        redis::pipe()
            .cmd("ZADD")
            .arg(&self.key)
            .arg(now)
            .arg(&self.me)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now - 100 * ttl)
            .ignore()
            .query_async::<()>(con)
            .await?;
        Ok(now)
    }

    /// Tell the others the set changed (after changing it, so a member
    /// that reads the new epoch and then the set sees the change).
    async fn bump_epoch(&self, con: &mut Conn) -> redis::RedisResult<()> {
        redis::cmd("INCR")
            .arg(self.epoch_key())
            .query_async(con)
            .await
    }

    /// Announce a join: in the set, then the epoch moved.
    async fn join(&self, con: &mut Conn) -> redis::RedisResult<()> {
        self.add(con).await?;
        self.bump_epoch(con).await
    }

    async fn epoch(&self, con: &mut Conn) -> redis::RedisResult<i64> {
        let e: Option<i64> = redis::cmd("GET")
            .arg(self.epoch_key())
            .query_async(con)
            .await?;
        Ok(e.unwrap_or(0))
    }

    /// Say we are alive; the epoch read before the set, and the live
    /// members (silent less than `ttl`), sorted.
    async fn beat(&self, con: &mut Conn) -> redis::RedisResult<(i64, Vec<String>)> {
        let now = self.add(con).await?;
        let epoch = self.epoch(con).await?;
        let mut live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.key)
            .arg(now - self.ttl.as_millis() as i64)
            .arg("+inf")
            .query_async(con)
            .await?;
        live.sort();
        Ok((epoch, live))
    }

    /// Out of the set, then the epoch moved: the others take our
    /// partitions within one poll.
    async fn leave(&self, con: &mut Conn) -> redis::RedisResult<()> {
        redis::cmd("ZREM")
            .arg(&self.key)
            .arg(&self.me)
            .query_async::<()>(con)
            .await?;
        self.bump_epoch(con).await
    }
}

/// The live members as the last successful heartbeat saw them, and when.
type Live = Option<(tokio::time::Instant, Vec<String>)>;

/// Say this process is alive every third of `member_ttl`, on a task of its
/// own: a reader held back by a slow sink still beats, so the others never
/// take its partitions (and claim what it has in flight) while it works.
/// Between beats it looks at the group's epoch every [`epoch_poll`] and
/// beats at once when a member joined or left. It announces itself first
/// and takes partitions one poll later, so processes started together
/// split the partitions from their first read. Leaves the set on shutdown.
async fn heartbeat(
    members: Members,
    target: Target,
    mut con: Conn,
    ctx_name: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    live: tokio::sync::watch::Sender<Live>,
    mut shutdown: crate::base::output::Shutdown,
) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    let poll = epoch_poll(members.ttl);
    let mut joined = false;
    while !shutdown.is_set() {
        let step = if joined {
            members.beat(&mut con).await.map(Some)
        } else {
            members.join(&mut con).await.map(|()| None)
        };
        let wait = match step {
            Ok(None) => {
                // Announced: the others see the epoch move and give up
                // our share; the first beat, one poll later, takes it.
                backoff.reset();
                joined = true;
                poll
            }
            Ok(Some((epoch, now))) => {
                backoff.reset();
                live.send_replace(Some((tokio::time::Instant::now(), now)));
                // Until the next beat, or the epoch moving.
                let next = tokio::time::Instant::now() + members.ttl / 3;
                loop {
                    tokio::select! {
                        _ = shutdown.wait() => break,
                        _ = tokio::time::sleep_until(next.min(tokio::time::Instant::now() + poll)) => {}
                    }
                    if shutdown.is_set() || tokio::time::Instant::now() >= next {
                        break;
                    }
                    match members.epoch(&mut con).await {
                        Ok(e) if e != epoch => {
                            tracing::debug!(source = %ctx_name, "a member joined or left");
                            break;
                        }
                        Ok(_) => {}
                        // The beat says what is wrong.
                        Err(_) => break,
                    }
                }
                Duration::ZERO
            }
            Err(e) => {
                tracing::warn!(source = %ctx_name, error = %e, "cannot say this process is alive");
                ComponentMetrics::add(&metrics.retries, 1);
                if lost_connection(&e) {
                    if let Ok(c) = target.connect().await {
                        con = c;
                    }
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    // Leave at once: the others take the partitions without waiting for
    // `member_ttl` (what is in flight here is still acked).
    let _ = members.leave(&mut con).await;
}

/// The partitions (of `n`) that `me` owns among the sorted `live` members:
/// partition `p` is the `p % live.len()`-th member's.
fn owned_partitions(live: &[String], me: &str, n: usize) -> Vec<usize> {
    let Some(i) = live.iter().position(|m| m == me) else {
        return Vec::new();
    };
    (0..n).filter(|p| p % live.len() == i).collect()
}

/// The `(id, consumer)` of each row of an extended `XPENDING` reply.
fn pending_rows(v: &Value) -> Vec<(String, String)> {
    array(v)
        .iter()
        .filter_map(|row| {
            let row = array(row);
            Some((text(row.first()?)?, text(row.get(1)?)?))
        })
        .collect()
}

/// Entries of the group's other consumers still pending on `stream`.
async fn others_pending(
    con: &mut Conn,
    stream: &str,
    group: &str,
    me: &str,
) -> redis::RedisResult<i64> {
    let v: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await?;
    let per = array(&v).get(3).map(array).unwrap_or(&[]);
    Ok(per
        .iter()
        .filter_map(|c| {
            let c = array(c);
            let name = text(c.first()?)?;
            let n: i64 = text(c.get(1)?)?.parse().ok()?;
            (name != me).then_some(n)
        })
        .sum())
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
                tracing::warn!(source = %ctx.name, error = %e, "{reason}");
            }
            ctx.metrics.set_down(Some(reason));
            ComponentMetrics::add(&ctx.metrics.retries, 1);
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        };
        ctx.metrics.set_down(None);
        tracing::info!(source = %ctx.name, stream = %self.stream, partitions = self.partitions.unwrap_or(1), group = %self.group, %consumer, cluster = target.is_cluster(), "reading redis stream");

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
                        tracing::info!(source = %ctx.name, "reading again");
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

    /// Partitioned streams shared out among the group's live processes:
    /// rounds of reads of the partitions this one owns, all at once
    /// (without `BLOCK`: one connection serves them all), waiting a little
    /// longer after each empty round, up to 100 ms.
    async fn run_partitioned(
        &self,
        io: &Io<'_>,
        reader: &mut Conn,
        names: &[String],
    ) -> anyhow::Result<()> {
        let ctx = io.ctx;
        let mut shutdown = ctx.shutdown.clone();
        let members = Members {
            key: format!("sluice:members:{}:{}", self.group, self.stream),
            me: io.consumer.to_string(),
            ttl: self.member_ttl,
        };
        let (live_tx, mut live_rx) = tokio::sync::watch::channel::<Live>(None);
        let beats = tokio::spawn(heartbeat(
            members,
            io.target.clone(),
            reader.clone(),
            ctx.name.clone(),
            ctx.metrics.clone(),
            live_tx,
            ctx.shutdown.clone(),
        ));
        let mut owned: Vec<Partition> = Vec::new();
        let mut clock = Clock::default();
        let mut idle = IDLE_FIRST;
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let me = io.consumer;
        while !shutdown.is_set() {
            // Ours: what the last heartbeat says, if it is recent enough
            // that the others see us alive too; nothing otherwise.
            let live = live_rx.borrow_and_update().clone();
            let mine = match &live {
                Some((at, live)) if at.elapsed() < self.member_ttl => {
                    owned_partitions(live, me, names.len())
                }
                _ => Vec::new(),
            };
            let now: Vec<&str> = owned.iter().map(|p| &*p.stream).collect();
            let want: Vec<&str> = mine.iter().map(|&p| names[p].as_str()).collect();
            if now != want {
                let members = live.as_ref().map_or(0, |(_, l)| l.len());
                tracing::info!(source = %ctx.name, members, partitions = ?mine, "partitions of this process");
                let mut next = Vec::with_capacity(mine.len());
                for &p in &mine {
                    match owned.iter().position(|o| *o.stream == *names[p]) {
                        Some(i) => next.push(owned.swap_remove(i)),
                        // Taken over (at a start too: others may have had
                        // it): what they hold pending goes first.
                        None => next.push(Partition::new(&names[p], self.claim_idle, true)),
                    }
                }
                owned = next;
            }
            if owned.is_empty() {
                // No partitions (yet): wait for the next heartbeat.
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = live_rx.changed() => {}
                    _ = tokio::time::sleep(self.member_ttl / 3) => {}
                }
                continue;
            }
            let reads = owned.iter_mut().map(|part| {
                let mut c = reader.clone();
                async move { self.step(io, part, &mut c, None).await }
            });
            let results = futures_util::future::join_all(reads).await;
            let mut any = false;
            let mut lost = None;
            let mut read = Vec::new();
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(Some(got)) => {
                        any = true;
                        read.push((i, got));
                    }
                    Ok(None) => {}
                    Err(e) => lost = Some((i, e)),
                }
            }
            for (i, (entries, deliveries)) in read {
                if owned[i].failing.take().is_some() {
                    tracing::info!(source = %ctx.name, stream = %owned[i].stream, "reading again");
                    ctx.metrics.set_down(None);
                    backoff.reset();
                }
                let stream = owned[i].stream.clone();
                self.deliver(io, &stream, entries, &deliveries, &mut clock)
                    .await?;
            }
            if let Some((i, e)) = lost {
                if !self.recover(io, reader, &mut owned, i, e).await {
                    break;
                }
                any = false;
                idle = IDLE_MAX;
            }
            if any {
                idle = IDLE_FIRST;
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(IDLE_MAX);
        }
        let _ = beats.await;
        Ok(())
    }

    /// After a failed read of `parts[i]`: reconnect (all partitions re-read
    /// what they have pending), recreate a lost group, or note the error
    /// (retried with backoff, logged once per kind). False on shutdown.
    async fn recover(
        &self,
        io: &Io<'_>,
        reader: &mut Conn,
        parts: &mut [Partition],
        i: usize,
        e: redis::RedisError,
    ) -> bool {
        let ctx = io.ctx;
        if lost_connection(&e) {
            tracing::warn!(source = %ctx.name, error = %e, "redis read failed; reconnecting");
            ctx.metrics
                .set_down(Some(format!("redis read failed: {e}")));
            let Some(c) = connect(io.target, ctx, "reader").await else {
                return false;
            };
            *reader = c;
            // A read whose reply was lost with the connection left entries
            // pending for us: read those again.
            for p in parts.iter_mut() {
                p.pending_cursor = Some("0".to_string());
            }
            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
            ctx.metrics.set_down(None);
            tracing::info!(source = %ctx.name, "reconnected to redis");
            return true;
        }
        let part = &mut parts[i];
        let kind = e.code().unwrap_or("error").to_string();
        let reason = if kind == "NOGROUP" {
            format!(
                "the stream `{}` or its group `{}` is gone (deleted, or Redis restarted without persistence); recreating it at `{}`",
                part.stream, self.group, self.start
            )
        } else {
            format!("redis refused the read of {}: {e}", part.stream)
        };
        if part.failing.as_deref() != Some(kind.as_str()) {
            tracing::warn!(source = %ctx.name, error = %e, "{reason}");
            part.failing = Some(kind.clone());
        }
        ctx.metrics.set_down(Some(reason));
        ComponentMetrics::add(&ctx.metrics.retries, 1);
        if kind == "NOGROUP" {
            match self.create_group(reader, &part.stream).await {
                Ok(()) => {
                    part.pending_cursor = Some("0".to_string());
                    part.claim_cursor = None;
                    part.failing = None;
                    tracing::info!(source = %ctx.name, stream = %part.stream, group = %self.group, start = %self.start, "consumer group recreated");
                }
                Err(e) => {
                    tracing::debug!(source = %ctx.name, error = %e, "recreating the group failed")
                }
            }
        }
        true
    }

    /// One read of a stream: our own pending entries first (after a start
    /// or a reconnect), then a claim round when one is due, then, once
    /// nothing a former owner holds is left, new entries. `None`: nothing
    /// came. With the entries, how often each redelivered one was delivered.
    async fn step(
        &self,
        io: &Io<'_>,
        part: &mut Partition,
        con: &mut Conn,
        block: Option<Duration>,
    ) -> redis::RedisResult<Option<(Vec<Entry>, HashMap<String, u64>)>> {
        let consumer = io.consumer;
        let count = io.count;
        let stream = &*part.stream.clone();
        let claiming = part.claim_cursor.is_some()
            || part.last_claim.elapsed() >= self.claim_idle / 2
            || (part.taking_over && part.last_claim.elapsed() >= TAKEOVER_CHECK);
        let (entries, redelivered) = if let Some(cursor) = part.pending_cursor.clone() {
            let v = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(stream)
                .arg(&cursor)
                .query_async::<Value>(con)
                .await?;
            let mut entries = read_reply(&v);
            match entries.last() {
                Some(e) => part.pending_cursor = Some(e.id.clone()),
                None => part.pending_cursor = None,
            }
            // After a reconnect: what is still in our pipeline stays there.
            io.in_flight
                .retain_absent(stream, &mut entries, |e| Some(e.id.as_str()));
            if entries.is_empty() && part.pending_cursor.is_some() {
                // Go on with the next page of pending entries.
                return Ok(None);
            }
            (entries, true)
        } else if claiming {
            if part.claim_cursor.is_none() {
                part.last_claim = tokio::time::Instant::now();
                if part.last_sweep.elapsed() >= self.claim_idle / 2 {
                    part.last_sweep = tokio::time::Instant::now();
                    self.remove_idle_consumers(con, stream, consumer, io.ctx)
                        .await;
                }
            }
            let from = match part.claim_cursor.take() {
                Some(after) => format!("({after}"),
                None => "-".to_string(),
            };
            let idle = self.claim_idle.as_millis() as u64;
            let v = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&self.group)
                .arg("IDLE")
                .arg(idle)
                .arg(&from)
                .arg("+")
                .arg(count)
                .query_async::<Value>(con)
                .await?;
            let mut rows = pending_rows(&v);
            if rows.len() >= count {
                part.claim_cursor = rows.last().map(|r| r.0.clone());
            }
            // Other consumers' entries, and ours that are not in our
            // pipeline (idle there only because the sink is slow).
            io.in_flight
                .retain_absent(stream, &mut rows, |(id, owner)| {
                    (owner == consumer).then_some(id.as_str())
                });
            let theirs: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
            let entries = if theirs.is_empty() {
                Vec::new()
            } else {
                let v = redis::cmd("XCLAIM")
                    .arg(stream)
                    .arg(&self.group)
                    .arg(consumer)
                    .arg(idle)
                    .arg(&theirs)
                    .query_async::<Value>(con)
                    .await?;
                parse_entries(&v)
            };
            ComponentMetrics::add(&io.ctx.metrics.claimed, entries.len());
            (entries, true)
        } else if part.taking_over && others_pending(con, stream, &self.group, consumer).await? > 0
        {
            // A former owner still holds entries: they are acked as its
            // sinks write them, or claimed here once idle; new ones wait.
            return Ok(None);
        } else {
            if part.taking_over {
                part.taking_over = false;
                tracing::debug!(source = %io.ctx.name, %stream, "taken over; reading new entries");
            }
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(&self.group)
                .arg(consumer)
                .arg("COUNT")
                .arg(count);
            if let Some(block) = block {
                cmd.arg("BLOCK").arg(block.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(stream).arg(">");
            (read_reply(&cmd.query_async::<Value>(con).await?), false)
        };
        if entries.is_empty() {
            return Ok(None);
        }
        // Delivery counts of redelivered entries (new ones have one).
        let deliveries: HashMap<String, u64> = if redelivered {
            let first = &entries[0].id;
            let last = &entries[entries.len() - 1].id;
            let v: Value = redis::cmd("XPENDING")
                .arg(stream)
                .arg(&self.group)
                .arg(first)
                .arg(last)
                .arg(entries.len() * 2)
                .query_async(con)
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
        Ok(Some((entries, deliveries)))
    }

    /// Remove the group's other consumers that have been idle longer than
    /// `remove_idle_consumers` with nothing pending: what crashed or moved
    /// processes leave behind. Entries pending to a consumer are never
    /// lost this way (those consumers are kept until claimed from).
    async fn remove_idle_consumers(
        &self,
        con: &mut Conn,
        stream: &str,
        me: &str,
        ctx: &SourceContext,
    ) {
        if self.remove_idle_consumers.is_zero() {
            return;
        }
        let Ok(v) = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(stream)
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
                .arg(stream)
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
        io: &Io<'_>,
        stream: &Arc<str>,
        entries: Vec<Entry>,
        deliveries: &HashMap<String, u64>,
        clock: &mut Clock,
    ) -> anyhow::Result<()> {
        let ctx = io.ctx;
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
                io.times,
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
            let ack = io.ack(stream, dead_ids);
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
        batch.acks.push(io.ack(stream, ids));
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
