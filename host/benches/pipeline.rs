//! `just bench`: end-to-end throughput and per-plugin call cost.
//!
//! 1. End to end: 1,000,000 generated ~150-byte JSON events in a file ->
//!    filter(min_level = warn) -> mask(emails) -> route(by level) -> file.
//!    Prints events/s and MB/s (of input).
//! 2. Per plugin: the cost per event of one `process` call over a batch of
//!    1024 events, through the wasm component versus the same plugin logic
//!    compiled natively (the plugin crates are also rlibs); the difference
//!    bounds the boundary overhead (copies in and out, the call itself, and
//!    wasm code being slower than native code).
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the event count.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::event::Batch;
use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::{bundled, PluginLimits, Runtime};
use sluice::topology;
use sluice_plugin::{process_batch, Config, Plugin};

const LEVELS: [&str; 10] = [
    "info", "info", "info", "info", "debug", "debug", "warn", "warn", "error", "info",
];
const SERVICES: [&str; 5] = ["orders", "payments", "auth", "webhook", "search"];

/// One ~150-byte event; one in four mentions an email address.
fn event(i: usize, out: &mut Vec<u8>) {
    let level = LEVELS[i % LEVELS.len()];
    let service = SERVICES[i % SERVICES.len()];
    let message = if i.is_multiple_of(4) {
        format!("order {i:08} created by user{}@example.com", i % 9973)
    } else {
        format!(
            "order {i:08} processed in {} ms by worker {}",
            i % 997,
            i % 17
        )
    };
    let _ = write!(
        out,
        "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"{level}\",\"service\":\"{service}\",\"message\":\"{message}\"}}"
    );
}

fn write_input(path: &Path, n: usize) -> usize {
    let mut buf = Vec::with_capacity(n * 160);
    for i in 0..n {
        event(i, &mut buf);
        buf.push(b'\n');
    }
    std::fs::write(path, &buf).unwrap();
    buf.len()
}

fn batch_of(n: usize, offset: usize) -> Batch {
    let mut b = Batch::with_capacity(n, n * 160);
    for i in 0..n {
        event(offset + i, &mut b.data);
        b.seal();
    }
    b
}

