//! `just bench`: masking end to end, and rsyslog doing the same job.
//!
//! 1,000,000 JSON lines of about 137 bytes (a third carry an email, a
//! quarter are debug), file source -> transforms -> file sink, each run
//! timed until the sink has written its last event, 5 runs each (cases
//! taking turns, so a slow spell of the machine hits them alike), their
//! median, best and CPU time printed:
//! no transform; `filter` (min_level = info); `mask` with every detector;
//! `mask` with every detector on one instance (`concurrency = 1`; the
//! default is one per core); `filter` + `mask` (every detector);
//! `filter` + `mask` (emails only).
//! Then rsyslog from Debian's package (`apt-get download`ed with the two
//! libraries it needs and unpacked into `target/rsyslog`, no daemon
//! installed): imfile -> mmjsonparse -> drop debug -> `re_extract` +
//! `replace` of the email -> omfile, timed until its output has every
//! line. Prints events/s and the ratios the mask issue asks for.
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the event count;
//! `SLUICE_BENCH_ONLY="no transform;mask (every detector);rsyslog"` runs
//! only the cases named (as printed); `SLUICE_BENCH_CALLS=1` first times
//! the plugin's calls alone (every build), without a pipeline, over every
//! event, then the events with an email and those without apart
//! (`SLUICE_BENCH_CALLS=with` or `=without`: only those);
//! `SLUICE_BENCH_SHAPE=ts`: events timed by a numeric `ts` (milliseconds);
//! `SLUICE_BENCH_MASKS=before=PATH.wasm,nosimd=PATH.wasm` adds the mask
//! cases again with other builds of the plugin (an older version, one
//! built without wasm SIMD), in the same run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::base::event::Batch;
use sluice::plugin::{bundled, PluginLimits, Runtime};

mod common;
use common::{event_count, median, run_timed as run, runtimes};

const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
const SERVICES: [&str; 5] = ["orders", "payments", "auth", "webhook", "search"];

/// The events; `SLUICE_BENCH_SHAPE=ts` writes their time as a numeric
/// `ts` in milliseconds (pino's and many services' shape) instead of an
/// RFC 3339 `timestamp` first.
fn events(n: usize) -> Vec<u8> {
    let ts = std::env::var("SLUICE_BENCH_SHAPE").is_ok_and(|v| v == "ts");
    let mut out = Vec::with_capacity(n * 140);
    for i in 0..n {
        let service = SERVICES[i % SERVICES.len()];
        let level = LEVELS[i % 4];
        let time = if ts {
            format!("\"ts\":{}", 1_796_474_732_000u64 + i as u64)
        } else {
            "\"timestamp\":\"2026-11-23T10:00:00.000Z\"".to_string()
        };
        if i % 3 == 0 {
            let _ = writeln!(out, "{{{time},\"level\":\"{level}\",\"service\":\"{service}\",\"message\":\"user jane.doe{i:07}@example.com logged in\"}}");
        } else {
            let _ = writeln!(out, "{{{time},\"level\":\"{level}\",\"service\":\"{service}\",\"message\":\"order {i:08} processed in {} ms by worker {}\"}}", i % 997, i % 17);
        }
    }
    out
}

/// Every built-in detector of `mask`.
const DETECTORS: [&str; 8] = [
    "email", "ipv4", "ipv6", "card", "iban", "jwt", "bearer", "mac",
];

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// rsyslogd unpacked from Debian's packages into `dir` (downloaded once).
fn rsyslog(dir: &Path) -> Option<PathBuf> {
    let bin = dir.join("root/usr/sbin/rsyslogd");
    if bin.exists() {
        return Some(bin);
    }
    std::fs::create_dir_all(dir).ok()?;
    let ok = Command::new("apt-get")
        .args(["download", "rsyslog", "libestr0", "libfastjson4"])
        .current_dir(dir)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(e.path())
                .arg(dir.join("root"))
                .status()
                .ok()?;
        }
    }
    bin.exists().then_some(bin)
}

