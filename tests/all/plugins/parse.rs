//! The `parse` component on real logs: nginx and Apache (Debian's
//! packages) started on loopback ports with their default log formats,
//! sent a few hundred requests of varied methods, paths, statuses,
//! referers and user agents with quotes; their access and error logs read
//! through a file source and `parse`, each field checked against what was
//! sent. And the scanner against grok's COMBINEDAPACHELOG on the same
//! nginx log.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{load, process, replacements};
use crate::util::{free_port, until, whole_json_lines};
use crate::PARSE;

#[test]
fn the_component_parses_and_routes_failures() {
    let mut p = load(
        PARSE,
        r#"{"format":"logfmt","on_error":"route:raw","types":{"n":"int"}}"#,
    );
    let v = process(
        &mut p,
        &[
            r#"{"message":"level=info msg=\"a b\" n=3"}"#,
            r#"{"message":"=broken"}"#,
        ],
    );
    assert_eq!(v.ports, [0, 1], "the failure goes to output 1");
    let out: serde_json::Value = serde_json::from_str(&replacements(&v)[0]).unwrap();
    assert_eq!(out["msg"], "a b");
    assert_eq!(out["n"], 3);
}

/// What a request was: method, path, status wanted, referer, agent.
#[derive(Debug, Clone)]
struct Sent {
    method: &'static str,
    path: String,
    status: u16,
    referer: Option<String>,
    agent: String,
    at: chrono::DateTime<chrono::Utc>,
}

const AGENTS: [&str; 4] = [
    "curl/8.1",
    "Mozilla/5.0 (X11; Linux x86_64) \"quoted\" agent",
    "python-requests/2.31 back\\slash",
    "agent with 'single' quotes and\ta tab",
];

/// Send `n` requests to 127.0.0.1:`port`; what was sent, with the status
/// the server answered.
fn send(port: u16, n: usize) -> Vec<Sent> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut sent = Vec::new();
    for i in 0..n {
        let method = ["GET", "GET", "POST", "HEAD", "PUT", "DELETE"][i % 6];
        // Each path names its request (`i`): servers log in the order
        // requests end, which need not be the order they were sent.
        let path = match i % 5 {
            0 => format!("/index.html?i={i}"),
            1 => format!("/missing/{i}?q=a%20b&n={i}"),
            2 => format!("/?i={i}"),
            3 => format!("/files/page{}.html?i={i}", i % 3),
            _ => format!("/api/v1/orders/{i}"),
        };
        let ua = AGENTS[i % AGENTS.len()];
        let referer = (i % 3 != 0).then(|| format!("https://shop.example/p/{i}?x=\"y\""));
        let url = format!("http://127.0.0.1:{port}{path}");
        let at = chrono::Utc::now();
        let answered = match method {
            "POST" | "PUT" => {
                let mut r = if method == "POST" {
                    agent.post(&url)
                } else {
                    agent.put(&url)
                };
                r = r.header("user-agent", ua);
                if let Some(x) = &referer {
                    r = r.header("referer", x);
                }
                r.send("body")
            }
            _ => {
                let mut r = match method {
                    "GET" => agent.get(&url),
                    "HEAD" => agent.head(&url),
                    _ => agent.delete(&url),
                };
                r = r.header("user-agent", ua);
                if let Some(x) = &referer {
                    r = r.header("referer", x);
                }
                r.call()
            }
        };
        let status = match answered {
            Ok(r) => r.status().as_u16(),
            Err(e) => panic!("{method} {url}: {e}"),
        };
        sent.push(Sent {
            method,
            path,
            status,
            referer,
            agent: ua.to_string(),
            at,
        });
    }
    sent
}

fn site(root: &Path) {
    std::fs::create_dir_all(root.join("files")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    for i in 0..3 {
        std::fs::write(root.join(format!("files/page{i}.html")), "page\n").unwrap();
    }
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, port: u16) -> Server {
    let root = dir.join("www");
    site(&root);
    let conf = format!(
        r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/nginx-access.log combined;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /api/ {{ return 503; }}
    }}
}}
"#,
        d = dir.display(),
        root = root.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    Server(
        Command::new("nginx")
            .args(["-e", &dir.join("nginx-startup.log").display().to_string()])
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light) is installed"),
    )
}

