//! How the Redis source and sink reach Redis: one server, or a Redis
//! Cluster through the `redis` crate's cluster client (which follows
//! `MOVED`/`ASK`, refreshes the slot map and reconnects on its own), and
//! the partitioned stream names both sides agree on.
//!
//! A cluster is named by `redis+cluster://[user:password@]host:port,host:port/`
//! (any nodes of it: the client discovers the rest), or by `cluster = true`
//! next to a `redis://` URL of one node.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::base::redis";

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::metrics::ComponentMetrics;

/// Where the `{N}` of a partitioned stream name goes: `logs:{N}` is the
/// stream `logs:{0}`, `logs:{1}`, ..., each its own hash tag, so that a
/// partition's stream lives on one shard and pipelines to it stay in one slot.
pub const PARTITION: &str = "{N}";

/// The stream of partition `p` of `template`.
pub fn partition_stream(template: &str, p: u32) -> String {
    template.replace(PARTITION, &format!("{{{p}}}"))
}

/// The stream names of a source or sink: one, or one per partition.
pub fn streams(template: &str, partitions: Option<u32>) -> Vec<String> {
    match partitions {
        None => vec![template.to_string()],
        Some(n) => (0..n).map(|p| partition_stream(template, p)).collect(),
    }
}

/// Check `stream` and `partitions` together: a partitioned stream needs
/// `{N}` in its name, and `{N}` needs `partitions`. The error is the key to blame.
pub fn check_partitions(
    stream: &str,
    partitions: Option<u32>,
) -> Result<(), (&'static str, String)> {
    match (partitions, stream.contains(PARTITION)) {
        (Some(0), _) | (Some(100_001..), _) => Err((
            "partitions",
            "must be between 1 and 100000".to_string(),
        )),
        (Some(_), false) => Err((
            "stream",
            format!("`{stream}` has no `{{N}}`: with `partitions`, name the streams like \"logs:{{N}}\" (one stream and hash tag per partition)"),
        )),
        (None, true) => Err((
            "partitions",
            format!("`{stream}` names partitions with `{{N}}`: say how many (`partitions = 16`)"),
        )),
        _ => Ok(()),
    }
}

/// A stable hash of a partition key (FNV-1a, 64 bits): the same partition
/// for the same key in every process and every version.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// A Redis deployment: one server, or a cluster.
#[derive(Clone)]
pub enum Target {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// A multiplexed connection to either (cheap to clone; clones share it).
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// How many replicas the master that holds `key` has connected
    /// (`INFO replication`, asked of that master on a cluster).
    pub async fn replicas_of(&mut self, key: &str) -> redis::RedisResult<u32> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let v = match self {
            Conn::Single(c) => info.query_async::<Value>(c).await?,
            Conn::Cluster(c) => {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(c)
                    .await?;
                let to = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                c.route_command(&info, RoutingInfo::SingleNode(to)).await?
            }
        };
        let text: String = redis::from_redis_value(&v)?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }
}

/// The node URLs of `redis+cluster://[auth@]h1:p1,h2:p2[/]`, each as
/// `redis://[auth@]host:port/`; `None` if `url` does not name a cluster.
fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = match url.strip_prefix("rediss+cluster://") {
        Some(rest) => ("rediss", rest),
        None => ("redis", url.strip_prefix("redis+cluster://")?),
    };
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{auth}{h}/"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(
            "names no node: redis+cluster://host:port,host:port".to_string()
        ));
    }
    Some(Ok(nodes))
}

impl Target {
    /// The deployment `url` names (`cluster` makes a `redis://` URL a
    /// cluster's seed node). The error says what is wrong with the URL.
    pub fn open(url: &str, cluster: bool) -> Result<Target, String> {
        Self::open_tls(url, cluster, None)
    }

    /// The same, with the `tls` table of the component (paths resolved):
    /// `rediss://` (and `rediss+cluster://`) URLs then trust its `ca_file`
    /// and present its client certificate.
    pub fn open_tls(
        url: &str,
        cluster: bool,
        tls: Option<&crate::base::tls::ClientTls>,
    ) -> Result<Target, String> {
        let certs = match tls {
            None => None,
            Some(t) => {
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| format!("tls: cannot read {}: {e}", p.display()))
                };
                let client_tls = match (&t.cert_file, &t.key_file) {
                    (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
                        client_cert: read(c)?,
                        client_key: read(k)?,
                    }),
                    (None, None) => None,
                    _ => return Err("tls: cert_file and key_file go together".into()),
                };
                let root_cert = t.ca_file.as_deref().map(read).transpose()?;
                Some(redis::TlsCertificates {
                    client_tls,
                    root_cert,
                })
            }
        };
        let insecure = tls.is_some_and(|t| !t.verify);
        // `#insecure` is how the redis crate takes "any certificate".
        let with_mode = |u: &str| {
            if insecure && u.starts_with("rediss://") && !u.contains('#') {
                format!("{u}#insecure")
            } else {
                u.to_string()
            }
        };
        let open_one = |u: &str| match &certs {
            Some(c) => redis::Client::build_with_tls(with_mode(u), c.clone()),
            None => redis::Client::open(u),
        };
        let nodes = match cluster_nodes(url) {
            Some(nodes) => nodes?,
            None if cluster => url.split(',').map(|s| s.trim().to_string()).collect(),
            None => {
                return open_one(url)
                    .map(Target::Single)
                    .map_err(|e| format!("not a Redis URL: {e}"))
            }
        };
        for n in &nodes {
            open_one(n.as_str())
                .map_err(|e| format!("not a Redis URL ({}): {e}", without_auth(n)))?;
        }
        let nodes: Vec<String> = nodes.iter().map(|n| with_mode(n)).collect();
        let builder = ClusterClient::builder(nodes);
        let builder = match certs {
            Some(c) => builder.certs(c),
            None => builder,
        };
        // Fail over in seconds, not minutes: the crate's own retries wait up
        // to 655 s by default. Past these few tries the error reaches
        // sluice, which logs and counts it and retries with its backoff.
        builder
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(1_000)
            .connection_timeout(Duration::from_secs(2))
            .build()
            .map(Target::Cluster)
            .map_err(|e| format!("not a Redis Cluster URL: {e}"))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }

    /// A new multiplexed connection (to every master, for a cluster).
    pub async fn connect(&self) -> redis::RedisResult<Conn> {
        match self {
            Target::Single(c) => c.get_multiplexed_async_connection().await.map(Conn::Single),
            Target::Cluster(c) => c.get_async_connection().await.map(Conn::Cluster),
        }
    }

    /// Whether Redis answers a `PING` on a new connection, within a second.
    pub async fn ping(&self) -> bool {
        let attempt = async {
            let mut c = self.connect().await?;
            redis::cmd("PING").query_async::<String>(&mut c).await
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), attempt).await,
            Ok(Ok(_))
        )
    }
}

