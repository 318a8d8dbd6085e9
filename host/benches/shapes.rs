//! `just bench`: passthrough (file -> file, no transform) of the shapes
//! users send, in one run, and a guard that fails when one shape is slow.
//!
//! Shapes, every line padded to about the same length (about 230 bytes,
//! so shapes are compared, not sizes): `timestamp` RFC 3339 first; pino
//! (`time` in milliseconds); Python logging (`created`, float seconds to
//! the microsecond); loguru `serialize=True` (`record.time.timestamp`,
//! nested); Monolog (`datetime` with microseconds and an offset); ECS
//! (`@timestamp`); no time field; plain text lines. Each is run `ROUNDS`
//! times, the shapes taking turns (a slow spell of the machine hits them
//! alike); the median of each, its events/s and MB/s, and its ratio to the
//! fastest shape's median are printed.
//!
//! Each run's wall time and CPU time (every thread, from getrusage) are
//! kept: on two cores the wall time depends on whether the source's and
//! the sink's tasks landed on one worker or two, which changes from run to
//! run; the CPU time is what the events cost, and is what the guard reads.
//!
//! With `SLUICE_SHAPES_GUARD=1` (what `./just test` runs): 200,000 events
//! per shape, 9 rounds, and the process exits 1 if any shape's least CPU
//! time (of its rounds: interference only adds, so the least is the
//! steadiest estimate of what the events cost) is more than
//! `SLUICE_SHAPES_MAX` (default 1.5) times the fastest shape's (ratios of
//! one run, so the machine's speed cancels out).
//! `./just test` sets it to 2 for now: the slow path of event times made
//! some shapes 7-12x slower and is caught; loguru is at about 1.6-1.9x
//! of plain text lines, the fastest shape since their decoding got
//! cheaper (see BENCHMARKS.md). Nine rounds, not five: with five, the
//! same build's slowest ratio read 1.63x in one run and 1.92x in the next.
//!
//! After the table, each shape's decoding alone (lines in memory to a
//! batch) in ns/event: where the shapes differ.
//!
//! Environment: `SLUICE_BENCH_EVENTS` (default 1,000,000; guard 200,000),
//! `SLUICE_BENCH_ROUNDS` (default 5; guard 9), `SLUICE_BENCH_ONLY="loguru;text"`
//! (only those shapes, for a profiler), `SLUICE_BENCH_DECODE_ONLY=1` (only
//! the decoding alone, to compare two builds of the scanner).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::event::Batch;
use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::source::{Format, LineDecoder};
use sluice::topology;

/// The line length every shape is padded to, about.
const LINE: usize = 230;

const LEVELS: [&str; 4] = ["debug", "info", "warning", "error"];

/// One line of `shape`, number `i`, without its newline.
fn line(shape: &str, i: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let level = LEVELS[i % 4];
    let secs = 1_796_474_732 + (i / 1000) as u64;
    let (ms, us) = ((i % 1000) as u64, (i * 7 % 1_000_000) as u64);
    // The message, padded at the end so the line is about LINE bytes.
    let msg = format!("order {i:08} processed by worker {}", i % 17);
    let pad = |out: &mut Vec<u8>, start: usize, tail: usize| {
        let used = out.len() - start + tail;
        for _ in used..LINE {
            out.push(b'.');
        }
    };
    match shape {
        "timestamp" => {
            let _ = write!(out, "{{\"timestamp\":\"2026-12-05T12:45:{:02}.{ms:03}Z\",\"level\":\"{level}\",\"service\":\"orders\",\"message\":\"{msg}", secs % 60);
            pad(out, start, 2);
            out.extend_from_slice(b"\"}");
        }
        "pino" => {
            let _ = write!(out, "{{\"level\":{},\"time\":{}{ms:03},\"pid\":4242,\"hostname\":\"web-1\",\"msg\":\"{msg}", 20 + 10 * (i % 4), secs);
            pad(out, start, 2);
            out.extend_from_slice(b"\"}");
        }
        "python" => {
            let _ = write!(out, "{{\"name\":\"orders\",\"levelname\":\"{}\",\"created\":{secs}.{us:06},\"lineno\":42,\"msg\":\"{msg}", level.to_uppercase());
            pad(out, start, 2);
            out.extend_from_slice(b"\"}");
        }
        "loguru" => {
            let _ = write!(out, "{{\"text\":\"{msg}\\n\",\"record\":{{\"level\":{{\"name\":\"{}\",\"no\":20}},\"message\":\"{msg}\",\"name\":\"orders\",\"time\":{{\"repr\":\"x\",\"timestamp\":{secs}.{us:06}}},\"extra\":{{\"p\":\"", level.to_uppercase());
            pad(out, start, 4);
            out.extend_from_slice(b"\"}}}");
        }
        "monolog" => {
            let _ = write!(out, "{{\"message\":\"{msg}\",\"context\":{{}},\"level\":200,\"level_name\":\"{}\",\"channel\":\"app\",\"datetime\":\"2026-12-05T13:45:{:02}.{us:06}+01:00\",\"extra\":{{\"p\":\"", level.to_uppercase(), secs % 60);
            pad(out, start, 3);
            out.extend_from_slice(b"\"}}");
        }
        "ecs" => {
            let _ = write!(out, "{{\"@timestamp\":\"2026-12-05T12:45:{:02}.{ms:03}Z\",\"log.level\":\"{level}\",\"service.name\":\"orders\",\"ecs.version\":\"1.6.0\",\"message\":\"{msg}", secs % 60);
            pad(out, start, 2);
            out.extend_from_slice(b"\"}");
        }
        "no time" => {
            let _ = write!(
                out,
                "{{\"level\":\"{level}\",\"service\":\"orders\",\"message\":\"{msg}"
            );
            pad(out, start, 2);
            out.extend_from_slice(b"\"}");
        }
        "text" => {
            let _ = write!(
                out,
                "2026-12-05 12:45:{:02},{ms:03} {} orders: {msg}",
                secs % 60,
                level.to_uppercase()
            );
            pad(out, start, 0);
        }
        other => panic!("no shape {other}"),
    }
}