/// rsyslog on `input`, until its output has `n` lines.
fn run_rsyslog(bin: &Path, dir: &Path, input: &Path, n: usize) -> Duration {
    let root = bin.parent().unwrap().parent().unwrap().parent().unwrap();
    let libs = root.join("usr/lib/x86_64-linux-gnu");
    let work = dir.join("work");
    let out = dir.join("out.log");
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&out);
    std::fs::create_dir_all(&work).unwrap();
    let email = r#"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}"#;
    let conf = format!(
        r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
template(name="jsonl" type="list") {{ property(name="$!all-json") constant(value="\n") }}
ruleset(name="r") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  if $!level == "debug" then stop
  if re_match($!message, "{email}") then {{
    set $!message = replace($!message, re_extract($!message, "{email}", 0, 0, ""), "[email]");
  }}
  action(type="omfile" file="{out}" template="jsonl" asyncWriting="on" ioBufferSize="256k")
}}
input(type="imfile" File="{input}" Tag="app" ruleset="r" addMetadata="off" readMode="0")
"#,
        work = work.display(),
        out = out.display(),
        input = input.display(),
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let started = Instant::now();
    let mut child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(work.join("pid"))
        .arg("-M")
        .arg(libs.join("rsyslog"))
        .env("LD_LIBRARY_PATH", &libs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = |p: &Path| {
        std::fs::read(p)
            .map(|b| memchr::memchr_iter(b'\n', &b).count())
            .unwrap_or(0)
    };
    loop {
        if count(&out) >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rsyslog did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let masked = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        masked.contains("[email]") && !masked.contains("@example.com"),
        "rsyslog masked the emails"
    );
    took
}

/// The plugin alone: ns per event of `process` over the first 200,000
/// events in batches of 1024, for each build in `builds`, taking turns
/// for 15 rounds and keeping each one's best (no pipeline around it, so a
/// change to the plugin's own code shows without the noise of the threads
/// around it; turns, so that a slow spell of the machine hits every build).
fn per_call(runtime: &Arc<Runtime>, builds: &[(String, Vec<u8>)], config: &str, data: &[u8]) {
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(200_000)
        .collect();
    // Every event, then those with an email and those without: the two
    // kinds cost the plugin very different work.
    let has_email = |l: &&[u8]| l.contains(&b'@');
    let sets: [(&str, Vec<&[u8]>); 3] = [
        ("every event", lines.clone()),
        (
            "events with an email",
            lines.iter().copied().filter(has_email).collect(),
        ),
        (
            "events without",
            lines.iter().copied().filter(|l| !has_email(l)).collect(),
        ),
    ];
    // SLUICE_BENCH_CALLS=with (or =without) times only those events.
    let only = match std::env::var("SLUICE_BENCH_CALLS").as_deref() {
        Ok("with") => Some(1),
        Ok("without") => Some(2),
        _ => None,
    };
    for (i, (what, lines)) in sets.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        println!("  {what}:");
        per_call_on(runtime, builds, config, lines);
    }
}

fn per_call_on(
    runtime: &Arc<Runtime>,
    builds: &[(String, Vec<u8>)],
    config: &str,
    lines: &[&[u8]],
) {
    let batches: Vec<Batch> = lines
        .chunks(1024)
        .map(|chunk| Batch::from_events(chunk.iter().copied()))
        .collect();
    let mut plugins: Vec<_> = builds
        .iter()
        .map(|(label, wasm)| {
            let compiled = runtime.compile("mask", wasm).unwrap();
            runtime
                .load(
                    "mask",
                    label,
                    compiled,
                    config.to_string(),
                    PluginLimits::default(),
                )
                .unwrap()
        })
        .collect();
    let mut best = vec![Duration::MAX; builds.len()];
    for _ in 0..15 {
        for (i, plugin) in plugins.iter_mut().enumerate() {
            let started = Instant::now();
            for b in &batches {
                plugin.process(&b.data, &b.ends).unwrap();
            }
            best[i] = best[i].min(started.elapsed());
        }
    }
    for ((label, _), best) in builds.iter().zip(best) {
        println!(
            "    per call, {label}: {:.0} ns per event",
            best.as_nanos() as f64 / lines.len() as f64
        );
    }
}

