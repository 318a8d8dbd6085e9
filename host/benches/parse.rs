//! `just bench`: the bundled `parse` plugin through the pipeline (issue
//! #41). 1,000,000 text lines in a file -> file source (`format =
//! "text"`) -> `parse` -> file sink, timed until the sink wrote the last
//! event, best of 3 (and the least CPU time of the three, every thread):
//!
//! - nginx `combined` lines (~190 bytes, varied clients, methods, paths,
//!   statuses, referers and agents with escapes): no transform, then
//!   `format = "nginx_combined"` (the hand-written scanner), then
//!   `format = "grok"` with `%{COMBINEDAPACHELOG}` (one regex);
//! - logfmt lines (~120 bytes): no transform, then `format = "logfmt"`.
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the line count;
//! `SLUICE_BENCH_ONLY="nginx"` runs only the cases whose name holds it,
//! and `PARSE_WASM=path` loads that build of the plugin instead of the
//! bundled one (for a profiler: one built with its names, `CARGO_PROFILE_PLUGIN_STRIP=false`,
//! under `SLUICE_PERF_MAP=1`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sluice::plugin::Runtime;

mod common;
use common::run_timed;

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(Runtime::new(None).unwrap());
    let methods = ["GET", "POST", "GET", "PUT", "GET", "DELETE"];
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
        "curl/8.1.2",
        "python-requests/2.31 \\x22quoted\\x22",
    ];
    let mut access = Vec::with_capacity(n * 200);
    let mut logfmt = Vec::with_capacity(n * 130);
    for i in 0..n {
        let _ = writeln!(
            access,
            "10.{}.{}.{} - - [06/Dec/2026:03:{:02}:{:02} +0000] \"{} /api/v1/orders/{i}?page={} HTTP/1.1\" {} {} \"https://shop.example/p/{}\" \"{}\"",
            i % 256,
            (i / 256) % 256,
            i % 200,
            (i / 60) % 60,
            i % 60,
            methods[i % methods.len()],
            i % 7,
            [200, 201, 404, 500, 502][i % 5],
            i % 10_000,
            i % 97,
            agents[i % agents.len()]
        );
        let _ = writeln!(
            logfmt,
            "time=2026-12-06T03:10:01.{:03}Z level=info msg=\"order {i} paid\" user=u{} amount={}.{:02} duration_ms={}",
            i % 1000,
            i % 5000,
            i % 900,
            i % 100,
            i % 997
        );
    }
    println!("parse through the pipeline: {n} lines, file -> parse -> file (best of 3)");
    let base = "[reload]\nwatch = false\n\n[sources.app]\ntype = \"file\"\npath = \"input.log\"\nformat = \"text\"\n\n";
    let sink = |input: &str| {
        format!("[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"{input}\"]\n")
    };
    let parse = |config: &str| {
        format!(
            "{base}[transforms.p]\nplugin = \"{}\"\ninputs = [\"app\"]\nconfig = {config}\n\n{}",
            std::env::var("PARSE_WASM").unwrap_or("parse".into()),
            sink("p")
        )
    };
    let cases: Vec<(&str, &Vec<u8>, String)> = vec![
        (
            "access: no transform",
            &access,
            format!("{base}{}", sink("app")),
        ),
        (
            "access: nginx_combined (scanner)",
            &access,
            parse(r#"{ format = "nginx_combined" }"#),
        ),
        (
            "access: grok COMBINEDAPACHELOG",
            &access,
            parse(r#"{ format = "grok", pattern = "%{COMBINEDAPACHELOG}" }"#),
        ),
        (
            "logfmt: no transform",
            &logfmt,
            format!("{base}{}", sink("app")),
        ),
        (
            "logfmt: logfmt (scanner)",
            &logfmt,
            parse(r#"{ format = "logfmt" }"#),
        ),
    ];
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let mut times = Vec::new();
    for (name, input, toml) in &cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            times.push(Duration::ZERO);
            continue;
        }
        let (mut best, mut least_cpu) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("input.log"), input).unwrap();
            let (wall, cpu) = run_timed(&rt, &runtime, dir.path(), toml, n as u64);
            best = best.min(wall);
            least_cpu = least_cpu.min(cpu);
        }
        times.push(best);
        // The CPU time (every thread) is the steadier measure on a shared
        // machine whose speed drifts from minute to minute.
        println!(
            "  {name:<34} {:>10.0} lines/s  {:>7.1} MB/s  ({:.2} s; CPU {:.2} s, {:.2} µs/line)",
            n as f64 / best.as_secs_f64(),
            input.len() as f64 / 1e6 / best.as_secs_f64(),
            best.as_secs_f64(),
            least_cpu.as_secs_f64(),
            least_cpu.as_secs_f64() * 1e6 / n as f64
        );
    }
    if !times[1].is_zero() && !times[2].is_zero() {
        println!(
            "  grok / scanner time: {:.2}x",
            times[2].as_secs_f64() / times[1].as_secs_f64()
        );
    }
}
