//! Events as real logging libraries write them, each produced here by the
//! library itself (Python's logging.handlers.HTTPHandler, loguru, pino,
//! winston), read with the matching preset: their own times to the
//! millisecond, levels, messages, fields, nothing lost.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{read_json_lines, run};

fn tools() -> PathBuf {
    sluice::cli::plugin::build::tools_dir().expect("a tools folder (scripts/setup-test-deps)")
}

fn python(script: &str, args: &[&str]) {
    let out = Command::new(tools().join("py/bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the tools' python (scripts/setup-test-deps installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn node(script: &str, args: &[&str]) {
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .args(args)
        .env("NODE_PATH", tools().join("libs/node_modules"))
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Read `input` with `preset`: file -> remap -> file.
async fn shaped(dir: &Path, input: &str, preset: &str) -> Vec<Value> {
    let toml = format!(
        "[sources.app]\ntype = \"file\"\npath = \"{input}\"\nfollow = false\n\n[transforms.shape]\nplugin = \"remap\"\ninputs = [\"app\"]\nconfig = {{ preset = \"{preset}\" }}\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"shape\"]\n"
    );
    run(dir, &toml).await.unwrap();
    read_json_lines(&dir.join("out.log"))
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
        .timestamp_millis()
}

/// The millisecond a library's float seconds fall in (as Python's `msecs`
/// and loguru's `repr` show it).
fn secs_to_ms(s: f64) -> i64 {
    ((s * 1e6).round() as i64).div_euclid(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loguru_serialized_records() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("app.jsonl");
    python(
        r#"
import sys
from loguru import logger
logger.remove()
logger.add(sys.argv[1], serialize=True)
logger.bind(request_id="r-1").info("paid {} EUR", 42)
logger.warning("stock low")
try:
    1 / 0
except ZeroDivisionError:
    logger.exception("boom")
"#,
        &[file.to_str().unwrap()],
    );
    let originals = read_json_lines(&file);
    let out = shaped(d.path(), "app.jsonl", "loguru").await;
    assert_eq!(out.len(), 3, "nothing lost");
    for (o, e) in originals.iter().zip(&out) {
        let theirs = secs_to_ms(o["record"]["time"]["timestamp"].as_f64().unwrap());
        assert_eq!(millis(e["timestamp"].as_str().unwrap()), theirs, "{e}");
        let theirs = o["record"]["level"]["name"].as_str().unwrap();
        assert_eq!(
            e["level"].as_str().unwrap(),
            sluice_common::level::normalize(theirs),
            "one spelling"
        );
        assert_eq!(e["message"], o["record"]["message"]);
        assert_eq!(e["logger"], o["record"]["name"]);
    }
    assert_eq!(out[0]["message"], "paid 42 EUR");
    assert_eq!(out[0]["request_id"], "r-1", "extra fields at the top");
    assert_eq!(out[2]["exception"]["type"], "ZeroDivisionError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pino_and_winston_json_lines() {
    let d = tempfile::tempdir().unwrap();
    let pino_file = d.path().join("pino.jsonl");
    node(
        r#"
const pino = require('pino');
const log = pino({ name: 'api' }, pino.destination({ dest: process.argv[1], sync: true }));
log.info({ request_id: 'r-1' }, 'hello');
log.error(new Error('boom'), 'failed');
"#,
        &[pino_file.to_str().unwrap()],
    );
    let originals = read_json_lines(&pino_file);
    let out = shaped(d.path(), "pino.jsonl", "pino").await;
    assert_eq!(out.len(), 2);
    for (o, e) in originals.iter().zip(&out) {
        assert_eq!(
            millis(e["timestamp"].as_str().unwrap()),
            o["time"].as_i64().unwrap()
        );
        assert_eq!(e["message"], o["msg"]);
        assert_eq!(e["logger"], "api");
    }
    assert_eq!(
        (out[0]["level"].as_str(), out[1]["level"].as_str()),
        (Some("info"), Some("error"))
    );
    assert!(
        out[1]["exception"]
            .as_str()
            .unwrap()
            .starts_with("Error: boom"),
        "{}",
        out[1]
    );

    let d = tempfile::tempdir().unwrap();
    let winston_file = d.path().join("winston.jsonl");
    node(
        r#"
const winston = require('winston');
const logger = winston.createLogger({
  format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: true }), winston.format.json()),
  transports: [new winston.transports.File({ filename: process.argv[1] })],
});
logger.info('hello', { service: 'web' });
logger.error(new Error('boom'));
logger.on('finish', () => {});
logger.end();
"#,
        &[winston_file.to_str().unwrap()],
    );
    // The file transport finishes asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(&winston_file).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "winston wrote nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let originals = read_json_lines(&winston_file);
    let out = shaped(d.path(), "winston.jsonl", "winston").await;
    assert_eq!(out.len(), 2);
    for (o, e) in originals.iter().zip(&out) {
        assert_eq!(e["timestamp"], o["timestamp"], "winston's own time kept");
        assert_eq!(e["level"], o["level"]);
        assert_eq!(e["message"], o["message"]);
    }
    assert_eq!(out[0]["service"], "web");
    assert!(
        out[1]["exception"]
            .as_str()
            .unwrap()
            .starts_with("Error: boom"),
        "{}",
        out[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_handler_into_the_shipped_ingest_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let redis = crate::redis::RedisServer::start();
    let (running, metrics, port) = crate::pipelines::start_http_ingest(d.path(), &redis).await;
    let created = d.path().join("created.txt");
    let script = r#"
import logging, logging.handlers, sys, time
port, out = sys.argv[1], sys.argv[2]
handler = logging.handlers.HTTPHandler(f"127.0.0.1:{port}", "/api/log", method="POST")
times = []
class Keep(logging.Filter):
    def filter(self, record):
        times.append(repr(record.created))
        return True
handler.addFilter(Keep())
log = logging.getLogger("billing")
log.addHandler(handler)
log.setLevel(logging.INFO)
for _ in range(100):
    try:
        import socket
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
log.warning("stock low for sku %s owner %s", "A-1", "bob@example.com")
log.error("payment %d failed after %.1f s", 7, 2.5)
open(out, "w").write("\n".join(times))
"#;
    let (port_s, created_s) = (port.to_string(), created.to_str().unwrap().to_string());
    tokio::task::spawn_blocking(move || python(script, &[&port_s, &created_s]))
        .await
        .unwrap();
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(
        crate::util::counts(&metrics, "web").events_in,
        2,
        "both records accepted"
    );
    let mut con = redis.con().await;
    let entries: Vec<(String, Vec<(String, String)>)> = {
        let reply: ::redis::Value = ::redis::cmd("XRANGE")
            .arg("logs")
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .unwrap();
        ::redis::from_redis_value(&reply).unwrap()
    };
    let events: Vec<Value> = entries
        .iter()
        .map(|(_, fields)| serde_json::from_str(&fields[0].1).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    let times: Vec<f64> = std::fs::read_to_string(&created)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    for (e, t) in events.iter().zip(&times) {
        assert_eq!(
            millis(e["timestamp"].as_str().unwrap()),
            secs_to_ms(*t),
            "{e}"
        );
        assert_eq!(e["service"], "billing");
        assert!(
            e["levelno"].is_i64() && e["lineno"].is_i64() && e["exc_info"].is_null(),
            "typed: {e}"
        );
    }
    assert_eq!(
        events[0]["message"], "stock low for sku A-1 owner [email]",
        "formatted, then masked"
    );
    assert_eq!(events[0]["level"], "warn");
    assert_eq!(events[1]["message"], "payment 7 failed after 2.5 s");
    let errors = read_json_lines(&d.path().join("logs/errors.log"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["level"], "error");
}

#[test]
fn the_timeline_reads_loguru_records_with_its_preset() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("shop.jsonl");
    python(
        r#"
import sys
from loguru import logger
logger.remove()
logger.add(sys.argv[1], serialize=True)
logger.bind(request_id="r-1", order_id=7).info("order received")
logger.bind(request_id="r-1").warning("payment slow")
logger.bind(request_id="r-2").error("payment failed")
"#,
        &[file.to_str().unwrap()],
    );
    let timeline = |args: &[&str]| {
        crate::util::sluice()
            .arg("timeline")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    let out = timeline(&["--preset", "loguru", "--all", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "order received",
        "payment slow",
        "payment failed",
        "\"r-1\"",
        "\"r-2\"",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // #42: the Markdown showed the whole `record` and `text` of every
    // event; it shows the message and the bound fields.
    let out = timeline(&["--preset", "loguru", "--all"]);
    let md = String::from_utf8_lossy(&out.stdout);
    let first = md
        .split("\n\n")
        .find(|e| e.contains("order received"))
        .unwrap_or_else(|| panic!("{md}"));
    let fields: Vec<&str> = first.lines().skip(1).collect();
    assert_eq!(fields, ["  - request_id: r-1", "  - order_id: 7"], "{md}");
    assert!(!md.contains("elapsed") && !md.contains("  - text:"), "{md}");
    // Without the preset there is no readable time: nothing to show, and
    // the shape is named with the preset that reads it.
    let out = timeline(&["--all", "--format", "json"]);
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(!plain.contains("order received"), "{plain}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 of the first 3 records read look like loguru's: try --preset loguru"),
        "{err}"
    );
    // #42: `timeline -i` with no flags wrote an empty report ("21 files,
    // 0 components"); it now proposes the preset, and the defaults read
    // every record.
    let report = d.path().join("report.md");
    let mut child = crate::util::sluice()
        .arg("timeline")
        .arg("-i")
        .arg(&file)
        .arg("-o")
        .arg(&report)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        // The preset, all components, all the time, info, timeline.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"\n\n\n\n\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{screen}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        screen.contains("look like loguru's: read them with --preset loguru? (yes, no) [yes]"),
        "{screen}"
    );
    assert!(screen.contains("1 files, 1 components"), "{screen}");
    assert!(screen.contains("1) shop (3 events)"), "{screen}");
    let md = std::fs::read_to_string(&report).unwrap();
    for want in ["order received", "payment slow", "payment failed"] {
        assert!(md.contains(want), "{want} missing from:\n{md}");
    }
    // A component that is not there: the known ones are listed.
    let out = timeline(&["--preset", "loguru", "--components", "shpo"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // loguru names a script `__main__`: the file names the component.
    assert!(
        err.contains("unknown component `shpo` (known: shop)"),
        "{err}"
    );
}

/// #37: times were cut to the millisecond. Microseconds and nanoseconds
/// survive file -> file and OTLP -> file, their fraction byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microseconds_and_nanoseconds_survive_to_the_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("in.jsonl"),
        concat!(
            "{\"created\":1796474732.999999,\"msg\":\"python\"}\n",
            "{\"ts\":1796474732999123456,\"msg\":\"ns\"}\n",
            "{\"datetime\":\"2026-12-05T13:45:32.123456+01:00\",\"msg\":\"monolog\"}\n",
            "{\"time\":1796474732999,\"msg\":\"pino\"}\n",
        ),
    )
    .unwrap();
    let port = crate::util::free_port();
    let toml = "[reload]\nwatch = false\n\n[sources.app]\ntype = \"file\"\npath = \"in.jsonl\"\nfollow = false\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"app\"]\n";
    run(d.path(), toml).await.unwrap();
    let got: Vec<String> = read_json_lines(&d.path().join("out.log"))
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        got,
        [
            "2026-12-05T12:45:32.999999Z",
            "2026-12-05T12:45:32.999123456Z",
            "2026-12-05T12:45:32.123456Z",
            "2026-12-05T12:45:32.999Z"
        ]
    );
    // OTLP/JSON -> file: nanoseconds as sent.
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.otel]\ntype = \"otlp\"\naddress = \"127.0.0.1:{port}\"\n\n[sinks.out]\ntype = \"file\"\npath = \"otlp.log\"\ninputs = [\"otel\"]\n"
    );
    let (running, _) = crate::util::start(d.path(), &toml).await;
    crate::util::until("the otlp port", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let body = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"1796474732999123456","body":{"stringValue":"otlp"}}]}]}]}"#;
    let r = crate::client::send(
        "POST",
        port,
        "/v1/logs",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = d.path().join("otlp.log");
    crate::util::until("the OTLP record written", 30, || {
        crate::util::json_lines_if_any(&out).len() == 1
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(
        read_json_lines(&out)[0]["timestamp"],
        "2026-12-05T12:45:32.999123456Z"
    );
}

/// The level names sources write (`sluice_common::level`) and the ones
/// plugins read (`sluice_plugin::Level`) are one table.
#[test]
fn sources_and_plugins_spell_levels_alike() {
    for name in [
        "trace",
        "TRACE",
        "debug",
        "dbg",
        "info",
        "Information",
        "informational",
        "notice",
        "warn",
        "WARNING",
        "error",
        "err",
        "fatal",
        "CRITICAL",
        "crit",
        "alert",
        "emergency",
        "emerg",
        "panic",
        "success",
        "verbose",
        "",
    ] {
        assert_eq!(
            sluice_common::level::canonical(name),
            sluice_plugin::Level::parse(name).map(sluice_plugin::Level::as_str),
            "{name}"
        );
    }
    // The severities too (the timeline's `--level` reads the shared one),
    // numbers of pino and bunyan included.
    for name in [
        "trace", "DEBUG", "info", "notice", "WARNING", "err", "panic", "10", "20", "30", "40",
        "50", "60", "70", "success", "",
    ] {
        assert_eq!(
            sluice_common::level::rank(name),
            sluice_plugin::Level::parse(name).map(|l| l as u8),
            "{name}"
        );
    }
}