fn apache(dir: &Path, port: u16) -> Server {
    let root = dir.join("www");
    site(&root);
    let m = "/usr/lib/apache2/modules";
    let conf = format!(
        r#"
ServerRoot "{d}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {d}/apache.pid
Mutex file:{d}
DefaultRuntimeDir {d}
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule dir_module {m}/mod_dir.so
LoadModule alias_module {m}/mod_alias.so
User www-data
Group www-data
ErrorLog {d}/apache-error.log
LogLevel info
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{{Referer}}i\" \"%{{User-Agent}}i\"" combined
CustomLog {d}/apache-access.log combined
DocumentRoot {root}
<Directory {root}>
    Require all granted
</Directory>
Redirect gone /api/
"#,
        d = dir.display(),
        root = root.display()
    );
    std::fs::write(dir.join("apache.conf"), conf).unwrap();
    // The log folder must be the server's to write as www-data? It writes
    // them as root before it drops privileges; the site must be readable.
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
    Server(
        Command::new("apache2")
            .args([
                "-f",
                &dir.join("apache.conf").display().to_string(),
                "-DFOREGROUND",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("apache-startup.log")).unwrap())
            .spawn()
            .expect("apache2 (Debian's package) is installed"),
    )
}

fn parse_pipeline(input: &str, format: &str, out: &str) -> String {
    format!(
        r#"
[sources.logs]
type = "file"
path = "{input}"
format = "text"

[transforms.parse]
plugin = {plugin}
inputs = ["logs"]
[transforms.parse.config]
format = "{format}"
on_error = "dead_letter"

[sinks.out]
type = "file"
path = "{out}"
inputs = ["parse"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
        plugin = crate::util::toml_path(PARSE)
    )
}

/// Check parsed access-log events against what was sent.
fn check_access(events: &[serde_json::Value], sent: &[Sent], server: &str) {
    assert_eq!(events.len(), sent.len(), "{server}: one event per request");
    let by_path: std::collections::HashMap<&str, &Sent> =
        sent.iter().map(|s| (s.path.as_str(), s)).collect();
    let mut seen = std::collections::HashSet::new();
    for e in events {
        let path = e["path"].as_str().unwrap_or_default();
        let s = by_path
            .get(path)
            .unwrap_or_else(|| panic!("{server}: {e} was not sent"));
        assert!(seen.insert(path.to_string()), "{server}: {path} twice");
        assert_eq!(e["client"], "127.0.0.1", "{server}: {e}");
        assert_eq!(e["method"], s.method, "{server}: {e}");
        assert_eq!(e["path"], s.path.as_str(), "{server}: {e}");
        assert_eq!(e["protocol"], "HTTP/1.1", "{server}: {e}");
        assert_eq!(e["status"], s.status, "{server}: {e}");
        assert!(
            e["size"].is_u64() || e.get("size").is_none(),
            "{server}: {e}"
        );
        assert_eq!(e["agent"], s.agent.as_str(), "{server}: {e}");
        match &s.referer {
            Some(r) => assert_eq!(e["referer"], r.as_str(), "{server}: {e}"),
            None => assert!(e.get("referer").is_none(), "{server}: {e}"),
        }
        let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
        let off = (t.timestamp() - s.at.timestamp()).abs();
        assert!(off <= 1, "{server}: time {t} for a request at {}", s.at);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_and_apache_logs_parse_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (np, ap) = (free_port(), free_port());
    let _nginx = nginx(&d, np);
    let _apache = apache(&d, ap);
    crate::util::accepting(np).await;
    crate::util::accepting(ap).await;
    let sent = tokio::task::spawn_blocking(move || (send(np, 300), send(ap, 300)))
        .await
        .unwrap();
    // Both write their access log line after the answer.
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    until("nginx's access log", 20, || {
        lines(&d.join("nginx-access.log")) == 300
    })
    .await;
    until("apache's access log", 20, || {
        lines(&d.join("apache-access.log")) == 300
    })
    .await;
    for (input, format, out) in [
        ("nginx-access.log", "nginx_combined", "nginx.out"),
        ("apache-access.log", "apache_combined", "apache.out"),
        ("nginx-error.log", "nginx_error", "nginx-error.out"),
        ("apache-error.log", "apache_error", "apache-error.out"),
    ] {
        let toml = parse_pipeline(input, format, out);
        crate::util::run(&d, &toml).await.unwrap();
    }
    check_access(&whole_json_lines(&d.join("nginx.out")), &sent.0, "nginx");
    check_access(&whole_json_lines(&d.join("apache.out")), &sent.1, "apache");
    // The statuses were varied.
    let statuses: std::collections::BTreeSet<u16> = sent.0.iter().map(|s| s.status).collect();
    assert!(statuses.len() >= 3, "{statuses:?}");
    // Error logs: every line parsed (nothing dead-lettered), and the
    // missing files named with their request.
    let ng = whole_json_lines(&d.join("nginx-error.out"));
    let missing: Vec<&serde_json::Value> = ng
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .unwrap_or("")
                .contains("No such file or directory")
        })
        .collect();
    assert!(!missing.is_empty(), "{ng:#?}");
    for e in &missing {
        assert_eq!(e["client"], "127.0.0.1", "{e}");
        assert!(e["request"].as_str().unwrap().contains(" /missing/"), "{e}");
        assert!(e["pid"].is_u64() && e["severity"].is_string(), "{e}");
    }
    let ap_err = whole_json_lines(&d.join("apache-error.out"));
    assert!(!ap_err.is_empty());
    assert!(
        ap_err
            .iter()
            .all(|e| e["severity"].is_string() && e["timestamp"].is_string()),
        "{ap_err:#?}"
    );
    let dead = std::fs::read_to_string(d.join("dead.log")).unwrap_or_default();
    assert!(dead.is_empty(), "lines that did not parse: {dead}");
}

