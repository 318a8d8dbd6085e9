//! The hostile tests of the third hardening round (#36): each attack that
//! once succeeded, against the real binary or a real pipeline, on loopback.

use std::path::Path;
use std::time::Duration;

use crate::client::send;
use crate::util::{free_port, spawn_run};

/// A child process killed when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    fn alive(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

/// Run `toml` with the binary and wait for `port` to answer.
async fn run_binary(dir: &Path, toml: &str, port: u16) -> Child {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Child(spawn_run(&path));
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        assert!(child.alive(), "sluice exited before listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sluice did not listen on {port}");
}

/// 1. Python %-formatting of an HTTPHandler record ran natively in the host
/// and unbounded: a huge width aborted on allocation, a repr nested 60,000
/// deep overflowed the stack, a huge precision panicked while the clock
/// lock was held (every later request then failed while /health said ok).
/// Now each record is taken (its message left unformatted) and the
/// process, later requests and /health are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_records_cannot_abort_or_poison_the_http_source() {
    let d = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let out = d.path().join("out.log");
    let toml = format!(
        r#"[admin]
address = "127.0.0.1:{admin}"

[sources.web]
type = "http"
address = "127.0.0.1:{port}"
ack = "delivered"
max_field = "64KiB"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["web"]
"#
    );
    let mut child = run_binary(d.path(), &toml, port).await;
    let deep = "(".repeat(60_000);
    let attacks = [
        r#"{"levelname":"ERROR","msg":"%99999999999999d","levelno":"40","created":"1","args":"(1,)"}"#.to_string(),
        format!(r#"{{"levelname":"ERROR","msg":"%s","levelno":"40","created":"1","args":"{deep}"}}"#),
        r#"{"levelname":"ERROR","msg":"%.99999999999f","levelno":"40","created":"1","args":"(1.5,)"}"#.to_string(),
    ];
    let json = [("content-type", "application/json")];
    for body in &attacks {
        let r = send("POST", port, "/api/log", &json, body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(child.alive(), "the process died on {}", &body[..60]);
    }
    let r = send(
        "POST",
        port,
        "/api/log",
        &json,
        br#"{"message":"after","level":"info"}"#,
    );
    assert_eq!(r.status, 200, "a later request: {}", r.body);
    let health = send("GET", admin, "/health", &[], b"");
    assert_eq!(health.status, 200, "{}", health.body);
    let events = crate::util::read_json_lines(&out);
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["message"], "%99999999999999d", "kept unformatted");
    assert_eq!(events[2]["message"], "%.99999999999f");
    assert_eq!(events[3]["message"], "after");
}

