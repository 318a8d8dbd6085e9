//! Operating a pipeline: /metrics, /health, tap, top, `sluice test`,
//! completions.

use std::io::{Read, Write};
use std::time::Duration;

use sluice::base::metrics::Registry;
use sluice::source::generate::Generator;

use crate::util::start_with_admin as start;
use crate::util::{counts, free_port, root, sluice, until};

fn http_get(port: u16, path: &str) -> (u16, String) {
    crate::client::get(port, path)
}

/// A pipeline with the admin port on `port` and no file watching, then `rest`.
fn with_admin(port: u16, rest: &str) -> String {
    format!("[admin]\naddress = \"127.0.0.1:{port}\"\n\n[reload]\nwatch = false\n\n{rest}")
}

fn sample_value(samples: &prometheus_parse::Scrape, name: &str, component: &str) -> f64 {
    let s = samples
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("component") == Some(component))
        .unwrap_or_else(|| panic!("no {name} for {component}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a plain value"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_and_parse() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("idle.log"), "").unwrap();
    let port = free_port();
    let toml = with_admin(
        port,
        r#"[sources.gen]
type = "generate"
count = 1000
seed = 5

[sources.idle]
type = "file"
path = "idle.log"
follow = true

[transforms.keep]
plugin = "filter"
inputs = ["gen", "idle"]
config = { min_level = "warn" }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["keep"]
"#,
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    let mut gen = Generator::new(Some(5));
    let mut kept = 0u64;
    let mut bytes_out = 0u64;
    for _ in 0..1000 {
        let mut b = Vec::new();
        gen.event(&mut b);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        if matches!(v["level"].as_str(), Some("warn" | "error" | "fatal")) {
            kept += 1;
            bytes_out += b.len() as u64;
        }
    }
    until("the sink to write every kept event", 10, || {
        metrics.get("out").is_some_and(|s| s.events_out == kept)
    })
    .await;
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        sample_value(&scrape, "sluice_events_out_total", "gen"),
        1000.0
    );
    assert_eq!(
        sample_value(&scrape, "sluice_events_in_total", "keep"),
        1000.0
    );
    assert_eq!(
        sample_value(&scrape, "sluice_events_dropped_total", "keep"),
        (1000 - kept) as f64
    );
    assert_eq!(
        sample_value(&scrape, "sluice_events_out_total", "keep"),
        kept as f64
    );
    assert_eq!(
        sample_value(&scrape, "sluice_events_out_total", "out"),
        kept as f64
    );
    assert_eq!(
        sample_value(&scrape, "sluice_bytes_out_total", "out"),
        bytes_out as f64
    );
    assert_eq!(sample_value(&scrape, "sluice_queue_batches", "keep"), 0.0);
    assert_eq!(sample_value(&scrape, "sluice_component_up", "out"), 1.0);
    // A family is exported only for the components of a kind that can
    // move it, and not at all when none can.
    let components = |family: &str| -> Vec<String> {
        let mut c: Vec<String> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == family)
            .filter_map(|s| s.labels.get("component").map(str::to_string))
            .collect();
        c.sort();
        c
    };
    assert_eq!(components("sluice_file_truncations_total"), ["idle"]);
    assert_eq!(components("sluice_plugin_restarts_total"), ["keep"]);
    assert_eq!(components("sluice_write_retries_total"), ["out"]);
    for none in [
        "sluice_redis_claimed_total",
        "sluice_redis_topology_changes_total",
        "sluice_redis_unreplicated_writes_total",
        "sluice_requests_total",
        "sluice_http_busy_total",
        "sluice_reconnects_total",
        "sluice_connections",
    ] {
        assert!(components(none).is_empty(), "{none} exported: {body}");
        assert!(
            !body.contains(&format!("# TYPE {none} ")),
            "{none}'s header"
        );
    }
    assert_eq!(components("sluice_events_in_total").len(), 5, "{body}");
    // The histogram has as many observations as the transform saw batches.
    let count = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_batch_duration_seconds" && s.labels.get("component") == Some("keep")
        })
        .expect("keep's batch histogram");
    match &count.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let total = buckets.last().unwrap().count;
            assert!(total >= 1.0, "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_while_a_sink_is_down_and_200_after() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = with_admin(
        port,
        r#"[batch]
max_wait = "10ms"

[sources.gen]
type = "generate"
rate = 500.0

[sinks.out]
type = "file"
path = "sub/out.log"
inputs = ["gen"]
"#,
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    until("first writes", 10, || {
        metrics.get("out").is_some_and(|s| s.events_out > 0)
    })
    .await;
    assert_eq!(http_get(port, "/health").0, 200);

    // The log folder disappears and a file takes its name: writes fail.
    std::fs::remove_dir_all(d.path().join("sub")).unwrap();
    std::fs::write(d.path().join("sub"), "in the way").unwrap();
    until("the sink to report itself down", 10, || {
        http_get(port, "/health").0 == 503
    })
    .await;
    let (_, body) = http_get(port, "/health");
    assert!(
        body.contains("\"component\":\"out\"") && body.contains("sub/out.log"),
        "{body}"
    );
    let written = counts(&metrics, "out").events_out;

    // The way is cleared: the sink writes again, beginning with what it held.
    std::fs::remove_file(d.path().join("sub")).unwrap();
    until("the sink to recover", 10, || {
        http_get(port, "/health").0 == 200
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let s = counts(&metrics, "out");
    assert!(s.retries > 0);
    assert!(s.events_out > written);
    assert_eq!(
        s.events_out,
        counts(&metrics, "gen").events_out,
        "nothing lost while down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_and_top_show_a_running_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = with_admin(
        port,
        r#"[batch]
max_wait = "10ms"

[sources.gen]
type = "generate"
rate = 2000.0

[transforms.keep]
plugin = "filter"
inputs = ["gen"]
config = { min_level = "warn" }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["keep"]
"#,
    );
    let (running, metrics, path) = start(d.path(), &toml).await;
    until("traffic", 10, || {
        metrics.get("out").is_some_and(|s| s.events_out > 0)
    })
    .await;

    let tap = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            sluice()
                .args(["tap"])
                .arg(&path)
                .args([
                    "--component",
                    "keep",
                    "--filter",
                    "level=error",
                    "--limit",
                    "5",
                ])
                .output()
                .unwrap()
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(30), tap)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|e| e["level"] == "error"), "{lines:?}");

    let top = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            sluice()
                .args(["top"])
                .arg(&path)
                .args(["--interval", "300ms", "--iterations", "1"])
                .output()
                .unwrap()
        }
    });
    let out = tokio::time::timeout(Duration::from_secs(30), top)
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("in/s") && text.contains("keep") && text.contains("gen"),
        "{text}"
    );

    // A tap that never reads does not hold the pipeline back.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        slow,
        "GET /tap?component=gen HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let before = counts(&metrics, "out").events_out;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        counts(&metrics, "out").events_out > before + 100,
        "the pipeline kept flowing"
    );
    drop(slow);
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[test]
fn sluice_test_passes_and_fails_with_a_diff() {
    let out = sluice()
        .arg("test")
        .arg(root().join("pipelines/quickstart.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 passed, 0 failed"), "{text}");

    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        r#"[sources.app]
type = "stdin"

[transforms.mask]
plugin = "mask"
inputs = ["app"]

[sinks.out]
type = "stdout"
inputs = ["mask"]

[[tests]]
name = "wrong expectation"
[[tests.inputs]]
source = "app"
events = [{ message = "mail bob@example.com" }]
[[tests.outputs]]
component = "out"
events = [{ message = "mail bob@example.com" }]

[[tests]]
name = "right expectation"
[[tests.inputs]]
source = "app"
lines = ["mail bob@example.com"]
[[tests.outputs]]
component = "mask"
conditions = [{ field = "message", equals = "mail [email]" }]
"#,
    )
    .unwrap();
    let out = sluice().arg("test").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("test wrong expectation ... FAILED"), "{text}");
    assert!(
        text.contains("  - {\"message\":\"mail bob@example.com\"}"),
        "{text}"
    );
    assert!(
        text.contains("  + {") && text.contains("\"message\":\"mail [email]\""),
        "{text}"
    );
    assert!(text.contains("test right expectation ... ok"), "{text}");
    assert!(text.contains("1 passed, 1 failed"), "{text}");
}

