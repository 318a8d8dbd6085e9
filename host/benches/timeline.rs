//! `just bench` (timeline part): `sluice timeline` over 10 components'
//! JSON-lines files, reporting events/s and peak memory (VmHWM).
//!
//! `SLUICE_BENCH_TIMELINE_EVENTS` sets events per component (default
//! 100,000; the full size is 1,000,000). `SLUICE_BENCH_TIMELINE_DIR`
//! keeps the generated input in that folder and reuses it when it is
//! already there (for repeated runs and profiling).

use std::io::Write;
use std::time::Instant;

use sluice::timeline::{self, Options};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let per: u64 = std::env::var("SLUICE_BENCH_TIMELINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("SLUICE_BENCH_TIMELINE_DIR").map(std::path::PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());
    std::fs::create_dir_all(dir).unwrap();
    let t0: i64 = 1_795_428_000_000;
    let mut bytes = 0u64;
    let levels = ["info", "info", "debug", "warn", "error"];
    for c in 0..10u64 {
        let path = dir.join(format!("svc{c}-2026-11-23.log"));
        let done = dir.join(format!(".svc{c}-{per}.done"));
        if kept.is_some() && done.exists() {
            bytes += std::fs::metadata(&path).unwrap().len();
            continue;
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..per {
            // Component c handles request i at time i*10ms + c ms.
            let ms = t0 + (i * 10 + c) as i64;
            let ts = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            writeln!(
                f,
                "{{\"timestamp\":\"{ts}\",\"level\":\"{}\",\"service\":\"svc{c}\",\"message\":\"handled step {c} of request {i}\",\"request_id\":\"r{i}\",\"duration_ms\":{}}}",
                levels[(i % 5) as usize],
                i % 97
            )
            .unwrap();
        }
        f.flush().unwrap();
        bytes += std::fs::metadata(&path).unwrap().len();
        std::fs::write(done, b"").unwrap();
    }
    let total = per * 10;
    println!(
        "\nsluice timeline bench: 10 components x {per} events ({:.1} MB)",
        bytes as f64 / 1e6
    );
    let before = peak_rss_kib();
    let o = Options {
        paths: vec![dir.to_path_buf()],
        request_timeout_us: 1_000_000,
        ..Options::default()
    };
    let started = Instant::now();
    let mut sink =
        std::io::BufWriter::new(std::fs::File::create(temp.path().join("report.md")).unwrap());
    let s = timeline::run(&o, &mut sink).unwrap();
    sink.flush().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(s.events, total);
    println!(
        "timeline: {total} events in {:.2} s: {:.0} events/s, {:.1} MB/s; peak RSS {} MiB (before: {} MiB); {} requests, {} hops",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        peak_rss_kib() / 1024,
        before / 1024,
        s.requests,
        s.hops.len()
    );
}