/// A request to the admin port, byte for byte (`headers` as lines).
fn admin_request(port: u16, method: &str, path: &str, headers: &str) -> String {
    crate::util::raw_http(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// 2. A reload with a source `validate` refuses (`grpc_address = "not-an-address"`)
/// answered 200, then the process exited 1. 9. A page on another origin
/// could POST a form to `/reload`, and `Host: attacker.example` was
/// answered (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_what_validate_refuses_and_the_admin_port_refuses_other_sites() {
    let d = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let good = format!(
        r#"[admin]
address = "127.0.0.1:{admin}"

[reload]
watch = false

[sources.otel]
type = "otlp"
address = "127.0.0.1:{port}"

[sinks.out]
type = "stdout"
inputs = ["otel"]
"#
    );
    let mut child = run_binary(d.path(), &good, admin).await;
    let own = "Host: 127.0.0.1\r\nContent-Type: application/json\r\n";

    // 9. Other sites: a form, a foreign Origin, a foreign Host.
    for (headers, status) in [
        (
            "Host: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n".to_string(),
            "403",
        ),
        (
            "Host: 127.0.0.1\r\nContent-Type: text/plain\r\n".into(),
            "403",
        ),
        ("Host: 127.0.0.1\r\n".into(), "403"),
        (format!("{own}Origin: http://attacker.example\r\n"), "403"),
        (
            "Host: attacker.example\r\nContent-Type: application/json\r\n".into(),
            "421",
        ),
    ] {
        let r = admin_request(admin, "POST", "/reload", &headers);
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status}")),
            "{headers:?}: {r}"
        );
    }
    let r = admin_request(admin, "GET", "/metrics", "Host: attacker.example\r\n");
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    // The port's own pages and a same-origin POST work.
    let r = admin_request(
        admin,
        "GET",
        "/health",
        &format!("Host: localhost:{admin}\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = admin_request(
        admin,
        "POST",
        "/reload",
        &format!("{own}Origin: http://127.0.0.1\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    // 2. What validate refuses, reload refuses, and the pipeline runs on.
    let bad = good.replace(
        &format!("address = \"127.0.0.1:{port}\""),
        &format!("address = \"127.0.0.1:{port}\"\ngrpc_address = \"not-an-address\""),
    );
    std::fs::write(d.path().join("pipeline.toml"), &bad).unwrap();
    let validate = crate::util::sluice()
        .arg("validate")
        .arg(d.path().join("pipeline.toml"))
        .output()
        .unwrap();
    assert!(!validate.status.success());
    let r = admin_request(admin, "POST", "/reload", own);
    assert!(r.starts_with("HTTP/1.1 422"), "{r}");
    assert!(r.contains("grpc_address"), "{r}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(child.alive(), "a refused reload ended the process");
    let r = admin_request(admin, "GET", "/health", "Host: 127.0.0.1\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = send(
        "POST",
        port,
        "/v1/logs",
        &[("content-type", "application/json")],
        br#"{"resourceLogs":[]}"#,
    );
    assert_eq!(r.status, 200, "the old source still serves: {}", r.body);
}

/// The peak resident memory of a process, in MiB.
fn peak_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap()
        / 1024
}

/// A protobuf length-delimited field.
fn field(number: u8, inner: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut n = inner.len();
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(inner);
    out
}

/// An ExportLogsServiceRequest of `n` empty log records (`12 00` each).
fn empty_records(n: usize) -> Vec<u8> {
    field(1, &field(2, &b"\x12\x00".repeat(n)))
}

/// Send `body` as one `LogsService/Export` with grpcio (the Python gRPC
/// library, raw bytes); the status name and details, or `OK`.
async fn grpc_export(port: u16, body: &Path) -> String {
    let script = r#"
import grpc, sys
port, path = int(sys.argv[1]), sys.argv[2]
opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=opts)
export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
try:
    export(open(path, "rb").read(), timeout=60)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;
    let mut cmd = std::process::Command::new(crate::otel::python());
    cmd.arg("-c").arg(script).arg(port.to_string()).arg(body);
    crate::util::succeeds(cmd).await.trim().to_string()
}

/// 3. 10 MiB of empty log records took 978 MiB to decode (six at once,
/// 1.9 GB), over OTLP/HTTP and gRPC alike, and gRPC was not charged
/// against `max_in_flight`. Records are counted on the wire and what
/// decoding takes is charged first: refused, and memory stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_bodies_that_decode_to_gigabytes_are_refused_before_decoding() {
    let d = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let toml = format!(
        r#"[reload]
watch = false

[sources.otel]
type = "otlp"
address = "127.0.0.1:{http}"
grpc_address = "127.0.0.1:{grpc}"
max_events_per_request = 1000000

[sinks.out]
type = "file"
path = "out.log"
inputs = ["otel"]
"#
    );
    let child = run_binary(d.path(), &toml, http).await;
    let pid = child.0.id();
    // 4.5 million records: past max_events_per_request, counted unread.
    let millions = empty_records(4_500_000);
    // 800,000: within the count, but hundreds of MiB once decoded.
    let many = empty_records(800_000);
    let protobuf = [("content-type", "application/x-protobuf")];
    let r = send("POST", http, "/v1/logs", &protobuf, &millions);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_events_per_request"), "{}", r.body);
    let r = send("POST", http, "/v1/logs", &protobuf, &many);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_in_flight"), "{}", r.body);
    // The same in OTLP/JSON: every object is charged.
    let json = format!(
        "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{}{{}}]}}]}}]}}",
        "{},".repeat(800_000)
    );
    let r = send(
        "POST",
        http,
        "/v1/logs",
        &[("content-type", "application/json")],
        json.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    // gRPC: the same limits.
    let file = d.path().join("millions.bin");
    std::fs::write(&file, &millions).unwrap();
    let said = grpc_export(grpc, &file).await;
    assert!(
        said.starts_with("INVALID_ARGUMENT") && said.contains("max_events_per_request"),
        "{said}"
    );
    std::fs::write(&file, &many).unwrap();
    let said = grpc_export(grpc, &file).await;
    assert!(
        said.starts_with("INVALID_ARGUMENT") && said.contains("max_in_flight"),
        "{said}"
    );
    // A small request of real (empty) records still goes through both.
    std::fs::write(&file, empty_records(3)).unwrap();
    assert_eq!(grpc_export(grpc, &file).await, "OK");
    let r = send("POST", http, "/v1/logs", &protobuf, &empty_records(2));
    assert_eq!(r.status, 200, "{}", r.body);
    let peak = peak_mib(pid);
    assert!(peak < 300, "peak resident memory {peak} MiB");
    crate::util::until("5 records written", 10, || {
        crate::util::json_lines_if_any(&d.path().join("out.log")).len() == 5
    })
    .await;
}

/// 4. Idle gRPC connections were never closed (1,100 exhausted a 1,024
/// file descriptor limit). Past `max_connections` a connection is closed
/// at once, and an idle one after `read_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grpc_connections_are_closed_and_capped() {
    use std::io::Read as _;
    let d = tempfile::tempdir().unwrap();
    let (http, grpc) = (free_port(), free_port());
    let toml = format!(
        r#"[reload]
watch = false

[sources.otel]
type = "otlp"
address = "127.0.0.1:{http}"
grpc_address = "127.0.0.1:{grpc}"
max_connections = 50
read_timeout = "1s"

[sinks.out]
type = "stdout"
inputs = ["otel"]
"#
    );
    let _child = run_binary(d.path(), &toml, http).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let s = std::net::TcpStream::connect(("127.0.0.1", grpc)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        idle.push(s);
    }
    // Each is closed by the server: past the cap at once, the others once
    // idle for read_timeout. A read sees the end (or a reset), not the
    // 10-second timeout of this test.
    let started = std::time::Instant::now();
    for s in &mut idle {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("a connection stayed open: {e}"),
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // And it still serves.
    let file = d.path().join("one.bin");
    std::fs::write(&file, empty_records(1)).unwrap();
    assert_eq!(grpc_export(grpc, &file).await, "OK");
}
