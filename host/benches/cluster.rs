//! `just bench` (Redis Cluster part), for issue #22: events/s from partitioned
//! streams on a real Redis Cluster (three masters, no replicas, on this
//! machine) into files, with 1, 2 and 3 `sluice run` workers sharing the
//! group, against one worker reading one stream of a single redis-server.
//!
//! Each run: the workers start on empty streams and settle (every one in
//! the membership set), then the bench writes N entries as fast as it can
//! (pipelines of 1,000 per partition, the partitions at once) and the clock
//! stops when the workers' files hold N lines. Workers, Redis and the
//! writer share the two cores. Needs `redis-server` and `redis-cli`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;

const N: u64 = 200_000;
const PARTITIONS: u32 = 16;

fn free_port() -> u16 {
    loop {
        let p = 20_000 + fastrand_port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        {
            return p;
        }
    }
}

/// A port offset from the clock's nanoseconds (no rand crate needed here).
fn fastrand_port() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (n % 30_000) as u16
}

fn redis_server(dir: &Path, port: u16, cluster: bool) -> Child {
    let d = dir.join(port.to_string());
    std::fs::create_dir_all(&d).unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&d);
    if cluster {
        cmd.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is needed for this benchmark");
    while !Command::new("redis-cli")
        .args(["-p", &port.to_string(), "ping"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A worker: `sluice run` of redis -> file, `NAME.log` in `dir`.
fn worker(dir: &Path, url: &str, stream: &str, partitions: bool, name: &str) -> Child {
    let parts = if partitions {
        format!("partitions = {PARTITIONS}\nmember_ttl = \"1s\"\n")
    } else {
        String::new()
    };
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.q]\ntype = \"redis\"\nurl = \"{url}\"\nstream = \"{stream}\"\n{parts}group = \"workers\"\nconsumer = \"{name}\"\nstart = \"0\"\n\n[sinks.out]\ntype = \"file\"\npath = \"{name}.log\"\ninputs = [\"q\"]\n"
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--quiet"])
        .arg(&path)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

/// Counts the lines of growing files, reading only what is new.
struct Lines {
    files: Vec<(PathBuf, u64)>,
    lines: u64,
}

impl Lines {
    fn poll(&mut self) -> u64 {
        let mut buf = Vec::new();
        for (path, at) in &mut self.files {
            let Ok(mut f) = std::fs::File::open(&*path) else {
                continue;
            };
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(*at)).unwrap();
            buf.clear();
            f.read_to_end(&mut buf).unwrap();
            *at += buf.len() as u64;
            self.lines += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.lines
    }
}

fn event(i: u64) -> String {
    format!(
        "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"info\",\"service\":\"svc{}\",\"message\":\"order {i} paid\",\"seq\":{i}}}",
        i % 64
    )
}

/// Write N entries over `streams` (round robin), pipelines of 1,000 per
/// stream, the streams at once.
async fn fill<C: ConnectionLike + Clone + Send + 'static>(con: &C, streams: &[String]) -> Duration {
    let started = Instant::now();
    let per = N / streams.len() as u64;
    let writes = streams.iter().enumerate().map(|(s, stream)| {
        let mut con = con.clone();
        let stream = stream.clone();
        let n = streams.len() as u64;
        async move {
            let mut i = 0;
            while i < per {
                let mut pipe = redis::pipe();
                for j in i..(i + 1000).min(per) {
                    let seq = j * n + s as u64;
                    pipe.cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("event")
                        .arg(event(seq))
                        .ignore();
                }
                pipe.query_async::<()>(&mut con).await.unwrap();
                i += 1000;
            }
        }
    });
    futures_util::future::join_all(writes).await;
    started.elapsed()
}

/// Until the group's membership set holds `n` members.
async fn settled<C: ConnectionLike + Send>(con: &mut C, key: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let live: usize = redis::cmd("ZCARD").arg(key).query_async(con).await.unwrap();
        if live >= n {
            break;
        }
        assert!(Instant::now() < deadline, "workers did not join");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One more beat (a third of member_ttl) so each sees all the others.
    tokio::time::sleep(Duration::from_millis(700)).await;
}

struct Run {
    fill: Duration,
    total: Duration,
}

async fn run<C: ConnectionLike + Clone + Send + 'static>(
    dir: &Path,
    url: &str,
    con: &C,
    stream: &str,
    workers: usize,
) -> Run {
    let partitioned = stream.contains("{N}");
    let names: Vec<String> = (1..=workers).map(|w| format!("w{w}")).collect();
    let mut children: Vec<Child> = names
        .iter()
        .map(|n| worker(dir, url, stream, partitioned, n))
        .collect();
    let streams: Vec<String> = if partitioned {
        (0..PARTITIONS)
            .map(|p| stream.replace("{N}", &format!("{{{p}}}")))
            .collect()
    } else {
        vec![stream.to_string()]
    };
    let mut c = con.clone();
    if partitioned {
        settled(&mut c, &format!("sluice:members:workers:{stream}"), workers).await;
    } else {
        // The group exists once the worker is reading.
        while redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&streams[0])
            .query_async::<redis::Value>(&mut c)
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut lines = Lines {
        files: names
            .iter()
            .map(|n| (dir.join(format!("{n}.log")), 0))
            .collect(),
        lines: 0,
    };
    let started = Instant::now();
    let fill = fill(con, &streams).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while lines.poll() < N - N % streams.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} delivered",
            lines.lines
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    for c in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
    for n in &names {
        let _ = std::fs::remove_file(dir.join(format!("{n}.log")));
    }
    Run { fill, total }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // One redis-server, one stream, one worker: the baseline.
    let port = free_port();
    let mut single = redis_server(dir.path(), port, false);
    let url = format!("redis://127.0.0.1:{port}/");
    let base = rt.block_on(async {
        let con = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let one = run(dir.path(), &url, &con, "logs", 1).await;
        let parts = run(dir.path(), &url, &con, "plogs:{N}", 1).await;
        (one, parts)
    });
    let _ = single.kill();
    let _ = single.wait();

    // Three masters.
    let mut ports = Vec::new();
    while ports.len() < 3 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let mut nodes: Vec<Child> = ports
        .iter()
        .map(|&p| redis_server(dir.path(), p, true))
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for p in &ports {
        while !String::from_utf8_lossy(
            &Command::new("redis-cli")
                .args(["-p", &p.to_string(), "cluster", "info"])
                .output()
                .unwrap()
                .stdout,
        )
        .contains("cluster_state:ok")
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let url = format!("redis+cluster://{}/", addrs.join(","));
    let runs = rt.block_on(async {
        let nodes: Vec<String> = addrs.iter().map(|a| format!("redis://{a}/")).collect();
        let con = redis::cluster::ClusterClient::new(nodes)
            .unwrap()
            .get_async_connection()
            .await
            .unwrap();
        let mut runs = Vec::new();
        for w in 1..=3 {
            runs.push(run(dir.path(), &url, &con, &format!("c{w}:{{N}}"), w).await);
        }
        runs
    });
    for n in &mut nodes {
        let _ = n.kill();
        let _ = n.wait();
    }

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    let one = rate(base.0.total);
    println!(
        "\nsluice cluster bench: {N} entries, redis -> file, workers are `sluice run` processes"
    );
    println!(
        "  what                                          write ev/s   end to end ev/s   ratio"
    );
    let row = |what: &str, r: &Run| {
        println!(
            "  {what:<46}{:>10.0}   {:>15.0}   {:>5.2}",
            rate(r.fill),
            rate(r.total),
            rate(r.total) / one
        )
    };
    row("single server, 1 stream, 1 worker", &base.0);
    row("single server, 16 partitions, 1 worker", &base.1);
    for (w, r) in runs.iter().enumerate() {
        row(
            &format!("cluster (3 masters), 16 partitions, {} worker(s)", w + 1),
            r,
        );
    }
}
