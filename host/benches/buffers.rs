//! `just bench`: a sink's disk buffer against its memory buffer, in one
//! run. File -> file, 1,000,000 events of 200 bytes, no transform; the
//! same pipeline with `buffer = { type = "memory" }` (the default) and
//! with `buffer = { type = "disk" }` on the sink, taking turns for 5
//! rounds; prints each one's median events/s and MB/s and the ratio. With
//! the disk buffer every event is written and synced to the buffer, read
//! back and acknowledged before the file sink writes it.
//!
//! Environment: `SLUICE_BENCH_EVENTS` (default 1,000,000),
//! `SLUICE_BENCH_ROUNDS` (default 5).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

const EVENT: usize = 200;

fn run(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    dir: &Path,
    buffer: &str,
    n: u64,
) -> Duration {
    let _ = std::fs::remove_file(dir.join("out.log"));
    let _ = std::fs::remove_file(dir.join("checkpoint"));
    let _ = std::fs::remove_dir_all(dir.join("buf"));
    let toml = format!(
        r#"
[batch]
max_events = 1024
buffer = 16

[sources.app]
type = "file"
path = "input.log"
follow = false

[sinks.out]
type = "file"
path = "out.log"
inputs = ["app"]
buffer = {buffer}
"#
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    rt.block_on(async {
        let config = PipelineConfig::load(&path).unwrap();
        let plan = topology::plan(config, runtime.clone()).await.unwrap();
        let metrics = Registry::default();
        let started = Instant::now();
        let running = plan.start(metrics.clone()).unwrap();
        while metrics.get("out").map_or(0, |s| s.events_out) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        if buffer.contains("disk") {
            // Every event went through it.
            let b = metrics.get("out").unwrap().buffer.unwrap();
            assert!(b.bytes > 0, "the disk buffer was not used");
        }
        running.shutdown().await;
        running.wait().await.unwrap();
        if let Ok(f) = std::fs::File::open(dir.join("out.log")) {
            let _ = f.sync_all();
        }
        took
    })
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime =
        Arc::new(Runtime::new(Some(std::env::temp_dir().join("sluice-bench-cache"))).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut input = Vec::with_capacity(n * (EVENT + 1));
    for i in 0..n {
        let start = input.len();
        let _ = write!(input, "{{\"timestamp\":\"2026-12-06T10:00:00.000Z\",\"level\":\"info\",\"service\":\"orders\",\"message\":\"order {i:08} processed");
        while input.len() - start < EVENT - 2 {
            input.push(b'.');
        }
        input.extend_from_slice(b"\"}\n");
    }
    std::fs::write(dir.path().join("input.log"), &input).unwrap();
    let kinds = [
        ("memory", "{ type = \"memory\" }".to_string()),
        ("disk", "{ type = \"disk\", path = \"buf\" }".to_string()),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
    for _ in 0..rounds {
        for (i, (_, buffer)) in kinds.iter().enumerate() {
            times[i].push(run(&rt, &runtime, dir.path(), buffer, n as u64));
        }
    }
    println!(
        "buffers bench: {n} events of {EVENT} bytes, file -> file, {rounds} rounds (taking turns)"
    );
    println!("| sink buffer | time (median) | events/s | MB/s | vs memory |\n| --- | ---: | ---: | ---: | ---: |");
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect();
    for ((name, _), m) in kinds.iter().zip(&medians) {
        println!(
            "| {name} | {:.3} s | {:.0} | {:.1} | {:.2} |",
            m.as_secs_f64(),
            n as f64 / m.as_secs_f64(),
            input.len() as f64 / 1e6 / m.as_secs_f64(),
            medians[0].as_secs_f64() / m.as_secs_f64()
        );
    }
}
