//! Shadow runs (`sluice plugin shadow`): a new version beside the live one
//! on the same batches, compared event by event, then promoted or stopped;
//! through the real CLI and the admin port of a running pipeline.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::start_with_admin as start;
use crate::util::{counts, free_port, read_json_lines, sluice, succeeds, toml_path, until};

fn pipeline(port: u16, transform: &str) -> String {
    format!(
        r#"[admin]
address = "127.0.0.1:{port}"

[reload]
watch = false

[batch]
max_events = 50
max_wait = "20ms"

[sources.in]
type = "file"
path = "in.log"
follow = true

{transform}
[sinks.out]
type = "file"
path = "out.log"
inputs = ["t"]
"#
    )
}

/// Append events to in.log, `chunk` at a time with a pause between.
fn append(dir: &Path, events: impl Iterator<Item = Value>, chunk: usize, pause: Duration) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("in.log"))
        .unwrap();
    let events: Vec<Value> = events.collect();
    for c in events.chunks(chunk) {
        let mut buf = Vec::new();
        for e in c {
            serde_json::to_writer(&mut buf, e).unwrap();
            buf.push(b'\n');
        }
        f.write_all(&buf).unwrap();
        f.flush().unwrap();
        std::thread::sleep(pause);
    }
}

fn shadow_cli(pipeline: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = sluice();
    cmd.args(["plugin", "shadow"])
        .args(args)
        .arg("--pipeline")
        .arg(pipeline);
    cmd
}

async fn status(pipeline: &Path, transform: &str) -> Value {
    let out = succeeds(shadow_cli(
        pipeline,
        &["status", "--transform", transform, "--json"],
    ))
    .await;
    let v: Value = serde_json::from_str(&out).unwrap();
    v["shadows"][0].clone()
}

fn service(i: usize) -> &'static str {
    ["a", "b", "c"][i % 3]
}

