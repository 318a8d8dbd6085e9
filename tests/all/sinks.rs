//! The network sinks against a real HTTP server on loopback, in this test:
//! it answers as the script of each test says (2xx, 429 with Retry-After,
//! 5xx, 4xx with a reason) and records what it was sent.

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
        Self::start_on(0, script).await
    }

    /// The same on a given port (0: any), to come back where it was.
    pub async fn start_on(port: u16, script: Script) -> TestServer {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (s, record) = (script, seen.clone());
        let task = tokio::spawn(async move {
            // Dropped with the task: stopping the server closes every
            // connection it has.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let (s, record) = (s.clone(), record.clone());
                connections.spawn(async move {
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
                                // Status 0: the connection breaks before any answer.
                                if status == 0 {
                                    return Err(std::io::Error::other(
                                        "connection reset by the test",
                                    ));
                                }
                                let mut resp = Response::builder().status(status);
                                for (k, v) in headers {
                                    resp = resp.header(k, v);
                                }
                                Ok::<_, std::io::Error>(
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
    assert_eq!(counts(&metrics, "web").requests, seen.len() as u64);
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

/// An Elasticsearch `_bulk` endpoint as documented: NDJSON action and
/// document lines; `index` adds or replaces, `create` refuses an `_id` it
/// has with 409; a document with `"bad_mapping"` fails to parse (400
/// `mapper_parsing_exception`); `errors: true` when any item failed. Faults
/// are injected at random (seeded): whole requests answered 429 or 500,
/// connections broken after the documents were stored, items answered 429.
pub struct FakeElasticsearch {
    pub server: TestServer,
    /// The stored documents by `_id` (or a number when none was given).
    pub docs: Arc<Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
}

impl FakeElasticsearch {
    pub async fn start(faults: bool) -> Self {
        Self::start_on(0, faults, Arc::default()).await
    }

    pub async fn start_on(
        port: u16,
        faults: bool,
        docs: Arc<Mutex<std::collections::BTreeMap<String, serde_json::Value>>>,
    ) -> Self {
        let store = docs.clone();
        let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(7)));
        let server = TestServer::start_on(
            port,
            Arc::new(move |_, body: &[u8]| {
                let mut rng = rng.lock().unwrap();
                if faults {
                    match rng.u32(0..100) {
                        0..=4 => return (429, vec![("retry-after", "0".into())], "{}".into()),
                        5..=9 => return (500, vec![], "{\"error\":\"boom\"}".into()),
                        _ => {}
                    }
                }
                let text = String::from_utf8_lossy(body);
                let lines: Vec<&str> = text.lines().collect();
                let mut items = Vec::new();
                let mut errors = false;
                let mut docs = store.lock().unwrap();
                for pair in lines.chunks(2) {
                    let action: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
                    let (verb, meta) = action.as_object().unwrap().iter().next().unwrap();
                    let doc: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
                    let id = meta["_id"]
                        .as_str()
                        .map_or_else(|| format!("auto-{}", docs.len()), str::to_string);
                    let (status, error) = if faults && rng.u32(0..100) < 5 {
                        (
                            429,
                            Some((
                                "es_rejected_execution_exception",
                                "rejected execution: queue full",
                            )),
                        )
                    } else if pair[1].contains("bad_mapping") {
                        (
                            400,
                            Some((
                                "mapper_parsing_exception",
                                "failed to parse field [bad_mapping] of type [long]",
                            )),
                        )
                    } else if verb == "create" && docs.contains_key(&id) {
                        (
                            409,
                            Some((
                                "version_conflict_engine_exception",
                                "document already exists",
                            )),
                        )
                    } else {
                        docs.insert(id.clone(), doc);
                        (201, None)
                    };
                    errors |= error.is_some();
                    let mut item =
                        serde_json::json!({"_index": meta["_index"], "_id": id, "status": status});
                    if let Some((kind, reason)) = error {
                        item["error"] = serde_json::json!({"type": kind, "reason": reason});
                    }
                    items.push(serde_json::json!({ verb.clone(): item }));
                }
                // Stored, but the answer is lost on the way.
                if faults && rng.u32(0..100) < 3 {
                    return (0, vec![], String::new());
                }
                let reply = serde_json::json!({"took": 1, "errors": errors, "items": items});
                (
                    200,
                    vec![("content-type", "application/json".into())],
                    reply.to_string(),
                )
            }),
        )
        .await;
        Self { server, docs }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_gets_every_event_once_through_throttling_errors_and_resets() {
    let es = FakeElasticsearch::start(true).await;
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.gen]\ntype = \"generate\"\ncount = 100000\nseed = 4\n\n[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:{}\"\nindex = \"logs-{{service}}\"\naction = \"create\"\nid_field = \"seq\"\ncompress = \"gzip\"\nmax_events = 1000\ninputs = [\"gen\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n",
        es.server.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    tokio::time::timeout(Duration::from_secs(120), running.wait())
        .await
        .expect("delivered in time")
        .unwrap();
    let docs = es.docs.lock().unwrap();
    let got: Vec<u64> = docs.values().map(|d| d["seq"].as_u64().unwrap()).collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_each_once(&sorted, 100_000);
    assert!(
        docs.keys().all(|id| id.parse::<u64>().is_ok()),
        "_id from id_field"
    );
    assert!(docs.values().all(|d| d["service"].is_string()));
    assert!(!d.path().join("dead.log").exists(), "nothing refused");
    let s = counts(&metrics, "es");
    assert_eq!(s.events_out, 100_000);
    assert!(s.retries > 0, "faults were injected and retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_mapping_errors_are_dead_lettered_and_batch_mates_delivered() {
    let es = FakeElasticsearch::start(false).await;
    let d = tempfile::tempdir().unwrap();
    let lines: String = (1..=50)
        .map(|i| {
            let bad = if i % 20 == 0 {
                ",\"bad_mapping\":\"x\""
            } else {
                ""
            };
            format!("{{\"seq\":{i},\"service\":\"Orders\"{bad}}}\n")
        })
        .collect();
    std::fs::write(d.path().join("in.log"), lines).unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.in]\ntype = \"file\"\npath = \"in.log\"\n\n[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:{}/\"\nindex = \"logs-{{service}}-{{%Y}}\"\ninputs = [\"in\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n",
        es.server.port
    );
    let (running, _metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(
        seqs(&dead.iter().map(|l| l["event"].clone()).collect::<Vec<_>>()),
        [20, 40]
    );
    for l in &dead {
        assert_eq!(l["error"]["kind"], "rejected");
        let m = l["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("mapper_parsing_exception")
                && m.contains("failed to parse field [bad_mapping]"),
            "{m}"
        );
    }
    let docs = es.docs.lock().unwrap();
    assert_eq!(docs.len(), 48, "the batch-mates are delivered");
    // One bulk request held them all: the good ones were not sent again.
    assert_eq!(es.server.seen.lock().unwrap().len(), 1);
    let year = chrono::Utc::now().format("%Y").to_string();
    let seen = es.server.seen.lock().unwrap();
    assert!(String::from_utf8_lossy(&seen[0].body)
        .contains(&format!("\"_index\":\"logs-orders-{year}\"")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_down_for_ten_seconds_loses_nothing_and_waits_once() {
    let docs: Arc<Mutex<std::collections::BTreeMap<String, serde_json::Value>>> = Arc::default();
    let es = FakeElasticsearch::start_on(0, false, docs.clone()).await;
    let port = es.server.port;
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nmax_events = 50\nmax_wait = \"20ms\"\n\n[sources.gen]\ntype = \"generate\"\ncount = 3600\nrate = 200.0\nseed = 5\n\n[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:{port}\"\nid_field = \"seq\"\naction = \"create\"\nretry_for = \"1s\"\nfallback = \"local\"\ninputs = [\"gen\"]\n\n[sinks.local]\ntype = \"file\"\npath = \"fallback.log\"\n"
    );
    let started = std::time::Instant::now();
    let (running, _metrics) = start(d.path(), &toml).await;
    until("the first documents", 20, || {
        !docs.lock().unwrap().is_empty()
    })
    .await;
    drop(es); // down
    tokio::time::sleep(Duration::from_secs(10)).await;
    let before_back = docs.lock().unwrap().len();
    let _es = FakeElasticsearch::start_on(port, false, docs.clone()).await; // back
    running.wait().await.unwrap();
    let took = started.elapsed();
    let fallen = read_json_lines(&d.path().join("fallback.log"));
    assert!(
        !fallen.is_empty(),
        "the fallback took what came while it was down"
    );
    let docs = docs.lock().unwrap();
    assert!(
        docs.len() > before_back,
        "writes went back to Elasticsearch once it answered"
    );
    let mut all: Vec<u64> = docs
        .values()
        .map(|d| d["seq"].as_u64().unwrap())
        .chain(fallen.iter().map(|e| e["seq"].as_u64().unwrap()))
        .collect();
    all.sort();
    assert_each_once(&all, 3600);
    // 3,600 events at 200/s take 18 s; a batch waiting retry_for each time
    // the target was known down would hold the generator back far longer.
    assert!(took < Duration::from_secs(25), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_elasticsearch_pushes_back_to_http_ingest() {
    let server = TestServer::start(Arc::new(|_, body: &[u8]| {
        std::thread::sleep(Duration::from_millis(200));
        let n = String::from_utf8_lossy(body).lines().count() / 2;
        let items: Vec<_> = (0..n)
            .map(|_| serde_json::json!({"index": {"status": 201}}))
            .collect();
        (
            200,
            vec![],
            serde_json::json!({"errors": false, "items": items}).to_string(),
        )
    }))
    .await;
    let d = tempfile::tempdir().unwrap();
    let web = free_port();
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nbuffer = 1\n\n[sources.web]\ntype = \"http\"\naddress = \"127.0.0.1:{web}\"\n\n[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:{}\"\nmax_in_flight = 1\nmax_events = 10\ninputs = [\"web\"]\n",
        server.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", web)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let statuses = tokio::task::spawn_blocking(move || {
        (0..60)
            .map(|i| {
                let body = format!("{{\"message\":\"m{i}\"}}");
                let mut s = std::net::TcpStream::connect(("127.0.0.1", web)).unwrap();
                use std::io::Write;
                write!(s, "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out[9..12].parse::<u16>().unwrap()
            })
            .collect::<Vec<u16>>()
    })
    .await
    .unwrap();
    assert!(
        statuses.contains(&503),
        "a full pipeline answers 503: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    let depth = metrics
        .queue_depths()
        .into_iter()
        .find(|(n, _, _)| n == "es")
        .unwrap();
    assert!(depth.1 <= depth.2, "the queue stays within its bound");
    running.shutdown().await;
    running.wait().await.unwrap();
    let accepted = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(counts(&metrics, "es").events_out, accepted);
}

/// One entry Loki stored: (stream labels, timestamp in ns, line, metadata).
pub type LokiEntry = (String, i128, String, serde_json::Value);

/// A Loki push endpoint as documented: JSON streams of
/// `[ns, line, metadata?]` values; within a stream an entry older than the
/// newest one stored is refused ("entry out of order"), the others of the
/// push are ingested, and the answer is a 400 naming each refused entry.
pub async fn fake_loki() -> (TestServer, Arc<Mutex<Vec<LokiEntry>>>) {
    let store: Arc<Mutex<Vec<LokiEntry>>> = Arc::default();
    let kept = store.clone();
    let server = TestServer::start(Arc::new(move |_, body: &[u8]| {
        let push: serde_json::Value = serde_json::from_slice(body).unwrap();
        let mut store = kept.lock().unwrap();
        let mut refused = Vec::new();
        let mut total = 0;
        for stream in push["streams"].as_array().unwrap() {
            let labels: Vec<String> = stream["stream"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
                .collect();
            let labels = format!("{{{}}}", labels.join(", "));
            for v in stream["values"].as_array().unwrap() {
                total += 1;
                let ns: i128 = v[0].as_str().unwrap().parse().unwrap();
                let newest = store.iter().filter(|e| e.0 == labels).map(|e| e.1).max();
                if newest.is_some_and(|n| ns < n) {
                    refused.push(format!(
                        "entry with timestamp {} ignored, reason: 'entry out of order' for stream: {labels},",
                        sluice::sink::loki::go_time(ns)
                    ));
                    continue;
                }
                store.push((labels.clone(), ns, v[1].as_str().unwrap().to_string(), v[2].clone()));
            }
        }
        if refused.is_empty() {
            (204, vec![], String::new())
        } else {
            let n = refused.len();
            (400, vec![], format!("{}\ntotal ignored: {n} out of {total}", refused.join("\n")))
        }
    }))
    .await;
    (server, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_streams_by_label_in_time_order_with_a_cap_and_refused_entries_dead_lettered() {
    let (server, store) = fake_loki().await;
    let d = tempfile::tempdir().unwrap();
    let ev = |service: &str, sec: u32, message: &str| {
        format!("{{\"timestamp\":\"2026-11-23T10:00:{sec:02}Z\",\"service\":\"{service}\",\"level\":\"info\",\"message\":\"{message}\",\"trace_id\":\"t{sec}\"}}\n")
    };
    // Two pushes of three: the second holds an entry older than the first's
    // newest of its stream, and a third label set past the cap of two.
    let lines = [
        ev("a", 10, "a10"),
        ev("a", 5, "a5"),
        ev("b", 1, "b1"),
        ev("a", 7, "a7 late"),
        ev("a", 11, "a11"),
        ev("c", 3, "c3"),
    ]
    .concat();
    std::fs::write(d.path().join("in.log"), lines).unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[sources.in]\ntype = \"file\"\npath = \"in.log\"\nbatch = {{ max_events = 3 }}\n\n[sinks.loki]\ntype = \"loki\"\nendpoint = \"http://127.0.0.1:{}\"\nlabels = {{ service = \"{{service}}\", level = \"{{level}}\" }}\nmax_label_sets = 2\nmax_events = 3\ncompress = \"gzip\"\ninputs = [\"in\"]\n\n[sinks.dead]\ntype = \"file\"\npath = \"dead.log\"\ninputs = [\"_dead_letters\"]\n",
        server.port
    );
    let (running, _metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let store = store.lock().unwrap().clone();
    let lines_of = |stream: &str| -> Vec<String> {
        store
            .iter()
            .filter(|e| e.0 == stream)
            .map(|e| e.2.clone())
            .collect()
    };
    assert_eq!(
        lines_of("{level=\"info\", service=\"a\"}"),
        ["a5", "a10", "a11"],
        "in time order: {store:?}"
    );
    assert_eq!(lines_of("{level=\"info\", service=\"b\"}"), ["b1"]);
    assert_eq!(
        lines_of("{sluice_overflow=\"true\"}"),
        ["c3"],
        "past max_label_sets"
    );
    let a5 = store.iter().find(|e| e.2 == "a5").unwrap();
    assert_eq!(
        a5.3["trace_id"], "t5",
        "other fields as structured metadata"
    );
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["event"]["message"], "a7 late");
    assert!(dead[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("entry out of order"));
    let seen = server.seen.lock().unwrap();
    assert!(seen.iter().all(|s| s.headers["content-encoding"] == "gzip"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_max_wait_fills_requests_from_sparse_batches() {
    let server = TestServer::start(Arc::new(|_, _| (200, vec![], String::new()))).await;
    let d = tempfile::tempdir().unwrap();
    // Batches of about 10 events every 50 ms; a request waits 300 ms for more.
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nmax_events = 10\nmax_wait = \"10ms\"\n\n[sources.gen]\ntype = \"generate\"\ncount = 400\nrate = 200.0\nseed = 6\n\n[sinks.web]\ntype = \"http\"\nuri = \"http://127.0.0.1:{}/\"\nmax_events = 100\nmax_wait = \"300ms\"\nmax_in_flight = 1\ninputs = [\"gen\"]\n",
        server.port
    );
    let (running, _metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let requests = server.seen.lock().unwrap().len();
    assert_each_once(&seqs(&server.delivered()), 400);
    assert!(
        requests <= 12,
        "{requests} requests for 400 events in batches of 10"
    );
}

/// A bulk answer listing one created item per document of `body`, each
/// padded to about `pad` bytes.
fn bulk_items(body: &[u8], pad: usize) -> String {
    let docs = String::from_utf8_lossy(body).lines().count() / 2;
    let item = format!(
        r#"{{"index":{{"_index":"logs","result":"created","_shards":{{"total":2,"successful":1,"failed":0}},"status":201,"pad":"{}"}}}}"#,
        "p".repeat(pad)
    );
    format!(
        r#"{{"took":3,"errors":false,"items":[{}]}}"#,
        vec![item; docs].join(",")
    )
}

/// #36: a 200 answering `{}` or `{"errors":false,"items":[]}`
/// acknowledged every document, and a valid answer over 1 MiB was read as
/// empty (the batch retried forever). Now the first two are retried and
/// counted, and the large one is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_answers_that_list_no_item_acknowledge_nothing() {
    let es = TestServer::start(Arc::new(|n, body| match n {
        0 => (200, Vec::new(), "{}".to_string()),
        1 => (
            200,
            Vec::new(),
            r#"{"errors":false,"items":[]}"#.to_string(),
        ),
        // 6,000 items of about 230 bytes: 1.4 MB.
        _ => (200, Vec::new(), bulk_items(body, 60)),
    }))
    .await;
    let d = tempfile::tempdir().unwrap();
    let toml = format!(
        "[reload]\nwatch = false\n\n[batch]\nmax_events = 6000\nmax_wait = \"1s\"\n\n[sources.gen]\ntype = \"generate\"\ncount = 6000\nseed = 9\n\n[sinks.es]\ntype = \"elasticsearch\"\nendpoint = \"http://127.0.0.1:{}\"\nmax_events = 6000\nmax_in_flight = 1\ninputs = [\"gen\"]\n",
        es.port
    );
    let (running, metrics) = start(d.path(), &toml).await;
    tokio::time::timeout(Duration::from_secs(60), running.wait())
        .await
        .expect("delivered in time")
        .unwrap();
    let seen = es.seen.lock().unwrap();
    let docs: Vec<usize> = seen
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).lines().count() / 2)
        .collect();
    assert_eq!(
        docs.iter().sum::<usize>(),
        18_000,
        "{docs:?}: sent three times"
    );
    assert_eq!(docs.len(), 3, "{docs:?}: the large answer was read once");
    assert_eq!(counts(&metrics, "es").retries, 2);
    assert_eq!(counts(&metrics, "es").events_out, 6000);
}
