//! The syslog source with real senders: util-linux `logger` (RFC 5424 and
//! 3164, newline and octet-counted framing, TCP and UDP) and a real
//! rsyslog (Debian's `rsyslogd`, started with its own config) forwarding
//! with `omfwd` over TCP; bad frames on a raw socket.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use sluice::delivery::dead_letters::Record;

use crate::util::{accepting, counts, free_port, start, until, whole_json_lines};

/// `logger` sending `message` (or its standard input's lines) to
/// 127.0.0.1:`port` with `args`.
fn logger(port: u16, args: &[&str], stdin: Option<&str>) {
    let mut cmd = Command::new("logger");
    cmd.args(["-n", "127.0.0.1", "-P", &port.to_string()])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("util-linux logger is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "logger {args:?} failed");
}

fn pipeline(tcp: u16, udp: u16) -> String {
    format!(
        r#"
[sources.tcp]
type = "syslog"
address = "127.0.0.1:{tcp}"
max_line = "1KiB"

[sources.udp]
type = "syslog"
mode = "udp"
address = "127.0.0.1:{udp}"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["tcp", "udp"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#
    )
}

fn by_service(events: &[serde_json::Value], service: &str) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e["service"] == service)
        .cloned()
        .collect()
}

/// Each framing and format `logger` has, over TCP and UDP: every field
/// where it belongs; a frame that is not syslog and one too long go to
/// the dead letters with their bytes and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_in_every_format_and_framing() {
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = (free_port(), free_port());
    let (running, _metrics) = start(dir.path(), &pipeline(tcp, udp)).await;
    accepting(tcp).await;
    tokio::task::spawn_blocking(move || {
        logger(
            tcp,
            &[
                "-T",
                "--rfc5424",
                "--msgid",
                "ID7",
                "--sd-id",
                "order@32473",
                "--sd-param",
                "id=\"42\"",
                "--sd-param",
                "note=\"a \\\"quoted\\\" \\] word\"",
                "-t",
                "shop",
                "-p",
                "local3.err",
                "payment failed",
            ],
            None,
        );
        logger(
            tcp,
            &[
                "-T",
                "--octet-count",
                "--rfc5424",
                "-t",
                "counted",
                "-i",
                "over octets",
            ],
            None,
        );
        logger(
            tcp,
            &[
                "-T",
                "--rfc3164",
                "-t",
                "old",
                "-p",
                "daemon.warning",
                "old style",
            ],
            None,
        );
        logger(
            udp,
            &[
                "-d",
                "--rfc5424",
                "-t",
                "viaudp",
                "-p",
                "user.debug",
                "over udp",
            ],
            None,
        );
        logger(
            udp,
            &["-d", "--rfc3164", "-t", "oldudp", "old over udp"],
            None,
        );
        // Not syslog, and longer than max_line, on one connection with a
        // good frame after them.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
        let long = format!("<13>1 - h big - - - {}\n", "x".repeat(3000));
        s.write_all(b"this is not syslog\n").unwrap();
        s.write_all(long.as_bytes()).unwrap();
        s.write_all(b"<13>1 - h after - - - still read\n").unwrap();
    })
    .await
    .unwrap();
    let out = dir.path().join("out.log");
    until("six events", 20, || whole_json_lines(&out).len() == 6).await;
    let dead_path = dir.path().join("dead.log");
    until("two dead letters", 20, || {
        std::fs::read_to_string(&dead_path)
            .map(|t| t.lines().count() == 2)
            .unwrap_or(false)
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();

    let events = whole_json_lines(&out);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let shop = &by_service(&events, "shop")[0];
    assert_eq!(shop["message"], "payment failed");
    assert_eq!(shop["level"], "error");
    assert_eq!(shop["host"], host.as_str());
    assert_eq!(shop["syslog"]["facility"], "local3");
    assert_eq!(shop["syslog"]["severity"], "err");
    assert_eq!(shop["syslog"]["version"], 1);
    assert_eq!(shop["syslog"]["msgid"], "ID7");
    assert_eq!(shop["syslog"]["structured_data"]["order@32473"]["id"], "42");
    assert_eq!(
        shop["syslog"]["structured_data"]["order@32473"]["note"],
        "a \"quoted\" ] word"
    );
    // logger's own element.
    assert!(shop["syslog"]["structured_data"]["timeQuality"].is_object());
    assert_eq!(shop["source"], "tcp");
    assert!(shop["_sluice"]["from"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // The message's own time (logger writes microseconds), not arrival.
    let ts = shop["timestamp"].as_str().unwrap();
    assert!(
        ts.ends_with('Z') && ts.len() == "2026-12-06T03:10:01.123456Z".len(),
        "{ts}"
    );

    let counted = &by_service(&events, "counted")[0];
    assert_eq!(counted["message"], "over octets");
    assert!(counted["syslog"]["procid"]
        .as_str()
        .unwrap()
        .parse::<u32>()
        .is_ok());

    let old = &by_service(&events, "old")[0];
    assert_eq!(old["message"], "old style");
    assert_eq!(old["level"], "warn");
    assert_eq!(old["syslog"]["facility"], "daemon");
    assert!(old["syslog"].get("version").is_none());

    let udp_event = &by_service(&events, "viaudp")[0];
    assert_eq!(udp_event["message"], "over udp");
    assert_eq!(udp_event["level"], "debug");
    assert_eq!(udp_event["source"], "udp");
    assert_eq!(by_service(&events, "oldudp")[0]["message"], "old over udp");
    assert_eq!(by_service(&events, "after")[0]["message"], "still read");

    let dead: Vec<Record> = std::fs::read_to_string(&dead_path)
        .unwrap()
        .lines()
        .map(|l| Record::parse(l).unwrap())
        .collect();
    assert_eq!(dead[0].event, b"this is not syslog");
    assert!(
        dead[0].message.contains("no `<PRI>`"),
        "{}",
        dead[0].message
    );
    assert_eq!(dead[0].component, "tcp");
    assert_eq!(dead[1].event.len(), 1024, "cut at max_line");
    assert!(dead[1].message.contains("max_line"), "{}", dead[1].message);
}

/// The `message` of each event of `service`, counted.
fn messages(events: &[serde_json::Value], service: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for e in events.iter().filter(|e| e["service"] == service) {
        if let Some(n) = e["message"]
            .as_str()
            .and_then(|m| m.trim().parse::<u64>().ok())
        {
            *seen.entry(n).or_default() += 1;
        }
    }
    seen
}

/// 100,000 messages over one TCP connection, octet-counted, each exactly
/// once; 20,000 over UDP, and the source counts what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_over_tcp_exactly_once_and_udp_counted() {
    const N: u64 = 100_000;
    const U: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = (free_port(), free_port());
    let (running, metrics) = start(dir.path(), &pipeline(tcp, udp)).await;
    accepting(tcp).await;
    tokio::task::spawn_blocking(move || {
        let lines: String = (1..=N).map(|i| format!("{i}\n")).collect();
        logger(tcp, &["-T", "--octet-count", "-t", "bulk"], Some(&lines));
        let lines: String = (1..=U).map(|i| format!("{i}\n")).collect();
        logger(udp, &["-d", "-t", "bulkudp"], Some(&lines));
    })
    .await
    .unwrap();
    let out = dir.path().join("out.log");
    until("every TCP message", 60, || {
        messages(&whole_json_lines(&out), "bulk").len() as u64 == N
    })
    .await;
    // UDP may lose datagrams in the kernel; what arrived is counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = whole_json_lines(&out);
    let bulk = messages(&events, "bulk");
    assert!(bulk.values().all(|&n| n == 1), "a message twice");
    assert_eq!(
        bulk.keys().copied().collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>()
    );
    let over_udp = messages(&events, "bulkudp");
    assert!(over_udp.values().all(|&n| n == 1));
    assert_eq!(counts(&metrics, "udp").events_in, over_udp.len() as u64);
    // (The kernel drops what overflows the socket's buffer when logger
    // sends faster than anyone reads; most arrive.)
    assert!(
        over_udp.len() as u64 >= U / 2,
        "{} of {U} datagrams arrived",
        over_udp.len()
    );
}

/// rsyslog's configuration: `imtcp` on `port`, forwarded with `omfwd`
/// over TCP to `to`, octet-counted, in RFC 5424 (or its forward format,
/// 3164 with an RFC 3339 time).
fn rsyslog_conf(dir: &Path, port: u16, to: u16, template: &str) -> String {
    format!(
        r#"
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{to}" protocol="tcp"
         TCP_Framing="octet-counted" template="{template}"
         queue.type="LinkedList" action.resumeRetryCount="-1")
}}
"#,
        work = dir.display()
    )
}

