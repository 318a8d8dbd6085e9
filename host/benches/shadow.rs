//! `just bench`: what a shadow run (`sluice plugin shadow`) costs the live
//! pipeline (issue #46). 1,000,000 access records (the chain bench's) into
//! a followed file -> `filter` (drop `GET /health`) -> file sink, timed
//! from the moment the file appears until the sink wrote the last event,
//! median of 3, with:
//!
//! - no shadow;
//! - a shadow `filter` v2 (also drops `DELETE`) on every batch (sample 1.0);
//! - the same on a tenth of the batches (sample 0.1);
//! - a shadow that misbehaves (the test plugin `chaos`, built here): it
//!   panics on 1 % of the records, loops forever on two and allocates
//!   without bound on two (the live filter does not look at the field).
//!
//! Prints events/s, the CPU time, the ratio to no shadow, and what the
//! shadow compared and skipped (it runs at `SCHED_IDLE` and skips batches it
//! cannot keep up with; the live workers come first).
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the record count.

use std::io::Write;
use std::time::Duration;

use sluice::topology::reload::ShadowPlugin;
use sluice::topology::shadow::ShadowSpec;

mod common;
use common::{cpu_time, event_count, median, runtimes};

fn records(n: usize) -> (Vec<u8>, u64) {
    let methods = ["GET", "POST", "GET", "PUT", "DELETE"];
    let mut out = Vec::with_capacity(n * 200);
    let mut kept = 0;
    for i in 0..n {
        let health = i % 10 == 3;
        let (method, path) = if health {
            ("GET", "/health".to_string())
        } else {
            (methods[i % 5], format!("/api/orders/{}", i % 99_991))
        };
        kept += u64::from(!health);
        let chaos = match i {
            _ if i % 100 == 7 => r#","chaos":"panic""#,
            _ if i == n / 4 || i == 3 * n / 4 => r#","chaos":"loop""#,
            _ if i == n / 2 || i == 9 * n / 10 => r#","chaos":"alloc""#,
            _ => "",
        };
        let _ = writeln!(
            out,
            r#"{{"timestamp":"2026-12-06T10:00:00.{:03}Z","level":"info","service":"web","method":"{method}","path":"{path}","status":200,"duration_ms":{},"client":"10.0.{}.{}"{chaos}}}"#,
            i % 1000,
            i % 997,
            i % 250,
            i % 200
        );
    }
    (out, kept)
}

const LIVE: &str = r#"{"mode":"any","conditions":[{"field":"method","equals":"GET","negate":true},{"field":"path","equals":"/health","negate":true}]}"#;
const V2: &str = r#"{"mode":"all","conditions":[{"field":"path","equals":"/health","negate":true},{"field":"method","equals":"DELETE","negate":true}]}"#;

fn main() {
    let n = event_count(1_000_000);
    let (rt, runtime, _cache) = runtimes();
    let (data, kept) = records(n);
    println!(
        "sluice shadow bench: {n} access records, file -> filter -> file, median of 3 (followed file, timed from its appearance)"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let plugins = root.join("target").join("plugins");
    sluice_build_support::build_plugins(root, &plugins, &["sluice-test-chaos"], None);
    let chaos = std::fs::read(plugins.join("wasm32-wasip2/plugin/sluice_test_chaos.wasm")).unwrap();
    let v2 = || ShadowPlugin::Bundled("filter".into());
    let mut base = None;
    for (name, sample, plugin, shadow_config) in [
        ("no shadow", None, None, None),
        ("shadow, sample 1.0", Some(1.0), Some(v2()), Some(V2)),
        ("shadow, sample 0.1", Some(0.1), Some(v2()), Some(V2)),
        (
            "chaos shadow, 1.0",
            Some(1.0),
            Some(ShadowPlugin::Bytes("chaos.wasm".into(), chaos.clone())),
            Some("{}"),
        ),
    ] {
        let mut walls = Vec::new();
        let mut cpus = Vec::new();
        let mut status = serde_json::Value::Null;
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let toml = format!(
                "[reload]\nwatch = false\n\n[sources.app]\ntype = \"file\"\npath = \"in/*.log\"\nfollow = true\n\n\
                 [transforms.keep]\nplugin = \"filter\"\ninputs = [\"app\"]\nconfig = {}\n\n\
                 [sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"keep\"]\n",
                toml_inline(LIVE)
            );
            std::fs::create_dir(dir.path().join("in")).unwrap();
            std::fs::write(dir.path().join("input.tmp"), &data).unwrap();
            let path = dir.path().join("bench.toml");
            std::fs::write(&path, toml).unwrap();
            let (wall, cpu, st) = rt.block_on(async {
                let config = sluice::config::PipelineConfig::load(&path).unwrap();
                let plan = sluice::topology::plan(config, runtime.clone())
                    .await
                    .unwrap();
                let metrics = sluice::base::metrics::Registry::default();
                let running = plan.start(metrics.clone()).unwrap();
                let handle = running.reload_handle();
                if let (Some(sample), Some(plugin)) = (sample, plugin.as_ref()) {
                    let spec = ShadowSpec {
                        transform: "keep".into(),
                        sample,
                        duration: None,
                        masks: false,
                        hide_values: false,
                        totals: metrics.shadows.clone(),
                        memory_mib: None,
                        time_budget: None,
                    };
                    let plugin = match plugin {
                        ShadowPlugin::Bundled(b) => ShadowPlugin::Bundled(b.clone()),
                        ShadowPlugin::Bytes(n, b) => ShadowPlugin::Bytes(n.clone(), b.clone()),
                    };
                    handle
                        .start_shadow(plugin, shadow_config.map(str::to_string), spec)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (started, cpu) = (std::time::Instant::now(), cpu_time());
                std::fs::rename(
                    dir.path().join("input.tmp"),
                    dir.path().join("in/input.log"),
                )
                .unwrap();
                let sink = metrics.component("out", sluice::base::metrics::Kind::Sink);
                while sink.events_out.load(std::sync::atomic::Ordering::Relaxed) < kept {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let took = (started.elapsed(), cpu_time() - cpu);
                let st = handle.shadow_status(Some("keep")).await.unwrap();
                running.shutdown().await;
                running.wait().await.unwrap();
                (took.0, took.1, st)
            });
            walls.push(wall);
            cpus.push(cpu);
            status = st;
        }
        let wall = median(walls);
        let cpu = median(cpus);
        let rate = n as f64 / wall.as_secs_f64();
        let ratio = base.map_or(1.0, |b: f64| rate / b);
        base.get_or_insert(rate);
        let compared = match status["shadows"].get(0) {
            Some(s) => format!(
                "; {} compared {} events ({} kept_vs_dropped, {} error), skipped {}",
                s["version"],
                s["events"],
                s["outcomes"]["kept_vs_dropped"],
                s["outcomes"]["error"],
                s["skipped_events"]
            ),
            None => String::new(),
        };
        println!(
            "  {name:<19} {:>7.3} s  {:>6.2} M events/s  CPU {:>5.2} s  {:>5.2}x of no shadow{compared}",
            wall.as_secs_f64(),
            rate / 1e6,
            cpu.as_secs_f64(),
            ratio
        );
    }
}

/// A JSON object as a TOML inline table (the filter's config).
fn toml_inline(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    fn go(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(m) => format!(
                "{{ {} }}",
                m.iter()
                    .map(|(k, v)| format!("{k} = {}", go(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            serde_json::Value::Array(a) => {
                format!("[{}]", a.iter().map(go).collect::<Vec<_>>().join(", "))
            }
            other => other.to_string(),
        }
    }
    go(&v)
}
