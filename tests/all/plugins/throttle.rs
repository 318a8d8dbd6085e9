//! The `throttle` component, alone and in a pipeline.

use std::path::Path;

use sluice::config::PipelineConfig;

use super::{load, process};
use crate::util::{counts, read_json_lines, start, until};
use crate::THROTTLE;

#[test]
fn windows_last_across_batches_and_the_over_share_is_routed() {
    let mut p = load(
        THROTTLE,
        r#"{"key":["service"],"events":2,"window":"1h","exceeded":"route:over"}"#,
    );
    assert_eq!(p.info().outputs, ["over"]);
    let v = process(
        &mut p,
        &[
            r#"{"service":"a"}"#,
            r#"{"service":"a"}"#,
            r#"{"service":"b"}"#,
            r#"{"service":"a"}"#,
        ],
    );
    assert_eq!(v.actions, [1, 1, 1, 1]);
    assert_eq!(v.ports, [0, 0, 0, 1]);
    // The next batch: the same instance, the same window.
    let v = process(&mut p, &[r#"{"service":"b"}"#, r#"{"service":"b"}"#]);
    assert_eq!(v.ports, [0, 1]);
    // Dropping instead, and a bytes limit.
    let mut p = load(THROTTLE, r#"{"bytes":40,"window":"1h"}"#);
    let v = process(
        &mut p,
        &[
            r#"{"m":"0123456789"}"#,
            r#"{"m":"0123456789"}"#,
            r#"{"m":"x"}"#,
        ],
    );
    assert_eq!(
        v.actions,
        [1, 1, 0],
        "18 + 18 bytes pass, 18 more would not"
    );
}

fn pipeline(events: u64) -> String {
    format!(
        r#"[reload]
watch = false

[batch]
max_wait = "10ms"

[sources.app]
type = "file"
path = "in.log"
follow = true

[transforms.limit]
plugin = "throttle"
inputs = ["app"]
config = {{ key = ["service"], events = {events}, window = "1h", exceeded = "route:over" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["limit"]

[sinks.over]
type = "file"
path = "over.log"
inputs = ["limit.over"]
"#
    )
}

fn append(path: &Path, service: &str, n: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in 0..n {
        writeln!(f, r#"{{"service":"{service}","n":{i}}}"#).unwrap();
    }
}

/// Per service in `file`: how many events.
fn per_service(file: &Path, service: &str) -> usize {
    read_json_lines(file)
        .iter()
        .filter(|e| e["service"] == service)
        .count()
}

/// Through a pipeline: each service passes its limit and the rest goes to
/// `limit.over`. A reload that leaves the transform's config as it was
/// keeps the windows (more of a service over its limit all go over); one
/// that changes it starts with empty windows. `concurrency` above 1 is
/// refused: one instance sees every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_holds_each_service_to_its_limit_across_reloads() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let input = dir.join("in.log");
    append(&input, "a", 250);
    append(&input, "b", 50);
    append(&input, "c", 120);
    let (running, metrics) = start(dir, &pipeline(100)).await;
    let written = |n: u64| {
        let m = metrics.clone();
        move || counts(&m, "out").events_out + counts(&m, "over").events_out >= n
    };
    until("the first 420 events", 30, written(420)).await;
    let (out, over) = (dir.join("out.log"), dir.join("over.log"));
    assert_eq!(
        [
            per_service(&out, "a"),
            per_service(&out, "b"),
            per_service(&out, "c")
        ],
        [100, 50, 100]
    );
    assert_eq!(
        [per_service(&over, "a"), per_service(&over, "c")],
        [150, 20]
    );

    // A reload that changes something else: the windows stay.
    let reload = running.reload_handle();
    let reload_to = |toml: String| {
        let reload = reload.clone();
        async move {
            std::fs::write(dir.join("pipeline.toml"), toml).unwrap();
            reload
                .reload(PipelineConfig::load(&dir.join("pipeline.toml")).unwrap())
                .await
                .unwrap();
        }
    };
    reload_to(format!(
        "{}\n[sinks.copy]\ntype = \"file\"\npath = \"copy.log\"\ninputs = [\"app\"]\n",
        pipeline(100)
    ))
    .await;
    append(&input, "b", 60);
    until("60 more", 30, written(480)).await;
    assert_eq!(per_service(&out, "b"), 100, "b's window kept its 50");
    assert_eq!(per_service(&over, "b"), 10);

    // A new limit: new windows.
    reload_to(pipeline(200)).await;
    append(&input, "a", 30);
    until("30 more", 30, written(510)).await;
    assert_eq!(per_service(&out, "a"), 130, "a's window started again");
    running.shutdown().await;
    running.wait().await.unwrap();

    // One instance: `concurrency` above 1 is refused, naming the key.
    let many = pipeline(100).replace(
        "plugin = \"throttle\"",
        "plugin = \"throttle\"\nconcurrency = 2",
    );
    std::fs::write(dir.join("many.toml"), many).unwrap();
    let e = PipelineConfig::load(&dir.join("many.toml")).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("transforms.limit.concurrency") && e.contains("one instance"),
        "{e}"
    );
}

/// `exceeded = "dead_letter"`: each event over the limit reaches the dead
/// letters with the reason, and alone: the batch is not run again (a
/// plugin-wide failure would have re-run halves of it, and a throttle
/// counted their events twice, passing fewer than its limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_over_the_limit_are_dead_lettered_once_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let input = dir.join("in.log");
    // Interleaved, so every batch holds events of each service.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&input).unwrap();
        for i in 0..900 {
            let service = ["a", "b", "c"][i % 3];
            writeln!(f, r#"{{"service":"{service}","n":{i}}}"#).unwrap();
        }
    }
    let toml = r#"[reload]
watch = false

[batch]
max_events = 1000
max_wait = "200ms"

[sources.app]
type = "file"
path = "in.log"
follow = true

[transforms.limit]
plugin = "throttle"
inputs = ["app"]
config = { key = ["service"], events = 100, window = "1h", exceeded = "dead_letter" }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["limit"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#;
    let (running, metrics) = start(dir, toml).await;
    until("every event written or dead-lettered", 30, || {
        counts(&metrics, "out").events_out + counts(&metrics, "dead").events_out >= 900
    })
    .await;
    let out = dir.join("out.log");
    for s in ["a", "b", "c"] {
        assert_eq!(per_service(&out, s), 100, "{s}");
    }
    let dead = read_json_lines(&dir.join("dead.log"));
    assert_eq!(dead.len(), 600);
    for letter in &dead {
        assert_eq!(letter["component"], "limit");
        assert_eq!(letter["error"]["kind"], "plugin_error", "{letter}");
        assert_eq!(
            letter["error"]["message"], "throttled: over 100 events per 1h for its key",
            "{letter}"
        );
    }
    // The first 100 of each service passed; the rest are the dead letters.
    let mut late: Vec<u64> = dead
        .iter()
        .map(|l| l["event"]["n"].as_u64().unwrap())
        .collect();
    late.sort_unstable();
    assert_eq!(late, (300..900).collect::<Vec<u64>>());
    assert_eq!(counts(&metrics, "limit").failed, 600);
    running.shutdown().await;
}

/// `max_keys` bounds the plugin's memory, measured: 300,000 distinct keys
/// through a throttle that remembers 5,000 grow its instance's memory no
/// more than a few MiB, a tenth of what remembering them all takes; each
/// forgotten key is counted on `/metrics` through the host's `count`.
#[test]
fn max_keys_bounds_memory_and_evictions_are_counted() {
    let keys = 300_000usize;
    let peak = |max_keys: usize| {
        let config = format!(r#"{{"key":["k"],"events":1,"window":"1h","max_keys":{max_keys}}}"#);
        let mut p = load(THROTTLE, &config);
        let mut evicted = 0;
        for chunk in (0..keys).collect::<Vec<_>>().chunks(1000) {
            let events: Vec<String> = chunk
                .iter()
                .map(|i| format!(r#"{{"k":"key-{i:08}","message":"x"}}"#))
                .collect();
            let refs: Vec<&str> = events.iter().map(String::as_str).collect();
            let v = process(&mut p, &refs);
            assert!(v.actions.iter().all(|&a| a == 1), "every key is new");
            for (name, n) in p.take_counts() {
                assert_eq!(name, "evicted_keys");
                evicted += n;
            }
        }
        (p.memory_peak(), evicted)
    };
    let (bounded, evicted) = peak(5_000);
    let (all, none) = peak(keys);
    eprintln!(
        "throttle memory with {keys} keys: max_keys 5000 {} KiB, max_keys {keys} {} KiB",
        bounded / 1024,
        all / 1024
    );
    assert_eq!(evicted, (keys - 5_000) as u64);
    assert_eq!(none, 0);
    assert!(bounded < 8 << 20, "{bounded} bytes");
    assert!(bounded * 5 < all, "{bounded} against {all}");
}

/// The evictions reach `/metrics` as `sluice_plugin_count_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_are_on_metrics() {
    let d = tempfile::tempdir().unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(d.path().join("in.log")).unwrap();
        for i in 0..2000 {
            writeln!(f, r#"{{"k":"key-{i}"}}"#).unwrap();
        }
    }
    let toml = r#"[sources.app]
type = "file"
path = "in.log"
follow = false

[transforms.limit]
plugin = "throttle"
inputs = ["app"]
config = { key = ["k"], events = 1, window = "1h", max_keys = 500 }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["limit"]
"#;
    let metrics = crate::util::run(d.path(), toml).await.unwrap();
    assert_eq!(counts(&metrics, "out").events_out, 2000);
    let text = sluice::admin::prometheus(&metrics);
    assert!(
        text.contains(
            "sluice_plugin_count_total{component=\"limit\",name=\"evicted_keys\"} 1500\n"
        ),
        "{text}"
    );
}
