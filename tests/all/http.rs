//! The HTTP source, with real requests on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sluice::base::metrics::Registry;
use sluice::topology::Running;

use crate::client::{raw, Reply};
use crate::util::{counts, free_port, read_json_lines, rss_kib};

/// Start `[sources.web] type = "http"` with `extra` settings -> file sink.
async fn start(dir: &Path, port: u16, extra: &str, sink: &str) -> (Running, Registry) {
    let toml = format!(
        r#"[reload]
watch = false

[batch]
buffer = 2

[sources.web]
type = "http"
address = "127.0.0.1:{port}"
{extra}

[sinks.out]
type = "file"
path = "{sink}"
inputs = ["web"]
"#
    );
    let (running, metrics) = crate::util::start(dir, &toml).await;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (running, metrics)
}

fn post(port: u16, content_type: &str, body: &[u8]) -> Reply {
    crate::client::post(port, "/api/log", content_type, body)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const RULES: &str = r#"required = ["service", "level", "message"]
levels = ["debug", "info", "warn", "error"]
max_field = 64
max_body = "64KiB"
ack = "delivered""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_names_the_event_and_field_and_valid_events_arrive_intact() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, _) = start(d.path(), port, RULES, "out.log").await;
    let checks = tokio::task::spawn_blocking(move || {
        let ok = r#"{"service":"s","level":"info","message":"ok"}"#;
        for (body, status, says) in [
            (
                format!("{ok}\n{{\"service\":\"s\",\"level\":\"info\"}}"),
                400,
                r#""event":1,"field":"message""#,
            ),
            (
                r#"{"service":"s","level":"loud","message":"m"}"#.to_string(),
                400,
                r#""field":"level""#,
            ),
            (
                format!(
                    r#"{{"service":"s","level":"info","message":"{}"}}"#,
                    "x".repeat(65)
                ),
                400,
                r#""field":"message""#,
            ),
            (
                r#"{"service":"s","level":"info","message":"m","data":{"note":""#.to_string()
                    + &"y".repeat(70)
                    + "\"}}",
                400,
                r#""field":"data.note""#,
            ),
            ("[1, 2]".to_string(), 400, "must be a JSON object"),
            (r#"{"service":"s","#.to_string(), 400, "malformed JSON"),
        ] {
            let r = post(port, "application/json", body.as_bytes());
            assert_eq!(r.status, status, "{body} -> {}", r.body);
            assert!(r.body.contains(says), "{body} -> {}", r.body);
        }
        // Nothing of a refused batch was taken; then valid events arrive intact.
        let good = r#"[{"service":"caf\u00e9","level":"info","message":"h\u00e9llo \u4e16\u754c \ud83d\ude80","data":{"n":[1,{"deep":true}]},"big":123456789012345678901234567890,"id":18446744073709551615}]"#;
        let r = post(port, "application/json", good.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("\"accepted\":1"));
    });
    checks.await.unwrap();
    let out = std::fs::read_to_string(d.path().join("out.log")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only the valid request's event: {out}");
    assert!(lines[0].contains(r#""service":"café""#), "{}", lines[0]);
    assert!(lines[0].contains("héllo 世界 🚀"));
    assert!(lines[0].contains(r#""data":{"n":[1,{"deep":true}]}"#));
    assert!(
        lines[0].contains(r#""big":123456789012345678901234567890"#),
        "large numbers intact: {}",
        lines[0]
    );
    assert!(lines[0].contains(r#""id":18446744073709551615"#));
    assert!(lines[0].starts_with(r#"{"timestamp":""#));
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batches_list_what_was_rejected() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, metrics) = start(
        d.path(),
        port,
        &format!("{RULES}\npartial = true"),
        "out.log",
    )
    .await;
    let r = tokio::task::spawn_blocking(move || {
        post(
            port,
            "application/x-ndjson",
            b"{\"service\":\"a\",\"level\":\"info\",\"message\":\"1\"}\n{\"service\":\"a\",\"message\":\"2\"}\n{\"service\":\"a\",\"level\":\"warn\",\"message\":\"3\"}\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(r.body.trim()).unwrap();
    assert_eq!(v["accepted"], 2);
    assert_eq!(
        v["rejected"],
        serde_json::json!([{"event": 1, "field": "level", "message": "`level` is required"}])
    );
    let msgs: Vec<String> = read_json_lines(&d.path().join("out.log"))
        .iter()
        .map(|e| e["message"].to_string())
        .collect();
    assert_eq!(msgs, ["\"1\"", "\"3\""]);
    assert_eq!(counts(&metrics, "web").failed, 1);
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_the_right_status_and_memory_stays_flat() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, _) = start(
        d.path(),
        port,
        "max_body = \"1MiB\"\nread_timeout = \"300ms\"",
        "out.log",
    )
    .await;
    let grown = tokio::task::spawn_blocking(move || {
        let ok = b"{\"message\":\"still serving\"}";
        // Oversized by Content-Length, and oversized while streaming (chunked).
        // (Raw: the server answers and closes before the body is sent,
        // which a client reports as a broken pipe.)
        let big = vec![b' '; (1 << 20) + 1];
        let head = format!("POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", big.len());
        let r = raw(port, &head, &big);
        assert_eq!(r.status, 413, "{}", r.body);
        let chunk = vec![b' '; 256 * 1024];
        let mut chunked = Vec::new();
        for _ in 0..6 {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(&chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let r = raw(port, "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", &chunked);
        assert_eq!(r.status, 413, "{}", r.body);
        // Gzip bombs: 200 MiB of zeros in ~200 KB, several times.
        let bomb = gzip(&vec![b'0'; 200 << 20]);
        let before = rss_kib();
        for _ in 0..5 {
            let head = format!(
                "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bomb.len()
            );
            let r = raw(port, &head, &bomb);
            assert_eq!(r.status, 413, "{}", r.body);
        }
        let grown = rss_kib().saturating_sub(before) / 1024;
        // A good gzip body works.
        let head = format!(
            "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            gzip(ok).len()
        );
        assert_eq!(raw(port, &head, &gzip(ok)).status, 200);
        // Invalid UTF-8, wrong content type, unknown encoding.
        assert_eq!(post(port, "application/json", b"{\"message\":\"\xff\xfe\"}").status, 400);
        assert_eq!(post(port, "application/xml", b"<log/>").status, 415);
        // A truncated body: Content-Length promises more than arrives.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"message\":").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
        // A slow client that never finishes its headers is cut off...
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
        // ...while others are served.
        assert_eq!(post(port, "application/json", ok).status, 200);
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let started = std::time::Instant::now();
        let _ = slow.read_to_end(&mut buf);
        assert!(started.elapsed() < Duration::from_secs(4), "the slow client was not cut off");
        grown
    })
    .await
    .unwrap();
    assert!(grown < 64, "memory grew by {grown} MiB under gzip bombs");
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(read_json_lines(&d.path().join("out.log")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_and_cors() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    // SAFETY: set before the source reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_HTTP_TOKEN", "s3cret") };
    let (running, _) = start(d.path(), port, "auth_token_env = \"SLUICE_TEST_HTTP_TOKEN\"\ncors = { origins = [\"https://app.example\"] }", "out.log").await;
    tokio::task::spawn_blocking(move || {
        let body = b"{\"message\":\"m\"}";
        assert_eq!(post(port, "application/json", body).status, 401);
        let with = |token: &str| {
            let auth = format!("Bearer {token}");
            crate::client::send(
                "POST",
                port,
                "/api/log",
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body,
            )
        };
        assert_eq!(with("wrong").status, 401);
        let r = with("s3cret");
        assert_eq!(r.status, 200);
        assert!(
            r.headers
                .contains("access-control-allow-origin: https://app.example"),
            "{}",
            r.headers
        );
        let r = crate::client::send(
            "OPTIONS",
            port,
            "/api/log",
            &[("origin", "https://app.example")],
            b"",
        );
        assert_eq!(r.status, 204);
        assert!(
            r.headers
                .contains("access-control-allow-methods: post, options"),
            "{}",
            r.headers
        );
    })
    .await
    .unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_answers_503_with_retry_after() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("blocked"),
        "a file where the sink wants a folder",
    )
    .unwrap();
    let port = free_port();
    let (running, metrics) = start(d.path(), port, "", "blocked/out.log").await;
    let statuses = tokio::task::spawn_blocking(move || {
        (0..10)
            .map(|_| {
                let r = post(port, "application/json", b"{\"message\":\"m\"}");
                (r.status, r.headers.contains("retry-after: 1"))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(statuses.contains(&(503, true)), "{statuses:?}");
    // Clients often drop a 503 silently: the source counts them.
    let refused = statuses.iter().filter(|(s, _)| *s == 503).count() as u64;
    assert_eq!(counts(&metrics, "web").busy, refused);
    std::fs::remove_file(d.path().join("blocked")).unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
    let accepted = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(
        read_json_lines(&d.path().join("blocked/out.log")).len(),
        accepted,
        "every accepted event written once the sink recovered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_ack_delivered_lands_every_event_once() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, _) = start(
        d.path(),
        port,
        "ack = \"delivered\"\nmax_body = \"10MiB\"",
        "out.log",
    )
    .await;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                for r in 0..25 {
                    let mut body = String::new();
                    for i in 0..1000 {
                        body.push_str(&format!("{{\"id\":\"{c}-{r}-{i}\",\"level\":\"info\",\"message\":\"event {i}\"}}\n"));
                    }
                    loop {
                        let reply = post(port, "application/x-ndjson", body.as_bytes());
                        match reply.status {
                            200 => break,
                            503 => std::thread::sleep(Duration::from_millis(20)),
                            other => panic!("{other}: {}", reply.body),
                        }
                    }
                }
            })
        })
        .collect();
    tokio::task::spawn_blocking(move || clients.into_iter().for_each(|c| c.join().unwrap()))
        .await
        .unwrap();
    // Delivered means written: read the file before stopping anything.
    let mut ids: Vec<String> = read_json_lines(&d.path().join("out.log"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 200_000);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200_000, "no event twice");
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_logging_http_handler() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, _) = start(d.path(), port, "ack = \"delivered\"", "out.log").await;
    let script = format!(
        r#"
import logging, logging.handlers
h = logging.handlers.HTTPHandler("127.0.0.1:{port}", "/api/log", method="POST")
log = logging.getLogger("checkout")
log.setLevel(logging.INFO)
log.addHandler(h)
log.warning("payment retry %d", 2)
log.error("payment failed")
log.info("done", extra={{"order_id": 1000, "amount": 12.5, "is_vip": True, "coupon": None, "zip": "01234", "note": ""}})
# The README's two-line fix: fill exc_text before the record is sent.
class TracebackHTTPHandler(logging.handlers.HTTPHandler):
    def mapLogRecord(self, record):
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        return super().mapLogRecord(record)
log.removeHandler(h)
log.addHandler(h)
try:
    {{}}["missing"]
except KeyError:
    log.exception("lookup failed")
log.removeHandler(h)
log.addHandler(TracebackHTTPHandler("127.0.0.1:{port}", "/api/log", method="POST"))
try:
    {{}}["missing"]
except KeyError:
    log.exception("lookup failed")
"#
    );
    let mut python = std::process::Command::new("python3");
    python.arg("-c").arg(script);
    crate::util::succeeds(python).await;
    let events = read_json_lines(&d.path().join("out.log"));
    // Without the fix the traceback does not leave Python; with it, it
    // arrives in `exception`.
    assert_eq!(events.len(), 5);
    assert_eq!(events[3]["message"], "lookup failed");
    assert!(events[3].get("exception").is_none(), "{}", events[3]);
    let tb = events[4]["exception"].as_str().unwrap_or_default();
    assert!(
        tb.starts_with("Traceback (most recent call last):") && tb.ends_with("KeyError: 'missing'"),
        "{}",
        events[4]
    );
    let got: Vec<(String, String, String)> = events[..3]
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
                e["logger"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("warn".into(), "payment retry 2".into(), "checkout".into()),
            ("error".into(), "payment failed".into(), "checkout".into()),
            ("info".into(), "done".into(), "checkout".into()),
        ]
    );
    assert!(events[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    // Extras are typed back as the standard attributes are, where the text
    // is what Python's str() writes (a string that looks like a number
    // stays a string).
    let done = &events[2];
    assert_eq!(done["order_id"], 1000, "{done}");
    assert_eq!(done["amount"], 12.5, "{done}");
    assert_eq!(done["is_vip"], true, "{done}");
    assert!(done["coupon"].is_null(), "{done}");
    assert_eq!(done["zip"], "01234", "{done}");
    assert_eq!(done["note"], "", "{done}");
    running.shutdown().await;
    running.wait().await.unwrap();
}

fn post_keyed(port: u16, key: &str, body: &[u8]) -> Reply {
    crate::client::send(
        "POST",
        port,
        "/api/log",
        &[
            ("content-type", "application/x-ndjson"),
            ("idempotency-key", key),
        ],
        body,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_is_not_queued_twice() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    // Syncs (and so acknowledgements) come every 1.5 s: longer than the
    // client waits, as with a slow disk or a sink retrying.
    let toml = format!(
        r#"[reload]
watch = false

[sources.web]
type = "http"
address = "127.0.0.1:{port}"
ack = "delivered"
ack_timeout = "300ms"

[sinks.out]
type = "file"
path = "out.log"
sync = "interval"
sync_interval = "1500ms"
inputs = ["web"]
"#
    );
    let (running, _metrics) = crate::util::start(d.path(), &toml).await;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body =
        b"{\"service\":\"orders\",\"message\":\"a\"}\n{\"service\":\"orders\",\"message\":\"b\"}\n";
    // A first attempt times out (one that lands just before a sync may
    // not: then the next key): it is written later all the same.
    let mut keys = 0;
    let key = loop {
        keys += 1;
        assert!(keys <= 10, "no 504 while the sink had not synced");
        let key = format!("order-{keys}");
        let k = key.clone();
        let r = tokio::task::spawn_blocking(move || post_keyed(port, &k, body))
            .await
            .unwrap();
        if r.status == 504 {
            assert!(r.body.contains("not delivered in time"), "{}", r.body);
            break key;
        }
        assert_eq!(r.status, 200, "{}", r.body);
    };
    // The client retries with the same key until it hears 200.
    let mut answer = None;
    for _ in 0..20 {
        let k = key.clone();
        let r = tokio::task::spawn_blocking(move || post_keyed(port, &k, body))
            .await
            .unwrap();
        if r.status == 200 {
            answer = Some(r);
            break;
        }
        assert_eq!(r.status, 504, "{}", r.body);
    }
    let answer = answer.expect("the retry answered once the first was delivered");
    let v: serde_json::Value = serde_json::from_str(answer.body.trim()).unwrap();
    assert_eq!(v, serde_json::json!({"accepted": 2, "duplicate": true}));
    // Another key is another request.
    let other = tokio::task::spawn_blocking(move || post_keyed(port, "another", body))
        .await
        .unwrap();
    assert!(other.status == 200 || other.status == 504, "{}", other.body);
    running.shutdown().await;
    running.wait().await.unwrap();
    let lines = read_json_lines(&d.path().join("out.log"));
    assert_eq!(
        lines.len(),
        2 * (keys + 1),
        "each key's events once: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_with_several_origins_echoes_the_one_asking() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, _) = start(
        d.path(),
        port,
        "cors = { origins = [\"https://a.example\", \"https://b.example\"] }",
        "out.log",
    )
    .await;
    tokio::task::spawn_blocking(move || {
        let preflight = |origin: &str| {
            crate::client::send("OPTIONS", port, "/api/log", &[("origin", origin)], b"")
        };
        let r = preflight("https://b.example");
        assert_eq!(r.status, 204);
        assert!(
            r.headers
                .contains("access-control-allow-origin: https://b.example\r\n"),
            "{}",
            r.headers
        );
        assert!(r.headers.contains("vary: origin"), "{}", r.headers);
        assert!(
            !r.headers.contains("a.example"),
            "one origin, never the list: {}",
            r.headers
        );
        let r = preflight("https://evil.example");
        assert_eq!(r.status, 403, "an unlisted origin is refused");
        assert!(
            !r.headers.contains("access-control-allow-origin"),
            "{}",
            r.headers
        );
        let body = b"{\"message\":\"m\"}";
        let r = crate::client::send(
            "POST",
            port,
            "/api/log",
            &[
                ("origin", "https://evil.example"),
                ("content-type", "application/json"),
            ],
            body,
        );
        assert!(
            !r.headers.contains("access-control-allow-origin"),
            "{}",
            r.headers
        );
    })
    .await
    .unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_field_holds_for_keys_arrays_and_nesting() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, metrics) = start(d.path(), port, "max_field = 1000", "out.log").await;
    tokio::task::spawn_blocking(move || {
        let big = "x".repeat(2000);
        for (body, field) in [
            (format!("{{\"{big}\":1}}"), big.clone()),
            (
                format!("{{\"arr\":[\"ok\",\"{big}\"]}}"),
                "arr[1]".to_string(),
            ),
            (
                format!("{{\"a\":[[{{\"b\":\"{big}\"}}]]}}"),
                "a[0][0].b".to_string(),
            ),
        ] {
            let r = post(port, "application/json", body.as_bytes());
            assert_eq!(r.status, 400, "{}", r.body);
            let v: serde_json::Value = serde_json::from_str(r.body.trim()).unwrap();
            assert_eq!(v["rejected"][0]["field"], field.as_str(), "{}", r.body);
        }
        let r = post(
            port,
            "application/json",
            b"{\"arr\":[\"small\",[\"fine\"]],\"k\":\"v\"}",
        );
        assert_eq!(r.status, 200, "{}", r.body);
    })
    .await
    .unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(counts(&metrics, "out").events_out, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_connections_are_reaped_and_connections_are_capped() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, metrics) = start(d.path(), port, "max_connections = 8", "out.log").await;
    tokio::task::spawn_blocking(move || {
        for _ in 0..2000 {
            // A client honours 503 + Retry-After (a full pipeline) by retrying.
            loop {
                let r = post(port, "application/json", b"{\"message\":\"m\"}");
                if r.status == 503 && r.body.contains("pipeline is full") {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                assert_eq!(r.status, 200, "{}", r.body);
                break;
            }
        }
    })
    .await
    .unwrap();
    crate::util::until("no connection left open", 10, || {
        counts(&metrics, "web").connections == 0
    })
    .await;
    // Eight idle connections fill the source; the ninth is refused at once.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    crate::util::until("eight open", 10, || {
        counts(&metrics, "web").connections == 8
    })
    .await;
    // Raw: the answer comes at once, before the request is read, and a
    // client that is still writing reports a broken pipe instead.
    let r = tokio::task::spawn_blocking(move || {
        let body = b"{\"message\":\"m\"}";
        let head = format!("POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        raw(port, &head, body)
    })
    .await
    .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.headers.contains("retry-after: 1"), "{}", r.headers);
    drop(held);
    crate::util::until("room again", 10, || {
        counts(&metrics, "web").connections == 0
    })
    .await;
    let r =
        tokio::task::spawn_blocking(move || post(port, "application/json", b"{\"message\":\"m\"}"))
            .await
            .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(counts(&metrics, "out").events_out, 2001);
}

#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_quietly() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        format!("[reload]\nwatch = false\n\n[sources.web]\ntype = \"http\"\naddress = \"127.0.0.1:{port}\"\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"web\"]\n"),
    )
    .unwrap();
    let log = d.path().join("stderr.log");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 64 && exec {} run --quiet {}",
            crate::util::sluice_bin().display(),
            path.display()
        ))
        .env(
            "SLUICE_CACHE_DIR",
            crate::util::root().join("target").join("test-plugin-cache"),
        )
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Hold more connections than the process has descriptors.
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let size = std::fs::metadata(&log).unwrap().len();
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let r = post(port, "application/json", b"{\"message\":\"after\"}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        size < 10_000,
        "{size} bytes of logs in 2 s:\n{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.contains("accept failed"), "{stderr}");
    assert_eq!(
        r.status, 200,
        "serving again once descriptors are free: {}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_per_request_and_bytes_in_flight_are_bounded() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let (running, metrics) = start(
        d.path(),
        port,
        "max_events_per_request = 1000\nmax_body = \"64KiB\"\nmax_in_flight = \"64KiB\"",
        "out.log",
    )
    .await;
    tokio::task::spawn_blocking(move || {
        // Tiny events by the thousand: refused before they are all parsed.
        let many = format!("[{}{{}}]", "{},".repeat(5000));
        let r = post(port, "application/json", many.as_bytes());
        assert_eq!(r.status, 413, "{}", r.body);
        assert!(r.body.contains("max_events_per_request"), "{}", r.body);
        let lines = "{\"m\":1}\n".repeat(1001);
        assert_eq!(post(port, "application/x-ndjson", lines.as_bytes()).status, 413);
        let ok = "{\"m\":1}\n".repeat(1000);
        assert_eq!(post(port, "application/x-ndjson", ok.as_bytes()).status, 200);
        // A slow client holding a 60 KiB body takes the bytes in flight.
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            slow,
            "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 61440\r\n\r\n{{\"a\":\""
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        // 8 KiB more would pass the 64 KiB in flight.
        let body = format!("{{\"a\":\"{}\"}}", "y".repeat(8000));
        let r = post(port, "application/json", body.as_bytes());
        assert_eq!(r.status, 503, "{}", r.body);
        drop(slow);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(post(port, "application/json", b"{}").status, 200);
    })
    .await
    .unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(counts(&metrics, "out").events_out, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_is_not_claimed_for_an_event_a_plugin_failed_on() {
    for reads_dead_letters in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let port = free_port();
        let dead = if reads_dead_letters {
            "\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n"
        } else {
            ""
        };
        let toml = format!(
            "[reload]\nwatch = false\n\n[sources.web]\ntype = \"http\"\naddress = \"127.0.0.1:{port}\"\nack = \"delivered\"\n\n[transforms.chaos]\nplugin = {:?}\ninputs = [\"web\"]\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"chaos\"]\n{dead}",
            crate::CHAOS
        );
        let (running, _metrics) = crate::util::start(d.path(), &toml).await;
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = tokio::task::spawn_blocking(move || {
            post(
                port,
                "application/json",
                b"{\"message\":\"boom\",\"chaos\":\"panic\"}",
            )
        })
        .await
        .unwrap();
        if reads_dead_letters {
            assert_eq!(r.status, 200, "the dead letter is written: {}", r.body);
        } else {
            assert_eq!(r.status, 502, "nothing holds the failed event: {}", r.body);
            assert!(r.body.contains("dead letters"), "{}", r.body);
        }
        let ok = tokio::task::spawn_blocking(move || {
            post(port, "application/json", b"{\"message\":\"fine\"}")
        })
        .await
        .unwrap();
        assert_eq!(ok.status, 200, "{}", ok.body);
        running.shutdown().await;
        running.wait().await.unwrap();
    }
}
