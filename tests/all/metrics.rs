//! Metrics declared in the pipeline (`type = "metric"` sinks): counters,
//! gauges and histograms of the events' fields, on `/metrics` beside
//! sluice's own; held to counts computed here from the input, to
//! `promtool check metrics`, and scraped by a real Prometheus server.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::start_with_admin as start;
use crate::util::{counts, free_port, read_json_lines, until};

const N: usize = 3000;
const LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "fatal"];
const SERVICES: [&str; 3] = ["api", "db", "web"];

/// Event `i`: a level, a service, a duration (missing for every tenth,
/// text for every tenth plus one), a queue depth, a path of seven, a size.
fn event(i: usize) -> Value {
    let mut e = json!({
        "timestamp": "2026-12-07T10:00:00Z",
        "level": LEVELS[(i * 7 + i / 5) % 5],
        "service": SERVICES[i % 3],
        "depth": i,
        "path": format!("/p{}", i % 7),
        "bytes": i % 100,
        "message": format!("request {i}"),
    });
    match i % 10 {
        0 => {}
        1 => e["duration_ms"] = json!("12.5"),
        _ => e["duration_ms"] = json!(((i * 37) % 2000) as f64 / 10.0),
    }
    e
}

fn duration(i: usize) -> Option<f64> {
    match i % 10 {
        0 => None,
        1 => Some(12.5),
        _ => Some(((i * 37) % 2000) as f64 / 10.0),
    }
}

fn pipeline(port: u16) -> String {
    format!(
        r#"[admin]
address = "127.0.0.1:{port}"

[reload]
watch = false

[batch]
max_events = 200
max_wait = "20ms"

[sources.in]
type = "file"
path = "in.log"
follow = true

[sinks.out]
type = "file"
path = "out.log"
inputs = ["in"]

[sinks.log_events]
type = "metric"
inputs = ["in"]
metric = "counter"
name = "log_events_total"
labels = {{ level = "level", service = "service" }}

[metrics.app_errors_total]
type = "counter"
inputs = ["in"]
help = "Errors and worse, by service."
conditions = [{{ field = "level", one_of = ["error", "fatal"] }}]
labels = {{ service = "service", level = "level" }}

[sinks.request_ms]
type = "metric"
inputs = ["in"]
metric = "histogram"
name = "request_duration_seconds"
value = "duration_ms"
scale = 0.001
buckets = [0.01, 0.05, 0.1]
labels = {{ service = "service" }}

[sinks.depth]
type = "metric"
inputs = ["in"]
metric = "gauge"
name = "queue_depth"
value = "depth"
labels = {{ service = "service" }}

[sinks.bytes]
type = "metric"
inputs = ["in"]
metric = "counter"
name = "bytes_by_path_total"
value = "bytes"
labels = {{ path = "path" }}
max_series = 4
"#
    )
}

