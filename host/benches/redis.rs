//! `just bench` (Redis part), for issue #3: stream -> filter -> mask -> file
//! through sluice, against the raw ceiling of the same redis-server on the
//! same machine: XADD in pipelines of 1,000, and XREADGROUP (COUNT 1,000)
//! plus XACK in a tight loop. Needs `redis-server` on PATH.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

const N: u64 = 200_000;

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is needed for this benchmark");
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("redis://127.0.0.1:{port}/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let levels = ["info", "info", "debug", "warn", "error"];
        let base = con.clone();
        let fill = |stream: &'static str| {
            let mut con = base.clone();
            async move {
                let started = Instant::now();
                let mut i = 0;
                while i < N {
                    let mut pipe = redis::pipe();
                    for j in i..(i + 1000).min(N) {
                        let e = format!(
                            "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"{}\",\"service\":\"orders\",\"message\":\"order {j} by user{}@example.com\"}}",
                            levels[(j % 5) as usize],
                            j % 97
                        );
                        pipe.cmd("XADD").arg(stream).arg("*").arg("event").arg(e).ignore();
                    }
                    pipe.query_async::<()>(&mut con).await.unwrap();
                    i += 1000;
                }
                started.elapsed()
            }
        };
        let xadd = fill("raw").await;
        // Raw consumption: read 1,000 at a time and acknowledge them.
        let _: () = redis::cmd("XGROUP").arg("CREATE").arg("raw").arg("g").arg("0").query_async(&mut con).await.unwrap();
        let started = Instant::now();
        let mut read = 0u64;
        while read < N {
            let v: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP").arg("g").arg("c").arg("COUNT").arg(1000).arg("STREAMS").arg("raw").arg(">")
                .query_async(&mut con)
                .await
                .unwrap();
            let ids: Vec<String> = match &v {
                redis::Value::Array(streams) => streams
                    .iter()
                    .flat_map(|s| match s {
                        redis::Value::Array(parts) => sluice::source::redis::parse_entries(&parts[1]),
                        _ => Vec::new(),
                    })
                    .map(|e| e.id)
                    .collect(),
                _ => Vec::new(),
            };
            read += ids.len() as u64;
            let _: () = redis::cmd("XACK").arg("raw").arg("g").arg(&ids).query_async(&mut con).await.unwrap();
        }
        let raw_read = started.elapsed();

        fill("logs").await;
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"[reload]
watch = false

[sources.q]
type = "redis"
url = "{url}"
stream = "logs"
group = "workers"
start = "0"

[transforms.keep]
plugin = "filter"
inputs = ["q"]
config = {{ min_level = "warn" }}

[transforms.mask]
plugin = "mask"
inputs = ["keep"]
config = {{ detect = ["email"] }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["mask"]
"#
        );
        std::fs::write(dir.path().join("p.toml"), toml).unwrap();
        let runtime = Arc::new(Runtime::new(Some(std::env::temp_dir().join("sluice-bench-cache"))).unwrap());
        let plan = topology::plan(PipelineConfig::load(&dir.path().join("p.toml")).unwrap(), runtime).await.unwrap();
        let metrics = Registry::default();
        let started = Instant::now();
        let running = plan.start(metrics.clone()).unwrap();
        while metrics.get("keep").is_none_or(|s| s.events_in < N) || metrics.get("out").unwrap().events_out < N * 2 / 5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let sluice_time = started.elapsed();
        running.shutdown().await;
        running.wait().await.unwrap();
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!("\nsluice redis bench: {N} entries");
        println!("  raw XADD (pipelines of 1,000):        {:.0} entries/s", rate(xadd));
        println!("  raw XREADGROUP 1,000 + XACK:          {:.0} entries/s (the ceiling)", rate(raw_read));
        println!(
            "  sluice stream -> filter -> mask -> file: {:.0} events/s ({:.0} % of the ceiling)",
            rate(sluice_time),
            rate(sluice_time) / rate(raw_read) * 100.0
        );
    });
    let _ = server.kill();
    let _ = server.wait();
}