struct Rsyslog(std::process::Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real rsyslog relays what `logger` sends it to sluice: 100,000
/// messages in RFC 5424, then a few in its forward format (3164 with an
/// RFC 3339 time), each exactly once with its host and tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_with_omfwd_exactly_once() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let (tcp, udp) = (free_port(), free_port());
    let (running, _metrics) = start(dir.path(), &pipeline(tcp, udp)).await;
    accepting(tcp).await;
    let mut relays = Vec::new();
    let mut ports = Vec::new();
    for (i, template) in ["RSYSLOG_SyslogProtocol23Format", "RSYSLOG_ForwardFormat"]
        .iter()
        .enumerate()
    {
        let work = dir.path().join(format!("rsyslog{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let port = free_port();
        let conf = work.join("rsyslog.conf");
        std::fs::write(&conf, rsyslog_conf(&work, port, tcp, template)).unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(work.join("pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("stderr")).unwrap())
            .spawn()
            .expect("rsyslogd (Debian's rsyslog) is installed");
        relays.push(Rsyslog(child));
        accepting(port).await;
        ports.push(port);
    }
    let (relay, forward) = (ports[0], ports[1]);
    tokio::task::spawn_blocking(move || {
        let lines: String = (1..=N).map(|i| format!("{i}\n")).collect();
        logger(
            relay,
            &["-T", "--octet-count", "-t", "relayed"],
            Some(&lines),
        );
        let lines: String = (1..=100).map(|i| format!("{i}\n")).collect();
        logger(
            forward,
            &["-T", "--octet-count", "-t", "fwdfmt"],
            Some(&lines),
        );
    })
    .await
    .unwrap();
    let out = dir.path().join("out.log");
    until("every relayed message", 90, || {
        let events = whole_json_lines(&out);
        messages(&events, "relayed").len() as u64 == N && messages(&events, "fwdfmt").len() == 100
    })
    .await;
    drop(relays);
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = whole_json_lines(&out);
    let relayed = messages(&events, "relayed");
    assert!(relayed.values().all(|&n| n == 1), "a message twice");
    let one = events.iter().find(|e| e["service"] == "fwdfmt").unwrap();
    assert!(one["host"].is_string(), "{one}");
    assert!(one["syslog"].get("version").is_none(), "{one}");
    let r = events.iter().find(|e| e["service"] == "relayed").unwrap();
    assert_eq!(r["syslog"]["version"], 1, "{r}");
    assert!(std::fs::read_to_string(dir.path().join("dead.log")).map_or(true, |t| t.is_empty()));
}

/// The syslog sink to a real rsyslog: 100,000 events over TCP
/// (octet-counted) each exactly once with their severity, facility,
/// app name, host, MSGID and structured data; the same over UDP, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_feeds_a_real_rsyslog() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (tcp, udp) = (free_port(), free_port());
    let work = d.join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let conf = format!(
        r#"
global(workDirectory="{w}")
module(load="imtcp")
module(load="imudp")
template(name="fields" type="string" string="%syslogseverity-text%|%syslogfacility-text%|%app-name%|%hostname%|%msgid%|%structured-data%|%msg%\n")
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="keep")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="keepudp")
ruleset(name="keep") {{ action(type="omfile" file="{w}/tcp.log" template="fields") }}
ruleset(name="keepudp") {{ action(type="omfile" file="{w}/udp.log" template="fields") }}
"#,
        w = work.display()
    );
    std::fs::write(work.join("rsyslog.conf"), conf).unwrap();
    let _rsyslog = Rsyslog(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(work.join("rsyslog.conf"))
            .arg("-i")
            .arg(work.join("pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("stderr")).unwrap())
            .spawn()
            .expect("rsyslogd (Debian's rsyslog) is installed"),
    );
    accepting(tcp).await;
    let levels = ["info", "warn", "error", "debug"];
    let lines: String = (0..N)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-12-06T03:00:00.{:06}Z\",\"level\":\"{}\",\"message\":\"event {i}\",\"service\":\"shop\",\"host\":\"web-1\",\"syslog\":{{\"msgid\":\"ID7\",\"structured_data\":{{\"order@32473\":{{\"id\":\"{i}\"}}}}}}}}\n",
                i % 1_000_000,
                levels[i % 4]
            )
        })
        .collect();
    std::fs::write(d.join("in.jsonl"), lines).unwrap();
    let toml = format!(
        r#"
[sources.in]
type = "file"
path = "in.jsonl"

[sinks.siem]
type = "syslog"
address = "127.0.0.1:{tcp}"
facility = "local4"
inputs = ["in"]

[sinks.siem_udp]
type = "syslog"
mode = "udp"
address = "127.0.0.1:{udp}"
inputs = ["in"]
"#
    );
    let metrics = crate::util::run(d, &toml).await.unwrap();
    assert_eq!(counts(&metrics, "siem").events_out, N as u64);
    assert_eq!(counts(&metrics, "siem_udp").events_out, N as u64);
    let got = work.join("tcp.log");
    let read = |p: &Path| -> Vec<String> {
        let t = std::fs::read_to_string(p).unwrap_or_default();
        let whole = t.rfind('\n').map_or("", |i| &t[..i]);
        whole.lines().map(str::to_string).collect()
    };
    until("rsyslog wrote every event", 60, || read(&got).len() >= N).await;
    let lines = read(&got);
    assert_eq!(lines.len(), N);
    let mut seen = vec![0u8; N];
    for l in &lines {
        let f: Vec<&str> = l.splitn(7, '|').collect();
        let i: usize = f[6].trim().strip_prefix("event ").unwrap().parse().unwrap();
        seen[i] += 1;
        let want = ["info", "warning", "err", "debug"][i % 4];
        assert_eq!(
            &f[..6],
            &[
                want,
                "local4",
                "shop",
                "web-1",
                "ID7",
                &format!("[order@32473 id=\"{i}\"]")
            ],
            "{l}"
        );
    }
    assert!(seen.iter().all(|&n| n == 1), "each event exactly once");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let over_udp = read(&work.join("udp.log"));
    assert!(!over_udp.is_empty() && over_udp.len() <= N);
    let mut uniq: Vec<&String> = over_udp.iter().collect();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), over_udp.len(), "no datagram twice");
}

