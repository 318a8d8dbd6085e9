//! What several benches share.

use std::time::Duration;

/// CPU time this process has used (user + system), from /proc.
#[allow(dead_code)]
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// `SLUICE_BENCH_EVENTS`, or `default`.
#[allow(dead_code)]
pub fn event_count(default: usize) -> usize {
    std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A multi-threaded tokio runtime, and a plugin runtime whose compile cache
/// lasts the run (each plugin build compiles once; the folder goes with the
/// returned guard).
#[allow(dead_code)]
pub fn runtimes() -> (
    tokio::runtime::Runtime,
    std::sync::Arc<sluice::plugin::Runtime>,
    tempfile::TempDir,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = std::sync::Arc::new(
        sluice::plugin::Runtime::new(Some(cache.path().to_path_buf())).unwrap(),
    );
    (rt, runtime, cache)
}

/// Run the pipeline `toml` (written into `dir`) until its component
/// `sink` has sent `n` events; `during` runs on a thread meanwhile. The
/// time from the start (or, `listening`, from 100 ms after it, once its
/// listeners are bound) to the last event out.
#[allow(dead_code)]
#[allow(clippy::too_many_arguments)]
pub fn run_until(
    rt: &tokio::runtime::Runtime,
    runtime: &std::sync::Arc<sluice::plugin::Runtime>,
    dir: &std::path::Path,
    toml: &str,
    sink: &str,
    n: u64,
    listening: bool,
    during: impl FnOnce() + Send + 'static,
) -> Duration {
    let done = |m: &sluice::base::metrics::Registry| m.get(sink).map_or(0, |s| s.events_out) >= n;
    run_measured(rt, runtime, dir, toml, done, listening, during).0
}

/// Run `toml` from `dir` until the sink `out` has written `n` events: the
/// wall time, and the CPU time the process spent in it.
#[allow(dead_code)]
pub fn run_timed(
    rt: &tokio::runtime::Runtime,
    runtime: &std::sync::Arc<sluice::plugin::Runtime>,
    dir: &std::path::Path,
    toml: &str,
    n: u64,
) -> (Duration, Duration) {
    let done = |m: &sluice::base::metrics::Registry| m.get("out").map_or(0, |s| s.events_out) >= n;
    run_measured(rt, runtime, dir, toml, done, false, || {})
}

/// [`run_timed`] until `done` holds of the pipeline's metrics (a transform
/// that drops most events has taken all of its input, say).
#[allow(dead_code)]
pub fn run_timed_until(
    rt: &tokio::runtime::Runtime,
    runtime: &std::sync::Arc<sluice::plugin::Runtime>,
    dir: &std::path::Path,
    toml: &str,
    done: impl Fn(&sluice::base::metrics::Registry) -> bool,
) -> (Duration, Duration) {
    run_measured(rt, runtime, dir, toml, done, false, || {})
}

/// Run `toml` until `done` holds of its metrics: the wall time (from the
/// start, or with `listening` from 100 ms after it) and the CPU time the
/// process spent meanwhile.
fn run_measured(
    rt: &tokio::runtime::Runtime,
    runtime: &std::sync::Arc<sluice::plugin::Runtime>,
    dir: &std::path::Path,
    toml: &str,
    done: impl Fn(&sluice::base::metrics::Registry) -> bool,
    listening: bool,
    during: impl FnOnce() + Send + 'static,
) -> (Duration, Duration) {
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    rt.block_on(async {
        let config = sluice::config::PipelineConfig::load(&path).unwrap();
        let plan = sluice::topology::plan(config, runtime.clone())
            .await
            .unwrap();
        let metrics = sluice::base::metrics::Registry::default();
        let (started, cpu) = (std::time::Instant::now(), cpu_time());
        let running = plan.start(metrics.clone()).unwrap();
        let started = if listening {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::time::Instant::now()
        } else {
            started
        };
        let writer = std::thread::spawn(during);
        while !done(&metrics) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = (started.elapsed(), cpu_time() - cpu);
        writer.join().unwrap();
        running.shutdown().await;
        running.wait().await.unwrap();
        took
    })
}

/// The middle of some times (the upper middle of an even count).
#[allow(dead_code)]
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}
