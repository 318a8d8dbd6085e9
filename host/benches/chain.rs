//! `just bench` (chain): the job of a plugin a new user writes first (drop
//! `GET /health`, add `env` from the config, send `status >= 500` to
//! `alerts`), done by the bundled `filter` -> `remap` -> `route` chain, in
//! the same run as `filter` alone and as no transform; and the stateful
//! `throttle` (99,991 keys) and `dedup` on the same records.
//!
//! 1,000,000 access-log records (~190 bytes, JSON) in a file -> file
//! source -> the chain -> file sink (both of `route`'s outputs into it), 5
//! rounds taking turns; wall and CPU time, medians and best.
//!
//! Environment: `SLUICE_BENCH_EVENTS` (default 1000000);
//! `SLUICE_BENCH_ONLY="filter;filter + remap"` runs only the cases named.

use std::io::Write;

mod common;
use common::{event_count, median, run_timed_until, runtimes};

const METHODS: [&str; 4] = ["GET", "POST", "GET", "PUT"];
const STATUSES: [u16; 20] = [
    200, 200, 200, 201, 200, 204, 200, 301, 200, 404, 200, 200, 500, 200, 200, 503, 200, 200, 429,
    200,
];

/// One access record in ten is a health check (`GET /health`); one in
/// ten has a 5xx status.
fn events(n: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(n * 200);
    let mut kept = 0;
    for i in 0..n {
        let health = i % 10 == 3;
        let (method, path) = if health {
            ("GET", "/health".to_string())
        } else {
            (METHODS[i % 4], format!("/api/orders/{}", i % 99_991))
        };
        kept += usize::from(!health);
        let status = STATUSES[i % STATUSES.len()];
        let _ = writeln!(
            out,
            r#"{{"timestamp":"2026-12-06T10:00:00.{:03}Z","level":"info","service":"web","method":"{method}","path":"{path}","status":{status},"duration_ms":{},"client":"10.0.{}.{}","message":"{method} {path} {status}"}}"#,
            i % 1000,
            i % 997,
            i % 250,
            i % 200
        );
    }
    (out, kept)
}

fn main() {
    let n = event_count(1_000_000);
    let (rt, runtime, _cache) = runtimes();
    let (data, kept) = events(n);
    println!(
        "sluice chain bench: {n} access records, {:.1} MB, {:.0} bytes each",
        data.len() as f64 / 1e6,
        data.len() as f64 / n as f64
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.log"), &data).unwrap();
    let head = "[sources.app]\ntype = \"file\"\npath = \"input.log\"\n\n";
    let filter = r#"[transforms.keep]
plugin = "filter"
inputs = ["app"]
config = { mode = "any", conditions = [{ field = "method", equals = "GET", negate = true }, { field = "path", equals = "/health", negate = true }] }

"#;
    let remap = |input: &str| {
        format!("[transforms.shape]\nplugin = \"remap\"\ninputs = [\"{input}\"]\nconfig = {{ set = {{ env = \"prod\" }} }}\n\n")
    };
    let route = |input: &str| {
        format!("[transforms.router]\nplugin = \"route\"\ninputs = [\"{input}\"]\nconfig = {{ rules = [{{ output = \"alerts\", conditions = [{{ field = \"status\", gte = 500 }}] }}] }}\n\n")
    };
    let sink = |inputs: &str| {
        format!("[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [{inputs}]\n")
    };
    let mut cases: Vec<(&str, String, usize)> = vec![
        ("no transform", format!("{head}{}", sink("\"app\"")), n),
        (
            "filter",
            format!("{head}{filter}{}", sink("\"keep\"")),
            kept,
        ),
        (
            "filter + remap",
            format!("{head}{filter}{}{}", remap("keep"), sink("\"shape\"")),
            kept,
        ),
        (
            "filter + remap + route",
            format!(
                "{head}{filter}{}{}{}",
                remap("keep"),
                route("shape"),
                sink("\"router\", \"router.alerts\"")
            ),
            kept,
        ),
    ];
    // The stateful plugins of #44 on the same records: `throttle` keyed by
    // `path` (99,991 keys, 5 events per key per second, the rest routed to
    // `over`, both into the sink) and `dedup` of `path` within an hour
    // (the run's 99,992 paths pass, each once: within `max_entries`).
    let unique = {
        let mut seen = std::collections::HashSet::new();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let e: serde_json::Value = serde_json::from_slice(line).unwrap();
            seen.insert(e["path"].to_string());
        }
        seen.len()
    };
    cases.push((
        "throttle (100,000 keys)",
        format!(
            "{head}[transforms.limit]\nplugin = \"throttle\"\ninputs = [\"app\"]\nconfig = {{ key = [\"path\"], events = 5, window = \"1s\", exceeded = \"route:over\" }}\n\n{}",
            sink("\"limit\", \"limit.over\"")
        ),
        n,
    ));
    cases.push((
        "dedup (99,992 values)",
        format!(
            "{head}[transforms.once]\nplugin = \"dedup\"\ninputs = [\"app\"]\nconfig = {{ fields = [\"path\"], window = \"1h\" }}\n\n{}",
            sink("\"once\"")
        ),
        unique,
    ));
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        cases.retain(|c| only.split(';').any(|o| c.0 == o));
    }
    let mut runs = vec![Vec::new(); cases.len()];
    for round in 0..5 {
        for (i, (name, toml, expect)) in cases.iter().enumerate() {
            let _ = std::fs::remove_file(dir.path().join("out.log"));
            // `dedup` passes 10 % of its input: timed until it took all.
            let all = |m: &sluice::base::metrics::Registry| {
                let out = m.get("out").map_or(0, |s| s.events_out);
                let once = m.get("once").map_or(0, |s| s.events_out + s.dropped);
                out >= *expect as u64 && (!name.starts_with("dedup") || once >= n as u64)
            };
            let (took, cpu) = run_timed_until(&rt, &runtime, dir.path(), toml, all);
            println!(
                "  run {round} {name}: {:.3} s, {:.2} s of CPU",
                took.as_secs_f64(),
                cpu.as_secs_f64()
            );
            runs[i].push((took, cpu));
            if round == 0 {
                check(&dir.path().join("out.log"), name, *expect);
            }
        }
    }
    println!(
        "| pipeline | median | best | CPU (median) | input events/s (median) | MB/s (median) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let walls: Vec<_> = runs[i].iter().map(|r| r.0).collect();
        let best = *walls.iter().min().unwrap();
        let mid = median(walls);
        let cpu = median(runs[i].iter().map(|r| r.1).collect());
        println!(
            "| {name} | {:.3} s | {:.3} s | {:.2} s | {:.2} M | {:.0} |",
            mid.as_secs_f64(),
            best.as_secs_f64(),
            cpu.as_secs_f64(),
            n as f64 / mid.as_secs_f64() / 1e6,
            data.len() as f64 / mid.as_secs_f64() / 1e6
        );
    }
    println!("goal: filter + remap + route at least 1M input events/s");
}

/// A case's output, checked once: as many events as expected; after
/// `filter`, no health check left; after `remap`, every event has `env`.
fn check(out: &std::path::Path, name: &str, expect: usize) {
    let out = std::fs::read_to_string(out).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expect, "{name}: events out");
    if name.starts_with("filter") {
        assert!(lines.iter().all(|e| e["path"] != "/health"), "{name}");
    }
    if name.contains("remap") {
        assert!(lines.iter().all(|e| e["env"] == "prod"), "{name}");
    }
}
