//! Every pipeline in `pipelines/` runs here and its output is checked.

use std::path::Path;

use sluice::source::generate::Generator;

use crate::util::{counts, read_json_lines, root, run_file};

/// The pipelines this module tests; a new file in `pipelines/` must be
/// added here with a test, or `every_pipeline_is_tested` fails.
const TESTED: [&str; 7] = [
    "http-ingest.toml",
    "nginx-access.toml",
    "otel-gateway.toml",
    "quickstart.toml",
    "redis-worker.toml",
    "to-elasticsearch.toml",
    "to-loki.toml",
];

#[test]
fn every_pipeline_is_tested() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("pipelines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    assert_eq!(
        files, TESTED,
        "each pipeline needs a test in tests/all/pipelines.rs"
    );
}

/// Every pipeline carries `[[tests]]`, and they pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipeline_carries_passing_tests() {
    for name in TESTED {
        let config =
            sluice::config::PipelineConfig::load(&root().join("pipelines").join(name)).unwrap();
        assert!(!config.tests.is_empty(), "{name} has no [[tests]]");
        let mut out = Vec::new();
        let failed = sluice::testing::run_all(&config, crate::util::runtime(), &mut out)
            .await
            .unwrap();
        assert_eq!(failed, 0, "{}", String::from_utf8_lossy(&out));
    }
}

