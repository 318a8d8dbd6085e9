//! OpenTelemetry logs in and out with the real clients: Python's official
//! OpenTelemetry SDK (`opentelemetry-sdk`, its `LoggingHandler` and the
//! OTLP/HTTP exporter) into the `otlp` source, and the `otlp` sink into a
//! receiver built on the official `opentelemetry-proto` Python stubs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{
    free_port, json_lines_if_any, raw_http, read_json_lines, start, until, write_json_lines, Helper,
};

pub fn python() -> PathBuf {
    sluice::cli::plugin::build::tools_dir()
        .expect("a tools folder (scripts/setup-test-deps)")
        .join("py/bin/python")
}

/// An OTLP/HTTP logs receiver on the official Python protobuf stubs: each
/// record it takes is written to `out` as JSON (ids as hex, values as
/// Python sees them); stopped when dropped.
pub struct Receiver {
    pub port: u16,
    out: PathBuf,
    _server: Helper,
}

const RECEIVER: &str = r#"
import gzip, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse)

port, out = int(sys.argv[1]), sys.argv[2]

def value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.headers["Content-Type"] == "application/x-protobuf", self.headers
        req = ExportLogsServiceRequest()
        req.ParseFromString(body)
        with open(out, "a") as f:
            for rl in req.resource_logs:
                resource = {kv.key: value(kv.value) for kv in rl.resource.attributes}
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        f.write(json.dumps({
                            "path": self.path,
                            "resource": resource,
                            "scope": sl.scope.name,
                            "time": r.time_unix_nano,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "body": value(r.body),
                            "trace_id": r.trace_id.hex(),
                            "span_id": r.span_id.hex(),
                            "flags": r.flags,
                            "attributes": {kv.key: value(kv.value) for kv in r.attributes},
                        }) + "\n")
        answer = ExportLogsServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
print("ready", flush=True)
server.serve_forever()
"#;

impl Receiver {
    pub fn start(dir: &Path) -> Receiver {
        let port = free_port();
        let out = dir.join("received.jsonl");
        let mut cmd = Command::new(python());
        cmd.arg("-c").arg(RECEIVER).arg(port.to_string()).arg(&out);
        let _server = Helper::start(&mut cmd, "the OTLP receiver (opentelemetry-proto)");
        Receiver { port, out, _server }
    }

    pub fn records(&self) -> Vec<Value> {
        json_lines_if_any(&self.out)
    }
}

/// Python's logging through the OpenTelemetry SDK: `N` records, a third of
/// them inside a span, to `port`; prints each record's `created` and, in
/// a span, its trace and span ids, as JSON lines.
const SDK: &str = r#"
import json, logging, sys, warnings
warnings.simplefilter("ignore")
from opentelemetry import trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

port, n = int(sys.argv[1]), int(sys.argv[2])
resource = Resource.create({"service.name": "checkout", "service.version": "1.4.2"})
trace.set_tracer_provider(TracerProvider(resource=resource))
tracer = trace.get_tracer("shop")
provider = LoggerProvider(resource=resource)
set_logger_provider(provider)
kind = sys.argv[3] if len(sys.argv) > 3 else "http"
token = sys.argv[4] if len(sys.argv) > 4 else None
if kind == "grpc":
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter
    exporter = GrpcExporter(endpoint=f"127.0.0.1:{port}", insecure=True,
        compression=grpc.Compression.Gzip,
        headers=(("authorization", f"Bearer {token}"),) if token else None)
else:
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs",
        compression=Compression.Gzip,
        headers={"authorization": f"Bearer {token}"} if token else None)
# A queue that holds every record: the SDK drops what does not fit.
provider.add_log_record_processor(BatchLogRecordProcessor(exporter,
    max_queue_size=max(n + 1, 2048)))
handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
seen = []
class Keep(logging.Handler):
    def emit(self, record):
        span = trace.get_current_span().get_span_context()
        seen.append({"i": record.order_id, "created": record.created,
                     "trace_id": format(span.trace_id, "032x") if span.is_valid else "",
                     "span_id": format(span.span_id, "016x") if span.is_valid else ""})
