//! The `nats` source and sink against real `nats-server` processes
//! (Debian's 2.9, JetStream): one server, or a three-node cluster on
//! loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::Value;

use crate::util::{free_port, until};

/// A `nats-server` with JetStream, its store in a folder of its own.
pub struct NatsServer {
    pub port: u16,
    /// The cluster port, and the other nodes' cluster ports (a cluster).
    cluster: Option<(u16, Vec<u16>)>,
    name: String,
    dir: PathBuf,
    /// A configuration file (TLS, users), beside the flags.
    conf: Option<PathBuf>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(dir: &Path) -> NatsServer {
        let mut s = NatsServer {
            port: free_port(),
            cluster: None,
            name: "n1".into(),
            dir: dir.join("n1"),
            conf: None,
            child: None,
        };
        s.up();
        s
    }

    /// One server with the configuration file `conf` too.
    pub fn start_with(dir: &Path, conf: &str) -> NatsServer {
        let path = dir.join("nats.conf");
        std::fs::write(&path, conf).unwrap();
        let mut s = NatsServer {
            port: free_port(),
            cluster: None,
            name: "n1".into(),
            dir: dir.join("n1"),
            conf: Some(path),
            child: None,
        };
        s.up();
        s
    }

    /// Three nodes routed to each other, JetStream clustered.
    pub fn cluster(dir: &Path) -> Vec<NatsServer> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = (0..3)
            .map(|i| NatsServer {
                port: free_port(),
                cluster: Some((routes[i], routes.clone())),
                name: format!("n{}", i + 1),
                dir: dir.join(format!("n{}", i + 1)),
                conf: None,
                child: None,
            })
            .collect();
        for n in &mut nodes {
            n.spawn();
        }
        for n in &nodes {
            n.wait_up();
        }
        nodes
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        std::fs::create_dir_all(&self.dir).unwrap();
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js"])
            .arg("-sd")
            .arg(&self.dir)
            .args(["--server_name", &self.name])
            .args(
                self.conf
                    .iter()
                    .flat_map(|c| ["-c".as_ref(), c.as_os_str()]),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("server.log")).unwrap());
        if let Some((own, all)) = &self.cluster {
            let routes: Vec<String> = all
                .iter()
                .filter(|p| *p != own)
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "sluice"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{own}"))
                .arg("--routes")
                .arg(routes.join(","));
        }
        self.child = Some(
            cmd.spawn()
                .expect("nats-server (scripts/setup-test-deps installs it)"),
        );
    }

    fn wait_up(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server {} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn up(&mut self) {
        self.spawn();
        self.wait_up();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn client(urls: &str) -> async_nats::Client {
    let urls: Vec<&str> = urls.split(',').collect();
    async_nats::ConnectOptions::new()
        .connect(urls.as_slice())
        .await
        .unwrap()
}

/// A stream `LOGS` over `logs.>` with a two-minute duplicate window.
pub async fn logs_stream(js: &jetstream::Context, replicas: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let made = js
            .create_stream(jetstream::stream::Config {
                name: "LOGS".into(),
                subjects: vec!["logs.>".into()],
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await;
        match made {
            Ok(_) => return,
            // A cluster elects its meta leader first.
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("creating the stream: {e}; again");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("cannot create the stream: {e}"),
        }
    }
}

/// The consumer's pending and unacknowledged messages.
async fn consumer_left(js: &jetstream::Context, name: &str) -> (u64, usize) {
    let mut c: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(name, "LOGS").await.unwrap();
    let info = c.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

fn json_lines(path: &Path) -> Vec<Value> {
    crate::util::json_lines_if_any(path)
}

/// How many times each `n` was written to `paths`.
fn seen(paths: &[PathBuf]) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for p in paths {
        for v in json_lines(p) {
            if let Some(n) = v["n"].as_u64() {
                *seen.entry(n).or_default() += 1;
            }
        }
    }
    seen
}

/// `{"n":N}` lines for each N of `ns`, as the file `path`.
fn write_ns(path: &Path, ns: std::ops::Range<u64>) {
    std::fs::write(
        path,
        ns.map(|n| format!("{{\"n\":{n}}}\n")).collect::<String>(),
    )
    .unwrap();
}

fn worker_toml(url: &str, out: &str, extra: &str) -> String {
    format!(
        r#"[reload]
watch = false

[sources.js]
type = "nats"
url = "{url}"
stream = "LOGS"
consumer = "workers"
expires = "200ms"
{extra}

[sinks.out]
type = "file"
path = "{out}"
inputs = ["js"]

[sinks.dead]
type = "file"
path = "dead-{out}"
inputs = ["_dead_letters"]
"#
    )
}

fn spawn(dir: &Path, name: &str, toml: &str) -> Child {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    crate::util::sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .current_dir(dir)
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    // SIGTERM: a clean stop, acknowledgements sent.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_events_pass_through_jetstream_once_each_with_two_workers() {
    let d = tempfile::tempdir().unwrap();
    let server = NatsServer::start(d.path());
    let nc = client(&server.url()).await;
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    const TOTAL: u64 = 100_000;
    let mut input = String::with_capacity(TOTAL as usize * 80);
    for n in 0..TOTAL {
        let service = ["web", "orders", "payments"][(n % 3) as usize];
        input.push_str(&format!(
            "{{\"n\":{n},\"service\":\"{service}\",\"level\":\"info\",\"message\":\"request {n}\"}}\n"
        ));
    }
    std::fs::write(d.path().join("in.log"), input).unwrap();
    let url = server.url();
    let w1 = spawn(d.path(), "w1.toml", &worker_toml(&url, "out-1.log", ""));
    let w2 = spawn(d.path(), "w2.toml", &worker_toml(&url, "out-2.log", ""));
    // Both workers are pulling before the first event is published.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = match js
            .get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>("workers", "LOGS")
            .await
        {
            Ok(mut c) => c.info().await.map(|i| i.num_waiting).unwrap_or(0),
            Err(_) => 0,
        };
        if waiting >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "both workers pulling");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = spawn(
        d.path(),
        "producer.toml",
        &format!(
            r#"[reload]
watch = false

[sources.app]
type = "file"
path = "in.log"

[sinks.js]
type = "nats"
url = "{url}"
subject = "logs.{{service}}"
headers = {{ "X-Service" = "{{service}}" }}
inputs = ["app"]
"#
        ),
    );
    let outs = [d.path().join("out-1.log"), d.path().join("out-2.log")];
    until("every event through jetstream", 180, || {
        seen(&outs).len() as u64 >= TOTAL
    })
    .await;
    // Settle: acknowledgements sent, nothing more arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(w1);
    stop(w2);
    stop(producer);
    let seen = seen(&outs);
    assert_eq!(seen.len() as u64, TOTAL);
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).take(5).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let per_worker: Vec<usize> = outs.iter().map(|p| json_lines(p).len()).collect();
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "both workers share the consumer: {per_worker:?}"
    );
    // The stream holds each event once (the producer's ids), and the
    // consumer has nothing left.
    let mut stream = js.get_stream("LOGS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, TOTAL);
    assert_eq!(consumer_left(&js, "workers").await, (0, 0));
    // Subjects and headers from the events' fields.
    let sub = jetstream::new(nc.clone()).get_stream("LOGS").await.unwrap();
    let m = sub.get_raw_message(2).await.unwrap();
    assert_eq!(m.subject.as_str(), "logs.orders");
    assert_eq!(
        m.headers.get("X-Service").map(|v| v.as_str()),
        Some("orders")
    );
    assert!(m.headers.get("Nats-Msg-Id").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing_and_poison_reaches_the_dead_letters() {
    let d = tempfile::tempdir().unwrap();
    let server = NatsServer::start(d.path());
    let nc = client(&server.url()).await;
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    // The poisoned message first: a worker that took it died each time
    // (fetched and never acknowledged), so it was delivered twice already.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Trace", "poison-1");
    js.publish_with_headers("logs.bad", headers, r#"{"poison":true}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    let stream = js.get_stream("LOGS").await.unwrap();
    let config = async_nats::jetstream::consumer::pull::Config {
        durable_name: Some("workers".into()),
        ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(1),
        max_deliver: 3,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer("workers", config)
        .await
        .unwrap();
    for _ in 0..2 {
        let mut got = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .unwrap();
        let m = got.next().await.expect("the poisoned message").unwrap();
        assert_eq!(&m.payload[..], br#"{"poison":true}"#);
        // Not acknowledged: it comes again after `ack_wait`.
    }
    const TOTAL: u64 = 30_000;
    for chunk in 0..TOTAL / 1000 {
        let mut acks = Vec::new();
        for n in chunk * 1000..(chunk + 1) * 1000 {
            acks.push(
                js.publish("logs.app", format!(r#"{{"n":{n}}}"#).into())
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }
    let url = server.url();
    let extra = "ack_wait = \"1s\"\nmax_deliver = 2\nbatch_size = 500";
    let out = d.path().join("out-1.log");
    let w1 = spawn(d.path(), "w1.toml", &worker_toml(&url, "out-1.log", extra));
    until("progress before the kill", 60, || {
        json_lines(&out).len() >= 5_000
    })
    .await;
    let mut w1 = w1;
    w1.kill().unwrap(); // SIGKILL, mid-run
    w1.wait().unwrap();
    let w2 = spawn(d.path(), "w2.toml", &worker_toml(&url, "out-2.log", extra));
    let outs = [out, d.path().join("out-2.log")];
    until("every event after the kill", 120, || {
        seen(&outs).len() as u64 >= TOTAL
    })
    .await;
    let dead = d.path().join("dead-out-1.log");
    let dead2 = d.path().join("dead-out-2.log");
    until("the poisoned message in the dead letters", 30, || {
        !json_lines(&dead).is_empty() || !json_lines(&dead2).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(w2);
    let seen = seen(&outs);
    assert_eq!(seen.len() as u64, TOTAL, "nothing lost");
    let dups = seen.values().filter(|c| **c > 1).count();
    eprintln!("delivered again after the kill: {dups}");
    let letters: Vec<Value> = json_lines(&dead)
        .into_iter()
        .chain(json_lines(&dead2))
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("delivered 3 times (max_deliver = 2)")
            && reason.contains("X-Trace: poison-1"),
        "{letters:?}"
    );
    assert_eq!(letters[0]["event"]["poison"], Value::Bool(true));
    // Every message settled: acknowledged, or terminated once dead-lettered.
    assert_eq!(consumer_left(&js, "workers").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leader_killed_mid_run_in_a_three_node_cluster_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let mut nodes = NatsServer::cluster(d.path());
    let urls: Vec<String> = nodes.iter().map(NatsServer::url).collect();
    let urls = urls.join(",");
    let nc = client(&urls).await;
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 3).await;
    let input = d.path().join("in.log");
    std::fs::write(&input, "").unwrap();
    let producer = spawn(
        d.path(),
        "producer.toml",
        &format!(
            r#"[reload]
watch = false

[sources.app]
type = "file"
path = "in.log"
follow = true

[sinks.js]
type = "nats"
url = "{urls}"
subject = "logs.app"
ack_timeout = "1s"
inputs = ["app"]
"#
        ),
    );
    let worker = spawn(
        d.path(),
        "w1.toml",
        &worker_toml(&urls, "out-1.log", "ack_wait = \"5s\""),
    );
    // The applications write for a while: 40,000 events, 1,000 every 50 ms.
    const TOTAL: u64 = 40_000;
    let writer = {
        let input = input.clone();
        tokio::spawn(async move {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .unwrap();
            for chunk in 0..TOTAL / 1000 {
                let mut text = String::new();
                for n in chunk * 1000..(chunk + 1) * 1000 {
                    text.push_str(&format!("{{\"n\":{n},\"message\":\"event {n}\"}}\n"));
                }
                f.write_all(text.as_bytes()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let outs = [d.path().join("out-1.log")];
    until("progress before the kill", 60, || {
        seen(&outs).len() >= 8_000
    })
    .await;
    let mut stream = js.get_stream("LOGS").await.unwrap();
    let leader = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    let i = nodes.iter().position(|n| n.name == leader).unwrap();
    nodes[i].kill(); // SIGKILL
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[i].up();
    writer.await.unwrap();
    until("every event after the leader's kill", 180, || {
        seen(&outs).len() as u64 >= TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(worker);
    stop(producer);
    let seen = seen(&outs);
    assert_eq!(seen.len() as u64, TOTAL, "nothing lost");
    let twice = seen.values().filter(|c| **c > 1).count();
    // The producer's retries carried the same message ids: the stream
    // holds each event once.
    let stored = stream.info().await.unwrap().state.messages;
    eprintln!("leader {leader} killed: stored {stored}, written twice {twice}");
    assert_eq!(stored, TOTAL, "the stream holds each event once");
}

/// An HTTP server that takes `delay` to answer each request; the bodies
/// it received.
fn slow_http(delay: Duration) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    std::thread::sleep(delay);
                    kept.lock().unwrap().push(String::from_utf8(body).unwrap());
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    (port, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_slower_than_ack_wait_gets_no_redelivery() {
    let d = tempfile::tempdir().unwrap();
    let server = NatsServer::start(d.path());
    let nc = client(&server.url()).await;
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    const TOTAL: u64 = 600;
    for n in 0..TOTAL {
        js.publish("logs.app", format!(r#"{{"n":{n}}}"#).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Each request takes 2.5 s, the server redelivers after 1 s without
    // an acknowledgement: only in-progress acknowledgements keep the
    // messages from coming again.
    let (port, bodies) = slow_http(Duration::from_millis(2500));
    let worker = spawn(
        d.path(),
        "w1.toml",
        &format!(
            r#"[reload]
watch = false

[sources.js]
type = "nats"
url = "{}"
stream = "LOGS"
consumer = "slow"
ack_wait = "1s"
batch_size = 200

[sinks.slow]
type = "http"
uri = "http://127.0.0.1:{port}/"
inputs = ["js"]
max_events = 200
request_timeout = "10s"
"#,
            server.url()
        ),
    );
    let received = || {
        let mut seen = BTreeMap::<u64, u32>::new();
        for body in bodies.lock().unwrap().iter() {
            for line in body.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                *seen.entry(v["n"].as_u64().unwrap()).or_default() += 1;
            }
        }
        seen
    };
    until("every event through the slow sink", 120, || {
        received().len() as u64 >= TOTAL
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop(worker);
    let seen = received();
    assert_eq!(seen.len() as u64, TOTAL);
    assert!(seen.values().all(|c| *c == 1), "an event came twice");
    let mut c: jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream("slow", "LOGS").await.unwrap();
    let info = c.info().await.unwrap();
    assert_eq!(
        (info.num_pending, info.num_ack_pending, info.num_redelivered),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_each_login_reach_a_server_that_requires_them() {
    let d = tempfile::tempdir().unwrap();
    crate::tls::pki(d.path());
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        r#"tls {{
  cert_file: "{dir}/server.pem"
  key_file: "{dir}/server.key"
  ca_file: "{dir}/ca.pem"
  verify: true
}}
authorization {{
  users: [
    {{ user: "app", password: "s3cret-pass" }}
    {{ nkey: "{public}" }}
  ]
}}
"#,
        dir = d.path().display(),
        public = user.public_key()
    );
    let server = NatsServer::start_with(d.path(), &conf);
    let url = format!("tls://127.0.0.1:{}", server.port);
    let nc = async_nats::ConnectOptions::with_user_and_password("app".into(), "s3cret-pass".into())
        .add_root_certificates(d.path().join("ca.pem"))
        .add_client_certificate(d.path().join("client.pem"), d.path().join("client.key"))
        .require_tls(true)
        .connect(url.as_str())
        .await
        .unwrap();
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    write_ns(&d.path().join("in.log"), 0..500);
    let tls = r#"tls = { ca_file = "ca.pem", cert_file = "client.pem", key_file = "client.key" }"#;
    let toml = format!(
        r#"[reload]
watch = false

[sources.app]
type = "file"
path = "in.log"

[sinks.publish]
type = "nats"
url = "{url}"
subject = "logs.app"
auth = {{ user = "app", password_env = "NATS_TEST_PASSWORD" }}
{tls}
inputs = ["app"]

[sources.js]
type = "nats"
url = "{url}"
stream = "LOGS"
auth = {{ nkey_env = "NATS_TEST_NKEY_SEED" }}
{tls}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["js"]
"#
    );
    std::fs::write(d.path().join("p.toml"), toml).unwrap();
    let child = crate::util::sluice()
        .args(["run", "--quiet", "p.toml"])
        .current_dir(d.path())
        .env("NATS_TEST_PASSWORD", "s3cret-pass")
        .env("NATS_TEST_NKEY_SEED", user.seed().unwrap())
        .spawn()
        .unwrap();
    let out = [d.path().join("out.log")];
    until("events through TLS with a password and an nkey", 60, || {
        seen(&out).len() >= 500
    })
    .await;
    stop(child);
    // A login variable that is not set is named before anything runs.
    let unset = crate::util::sluice()
        .args(["validate", "p.toml"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(
        !unset.status.success()
            && String::from_utf8_lossy(&unset.stderr).contains(
                "p.toml:20:1: sources.js.auth: names `NATS_TEST_NKEY_SEED`, which is not set"
            ),
        "an unset password variable is named: {}",
        String::from_utf8_lossy(&unset.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_is_down_events_go_to_the_fallback_and_come_back_after() {
    let d = tempfile::tempdir().unwrap();
    // A port nothing listens on yet: the server starts later.
    let port = free_port();
    write_ns(&d.path().join("in.log"), 0..300);
    let toml = format!(
        r#"[reload]
watch = false

[sources.app]
type = "file"
path = "in.log"
follow = true

[sinks.queue]
type = "nats"
url = "nats://127.0.0.1:{port}"
subject = "logs.app"
retry_for = "1s"
fallback = "local"
inputs = ["app"]

[sinks.local]
type = "file"
path = "fallback.log"
"#
    );
    std::fs::write(d.path().join("p.toml"), toml).unwrap();
    let child = crate::util::sluice()
        .args(["run", "--quiet", "p.toml"])
        .current_dir(d.path())
        .spawn()
        .unwrap();
    let fallback = [d.path().join("fallback.log")];
    until("the events in the fallback file", 60, || {
        seen(&fallback).len() >= 300
    })
    .await;
    let marked = json_lines(&fallback[0]);
    assert!(
        marked.iter().all(|e| e["_sluice_error"]
            .as_str()
            .unwrap_or_default()
            .contains("nats")),
        "{:?}",
        marked.first()
    );
    // NATS comes up: what is written next goes to the stream again.
    let server = NatsServer {
        port,
        cluster: None,
        name: "n1".into(),
        dir: d.path().join("n1"),
        conf: None,
        child: None,
    };
    let mut server = server;
    server.up();
    let nc = client(&server.url()).await;
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    let mut stored = 0;
    for round in 0..600 {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("in.log"))
            .unwrap();
        writeln!(f, "{{\"n\":{}}}", 1000 + round).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = js
            .get_stream("LOGS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        if stored > 0 {
            break;
        }
    }
    stop(child);
    assert!(stored > 0, "writes went back to nats once it answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_subjects_pass_through_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let server = NatsServer::start(d.path());
    let nc = client(&server.url()).await;
    let mut out = nc.subscribe("core.out.>").await.unwrap();
    nc.flush().await.unwrap();
    let url = server.url();
    let toml = format!(
        r#"[reload]
watch = false

[sources.sub]
type = "nats"
url = "{url}"
subject = "core.in.*"
queue_group = "sluice"

[sinks.publish]
type = "nats"
url = "{url}"
jetstream = false
subject = "core.out.{{service}}"
inputs = ["sub"]
"#
    );
    std::fs::write(d.path().join("p.toml"), toml).unwrap();
    let child = crate::util::sluice()
        .args(["run", "--quiet", "p.toml"])
        .current_dir(d.path())
        .spawn()
        .unwrap();
    // At most once: what is published before sluice subscribed is gone, so
    // probes go until one comes through.
    let probe = async {
        loop {
            nc.publish(
                "core.in.probe",
                r#"{"probe":true,"service":"probe"}"#.into(),
            )
            .await
            .unwrap();
            match tokio::time::timeout(Duration::from_millis(200), out.next()).await {
                Ok(Some(_)) => return,
                _ => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), probe)
        .await
        .expect("sluice subscribed");
    for n in 0..1000 {
        nc.publish(
            "core.in.app",
            format!(r#"{{"n":{n},"service":"web"}}"#).into(),
        )
        .await
        .unwrap();
    }
    nc.flush().await.unwrap();
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 1000 {
        let m = tokio::time::timeout(Duration::from_secs(20), out.next())
            .await
            .expect("every event within 20 s")
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        if let Some(n) = v["n"].as_u64() {
            assert_eq!(m.subject.as_str(), "core.out.web");
            got.insert(n);
        }
    }
    stop(child);
    assert_eq!(got.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logs_in_and_a_wrong_one_marks_the_sink_down() {
    let d = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with(d.path(), "authorization { token: \"t0ken-for-tests\" }\n");
    let nc = async_nats::ConnectOptions::with_token("t0ken-for-tests".into())
        .connect(server.url().as_str())
        .await
        .unwrap();
    let js = jetstream::new(nc.clone());
    logs_stream(&js, 1).await;
    write_ns(&d.path().join("in.log"), 0..100);
    let admin = free_port();
    let toml = format!(
        r#"[reload]
watch = false

[admin]
address = "127.0.0.1:{admin}"

[sources.app]
type = "file"
path = "in.log"
follow = true

[sinks.queue]
type = "nats"
url = "{}"
subject = "logs.app"
auth = {{ token_env = "NATS_TEST_TOKEN" }}
inputs = ["app"]
"#,
        server.url()
    );
    std::fs::write(d.path().join("p.toml"), &toml).unwrap();
    let run = |token: &str| {
        crate::util::sluice()
            .args(["run", "--quiet", "p.toml"])
            .current_dir(d.path())
            .env("NATS_TEST_TOKEN", token)
            .spawn()
            .unwrap()
    };
    let wrong = run("not-the-token");
    crate::util::accepting(admin).await;
    let mut health = String::new();
    until("the sink down in /health", 30, || {
        health = crate::util::raw_http(
            admin,
            "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        health.contains("queue") && health.to_ascii_lowercase().contains("authorization")
    })
    .await;
    assert!(
        !health.contains("not-the-token"),
        "the token is not shown: {health}"
    );
    // (Killed: a clean stop would wait `shutdown_timeout` for the batch
    // the sink cannot write.)
    let mut wrong = wrong;
    wrong.kill().unwrap();
    wrong.wait().unwrap();
    let right = run("t0ken-for-tests");
    let mut stream = js.get_stream("LOGS").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stream.info().await.unwrap().state.messages < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "the events in the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(right);
}
