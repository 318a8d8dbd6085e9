//! TLS with real tools: certificates made by the `openssl` command (a CA,
//! server and client certificates, an expired one, one for another name,
//! one that expires soon), ingest over HTTPS with `curl`, Python
//! `requests` and the OpenTelemetry Python SDK's OTLP exporter, mutual
//! TLS, a network sink reaching a server of the test's private CA, and
//! rotation of the server certificate under load.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::util::{free_port, read_json_lines, sluice, start, until};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate `name` (`name.pem`, `name.key`) signed by the test's CA,
/// with `subject`, extensions `ext` and `days` of validity (negative:
/// already expired).
fn issue(dir: &Path, name: &str, subject: &str, ext: &str, days: i32) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            &days.to_string(),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

const SERVER_EXT: &str = "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n";

/// The test's PKI in `dir`.
pub(crate) fn pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=sluice test CA",
        ],
    );
    issue(dir, "server", "/CN=localhost", SERVER_EXT, 30);
    issue(dir, "renewed", "/CN=localhost/O=Renewed", SERVER_EXT, 30);
    issue(
        dir,
        "client",
        "/CN=app-1/O=Payments",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        30,
    );
    issue(dir, "expired", "/CN=localhost", SERVER_EXT, -1);
    issue(dir, "soon", "/CN=localhost/O=Soon", SERVER_EXT, 5);
    issue(
        dir,
        "other",
        "/CN=other.example",
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:other.example\n",
        30,
    );
}

