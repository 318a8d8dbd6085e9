//! Redis Cluster: a real cluster of six `redis-server` processes (three
//! masters, three replicas) made by `redis-cli --cluster create`, partitioned
//! streams written by one sluice and read by several, a master killed with
//! `kill -9` mid-run and a worker killed mid-run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::until;

struct Node {
    port: u16,
    child: Option<Child>,
}

/// A Redis Cluster on loopback, torn down when dropped.
pub struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// A free port whose cluster bus port (+10000) is free too, both below the
/// kernel's ephemeral range: a port handed out by the kernel (another
/// test's `free_port`, a client's connection) could be taken between this
/// check and `redis-server`'s bind, as a cluster test once saw.
fn cluster_port(taken: &[u16]) -> u16 {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let top = ephemeral_low.saturating_sub(10_000).max(10_001);
    loop {
        let guess = 10_000 + fastrand::u16(..top - 10_000);
        if !taken.contains(&guess)
            && !taken.contains(&(guess + 10_000))
            && taken.iter().all(|t| t + 10_000 != guess)
            && std::net::TcpListener::bind(("127.0.0.1", guess)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", guess + 10_000)).is_ok()
        {
            return guess;
        }
    }
}

fn info(port: u16, section: &str) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", section])
        .output()
        .expect("redis-cli (scripts/setup-test-deps installs redis)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut ports = Vec::new();
        for _ in 0..6 {
            let p = cluster_port(&ports);
            ports.push(p);
        }
        let nodes: Vec<Node> = ports
            .iter()
            .map(|&port| {
                let d = dir.path().join(port.to_string());
                std::fs::create_dir_all(&d).unwrap();
                let child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&d)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("redis-server is needed (scripts/setup-test-deps installs it)");
                Node {
                    port,
                    child: Some(child),
                }
            })
            .collect();
        let cluster = Cluster { _dir: dir, nodes };
        for n in &cluster.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !info(n.port, "info").contains("cluster_enabled")
                && !String::from_utf8_lossy(
                    &Command::new("redis-cli")
                        .args(["-p", &n.port.to_string(), "ping"])
                        .output()
                        .unwrap()
                        .stdout,
                )
                .contains("PONG")
            {
                assert!(
                    Instant::now() < deadline,
                    "redis-server on {} did not start",
                    n.port
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok(&ports);
        cluster
    }

    /// Until every given node says the cluster is ok and knows its masters
    /// and replicas.
    fn wait_ok(&self, ports: &[u16]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &p in ports {
            while !info(p, "info").contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster not ok on {p}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The seed URL sluice is given (three of the six nodes).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..3]
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    fn live_port(&self) -> u16 {
        self.nodes.iter().find(|n| n.child.is_some()).unwrap().port
    }

    /// The port of the master that serves `key`.
    pub fn master_of(&self, key: &str) -> u16 {
        self.serving(key)
            .unwrap_or_else(|| panic!("no master serves {key}"))
    }

    /// The port of the master a live node sees serving `key`; `None` while
    /// that node sees the slot's master failed and no replica promoted yet
    /// (the moments of a failover).
    fn serving(&self, key: &str) -> Option<u16> {
        let slot: u16 = String::from_utf8_lossy(
            &Command::new("redis-cli")
                .args([
                    "-p",
                    &self.live_port().to_string(),
                    "cluster",
                    "keyslot",
                    key,
                ])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .parse()
        .unwrap();
        // `CLUSTER NODES`: id addr@bus flags master ping pong epoch state slots...
        for line in info(self.live_port(), "nodes").lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            for range in &f[8..] {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                    if (a..=b).contains(&slot) {
                        let port = f[1].split('@').next().unwrap().rsplit(':').next().unwrap();
                        return Some(port.parse().unwrap());
                    }
                }
            }
        }
        None
    }

    /// `kill -9` the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let n = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        let mut c = n.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Until the surviving nodes agree the cluster is ok again, a replica
    /// promoted in the killed master's place to serve `key`.
    pub fn wait_failover(&self, killed: u16, key: &str) {
        let live: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = live.iter().all(|&p| {
                info(p, "info").contains("cluster_state:ok")
                    && info(p, "nodes")
                        .lines()
                        .filter(|l| {
                            let flags = l.split_whitespace().nth(2).unwrap_or("");
                            flags.contains("master") && !flags.contains("fail")
                        })
                        .count()
                        == 3
            });
            // A node may flag the dead master between the look above and
            // this one: then nobody serves the slot yet, and we look again.
            if ok && self.serving(key).is_some_and(|p| p != killed) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no failover after killing {killed}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn con(&self) -> redis::cluster::ClusterConnection {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect();
        redis::cluster::ClusterClient::new(nodes)
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Entries pending in the group, in all and per consumer, over the
/// partitions of `logs:{N}`.
fn pending(
    con: &mut redis::cluster::ClusterConnection,
    partitions: u32,
) -> (i64, HashMap<String, i64>) {
    let mut total = 0;
    let mut per = HashMap::new();
    for p in 0..partitions {
        let v: redis::Value = redis::cmd("XPENDING")
            .arg(format!("logs:{{{p}}}"))
            .arg("workers")
            .query(con)
            .unwrap();
        let redis::Value::Array(a) = v else { continue };
        total += redis::from_redis_value::<i64>(&a[0]).unwrap_or(0);
        let Some(redis::Value::Array(consumers)) = a.get(3) else {
            continue;
        };
        for c in consumers {
            let (name, n): (String, i64) = redis::from_redis_value(c).unwrap();
            *per.entry(name).or_default() += n;
        }
    }
    (total, per)
}

/// Until nothing is pending in the group (at most `secs`); what is left.
async fn drained(
    con: &mut redis::cluster::ClusterConnection,
    secs: u64,
) -> (i64, HashMap<String, i64>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = pending(con, 16);
        if left.0 == 0 || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A producer: `count` generated events into `partitions` streams by
/// request id, each write confirmed by a replica.
fn producer(dir: &Path, url: &str, partitions: u32, count: u64, rate: Option<u64>) -> Child {
    let rate = rate.map(|r| format!("rate = {r}\n")).unwrap_or_default();
    let toml = format!(
        r#"[reload]
watch = false

[sources.gen]
type = "generate"
count = {count}
seed = 7
{rate}
[sinks.cluster]
type = "redis"
url = "{url}"
stream = "logs:{{N}}"
partitions = {partitions}
partition_by = "request_id"
replicas = 1
inputs = ["gen"]
"#
    );
    let path = dir.join("producer.toml");
    std::fs::write(&path, toml).unwrap();
    logged(dir, &path, "producer")
}

/// `sluice run` of `path`, its log in `dir/NAME.err`.
fn logged(dir: &Path, path: &Path, name: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.err"))).unwrap();
    crate::util::sluice()
        .args(["run", "--quiet"])
        .arg(path)
        .env("RUST_LOG", "warn,sluice=info")
        .current_dir(dir)
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Until every seq of 1..=total is in the files; on a timeout, what is
/// missing and what each process logged.
async fn all_delivered(cluster: &Cluster, dir: &Path, files: &[PathBuf], total: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (seen, _) = tally(&delivered(files));
        if seen.len() as u64 >= total {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = (1..=total)
                .filter(|s| seen.binary_search(s).is_err())
                .take(20)
                .collect();
            let mut logs = String::new();
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "err") {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    logs += &format!("--- {}\n", e.path().display());
                    logs += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                    logs += "\n";
                }
            }
            let mut con = cluster.con();
            for p in 0..16 {
                let key = format!("logs:{{{p}}}");
                let len: i64 = redis::cmd("XLEN").arg(&key).query(&mut con).unwrap_or(-1);
                let groups: redis::Value = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&key)
                    .query(&mut con)
                    .unwrap_or(redis::Value::Nil);
                logs += &format!("{key}: {len} entries, groups {groups:?}\n");
            }
            panic!(
                "{} of {total} delivered; missing {missing:?}...\n{logs}",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker of `group` reading every one of `partitions` into `NAME.log`
/// (or, with `stuck`, into an HTTP sink nobody answers: what it reads
/// stays pending).
fn worker(dir: &Path, url: &str, group: &str, partitions: u32, name: &str, stuck: bool) -> Child {
    let sink = if stuck {
        format!(
            "[sinks.out]\ntype = \"http\"\nuri = \"http://127.0.0.1:{}/\"\ninputs = [\"q\"]\n",
            crate::util::free_port()
        )
    } else {
        format!("[sinks.out]\ntype = \"file\"\npath = \"{name}.log\"\ninputs = [\"q\"]\n")
    };
    let toml = format!(
        r#"[reload]
watch = false

[sources.q]
type = "redis"
url = "{url}"
stream = "logs:{{N}}"
partitions = {partitions}
group = "{group}"
consumer = "{name}"
start = "0"
member_ttl = "2s"
claim_idle = "3s"

{sink}"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    logged(dir, &path, name)
}

/// The (request id, seq) of every complete line of the workers' files.
fn delivered(files: &[PathBuf]) -> Vec<Vec<(String, u64)>> {
    files
        .iter()
        .map(|f| {
            let Ok(text) = std::fs::read_to_string(f) else {
                return Vec::new();
            };
            let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            complete
                .lines()
                .map(|l| {
                    let e: serde_json::Value = serde_json::from_str(l).unwrap();
                    (
                        e["request_id"].as_str().unwrap().to_string(),
                        e["seq"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

fn stop(children: &mut [Child]) {
    for c in children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
}

/// Distinct seqs and duplicates over every file.
fn tally(per: &[Vec<(String, u64)>]) -> (Vec<u64>, usize) {
    let mut all: Vec<u64> = per.iter().flatten().map(|(_, s)| *s).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    let dups = n - all.len();
    (all, dups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_sixteen_partitions_each_event_exactly_once() {
    let cluster = Cluster::start();
    let d = tempfile::tempdir().unwrap();
    let names = ["w1", "w2", "w3"];
    let mut workers: Vec<Child> = names
        .iter()
        .map(|n| worker(d.path(), &cluster.url(), "workers", 16, n, false))
        .collect();
    // Let the three see each other before events flow: each partition has
    // one reader from the start, so per-service order holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut prod = producer(d.path(), &cluster.url(), 16, 300_000, None);
    let files: Vec<PathBuf> = names
        .iter()
        .map(|n| d.path().join(format!("{n}.log")))
        .collect();
    until("300,000 events across the three workers", 240, || {
        delivered(&files).iter().map(Vec::len).sum::<usize>() >= 300_000
    })
    .await;
    assert!(prod.wait().unwrap().success(), "the producer finished");
    let mut con = cluster.con();
    assert_eq!(drained(&mut con, 20).await.0, 0, "every entry acknowledged");
    stop(&mut workers);
    let per = delivered(&files);
    let (all, dups) = tally(&per);
    if dups > 0 {
        let mut seen: HashMap<u64, (usize, usize)> = HashMap::new();
        let mut shown = 0;
        for (w, events) in per.iter().enumerate() {
            for (i, (service, seq)) in events.iter().enumerate() {
                if let Some((w0, i0)) = seen.insert(*seq, (w, i)) {
                    if shown < 10 {
                        eprintln!(
                            "twice: seq {seq} ({service}) in {} line {i0} and {} line {i}",
                            names[w0], names[w]
                        );
                        shown += 1;
                    }
                }
            }
        }
    }
    assert_eq!(dups, 0, "no event twice");
    assert_eq!(all.len(), 300_000, "none lost");
    assert_eq!((all[0], all[all.len() - 1]), (1, 300_000));
    let counts: Vec<usize> = per.iter().map(Vec::len).collect();
    assert!(
        counts.iter().all(|&n| n > 0),
        "work spread over all three: {counts:?}"
    );
    // A request's events are in one partition, read by one worker: in order.
    let mut requests = 0;
    for (w, events) in per.iter().enumerate() {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (request, seq) in events {
            if let Some(prev) = last.insert(request, *seq) {
                assert!(prev < *seq, "{}: {request} {seq} after {prev}", names[w]);
            }
        }
        requests += last.len();
    }
    assert!(requests > 1000, "{requests} requests");
    // The sixteen streams are spread over the three shards.
    let mut masters: Vec<u16> = (0..16)
        .map(|p| cluster.master_of(&format!("logs:{{{p}}}")))
        .collect();
    masters.sort();
    masters.dedup();
    assert_eq!(masters.len(), 3, "partitions on every shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_loses_nothing() {
    let mut cluster = Cluster::start();
    let d = tempfile::tempdir().unwrap();
    let names = ["w1", "w2"];
    let mut workers: Vec<Child> = names
        .iter()
        .map(|n| worker(d.path(), &cluster.url(), "workers", 16, n, false))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = 60_000u64;
    let mut prod = producer(d.path(), &cluster.url(), 16, total, Some(10_000));
    let files: Vec<PathBuf> = names
        .iter()
        .map(|n| d.path().join(format!("{n}.log")))
        .collect();
    until("the run under way", 60, || {
        delivered(&files).iter().map(Vec::len).sum::<usize>() >= 10_000
    })
    .await;
    let victim = cluster.master_of("logs:{0}");
    cluster.kill(victim);
    let killed_at = Instant::now();
    cluster.wait_failover(victim, "logs:{0}");
    eprintln!(
        "master {victim} killed; replica promoted after {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    all_delivered(&cluster, d.path(), &files, total, 120).await;
    assert!(prod.wait().unwrap().success(), "the producer finished");
    let mut con = cluster.con();
    assert_eq!(
        drained(&mut con, 30).await.0,
        0,
        "every entry acknowledged in the end"
    );
    stop(&mut workers);
    let (all, dups) = tally(&delivered(&files));
    eprintln!(
        "a master killed mid-run: {} events, {dups} duplicates (at least once)",
        all.len()
    );
    assert_eq!(all, (1..=total).collect::<Vec<_>>(), "nothing lost");
    let logs: String = names
        .iter()
        .map(|n| std::fs::read_to_string(d.path().join(format!("{n}.err"))).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("redis cluster masters changed"),
        "the failover was logged: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_pending_entries_are_claimed_by_the_others() {
    let cluster = Cluster::start();
    let d = tempfile::tempdir().unwrap();
    let w1 = worker(d.path(), &cluster.url(), "workers", 16, "w1", false);
    let w2 = worker(d.path(), &cluster.url(), "workers", 16, "w2", false);
    // w3 reads its partitions but can never deliver: all it takes stays pending.
    let mut w3 = worker(d.path(), &cluster.url(), "workers", 16, "w3", true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let total = 30_000u64;
    let mut prod = producer(d.path(), &cluster.url(), 16, total, None);
    assert!(prod.wait().unwrap().success(), "the producer finished");
    let mut con = cluster.con();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pending(&mut con, 16).1.get("w3").is_none_or(|&n| n == 0) {
        assert!(Instant::now() < deadline, "w3 never read anything");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = w3.kill();
    let _ = w3.wait();
    let held = pending(&mut con, 16).1.get("w3").copied().unwrap_or(0);
    assert!(held > 0);
    let files: Vec<PathBuf> = ["w1", "w2"]
        .iter()
        .map(|n| d.path().join(format!("{n}.log")))
        .collect();
    all_delivered(&cluster, d.path(), &files, total, 120).await;
    let (left, per) = drained(&mut con, 30).await;
    assert_eq!(left, 0, "nothing left pending: {per:?}");
    stop(&mut [w1, w2]);
    let (all, dups) = tally(&delivered(&files));
    assert_eq!(dups, 0, "w3 wrote nothing, so nothing twice");
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    eprintln!("w3 held {held} entries when killed; the others claimed them");
}

/// Two workers started together, 20 times over one backlog of 16,000
/// events in 8 partitions (a new group each time, reading from the start):
/// each time both take their half at once, neither drains the backlog
/// alone, and every event is written exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_started_together_split_the_backlog_every_time() {
    let cluster = Cluster::start();
    let d = tempfile::tempdir().unwrap();
    const TOTAL: usize = 16_000;
    assert!(
        producer(d.path(), &cluster.url(), 8, TOTAL as u64, None)
            .wait()
            .unwrap()
            .success(),
        "the producer finished"
    );
    let mut splits = Vec::new();
    for round in 0..20 {
        let names = [format!("r{round}a"), format!("r{round}b")];
        let mut workers: Vec<Child> = names
            .iter()
            .map(|name| {
                worker(
                    d.path(),
                    &cluster.url(),
                    &format!("round{round}"),
                    8,
                    name,
                    false,
                )
            })
            .collect();
        let files: Vec<PathBuf> = names
            .iter()
            .map(|n| d.path().join(format!("{n}.log")))
            .collect();
        all_delivered(&cluster, d.path(), &files, TOTAL as u64, 60).await;
        stop(&mut workers);
        let per = delivered(&files);
        let (all, dups) = tally(&per);
        assert_eq!((all.len(), dups), (TOTAL, 0), "round {round}: exactly once");
        let counts: Vec<usize> = per.iter().map(Vec::len).collect();
        // Four partitions each: about half, whatever the timing.
        assert!(
            counts.iter().all(|&n| n * 10 >= TOTAL * 3),
            "round {round}: one worker drained the backlog nearly alone: {counts:?}"
        );
        splits.push(counts);
    }
    eprintln!("splits: {splits:?}");
}