/// The hand-written nginx_combined scanner and grok's COMBINEDAPACHELOG
/// give the same fields on a real nginx log (grok's text raw: its quotes'
/// escapes and `-` are normalised before comparing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scanner_and_grok_agree_on_a_real_nginx_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let np = free_port();
    let _nginx = nginx(&d, np);
    crate::util::accepting(np).await;
    tokio::task::spawn_blocking(move || send(np, 120))
        .await
        .unwrap();
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    until("nginx's access log", 20, || {
        lines(&d.join("nginx-access.log")) == 120
    })
    .await;
    let text = std::fs::read_to_string(d.join("nginx-access.log")).unwrap();
    let scanner = sluice_parse::Parse::new(r#"{"format":"nginx_combined"}"#).unwrap();
    let grok =
        sluice_parse::Parse::new(r#"{"format":"grok","pattern":"%{COMBINEDAPACHELOG}"}"#).unwrap();
    let unquote = |v: &str| -> Option<String> {
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        // nginx writes `"`, `\` and control bytes as `\xHH`.
        let mut out = String::new();
        let mut rest = v;
        while let Some(i) = rest.find("\\x") {
            out.push_str(&rest[..i]);
            match rest
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b as char);
                    rest = &rest[i + 4..];
                }
                None => {
                    out.push_str("\\x");
                    rest = &rest[i + 2..];
                }
            }
        }
        out.push_str(rest);
        let v = out;
        (v != "-").then_some(v)
    };
    for line in text.lines() {
        let a: std::collections::BTreeMap<String, serde_json::Value> = scanner
            .fields(line)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_value()))
            .collect();
        let mut g: std::collections::BTreeMap<String, serde_json::Value> = grok
            .fields(line)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_value()))
            .collect();
        for k in ["referer", "agent"] {
            match g.get(k).and_then(|v| v.as_str()).and_then(unquote) {
                Some(v) => g.insert(k.into(), v.into()),
                None => g.remove(k),
            };
        }
        for k in [
            "client", "method", "path", "status", "size", "referer", "agent",
        ] {
            assert_eq!(a.get(k), g.get(k), "{k} of {line}");
        }
        let ta = chrono::DateTime::parse_from_rfc3339(a["timestamp"].as_str().unwrap()).unwrap();
        let tg = chrono::DateTime::parse_from_str(
            g["timestamp"].as_str().unwrap(),
            "%d/%b/%Y:%H:%M:%S %z",
        );
        assert_eq!(Some(ta), tg.ok(), "{line}");
    }
}

