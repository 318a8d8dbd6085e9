//! `just bench`: how soon a followed file's new line is read, and what an
//! idle source costs, with the files' folder watched (inotify, the
//! default) and polled (`poll = true`, every `poll_interval` = 250 ms, the
//! default interval and what every source did before watching).
//!
//! 1. Tail latency: one line appended to a followed file at a random
//!    moment 0-500 ms after the last was written (200 lines); the time from the append to the file sink having
//!    written it (source batches wait at most 1 ms). Prints p50, p99 and
//!    the worst.
//! 2. Idle: a source following 100 files that nobody writes to, for 10 s
//!    after it read them; prints the CPU time the process used, as a share
//!    of one core.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

mod common;
use common::cpu_time;

fn pipeline(dir: &Path, glob: &str, poll: bool) -> std::path::PathBuf {
    let extra = if poll { "poll = true\n" } else { "" };
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.logs]\ntype = \"file\"\npath = \"{glob}\"\nfollow = true\nformat = \"text\"\nbatch = {{ max_wait = \"1ms\" }}\n{extra}\n[sinks.out]\ntype = \"file\"\npath = \"out/out.log\"\ninputs = [\"logs\"]\n"
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(Runtime::new(None).unwrap());
    let lines: usize = std::env::var("SLUICE_BENCH_TAIL_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!(
        "tail latency: one line at a random moment 0-500 ms after the last, {lines} lines; time until the file sink wrote it"
    );
    let mut medians = Vec::new();
    for (name, poll) in [
        ("polled (poll_interval 250ms)", true),
        ("watched (inotify)", false),
    ] {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("app.log");
        std::fs::write(&log, "").unwrap();
        let path = pipeline(d.path(), "app.log", poll);
        let mut latencies = rt.block_on(async {
            let plan = topology::plan(PipelineConfig::load(&path).unwrap(), runtime.clone())
                .await
                .unwrap();
            let metrics = Registry::default();
            let running = plan.start(metrics.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut latencies = Vec::with_capacity(lines);
            for i in 0..lines {
                // Independent of the polls: any phase of the interval.
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..500))).await;
                let at = Instant::now();
                writeln!(f, "line {i}").unwrap();
                while metrics.get("out").map_or(0, |s| s.events_out) < i as u64 + 1 {
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                latencies.push(at.elapsed());
            }
            running.shutdown().await;
            running.wait().await.unwrap();
            latencies
        });
        latencies.sort();
        let p50 = percentile(&latencies, 0.5);
        medians.push(p50);
        println!(
            "  {name:<30} p50 {:7.2} ms  p99 {:7.2} ms  worst {:7.2} ms",
            ms(p50),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
    }
    println!(
        "  ratio of medians, polled / watched: {:.0}x",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );

    println!("idle: following 100 files nobody writes to, 10 s");
    for (name, poll) in [
        ("polled (poll_interval 250ms)", true),
        ("watched (inotify)", false),
    ] {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("logs")).unwrap();
        for i in 0..100 {
            std::fs::write(
                d.path().join(format!("logs/app-{i:03}.log")),
                format!("file {i} line 0\nfile {i} line 1\n"),
            )
            .unwrap();
        }
        let path = pipeline(d.path(), "logs/*.log", poll);
        let used = rt.block_on(async {
            let plan = topology::plan(PipelineConfig::load(&path).unwrap(), runtime.clone())
                .await
                .unwrap();
            let metrics = Registry::default();
            let running = plan.start(metrics.clone()).unwrap();
            while metrics.get("out").map_or(0, |s| s.events_out) < 200 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before = cpu_time();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let used = cpu_time() - before;
            running.shutdown().await;
            running.wait().await.unwrap();
            used
        });
        println!(
            "  {name:<30} {:6.0} ms of CPU in 10 s = {:5.2} % of a core",
            ms(used),
            used.as_secs_f64() / 10.0 * 100.0
        );
    }
}
