//! `just bench` (network sinks, issue #17): generated events into the
//! `http`, `elasticsearch` and `loki` sinks against a loopback server that
//! only counts what it gets (and answers as the protocol wants), with and
//! without gzip. Prints events/s and MB/s of event bytes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

const EVENTS: u64 = 500_000;

/// A server that counts requests and answers 200 (with an all-ok bulk
/// answer for `_bulk`, 204 for Loki).
async fn counting_server(requests: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let requests = requests.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let requests = requests.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let _ = req.into_body().collect().await;
                            requests.fetch_add(1, Ordering::Relaxed);
                            let (status, body) = if path.ends_with("/_bulk") {
                                (200, "{\"errors\":false,\"items\":[]}")
                            } else if path.ends_with("/push") {
                                (204, "")
                            } else {
                                (200, "")
                            };
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(body.as_bytes())))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let port = counting_server(requests.clone()).await;
        println!("sluice sinks bench: {EVENTS} generated events each, loopback server that only counts");
        for (kind, settings) in [
            ("http", format!("uri = \"http://127.0.0.1:{port}/ingest\"")),
            ("elasticsearch", format!("endpoint = \"http://127.0.0.1:{port}\"\nindex = \"logs-{{service}}\"")),
            ("loki", format!("endpoint = \"http://127.0.0.1:{port}\"\nlabels = {{ service = \"{{service}}\" }}")),
        ] {
            for compress in ["none", "gzip"] {
                let toml = format!(
                    "[reload]\nwatch = false\n\n[sources.gen]\ntype = \"generate\"\ncount = {EVENTS}\nseed = 1\n\n[sinks.out]\ntype = \"{kind}\"\n{settings}\ncompress = \"{compress}\"\nmax_in_flight = 4\ninputs = [\"gen\"]\n"
                );
                std::fs::write(dir.path().join("p.toml"), toml).unwrap();
                let runtime = Arc::new(Runtime::new(None).unwrap());
                let plan = topology::plan(PipelineConfig::load(&dir.path().join("p.toml")).unwrap(), runtime)
                    .await
                    .unwrap();
                let metrics = Registry::default();
                let before = requests.load(Ordering::Relaxed);
                let started = Instant::now();
                let running = plan.start(metrics.clone()).unwrap();
                running.wait().await.unwrap();
                let secs = started.elapsed().as_secs_f64();
                let s = metrics.get("out").unwrap();
                assert_eq!(s.events_out, EVENTS, "{kind}: every event delivered");
                println!(
                    "{kind:>13} compress={compress:<4}: {:>9.0} events/s, {:>6.1} MB/s, {} requests",
                    EVENTS as f64 / secs,
                    s.bytes_out as f64 / secs / 1e6,
                    requests.load(Ordering::Relaxed) - before
                );
            }
        }
    });
}
