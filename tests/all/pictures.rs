//! The pictures, opened in headless Chromium (Debian's, driven by
//! playwright-core through `tests/browser/inspect.mjs`): the HTML timeline's
//! waterfall shows a fixture's known latencies without any network request,
//! and the live admin page's counts rise and agree with `/metrics`.
//! Screenshots land in `target/pictures/`; `SLUICE_UPDATE_SCREENSHOTS=1`
//! copies them to `docs/images/`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{free_port, raw_http, root, sluice, until};

/// Run `steps` on `url` in headless Chromium; the inspector's JSON.
fn inspect(url: &str, screenshot: &str, steps: Value) -> Value {
    let tools = sluice::cli::plugin::build::tools_dir()
        .expect("a home folder for the tools")
        .join("browser/node_modules");
    assert!(
        tools.join("playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "chromium and playwright-core are missing: run scripts/setup-test-deps"
    );
    let dir = root().join("target/pictures");
    std::fs::create_dir_all(&dir).unwrap();
    let steps_file = dir.join(format!("{screenshot}.steps.json"));
    std::fs::write(&steps_file, steps.to_string()).unwrap();
    let shot = dir.join(format!("{screenshot}.png"));
    let out = Command::new("node")
        .arg(root().join("tests/browser/inspect.mjs"))
        .arg(url)
        .arg(&shot)
        .arg(&steps_file)
        .env("SLUICE_BROWSER_TOOLS", &tools)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("SLUICE_UPDATE_SCREENSHOTS").is_some() {
        let docs = root().join("docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&shot, docs.join(format!("{screenshot}.png"))).unwrap();
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["errors"],
        serde_json::json!([]),
        "errors in the page: {v}"
    );
    v
}

/// Three services a request crosses, with latencies known by construction:
/// request i reaches orders 10 + i % 7 ms after web, payments
/// 30 + i % 13 - i % 7 ms after orders; every 50th (from 7) never reaches
/// payments.
fn fixture(dir: &Path) -> (Vec<i64>, Vec<i64>) {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let at = |ms: i64| {
        (chrono::DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z").unwrap()
            + chrono::Duration::milliseconds(ms))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let (mut g, mut o, mut p) = (String::new(), String::new(), String::new());
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for i in 0..200i64 {
        let t = i * 100;
        let line = |ms: i64, svc: &str, level: &str, msg: &str| {
            format!("{{\"timestamp\":\"{}\",\"service\":\"{svc}\",\"level\":\"{level}\",\"message\":\"{msg}\",\"request_id\":\"r{i}\"}}\n", at(ms))
        };
        g.push_str(&line(t, "web", "info", &format!("GET /orders/{i}")));
        o.push_str(&line(t + 10 + i % 7, "orders", "info", "order created"));
        first.push((10 + i % 7) * 1000);
        if i % 50 != 7 {
            let level = if i % 31 == 0 { "error" } else { "info" };
            p.push_str(&line(t + 40 + i % 13, "payments", level, "charged"));
            second.push((30 + i % 13 - i % 7) * 1000);
        }
    }
    std::fs::write(logs.join("web.log"), g).unwrap();
    std::fs::write(logs.join("orders.log"), o).unwrap();
    std::fs::write(logs.join("payments.log"), p).unwrap();
    (first, second)
}

/// `sluice timeline --all --format html -o REPORT INPUT`: the report's text.
fn html_timeline(input: &Path, report: &Path) -> String {
    let out = sluice()
        .args(["timeline", "--all", "--format", "html", "-o"])
        .arg(report)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(report).unwrap()
}

#[test]
fn the_html_timeline_shows_known_latencies_and_asks_nothing_of_the_network() {
    let d = tempfile::tempdir().unwrap();
    let (mut first, mut second) = fixture(d.path());
    let report = d.path().join("report.html");
    let html = html_timeline(&d.path().join("logs"), &report);
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "nothing is loaded from elsewhere"
    );
    let facts = inspect(
        &format!("file://{}", report.display()),
        "timeline",
        serde_json::json!([
            {"fill": "#request-search", "value": "r3"}, {"click": "#request-go"},
            {"eval": "document.getElementById('waterfall-view').dataset.request", "as": "shown"},
            {"eval": "[...document.querySelectorAll('#waterfall-view .hop')].map(h => [h.dataset.from, h.dataset.to, +h.dataset.latencyUs, h.querySelector('.label').textContent])", "as": "hops"},
            {"eval": "document.querySelectorAll('.mark').length", "as": "marks"},
            {"eval": "[...document.querySelectorAll('.hop-hist')].map(h => [h.dataset.from, h.dataset.to, +h.dataset.p50, +h.dataset.p95, +h.dataset.p99])", "as": "hists"},
            {"eval": "[...document.querySelectorAll('#lanes-svg .lane-name')].map(t => t.textContent)", "as": "lanes"},
            {"eval": "[...document.querySelectorAll('.hop-hist')].map(h => { const b = [...h.querySelectorAll('svg text')].filter(t => /^p(50|95|99) /.test(t.textContent)).map(t => t.getBBox()); let n = 0; for (let i = 0; i < b.length; i++) for (let j = i + 1; j < b.length; j++) { const p = b[i], q = b[j]; if (p.x < q.x + q.width && q.x < p.x + p.width && p.y < q.y + q.height && q.y < p.y + p.height) n++; } return [b.length, n]; })", "as": "label_overlaps"},
            {"eval": "[...document.querySelectorAll('#lost tbody tr')].map(t => [t.dataset.id, t.querySelector('.stopped').textContent, t.querySelector('.last').textContent])", "as": "lost"},
            {"eval": "document.querySelector('#slowest button').dataset.id", "as": "slowest"},
            {"fill": "#request-search", "value": "nope"}, {"click": "#request-go"},
            {"eval": "document.getElementById('search-result').textContent", "as": "missing"},
            {"fill": "#request-search", "value": "r103"}, {"click": "#request-go"},
        ]),
    );
    assert_eq!(
        facts["requests"],
        serde_json::json!([]),
        "the page made requests"
    );
    let r = &facts["results"];
    assert_eq!(r["shown"], "r3");
    assert_eq!(
        r["hops"],
        serde_json::json!([
            ["web", "orders", 13000, "web → orders: 13.000 ms"],
            ["orders", "payments", 30000, "orders → payments: 30.000 ms"]
        ])
    );
    assert_eq!(r["marks"], 596);
    // The lanes in the requests' order (web, then orders, then payments),
    // not the alphabet's.
    assert_eq!(r["lanes"], serde_json::json!(["web", "orders", "payments"]));
    // p95 and p99 of the first hop are both 16 ms: three labels per
    // histogram, none over another.
    assert_eq!(r["label_overlaps"], serde_json::json!([[3, 0], [3, 0]]));
    first.sort();
    second.sort();
    let pct = |v: &[i64], p: f64| sluice::timeline::percentile(v, p);
    assert_eq!(
        r["hists"],
        serde_json::json!([
            [
                "web",
                "orders",
                sluice::timeline::median(&first),
                pct(&first, 95.0),
                pct(&first, 99.0)
            ],
            [
                "orders",
                "payments",
                sluice::timeline::median(&second),
                pct(&second, 95.0),
                pct(&second, 99.0)
            ]
        ])
    );
    assert_eq!(
        r["lost"],
        serde_json::json!([
            ["r7", "orders", "order created"],
            ["r57", "orders", "order created"],
            ["r107", "orders", "order created"],
            ["r157", "orders", "order created"]
        ])
    );
    // The slowest first: 6 + 12 ms above the base of 40 ms (i % 7 = 6, i % 13 = 12).
    assert_eq!(r["slowest"], "r103");
    assert!(
        r["missing"].as_str().unwrap().contains("no waterfall"),
        "{r}"
    );
}

#[test]
fn a_large_html_timeline_draws_a_bounded_sample_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::with_capacity(300 * 100_000);
    for i in 0..300_000u64 {
        let level = if i % 997 == 0 { "error" } else { "info" };
        text.push_str(&format!(
            "{{\"ts\":{},\"service\":\"api\",\"level\":\"{level}\",\"message\":\"event {i}\",\"request_id\":\"q{}\"}}\n",
            1_795_428_000_000u64 + i,
            i / 3
        ));
    }
    std::fs::write(d.path().join("api.log"), text).unwrap();
    let html = html_timeline(&d.path().join("api.log"), &d.path().join("big.html"));
    assert!(html.len() < 8 << 20, "{} bytes", html.len());
    assert!(
        html.contains("of 300000 events drawn: every"),
        "the page says it sampled"
    );
}

/// #36: one message holding `<!--<script>` left the report blank (the
/// HTML parser never saw the data's script end). Chromium draws every mark.
#[test]
fn a_message_with_script_markup_does_not_blank_the_html_timeline() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..20u64 {
        let message = if i == 3 {
            "<!--<script>alert(1)</script>-->".to_string()
        } else {
            format!("event {i}")
        };
        text.push_str(&format!(
            "{}\n",
            serde_json::json!({"ts": 1_795_428_000_000u64 + i, "service": "api", "level": "info",
                               "message": message, "request_id": format!("q{i}")})
        ));
    }
    std::fs::write(d.path().join("api.log"), text).unwrap();
    let report = d.path().join("markup.html");
    html_timeline(&d.path().join("api.log"), &report);
    let facts = inspect(
        &format!("file://{}", report.display()),
        "timeline-markup",
        serde_json::json!([
            {"eval": "document.querySelectorAll('.mark').length", "as": "marks"},
        ]),
    );
    assert_eq!(facts["results"]["marks"], 20, "{facts}");
}