/// `url` with any password replaced by `***`, for logs.
pub fn without_auth(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The masters of a `CLUSTER SLOTS` reply: each slot range's first node,
/// as `host:port`, sorted and deduplicated.
pub fn masters(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = match v {
        Value::Array(ranges) => ranges
            .iter()
            .filter_map(|r| match r {
                Value::Array(parts) => match parts.get(2) {
                    Some(Value::Array(node)) => {
                        let host = match node.first()? {
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            Value::SimpleString(s) => s.clone(),
                            _ => return None,
                        };
                        let port = match node.get(1)? {
                            Value::Int(p) => *p,
                            _ => return None,
                        };
                        Some(format!("{host}:{port}"))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Watch a cluster's masters (every second, `CLUSTER SLOTS`) and log and
/// count each change: a failover, a resharding, a node added or removed.
/// The client follows them by itself; this is what an operator sees of it
/// (`sluice_redis_topology_changes_total`). Ends when `stop` is dropped.
pub async fn watch_topology(
    target: Target,
    component: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    if !target.is_cluster() {
        return;
    }
    let watch = async {
        let mut known: Vec<String> = Vec::new();
        let mut con: Option<Conn> = None;
        loop {
            if con.is_none() {
                con = target.connect().await.ok();
            }
            if let Some(c) = con.as_mut() {
                match redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(c)
                    .await
                {
                    Ok(v) => {
                        let now = masters(&v);
                        if !now.is_empty() && now != known {
                            if known.is_empty() {
                                tracing::info!(target: LOG_TARGET, component = %component, masters = ?now, "redis cluster");
                            } else {
                                tracing::warn!(target: LOG_TARGET, component = %component, before = ?known, after = ?now, "redis cluster masters changed (failover or resharding)");
                                metrics.topology_changes.fetch_add(1, Relaxed);
                            }
                            known = now;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: LOG_TARGET, component = %component, error = %e, "CLUSTER SLOTS failed");
                        con = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = watch => {}
        _ = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_carry_a_hash_tag() {
        assert_eq!(partition_stream("logs:{N}", 7), "logs:{7}");
        assert_eq!(
            streams("logs:{N}", Some(3)),
            ["logs:{0}", "logs:{1}", "logs:{2}"]
        );
        assert_eq!(streams("logs", None), ["logs"]);
        assert!(check_partitions("logs", Some(4)).is_err_and(|(k, _)| k == "stream"));
        assert!(check_partitions("logs:{N}", None).is_err_and(|(k, _)| k == "partitions"));
        assert!(check_partitions("logs:{N}", Some(0)).is_err());
        assert!(check_partitions("logs:{N}", Some(16)).is_ok());
        assert!(check_partitions("logs", None).is_ok());
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition_and_keys_spread() {
        assert_eq!(partition_of(b"api", 16), partition_of(b"api", 16));
        let mut seen = [0u32; 16];
        for i in 0..16_000 {
            seen[partition_of(format!("service-{i}").as_bytes(), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn cluster_urls_name_every_node_with_the_credentials() {
        let nodes = cluster_nodes("redis+cluster://:pw@a:7000,b:7001/")
            .unwrap()
            .unwrap();
        assert_eq!(nodes, ["redis://:pw@a:7000/", "redis://:pw@b:7001/"]);
        assert!(cluster_nodes("redis://a:1").is_none());
        assert!(cluster_nodes("redis+cluster:///").unwrap().is_err());
        assert!(
            Target::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", false)
                .unwrap()
                .is_cluster()
        );
        assert!(Target::open("redis://127.0.0.1:7000", true)
            .unwrap()
            .is_cluster());
        assert!(!Target::open("redis://127.0.0.1:7000", false)
            .unwrap()
            .is_cluster());
        assert!(Target::open("http://x", false).is_err());
        assert_eq!(without_auth("redis://:pw@a:1/"), "redis://***@a:1/");
    }

    #[test]
    fn masters_of_a_cluster_slots_reply() {
        let node = |p: i64| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node(7001),
                node(7004),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node(7000),
                node(7003),
            ]),
        ]);
        assert_eq!(masters(&reply), ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }
}
