//! Sources: files read once or followed, text and JSON lines, batching.

use std::io::Write;
use std::time::Duration;

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::topology;

use crate::util::{counts, read_json_lines, run, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_of_mixed_lines() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("app.log"),
        "{\"level\":\"info\",\"message\":\"json\"}\r\nplain text line\n\n{\"timestamp\":\"2026-01-01T00:00:00Z\",\"n\":1}\nlast line without newline",
    )
    .unwrap();
    let toml = r#"
[sources.app]
type = "file"
path = "app.log"

[sinks.out]
type = "file"
path = "out/events.log"
inputs = ["app"]
"#;
    let metrics = run(d.path(), toml).await.unwrap();
    let out = read_json_lines(&d.path().join("out/events.log"));
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["message"], "json");
    assert!(
        out[0]["timestamp"].as_str().unwrap().ends_with('Z'),
        "a timestamp is added: {}",
        out[0]
    );
    assert_eq!(out[1]["message"], "plain text line");
    assert_eq!(out[1]["source"], "app");
    assert!(out[1]["file"].as_str().unwrap().ends_with("app.log"));
    assert_eq!(
        out[2],
        serde_json::json!({"timestamp":"2026-01-01T00:00:00Z","n":1})
    );
    assert_eq!(out[3]["message"], "last line without newline");
    assert_eq!(counts(&metrics, "app").events_in, 4);
    assert_eq!(counts(&metrics, "out").events_out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_bounded_by_max_events() {
    let d = tempfile::tempdir().unwrap();
    let toml = r#"
[batch]
max_events = 1000

[sources.gen]
type = "generate"
count = 2500
batch = { max_events = 100 }

[transforms.keep]
plugin = "filter"
inputs = ["gen"]
config = { min_level = "trace" }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["keep"]
"#;
    let metrics = run(d.path(), toml).await.unwrap();
    assert_eq!(read_json_lines(&d.path().join("out.log")).len(), 2500);
    assert_eq!(counts(&metrics, "keep").events_in, 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_file_delivers_appended_lines_and_drains_on_shutdown() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("app.log");
    std::fs::write(&input, "{\"n\":0}\n").unwrap();
    let toml = r#"
[batch]
max_wait = "20ms"

[sources.app]
type = "file"
path = "app.log"
follow = true
poll_interval = "10ms"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["app"]
"#;
    std::fs::write(d.path().join("pipeline.toml"), toml).unwrap();
    let config = PipelineConfig::load(&d.path().join("pipeline.toml")).unwrap();
    let plan = topology::plan(config, runtime()).await.unwrap();
    let metrics = Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    let stop = running.stop_handle();
    let waiter = tokio::spawn(running.wait());

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    for n in 1..=5 {
        writeln!(f, "{{\"n\":{n}}}").unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Wait for the last line to reach the sink, then stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counts(&metrics, "out").events_out < 6 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "appended lines not delivered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ns: Vec<u64> = read_json_lines(&d.path().join("out.log"))
        .iter()
        .map(|e| e["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generator_honours_count_and_rate() {
    let d = tempfile::tempdir().unwrap();
    let toml = r#"
[batch]
max_wait = "20ms"

[sources.gen]
type = "generate"
count = 30
rate = 100.0

[sinks.out]
type = "file"
path = "out.log"
inputs = ["gen"]
"#;
    let started = std::time::Instant::now();
    run(d.path(), toml).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(read_json_lines(&d.path().join("out.log")).len(), 30);
    // 30 events at 100/s take about 0.3 s: not a timing test, a sanity bound.
    assert!(
        elapsed >= Duration::from_millis(250),
        "rate not applied: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_their_own_time_not_the_arrival_time() {
    let d = tempfile::tempdir().unwrap();
    // As Monolog, Python logging (a JSON formatter), loguru (serialize=True),
    // pino and bunyan write them; then one whose time does not parse.
    let lines = [
        r#"{"message":"monolog","datetime":"2026-11-23T10:00:00.123456+00:00","channel":"app"}"#,
        r#"{"msg":"python","created":1795428000.123,"levelname":"INFO"}"#,
        r#"{"text":"loguru","record":{"time":{"repr":"2026-11-23 10:00:00.123000+00:00","timestamp":1795428000.123},"message":"loguru"}}"#,
        r#"{"msg":"pino","time":1795428000123,"level":30}"#,
        r#"{"msg":"bunyan","time":"2026-11-23T10:00:00.123Z","v":0}"#,
        r#"{"msg":"bad","datetime":"the day before yesterday"}"#,
        r#"{"msg":"custom","when":"23/Nov/2026:11:00:00 +0100"}"#,
    ];
    std::fs::write(d.path().join("in.log"), lines.join("\n") + "\n").unwrap();
    let toml = r#"[sources.app]
type = "file"
path = "in.log"
follow = false

[sources.custom]
type = "file"
path = "in.log"
follow = false
timestamp = [{ field = "when", format = "%d/%b/%Y:%H:%M:%S %z" }]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["app"]

[sinks.custom_out]
type = "file"
path = "custom.log"
inputs = ["custom"]
"#;
    let metrics = crate::util::run(d.path(), toml).await.unwrap();
    let out = crate::util::read_json_lines(&d.path().join("out.log"));
    let time = |i: usize| out[i]["timestamp"].as_str().unwrap().to_string();
    // Each with the precision it had: Monolog's microseconds stay.
    assert_eq!(out[0]["timestamp"], "2026-11-23T10:00:00.123456Z");
    for e in &out[1..5] {
        assert_eq!(e["timestamp"], "2026-11-23T10:00:00.123Z", "{e}");
    }
    // Not parsable: kept as it was, the arrival time used, counted.
    assert_eq!(out[5]["datetime"], "the day before yesterday");
    assert!(
        time(5).starts_with(&chrono::Utc::now().format("%Y-%m-%d").to_string()),
        "{}",
        out[5]
    );
    assert_eq!(crate::util::counts(&metrics, "app").timestamps_unparsed, 1);
    // The original fields stay.
    assert_eq!(out[1]["created"], 1795428000.123);
    // A configured candidate.
    let custom = crate::util::read_json_lines(&d.path().join("custom.log"));
    let c = custom.iter().find(|e| e["msg"] == "custom").unwrap();
    assert_eq!(c["timestamp"], "2026-11-23T10:00:00.000Z");
}