const SHAPES: [&str; 8] = [
    "timestamp",
    "pino",
    "python",
    "loguru",
    "monolog",
    "ecs",
    "no time",
    "text",
];

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The CPU time (user and system, every thread) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One run's wall time and the CPU time it used (every thread: what the
/// events cost, however the two cores were shared between the source's
/// and the sink's tasks).
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

/// Pass `input` through file -> file until the sink has written `n`
/// events: the wall and CPU time.
fn run(rt: &tokio::runtime::Runtime, runtime: &Arc<Runtime>, dir: &Path, n: u64) -> Took {
    let _ = std::fs::remove_file(dir.join("out.log"));
    let _ = std::fs::remove_file(dir.join("checkpoint"));
    let toml = r#"
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
"#;
    let path = dir.join("bench.toml");
    std::fs::write(&path, toml).unwrap();
    rt.block_on(async {
        let config = PipelineConfig::load(&path).unwrap();
        let plan = topology::plan(config, runtime.clone()).await.unwrap();
        let metrics = Registry::default();
        let (started, cpu) = (Instant::now(), cpu_time());
        let running = plan.start(metrics.clone()).unwrap();
        while metrics.get("out").map_or(0, |s| s.events_out) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = Took {
            wall: started.elapsed(),
            cpu: cpu_time() - cpu,
        };
        running.shutdown().await;
        running.wait().await.unwrap();
        // Its pages on disk before the next run starts: writeback of this
        // run's output must not be timed in the next one's.
        if let Ok(f) = std::fs::File::open(dir.join("out.log")) {
            let _ = f.sync_all();
        }
        took
    })
}

/// Each shape's decoding alone (lines in memory to a batch: the JSON
/// check, the time read and written), in ns/event, best of `rounds`.
fn decoding_alone(shapes: &[&str], dirs: &[(tempfile::TempDir, usize)], rounds: usize, n: usize) {
    println!("decoding alone (ns/event, best of {rounds}):");
    for (shape, (dir, _)) in shapes.iter().zip(dirs) {
        let input = std::fs::read(dir.path().join("input.log")).unwrap();
        let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        let mut best = Duration::MAX;
        for _ in 0..rounds {
            let mut decoder = LineDecoder::new(Format::Auto, "app", Some("input.log"));
            let mut batch = Batch::with_capacity(1024, 1024 * 300);
            let started = Instant::now();
            for line in &lines {
                let _ = decoder.decode(line, &mut batch);
                if batch.len() == 1024 {
                    batch.data.clear();
                    batch.ends.clear();
                }
            }
            best = best.min(started.elapsed());
        }
        println!("  {shape}: {:.0}", best.as_nanos() as f64 / n as f64);
    }
}

