//! `just bench` (languages): the same filter (keep warn and above) as a
//! plugin in Rust, Python, JavaScript and TypeScript, each made by
//! `sluice plugin new` and built by `sluice plugin build` with the real
//! toolchains, plus hand-written Python and JavaScript loops over the raw
//! WIT types (to price each language's helper).
//!
//! For each: size, cold compile, load from the compile cache, instance
//! memory, and events/s and MB/s of `process` over batches of 1024
//! ~150-byte events. Needs `scripts/setup-plugin-tools`.
//!
//! Environment: `SLUICE_BENCH_EVENTS` (default 200000).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::cli::plugin::{build, kits};
use sluice::plugin::{PluginLimits, Runtime};

const LEVELS: [&str; 10] = [
    "info", "info", "info", "info", "debug", "debug", "warn", "warn", "error", "info",
];

fn event(i: usize, out: &mut Vec<u8>) {
    let level = LEVELS[i % LEVELS.len()];
    let _ = write!(
        out,
        "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"{level}\",\"service\":\"orders\",\"message\":\"order {i:08} processed in {} ms by worker {}\"}}",
        i % 997,
        i % 17
    );
}

/// A project made by `sluice plugin new`, its entry optionally replaced,
/// built (once per contents) under `target/bench-lang`.
fn project(root: &Path, name: &str, lang: kits::Lang, entry: Option<(&str, &str)>) -> PathBuf {
    let dir = root.join(name);
    let wasm = dir.join(format!("{name}.wasm"));
    let files = kits::project(name, lang);
    let fresh = files.iter().all(|(p, text)| {
        std::fs::read_to_string(dir.join(p)).is_ok_and(|t| &t == text)
            || Some(p.as_str()) == entry.map(|e| e.1)
    });
    if fresh && wasm.exists() {
        return wasm;
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    if let Some((from, to)) = entry {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/lang")
            .join(from);
        std::fs::copy(src, dir.join(to)).unwrap();
    }
    build::build(&dir)
        .unwrap_or_else(|e| panic!("building {name}: {e:#} (run scripts/setup-plugin-tools)"))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-lang");
    std::fs::create_dir_all(&target).unwrap();
    eprintln!(
        "building the plugins (cached under {})...",
        target.display()
    );
    let plugins = [
        ("rust", project(&target, "b-rust", kits::Lang::Rust, None)),
        (
            "python",
            project(&target, "b-python", kits::Lang::Python, None),
        ),
        (
            "python raw loop",
            project(
                &target,
                "b-python-raw",
                kits::Lang::Python,
                Some(("raw.py", "app.py")),
            ),
        ),
        ("js", project(&target, "b-js", kits::Lang::Js, None)),
        (
            "js raw loop",
            project(
                &target,
                "b-js-raw",
                kits::Lang::Js,
                Some(("raw.js", "plugin.js")),
            ),
        ),
        ("ts", project(&target, "b-ts", kits::Lang::Ts, None)),
    ];

    // The batches: 1024 events each, packed as the host packs them.
    let mut batches = Vec::new();
    let mut bytes = 0usize;
    let mut i = 0;
    while i < n {
        let (mut data, mut ends) = (Vec::new(), Vec::new());
        for _ in 0..1024.min(n - i) {
            event(i, &mut data);
            ends.push(data.len() as u32);
            i += 1;
        }
        bytes += data.len();
        batches.push((data, ends));
    }

    println!(
        "plugin languages: the same filter, {n} events of ~{} bytes, batches of 1024",
        bytes / n
    );
    println!(
        "{:<16} {:>8} {:>12} {:>11} {:>10} {:>12} {:>8} {:>6}",
        "plugin", "size MB", "cold compile", "cached load", "memory MB", "events/s", "MB/s", "kept"
    );
    let limits = PluginLimits {
        time_budget: Duration::from_secs(10),
        ..PluginLimits::default()
    };
    for (name, wasm) in &plugins {
        let code = std::fs::read(wasm).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let runtime = Arc::new(Runtime::new(Some(cache.path().to_path_buf())).unwrap());
        let started = Instant::now();
        runtime.compile(name, &code).unwrap();
        let cold = started.elapsed();
        let warm_runtime = Arc::new(Runtime::new(Some(cache.path().to_path_buf())).unwrap());
        let started = Instant::now();
        let compiled = warm_runtime.compile(name, &code).unwrap();
        let cached = started.elapsed();
        let before = rss_kib();
        let mut plugin = warm_runtime
            .load(
                name,
                "bench",
                compiled,
                r#"{"min_level":"warn"}"#.into(),
                limits,
            )
            .unwrap();
        // One warm-up batch, then the measured pass.
        plugin.process(&batches[0].0, &batches[0].1).unwrap();
        let started = Instant::now();
        let mut kept = 0usize;
        for (data, ends) in &batches {
            let v = plugin.process(data, ends).unwrap();
            kept += v.actions.iter().filter(|&&a| a == 1).count();
        }
        let secs = started.elapsed().as_secs_f64();
        let memory = rss_kib().saturating_sub(before);
        println!(
            "{:<16} {:>8.1} {:>11.2}s {:>10.3}s {:>10.1} {:>12.0} {:>8.1} {:>6}",
            name,
            code.len() as f64 / 1e6,
            cold.as_secs_f64(),
            cached.as_secs_f64(),
            memory as f64 / 1024.0,
            n as f64 / secs,
            bytes as f64 / 1e6 / secs,
            kept
        );
    }
}