fn event(i: usize) -> Value {
    json!({"timestamp": "2026-12-07T10:00:00Z", "i": i, "service": service(i), "message": format!("event {i}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_v2_is_compared_then_promoted_without_loss() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.log"), "").unwrap();
    let port = free_port();
    let live = r#"[transforms.t]
plugin = "filter"
inputs = ["in"]
config = { conditions = [{ field = "service", equals = "a", negate = true }] }
"#;
    let (running, metrics, path) = start(d.path(), &pipeline(port, live)).await;
    let v2 = r#"{"conditions":[{"field":"service","equals":"a","negate":true},{"field":"service","equals":"b","negate":true}]}"#;
    let said = succeeds(shadow_cli(
        &path,
        &[
            "filter",
            "--transform",
            "t",
            "--config",
            v2,
            "--sample",
            "1",
        ],
    ))
    .await;
    assert!(
        said.contains("shadow of `t`") && said.contains("running"),
        "{said}"
    );

    // 3,000 events: the live filter drops service a, the shadow a and b.
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        append(&dir, (0..3000).map(event), 100, Duration::from_millis(15))
    })
    .await
    .unwrap();
    until("the live output", 60, || {
        counts(&metrics, "out").events_out == 2000
    })
    .await;
    let mut s = Value::Null;
    for _ in 0..200 {
        s = status(&path, "t").await;
        if s["events"].as_u64().unwrap() + s["skipped_events"].as_u64().unwrap() >= 3000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // On a loaded machine the idle-priority shadow may fall behind and
    // skip whole batches (counted, never waited for): every event is
    // either compared or counted as skipped, and among the compared ones
    // every third (service b) differs. A batch of n consecutive events
    // holds n/3 of b, give or take one, hence the bound by batches.
    let n = |v: &Value| v.as_u64().unwrap();
    let (events, skipped, batches) = (n(&s["events"]), n(&s["skipped_events"]), n(&s["batches"]));
    let (kvd, same) = (
        n(&s["outcomes"]["kept_vs_dropped"]),
        n(&s["outcomes"]["same"]),
    );
    assert_eq!(events + skipped, 3000, "{s}");
    assert!(events > 0, "the shadow compared nothing: {s}");
    assert_eq!(kvd + same, events, "{s}");
    assert!((3 * kvd).abs_diff(events) <= 2 * batches, "{s}");
    if skipped == 0 {
        assert_eq!(kvd, 1000, "{s}");
    }
    for k in ["routed", "replaced", "error"] {
        assert_eq!(s["outcomes"][k], 0, "{k}: {s}");
    }
    let sample = &s["samples"][0];
    assert_eq!(sample["outcome"], "kept_vs_dropped");
    assert_eq!(sample["live"], "kept");
    assert_eq!(sample["shadow"], "dropped");
    assert_eq!(sample["event"]["service"], "b", "{sample}");
    assert!(
        s["live_ns_per_event"].as_u64().is_some() && s["shadow_ns_per_event"].as_u64().is_some()
    );
    // The live output is the live version's alone.
    let out = read_json_lines(&d.path().join("out.log"));
    assert_eq!(out.len(), 2000);
    assert!(out.iter().all(|e| e["service"] != "a"));
    assert_eq!(out.iter().filter(|e| e["service"] == "b").count(), 1000);
    // On /metrics.
    let (code, text) = crate::client::get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        text.contains(&format!(
            r#"sluice_shadow_events_total{{transform="t",outcome="kept_vs_dropped"}} {kvd}"#
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        r#"sluice_shadow_events_total{{transform="t",outcome="same"}} {same}"#
    )));
    // The live page's data.
    let (code, ui) = crate::client::get(port, "/ui/shadow");
    assert_eq!(code, 200);
    assert!(ui.contains("kept_vs_dropped"), "{ui}");

    // Promote while events flow: every event once, through one version or
    // the other; from the promote on, b is dropped.
    let dir = d.path().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        append(
            &dir,
            (3000..9000).map(event),
            100,
            Duration::from_millis(10),
        )
    });
    tokio::time::sleep(Duration::from_millis(250)).await;
    let said = succeeds(shadow_cli(&path, &["promote", "--transform", "t"])).await;
    assert!(said.contains("ended (promoted)"), "{said}");
    writer.await.unwrap();
    until("every event through the filter", 60, || {
        let t = counts(&metrics, "t");
        t.events_in == 9000 && counts(&metrics, "out").events_out == t.events_out
    })
    .await;
    let out = read_json_lines(&d.path().join("out.log"));
    let mut seen = vec![0u32; 9000];
    for e in &out {
        seen[e["i"].as_u64().unwrap() as usize] += 1;
    }
    let b_kept: Vec<usize> = (0..9000)
        .filter(|&i| service(i) == "b" && seen[i] == 1)
        .collect();
    let b_gone: Vec<usize> = (0..9000)
        .filter(|&i| service(i) == "b" && seen[i] == 0)
        .collect();
    for (i, n) in seen.iter().enumerate() {
        match service(i) {
            "a" => assert_eq!(*n, 0, "event {i}"),
            "c" => assert_eq!(*n, 1, "event {i} lost or doubled"),
            _ => assert!(*n <= 1, "event {i} doubled"),
        }
    }
    assert!(
        b_kept.len() >= 1000 && !b_gone.is_empty(),
        "{} kept",
        b_kept.len()
    );
    assert!(
        b_kept.last().unwrap() < b_gone.first().unwrap(),
        "the new version takes over at one batch: b kept up to {}, dropped from {}",
        b_kept.last().unwrap(),
        b_gone.first().unwrap()
    );
    let s = status(&path, "t").await;
    assert_eq!(s["ended"], "promoted");
    // Nothing to promote or stop now.
    let refused = shadow_cli(&path, &["stop", "--transform", "t"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no shadow runs beside `t`"));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mask_that_unmasks_is_reported_without_showing_the_emails() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.log"), "").unwrap();
    let port = free_port();
    let live = "[transforms.t]\nplugin = \"mask\"\ninputs = [\"in\"]\n";
    let (running, metrics, path) = start(d.path(), &pipeline(port, live)).await;
    // v2 looks for IPv4 addresses only: emails pass in clear.
    succeeds(shadow_cli(
        &path,
        &[
            "mask",
            "--transform",
            "t",
            "--config",
            r#"{"detect":["ipv4"]}"#,
        ],
    ))
    .await;
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        append(
            &dir,
            (0..500)
                .map(|i| json!({"i": i, "message": format!("order {i} for user{i}@example.com")})),
            50,
            Duration::from_millis(10),
        )
    })
    .await
    .unwrap();
    until("the live output", 60, || {
        counts(&metrics, "out").events_out == 500
    })
    .await;
    let mut s = Value::Null;
    for _ in 0..200 {
        s = status(&path, "t").await;
        if s["events"].as_u64().unwrap() + s["skipped_events"].as_u64().unwrap() >= 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s["outcomes"]["replaced"].as_u64().unwrap(),
        s["events"].as_u64().unwrap(),
        "{s}"
    );
    assert!(s["events"].as_u64().unwrap() > 0);
    assert!(!s["samples"].as_array().unwrap().is_empty());
    let sample = &s["samples"][0];
    assert_eq!(sample["fields"][0]["path"], "message", "{sample}");
    assert_eq!(sample["fields"][0]["shadow"], "(hidden)", "{sample}");
    // No email in clear anywhere: status, the CLI's text, the page's data.
    let text = succeeds(shadow_cli(&path, &["status"])).await;
    let (_, ui) = crate::client::get(port, "/ui/shadow");
    for shown in [s.to_string(), text, ui] {
        assert!(!shown.contains("@example.com"), "{shown}");
    }
    let out = std::fs::read_to_string(d.path().join("out.log")).unwrap();
    assert!(!out.contains("@example.com"));
    // Stop discards it; the live version goes on.
    let said = succeeds(shadow_cli(&path, &["stop", "--transform", "t"])).await;
    assert!(said.contains("ended (stopped)"), "{said}");
    // Through the admin port alone: a bundled shadow, a wrong request, and
    // a pipeline reload, which ends the shadow and says so.
    let r = crate::client::post(
        port,
        "/shadow?transform=t&sample=2&plugin=mask",
        "application/json",
        b"",
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("`sample` must be"));
    let r = crate::client::post(
        port,
        "/shadow?transform=nope&plugin=mask",
        "application/json",
        b"",
    );
    assert!(r.body.contains("no transform `nope`"));
    let r = crate::client::post(port, "/shadow?transform=t&plugin=mask", "text/plain", b"");
    assert_eq!(r.status, 403, "a form could send this: refused");
    let r = crate::client::post(
        port,
        "/shadow?transform=t&plugin=mask",
        "application/json",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = crate::client::post(port, "/reload", "application/json", b"");
    assert_eq!(r.status, 200);
    let s = status(&path, "t").await;
    assert_eq!(s["ended"], "the pipeline was reloaded", "{s}");
    // `--duration` ends it by itself, traffic or not.
    succeeds(shadow_cli(
        &path,
        &["mask", "--transform", "t", "--duration", "300ms"],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let s = status(&path, "t").await;
    assert_eq!(s["ended"], "its duration elapsed", "{s}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_traps_loops_and_runs_out_of_memory_costs_the_live_pipeline_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("in.log"), "").unwrap();
    let port = free_port();
    let live = format!(
        "[transforms.t]\nplugin = {}\ninputs = [\"in\"]\ntime_budget = \"50ms\"\nmemory_mib = 32\n",
        toml_path(crate::NOOP)
    );
    let (running, metrics, path) = start(d.path(), &pipeline(port, &live)).await;
    // Its own limits, tighter than the live plugin's.
    succeeds(shadow_cli(
        &path,
        &[
            crate::CHAOS,
            "--transform",
            "t",
            "--memory-mib",
            "16",
            "--time-budget",
            "40ms",
        ],
    ))
    .await;
    // 1% of events panic in the shadow, two loop, two allocate without bound.
    let chaos = |i: usize| match i {
        _ if i % 100 == 7 => Some("panic"),
        500 | 1500 => Some("loop"),
        900 | 1900 => Some("alloc"),
        _ => None,
    };
    let events: Vec<Value> = (0..2000)
        .map(|i| match chaos(i) {
            Some(c) => json!({"timestamp": "2026-12-07T10:00:00Z", "i": i, "chaos": c}),
            None => json!({"timestamp": "2026-12-07T10:00:00Z", "i": i}),
        })
        .collect();
    let input = events.clone();
    let dir = d.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        append(&dir, input.into_iter(), 100, Duration::from_millis(10))
    })
    .await
    .unwrap();
    until("the live output", 60, || {
        counts(&metrics, "out").events_out == 2000
    })
    .await;
    // The live output is the input, in order; the live stage failed nothing.
    let out = read_json_lines(&d.path().join("out.log"));
    assert!(out == events, "the live output differs from the input");
    assert_eq!(counts(&metrics, "t").failed, 0);
    let mut s = Value::Null;
    for _ in 0..300 {
        s = status(&path, "t").await;
        if s["events"].as_u64().unwrap() + s["skipped_events"].as_u64().unwrap() >= 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (same, error) = (
        s["outcomes"]["same"].as_u64().unwrap(),
        s["outcomes"]["error"].as_u64().unwrap(),
    );
    assert_eq!(same + error, s["events"].as_u64().unwrap(), "{s}");
    assert!(error >= 1, "{s}");
    // Each failure is one event's, with its reason.
    let reasons: Vec<String> = s["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["shadow"].as_str().unwrap().to_string())
        .collect();
    assert!(
        reasons.iter().all(|r| r.starts_with("failed: ")),
        "{reasons:?}"
    );
    assert!(s["running"].as_bool().unwrap(), "{s}");
    assert_eq!(s["memory_mib"], 16, "{s}");
    assert_eq!(s["time_budget"], "40ms", "{s}");
    running.shutdown().await;
}
