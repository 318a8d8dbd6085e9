//! The soak test: `just soak MINUTES` (not part of `./just test`).
//!
//! A real pipeline fed by three kinds of producer at once, an HTTP client
//! (`ack = "delivered"`, retrying with an `Idempotency-Key`), a Redis
//! Streams producer and an application writing a log file that is rotated
//! the logrotate way (rename, then create), while faults are injected:
//! `kill -9` of sluice and a restart, `kill -9` of Redis and a restart,
//! and hot swaps of the plugin every event goes through. At the end, a
//! ledger of every event a producer was told was taken (HTTP 200, `XADD`
//! answered, line written) is checked against the sink's file: lost must be
//! 0; duplicates (the price of at-least-once across a `kill -9`) are
//! counted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::redis::RedisServer;
use crate::util::{free_port, sluice};
use crate::{TAG, TAG_B};

/// Every event id a producer was told was taken.
type Ledger = Arc<Mutex<Vec<String>>>;

fn pipeline(http: u16, redis: &str) -> String {
    format!(
        r#"shutdown_timeout = "10s"

[reload]
watch = true
poll_interval = "200ms"

[batch]
max_wait = "50ms"

[sources.web]
type = "http"
address = "127.0.0.1:{http}"
ack = "delivered"
ack_timeout = "5s"

[sources.queue]
type = "redis"
url = "{redis}"
stream = "in"
group = "soak"
consumer = "soak"
start = "0"
block = "200ms"
claim_idle = "2s"

[sources.files]
type = "file"
path = "in/app.log*"
follow = true
format = "json"
checkpoint = "state/files.json"
poll_interval = "100ms"
rotate_wait = "3s"

[transforms.tag]
plugin = "tag.wasm"
inputs = ["web", "queue", "files"]

[sinks.out]
type = "file"
path = "out/all.log"
inputs = ["tag"]
"#
    )
}

