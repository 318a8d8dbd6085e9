//! `just bench` (HTTP part), for issue #4: NDJSON batches of 1,000 events
//! from concurrent keep-alive clients into the HTTP source -> file sink.
//! Prints events/s and the p99 request latency, in plaintext and over TLS
//! (issue #39: a CA and server certificate made with the `openssl`
//! command, the clients on tokio-rustls trusting that CA; one handshake
//! per keep-alive connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

const CLIENTS: usize = 4;
const REQUESTS: usize = 250;
const PER_REQUEST: usize = 1000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        pki(dir.path());
        let mut roots = rustls::RootCertStore::empty();
        for c in sluice::base::tls::read_certs(&dir.path().join("ca.pem")).unwrap() {
            roots.add(c).unwrap();
        }
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for (ack, tls) in [("accepted", false), ("accepted", true), ("delivered", false), ("delivered", true)] {
            let tls_line = if tls {
                "tls = { cert_file = \"server.pem\", key_file = \"server.key\" }\n"
            } else {
                ""
            };
            let toml = format!(
                "[reload]\nwatch = false\n\n[sources.web]\ntype = \"http\"\naddress = \"127.0.0.1:{port}\"\nack = \"{ack}\"\n{tls_line}\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"web\"]\n"
            );
            let connector = tls.then(|| tokio_rustls::TlsConnector::from(client_config.clone()));
            std::fs::write(dir.path().join("p.toml"), toml).unwrap();
            let runtime = Arc::new(Runtime::new(None).unwrap());
            let plan = topology::plan(PipelineConfig::load(&dir.path().join("p.toml")).unwrap(), runtime).await.unwrap();
            let metrics = Registry::default();
            let running = plan.start(metrics.clone()).unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut body = String::new();
            for i in 0..PER_REQUEST {
                body.push_str(&format!(
                    "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"service\":\"orders\",\"level\":\"info\",\"message\":\"order {i} created\",\"request_id\":\"r{i}\"}}\n"
                ));
            }
            let body = Bytes::from(body);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..CLIENTS {
                let body = body.clone();
                let connector = connector.clone();
                tasks.push(tokio::spawn(async move {
                    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                    match connector {
                        None => client(stream, body).await,
                        Some(c) => {
                            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
                            client(c.connect(name, stream).await.unwrap(), body).await
                        }
                    }
                }));
            }
            let mut latencies = Vec::new();
            for t in tasks {
                latencies.extend(t.await.unwrap());
            }
            let total = CLIENTS * REQUESTS * PER_REQUEST;
            while metrics.get("out").unwrap().events_out < total as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let elapsed = started.elapsed();
            latencies.sort();
            let p99 = latencies[latencies.len() * 99 / 100];
            println!(
                "http ({ack}, {}): {total} events in {:.2} s from {CLIENTS} clients: {:.0} events/s, p99 request {:.1} ms, p50 {:.1} ms",
                if tls { "TLS" } else { "plaintext" },
                elapsed.as_secs_f64(),
                total as f64 / elapsed.as_secs_f64(),
                p99.as_secs_f64() * 1e3,
                latencies[latencies.len() / 2].as_secs_f64() * 1e3
            );
            running.shutdown().await;
            running.wait().await.unwrap();
            let _ = std::fs::remove_file(dir.path().join("out.log"));
        }
    });
}

/// One keep-alive client: `REQUESTS` posts of `body`; their latencies.
async fn client<S>(stream: S, body: Bytes) -> Vec<Duration>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        loop {
            let req = hyper::Request::post("/api/log")
                .header("host", "bench")
                .header("content-type", "application/x-ndjson")
                .body(Full::new(body.clone()))
                .unwrap();
            let t = Instant::now();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if status == 503 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            assert!(status.is_success(), "{status}");
            latencies.push(t.elapsed());
            break;
        }
    }
    latencies
}

/// A CA and a server certificate for `localhost`, made with `openssl`.
fn pki(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
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
        "/CN=bench CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "30",
        "-extfile",
        "san.ext",
    ]);
}
