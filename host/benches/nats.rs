//! `just bench` (NATS part), for issue #45: events into and out of
//! JetStream through sluice against the raw rate of the same nats-server
//! in the same run (what `nats bench --js` does: asynchronous publishes,
//! acknowledgements awaited a window at a time; pull consumption in
//! batches of 1,000, each message acknowledged). Needs `nats-server` on
//! PATH. 3 rounds taking turns, medians.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;

fn event(j: u64) -> String {
    format!(
        "{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"info\",\"service\":\"orders\",\"message\":\"order {j} by user{}@example.com\"}}",
        j % 97
    )
}

async fn fresh_stream(js: &jetstream::Context) {
    let _ = js.delete_stream("LOGS").await;
    js.create_stream(jetstream::stream::Config {
        name: "LOGS".into(),
        subjects: vec!["logs.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn raw_publish(js: &jetstream::Context, n: u64) -> Duration {
    let started = Instant::now();
    let mut window = Vec::with_capacity(1000);
    for j in 0..n {
        window.push(js.publish("logs.raw", event(j).into()).await.unwrap());
        if window.len() == 1000 {
            for a in window.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in window {
        a.await.unwrap();
    }
    started.elapsed()
}

async fn raw_consume(js: &jetstream::Context, n: u64) -> Duration {
    let stream = js.get_stream("LOGS").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("raw".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut read = 0;
    while read < n {
        let mut batch = consumer
            .batch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(m) = batch.next().await {
            m.unwrap().ack().await.unwrap();
            read += 1;
        }
    }
    js.client().flush().await.unwrap();
    started.elapsed()
}

fn main() {
    let n = common::event_count(200_000) as u64;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = tempfile::tempdir().unwrap();
    let mut server = Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is needed for this benchmark");
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("nats://127.0.0.1:{port}");
    let (rt, runtime, _cache) = common::runtimes();
    let input: String = (0..n).map(|j| event(j) + "\n").collect();
    let js = rt.block_on(async {
        let nc = async_nats::connect(url.as_str()).await.unwrap();
        jetstream::new(nc)
    });
    let into = format!(
        r#"[sources.app]
type = "file"
path = "in.log"

[sinks.out]
type = "nats"
url = "{url}"
subject = "logs.app"
inputs = ["app"]
"#
    );
    let out_of = format!(
        r#"[sources.js]
type = "nats"
url = "{url}"
stream = "LOGS"
consumer = "sluice"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["js"]
"#
    );
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _round in 0..3 {
        rt.block_on(fresh_stream(&js));
        times[0].push(rt.block_on(raw_publish(&js, n)));
        times[1].push(rt.block_on(raw_consume(&js, n)));
        rt.block_on(fresh_stream(&js));
        // A folder per round: no file checkpoint of the last one.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.log"), &input).unwrap();
        times[2].push(common::run_timed(&rt, &runtime, dir.path(), &into, n).0);
        times[3].push(common::run_timed(&rt, &runtime, dir.path(), &out_of, n).0);
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let [raw_pub, raw_sub, into, out_of] = times.map(common::median);
    println!(
        "NATS JetStream, {n} events of ~{} bytes, medians of 3 rounds",
        input.len() as u64 / n
    );
    println!("{:<40} {:>12} {:>10}", "", "events/s", "of raw");
    println!(
        "{:<40} {:>12.0} {:>10}",
        "raw publish (async, acks per 1,000)",
        rate(raw_pub),
        ""
    );
    println!(
        "{:<40} {:>12.0} {:>9.0}%",
        "sluice file -> nats sink",
        rate(into),
        100.0 * raw_pub.as_secs_f64() / into.as_secs_f64()
    );
    println!(
        "{:<40} {:>12.0} {:>10}",
        "raw pull consume (batches of 1,000, ack)",
        rate(raw_sub),
        ""
    );
    println!(
        "{:<40} {:>12.0} {:>9.0}%",
        "sluice nats source -> file",
        rate(out_of),
        100.0 * raw_sub.as_secs_f64() / out_of.as_secs_f64()
    );
    let _ = server.kill();
    let _ = server.wait();
}