log = logging.getLogger("shop.orders")
log.setLevel(logging.DEBUG)
log.addHandler(handler)
log.addHandler(Keep())
for i in range(n):
    extra = {"order_id": i, "amount": i * 1.5, "vip": i % 2 == 0, "customer": f"c{i}@example.com"}
    if i % 3 == 0:
        with tracer.start_as_current_span("checkout"):
            log.warning("order %d for %s held", i, f"c{i}@example.com", extra=extra)
    elif i % 3 == 1:
        log.error("order %d failed", i, extra=extra)
    else:
        log.info("order %d paid", i, extra=extra)
provider.force_flush()
provider.shutdown()
for s in seen:
    print(json.dumps(s))
"#;

/// Log `n` records through Python's OpenTelemetry SDK to an OTLP/HTTP
/// source on `port` (see [`SDK`]); what Python saw of each record.
pub async fn python_sdk_logs(port: u16, n: usize) -> Vec<Value> {
    python_sdk_logs_by(port, n, "http", None).await
}

/// The same through the SDK's `http` or `grpc` exporter, with a bearer
/// token if given.
pub async fn python_sdk_logs_by(
    port: u16,
    n: usize,
    exporter: &str,
    token: Option<&str>,
) -> Vec<Value> {
    let mut args = vec![port.to_string(), n.to_string(), exporter.to_string()];
    args.extend(token.map(str::to_string));
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(SDK).args(&args);
    let sent: Vec<Value> = crate::util::succeeds(cmd)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sent.len(), n);
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_logging_through_the_sdk_in_and_on_through_mask_keeping_trace_context() {
    let d = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(d.path());
    let port = free_port();
    let toml = format!(
        r#"[reload]
watch = false

[sources.otel]
type = "otlp"
address = "127.0.0.1:{port}"

[sinks.archive]
type = "file"
path = "archive.log"
inputs = ["otel"]

[transforms.private]
plugin = "mask"
inputs = ["otel"]

[sinks.collector]
type = "otlp"
endpoint = "http://127.0.0.1:{receiver}"
compress = "gzip"
inputs = ["private"]
"#,
        receiver = receiver.port
    );
    let (running, _) = start(d.path(), &toml).await;
    let n = 3000;
    let sent = python_sdk_logs(port, n).await;
    until("every record at the receiver", 60, || {
        receiver.records().len() >= n
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();

    // What the source made of the SDK's records.
    let mut events = read_json_lines(&d.path().join("archive.log"));
    assert_eq!(events.len(), n, "every record once");
    events.sort_by_key(|e| e["attributes"]["order_id"].as_i64().unwrap());
    for (e, s) in events.iter().zip(&sent) {
        let i = s["i"].as_i64().unwrap();
        assert_eq!(e["attributes"]["order_id"], i, "{e}");
        assert_eq!(e["attributes"]["amount"].as_f64(), Some(i as f64 * 1.5));
        assert_eq!(e["attributes"]["vip"], i % 2 == 0);
        assert_eq!(e["attributes"]["customer"], format!("c{i}@example.com"));
        assert!(e["attributes"]["code.function.name"].is_string(), "{e}");
        assert!(e["attributes"]["code.line.number"].is_i64(), "{e}");
        assert_eq!(e["service"], "checkout");
        assert_eq!(e["resource"]["service.version"], "1.4.2");
        assert_eq!(e["scope"]["name"], "shop.orders");
        let (level, text, message) = match i % 3 {
            0 => (
                "warn",
                "WARN",
                format!("order {i} for c{i}@example.com held"),
            ),
            1 => ("error", "ERROR", format!("order {i} failed")),
            _ => ("info", "INFO", format!("order {i} paid")),
        };
        assert_eq!(e["level"], level);
        assert_eq!(e["severity_text"], text);
        assert_eq!(e["message"], message);
        // The record's own time, to the microsecond Python's float holds.
        let ts = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        let created = s["created"].as_f64().unwrap();
        assert!(
            (ts.timestamp_micros() - (created * 1e6) as i64).abs() <= 1,
            "{} vs {created}",
            e["timestamp"]
        );
        assert_eq!(e["trace_id"].as_str().unwrap_or(""), s["trace_id"]);
        assert_eq!(e["span_id"].as_str().unwrap_or(""), s["span_id"]);
        assert_eq!(e["trace_id"].is_string(), i % 3 == 0);
    }

    // And what reached the collector after the mask: trace context and
    // types kept, the addresses masked.
    let mut records = receiver.records();
    assert_eq!(records.len(), n, "every record once");
    records.sort_by_key(|r| r["attributes"]["order_id"].as_i64().unwrap());
    for (r, s) in records.iter().zip(&sent) {
        let i = s["i"].as_i64().unwrap();
        assert_eq!(r["path"], "/v1/logs");
        assert_eq!(r["trace_id"], s["trace_id"], "{r}");
        assert_eq!(r["span_id"], s["span_id"], "{r}");
        assert_eq!(r["resource"]["service.name"], "checkout");
        assert_eq!(r["resource"]["service.version"], "1.4.2");
        assert_eq!(r["scope"], "shop.orders");
        assert_eq!(r["attributes"]["order_id"], i);
        assert_eq!(r["attributes"]["vip"], i % 2 == 0);
        assert!(!r["attributes"].as_object().unwrap().contains_key("service"));
        let customer = r["attributes"]["customer"].as_str().unwrap();
        assert!(customer.starts_with("[email"), "not masked: {customer}");
        let body = r["body"].as_str().unwrap();
        assert!(!body.contains("@example.com"), "not masked: {body}");
        let (number, text) = match i % 3 {
            0 => (13, "WARN"),
            1 => (17, "ERROR"),
            _ => (9, "INFO"),
        };
        assert_eq!(
            (
                r["severity_number"].as_i64().unwrap(),
                r["severity_text"].as_str().unwrap()
            ),
            (number, text)
        );
        let created_ns = (s["created"].as_f64().unwrap() * 1e9) as i64;
        assert!(
            (r["time"].as_i64().unwrap() - created_ns).abs() < 2_000,
            "{r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_sink_maps_plain_events_for_a_receiver_on_the_official_stubs() {
    let d = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(d.path());
    let levels = ["debug", "info", "warning", "error", "critical"];
    let events: Vec<Value> = (0..1000)
        .map(|i| {
            let level = levels[i % 5];
            let service = ["api", "db"][i % 2];
            serde_json::json!({
                "timestamp": format!("2026-12-01T10:00:{:02}.{:03}Z", i % 60, i % 1000),
                "level": level,
                "message": format!("step {i}"),
                "service": service,
                "host": "web-1",
                "trace_id": "5b8efff798038103d269b633813fc60c",
                "span_id": "eee19b7ec3c1b174",
                "request": {"path": "/pay", "ms": i},
                "seq": i
            })
        })
        .collect();
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = format!(
        r#"[sources.app]
type = "file"
path = "in.log"

[sinks.collector]
type = "otlp"
endpoint = "http://127.0.0.1:{}/v1/logs"
resource_fields = {{ "service.name" = "service", "host.name" = "host" }}
max_events = 300
inputs = ["app"]
"#,
        receiver.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let mut records = receiver.records();
    assert_eq!(records.len(), 1000);
    records.sort_by_key(|r| r["attributes"]["seq"].as_i64().unwrap());
    for (i, r) in records.iter().enumerate() {
        let e = &events[i];
        assert_eq!(r["resource"]["service.name"], e["service"]);
        assert_eq!(r["resource"]["host.name"], "web-1");
        assert_eq!(r["body"], e["message"]);
        let number = [5, 9, 13, 17, 21][i % 5];
        assert_eq!(r["severity_number"], number);
        assert_eq!(
            r["severity_text"],
            e["level"].as_str().unwrap().to_uppercase()
        );
        let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        assert_eq!(
            r["time"].as_i64().unwrap(),
            t.timestamp_nanos_opt().unwrap()
        );
        assert_eq!(r["trace_id"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(r["span_id"], "eee19b7ec3c1b174");
        assert_eq!(r["attributes"]["request"]["ms"], i);
        let keys: Vec<&String> = r["attributes"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["request", "seq"], "{r}");
    }
    let c = crate::util::counts(&metrics, "collector");
    assert_eq!(c.events_out, 1000);
    assert!(c.requests >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_bodies_and_what_the_source_refuses() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = format!(
        "[reload]\nwatch = false\n[sources.otel]\ntype = \"otlp\"\naddress = \"127.0.0.1:{port}\"\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"otel\"]\n"
    );
    let (running, _) = start(d.path(), &toml).await;
    until("the source to listen", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let post = |path: &str, ct: &str, body: &str| {
        raw_http(
            port,
            &format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()),
        )
    };
    let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"web"}}]},"scopeLogs":[{"scope":{"name":"browser"},"logRecords":[{"timeUnixNano":"1764000000000000001","severityNumber":17,"severityText":"Error","body":{"kvlistValue":{"values":[{"key":"msg","value":{"stringValue":"bad"}}]}},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","attributes":[{"key":"n","value":{"intValue":"5"}},{"key":"b","value":{"bytesValue":"AAE="}}]}]}]}]}"#;
    let answer = post("/v1/logs", "application/json", json);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.ends_with("{}"), "{answer}");
    let refused = post("/v1/logs", "text/plain", "hello");
    assert!(refused.starts_with("HTTP/1.1 415"), "{refused}");
    let bad = post("/v1/logs", "application/json", "{\"resourceLogs\": 7}");
    assert!(
        bad.starts_with("HTTP/1.1 400") && bad.contains("ExportLogsServiceRequest"),
        "{bad}"
    );
    let traces = post("/v1/traces", "application/json", "{}");
    assert!(
        traces.starts_with("HTTP/1.1 404") && traces.contains("/v1/logs"),
        "{traces}"
    );
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = read_json_lines(&d.path().join("out.log"));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["timestamp"], "2025-11-24T16:00:00.000000001Z");
    assert_eq!(e["level"], "error");
    assert_eq!(e["severity_text"], "Error");
    assert_eq!(e["body"], serde_json::json!({"msg": "bad"}));
    assert!(e.get("message").is_none());
    assert_eq!(e["service"], "web");
    assert_eq!(e["attributes"]["n"], 5);
    assert_eq!(e["attributes"]["b"], "AAE=");
    assert_eq!(e["trace_id"], "5b8efff798038103d269b633813fc60c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_and_http_side_by_side_with_a_token() {
    let d = tempfile::tempdir().unwrap();
    // SAFETY: set before the source reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_OTLP_TOKEN", "otlp-t0ken") };
    let (http, grpc) = (free_port(), free_port());
    let toml = format!(
        "[reload]\nwatch = false\n[sources.otel]\ntype = \"otlp\"\naddress = \"127.0.0.1:{http}\"\ngrpc_address = \"127.0.0.1:{grpc}\"\nauth_token_env = \"SLUICE_TEST_OTLP_TOKEN\"\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"otel\"]\n"
    );
    let (running, metrics) = start(d.path(), &toml).await;
    let by_grpc = python_sdk_logs_by(grpc, 1500, "grpc", Some("otlp-t0ken")).await;
    let by_http = python_sdk_logs_by(http, 500, "http", Some("otlp-t0ken")).await;
    // Without the token, gRPC says UNAUTHENTICATED: the SDK logs it and
    // gives up (nothing arrives).
    python_sdk_logs_by(grpc, 10, "grpc", Some("wrong")).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = read_json_lines(&d.path().join("out.log"));
    assert_eq!(events.len(), 2000);
    assert_eq!(crate::util::counts(&metrics, "otel").events_out, 2000);
    let mut grpc_traced = 0;
    for (e, s) in events[..1500].iter().zip(&by_grpc) {
        assert_eq!(e["attributes"]["order_id"], s["i"], "{e}");
        assert_eq!(e["service"], "checkout");
        assert_eq!(e["trace_id"].as_str().unwrap_or(""), s["trace_id"]);
        grpc_traced += usize::from(e["trace_id"].is_string());
    }
    assert_eq!(grpc_traced, 500);
    for (e, s) in events[1500..].iter().zip(&by_http) {
        assert_eq!(e["attributes"]["order_id"], s["i"], "{e}");
    }
}

/// One Python record, two ways in: `HTTPHandler` into an `http` source and
/// the OpenTelemetry SDK's `LoggingHandler` into an `otlp` source with
/// `flatten_attributes = true`, both handlers on the same logger. The two
/// events agree on `level` (one spelling: `warn`, `error`, `fatal`),
/// `message`, `logger` and every extra, typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_has_one_shape_through_http_handler_and_otlp() {
    let d = tempfile::tempdir().unwrap();
    let (http, otlp) = (free_port(), free_port());
    let toml = format!(
        r#"[reload]
watch = false

[sources.handler]
type = "http"
address = "127.0.0.1:{http}"
ack = "delivered"

[sources.otel]
type = "otlp"
address = "127.0.0.1:{otlp}"
flatten_attributes = true

[sinks.via_handler]
type = "file"
path = "handler.log"
inputs = ["handler"]

[sinks.via_otlp]
type = "file"
path = "otlp.log"
inputs = ["otel"]
"#
    );
    let (running, _) = start(d.path(), &toml).await;
    crate::util::accepting(http).await;
    crate::util::accepting(otlp).await;
    let script = format!(
        r#"
import logging, logging.handlers, warnings
warnings.simplefilter("ignore")
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
provider = LoggerProvider()
provider.add_log_record_processor(SimpleLogRecordProcessor(
    OTLPLogExporter(endpoint="http://127.0.0.1:{otlp}/v1/logs")))
log = logging.getLogger("shop.orders")
log.setLevel(logging.DEBUG)
log.addHandler(logging.handlers.HTTPHandler("127.0.0.1:{http}", "/api/log", method="POST"))
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
levels = [logging.WARNING, logging.ERROR, logging.CRITICAL, logging.INFO]
for i in range(8):
    log.log(levels[i % 4], "order %d checked", i,
            extra={{"order_id": 1000 + i, "amount": 12.5 * i, "is_vip": i % 2 == 0}})
provider.shutdown()
"#
    );
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script);
    crate::util::succeeds(cmd).await;
    until("both sources wrote every record", 30, || {
        json_lines_if_any(&d.path().join("otlp.log")).len() == 8
            && json_lines_if_any(&d.path().join("handler.log")).len() == 8
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let by_order = |file: &str| {
        let mut events = read_json_lines(&d.path().join(file));
        events.sort_by_key(|e| e["order_id"].as_i64().unwrap_or(-1));
        events
    };
    let (via_handler, via_otlp) = (by_order("handler.log"), by_order("otlp.log"));
    for (i, (h, o)) in via_handler.iter().zip(&via_otlp).enumerate() {
        for field in ["level", "message", "logger", "order_id", "amount", "is_vip"] {
            assert_eq!(h[field], o[field], "{field}: {h} vs {o}");
        }
        assert_eq!(h["level"], ["warn", "error", "fatal", "info"][i % 4]);
        assert_eq!(h["logger"], "shop.orders");
        assert_eq!(h["order_id"], 1000 + i as i64);
        assert_eq!(o["is_vip"], i % 2 == 0);
        assert!(
            o.get("attributes")
                .is_none_or(|a| a.get("order_id").is_none()),
            "{o}"
        );
    }
}