/// Syslog over TLS both ways: `openssl s_client` with a client
/// certificate sends to the source (each event names its peer), and the
/// sink forwards 1,000 events over TLS to the same source, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let dd = d.clone();
    tokio::task::spawn_blocking(move || crate::tls::pki(&dd))
        .await
        .unwrap();
    let port = free_port();
    let lines: String = (0..1000)
        .map(|i| format!("{{\"message\":\"fwd {i}\",\"service\":\"relay\",\"level\":\"warn\"}}\n"))
        .collect();
    std::fs::write(d.join("in.jsonl"), lines).unwrap();
    let toml = format!(
        r#"
[sources.tls]
type = "syslog"
address = "127.0.0.1:{port}"
tls = {{ cert_file = "server.pem", key_file = "server.key", client_ca_file = "ca.pem" }}

[sources.in]
type = "file"
path = "in.jsonl"
follow = true

[sinks.forward]
type = "syslog"
address = "localhost:{port}"
tls = {{ ca_file = "ca.pem", cert_file = "client.pem", key_file = "client.key" }}
inputs = ["in"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["tls"]
"#
    );
    let (running, _) = start(&d, &toml).await;
    accepting(port).await;
    let dd = d.clone();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-quiet", "-no_ign_eof"])
            .args(["-CAfile", "ca.pem", "-cert", "client.pem", "-key", "client.key"])
            .current_dir(&dd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"<13>1 2026-12-06T03:10:01Z web-1 shop - - - over tls\n26 <11>1 - web-1 shop - - - x")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        drop(stdin);
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let out = d.join("out.log");
    until("both clients' events", 30, || {
        whole_json_lines(&out).len() == 1002
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let events = whole_json_lines(&out);
    let shop = by_service(&events, "shop");
    assert_eq!(shop.len(), 2, "{shop:#?}");
    assert_eq!(shop[0]["message"], "over tls");
    assert_eq!(shop[1]["message"], "x");
    assert_eq!(shop[1]["level"], "error");
    for e in &events {
        assert_eq!(e["_sluice"]["peer"], "CN=app-1, O=Payments", "{e}");
    }
    let relayed = messages_prefixed(&events, "relay", "fwd ");
    assert_eq!(relayed.len(), 1000);
    assert!(relayed.values().all(|&n| n == 1));
    assert!(by_service(&events, "relay")
        .iter()
        .all(|e| e["level"] == "warn"));
}

fn messages_prefixed(
    events: &[serde_json::Value],
    service: &str,
    prefix: &str,
) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for e in events.iter().filter(|e| e["service"] == service) {
        if let Some(n) = e["message"]
            .as_str()
            .and_then(|m| m.strip_prefix(prefix))
            .and_then(|m| m.parse::<u64>().ok())
        {
            *seen.entry(n).or_default() += 1;
        }
    }
    seen
}