const LOGFMTER: &str = r#"
import logging, sys
from logfmter import Logfmter

handler = logging.FileHandler(sys.argv[1])
handler.setFormatter(Logfmter(keys=["at", "when"], mapping={"at": "levelname", "when": "asctime"}))
log = logging.getLogger("shop")
log.addHandler(handler)
log.setLevel(logging.DEBUG)
for i in range(50):
    log.info("order paid", extra={"order": i, "user": "bob smith", "note": 'said "hi" = ok', "ratio": 0.5})
    log.warning("line\nbreak", extra={"path": "/a b/c", "empty": ""})
"#;

/// logfmt as Python's `logfmter` (PyPI) writes it (quotes, escapes,
/// spaces, `=` in values, newlines, empty values), and CSV with quotes and an embedded
/// newline, through the component.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_from_python_logfmter_and_csv_with_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("app.py"), LOGFMTER).unwrap();
    let dd = d.clone();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(crate::otel::python())
            .arg(dd.join("app.py"))
            .arg(dd.join("slog.log"))
            .status()
            .expect("the tools' python runs")
    })
    .await
    .unwrap();
    assert!(status.success());
    let toml = parse_pipeline("slog.log", "logfmt", "slog.out")
        .replace("on_error = \"dead_letter\"", "on_error = \"dead_letter\"\ntarget = \"slog\"\ntypes = { order = \"int\", ratio = \"float\" }");
    crate::util::run(&d, &toml).await.unwrap();
    let events = whole_json_lines(&d.join("slog.out"));
    assert_eq!(events.len(), 100, "{events:#?}");
    for (i, pair) in events.chunks(2).enumerate() {
        let info = &pair[0]["slog"];
        assert_eq!(info["at"], "INFO");
        assert_eq!(info["msg"], "order paid");
        assert_eq!(info["order"], i);
        assert_eq!(info["user"], "bob smith");
        assert_eq!(info["note"], "said \"hi\" = ok");
        assert_eq!(info["ratio"], 0.5);
        assert!(info["when"].as_str().unwrap().starts_with("20"));
        let warn = &pair[1]["slog"];
        assert_eq!(warn["msg"], "line\nbreak");
        assert_eq!(warn["path"], "/a b/c");
        assert_eq!(warn["empty"], "");
    }
    // CSV: quotes, a delimiter and a newline inside a value.
    let mut p = load(
        PARSE,
        r#"{"format":"csv","columns":["id","who","text"],"target":"row"}"#,
    );
    let v = process(
        &mut p,
        &[r#"{"message":"7,\"Smith, Bob\",\"he said \"\"hi\"\"\nthen left\""}"#],
    );
    let out: serde_json::Value = serde_json::from_str(&replacements(&v)[0]).unwrap();
    assert_eq!(out["row"]["who"], "Smith, Bob");
    assert_eq!(out["row"]["text"], "he said \"hi\"\nthen left");
}

