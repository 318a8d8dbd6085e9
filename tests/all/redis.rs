//! Redis Streams, against a real redis-server started on a free port.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{counts, read_json_lines, spawn_run, start, until};
use crate::CHAOS;

/// A redis-server of our own, with its data in a temporary folder (append
/// only file on, so that it can be stopped and started again).
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (`--requirepass`).
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// A server started with more arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisServer {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.up();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)start the server process and wait until it answers.
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed (scripts/setup-test-deps installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(c) = redis::Client::open(self.url()) {
                if let Ok(mut con) = c.get_connection() {
                    match redis::cmd("PING").query::<String>(&mut con) {
                        Ok(_) => return,
                        // Up, and asking for a password.
                        Err(e) if e.code() == Some("NOAUTH") => return,
                        Err(_) => {}
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start");
    }

    /// Stop the server (SIGKILL: as rude as a crash).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn con(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.down();
    }
}

/// XADD `n` entries `{"n": i}` (from `from`), pipelined.
async fn fill(con: &mut redis::aio::MultiplexedConnection, stream: &str, from: u64, n: u64) {
    let mut i = from;
    while i < from + n {
        let mut pipe = redis::pipe();
        for j in i..(i + 1000).min(from + n) {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("event")
                .arg(format!("{{\"n\":{j}}}"))
                .ignore();
        }
        pipe.query_async::<()>(con).await.unwrap();
        i += 1000;
    }
}

/// The group `workers` of the stream `logs`, from its start.
async fn create_group(con: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("logs")
        .arg("workers")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await
        .unwrap();
}

async fn pending(con: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> i64 {
    let v: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query_async(con)
        .await
        .unwrap();
    match v {
        redis::Value::Array(a) => match a.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => -1,
        },
        _ => -1,
    }
}

fn source(url: &str, extra: &str) -> String {
    format!(
        r#"[reload]
watch = false

[sources.q]
type = "redis"
url = "{url}"
stream = "logs"
group = "workers"
start = "0"
block = "100ms"
{extra}
"#
    )
}

/// The `n` of every complete line of a file (missing file: none). Polled
/// while a sink writes, the file may end inside a write in progress: that
/// line is read at the next poll, once whole.
fn ns(path: &Path) -> Vec<u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            let e: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"));
            e["n"].as_u64().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_entries_each_exactly_once_and_nothing_pending() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    fill(&mut con, "logs", 0, 100_000).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "")
        + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
    let (running, metrics) = start(d.path(), &toml).await;
    until("100,000 events written", 60, || {
        metrics.get("out").is_some_and(|s| s.events_out >= 100_000)
    })
    .await;
    let mut c2 = server.con().await;
    for _ in 0..100 {
        if pending(&mut c2, "logs", "workers").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pending(&mut c2, "logs", "workers").await,
        0,
        "every entry acknowledged"
    );
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = read_json_lines(&d.path().join("out.log"));
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["stream_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 100_000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100_000, "every entry ID exactly once");
    let mut n = ns(&d.path().join("out.log"));
    n.sort();
    assert_eq!(n, (0..100_000).collect::<Vec<_>>());
    assert_eq!(counts(&metrics, "q").events_in, 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_entry_is_dead_lettered_and_the_rest_flow() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    fill(&mut con, "logs", 0, 500).await;
    let _: String = redis::cmd("XADD")
        .arg("logs")
        .arg("*")
        .arg("event")
        .arg(r#"{"n":999,"chaos":"panic"}"#)
        .query_async(&mut con)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("logs")
        .arg("*")
        .arg("event")
        .arg("{not json")
        .query_async(&mut con)
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "")
        + &format!(
            "\n[transforms.chaos]\nplugin = {:?}\ninputs = [\"q\"]\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"chaos\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n",
            CHAOS
        );
    let (running, metrics) = start(d.path(), &toml).await;
    until("the clean entries", 30, || {
        metrics.get("out").is_some_and(|s| s.events_out >= 500)
    })
    .await;
    until("the dead letters", 30, || {
        metrics.get("dead").is_some_and(|s| s.events_out >= 2)
    })
    .await;
    let mut c2 = server.con().await;
    until("acks", 10, || true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pending(&mut c2, "logs", "workers").await, 0);
    running.shutdown().await;
    running.wait().await.unwrap();
    let dead = read_json_lines(&d.path().join("dead.log"));
    let kinds: Vec<&str> = dead
        .iter()
        .map(|d| d["error"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"trap") && kinds.contains(&"decode"),
        "{dead:?}"
    );
    assert_eq!(ns(&d.path().join("out.log")).len(), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_delivered_too_often_are_dead_lettered() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    create_group(&mut con).await;
    let id: String = redis::cmd("XADD")
        .arg("logs")
        .arg("*")
        .arg("event")
        .arg(r#"{"n":1}"#)
        .query_async(&mut con)
        .await
        .unwrap();
    // A crashed consumer took it many times and never acknowledged it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("ghost")
        .arg("STREAMS")
        .arg("logs")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    for _ in 0..6 {
        let _: redis::Value = redis::cmd("XCLAIM")
            .arg("logs")
            .arg("workers")
            .arg("ghost")
            .arg(0)
            .arg(&id)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    fill(&mut con, "logs", 2, 10).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "claim_idle = \"50ms\"\nmax_deliveries = 5")
        + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n";
    let (running, metrics) = start(d.path(), &toml).await;
    until("the dead letter", 30, || {
        metrics.get("dead").is_some_and(|s| s.events_out >= 1)
    })
    .await;
    until("the others", 30, || {
        metrics.get("out").is_some_and(|s| s.events_out >= 10)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pending(&mut con, "logs", "workers").await, 0);
    running.shutdown().await;
    running.wait().await.unwrap();
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_deliveries = 5"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["event"]["n"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_mid_run_loses_nothing() {
    let mut server = RedisServer::start();
    let mut con = server.con().await;
    fill(&mut con, "logs", 0, 20_000).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "")
        + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
    let (running, metrics) = start(d.path(), &toml).await;
    until("some progress", 30, || {
        metrics.get("out").is_some_and(|s| s.events_out > 0)
    })
    .await;
    server.down();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.up();
    let mut con = server.con().await;
    fill(&mut con, "logs", 20_000, 10_000).await;
    let out = d.path().join("out.log");
    until("every entry, after the restart", 60, || {
        let mut n = ns(&out);
        n.sort();
        n.dedup();
        n.len() == 30_000
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    assert!(
        counts(&metrics, "q").reconnects >= 1,
        "the reconnect is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_writes_a_stream_and_falls_back_to_a_file_while_redis_is_down() {
    let mut server = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[reload]
watch = false

[batch]
max_wait = "20ms"
max_events = 50

[sources.gen]
type = "generate"
count = 300
rate = 300.0
seed = 9

[sinks.q]
type = "redis"
url = "{}"
stream = "out"
maxlen = 100000
retry_for = "300ms"
fallback = "local"
inputs = ["gen"]

[sinks.local]
type = "file"
path = "fallback.log"
"#,
        server.url()
    );
    let (running, metrics) = start(d.path(), &toml).await;
    until("some writes", 30, || {
        metrics.get("q").is_some_and(|s| s.events_out > 0)
    })
    .await;
    server.down();
    let local = d.path().join("fallback.log");
    // At least one whole line (a write may be in progress while we look).
    until("the fallback", 30, || {
        std::fs::read_to_string(&local).is_ok_and(|t| t.contains('\n'))
    })
    .await;
    server.up();
    running.wait().await.unwrap();
    let fallen: Vec<serde_json::Value> = read_json_lines(&local);
    assert!(
        fallen
            .iter()
            .all(|e| e["_sluice_error"].as_str().unwrap().contains("cannot XADD")),
        "marked"
    );
    let mut con = server.con().await;
    let reply: redis::Value = redis::cmd("XRANGE")
        .arg("out")
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    let entries = sluice::source::redis::parse_entries(&reply);
    let mut seqs: Vec<u64> = entries
        .iter()
        .map(|e| {
            assert_eq!(e.fields[0].0, b"event");
            serde_json::from_slice::<serde_json::Value>(&e.fields[0].1).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .chain(fallen.iter().map(|e| e["seq"].as_u64().unwrap()))
        .collect();
    seqs.sort();
    let mut once = seqs.clone();
    once.dedup();
    assert_eq!(
        once,
        (1..=300).collect::<Vec<_>>(),
        "every event in the stream or the fallback"
    );
    // At least once: a batch Redis stored just before it was killed, whose
    // answer never came back, is in the fallback too; never more than the
    // one batch in flight at the kill (`max_events = 50`).
    let twice = seqs.len() - once.len();
    assert!(
        twice <= 50,
        "{twice} events both in the stream and the fallback"
    );
}

fn spawn(dir: &Path, name: &str, url: &str) -> Child {
    let toml = source(url, &format!("consumer = \"{name}\"\nclaim_idle = \"1s\""))
        + &format!("\n[sinks.out]\ntype = \"file\"\npath = \"{name}.log\"\ninputs = [\"q\"]\n");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    spawn_run(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_stream() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    let d = tempfile::tempdir().unwrap();
    let mut children: Vec<Child> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| spawn(d.path(), n, &server.url()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fill(&mut con, "logs", 0, 300_000).await;
    let files: Vec<PathBuf> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| d.path().join(format!("{n}.log")))
        .collect();
    until("300,000 events across the three", 120, || {
        files.iter().map(|f| ns(f).len()).sum::<usize>() >= 300_000
    })
    .await;
    for c in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().unwrap();
    }
    let per: Vec<usize> = files.iter().map(|f| ns(f).len()).collect();
    let mut all: Vec<u64> = files.iter().flat_map(|f| ns(f)).collect();
    all.sort();
    assert_eq!(
        all,
        (0..300_000).collect::<Vec<_>>(),
        "none lost, none duplicated"
    );
    assert!(
        per.iter().all(|&n| n > 0),
        "work spread across all three: {per:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_nothing() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    fill(&mut con, "logs", 0, 200_000).await;
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("w.log");
    // Kill at several points while draining; restart each time.
    for threshold in [20_000usize, 70_000, 130_000] {
        let mut child = spawn(d.path(), "w", &server.url());
        until("progress before the kill", 60, || {
            ns(&out).len() >= threshold
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut child = spawn(d.path(), "w", &server.url());
    until("every entry", 120, || {
        let mut n = ns(&out);
        n.sort();
        n.dedup();
        n.len() == 200_000
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let total = ns(&out).len();
    // Duplicates are what was in flight at a kill: written, not yet acked.
    println!(
        "kill -9 x3 on 200,000 entries: {} duplicates",
        total - 200_000
    );
    assert!(
        total - 200_000 < 3 * 20_000,
        "duplicates only of in-flight entries: {}",
        total - 200_000
    );
}

/// `sluice run` on `toml` in the background with warnings logged to a file.
fn spawn_logged(dir: &Path, toml: &str) -> (Child, PathBuf) {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    let log = dir.join("stderr.log");
    let child = crate::util::sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_and_group_are_recreated_without_a_hot_loop() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    fill(&mut con, "logs", 0, 100).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "")
        + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
    let (mut child, log) = spawn_logged(d.path(), &toml);
    let out = d.path().join("out.log");
    until("the first 100", 30, || ns(&out).len() >= 100).await;
    // The stream and its group disappear (DEL; a restart without persistence
    // is the same to the consumer), then the producer goes on.
    let _: i64 = redis::cmd("DEL")
        .arg("logs")
        .query_async(&mut con)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fill(&mut con, "logs", 100, 100).await;
    until("the next 100, after the group was recreated", 30, || {
        ns(&out).len() >= 200
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let mut n = ns(&out);
    n.sort();
    assert_eq!(n, (0..200).collect::<Vec<_>>());
    let stderr = std::fs::read_to_string(&log).unwrap();
    let warnings = stderr.lines().filter(|l| l.contains("WARN")).count();
    assert!(
        warnings <= 3,
        "logged once per state change, not per retry ({warnings} warnings):\n{stderr}"
    );
    assert!(stderr.contains("is gone"), "{stderr}");
}

async fn consumer_names(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let v: redis::Value = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("logs")
        .arg("workers")
        .query_async(con)
        .await
        .unwrap();
    sluice::source::redis::consumers(&v)
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_without_pending_entries_are_removed() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    create_group(&mut con).await;
    for ghost in ["ghost-1", "ghost-2"] {
        let _: i64 = redis::cmd("XGROUP")
            .arg("CREATECONSUMER")
            .arg("logs")
            .arg("workers")
            .arg(ghost)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(
        &server.url(),
        "claim_idle = \"1s\"\nremove_idle_consumers = \"1s\"",
    ) + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
    let (running, _metrics) = start(d.path(), &toml).await;
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice".into());
    let mine = format!("{host}-q");
    let mut names = Vec::new();
    for _ in 0..100 {
        names = consumer_names(&mut con).await;
        if names == [mine.clone()] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        names,
        [mine],
        "the ghosts removed; our stable name (host-source) kept"
    );
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_pending_entries_are_claimed_in_one_sweep() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    create_group(&mut con).await;
    fill(&mut con, "logs", 0, 60_000).await;
    // A consumer took 12,288 entries and died (kill -9) before acking them.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("crashed")
        .arg("COUNT")
        .arg(12_288)
        .arg("STREAMS")
        .arg("logs")
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pending(&mut con, "logs", "workers").await, 12_288);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let d = tempfile::tempdir().unwrap();
    let toml = source(&server.url(), "claim_idle = \"1s\"")
        + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
    let started = std::time::Instant::now();
    let (running, _metrics) = start(d.path(), &toml).await;
    let out = d.path().join("out.log");
    until("all 60,000", 60, || ns(&out).len() >= 60_000).await;
    let recovery = started.elapsed();
    println!("12,288 pending of a dead consumer + 47,712 new: all delivered in {recovery:?}");
    running.shutdown().await;
    running.wait().await.unwrap();
    let mut n = ns(&out);
    n.sort();
    assert_eq!(n, (0..60_000).collect::<Vec<_>>(), "each exactly once");
    // One round of 1,024 per half claim_idle took 6 s and more here; claiming
    // in a loop until nothing idle is left takes one sweep.
    assert!(
        recovery < Duration::from_secs(5),
        "recovery took {recovery:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_redis_is_known_down_batches_go_straight_to_the_fallback() {
    // Nothing listens there: every XADD fails at once.
    let port = crate::util::free_port();
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[reload]
watch = false

[batch]
max_events = 10
max_wait = "10ms"

[sources.gen]
type = "generate"
count = 60
seed = 3

[sinks.q]
type = "redis"
url = "redis://127.0.0.1:{port}/"
stream = "out"
retry_for = "1s"
fallback = "local"
inputs = ["gen"]

[sinks.local]
type = "file"
path = "fallback.log"
"#
    );
    let started = std::time::Instant::now();
    let (running, _metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let took = started.elapsed();
    let fallen = read_json_lines(&d.path().join("fallback.log"));
    assert_eq!(fallen.len(), 60, "every event in the fallback");
    assert!(fallen
        .iter()
        .all(|e| e["_sluice_error"].as_str().unwrap().contains("cannot XADD")));
    // Six batches: only the first waits `retry_for` (six would take 6 s).
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_password_is_a_clear_reason_retried_not_fatal() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    for (url, says) in [
        (server.url(), "NOAUTH"),
        (
            format!("redis://:wrong@127.0.0.1:{}/", server.port),
            "password",
        ),
    ] {
        let d = tempfile::tempdir().unwrap();
        let toml = source(&url, "")
            + "\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"q\"]\n";
        let (running, metrics) = start(d.path(), &toml).await;
        until("the reason in /health", 10, || {
            metrics
                .get("q")
                .and_then(|s| s.down)
                .is_some_and(|d| d.contains(says) && d.contains("url"))
        })
        .await;
        // Still running, retrying: not a fatal error.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(metrics.get("q").unwrap().retries >= 1);
        running.shutdown().await;
        running.wait().await.unwrap();
    }
}

/// The `context.n` of every complete JSON line of a file, and its text
/// messages (lines without `context`).
fn list_lines(path: &Path) -> (Vec<u64>, Vec<String>) {
    let (mut ns, mut texts) = (Vec::new(), Vec::new());
    for e in crate::util::whole_json_lines(path) {
        match e["context"]["n"].as_u64() {
            Some(n) => ns.push(n),
            None => texts.push(e["message"].as_str().unwrap().to_string()),
        }
    }
    (ns, texts)
}

/// A Redis list as Monolog's stock `RedisHandler` fills it (`RPUSH` of
/// `JsonFormatter` lines), with plain text values and one broken value:
/// read with `list = "monolog"` and `format = "json"`, sluice killed with
/// -9 three times while it drains 60,000 values. Every record arrives, the
/// text values and the broken one are in the dead letters with the reason,
/// the list and the processing list end empty, and duplicates are only what
/// was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_pushed_like_monologs_redis_handler_survives_kill_9() {
    let server = RedisServer::start();
    let mut con = server.con().await;
    const TOTAL: u64 = 60_000;
    let mut texts = 0;
    for chunk in 0..TOTAL / 1000 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            let value = if i % 1000 == 500 {
                texts += 1;
                format!("plain text line {i}")
            } else {
                format!(
                    r#"{{"message":"order {i} paid","context":{{"n":{i}}},"level":200,"level_name":"INFO","channel":"app","datetime":"2026-12-06T10:00:00.{:06}+01:00","extra":{{}}}}"#,
                    i % 1_000_000
                )
            };
            pipe.cmd("RPUSH").arg("monolog").arg(value).ignore();
        }
        pipe.query_async::<()>(&mut con).await.unwrap();
    }
    let _: i64 = redis::cmd("RPUSH")
        .arg("monolog")
        .arg("{\"message\": broken")
        .query_async(&mut con)
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"[reload]
watch = false

[sources.q]
type = "redis"
url = "{}"
list = "monolog"
format = "json"
consumer = "w1"
block = "100ms"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["q"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
        server.url()
    );
    let path = d.path().join("list.toml");
    std::fs::write(&path, toml).unwrap();
    let out = d.path().join("out.log");
    let run = || {
        crate::util::sluice()
            .args(["run", "--quiet"])
            .arg(&path)
            .current_dir(d.path())
            .spawn()
            .unwrap()
    };
    for threshold in [8_000usize, 25_000, 42_000] {
        let mut child = run();
        until("progress before the kill", 60, || {
            list_lines(&out).0.len() >= threshold
        })
        .await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut child = run();
    let json = TOTAL - texts;
    // The text values and the broken one, as the dead letters hold them.
    let dead_values = || -> Vec<String> {
        let mut v: Vec<String> = crate::util::whole_json_lines(&d.path().join("dead.log"))
            .iter()
            .map(|l| match &l["event"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    until("every value", 120, || {
        let (mut n, _) = list_lines(&out);
        n.sort();
        n.dedup();
        n.len() as u64 == json && dead_values().len() as u64 == texts + 1
    })
    .await;
    let mut left = (0, 0);
    for _ in 0..200 {
        let a: i64 = redis::cmd("LLEN")
            .arg("monolog")
            .query_async(&mut con)
            .await
            .unwrap();
        let b: i64 = redis::cmd("LLEN")
            .arg("{monolog}:processing:w1")
            .query_async(&mut con)
            .await
            .unwrap();
        left = (a, b);
        if left == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, (0, 0), "the list and the processing list are empty");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let (n, t) = list_lines(&out);
    assert!(
        t.is_empty(),
        "text values are not events with format = json: {t:?}"
    );
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert!(
        dead.iter().all(|l| l["error"]["kind"] == "decode"),
        "{dead:?}"
    );
    let values = dead_values();
    assert!(values.iter().any(|v| v.contains("broken")), "{values:?}");
    assert_eq!(
        values
            .iter()
            .filter(|v| v.starts_with("plain text line "))
            .count() as u64,
        texts
    );
    let duplicates = (n.len() + dead.len()) as u64 - (TOTAL + 1);
    println!("kill -9 x3 on a list of {TOTAL} values: {duplicates} duplicates");
    // At most `max_in_flight` (4 x count = 4,096 by default) values are
    // read and not yet removed at a kill, however slow the sinks are; one
    // BLMOVE may add one more.
    assert!(
        duplicates <= 3 * (4 * 1024 + 1),
        "duplicates only of what was in flight: {duplicates}"
    );
}