fn main() {
    let n = event_count(1_000_000);
    // Compiled plugins cached for the run: each build compiles once.
    let (rt, runtime, _cache) = runtimes();
    let data = events(n);
    let kept = (0..n).filter(|i| i % 4 != 0).count();
    println!(
        "sluice mask bench: {n} events, {:.1} MB, {:.0} bytes each",
        data.len() as f64 / 1e6,
        data.len() as f64 / n as f64
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.log");
    std::fs::write(&input, &data).unwrap();
    let head = "[sources.app]\ntype = \"file\"\npath = \"input.log\"\n\n";
    let filter = "[transforms.keep]\nplugin = \"filter\"\ninputs = [\"app\"]\nconfig = { min_level = \"info\" }\n\n";
    let all = &format!("{{ detect = {DETECTORS:?} }}");
    let mask = |input: &str, config: &str| {
        format!(
            "[transforms.mask]\nplugin = \"mask\"\ninputs = [\"{input}\"]\nconfig = {config}\n\n"
        )
    };
    let sink = |input: &str| {
        format!("[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"{input}\"]\n")
    };
    let cases: Vec<(&str, String, usize)> = vec![
        ("no transform", format!("{head}{}", sink("app")), n),
        (
            "filter (min_level = info)",
            format!("{head}{filter}{}", sink("keep")),
            kept,
        ),
        (
            "mask (every detector)",
            format!("{head}{}{}", mask("app", all), sink("mask")),
            n,
        ),
        (
            "mask (every detector), concurrency = 1",
            format!(
                "{head}{}\nconcurrency = 1\n\n{}",
                mask("app", all).trim_end(),
                sink("mask")
            ),
            n,
        ),
        (
            "filter + mask (every detector)",
            format!("{head}{filter}{}{}", mask("keep", all), sink("mask")),
            kept,
        ),
        (
            "filter + mask (detect = [\"email\"])",
            format!(
                "{head}{filter}{}{}",
                mask("keep", r#"{ detect = ["email"] }"#),
                sink("mask")
            ),
            kept,
        ),
    ];
    let mut cases = cases;
    let others = std::env::var("SLUICE_BENCH_MASKS").unwrap_or_default();
    for spec in others.split(',').filter(|s| !s.is_empty()) {
        let (label, path) = spec.split_once('=').expect("NAME=PATH.wasm");
        let variant = |input: &str, config: &str| {
            format!("[transforms.mask]\nplugin = {path:?}\ninputs = [\"{input}\"]\nconfig = {config}\n\n")
        };
        let name =
            |what: &str| -> &'static str { Box::leak(format!("{what}, {label}").into_boxed_str()) };
        cases.push((
            name("mask (every detector)"),
            format!("{head}{}{}", variant("app", all), sink("mask")),
            n,
        ));
        cases.push((
            name("filter + mask (every detector)"),
            format!("{head}{filter}{}{}", variant("keep", all), sink("mask")),
            kept,
        ));
        cases.push((
            name("filter + mask (detect = [\"email\"])"),
            format!(
                "{head}{filter}{}{}",
                variant("keep", r#"{ detect = ["email"] }"#),
                sink("mask")
            ),
            kept,
        ));
    }
    if let Ok(only) = std::env::var("SLUICE_BENCH_ONLY") {
        cases.retain(|c| only.split(';').any(|o| c.0 == o));
    }
    if std::env::var_os("SLUICE_BENCH_CALLS").is_some() {
        println!("the mask plugin alone, every detector:");
        let mut builds = vec![(
            "bundled".to_string(),
            bundled::get("mask").unwrap().to_vec(),
        )];
        for spec in others.split(',').filter(|s| !s.is_empty()) {
            let (label, path) = spec.split_once('=').expect("NAME=PATH.wasm");
            builds.push((label.to_string(), std::fs::read(path).unwrap()));
        }
        let config = serde_json::json!({ "detect": DETECTORS }).to_string();
        per_call(&runtime, &builds, &config, &data);
    }
    // Every run's wall and CPU time, per case.
    let mut runs: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); cases.len()];
    let rsys_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rsyslog");
    // With SLUICE_BENCH_ONLY, rsyslog runs only when named in it.
    let rsys = std::env::var("SLUICE_BENCH_ONLY")
        .map_or(true, |o| o.split(';').any(|o| o == "rsyslog"))
        .then(|| rsyslog(&rsys_dir))
        .flatten();
    let mut rsys_runs = Vec::new();
    for round in 0..5 {
        for (i, (name, toml, expect)) in cases.iter().enumerate() {
            let _ = std::fs::remove_file(dir.path().join("out.log"));
            let (took, cpu) = run(&rt, &runtime, dir.path(), toml, *expect as u64);
            println!(
                "  run {round} {name}: {:.3} s, {:.2} s of CPU",
                took.as_secs_f64(),
                cpu.as_secs_f64()
            );
            runs[i].push((took, cpu));
        }
        if let Some(bin) = &rsys {
            let took = run_rsyslog(bin, &rsys_dir, &input, kept);
            println!(
                "  run {round} rsyslog (drop debug, replace emails): {:.3} s",
                took.as_secs_f64()
            );
            rsys_runs.push(took);
        }
    }
    let walls = |r: &[(Duration, Duration)]| r.iter().map(|t| t.0).collect::<Vec<_>>();
    println!("| pipeline | median | best | CPU (median) | events/s (best) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let best = walls(&runs[i]).into_iter().min().unwrap();
        let cpu = median(runs[i].iter().map(|t| t.1).collect());
        println!(
            "| {name} | {:.3} s | {:.3} s | {:.2} s | {:.2} M |",
            median(walls(&runs[i])).as_secs_f64(),
            best.as_secs_f64(),
            cpu.as_secs_f64(),
            rate(n, best) / 1e6
        );
    }
    // (median, best) wall time of a case, if it ran.
    let at = |name: &str| {
        let i = cases.iter().position(|c| c.0 == name)?;
        let w = walls(&runs[i]);
        Some((median(w.clone()), w.into_iter().min().unwrap()))
    };
    let none = at("no transform");
    let emails = at("filter + mask (detect = [\"email\"])");
    match (rsys_runs.is_empty(), emails) {
        (false, Some((emails, emails_best))) => {
            let (rsys, rsys_best) = (median(rsys_runs.clone()), *rsys_runs.iter().min().unwrap());
            println!(
                "| rsyslog 8.2302 (drop debug, replace emails) | {:.3} s | {:.3} s | | {:.2} M |",
                rsys.as_secs_f64(),
                rsys_best.as_secs_f64(),
                rate(n, rsys_best) / 1e6
            );
            println!(
                "filter + mask (emails) against rsyslog on the same job: {:.2}x median, {:.2}x best (goal: at least 5x)",
                rsys.as_secs_f64() / emails.as_secs_f64(),
                rsys_best.as_secs_f64() / emails_best.as_secs_f64()
            );
        }
        (true, _) => {
            println!("rsyslog: not run (apt-get download failed, or not asked for); no ratio")
        }
        _ => {}
    }
    let ratio = |label: &str, case: &str, goal: &str| {
        if let (Some((none, none_best)), Some((t, best))) = (none, at(case)) {
            println!(
                "{label}: {:.2} M events/s median ({:.2} M best), {:.2}x the no-transform time median against median ({:.2}x best against best){goal}",
                rate(n, t) / 1e6,
                rate(n, best) / 1e6,
                t.as_secs_f64() / none.as_secs_f64(),
                best.as_secs_f64() / none_best.as_secs_f64()
            );
        }
    };
    ratio(
        "mask (every detector)",
        "mask (every detector)",
        " (goals: 1 M events/s, within 2.3x)",
    );
    ratio(
        "mask (every detector) on one instance",
        "mask (every detector), concurrency = 1",
        "",
    );
}