/// `curl` with `args`: its exit code and output.
fn curl(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "-m", "10"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn metric(metrics: &sluice::base::metrics::Registry, component: &str, reason: &str) -> u64 {
    crate::util::counts(metrics, component)
        .tls_errors
        .iter()
        .find(|(r, _)| r == reason)
        .map_or(0, |(_, n)| *n)
}

/// HTTP and OTLP ingest over TLS: curl, Python `requests` and the
/// OpenTelemetry SDK with the test's CA get through; plaintext, an unknown
/// CA and (with mTLS) a missing client certificate are refused with
/// their reason counted; the client certificate's subject reaches the
/// events as `_sluice.peer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_tls_and_mutual_tls() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let (https, mtls, otlp) = (free_port(), free_port(), free_port());
    let toml = format!(
        r#"
[sources.web]
type = "http"
address = "127.0.0.1:{https}"
tls = {{ cert_file = "server.pem", key_file = "server.key" }}

[sources.peers]
type = "http"
address = "127.0.0.1:{mtls}"
tls = {{ cert_file = "server.pem", key_file = "server.key", client_ca_file = "ca.pem", min_version = "1.3" }}

[sources.otel]
type = "otlp"
address = "127.0.0.1:{otlp}"
tls = {{ cert_file = "server.pem", key_file = "server.key" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["web", "peers", "otel"]
"#
    );
    let (running, metrics) = start(dir, &toml).await;
    let url = format!("https://127.0.0.1:{https}/api/log");
    let (code, out) = curl(
        dir,
        &[
            "--cacert",
            "ca.pem",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"via":"curl"}"#,
            &url,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"accepted\":1"), "{out}");
    // The name in the certificate is what curl checks: localhost works too.
    let (code, out) = curl(
        dir,
        &[
            "--cacert",
            "ca.pem",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"via":"curl localhost"}"#,
            &format!("https://localhost:{https}/api/log"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    // Without the CA, curl refuses the server.
    let (code, _) = curl(dir, &["-d", "{}", &url]);
    assert_eq!(code, 60, "curl must not trust an unknown CA");
    // Plaintext to the TLS port: told so, and counted.
    let (_, out) = curl(
        dir,
        &["-d", "{}", &format!("http://127.0.0.1:{https}/api/log")],
    );
    assert!(out.contains("this port speaks TLS"), "{out}");
    until("the TLS errors counted", 10, || {
        metric(&metrics, "web", "not TLS (plaintext sent to a TLS port?)") >= 1
            && metric(
                &metrics,
                "web",
                "the peer does not trust our certificate's CA",
            ) >= 1
    })
    .await;
    // Python's requests with the CA.
    let python = crate::otel::python();
    let script = format!(
        "import requests,sys\nr = requests.post('{url}', json={{'via': 'requests'}}, verify='ca.pem')\nprint(r.status_code, r.text)\n"
    );
    let out = Command::new(&python)
        .current_dir(dir)
        .args(["-c", &script])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.starts_with("200"),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mutual TLS: no client certificate, no entry; with it, the subject
    // reaches the event.
    let murl = format!("https://127.0.0.1:{mtls}/api/log");
    let (code, out) = curl(dir, &["--cacert", "ca.pem", "-d", "{}", &murl]);
    assert_ne!(code, 0, "{out}");
    let (code, out) = curl(
        dir,
        &[
            "--cacert",
            "ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"via":"mtls"}"#,
            &murl,
        ],
    );
    assert_eq!(code, 0, "{out}");
    until("the missing client certificate counted", 10, || {
        metric(&metrics, "peers", "no client certificate") >= 1
    })
    .await;
    // The OpenTelemetry SDK's OTLP/HTTP exporter with the CA.
    let sdk = format!(
        r#"
import logging, warnings
warnings.simplefilter("ignore")
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
provider = LoggerProvider()
set_logger_provider(provider)
exporter = OTLPLogExporter(endpoint="https://127.0.0.1:{otlp}/v1/logs", certificate_file="ca.pem")
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
log = logging.getLogger("shop")
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
log.setLevel(logging.DEBUG)
for i in range(5):
    log.warning("order %d over TLS", i)
provider.force_flush()
provider.shutdown()
"#
    );
    // This machine sets REQUESTS_CA_BUNDLE, which requests lets win over
    // a session's `verify` (what the exporter sets): not here.
    let out = Command::new(&python)
        .current_dir(dir)
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .args(["-c", &sdk])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("out.log");
    until("every event written", 20, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() >= 9)
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = read_json_lines(&path);
    let text = |e: &serde_json::Value| e.to_string();
    assert!(events.iter().any(|e| e["via"] == "curl"));
    assert!(events.iter().any(|e| e["via"] == "requests"));
    let m = events.iter().find(|e| e["via"] == "mtls").unwrap();
    assert_eq!(m["_sluice"]["peer"], "CN=app-1, O=Payments", "{m}");
    assert_eq!(
        events
            .iter()
            .filter(|e| text(e).contains("over TLS"))
            .count(),
        5
    );
    assert!(events
        .iter()
        .filter(|e| e["via"] != "mtls")
        .all(|e| e.get("_sluice").is_none()));
}

/// A TLS server of the test's private CA (hyper on tokio-rustls), taking
/// JSON lines; `name` picks its certificate.
async fn tls_server(dir: &Path, name: &str) -> (u16, Arc<AtomicUsize>) {
    let tls = sluice::base::tls::ServerTls {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
        client_ca_file: None,
        min_version: Default::default(),
    };
    let config = tls.server_config(&[b"http/1.1"]).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(AtomicUsize::new(0));
    let count = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            count.fetch_add(
                                body.split(|&b| b == b'\n')
                                    .filter(|l| !l.is_empty())
                                    .count(),
                                Ordering::Relaxed,
                            );
                            Ok::<_, std::io::Error>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from("ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, got)
}

/// A network sink reaches a server of a private CA only with `ca_file`;
/// without it, and with a certificate for another name, it says why in
/// one line and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_trust_the_ca_they_are_given() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let (port, got) = tls_server(dir, "server").await;
    let (other_port, _) = tls_server(dir, "other").await;
    let toml = format!(
        r#"
[sources.gen]
type = "generate"
count = 20

[sinks.trusted]
type = "http"
uri = "https://127.0.0.1:{port}/"
inputs = ["gen"]
tls = {{ ca_file = "ca.pem" }}

[sinks.stranger]
type = "http"
uri = "https://127.0.0.1:{port}/"
inputs = ["gen"]
retry_for = "1s"
fallback = "held"

[sinks.misnamed]
type = "elasticsearch"
endpoint = "https://127.0.0.1:{other_port}"
inputs = ["gen"]
retry_for = "1s"
fallback = "held"
tls = {{ ca_file = "ca.pem" }}

[sinks.held]
type = "file"
path = "held.log"
"#
    );
    let (running, metrics) = start(dir, &toml).await;
    until("delivered to the trusted server", 20, || {
        got.load(Ordering::Relaxed) == 20
    })
    .await;
    until("the others fell back", 20, || {
        std::fs::read_to_string(dir.join("held.log")).is_ok_and(|t| t.lines().count() == 40)
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let held = read_json_lines(&dir.join("held.log"));
    let errors: Vec<String> = held
        .iter()
        .map(|e| e["_sluice_error"].as_str().unwrap().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains(&format!(
            "TLS with https://127.0.0.1:{port}/ failed: certificate signed by an unknown CA"
        ))),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("failed: certificate not valid for this name")),
        "{errors:?}"
    );
    assert!(metric(&metrics, "stranger", "certificate signed by an unknown CA") >= 1);
    assert!(metric(&metrics, "misnamed", "certificate not valid for this name") >= 1);
    // With server_name the misnamed server's certificate is checked
    // against the name it holds, and the sink gets through.
    let toml = format!(
        r#"
[sources.gen]
type = "generate"
count = 5

[sinks.named]
type = "http"
uri = "https://127.0.0.1:{other_port}/"
inputs = ["gen"]
tls = {{ ca_file = "ca.pem", server_name = "other.example" }}
"#
    );
    let (running, metrics) = start(dir, &toml).await;
    until("delivered by name", 20, || {
        crate::util::counts(&metrics, "named").events_out == 5
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
}

/// `sluice validate` refuses an expired certificate and a key of another
/// certificate, naming the key and the files, and warns of one that
/// expires within 14 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_certificates() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let pipeline = |cert: &str, key: &str| {
        let path = dir.join(format!("{cert}-{key}.toml"));
        std::fs::write(
            &path,
            format!(
                "[sources.web]\ntype = \"http\"\naddress = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{cert}.pem\", key_file = \"{key}.key\" }}\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"web\"]\n"
            ),
        )
        .unwrap();
        let out = sluice().arg("validate").arg(&path).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = pipeline("server", "server");
    assert!(ok, "{out}");
    let (ok, out) = pipeline("expired", "expired");
    assert!(
        !ok && out.contains("sources.web.tls") && out.contains("expired"),
        "{out}"
    );
    let (ok, out) = pipeline("server", "client");
    assert!(
        !ok && out.contains("client.key does not match the certificate in")
            && out.contains("server.pem"),
        "{out}"
    );
    let (ok, out) = pipeline("soon", "soon");
    assert!(
        ok && (out.contains("expires in 4 days") || out.contains("expires in 5 days")),
        "{out}"
    );
    let (ok, out) = pipeline("missing", "server");
    assert!(
        !ok && out.contains("cannot read") && out.contains("missing.pem"),
        "{out}"
    );
}

/// The server certificate replaced while clients send: no request fails,
/// new connections get the new certificate; a bad new one leaves the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let port = free_port();
    std::fs::copy(dir.join("server.pem"), dir.join("live.pem")).unwrap();
    std::fs::copy(dir.join("server.key"), dir.join("live.key")).unwrap();
    let toml = format!(
        r#"
[sources.web]
type = "http"
address = "127.0.0.1:{port}"
tls = {{ cert_file = "live.pem", key_file = "live.key" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["web"]
"#
    );
    let (running, _metrics) = start(dir, &toml).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let ca: PathBuf = dir.join("ca.pem");
        clients.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // A new connection each time: each sees the certificate of
                // the moment.
                let out = Command::new("curl")
                    .args(["-sS", "-m", "10", "--cacert"])
                    .arg(&ca)
                    .args(["-H", "content-type: application/json", "-d", r#"{"n":1}"#])
                    .arg(format!("https://localhost:{port}/api/log"))
                    .output()
                    .unwrap();
                if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("accepted")
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let subject = || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!subject().contains("Renewed"));
    // The renewed certificate: written aside and moved in, key first.
    std::fs::copy(dir.join("renewed.key"), dir.join("new.key")).unwrap();
    std::fs::copy(dir.join("renewed.pem"), dir.join("new.pem")).unwrap();
    std::fs::rename(dir.join("new.key"), dir.join("live.key")).unwrap();
    std::fs::rename(dir.join("new.pem"), dir.join("live.pem")).unwrap();
    until("new connections see the renewed certificate", 20, || {
        subject().contains("O = Renewed")
    })
    .await;
    // A broken one (a key that is not its certificate's) is refused: the
    // renewed one stays.
    std::fs::copy(dir.join("client.key"), dir.join("live.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(subject().contains("O = Renewed"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    running.shutdown().await;
    running.wait().await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 10, "{sent} requests");
    assert_eq!(failed, 0, "{failed} of {} requests failed", sent + failed);
    assert_eq!(read_json_lines(&dir.join("out.log")).len(), sent);
}

/// Redis with TLS (`redis-server --tls-port` with the test's
/// certificates): the sink writes and the source reads over `rediss://`
/// with `ca_file`; without it the sink cannot connect, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_private_ca() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let tport = free_port();
    let path = |f: &str| dir.join(f).display().to_string();
    let server = crate::redis::RedisServer::start_with(&[
        "--tls-port",
        &tport.to_string(),
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let toml = format!(
        r#"
[sources.gen]
type = "generate"
count = 10

[sinks.queue]
type = "redis"
url = "rediss://127.0.0.1:{tport}/"
stream = "secure"
inputs = ["gen"]
tls = {{ ca_file = "ca.pem" }}

[sinks.stranger]
type = "redis"
url = "rediss://127.0.0.1:{tport}/"
stream = "secure"
inputs = ["gen"]
retry_for = "1s"
fallback = "held"

[sinks.held]
type = "file"
path = "held.log"

[sources.worker]
type = "redis"
url = "rediss://127.0.0.1:{tport}/"
stream = "secure"
group = "workers"
start = "0"
block = "100ms"
tls = {{ ca_file = "ca.pem" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["worker"]
"#
    );
    let (running, _metrics) = start(dir, &toml).await;
    until("read back over TLS", 30, || {
        std::fs::read_to_string(dir.join("out.log")).is_ok_and(|t| t.lines().count() == 10)
    })
    .await;
    until("the untrusting sink fell back", 30, || {
        std::fs::read_to_string(dir.join("held.log")).is_ok_and(|t| t.lines().count() == 10)
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let mut con = server.con().await;
    let len: u64 = redis::cmd("XLEN")
        .arg("secure")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(len, 10);
    let held = read_json_lines(&dir.join("held.log"));
    let error = held[0]["_sluice_error"].as_str().unwrap();
    assert!(
        error.contains("UnknownIssuer") || error.contains("unknown CA"),
        "{error}"
    );
}

/// OTLP/gRPC over TLS: the OpenTelemetry SDK's gRPC exporter with the
/// test's CA as its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_over_tls() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    pki(dir);
    let (http, grpc) = (free_port(), free_port());
    let toml = format!(
        r#"
[sources.otel]
type = "otlp"
address = "127.0.0.1:{http}"
grpc_address = "127.0.0.1:{grpc}"
tls = {{ cert_file = "server.pem", key_file = "server.key" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["otel"]
"#
    );
    let (running, _metrics) = start(dir, &toml).await;
    let sdk = format!(
        r#"
import logging, warnings, grpc
warnings.simplefilter("ignore")
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
provider = LoggerProvider()
set_logger_provider(provider)
credentials = grpc.ssl_channel_credentials(open("ca.pem", "rb").read())
exporter = OTLPLogExporter(endpoint="localhost:{grpc}", insecure=False, credentials=credentials)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
log = logging.getLogger("shop")
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
log.setLevel(logging.DEBUG)
for i in range(4):
    log.warning("order %d over gRPC and TLS", i)
provider.force_flush()
provider.shutdown()
"#
    );
    let out = Command::new(crate::otel::python())
        .current_dir(dir)
        .args(["-c", &sdk])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("out.log");
    until("the records written", 20, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.lines().count() == 4)
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    assert!(read_json_lines(&path)
        .iter()
        .all(|e| e.to_string().contains("over gRPC and TLS")));
}
