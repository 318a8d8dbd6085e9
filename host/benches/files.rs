//! `just bench`: the file sink's rotation and compression, and the file
//! source tailing many files.
//!
//! 1. File -> file, 1,000,000 ~150-byte events: one plain output file,
//!    versus rotation every 10 MB with gzip of the closed files, versus the
//!    same plain file encrypted with age (`encrypt`), and encrypted after
//!    gzip (`compress` + `encrypt`: `.gz.age`). Prints the events/s until
//!    the last event is written, and until the pipeline ended (the last
//!    closed file compressed, the last age stream finished).
//! 2. Tailing: 1,000,000 lines appended by writer threads while a `follow`
//!    source reads them, into one file versus ten files growing at once.
//!    Prints events/s from the first append to the last event written.
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the event count.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

const SERVICES: [&str; 5] = ["orders", "payments", "auth", "webhook", "search"];

/// One ~150-byte event.
fn event(i: usize, out: &mut Vec<u8>) {
    let service = SERVICES[i % SERVICES.len()];
    let _ = writeln!(
        out,
        "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"info\",\"service\":\"{service}\",\"message\":\"order {i:08} processed in {} ms by worker {}\"}}",
        i % 997,
        i % 17
    );
}

fn events(range: std::ops::Range<usize>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(range.len() * 160);
    for i in range {
        event(i, &mut buf);
    }
    buf
}

struct Bench {
    rt: tokio::runtime::Runtime,
    runtime: Arc<Runtime>,
}

impl Bench {
    /// Run `toml` from `dir`; returns when `sink` has written `n` events,
    /// and when the pipeline ended. `during` runs on a thread meanwhile.
    fn run(
        &self,
        dir: &Path,
        toml: &str,
        sink: &str,
        n: u64,
        during: impl FnOnce() + Send + 'static,
    ) -> (Duration, Duration) {
        let path = dir.join("bench.toml");
        std::fs::write(&path, toml).unwrap();
        self.rt.block_on(async {
            let config = PipelineConfig::load(&path).unwrap();
            let plan = topology::plan(config, self.runtime.clone()).await.unwrap();
            let metrics = Registry::default();
            let running = plan.start(metrics.clone()).unwrap();
            let started = Instant::now();
            let writer = std::thread::spawn(during);
            while metrics.get(sink).map_or(0, |s| s.events_out) < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let written = started.elapsed();
            writer.join().unwrap();
            running.shutdown().await;
            running.wait().await.unwrap();
            (written, started.elapsed())
        })
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let bench = Bench {
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
        runtime: Arc::new(Runtime::new(None).unwrap()),
    };
    let data = events(0..n);
    println!(
        "sluice files bench: {n} events, {:.1} MB",
        data.len() as f64 / 1e6
    );

    // --- file -> file: rotation and compression ---------------------------
    let plain = r#"
[sources.app]
type = "file"
path = "input.log"

[sinks.out]
type = "file"
path = "out/events.log"
inputs = ["app"]
"#;
    let rotated = plain.replace(
        "path = \"out/events.log\"",
        "path = \"out/events.log\"\nrotate_size = \"10MB\"\ncompress = true",
    );
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let encrypted = plain.replace(
        "path = \"out/events.log\"",
        &format!("path = \"out/events.log\"\nencrypt = {{ recipients = [\"{recipient}\"] }}"),
    );
    let packed = encrypted.replace("encrypt =", "compress = true\nencrypt =");
    let names = [
        "plain",
        "rotate 10 MB + gzip",
        "encrypt (age)",
        "gzip + encrypt (age)",
    ];
    let mut best: [(Duration, Duration); 4] = [(Duration::MAX, Duration::MAX); 4];
    for round in 0..3 {
        for (i, toml) in [plain, rotated.as_str(), encrypted.as_str(), packed.as_str()]
            .iter()
            .enumerate()
        {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("input.log"), &data).unwrap();
            let (written, ended) = bench.run(dir.path(), toml, "out", n as u64, || {});
            println!(
                "  run {round} {}: written in {:.3} s, ended in {:.3} s",
                names[i],
                written.as_secs_f64(),
                ended.as_secs_f64()
            );
            best[i].0 = best[i].0.min(written);
            best[i].1 = best[i].1.min(ended);
        }
    }
    println!(
        "file -> file, plain: {:.0} events/s, {:.1} MB/s",
        rate(n, best[0].0),
        data.len() as f64 / 1e6 / best[0].0.as_secs_f64()
    );
    println!(
        "file -> file, rotate every 10 MB + gzip: {:.0} events/s written ({:+.1} %), {:.0} events/s including compression ({:+.1} %)",
        rate(n, best[1].0),
        (rate(n, best[1].0) / rate(n, best[0].0) - 1.0) * 100.0,
        rate(n, best[1].1),
        (rate(n, best[1].1) / rate(n, best[0].1) - 1.0) * 100.0
    );
    for i in [2, 3] {
        println!(
            "file -> file, {}: {:.0} events/s written ({:+.1} % against plain), {:.0} events/s to the end ({:+.1} %)",
            names[i],
            rate(n, best[i].0),
            (rate(n, best[i].0) / rate(n, best[0].0) - 1.0) * 100.0,
            rate(n, best[i].1),
            (rate(n, best[i].1) / rate(n, best[0].1) - 1.0) * 100.0
        );
    }

    // --- tailing: one file versus ten growing at once ---------------------
    let tail = |files: usize| -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        for f in 0..files {
            std::fs::write(logs.join(format!("f{f}.log")), "").unwrap();
        }
        let toml = r#"
[sources.logs]
type = "file"
path = "logs/*.log"
follow = true
poll_interval = "10ms"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["logs"]
"#;
        let per = n / files;
        let chunks: Vec<Vec<u8>> = (0..files).map(|f| events(f * per..(f + 1) * per)).collect();
        let logs2 = logs.clone();
        let (written, _) = bench.run(dir.path(), toml, "out", (per * files) as u64, move || {
            // One writer per file, appending in 64 KiB writes like a logger.
            let writers: Vec<_> = chunks
                .into_iter()
                .enumerate()
                .map(|(f, chunk)| {
                    let path = logs2.join(format!("f{f}.log"));
                    std::thread::spawn(move || {
                        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                        let mut rest = &chunk[..];
                        while !rest.is_empty() {
                            let cut = rest.len().min(64 << 10);
                            let cut = rest[..cut]
                                .iter()
                                .rposition(|b| *b == b'\n')
                                .map_or(cut, |i| i + 1);
                            file.write_all(&rest[..cut]).unwrap();
                            rest = &rest[cut..];
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
        });
        written
    };
    let mut one = Duration::MAX;
    let mut ten = Duration::MAX;
    for round in 0..3 {
        let a = tail(1);
        let b = tail(10);
        println!(
            "  run {round}: one file {:.3} s, ten files {:.3} s",
            a.as_secs_f64(),
            b.as_secs_f64()
        );
        one = one.min(a);
        ten = ten.min(b);
    }
    println!(
        "tail, one growing file: {:.0} events/s; ten growing files: {:.0} events/s (ratio {:.2})",
        rate(n, one),
        rate(n, ten),
        one.as_secs_f64() / ten.as_secs_f64()
    );
}