/// The value of the sample `name` whose labels are exactly `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match &s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn bucket_count(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    service: &str,
    le: f64,
) -> (f64, f64, f64) {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("service") == Some(service))
        .unwrap_or_else(|| panic!("no {name} for {service}"));
    let prometheus_parse::Value::Histogram(buckets) = &s.value else {
        panic!("{name} is not a histogram: {:?}", s.value);
    };
    let at = buckets
        .iter()
        .find(|b| b.less_than == le)
        .unwrap_or_else(|| panic!("no bucket {le}"));
    let sum = sample(scrape, &format!("{name}_sum"), &[("service", service)]);
    let count = sample(scrape, &format!("{name}_count"), &[("service", service)]);
    (at.count, sum, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_metrics_equal_counts_from_the_input_and_prometheus_reads_them() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let events: Vec<Value> = (0..N).map(event).collect();
    let mut f = std::fs::File::create(d.path().join("in.log")).unwrap();
    for e in &events {
        writeln!(f, "{e}").unwrap();
    }
    drop(f);
    let (running, metrics, _) = start(d.path(), &pipeline(port)).await;
    until("every sink to take every event", 60, || {
        [
            "out",
            "log_events",
            "app_errors_total",
            "request_ms",
            "depth",
            "bytes",
        ]
        .iter()
        .all(|s| counts(&metrics, s).events_out == N as u64)
    })
    .await;
    let (status, text) = crate::client::get(port, "/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();

    // Counters by level and service, and errors only.
    let mut by: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for i in 0..N {
        *by.entry((LEVELS[(i * 7 + i / 5) % 5], SERVICES[i % 3]))
            .or_default() += 1.0;
    }
    assert_eq!(by.len(), 15, "every level meets every service");
    for ((level, service), n) in &by {
        let labels = [("level", *level), ("service", *service)];
        assert_eq!(sample(&scrape, "log_events_total", &labels), *n);
        if ["error", "fatal"].contains(level) {
            assert_eq!(sample(&scrape, "app_errors_total", &labels), *n);
        } else {
            assert!(!text.contains(&format!(
                "app_errors_total{{level=\"{level}\",service=\"{service}\"}}"
            )));
        }
    }
    assert!(text.contains("# HELP app_errors_total Errors and worse, by service.\n"));
    assert!(text.contains("# TYPE app_errors_total counter\n"));

    // The histogram (milliseconds in the events, seconds on /metrics):
    // buckets, sum and count per service; events without a number are not
    // observed, and are counted.
    for (k, service) in SERVICES.iter().enumerate() {
        let mine: Vec<f64> = (0..N)
            .filter(|i| i % 3 == k)
            .filter_map(duration)
            .map(|ms| ms * 0.001)
            .collect();
        for le in [0.01, 0.05, 0.1, f64::INFINITY] {
            let (got, sum, count) = bucket_count(&scrape, "request_duration_seconds", service, le);
            let want = mine.iter().filter(|v| **v <= le).count() as f64;
            assert_eq!(got, want, "{service} le={le}");
            assert_eq!(count, mine.len() as f64);
            assert!((sum - mine.iter().sum::<f64>()).abs() < 1e-6, "{sum}");
        }
    }
    let no_value = sample(
        &scrape,
        "sluice_metric_no_value_total",
        &[("component", "request_ms")],
    );
    assert_eq!(no_value, (N / 10) as f64);

    // The gauge holds each service's last value.
    for (k, service) in SERVICES.iter().enumerate() {
        let last = (0..N).rev().find(|i| i % 3 == k).unwrap();
        assert_eq!(
            sample(&scrape, "queue_depth", &[("service", service)]),
            last as f64
        );
    }

    // Four paths get series of their own (the first four seen); the rest
    // fold into `other`, counted.
    for p in 0..4 {
        let want: usize = (0..N).filter(|i| i % 7 == p).map(|i| i % 100).sum();
        let path = format!("/p{p}");
        assert_eq!(
            sample(&scrape, "bytes_by_path_total", &[("path", &path)]),
            want as f64
        );
    }
    let other: usize = (0..N).filter(|i| i % 7 >= 4).map(|i| i % 100).sum();
    assert_eq!(
        sample(&scrape, "bytes_by_path_total", &[("path", "other")]),
        other as f64
    );
    assert_eq!(
        sample(
            &scrape,
            "sluice_metric_folded_total",
            &[("component", "bytes")]
        ),
        (0..N).filter(|i| i % 7 >= 4).count() as f64
    );

    // promtool, Prometheus' own checker, takes the whole page.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup-test-deps installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus server scrapes the admin port and answers a query.
    let prom_port = free_port();
    std::fs::write(
        d.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let mut server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            d.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            d.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's package)");
    let query = "/api/v1/query?query=sum(app_errors_total)";
    let want: f64 = by
        .iter()
        .filter(|((l, _), _)| ["error", "fatal"].contains(l))
        .map(|(_, n)| n)
        .sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = loop {
        if let (200, body) = crate::client::get(prom_port, query) {
            let v: Value = serde_json::from_str(&body).unwrap();
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                break value.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape sluice within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(answer.parse::<f64>().unwrap(), want);
    running.shutdown().await;
}

#[tokio::test]
async fn a_declared_metric_that_cannot_be_exported_is_refused_at_its_line() {
    let d = tempfile::tempdir().unwrap();
    let head = "[sources.in]\ntype = \"stdin\"\n\n";
    for (sink, key, says) in [
        (
            "[sinks.m]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"errors\"\n",
            "sinks.m.name",
            "ends in `_total`",
        ),
        (
            "[sinks.m]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"gauge\"\nname = \"depth\"\n",
            "sinks.m.value",
            "needs `value`",
        ),
        (
            "[sinks.m]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"sluice_x_total\"\n",
            "sinks.m.name",
            "sluice's own",
        ),
        (
            "[sinks.m]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"histogram\"\nvalue = \"ms\"\nbuckets = [5, 1]\n",
            "sinks.m.buckets",
            "rising",
        ),
        (
            "[sinks.m]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"x_total\"\nlabels = { le = \"level\" }\n",
            "sinks.m.labels",
            "not a label name",
        ),
        (
            "[sinks.a]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"x_total\"\n\n[sinks.b]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"x_total\"\n",
            "sinks.b.name",
            "declared by sinks.a already",
        ),
        // The same in `[metrics.NAME]` tables, named so.
        (
            "[metrics.errors]\ntype = \"counter\"\ninputs = [\"in\"]\n",
            "metrics.errors.type",
            "ends in `_total`",
        ),
        (
            "[metrics.depth]\ntype = \"gauge\"\ninputs = [\"in\"]\n",
            "metrics.depth.value",
            "needs `value`",
        ),
        (
            "[metrics.x_total]\ntype = \"counter\"\ninputs = [\"in\"]\nbogus = 1\n",
            "metrics.x_total.bogus",
            "unknown field",
        ),
        (
            "[metrics.x_total]\ntype = \"countr\"\ninputs = [\"in\"]\n",
            "metrics.x_total.type",
            "countr",
        ),
        (
            "[metrics.x_total]\ninputs = [\"in\"]\n",
            "metrics.x_total.type",
            "missing `type`",
        ),
        (
            "[metrics.x_total]\ntype = \"counter\"\ninputs = [\"in\"]\n\n[sinks.b]\ntype = \"metric\"\ninputs = [\"in\"]\nmetric = \"counter\"\nname = \"x_total\"\n",
            "metrics.x_total",
            "declared by sinks.b already",
        ),
        (
            "[metrics.out]\ntype = \"counter\"\nname = \"o_total\"\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"in\"]\n",
            "out",
            "already used by",
        ),
    ] {
        let toml = format!("{head}{sink}");
        let err = crate::util::plan_error(d.path(), &toml).await;
        assert!(err.contains(key) && err.contains(says), "{key}: {err}");
        assert!(err.contains("pipeline.toml:"), "no line: {err}");
    }
}

/// `declared_metrics`: the declared series as events, every `interval`,
/// into any sink; the last snapshot holds what `/metrics` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_metrics_reach_a_sink_as_events() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut f = std::fs::File::create(d.path().join("in.log")).unwrap();
    for i in 0..N {
        writeln!(f, "{}", event(i)).unwrap();
    }
    drop(f);
    let toml = format!(
        "{}\n[sources.snapshots]\ntype = \"declared_metrics\"\ninterval = \"200ms\"\nnames = [\"log_events_total\", \"request_duration_seconds\"]\n\n[sinks.metric_events]\ntype = \"file\"\npath = \"metrics.log\"\ninputs = [\"snapshots\"]\n",
        pipeline(port)
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    let snapshot_total = |lines: &[Value]| -> f64 {
        // The newest snapshot of log_events_total: its 15 series.
        let Some(last) = lines
            .iter()
            .rev()
            .find(|e| e["metric"] == "log_events_total")
        else {
            return 0.0;
        };
        lines
            .iter()
            .filter(|e| e["metric"] == "log_events_total" && e["timestamp"] == last["timestamp"])
            .map(|e| e["value"].as_f64().unwrap())
            .sum()
    };
    let path = d.path().join("metrics.log");
    until("a snapshot counting every event", 60, || {
        counts(&metrics, "log_events").events_out == N as u64
            && snapshot_total(&crate::util::whole_json_lines(&path)) == N as f64
    })
    .await;
    running.shutdown().await;
    let lines = read_json_lines(&path);
    // Only the two metrics asked for; a counter's series carry labels.
    assert!(lines
        .iter()
        .all(|e| e["metric"] == "log_events_total" || e["metric"] == "request_duration_seconds"));
    let e = lines
        .iter()
        .rev()
        .find(|e| e["metric"] == "log_events_total" && e["labels"]["level"] == "error")
        .unwrap();
    assert_eq!(e["type"], "counter");
    assert!(e["labels"]["service"].is_string(), "{e}");
    assert!(e["timestamp"].is_string(), "{e}");
    // A histogram: count, sum and cumulative buckets ending at +Inf.
    let h = lines
        .iter()
        .rev()
        .find(|e| e["metric"] == "request_duration_seconds" && e["labels"]["service"] == "api")
        .unwrap();
    let buckets = h["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 4, "{h}");
    assert_eq!(buckets[3]["le"], "+Inf");
    assert_eq!(buckets[3]["count"], h["count"]);
    let want = (0..N).filter(|i| i % 3 == 0).filter_map(duration).count();
    assert_eq!(h["count"], want as u64, "{h}");
}
