//! `just bench` (reload part), for issue #5:
//!
//! 1. from a plugin file changing to the first event processed by the new
//!    version (compile without cache + init + swap + the batch reaching the
//!    sink), and the swap alone;
//! 2. throughput of generator -> tag plugin -> file with and without 10
//!    swaps per second;
//! 3. the end-to-end pipeline with epoch interruption on and off.
//!
//! The two builds of the test-only `tag` plugin are built here with cargo.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

fn build_tag(root: &Path, tag: &str) -> PathBuf {
    let target = root.join(format!("target/plugins-bench-{tag}"));
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
                "sluice-test-tag",
                "--target-dir",
            ])
            .arg(&target)
            .env("SLUICE_TAG", tag)
            .status()
            .unwrap();
    assert!(status.success());
    target.join("wasm32-wasip2/plugin/sluice_test_tag.wasm")
}

fn replace(path: &Path, from: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The newest tag written to the sink file (read from its last 64 KiB).
fn last_tag(out: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(out).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10))).ok()?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text
        .lines()
        .rev()
        .find(|l| l.ends_with('}') && l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["tag"].as_str().map(str::to_string)
}

const PIPELINE: &str = r#"
[batch]
max_events = 1024
max_wait = "5ms"

[reload]
watch = false

[sources.gen]
type = "generate"

[transforms.tag]
plugin = "tag.wasm"
inputs = ["gen"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["tag"]
"#;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let a = build_tag(&root, "a");
    let b = build_tag(&root, "b");
    let size = std::fs::metadata(&a).unwrap().len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\nsluice reload bench (tag plugin, {} KB)", size / 1000);

    // 1. Latency of a swap, compiling without a cache.
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("tag.wasm");
        std::fs::copy(&a, &plugin).unwrap();
        std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
        let runtime = Arc::new(Runtime::new(None).unwrap());
        let plan = topology::plan(PipelineConfig::load(&dir.path().join("p.toml")).unwrap(), runtime).await.unwrap();
        let running = plan.start(Registry::default()).unwrap();
        let reload = running.reload_handle();
        let stop = running.stop_handle();
        let waiter = tokio::spawn(running.wait());
        let out = dir.path().join("out.log");
        while last_tag(&out).as_deref() != Some("a") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut loads = Vec::new();
        let mut totals = Vec::new();
        for i in 0..10 {
            let (file, tag) = if i % 2 == 0 { (&b, "b") } else { (&a, "a") };
            replace(&plugin, file);
            let started = Instant::now();
            assert!(reload.reload_plugin("tag").await.unwrap());
            loads.push(started.elapsed());
            while last_tag(&out).as_deref() != Some(tag) {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            totals.push(started.elapsed());
        }
        stop.trigger();
        waiter.await.unwrap().unwrap();
        loads.sort();
        totals.sort();
        println!(
            "file change -> first event of the new version at the sink: median {:.1} ms (compile + init, no cache: {:.1} ms; the rest is the swap between batches plus one batch reaching the sink)",
            totals[5].as_secs_f64() * 1e3,
            loads[5].as_secs_f64() * 1e3
        );
    });

    // 2. Throughput with and without 10 swaps per second.
    let measure = |swaps: bool| -> f64 {
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let plugin = dir.path().join("tag.wasm");
            std::fs::copy(&a, &plugin).unwrap();
            std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
            let runtime = Arc::new(
                Runtime::new(Some(std::env::temp_dir().join("sluice-bench-cache"))).unwrap(),
            );
            let plan = topology::plan(
                PipelineConfig::load(&dir.path().join("p.toml")).unwrap(),
                runtime,
            )
            .await
            .unwrap();
            let metrics = Registry::default();
            let running = plan.start(metrics.clone()).unwrap();
            let reload = running.reload_handle();
            let stop = running.stop_handle();
            let waiter = tokio::spawn(running.wait());
            tokio::time::sleep(Duration::from_millis(500)).await;
            let start_count = metrics.get("out").unwrap().events_out;
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if swaps {
                    replace(&plugin, if i % 2 == 0 { &b } else { &a });
                    reload.reload_plugin("tag").await.unwrap();
                    i += 1;
                }
            }
            let n = metrics.get("out").unwrap().events_out - start_count;
            let rate = n as f64 / started.elapsed().as_secs_f64();
            stop.trigger();
            waiter.await.unwrap().unwrap();
            rate
        })
    };
    let calm = measure(false);
    let swapping = measure(true);
    println!(
        "generator -> tag -> file: {calm:.0} events/s without swaps, {swapping:.0} with 10 swaps/s ({:+.1} %)",
        (swapping / calm - 1.0) * 100.0
    );

    // 3. Epoch interruption on versus off, on the end-to-end pipeline.
    let pipeline = r#"
[batch]
max_events = 1024

[reload]
watch = false

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

[transforms.router]
plugin = "route"
inputs = ["mask"]
config = { field = "level", routes = { errors = ["error", "fatal"] } }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["router", "router.errors"]
"#;
    // The same events as the pipeline bench: from a file, so that the
    // source costs little and the plugins dominate.
    let mut gen = sluice::source::generate::Generator::new(Some(1));
    let mut input = Vec::new();
    for _ in 0..500_000 {
        gen.event(&mut input);
        input.push(b'\n');
    }
    let run = |epochs: bool| -> f64 {
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
            std::fs::write(dir.path().join("input.log"), &input).unwrap();
            let cache = Some(std::env::temp_dir().join("sluice-bench-cache"));
            let runtime = Arc::new(
                if epochs {
                    Runtime::new(cache)
                } else {
                    Runtime::without_time_budgets(cache)
                }
                .unwrap(),
            );
            let mut best = f64::MAX;
            for _ in 0..3 {
                let plan = topology::plan(
                    PipelineConfig::load(&dir.path().join("p.toml")).unwrap(),
                    runtime.clone(),
                )
                .await
                .unwrap();
                let started = Instant::now();
                plan.start(Registry::default())
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
                best = best.min(started.elapsed().as_secs_f64());
                let _ = std::fs::remove_file(dir.path().join("out.log"));
            }
            500_000.0 / best
        })
    };
    let on = run(true);
    let off = run(false);
    println!(
        "file -> filter -> mask (all detectors) -> route -> file, 500k generated events: {on:.0} events/s with epoch interruption, {off:.0} without ({:+.1} %)",
        (on / off - 1.0) * 100.0
    );
}