/// Copy a pipeline into `dir/pipelines/` so that its relative paths
/// (`../logs/...`) land inside `dir`.
fn stage(dir: &Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    let to = dir.join("pipelines").join(name);
    std::fs::copy(root().join("pipelines").join(name), &to).unwrap();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart() {
    let d = tempfile::tempdir().unwrap();
    let metrics = run_file(&stage(d.path(), "quickstart.toml")).await.unwrap();

    // The generator is seeded: compute independently which events pass.
    let mut gen = Generator::new(Some(7));
    let mut expected = Vec::new();
    for _ in 0..40 {
        let mut buf = Vec::new();
        gen.event(&mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        if matches!(v["level"].as_str().unwrap(), "warn" | "error" | "fatal") {
            expected.push(v["seq"].as_u64().unwrap());
        }
    }
    let out = read_json_lines(&d.path().join("logs/quickstart.log"));
    let mut seqs: Vec<u64> = out.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort();
    assert_eq!(seqs, expected, "exactly the warn+ events, once each");
    for e in &out {
        let text = e.to_string();
        for secret in [
            "@example",
            "4111",
            "203.0.113",
            "2001:db8",
            "eyJhbGci",
            "10.0.3.17",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            e["request_id"].as_str().unwrap().starts_with("req-"),
            "skip_fields kept request_id"
        );
    }
    assert_eq!(counts(&metrics, "keep").events_in, 40);
    assert_eq!(counts(&metrics, "keep").dropped, 40 - expected.len() as u64);
    let errors = out
        .iter()
        .filter(|e| matches!(e["level"].as_str(), Some("error" | "fatal")))
        .count();
    assert_eq!(counts(&metrics, "console").events_out, errors as u64);
    assert_eq!(
        counts(&metrics, "archive").events_out,
        expected.len() as u64
    );
}

/// `pipelines/http-ingest.toml` as shipped, started in `dir` on a free port
/// with its queue on `redis`; returns the running pipeline, its metrics and
/// the port.
pub async fn start_http_ingest(
    dir: &Path,
    redis: &crate::redis::RedisServer,
) -> (
    sluice::topology::Running,
    sluice::base::metrics::Registry,
    u16,
) {
    let path = stage(dir, "http-ingest.toml");
    let port = crate::util::free_port();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:8088", &format!("127.0.0.1:{port}"))
        .replace("redis://127.0.0.1:6379/", &redis.url());
    std::fs::write(&path, text).unwrap();
    let config = sluice::config::PipelineConfig::load(&path).unwrap();
    let plan = sluice::topology::plan(config, crate::util::runtime())
        .await
        .unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    (running, metrics, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingest_then_redis_worker() {
    use std::io::{Read, Write};
    let d = tempfile::tempdir().unwrap();
    let redis = crate::redis::RedisServer::start();
    let (running, metrics, port) = start_http_ingest(d.path(), &redis).await;
    let post = move |body: &str| {
        let mut s = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        write!(s, "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = "{\"service\":\"orders\",\"level\":\"error\",\"message\":\"card 4111 1111 1111 1111 from jane@example.com\"}\n{\"service\":\"web\",\"level\":\"info\",\"message\":\"hello\"}\n";
    let r = tokio::task::spawn_blocking(move || post(body))
        .await
        .unwrap();
    // ack = "delivered": when the answer comes, the stream and the error
    // file hold the events.
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"accepted\":2"),
        "{r}"
    );
    let errors = read_json_lines(&d.path().join("logs/errors.log"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["message"], "card [card] from [email]");
    let mut con = redis.con().await;
    let len: i64 = ::redis::cmd("XLEN")
        .arg("logs")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(len, 2);
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(counts(&metrics, "web").events_in, 2);

    // The worker drains the stream into logs/app-DATE.log: warn and above, masked.
    let worker = stage(d.path(), "redis-worker.toml");
    let text = std::fs::read_to_string(&worker)
        .unwrap()
        .replace("redis://127.0.0.1:6379/", &redis.url());
    std::fs::write(&worker, text).unwrap();
    let config = sluice::config::PipelineConfig::load(&worker).unwrap();
    let plan = sluice::topology::plan(config, crate::util::runtime())
        .await
        .unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    for _ in 0..500 {
        if metrics.get("daily").is_some_and(|s| s.events_out >= 1)
            && metrics.get("keep").is_some_and(|s| s.events_in >= 2)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    running.shutdown().await;
    running.wait().await.unwrap();
    let day = chrono::Utc::now().format("%Y-%m-%d");
    let app = read_json_lines(&d.path().join(format!("logs/app-{day}.log")));
    assert_eq!(app.len(), 1, "{app:?}");
    assert_eq!(app[0]["message"], "card [card] from [email]");
    assert!(app[0]["stream_id"].is_string());
}

/// Application logs under `dir/logs/apps/`, one file per service.
fn app_logs(dir: &Path) {
    let apps = dir.join("logs/apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::write(
        apps.join("orders.log"),
        "{\"timestamp\":\"2026-11-23T10:00:00Z\",\"event_id\":\"o1\",\"service\":\"orders\",\"level\":\"debug\",\"message\":\"cache warm\"}\n\
         {\"timestamp\":\"2026-11-23T10:00:01Z\",\"event_id\":\"o2\",\"service\":\"orders\",\"level\":\"error\",\"message\":\"payment failed for ann@example.com\"}\n\
         {\"timestamp\":\"2026-11-23T10:00:02Z\",\"event_id\":\"o3\",\"service\":\"orders\",\"level\":\"info\",\"message\":\"paid\",\"bad_mapping\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(
        apps.join("web.log"),
        "{\"timestamp\":\"2026-11-23T10:00:03Z\",\"event_id\":\"w1\",\"service\":\"web\",\"level\":\"INFO\",\"message\":\"login from 10.1.2.3\"}\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_elasticsearch() {
    let d = tempfile::tempdir().unwrap();
    app_logs(d.path());
    let es = crate::sinks::FakeElasticsearch::start(false).await;
    let path = stage(d.path(), "to-elasticsearch.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "http://127.0.0.1:9200",
        &format!("http://127.0.0.1:{}", es.server.port),
    );
    std::fs::write(&path, text).unwrap();
    run_file(&path).await.unwrap();
    let docs = es.docs.lock().unwrap();
    let ids: Vec<&String> = docs.keys().collect();
    assert_eq!(
        ids,
        ["o2", "w1"],
        "debug dropped; the mapping error refused"
    );
    assert_eq!(docs["o2"]["message"], "payment failed for [email]");
    assert_eq!(docs["w1"]["message"], "login from [ipv4]");
    let bodies: String = es
        .server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert!(
        bodies.contains("\"_index\":\"logs-orders-") && bodies.contains("\"_index\":\"logs-web-")
    );
    let dead = read_json_lines(&d.path().join("logs/es-dead-letters.log"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event"]["event_id"], "o3");
    assert!(dead[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mapper_parsing_exception"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_loki() {
    let d = tempfile::tempdir().unwrap();
    app_logs(d.path());
    let (server, store) = crate::sinks::fake_loki().await;
    let path = stage(d.path(), "to-loki.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "http://127.0.0.1:3100",
        &format!("http://127.0.0.1:{}", server.port),
    );
    std::fs::write(&path, text).unwrap();
    run_file(&path).await.unwrap();
    let store = store.lock().unwrap();
    let streams: std::collections::BTreeSet<&str> = store.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        streams.into_iter().collect::<Vec<_>>(),
        [
            "{level=\"debug\", service=\"orders\"}",
            "{level=\"error\", service=\"orders\"}",
            "{level=\"info\", service=\"orders\"}",
            "{level=\"info\", service=\"web\"}",
        ]
    );
    let lines: Vec<&str> = store.iter().map(|e| e.2.as_str()).collect();
    assert!(
        lines.contains(&"payment failed for [email]") && lines.contains(&"login from [ipv4]"),
        "{lines:?}"
    );
    assert!(!d.path().join("logs/loki-dead-letters.log").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_gateway_masks_forwards_archives_and_pages() {
    let d = tempfile::tempdir().unwrap();
    let receiver = crate::otel::Receiver::start(d.path());
    let hook =
        crate::sinks::TestServer::start(std::sync::Arc::new(|_, _| (200, vec![], "ok".into())))
            .await;
    let port = crate::util::free_port();
    let path = stage(d.path(), "otel-gateway.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:4318", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:14318", &format!("127.0.0.1:{}", receiver.port))
        .replace("127.0.0.1:9095", &format!("127.0.0.1:{}", hook.port))
        .replace("group_wait = \"30s\"", "group_wait = \"1s\"");
    std::fs::write(&path, text).unwrap();
    let plan = sluice::topology::plan(
        sluice::config::PipelineConfig::load(&path).unwrap(),
        crate::util::runtime(),
    )
    .await
    .unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    let n = 300;
    let sent = crate::otel::python_sdk_logs(port, n).await;
    crate::util::until("every record at the collector", 60, || {
        receiver.records().len() >= n
    })
    .await;
    // 100 distinct errors, at most 10 notifications a minute.
    crate::util::until("the alerts", 30, || hook.seen.lock().unwrap().len() >= 10).await;
    let by_field = sluice::admin::prometheus(&metrics);
    running.shutdown().await;
    running.wait().await.unwrap();

    let records = receiver.records();
    assert_eq!(records.len(), n);
    for r in &records {
        let body = r["body"].as_str().unwrap();
        assert!(!body.contains("@example.com"), "not masked: {body}");
    }
    let traced = records.iter().filter(|r| r["trace_id"] != "").count();
    assert_eq!(traced, sent.iter().filter(|s| s["trace_id"] != "").count());
    let day = chrono::Utc::now().format("%Y-%m-%d");
    let archive = read_json_lines(&d.path().join(format!("logs/otel/checkout-{day}.log")));
    assert_eq!(archive.len(), 200, "warnings and errors");
    assert!(archive
        .iter()
        .all(|e| e["level"] == "warn" || e["level"] == "error"));
    let alerts: Vec<serde_json::Value> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    assert_eq!(alerts.len(), 11, "10 alerts and the summary: {alerts:?}");
    assert!(alerts[0]["text"]
        .as_str()
        .unwrap()
        .starts_with("[ERROR] checkout: order "));
    let summary = alerts[10]["text"].as_str().unwrap();
    assert!(
        summary.starts_with(
            "90 alerts suppressed (90 events): more than max_per_minute in the last minute; most frequent: service=checkout message=order "
        ) && summary.ends_with(" and 80 more groups"),
        "{summary}"
    );
    for (level, count) in [("warn", 100), ("error", 100), ("info", 100)] {
        let line = format!(
            "sluice_events_by_field_total{{component=\"otel\",kind=\"source\",service=\"checkout\",level=\"{level}\"}} {count}"
        );
        assert!(by_field.contains(&line), "{line} missing from:\n{by_field}");
    }
}

/// nginx's access log parsed into `http.*`; a line that is not one in its
/// own file, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_access() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs/nginx");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(
        logs.join("access.log"),
        concat!(
            "127.0.0.1 - - [06/Dec/2026:03:10:01 +0000] \"GET /health HTTP/1.1\" 200 2 \"-\" \"kube-probe/1.29\"\n",
            "203.0.113.9 - bob [06/Dec/2026:03:10:02 +0100] \"POST /pay HTTP/2.0\" 503 0 \"https://shop.example/cart\" \"Mozilla/5.0 \\x22x\\x22\"\n",
            "2026/12/06 03:10:03 [error] 12#12: upstream timed out\n",
        ),
    )
    .unwrap();
    let metrics = run_file(&stage(d.path(), "nginx-access.toml"))
        .await
        .unwrap();
    let out = read_json_lines(&d.path().join("logs/nginx-access.jsonl"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["http"]["path"], "/health");
    assert_eq!(out[0]["http"]["status"], 200);
    assert_eq!(out[1]["http"]["method"], "POST");
    assert_eq!(out[1]["http"]["status"], 503);
    assert_eq!(out[1]["http"]["user"], "bob");
    assert_eq!(out[1]["http"]["referer"], "https://shop.example/cart");
    assert_eq!(out[1]["http"]["agent"], "Mozilla/5.0 \"x\"");
    assert_eq!(out[1]["http"]["timestamp"], "2026-12-06T03:10:02+01:00");
    let unparsed = read_json_lines(&d.path().join("logs/nginx-unparsed.log"));
    assert_eq!(unparsed.len(), 1);
    assert!(unparsed[0]["message"]
        .as_str()
        .unwrap()
        .contains("upstream timed out"));
    assert_eq!(counts(&metrics, "archive").events_out, 2);
}
