//! Pipelines with misbehaving plugins: each bad event costs itself only.

use serde_json::json;

use crate::util::{counts, read_json_lines, rss_kib, run, toml_path, write_json_lines};
use crate::CHAOS;

fn pipeline(on_error: &str) -> String {
    format!(
        r#"[batch]
max_events = 64

[sources.in]
type = "file"
path = "in.log"
format = "json"

[transforms.chaos]
plugin = {plugin}
inputs = ["in"]
on_error = "{on_error}"
time_budget = "50ms"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["chaos"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
        plugin = toml_path(CHAOS)
    )
}

/// 500 events, every 50th poisoned with a rotating kind of failure.
fn events() -> (Vec<serde_json::Value>, Vec<(u64, &'static str)>) {
    let kinds = ["panic", "loop", "alloc", "stack", "garbage"];
    let mut events = Vec::new();
    let mut poisoned = Vec::new();
    for i in 0..500u64 {
        if i % 50 == 7 {
            let kind = kinds[(i / 50) as usize % kinds.len()];
            events.push(json!({"timestamp": "2026-01-01T00:00:00Z", "i": i, "chaos": kind}));
            poisoned.push((i, kind));
        } else {
            events.push(json!({"timestamp": "2026-01-01T00:00:00Z", "i": i}));
        }
    }
    (events, poisoned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_events_are_dead_lettered_and_the_rest_flow() {
    let d = tempfile::tempdir().unwrap();
    let (events, poisoned) = events();
    write_json_lines(&d.path().join("in.log"), &events);
    // A malformed line too: the source dead-letters it as a decode error.
    let mut text = std::fs::read_to_string(d.path().join("in.log")).unwrap();
    text.push_str("{\"broken\": \n");
    std::fs::write(d.path().join("in.log"), text).unwrap();

    let metrics = run(d.path(), &pipeline("dead-letter")).await.unwrap();

    let out = read_json_lines(&d.path().join("out.log"));
    let clean: Vec<u64> = (0..500).filter(|i| i % 50 != 7).collect();
    let got: Vec<u64> = out.iter().map(|e| e["i"].as_u64().unwrap()).collect();
    assert_eq!(got, clean, "every clean event, once, in order");

    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(dead.len(), poisoned.len() + 1);
    let decode: Vec<_> = dead.iter().filter(|d| d["component"] == "in").collect();
    assert_eq!(decode.len(), 1);
    assert_eq!(decode[0]["error"]["kind"], "decode");
    assert_eq!(decode[0]["event"], "{\"broken\": ");
    for (i, kind) in poisoned {
        let letter = dead
            .iter()
            .find(|d| d["event"]["i"] == i)
            .unwrap_or_else(|| panic!("event {i} not dead-lettered"));
        let want = match kind {
            "panic" => "trap",
            "loop" => "timeout",
            "alloc" => "memory",
            "stack" => "stack_overflow",
            _ => "invalid_output",
        };
        assert_eq!(letter["error"]["kind"], want, "{letter}");
        // #43: the reason and the setting first, no wasm backtrace.
        let message = letter["error"]["message"].as_str().unwrap();
        let lead = match kind {
            "panic" => "panicked: chaos: asked to panic (at ",
            "loop" => "timed out after time_budget = 50ms",
            "alloc" => "needed more than memory_mib = 64",
            "stack" => "overflowed its stack of stack_kib = ",
            _ => "the plugin replaced the event with invalid JSON",
        };
        assert!(message.starts_with(lead), "{kind}: {message}");
        assert!(
            !message.contains("<unknown>") && !message.contains("backtrace"),
            "{kind}: {message}"
        );
        assert_eq!(letter["component"], "chaos");
        assert!(
            letter["plugin_version"]
                .as_str()
                .unwrap()
                .contains("sha256:"),
            "{letter}"
        );
        assert!(letter["plugin"].as_str().unwrap().ends_with("chaos.wasm"));
    }
    let c = counts(&metrics, "chaos");
    assert_eq!(c.events_in, 500);
    assert_eq!(c.events_out, 490);
    assert_eq!(c.failed, 10);
    assert!(c.restarts >= 8, "a fresh instance after each trap: {c:?}");
    assert_eq!(counts(&metrics, "in").failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_drop_and_pass() {
    let d = tempfile::tempdir().unwrap();
    let events: Vec<_> = (0..20u64)
        .map(|i| {
            if i == 5 {
                json!({"i": i, "chaos": "panic"})
            } else {
                json!({"i": i})
            }
        })
        .collect();
    write_json_lines(&d.path().join("in.log"), &events);

    let metrics = run(d.path(), &pipeline("drop")).await.unwrap();
    let out = read_json_lines(&d.path().join("out.log"));
    assert_eq!(out.len(), 19);
    assert!(
        !d.path().join("dead.log").exists()
            || read_json_lines(&d.path().join("dead.log")).is_empty()
    );
    assert_eq!(counts(&metrics, "chaos").failed, 1);

    std::fs::remove_file(d.path().join("out.log")).unwrap();
    run(d.path(), &pipeline("pass")).await.unwrap();
    let out = read_json_lines(&d.path().join("out.log"));
    let ids: Vec<u64> = out.iter().map(|e| e["i"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 20, "pass forwards the failing event unchanged");
    assert!(out.iter().any(|e| e["chaos"] == "panic"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_percent_poison_in_100k() {
    let d = tempfile::tempdir().unwrap();
    let kinds = ["panic", "loop", "alloc", "stack"];
    let mut text = String::with_capacity(100_000 * 40);
    let mut poisoned = std::collections::BTreeMap::new();
    for i in 0..100_000u64 {
        if i % 100 == 42 {
            let kind = kinds[(i / 100) as usize % kinds.len()];
            text.push_str(&format!(
                "{{\"timestamp\":\"t\",\"i\":{i},\"chaos\":\"{kind}\"}}\n"
            ));
            poisoned.insert(i, kind);
        } else {
            text.push_str(&format!("{{\"timestamp\":\"t\",\"i\":{i}}}\n"));
        }
    }
    std::fs::write(d.path().join("in.log"), text).unwrap();
    let toml = pipeline("dead-letter")
        .replace("max_events = 64", "max_events = 256")
        // Short enough that 250 endless loops cost seconds, long enough
        // that a clean event preempted on a loaded machine is not one.
        .replace("time_budget = \"50ms\"", "time_budget = \"25ms\"");
    let before = rss_kib();
    let metrics = run(d.path(), &toml).await.unwrap();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;

    let out = read_json_lines(&d.path().join("out.log"));
    let got: Vec<u64> = out.iter().map(|e| e["i"].as_u64().unwrap()).collect();
    let clean: Vec<u64> = (0..100_000).filter(|i| i % 100 != 42).collect();
    assert!(
        got == clean,
        "every clean event, once, in order ({} of {})",
        got.len(),
        clean.len()
    );
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(dead.len(), poisoned.len());
    for letter in &dead {
        let i = letter["event"]["i"].as_u64().unwrap();
        let want = match poisoned[&i] {
            "panic" => "trap",
            "loop" => "timeout",
            "alloc" => "memory",
            _ => "stack_overflow",
        };
        assert_eq!(letter["error"]["kind"], want, "{letter}");
    }
    assert_eq!(counts(&metrics, "chaos").failed, 1000);
    // Memory stays bounded: instances are dropped after each failure.
    assert!(grown_mib < 512, "resident memory grew by {grown_mib} MiB");
}

/// `concurrency = 3`: three instances of the plugin, each `init`-ed on its
/// own, work on consecutive batches; the next stage still gets every event
/// once and in order, and a poisoned event still costs itself only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_consecutive_batches_keep_the_order() {
    let d = tempfile::tempdir().unwrap();
    let events: Vec<_> = (0..4000u64)
        .map(|i| match i {
            1234 => json!({"i": i, "chaos": "panic"}),
            3001 => json!({"i": i, "chaos": "loop"}),
            _ => json!({"i": i, "chaos": "whoami"}),
        })
        .collect();
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = pipeline("dead-letter")
        .replace("max_events = 64", "max_events = 16")
        .replace(
            "time_budget = \"50ms\"",
            "time_budget = \"50ms\"\nconcurrency = 3",
        );
    let metrics = run(d.path(), &toml).await.unwrap();

    let out = read_json_lines(&d.path().join("out.log"));
    let got: Vec<u64> = out.iter().map(|e| e["i"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (0..4000).filter(|&i| i != 1234 && i != 3001).collect();
    assert!(
        got == want,
        "every event once, in order ({} of {})",
        got.len(),
        want.len()
    );
    // Before the first poisoned batch no instance was replaced (a trap
    // or a timeout makes a fresh one, with a new number).
    let instances: std::collections::BTreeSet<u64> = out
        .iter()
        .filter(|e| e["i"].as_u64().unwrap() < 1216)
        .map(|e| e["instance"].as_u64().unwrap())
        .collect();
    assert!(
        (2..=3).contains(&instances.len()),
        "the batches were shared by the instances: {instances:?}"
    );
    let dead = read_json_lines(&d.path().join("dead.log"));
    let kinds: Vec<(u64, &str)> = dead
        .iter()
        .map(|l| {
            (
                l["event"]["i"].as_u64().unwrap(),
                l["error"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(
        kinds.contains(&(1234, "trap")) && kinds.contains(&(3001, "timeout")),
        "{kinds:?}"
    );
    let c = counts(&metrics, "chaos");
    assert_eq!((c.events_in, c.events_out, c.failed), (4000, 3998, 2));
}
