//! The network sinks against a real HTTP server on loopback, in this test:
//! it answers as the script of each test says (2xx, 429 with Retry-After,
//! 5xx, 4xx with a reason) and records what it was sent.

use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::util::{counts, free_port, read_json_lines, start, until};

/// One request the server took.
#[derive(Debug, Clone)]
pub struct Seen {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    /// The body, gunzipped if it came gzipped.
    pub body: Vec<u8>,
}

/// `(request number, body) -> (status, headers, body)`.
pub type Script =
    Arc<dyn Fn(usize, &[u8]) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;

/// An HTTP server of this test's own.
pub struct TestServer {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(script: Script) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, record) = (script, seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, record) = (s.clone(), record.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (s, record) = (s.clone(), record.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let raw = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let gzipped = parts
                                    .headers
                                    .get("content-encoding")
                                    .is_some_and(|v| v == "gzip");
                                let body = if gzipped {
                                    let mut out = Vec::new();
                                    flate2::read::MultiGzDecoder::new(&raw[..])
                                        .read_to_end(&mut out)
                                        .unwrap();
                                    out
                                } else {
                                    raw.to_vec()
                                };
                                let n = record.lock().unwrap().len();
                                let (status, headers, text) = if parts.method == hyper::Method::HEAD
                                {
                                    (200, Vec::new(), String::new())
                                } else {
                                    s(n, &body)
                                };
                                if parts.method != hyper::Method::HEAD {
                                    record.lock().unwrap().push(Seen {
                                        status,
                                        headers: parts.headers,
                                        body,
                                    });
                                }
                                let mut resp = Response::builder().status(status);
                                for (k, v) in headers {
                                    resp = resp.header(k, v);
                                }
                                Ok::<_, Infallible>(
                                    resp.body(Full::new(Bytes::from(text))).unwrap(),
                                )
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { port, seen, task }
    }

    /// The events of every request answered 2xx.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| (200..300).contains(&s.status))
            .flat_map(|s| {
                String::from_utf8(s.body.clone())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<serde_json::Value>>()
            })
            .collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn seqs(events: &[serde_json::Value]) -> Vec<u64> {
    let mut s: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    s.sort();
    s
}

/// That `got` is exactly `1..=n`, each once (said briefly when not).
fn assert_each_once(got: &[u64], n: u64) {
    let mut distinct = got.to_vec();
    distinct.dedup();
    assert!(
        got.len() as u64 == n
            && distinct.len() as u64 == n
            && got.first() == Some(&1)
            && got.last() == Some(&n),
        "{} events, {} distinct, want 1..={n}",
        got.len(),
        distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_delivers_gzipped_ndjson_with_auth_each_event_once() {
    let server = TestServer::start(Arc::new(|_, _| (200, vec![], "ok".into()))).await;
    // SAFETY: set before the sink reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_HTTP_SINK_TOKEN", "t0ken") };
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.gen]\ntype = \"generate\"\ncount = 5000\nseed = 1\n\n[sinks.web]\ntype = \"http\"\nuri = \"http://127.0.0.1:{}/ingest\"\ncompress = \"gzip\"\nmax_in_flight = 4\nauth = {{ bearer_env = \"SLUICE_TEST_HTTP_SINK_TOKEN\" }}\nheaders = {{ \"x-env\" = \"test\" }}\ninputs = [\"gen\"]\n",
        server.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let events = server.delivered();
    assert_each_once(&seqs(&events), 5000);
    let seen = server.seen.lock().unwrap().clone();
    for s in &seen {
        assert_eq!(s.headers["authorization"], "Bearer t0ken");
        assert_eq!(s.headers["content-encoding"], "gzip");
        assert_eq!(s.headers["content-type"], "application/x-ndjson");
        assert_eq!(s.headers["x-env"], "test");
    }
    assert_eq!(counts(&metrics, "web").events_out, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_retries_429_and_5xx_and_dead_letters_what_is_refused() {
    // Every third request is throttled, every fifth fails; a body with a
    // poisoned event is refused for good.
    let server = TestServer::start(Arc::new(|n, body: &[u8]| {
        if String::from_utf8_lossy(body).contains("poison") {
            (
                400,
                vec![],
                "{\"error\":\"mapper_parsing_exception\"}".into(),
            )
        } else if n % 3 == 1 {
            (
                429,
                vec![("retry-after", "0".to_string())],
                "slow down".into(),
            )
        } else if n % 5 == 2 {
            (503, vec![], "busy".into())
        } else {
            (200, vec![], "ok".into())
        }
    }))
    .await;
    let d = tempfile::tempdir().unwrap();
    let lines: String = (0..1000)
        .map(|i| {
            let poison = if i % 250 == 7 {
                ",\"note\":\"poison\""
            } else {
                ""
            };
            format!("{{\"seq\":{i}{poison}}}\n")
        })
        .collect();
    std::fs::write(d.path().join("in.log"), lines).unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.in]\ntype = \"file\"\npath = \"in.log\"\nbatch = {{ max_events = 10 }}\n\n[sinks.web]\ntype = \"http\"\nuri = \"http://127.0.0.1:{}/\"\nmax_events = 10\ninputs = [\"in\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n",
        server.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let delivered = seqs(&server.delivered());
    let dead = read_json_lines(&d.path().join("dead.log"));
    let dead_seqs = seqs(&dead.iter().map(|l| l["event"].clone()).collect::<Vec<_>>());
    for l in &dead {
        assert_eq!(l["component"], "web");
        assert_eq!(l["error"]["kind"], "rejected");
        assert!(
            l["error"]["message"]
                .as_str()
                .unwrap()
                .contains("HTTP 400: {\"error\":\"mapper_parsing_exception\"}"),
            "{l}"
        );
    }
    // Every event once: delivered, or dead-lettered with the reason.
    let mut all: Vec<u64> = delivered.iter().chain(&dead_seqs).copied().collect();
    all.sort();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    for poisoned in [7u64, 257, 507, 757] {
        assert!(dead_seqs.contains(&poisoned), "{poisoned} dead-lettered");
    }
    assert!(
        dead_seqs.len() <= 40,
        "only the refused requests' events: {}",
        dead_seqs.len()
    );
    assert!(counts(&metrics, "web").retries >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_falls_back_at_once_when_the_target_is_known_down() {
    let port = free_port();
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nmax_events = 10\nmax_wait = \"10ms\"\n\n[sources.gen]\ntype = \"generate\"\ncount = 60\nseed = 2\n\n[sinks.web]\ntype = \"http\"\nuri = \"http://127.0.0.1:{port}/\"\nmax_events = 10\nmax_in_flight = 1\nretry_for = \"1s\"\nfallback = \"local\"\ninputs = [\"gen\"]\n\n[sinks.local]\ntype = \"file\"\npath = \"fallback.log\"\n"
    );
    let started = std::time::Instant::now();
    let (running, _metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let took = started.elapsed();
    let fallen = read_json_lines(&d.path().join("fallback.log"));
    assert_each_once(&seqs(&fallen), 60);
    assert!(fallen.iter().all(|e| e["_sluice_error"]
        .as_str()
        .unwrap()
        .contains("cannot reach")));
    assert!(
        took < Duration::from_secs(3),
        "only the first request waits retry_for: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_json_arrays_and_backpressure_while_the_server_is_slow() {
    let server = TestServer::start(Arc::new(|_, _| {
        std::thread::sleep(Duration::from_millis(50));
        (200, vec![], String::new())
    }))
    .await;
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nmax_events = 20\nbuffer = 2\n\n[sources.gen]\ntype = \"generate\"\ncount = 400\nseed = 3\n\n[sinks.web]\ntype = \"http\"\nuri = \"http://127.0.0.1:{}/\"\nencoding = \"json\"\nmax_events = 20\nmax_in_flight = 2\ninputs = [\"gen\"]\n",
        server.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    // The queue in front of the sink stays within its bound meanwhile.
    until("some requests", 20, || {
        !server.seen.lock().unwrap().is_empty()
    })
    .await;
    let depth = metrics
        .queue_depths()
        .into_iter()
        .find(|(n, _, _)| n == "web");
    assert!(depth.is_some_and(|(_, d, cap)| d <= cap && cap == 2));
    running.wait().await.unwrap();
    let seen = server.seen.lock().unwrap().clone();
    let mut events = Vec::new();
    for s in &seen {
        assert_eq!(s.headers["content-type"], "application/json");
        let array: Vec<serde_json::Value> = serde_json::from_slice(&s.body).unwrap();
        assert!(array.len() <= 20);
        events.extend(array);
    }
    assert_each_once(&seqs(&events), 400);
}