fn main() {
    let guard = std::env::var_os("SLUICE_SHAPES_GUARD").is_some_and(|v| v == "1");
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if guard { 200_000 } else { 1_000_000 });
    let rounds: usize = std::env::var("SLUICE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if guard { 9 } else { 5 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = std::env::temp_dir().join("sluice-bench-cache");
    let runtime = Arc::new(Runtime::new(Some(cache)).unwrap());
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let shapes: Vec<&str> = SHAPES
        .iter()
        .copied()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|o| o.split(';').any(|o| o == *s))
        })
        .collect();
    // One folder per shape, its input written once.
    let dirs: Vec<(tempfile::TempDir, usize)> = shapes
        .iter()
        .map(|shape| {
            let dir = tempfile::tempdir().unwrap();
            let mut buf = Vec::with_capacity(n * (LINE + 1));
            for i in 0..n {
                line(shape, i, &mut buf);
                buf.push(b'\n');
            }
            std::fs::write(dir.path().join("input.log"), &buf).unwrap();
            (dir, buf.len())
        })
        .collect();
    if std::env::var_os("SLUICE_BENCH_DECODE_ONLY").is_some_and(|v| v == "1") {
        decoding_alone(&shapes, &dirs, rounds, n);
        return;
    }
    println!(
        "shapes bench: {n} events per shape, about {LINE} bytes each, {rounds} rounds (shapes taking turns), file -> file, no transform"
    );
    let mut times: Vec<Vec<Took>> = vec![Vec::new(); shapes.len()];
    for _ in 0..rounds {
        for (i, (dir, _)) in dirs.iter().enumerate() {
            times[i].push(run(&rt, &runtime, dir.path(), n as u64));
        }
    }
    let walls: Vec<Duration> = times
        .iter()
        .map(|t| median(t.iter().map(|t| t.wall).collect()))
        .collect();
    let cpus: Vec<Duration> = times
        .iter()
        .map(|t| median(t.iter().map(|t| t.cpu).collect()))
        .collect();
    // The least CPU time of each shape's rounds: what its events cost when
    // nothing else on the machine got in the way (interference only adds,
    // so the least is the steadiest estimate, and what the guard reads).
    let bests: Vec<Duration> = times
        .iter()
        .map(|t| t.iter().map(|t| t.cpu).min().unwrap())
        .collect();
    let (fastest_wall, fastest_cpu) = (*walls.iter().min().unwrap(), *cpus.iter().min().unwrap());
    let fastest_best = *bests.iter().min().unwrap();
    println!(
        "| shape | wall (median) | events/s | MB/s | ratio | CPU time (median) | ns/event | ratio | CPU (least) | ns/event | ratio |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let (mut worst_wall, mut worst_median, mut worst) = (0f64, 0f64, 0f64);
    for ((((shape, (_, bytes)), wall), cpu), best) in
        shapes.iter().zip(&dirs).zip(&walls).zip(&cpus).zip(&bests)
    {
        let wall_ratio = wall.as_secs_f64() / fastest_wall.as_secs_f64();
        let ratio = cpu.as_secs_f64() / fastest_cpu.as_secs_f64();
        let best_ratio = best.as_secs_f64() / fastest_best.as_secs_f64();
        worst_wall = worst_wall.max(wall_ratio);
        worst_median = worst_median.max(ratio);
        worst = worst.max(best_ratio);
        println!(
            "| {shape} | {:.3} s | {:.0} | {:.1} | {wall_ratio:.2}x | {:.3} s | {:.0} | {ratio:.2}x | {:.3} s | {:.0} | {best_ratio:.2}x |",
            wall.as_secs_f64(),
            n as f64 / wall.as_secs_f64(),
            *bytes as f64 / 1e6 / wall.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_nanos() as f64 / n as f64,
            best.as_secs_f64(),
            best.as_nanos() as f64 / n as f64,
        );
    }
    println!("slowest shape: {worst_wall:.2}x the fastest in wall time, {worst_median:.2}x in median CPU time, {worst:.2}x in least CPU time");
    // Where a shape's time goes: the source's decoding alone (lines in
    // memory to a batch: the JSON check, the time read and written), the
    // rest being reading, moving and writing, which every shape shares.
    decoding_alone(&shapes, &dirs, rounds, n);
    let max: f64 = std::env::var("SLUICE_SHAPES_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.5);
    if guard {
        let over = bests
            .iter()
            .filter(|m| m.as_secs_f64() / fastest_best.as_secs_f64() > max)
            .count();
        println!("guard: {} passed, {over} failed", cpus.len() - over);
    }
    if guard && worst > max {
        eprintln!(
            "shapes guard: a shape's passthrough costs {worst:.2}x the CPU time of the fastest's (least of each shape's rounds) (at most {max}x): an input shape has a slow path"
        );
        std::process::exit(1);
    }
}