/// Nanoseconds per event of `f` over `batch`, best of several rounds.
fn per_event(batch: &Batch, mut f: impl FnMut(&Batch)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..7 {
        let rounds = 200;
        let started = Instant::now();
        for _ in 0..rounds {
            f(batch);
        }
        let ns = started.elapsed().as_nanos() as f64 / (rounds * batch.len()) as f64;
        best = best.min(ns);
    }
    best
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.log");
    let bytes = write_input(&input, n);
    println!(
        "sluice bench: {n} events, {:.1} MB, {:.0} bytes/event",
        bytes as f64 / 1e6,
        bytes as f64 / n as f64
    );

    let cache = std::env::temp_dir().join("sluice-bench-cache");
    let runtime = Arc::new(Runtime::new(Some(cache)).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // --- end to end -------------------------------------------------------
    let pipeline = r#"
[batch]
max_events = 1024
buffer = 16

[sources.app]
type = "file"
path = "input.log"

[transforms.keep]
plugin = "filter"
inputs = ["app"]
config = { min_level = "warn" }

[transforms.mask]
plugin = "mask"
inputs = ["keep"]
config = { detect = ["email"] }

[transforms.router]
plugin = "route"
inputs = ["mask"]
config = { field = "level", routes = { errors = ["error", "fatal"] } }

[sinks.errors]
type = "file"
path = "errors.log"
inputs = ["router.errors"]

[sinks.rest]
type = "file"
path = "rest.log"
inputs = ["router"]
"#;
    let pipeline_path = dir.path().join("bench.toml");
    std::fs::write(&pipeline_path, pipeline).unwrap();
    // One run of the pipeline: optionally with metrics off, or with a tap
    // attached that never reads.
    let run_once = |metrics_on: bool, slow_tap: bool| -> Duration {
        let _ = std::fs::remove_file(dir.path().join("errors.log"));
        let _ = std::fs::remove_file(dir.path().join("rest.log"));
        sluice::base::metrics::set_enabled(metrics_on);
        let elapsed = rt.block_on(async {
            let config = PipelineConfig::load(&pipeline_path).unwrap();
            let plan = topology::plan(config, runtime.clone()).await.unwrap();
            let metrics = Registry::default();
            let started = Instant::now();
            let running = plan.start(metrics.clone()).unwrap();
            let keep = metrics.find("keep").unwrap();
            let _tap = slow_tap.then(|| keep.tap.subscribe());
            running.wait().await.unwrap();
            let elapsed = started.elapsed();
            if metrics_on {
                let written = metrics.get("errors").unwrap().events_out
                    + metrics.get("rest").unwrap().events_out;
                assert_eq!(metrics.get("app").unwrap().events_in, n as u64);
                assert_eq!(written, metrics.get("keep").unwrap().events_out);
            }
            elapsed
        });
        sluice::base::metrics::set_enabled(true);
        elapsed
    };
    let best_of = |metrics_on: bool, slow_tap: bool, label: &str| -> Duration {
        let mut best = Duration::MAX;
        for run in 0..3 {
            let elapsed = run_once(metrics_on, slow_tap);
            if label.is_empty() {
                println!(
                    "  run {run}: {:.3} s, {:.0} events/s, {:.1} MB/s",
                    elapsed.as_secs_f64(),
                    n as f64 / elapsed.as_secs_f64(),
                    bytes as f64 / 1e6 / elapsed.as_secs_f64()
                );
            }
            best = best.min(elapsed);
        }
        best
    };
    let best = best_of(true, false, "");
    println!(
        "end to end (file -> filter -> mask -> route -> file), best of 3: {:.0} events/s, {:.1} MB/s",
        n as f64 / best.as_secs_f64(),
        bytes as f64 / 1e6 / best.as_secs_f64()
    );
    let off = best_of(false, false, "metrics off");
    println!(
        "  with metrics off: {:.0} events/s (metrics cost {:+.1} %)",
        n as f64 / off.as_secs_f64(),
        (best.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0
    );
    let tapped = best_of(true, true, "slow tap");
    println!(
        "  with a tap on `keep` that never reads: {:.0} events/s ({:+.1} % time)",
        n as f64 / tapped.as_secs_f64(),
        (tapped.as_secs_f64() / best.as_secs_f64() - 1.0) * 100.0
    );

    // --- per plugin call ---------------------------------------------------
    let batch = batch_of(1024, 0);
    println!("\nper event, batch of 1024 (best of 7 x 200 calls):");
    println!(
        "  {:<28} {:>10} {:>10} {:>12}",
        "plugin", "wasm ns", "native ns", "difference"
    );
    let cases: [(&str, &str); 3] = [
        ("filter", r#"{"min_level":"warn"}"#),
        ("mask", r#"{"detect":["email"]}"#),
        (
            "route",
            r#"{"field":"level","routes":{"errors":["error","fatal"]}}"#,
        ),
    ];
    for (name, config) in cases {
        let compiled = runtime.compile(name, bundled::get(name).unwrap()).unwrap();
        let mut plugin = runtime
            .load(
                name,
                name,
                compiled,
                config.to_string(),
                PluginLimits::default(),
            )
            .unwrap();
        let wasm = per_event(&batch, |b| {
            plugin.process(&b.data, &b.ends).unwrap();
        });
        let native = match name {
            "filter" => {
                let p = sluice_filter::Filter::init(Config::new(config)).unwrap();
                per_event(&batch, |b| {
                    process_batch(&p, &b.data, &b.ends).unwrap();
                })
            }
            "mask" => {
                let p = sluice_mask::Mask::init(Config::new(config)).unwrap();
                per_event(&batch, |b| {
                    process_batch(&p, &b.data, &b.ends).unwrap();
                })
            }
            _ => {
                let p = sluice_route::Route::init(Config::new(config)).unwrap();
                per_event(&batch, |b| {
                    process_batch(&p, &b.data, &b.ends).unwrap();
                })
            }
        };
        println!(
            "  {:<28} {:>10.1} {:>10.1} {:>+12.1}",
            format!("{name} {config}")
                .chars()
                .take(28)
                .collect::<String>(),
            wasm,
            native,
            wasm - native
        );
    }

    // The boundary alone: a plugin that keeps every event without reading
    // it (tests/plugins/noop), built here if the tests have not built it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let noop = root.join("target/plugins/wasm32-wasip2/plugin/sluice_test_noop.wasm");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args([
                "build",
                "-q",
                "--profile",
                "plugin",
                "--target",
                "wasm32-wasip2",
                "-p",
                "sluice-test-noop",
                "--target-dir",
            ])
            .arg(root.join("target/plugins"))
            .status()
            .unwrap();
    assert!(status.success(), "building the noop plugin failed");
    let compiled = runtime
        .compile("noop", &std::fs::read(&noop).unwrap())
        .unwrap();
    let mut plugin = runtime
        .load(
            "noop",
            "noop",
            compiled,
            "{}".to_string(),
            PluginLimits::default(),
        )
        .unwrap();
    let wasm = per_event(&batch, |b| {
        plugin.process(&b.data, &b.ends).unwrap();
    });
    let p = sluice_test_noop::Noop::init(Config::new("{}")).unwrap();
    let native = per_event(&batch, |b| {
        process_batch(&p, &b.data, &b.ends).unwrap();
    });
    println!(
        "  {:<28} {:>10.1} {:>10.1} {:>+12.1}",
        "noop (the boundary alone)",
        wasm,
        native,
        wasm - native
    );
}
