//! The alert sink against real receivers: email into `aiosmtpd` (a real
//! SMTP server from PyPI, with login, and with STARTTLS on a certificate
//! made here by openssl), webhooks into this test's loopback HTTP server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sinks::TestServer;
use crate::util::{
    counts, free_port, json_lines_if_any, read_json_lines, start, toml_path, until, Helper,
};

fn tools() -> PathBuf {
    sluice::cli::plugin::build::tools_dir().expect("a tools folder (scripts/setup-test-deps)")
}

/// An aiosmtpd server on loopback that writes what it receives to a file,
/// one JSON object per message; stopped when dropped.
struct Smtp {
    port: u16,
    out: PathBuf,
    _server: Helper,
}

const SMTP_SERVER: &str = r#"
import email, json, logging, ssl, sys
# aiosmtpd's own notices (a deprecation of its login API) are not ours.
logging.disable(logging.WARNING)
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tls = None
if len(sys.argv) > 5:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(sys.argv[4], sys.argv[5])
# "wrapped": TLS from the first byte (SMTPS), else STARTTLS.
wrapped = len(sys.argv) > 6 and sys.argv[6] == "wrapped"

class Handler:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content)
        with open(out, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "subject": str(msg["Subject"]),
                "body": msg.get_payload(decode=True).decode(),
                "authenticated": bool(session.authenticated),
                "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
            }) + "\n")
        return "250 OK"

def check(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts"
          and auth_data.password == password.encode())
    return AuthResult(success=ok)

if wrapped:
    c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=check,
                   auth_require_tls=False, ssl_context=tls, server_hostname="localhost")
else:
    c = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=check,
                   auth_require_tls=tls is not None, tls_context=tls,
                   require_starttls=tls is not None)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

impl Smtp {
    fn start(dir: &Path, password: &str, tls: Option<(&Path, &Path)>) -> Smtp {
        Self::start_with(dir, password, tls, false)
    }

    /// With TLS from the first byte (SMTPS) when `wrapped`.
    fn start_with(dir: &Path, password: &str, tls: Option<(&Path, &Path)>, wrapped: bool) -> Smtp {
        let port = free_port();
        let out = dir.join("mail.jsonl");
        let mut cmd = Command::new(tools().join("py/bin/python"));
        // (-W ignore: aiosmtpd's own deprecation notices.)
        cmd.args(["-W", "ignore", "-c"])
            .arg(SMTP_SERVER)
            .arg(port.to_string())
            .arg(&out)
            .arg(password);
        if let Some((cert, key)) = tls {
            cmd.arg(cert).arg(key);
            if wrapped {
                cmd.arg("wrapped");
            }
        }
        let _server = Helper::start(cmd.stdin(Stdio::piped()), "aiosmtpd");
        Smtp { port, out, _server }
    }

    fn mail(&self) -> Vec<Value> {
        json_lines_if_any(&self.out)
    }
}