#[test]
fn help_and_completions() {
    let out = sluice().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "run",
        "validate",
        "test",
        "tap",
        "top",
        "timeline",
        "completions",
    ] {
        assert!(help.contains(sub), "{sub} missing from --help:\n{help}");
    }
    let out = sluice().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("_sluice"));
}

/// `sluice completions bash | grep -q _sluice` and the like: a reader
/// that closes the pipe early is no error (completions used to panic).
#[test]
fn printing_into_a_closed_pipe_is_quiet() {
    for args in [&["completions", "bash"][..], &["man"], &["schema"]] {
        let mut child = sluice()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end closed before the first write.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_dashboard_uses_metrics_that_exist() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/sluice.json")).unwrap(),
    )
    .unwrap();
    let metrics = Registry::default();
    // One component of each kind whose families the dashboard draws.
    for (name, kind, t) in [
        ("logs", sluice::base::metrics::Kind::Source, "file"),
        ("api", sluice::base::metrics::Kind::Source, "http"),
        ("stream", sluice::base::metrics::Kind::Source, "redis"),
        ("queue", sluice::base::metrics::Kind::Sink, "redis"),
        ("es", sluice::base::metrics::Kind::Sink, "elasticsearch"),
    ] {
        *metrics.component(name, kind).type_name.lock().unwrap() = t;
    }
    let m = metrics.component("t", sluice::base::metrics::Kind::Transform);
    m.batch_seconds.observe(Duration::from_millis(3));
    // The series that exist once a component counts by fields and an
    // alert sink has sent.
    m.set_by_fields(Some(&sluice::base::metrics::FieldMetricsConfig {
        by: vec!["channel".into(), "level".into()],
        max_series: 10,
    }));
    m.count_fields(&sluice::base::event::Batch::from_events([
        &br#"{"channel":"app","level":"error"}"#[..],
    ]));
    sluice::base::metrics::ComponentMetrics::add(&m.alerts_sent, 1);
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    metrics.queue("t", &tx);
    // The metrics the shipped pipelines declare (`metric` sinks), as they
    // export them once they have counted an event.
    let mut declared = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .flatten()
    {
        let config = sluice::config::PipelineConfig::load(&entry.path()).unwrap();
        for s in &config.sinks {
            let sluice::sink::SinkConfig::Metric(m) = &s.config else {
                continue;
            };
            let name = m.metric_name(&s.name).to_string();
            let labels: Vec<String> = m.labels.keys().cloned().collect();
            let d = std::sync::Arc::new(sluice::base::declared::Declared::new(
                name.clone(),
                "declared".into(),
                m.metric,
                labels.clone(),
                Vec::new(),
                10,
            ));
            d.record(vec!["x".into(); labels.len()], None);
            *metrics
                .component(&s.name, sluice::base::metrics::Kind::Sink)
                .declared
                .lock()
                .unwrap() = Some(d);
            declared.insert(name, labels);
        }
    }
    assert!(
        declared.contains_key("log_events_total"),
        "no shipped pipeline declares log_events_total"
    );
    let text = sluice::admin::prometheus(&metrics);
    let mut drawn = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (name, labels) in &declared {
                if expr.contains(name.as_str()) {
                    drawn += 1;
                    assert!(
                        text.contains(&format!("\n{name}{{")),
                        "{name} is not exported"
                    );
                    // What the panel groups by is a label of the metric.
                    if let Some(by) = expr.split("by (").nth(1) {
                        for label in by.split(')').next().unwrap().split(',') {
                            assert!(
                                labels.iter().any(|l| l == label.trim()),
                                "{name} has no label `{}` (panel {})",
                                label.trim(),
                                panel["title"]
                            );
                        }
                    }
                }
            }
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.ends_with("_total") && !word.starts_with("sluice_") {
                    assert!(
                        declared.contains_key(word),
                        "{word} (panel {}) is declared by no shipped pipeline",
                        panel["title"]
                    );
                }
                if word.starts_with("sluice_") {
                    assert!(
                        text.contains(&format!("\n{word}{{")),
                        "{word} (panel {}) is not exported",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(drawn > 0, "no panel draws a declared metric");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_filtered_taps_end_and_taps_are_capped() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = with_admin(
        port,
        "[sources.g]\ntype = \"generate\"\nrate = 20000.0\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"g\"]\n",
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    let taps = metrics.taps.clone();
    tokio::task::spawn_blocking(move || {
        // Clients that ask for a filter nothing matches, then give up.
        for _ in 0..50 {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "GET /tap?component=g&filter=service=nomatch HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head[9..12], b"200");
        }
    })
    .await
    .unwrap();
    until("every abandoned tap to end", 10, || {
        taps.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    let tap_active = || metrics.find("g").unwrap().tap.active();
    until("nobody subscribed any more", 10, || !tap_active()).await;
    // Held taps are capped; the one past the cap is told so.
    let held: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "GET /tap?component=g HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head[9..12], b"200");
            s
        })
        .collect();
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/tap?component=g"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    drop(held);
    until("the held taps to end", 10, || {
        taps.load(std::sync::atomic::Ordering::SeqCst) == 0
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_which_recipients_an_encrypting_sink_uses() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_, public) = crate::encryption::keygen(d.path(), "key");
    let toml = with_admin(
        port,
        &format!(
            "[sources.gen]\ntype = \"generate\"\nrate = 500.0\n\n[sinks.vault]\ntype = \"file\"\npath = \"v.log\"\nencrypt = {{ recipients = [\"{public}\"] }}\ninputs = [\"gen\"]\n"
        ),
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    crate::util::until("some ciphertext", 20, || {
        metrics.get("vault").is_some_and(|s| s.encrypted_bytes > 0)
    })
    .await;
    let (status, body) = http_get(port, "/stats");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let vault = stats["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vault")
        .unwrap();
    let fingerprint = metrics.get("vault").unwrap().recipients.unwrap().0;
    assert_eq!(
        vault["encryption"]["recipients_fingerprint"],
        fingerprint.as_str()
    );
    assert_eq!(vault["encryption"]["recipients"], 1);
    assert!(vault["encryption"]["encrypted_bytes"].as_u64().unwrap() > 0);
    let gen = stats["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "gen")
        .unwrap();
    assert!(gen["encryption"].is_null());
    running.shutdown().await;
    running.wait().await.unwrap();
}

/// The buckets (`le`, cumulative count) of one hop of a `hops` sink on
/// `/metrics`, and its count and sum.
fn hop_histogram(
    scrape: &prometheus_parse::Scrape,
    component: &str,
    from: &str,
    to: &str,
) -> (Vec<(f64, f64)>, f64, f64) {
    let of = |metric: &str| {
        scrape.samples.iter().find(|s| {
            s.metric == metric
                && s.labels.get("component") == Some(component)
                && s.labels.get("from") == Some(from)
                && s.labels.get("to") == Some(to)
        })
    };
    let buckets = match of("sluice_hop_latency_seconds").map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(b)) => {
            b.iter().map(|b| (b.less_than, b.count)).collect()
        }
        other => panic!("no histogram for {component} {from}->{to}: {other:?}"),
    };
    let plain = |metric: &str| match of(metric).map(|s| &s.value) {
        Some(
            prometheus_parse::Value::Untyped(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v),
        ) => *v,
        other => panic!("{metric}: {other:?}"),
    };
    (
        buckets,
        plain("sluice_hop_latency_seconds_count"),
        plain("sluice_hop_latency_seconds_sum"),
    )
}

/// #42 item 13: per-hop latencies live from a running pipeline. 300
/// requests pass web (two events 2 ms apart) -> orders (20 ms after web's
/// last, two events) -> payments (150 ms after orders' last), interleaved
/// in time as services log them, read from a file by a `hops` sink: every
/// hop counted once, in the buckets of 20 ms and 150 ms, on `/metrics` and
/// on the live page's stats. A second sink holding at most 5 requests stays
/// within them and counts what it forgot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hops_sink_measures_hop_latencies_live_within_its_bounds() {
    let d = tempfile::tempdir().unwrap();
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
        .unwrap()
        .timestamp_micros();
    let mut events: Vec<(i64, serde_json::Value)> = Vec::new();
    for i in 0..300i64 {
        let id = format!("r-{i}");
        let web = t0 + i * 10_000;
        let mut add = |t: i64, service: &str, message: &str| {
            let time = chrono::DateTime::from_timestamp_micros(t)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            events.push((
                t,
                serde_json::json!({"timestamp": time, "service": service, "ctx": {"request_id": id}, "message": message}),
            ));
        };
        add(web, "web", "GET /checkout");
        add(web + 2_000, "web", "forwarded");
        add(web + 22_000, "orders", "order created");
        add(web + 23_000, "orders", "payment asked");
        add(web + 173_000, "payments", "paid");
        add(web + 1_000, "web", "no request here");
    }
    events.sort_by_key(|(t, _)| *t);
    let mut text = String::new();
    for (_, mut e) in events {
        if e["message"] == "no request here" {
            e.as_object_mut().unwrap().remove("ctx");
        }
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(d.path().join("app.log"), text).unwrap();
    let port = free_port();
    let toml = with_admin(
        port,
        r#"[sources.app]
type = "file"
path = "app.log"

[sinks.hops]
type = "hops"
inputs = ["app"]
correlation = "ctx.request_id"

[sinks.few]
type = "hops"
inputs = ["app"]
correlation = "ctx.request_id"
max_requests = 5
"#,
    );
    let (running, metrics, _) = start(d.path(), &toml).await;
    until("both sinks to read every event", 20, || {
        ["hops", "few"]
            .iter()
            .all(|s| metrics.get(s).is_some_and(|m| m.events_out == 1800))
    })
    .await;
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let (buckets, count, sum) = hop_histogram(&scrape, "hops", "web", "orders");
    assert_eq!(count, 300.0);
    assert!((sum - 300.0 * 0.020).abs() < 1e-6, "{sum}");
    let at = |b: &[(f64, f64)], le: f64| b.iter().find(|(l, _)| *l == le).unwrap().1;
    assert_eq!((at(&buckets, 0.01), at(&buckets, 0.025)), (0.0, 300.0));
    let (buckets, count, sum) = hop_histogram(&scrape, "hops", "orders", "payments");
    assert_eq!(count, 300.0);
    assert!((sum - 300.0 * 0.150).abs() < 1e-6, "{sum}");
    assert_eq!((at(&buckets, 0.1), at(&buckets, 0.25)), (0.0, 300.0));
    assert!(
        !body.contains("from=\"payments\"") && !body.contains("to=\"web\""),
        "no other hop: {body}"
    );
    assert_eq!(
        sample_value(&scrape, "sluice_hop_requests_forgotten_total", "hops"),
        0.0
    );
    // The bounded one: never more than 5 requests, the rest forgotten.
    assert!(sample_value(&scrape, "sluice_hop_requests_held", "few") <= 5.0);
    let forgotten = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_hop_requests_forgotten_total"
                && s.labels.get("component") == Some("few")
                && s.labels.get("reason") == Some("max_requests")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => panic!("not a counter"),
        })
        .unwrap();
    assert!(forgotten >= 295.0, "{forgotten}");
    let (_, few, _) = hop_histogram(&scrape, "few", "web", "orders");
    assert!(few < 300.0, "some hops were not followed: {few}");
    // Only hops sinks export the families.
    assert!(!body.contains("sluice_hop_requests_held{component=\"app\""));
    // The live page's numbers.
    let (status, stats) = http_get(port, "/ui/stats");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let hops = stats["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["component"] == "hops")
        .unwrap();
    let row = |from: &str| {
        hops["hops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["from"] == from)
            .unwrap()
            .clone()
    };
    assert_eq!(row("web")["requests"], 300);
    assert_eq!(
        (row("web")["p50"].as_f64(), row("web")["p99"].as_f64()),
        (Some(0.025), Some(0.025))
    );
    assert_eq!(row("orders")["p95"].as_f64(), Some(0.25));
    assert_eq!(hops["correlation"], "ctx.request_id");
    running.shutdown().await;
    running.wait().await.unwrap();
}