/// `format = "syslog"` on the files a real rsyslog writes: `logger` sends
/// it 50 messages, and it writes each in RFC 5424 (with `<PRI>`), its
/// traditional file format (`Dec  6 07:30:00 host tag[pid]: msg`, no
/// `<PRI>`) and its high-precision file format (an RFC 3339 time); the
/// three files parse into the `syslog` source's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_files_written_by_a_real_rsyslog() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let port = free_port();
    let w = d.join("rsyslog");
    std::fs::create_dir_all(&w).unwrap();
    let conf = format!(
        r#"
global(workDirectory="{w}")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="files")
ruleset(name="files") {{
  action(type="omfile" file="{d}/proto.log" template="RSYSLOG_SyslogProtocol23Format")
  action(type="omfile" file="{d}/traditional.log" template="RSYSLOG_TraditionalFileFormat")
  action(type="omfile" file="{d}/precise.log" template="RSYSLOG_FileFormat")
}}
"#,
        w = w.display(),
        d = d.display()
    );
    std::fs::write(w.join("rsyslog.conf"), conf).unwrap();
    let mut rsyslog = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(w.join("rsyslog.conf"))
        .arg("-i")
        .arg(w.join("pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd (Debian's rsyslog) is installed");
    crate::util::accepting(port).await;
    let before = chrono::Utc::now();
    let lines: String = (0..N).map(|i| format!("order {i} paid\n")).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("logger")
            .args(["-n", "127.0.0.1", "-P", &port.to_string(), "-T"])
            .args(["--octet-count", "-t", "shop", "-p", "local4.warning"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("util-linux logger is installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    })
    .await
    .unwrap();
    let files = ["proto", "traditional", "precise"];
    until("rsyslog's three files", 30, || {
        files.iter().all(|f| {
            std::fs::read_to_string(d.join(format!("{f}.log")))
                .is_ok_and(|t| t.lines().count() == N)
        })
    })
    .await;
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
    for f in files {
        let toml = parse_pipeline(&format!("{f}.log"), "syslog", &format!("{f}.out"))
            .replace("path = \"dead.log\"", &format!("path = \"{f}.dead\""));
        crate::util::run(&d, &toml).await.unwrap();
        let events = whole_json_lines(&d.join(format!("{f}.out")));
        assert_eq!(events.len(), N, "{f}: {events:#?}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["message"], format!("order {i} paid"), "{f}: {e}");
            assert_eq!(e["service"], "shop", "{f}: {e}");
            assert!(
                e["host"].as_str().is_some_and(|h| !h.is_empty()),
                "{f}: {e}"
            );
            // The message's own time: the second it was sent (the
            // traditional format has no zone and is read as UTC, so
            // only its minute and second are compared).
            let t: chrono::DateTime<chrono::Utc> =
                e["timestamp"].as_str().unwrap().parse().unwrap();
            if f == "traditional" {
                let local = chrono::Local::now().offset().local_minus_utc();
                let t = t - chrono::Duration::seconds(i64::from(local));
                assert!((t - before).num_seconds().abs() < 60, "{f}: {e}");
            } else {
                assert!((t - before).num_seconds().abs() < 60, "{f}: {e}");
            }
            if f == "proto" {
                assert_eq!(e["level"], "warn", "{e}");
                assert_eq!(e["syslog"]["facility"], "local4", "{e}");
                assert_eq!(e["syslog"]["severity"], "warning", "{e}");
                assert_eq!(e["syslog"]["version"], 1, "{e}");
            } else {
                assert!(e.get("level").is_none(), "{f}: no <PRI>, no level: {e}");
            }
        }
        assert!(std::fs::read_to_string(d.join(format!("{f}.dead"))).map_or(true, |t| t.is_empty()));
    }
}

/// `sluice plugin test` with `parse`: the verdicts of a syslog line and a
/// line that is not one, compared with `--expect` (and a wrong
/// expectation fails).
#[test]
fn plugin_test_runs_parse_with_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("events.jsonl"),
        "{\"message\":\"<165>1 2026-12-06T03:10:01.5Z web-1 shop - - - paid\"}\n{\"message\":\"nope\"}\n",
    )
    .unwrap();
    let expected = concat!(
        r#"{"verdict":"replace","event":{"timestamp":"2026-12-06T03:10:01.500Z","level":"info","message":"paid","host":"web-1","service":"shop","syslog":{"facility":"local4","severity":"notice","version":1}}}"#,
        "\n",
        r#"{"verdict":"keep","output":"bad","event":{"message":"nope"}}"#,
        "\n"
    );
    std::fs::write(d.join("expected.jsonl"), expected).unwrap();
    std::fs::write(d.join("wrong.jsonl"), expected.replace("web-1", "web-2")).unwrap();
    let test = |expect: &str| {
        Command::new(crate::util::sluice_bin())
            .args(["plugin", "test", PARSE, "--config"])
            .arg(r#"{"format":"syslog","on_error":"route:bad"}"#)
            .arg("--expect")
            .arg(d.join(expect))
            .stdin(std::fs::File::open(d.join("events.jsonl")).unwrap())
            .output()
            .unwrap()
    };
    let ok = test("expected.jsonl");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let wrong = test("wrong.jsonl");
    assert!(!wrong.status.success(), "a difference fails");
}