fn start_sluice(dir: &Path) -> Child {
    sluice()
        .args(["run", "--quiet"])
        .arg(dir.join("pipeline.toml"))
        .env("RUST_LOG", "error")
        .stderr(std::fs::File::create(dir.join(format!("stderr-{}.log", now_ms()))).unwrap())
        .spawn()
        .unwrap()
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// POST `body` with `key`; the status, or 0 when the connection failed.
fn post(port: u16, key: &str, body: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let head = format!(
        "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body.as_bytes()))
        .is_err()
    {
        return 0;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    std::str::from_utf8(&out)
        .ok()
        .and_then(|t| t.get(9..12)?.parse().ok())
        .unwrap_or(0)
}

/// Batches of 10 events over HTTP, each retried until answered 200.
fn http_producer(port: u16, stop: Arc<AtomicBool>, ledger: Ledger) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = (n..n + 10).map(|i| format!("h-{i}")).collect();
        let body: String = ids
            .iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"message\":\"from http\"}}\n"))
            .collect();
        let key = format!("batch-{n}");
        loop {
            if post(port, &key, &body) == 200 {
                ledger.lock().unwrap().extend(ids);
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        n += 10;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One `XADD` per event, retried (on a new connection) until answered.
fn redis_producer(url: String, stop: Arc<AtomicBool>, ledger: Ledger) {
    let client = redis::Client::open(url).unwrap();
    let mut con = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("r-{n}");
        if con.is_none() {
            con = client
                .get_connection_with_timeout(Duration::from_secs(1))
                .ok();
        }
        let Some(c) = con.as_mut() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let added: redis::RedisResult<String> = redis::cmd("XADD")
            .arg("in")
            .arg("*")
            .arg("event")
            .arg(format!("{{\"id\":\"{id}\",\"message\":\"from redis\"}}"))
            .query(c);
        match added {
            Ok(_) => {
                ledger.lock().unwrap().push(id);
                n += 1;
                if n.is_multiple_of(20) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Err(_) => {
                con = None;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// An application logging to `in/app.log`, rotated by rename and create
/// every 2,000 lines (rotated files stay: the glob reads them to their end).
fn file_producer(dir: PathBuf, stop: Arc<AtomicBool>, ledger: Ledger, rotations: Arc<AtomicU64>) {
    let path = dir.join("app.log");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut ids = Vec::new();
        let mut text = String::new();
        for _ in 0..20 {
            let id = format!("f-{n}");
            text.push_str(&format!(
                "{{\"id\":\"{id}\",\"message\":\"from a file\"}}\n"
            ));
            ids.push(id);
            n += 1;
        }
        f.write_all(text.as_bytes()).unwrap();
        drop(f);
        ledger.lock().unwrap().extend(ids);
        if n.is_multiple_of(2000) {
            let k = rotations.fetch_add(1, Ordering::Relaxed) + 1;
            std::fs::rename(&path, dir.join(format!("app.log.{k}"))).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `id` of every line of the sink's file (a torn last line skipped).
fn output_ids(out: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some(v["id"].as_str()?.to_string())
        })
        .collect()
}

#[test]
#[ignore = "minutes long: `just soak MINUTES`"]
fn soak() {
    let minutes: u64 = std::env::var("SLUICE_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    for sub in ["in", "out", "state"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let mut redis = RedisServer::start();
    let http = free_port();
    std::fs::copy(TAG, d.join("tag.wasm")).unwrap();
    std::fs::write(d.join("pipeline.toml"), pipeline(http, &redis.url())).unwrap();

    let ledger: Ledger = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let rotations = Arc::new(AtomicU64::new(0));
    let mut child = start_sluice(&d);
    let producers = vec![
        std::thread::spawn({
            let (stop, ledger) = (stop.clone(), ledger.clone());
            move || http_producer(http, stop, ledger)
        }),
        std::thread::spawn({
            let (stop, ledger, url) = (stop.clone(), ledger.clone(), redis.url());
            move || redis_producer(url, stop, ledger)
        }),
        std::thread::spawn({
            let (stop, ledger, rot, dir) = (
                stop.clone(),
                ledger.clone(),
                rotations.clone(),
                d.join("in"),
            );
            move || file_producer(dir, stop, ledger, rot)
        }),
    ];

    let mut faults: HashMap<&str, u64> = HashMap::new();
    let mut peak_rss = 0u64;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    let mut next_sluice_kill = started + Duration::from_secs(8);
    let mut next_redis_kill = started + Duration::from_secs(20);
    let mut next_swap = started + Duration::from_secs(3);
    let mut swapped_to_b = false;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        peak_rss = peak_rss.max(rss_kib(child.id()));
        let now = Instant::now();
        if now >= next_sluice_kill {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            child = start_sluice(&d);
            *faults.entry("kill -9 sluice").or_default() += 1;
            next_sluice_kill = now + Duration::from_secs(6 + fastrand::u64(0..6));
        }
        if now >= next_redis_kill {
            redis.down();
            std::thread::sleep(Duration::from_millis(500));
            redis.up();
            *faults.entry("kill -9 redis").or_default() += 1;
            next_redis_kill = now + Duration::from_secs(15 + fastrand::u64(0..10));
        }
        if now >= next_swap {
            // Written aside and renamed in: the watcher never sees half a file.
            let tmp = d.join("tag.wasm.tmp");
            std::fs::copy(if swapped_to_b { TAG } else { TAG_B }, &tmp).unwrap();
            std::fs::rename(&tmp, d.join("tag.wasm")).unwrap();
            swapped_to_b = !swapped_to_b;
            *faults.entry("plugin swap").or_default() += 1;
            next_swap = now + Duration::from_secs(2 + fastrand::u64(0..3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    let produced: Vec<String> = ledger.lock().unwrap().clone();
    let wanted: std::collections::HashSet<&String> = produced.iter().collect();
    // Let the last events through, then stop cleanly.
    let out = d.join("out/all.log");
    let drain_until = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: std::collections::HashSet<String> = output_ids(&out).into_iter().collect();
        if wanted.iter().all(|id| seen.contains(*id)) || Instant::now() > drain_until {
            break;
        }
        peak_rss = peak_rss.max(rss_kib(child.id()));
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();

    let ids = output_ids(&out);
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let lost: Vec<&String> = produced
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .collect();
    let duplicated: u64 = counts.values().map(|&n| n - 1).sum();
    let by_source = |p: &str| produced.iter().filter(|id| id.starts_with(p)).count();
    println!("soak: {minutes} min, {} events produced ({} http, {} redis, {} file lines in {} rotations)",
        produced.len(), by_source("h-"), by_source("r-"), by_source("f-"), rotations.load(Ordering::Relaxed));
    let mut f: Vec<_> = faults.iter().collect();
    f.sort();
    println!("soak: faults {f:?}");
    println!(
        "soak: {} lines written, lost {}, duplicated {duplicated} ({:.3} %), peak RSS of sluice {} MiB",
        ids.len(),
        lost.len(),
        100.0 * duplicated as f64 / produced.len().max(1) as f64,
        peak_rss / 1024
    );
    assert!(
        lost.is_empty(),
        "lost {} events, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