/// The notifications a webhook server took (answered 2xx).
fn hooks(server: &TestServer) -> Vec<Value> {
    server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| (200..300).contains(&s.status))
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect()
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_one_alert_with_its_count_and_a_storm_is_held_to_the_limit() {
    let d = tempfile::tempdir().unwrap();
    // SAFETY: set before the sink reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_SMTP_PASSWORD", "s3cret-pw") };
    let smtp = Smtp::start(d.path(), "s3cret-pw", None);
    // The webhook fails its first request: the alert is retried.
    let hook = TestServer::start(Arc::new(|n, _| match n {
        0 => (503, vec![], "busy".into()),
        _ => (200, vec![], "ok".into()),
    }))
    .await;
    let log = d.path().join("app.log");
    append(&log, []);
    let toml = format!(
        r#"[reload]
watch = false

[sources.app]
type = "file"
path = "app.log"
follow = true
poll_interval = "20ms"

[sinks.all]
type = "file"
path = "all.log"
inputs = ["app"]

[sinks.page]
type = "alert"
inputs = ["app"]
group_by = ["service", "message"]
group_wait = "1s"
repeat_interval = "3s"
max_per_minute = 5
retry_for = "20s"
webhook = {{ url = "http://127.0.0.1:{hook}/hooks/sluice" }}
email = {{ server = "127.0.0.1", port = {smtp}, tls = "none", user = "alerts", password_env = "SLUICE_TEST_SMTP_PASSWORD", from = "sluice <sluice@example.com>", to = ["ops@example.com", "oncall@example.com"] }}
"#,
        hook = hook.port,
        smtp = smtp.port,
    );
    let (running, metrics) = start(d.path(), &toml).await;
    let error =
        |m: &str| format!(r#"{{"service":"api","level":"error","message":"{m}","user":"u1"}}"#);

    // 10,000 identical errors: one notification, with the count.
    let burst_at = Instant::now();
    append(&log, (0..10_000).map(|_| error("boom")));
    until("the burst's alert", 30, || hooks(&hook).len() == 1).await;
    let first = &hooks(&hook)[0];
    assert!(
        burst_at.elapsed() >= Duration::from_secs(1),
        "sent before group_wait"
    );
    assert_eq!(first["count"], 10_000);
    assert_eq!(first["text"], "[ERROR] api: boom (10000 events)");
    assert_eq!(first["title"], "sluice alert: api ERROR");
    assert_eq!(
        first["group"],
        serde_json::json!({"service": "api", "message": "boom"})
    );
    assert_eq!(first["event"]["user"], "u1");
    assert_eq!(
        hook.seen.lock().unwrap()[0].status,
        503,
        "the first try was refused"
    );
    until("the burst's email", 30, || smtp.mail().len() == 1).await;
    let mail = &smtp.mail()[0];
    assert_eq!(mail["subject"], "sluice alert: api ERROR");
    assert_eq!(
        mail["body"].as_str().unwrap().trim(),
        "[ERROR] api: boom (10000 events)"
    );
    assert_eq!(mail["from"], "sluice@example.com");
    assert_eq!(
        mail["to"],
        serde_json::json!(["ops@example.com", "oncall@example.com"])
    );
    assert_eq!(mail["authenticated"], true);
    // Nothing more while nothing new comes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hooks(&hook).len(), 1);

    // More of the same: one more, once the repeat interval is over.
    append(&log, (0..5).map(|_| error("boom")));
    until("the repeat", 30, || hooks(&hook).len() == 2).await;
    assert!(
        burst_at.elapsed() >= Duration::from_secs(4),
        "repeated too soon"
    );
    assert_eq!(hooks(&hook)[1]["count"], 5);

    // A storm of 200 distinct errors: 3 more notifications fill the
    // minute's 5; the 197 others are held back and summed up.
    append(&log, (0..200).map(|i| error(&format!("error {i}"))));
    until("the storm's alerts", 30, || hooks(&hook).len() == 5).await;
    until("the suppressed count", 30, || {
        counts(&metrics, "page").alerts[1] == 197
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hooks(&hook).len(), 5, "the rate limit let more through");
    let storm: u64 = hooks(&hook)[2..]
        .iter()
        .map(|h| h["count"].as_u64().unwrap())
        .sum();
    assert_eq!(storm, 3);

    // Stopping sends the summary of what was held back.
    running.shutdown().await;
    running.wait().await.unwrap();
    let all = hooks(&hook);
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(all[5]["suppressed"], 197);
    // The summary names the groups held back, the most events first
    // (here one each: the first ten in order), bounded.
    let text = all[5]["text"].as_str().unwrap();
    assert!(
        text.starts_with("197 alerts suppressed (197 events): more than max_per_minute in the last minute; most frequent: "),
        "{text}"
    );
    assert!(text.ends_with(" and 187 more groups"), "{text}");
    let groups = all[5]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 10);
    assert_eq!(groups[0]["count"], 1);
    assert!(groups[0]["group"]["message"]
        .as_str()
        .unwrap()
        .starts_with("error "));
    assert_eq!(all[5]["more_groups"], 187);
    until("every email", 30, || smtp.mail().len() == 6).await;
    assert_eq!(smtp.mail()[5]["subject"], "sluice: 197 alerts suppressed");
    // The alerts were copies: every event reached the other sink.
    assert_eq!(read_json_lines(&d.path().join("all.log")).len(), 10_205);
    let c = counts(&metrics, "page");
    assert_eq!(c.alerts, [6, 197, 0]);
    assert_eq!(c.events_in, 10_205);
    let text = sluice::admin::prometheus(&metrics);
    assert!(text.contains(
        "sluice_alerts_total{component=\"page\",kind=\"sink\",result=\"suppressed\"} 197"
    ));
}

/// A CA and a certificate for `localhost` it signed, made by openssl.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        "2",
        "-subj",
        "/CN=sluice test CA",
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
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
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
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_and_slack_webhooks() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(d.path());
    // SAFETY: set before the sink reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_SMTP_TLS_PASSWORD", "tls-pw") };
    let smtp = Smtp::start(d.path(), "tls-pw", Some((&cert, &key)));
    let hook = TestServer::start(Arc::new(|_, _| (200, vec![], "ok".into()))).await;
    let events: Vec<Value> = (0..300)
        .map(|i| {
            let service = ["api", "db"][i % 2];
            serde_json::json!({"service": service, "level": "error", "message": "disk full"})
        })
        .collect();
    crate::util::write_json_lines(&d.path().join("in.log"), &events);
    let toml = format!(
        r#"[sources.app]
type = "file"
path = "in.log"
follow = false

[sinks.page]
type = "alert"
inputs = ["app"]
group_by = ["service"]
template = "{{service}} says {{message|upper}} x{{count}}"
webhook = {{ url = "http://127.0.0.1:{hook}/slack", format = "slack" }}
email = {{ server = "localhost", port = {smtp}, tls = "starttls", ca_file = {ca}, user = "alerts", password_env = "SLUICE_TEST_SMTP_TLS_PASSWORD", from = "sluice@example.com", to = ["ops@example.com"] }}
"#,
        hook = hook.port,
        smtp = smtp.port,
        ca = toml_path(ca.to_str().unwrap()),
    );
    // The source ends: what the groups hold is sent as the sink stops.
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let mut texts: Vec<String> = hooks(&hook)
        .iter()
        .map(|h| {
            assert_eq!(
                h.as_object().unwrap().len(),
                1,
                "a Slack body is only text: {h}"
            );
            h["text"].as_str().unwrap().to_string()
        })
        .collect();
    texts.sort();
    assert_eq!(texts, ["api says DISK FULL x150", "db says DISK FULL x150"]);
    let mail = smtp.mail();
    assert_eq!(mail.len(), 2, "{mail:?}");
    for m in &mail {
        assert_eq!(m["tls"], true, "sent without STARTTLS");
        assert_eq!(m["authenticated"], true);
    }
    assert_eq!(counts(&metrics, "page").alerts, [2, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_channel_costs_alerts_never_events() {
    let d = tempfile::tempdir().unwrap();
    let events: Vec<Value> = (0..5000)
        .map(|i| serde_json::json!({"level": "error", "message": format!("e{}", i % 10), "seq": i}))
        .collect();
    crate::util::write_json_lines(&d.path().join("in.log"), &events);
    // Nobody listens on this port.
    let dead = free_port();
    let toml = format!(
        r#"[sources.app]
type = "file"
path = "in.log"
follow = false

[sinks.all]
type = "file"
path = "all.log"
inputs = ["app"]

[sinks.page]
type = "alert"
inputs = ["app"]
group_by = ["message"]
group_wait = "0s"
retry_for = "1s"
webhook = {{ url = "http://127.0.0.1:{dead}/" }}
"#
    );
    let started = Instant::now();
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(read_json_lines(&d.path().join("all.log")).len(), 5000);
    let c = counts(&metrics, "page");
    assert_eq!(c.events_in, 5000);
    assert_eq!(c.alerts[0], 0);
    assert!(c.alerts[2] >= 1, "failures not counted: {:?}", c.alerts);
    assert!(c.retries >= 1);
}

#[tokio::test]
async fn alert_settings_are_checked_at_their_key() {
    let d = tempfile::tempdir().unwrap();
    let base =
        "[sources.app]\ntype = \"stdin\"\n[sinks.page]\ntype = \"alert\"\ninputs = [\"app\"]\n";
    let err = crate::util::plan_error(d.path(), base).await;
    assert!(err.contains("needs a channel"), "{err}");
    let err = crate::util::plan_error(
        d.path(),
        &format!("{base}email = {{ server = \"smtp.example.com\", from = \"not an address\", to = [\"a@b.c\"] }}\n"),
    )
    .await;
    assert!(
        err.contains("sinks.page.email.from") && err.contains("not an email address"),
        "{err}"
    );
    let err = crate::util::plan_error(
        d.path(),
        &format!(
            "{base}template = \"{{level|shout}}\"\nwebhook = {{ url = \"http://127.0.0.1:9/\" }}\n"
        ),
    )
    .await;
    assert!(
        err.contains("sinks.page.template") && err.contains("shout"),
        "{err}"
    );
    let err = crate::util::plan_error(
        d.path(),
        &format!("{base}webhook = {{ url = \"ftp://x/\" }}\n"),
    )
    .await;
    assert!(err.contains("sinks.page.webhook.url"), "{err}");
    let err = crate::util::plan_error(
        d.path(),
        &format!("{base}webhook = {{ url = \"http://127.0.0.1:9/\", request_timeout = \"2h\" }}\n"),
    )
    .await;
    assert!(
        err.contains("sinks.page.webhook.request_timeout") && err.contains("out of bounds"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_smtps() {
    let d = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(d.path());
    // SAFETY: set before the sink reads it; no other test uses this name.
    unsafe { std::env::set_var("SLUICE_TEST_SMTPS_PASSWORD", "smtps-pw") };
    let smtp = Smtp::start_with(d.path(), "smtps-pw", Some((&cert, &key)), true);
    crate::util::write_json_lines(
        &d.path().join("in.log"),
        &[serde_json::json!({"service": "api", "level": "fatal", "message": "down"})],
    );
    let toml = format!(
        r#"[sources.app]
type = "file"
path = "in.log"

[sinks.page]
type = "alert"
inputs = ["app"]
email = {{ server = "localhost", port = {smtp}, tls = "tls", ca_file = {ca}, user = "alerts", password_env = "SLUICE_TEST_SMTPS_PASSWORD", from = "sluice@example.com", to = ["ops@example.com"] }}
"#,
        smtp = smtp.port,
        ca = toml_path(ca.to_str().unwrap()),
    );
    let (running, metrics) = start(d.path(), &toml).await;
    running.wait().await.unwrap();
    let mail = smtp.mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0]["tls"], true);
    assert_eq!(
        mail[0]["body"].as_str().unwrap().trim(),
        "[FATAL] api: down (1 events)"
    );
    assert_eq!(counts(&metrics, "page").alerts, [1, 0, 0]);
}