/// `sluice run` on `toml` with the admin token in its environment.
fn spawn_with_token(dir: &Path, toml: &str, token: &str) -> std::process::Child {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .env("SLUICE_TEST_ADMIN_TOKEN", token)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap()
}

/// A sample's value in Prometheus text.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_draws_the_pipeline_and_its_counts_rise_with_metrics() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = "t0k3n-for-the-page";
    let toml = format!(
        r#"
[admin]
address = "127.0.0.1:{port}"
auth_token_env = "SLUICE_TEST_ADMIN_TOKEN"

[reload]
watch = false

[sources.app]
type = "generate"
rate = 3000
seed = 7

[transforms.keep]
plugin = "filter"
inputs = ["app"]
config = {{ min_level = "info" }}

[transforms.mask]
plugin = "mask"
inputs = ["keep"]
config = {{ skip_fields = ["timestamp", "request_id"] }}

[transforms.router]
plugin = "route"
inputs = ["mask"]
config = {{ field = "level", routes = {{ errors = ["error", "fatal"] }} }}

[sinks.alerts]
type = "file"
path = "errors.log"
inputs = ["router.errors"]

[sinks.archive]
type = "file"
path = "all.log"
inputs = ["router", "router.errors"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#
    );
    let mut child = spawn_with_token(d.path(), &toml, token);
    until("the admin port", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    // Without the token: refused, page and data alike; /health stays open.
    for path in ["/ui", "/ui/stats", "/ui/graph", "/metrics"] {
        let reply = raw_http(
            port,
            &format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"),
        );
        assert!(reply.starts_with("HTTP/1.1 401"), "{path}: {reply}");
    }
    let health = raw_http(
        port,
        "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let url = format!("http://127.0.0.1:{port}/ui?token={token}");
    let read = "[...document.querySelectorAll('.node')].map(g => [g.dataset.node, g.dataset.kind, +g.dataset.eventsOut, +g.dataset.rateOut, g.dataset.health])";
    let facts = tokio::task::spawn_blocking(move || {
        inspect(
            &url,
            "live",
            serde_json::json!([
                {"waitFor": "+(document.body.dataset.updates || 0) >= 2"},
                {"eval": read, "as": "first"},
                {"wait": 2500},
                {"eval": read, "as": "second"},
                {"click": "[data-node=app]"},
                {"eval": "document.getElementById('panel-title').textContent", "as": "refused"},
                {"click": "[data-node=archive]"},
                {"waitFor": "document.getElementById('events').textContent.split('\\n').filter(Boolean).length >= 5"},
                {"eval": "document.getElementById('events').textContent", "as": "tapped"},
                {"eval": "[...document.querySelectorAll('.edge')].length", "as": "edges"},
                // A shadow run from the page: a stricter filter beside
                // `keep`, compared live, then promoted.
                {"click": "#shadow-form summary"},
                {"eval": "document.getElementById('sh-transform').value = 'keep'"},
                {"fill": "#sh-plugin", "value": "filter"},
                {"fill": "#sh-config", "value": "{\"min_level\":\"error\"}"},
                {"click": "#sh-start"},
                {"waitFor": "[...document.querySelectorAll('#shadows td')].some(td => td.textContent === 'running') && +document.querySelectorAll('#shadows tr')[1].children[5].textContent.replace(/[^0-9]/g, '') > 0"},
                {"eval": "[...document.querySelectorAll('#shadows tr')].map(tr => [...tr.children].map(c => c.textContent))", "as": "shadows"},
                {"click": "#sh-promote"},
                {"waitFor": "document.getElementById('sh-said').textContent.includes('promoted')"},
                {"eval": "document.getElementById('sh-said').textContent", "as": "promoted"},
            ]),
        )
    })
    .await
    .unwrap();
    let metrics = raw_http(
        port,
        &format!("GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"),
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let r = &facts["results"];
    let node = |when: &str, name: &str| -> Vec<Value> {
        r[when]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n[0] == name)
            .unwrap_or_else(|| panic!("no node {name}: {r}"))
            .as_array()
            .unwrap()
            .clone()
    };
    let kinds: Vec<(String, String)> = r["second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n[0].as_str().unwrap().into(), n[1].as_str().unwrap().into()))
        .collect();
    for (name, kind) in [
        ("app", "source"),
        ("router", "transform"),
        ("archive", "sink"),
        ("_dead_letters", "dead_letters"),
    ] {
        assert!(kinds.contains(&(name.into(), kind.into())), "{kinds:?}");
    }
    // Counts rise, rates are shown, and they are the counters /metrics has
    // (read after the page, so at least as high).
    let (a, b) = (node("first", "archive"), node("second", "archive"));
    assert!(
        b[2].as_f64().unwrap() > a[2].as_f64().unwrap(),
        "{a:?} -> {b:?}"
    );
    assert!(b[3].as_f64().unwrap() > 500.0, "a rate near 3000/s: {b:?}");
    assert_eq!(b[4], "ok");
    let in_metrics = sample(&metrics, "sluice_events_out_total{component=\"archive\"");
    let shown = b[2].as_f64().unwrap();
    assert!(
        shown <= in_metrics && shown > in_metrics - 3000.0 * 3.0,
        "page {shown}, /metrics {in_metrics}"
    );
    let app_out = node("second", "app")[2].as_f64().unwrap();
    assert!(
        app_out >= shown,
        "the source has sent at least what the sink wrote"
    );
    // The source is before the mask: its events are not shown; the archive's are, masked.
    assert!(
        r["refused"]
            .as_str()
            .unwrap()
            .contains("upstream of a mask"),
        "{r}"
    );
    let tapped = r["tapped"].as_str().unwrap();
    assert!(tapped.lines().count() >= 5, "{tapped}");
    assert!(
        tapped.contains("[ipv4]") || tapped.contains("[email]"),
        "masked: {tapped}"
    );
    assert!(r["edges"].as_u64().unwrap() >= 5);
    // The shadow's row: `keep`, running, kept_vs_dropped counted (info and
    // warn events the live filter keeps and the shadow drops).
    let rows = r["shadows"].as_array().unwrap();
    assert_eq!(rows[0][5], "kept_vs_dropped", "{rows:?}");
    assert_eq!(rows[1][0], "keep", "{rows:?}");
    assert!(
        r["promoted"].as_str().unwrap().contains("ended (promoted)"),
        "{r}"
    );
    assert!(
        metrics
            .contains("sluice_shadow_events_total{transform=\"keep\",outcome=\"kept_vs_dropped\"}"),
        "{metrics}"
    );
    // Everything it fetched came from the admin port, with the token.
    for req in facts["requests"].as_array().unwrap() {
        assert!(
            req.as_str()
                .unwrap()
                .starts_with(&format!("http://127.0.0.1:{port}/ui/")),
            "{req}"
        );
    }
}
