//! Running sluice as a service: `${VAR}` and `${file:...}` in pipeline
//! files, secrets kept out of every output, pipelines in a folder.

use std::path::Path;
use std::time::Duration;

use sluice::config::PipelineConfig;

use crate::util::{free_port, raw_http as http, sluice};

fn parse_env(text: &str, vars: &[(&str, &str)]) -> Result<PipelineConfig, String> {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("pipeline.toml");
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PipelineConfig::parse_with_env(&path, text, &|name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
    .map_err(|e| e.to_string())
}

const SINK: &str = "\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"gen\"]\n";

#[test]
fn variables_set_unset_defaulted_and_required() {
    let text = "[sources.gen]\ntype = \"generate\"\ncount = 3\nseed = 1\n\n[sinks.out]\ntype = \"file\"\npath = \"${LOG_DIR:-logs}/${APP}-$${literal}.log\"\ninputs = [\"gen\"]\n".to_string();
    let c = parse_env(&text, &[("APP", "billing")]).unwrap();
    let debug = format!("{:?}", c.sinks[0].config);
    assert!(debug.contains("logs/billing-${literal}.log"), "{debug}");
    let c = parse_env(&text, &[("APP", "billing"), ("LOG_DIR", "/var/log/x")]).unwrap();
    assert!(format!("{:?}", c.sinks[0].config).contains("/var/log/x/billing-"));

    // Unset without a default: the file, line, key and variable.
    let e = parse_env(&text, &[]).unwrap_err();
    assert!(e.contains("pipeline.toml:8:"), "{e}");
    assert!(e.contains("sinks.out.path"), "{e}");
    assert!(e.contains("the variable `APP` is not set"), "{e}");

    // Required with a message.
    let text = format!("[sources.gen]\ntype = \"generate\"\ncount = 3\nseed = \"${{SEED:?set SEED to the run's seed}}\"\n{SINK}");
    let e = parse_env(&text, &[]).unwrap_err();
    assert!(
        e.contains("sources.gen.seed: the variable `SEED` is not set: set SEED to the run's seed"),
        "{e}"
    );
}

#[test]
fn a_folder_is_one_pipeline_and_a_name_defined_twice_names_both_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("10-sources.toml"),
        "[sources.gen]\ntype = \"generate\"\ncount = 5\nseed = 2\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("20-transforms.toml"),
        "shutdown_timeout = \"5s\"\n\n[transforms.keep]\nplugin = \"filter\"\ninputs = [\"gen\"]\nconfig = { min_level = \"info\" }\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("30-sinks.toml"),
        "[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"keep\"]\n",
    )
    .unwrap();
    std::fs::write(d.path().join("notes.txt"), "not a pipeline file").unwrap();
    let c = PipelineConfig::load(d.path()).unwrap();
    assert_eq!(
        (c.sources.len(), c.transforms.len(), c.sinks.len()),
        (1, 1, 1)
    );
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    // Relative paths are relative to the folder.
    assert_eq!(c.resolve(Path::new("out.log")), d.path().join("out.log"));

    // The binary runs it.
    let out = sluice()
        .args(["run", "--quiet"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(d.path().join("out.log")).unwrap();
    assert!(written.lines().count() >= 1);

    // An error points into the file it is in.
    std::fs::write(
        d.path().join("30-sinks.toml"),
        "[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"kep\"]\n",
    )
    .unwrap();
    let out = sluice().arg("validate").arg(d.path()).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("30-sinks.toml:4:"), "{e}");
    assert!(e.contains("unknown input `kep`"), "{e}");

    // The same name in two files: both places.
    std::fs::write(
        d.path().join("30-sinks.toml"),
        "[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"keep\"]\n\n[sources.gen]\ntype = \"stdin\"\n",
    )
    .unwrap();
    let e = format!("{:#}", PipelineConfig::load(d.path()).unwrap_err());
    assert!(e.contains("30-sinks.toml:6:"), "{e}");
    assert!(
        e.contains("`sources.gen` is defined twice: first in"),
        "{e}"
    );
    assert!(e.contains("10-sources.toml:1:"), "{e}");

    // A top-level setting in two files.
    std::fs::write(
        d.path().join("30-sinks.toml"),
        "shutdown_timeout = \"9s\"\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"keep\"]\n",
    )
    .unwrap();
    let e = format!("{:#}", PipelineConfig::load(d.path()).unwrap_err());
    assert!(
        e.contains(
            "30-sinks.toml:1:1: shutdown_timeout: `shutdown_timeout` is defined twice: first in"
        ),
        "{e}"
    );
    assert!(e.contains("20-transforms.toml:1:1"), "{e}");

    // A syntax error is reported in its own file.
    std::fs::write(d.path().join("30-sinks.toml"), "[sinks.out\n").unwrap();
    let e = format!("{:#}", PipelineConfig::load(d.path()).unwrap_err());
    assert!(e.contains("30-sinks.toml:1:"), "{e}");
}

#[test]
fn secrets_never_show_in_logs_answers_taps_or_errors() {
    const FILE_SECRET: &str = "s3cr3t-from-a-file-42";
    const ENV_SECRET: &str = "tok-from-the-env-99";
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("password"), format!("{FILE_SECRET}\n")).unwrap();
    let (admin, ingest) = (free_port(), free_port());
    let toml = format!(
        r#"shutdown_timeout = "2s"

[admin]
address = "127.0.0.1:{admin}"

[sources.in]
type = "http"
address = "127.0.0.1:{ingest}"
ack = "accepted"
auth_token_env = "INGEST_TOKEN"

[sinks.out]
type = "http"
uri = "http://user:${{file:password}}@127.0.0.1:1/logs"
retry_for = "1s"
inputs = ["in"]
"#
    );
    let path = d.path().join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    let child = sluice()
        .args(["run"])
        .arg(&path)
        .env("INGEST_TOKEN", ENV_SECRET)
        .env("RUST_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", admin)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "admin port never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A tap open while an event quoting both secrets goes through.
    let tap = std::thread::spawn(move || {
        http(
            admin,
            "GET /tap?component=in&limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let body = format!(r#"{{"level":"error","message":"leaked {FILE_SECRET} and {ENV_SECRET}"}}"#);
    let answer = http(
        ingest,
        &format!(
            "POST /api/log HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ENV_SECRET}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let tapped = tap.join().unwrap();
    assert!(tapped.contains("leaked *** and ***"), "{tapped}");
    // Let the sink fail and retry a few times (it logs the target).
    std::thread::sleep(Duration::from_millis(2500));
    let stats = http(
        admin,
        "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let metrics = http(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let reload = http(
        admin,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    terminate(child.id() as i32);
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.contains("127.0.0.1:1"),
        "the sink's failures are logged: {logs}"
    );
    for (what, text) in [
        ("logs", &*logs),
        ("tap", &tapped),
        ("stats", &stats),
        ("metrics", &metrics),
        ("reload", &reload),
    ] {
        assert!(
            !text.contains(FILE_SECRET),
            "{what} shows the file secret:\n{text}"
        );
        assert!(
            !text.contains(ENV_SECRET),
            "{what} shows the env secret:\n{text}"
        );
    }

    // A failed validate that would quote the secret.
    std::fs::write(
        &path,
        "[sources.gen]\ntype = \"generate\"\ncount = \"${file:password}\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"gen\"]\n",
    )
    .unwrap();
    let out = sluice().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sources.gen.count"), "{text}");
    assert!(
        !text.contains(FILE_SECRET),
        "validate shows the secret: {text}"
    );
    assert!(text.contains("***"), "{text}");
}

/// SIGTERM, without a libc dependency.
fn terminate(pid: i32) {
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
}

#[test]
fn the_systemd_unit_verifies_and_exposes_little() {
    let unit = std::fs::read_to_string(crate::util::root().join("deploy/sluice.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes") && unit.contains("StateDirectory=sluice"));
    // verify checks that ExecStart's program exists: point it at this build.
    let bin = crate::util::sluice_bin();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sluice.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/sluice", &bin.display().to_string()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/setup-test-deps installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for sluice.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(score < 2.0, "exposure {score}:\n{text}");
}

#[test]
fn systemd_hears_ready_reloading_and_stopping_and_state_goes_to_its_directory() {
    use std::os::unix::net::UnixDatagram;
    let d = tempfile::tempdir().unwrap();
    let socket_path = d.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let state = d.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        d.path().join("in.log"),
        "{\"level\":\"info\",\"message\":\"a\"}\n",
    )
    .unwrap();
    let toml = r#"[reload]
watch = false

[sources.app]
type = "file"
path = "in.log"
follow = true
read_from = "beginning"
checkpoint = "checkpoints.json"

[transforms.keep]
plugin = "filter"
inputs = ["app"]
config = { min_level = "debug" }

[sinks.out]
type = "file"
path = "out.log"
inputs = ["keep"]
"#;
    let pipeline = d.path().join("pipeline.toml");
    std::fs::write(&pipeline, toml).unwrap();
    let mut child = sluice()
        .args(["run", "--quiet"])
        .arg(&pipeline)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("STATE_DIRECTORY", &state)
        .env_remove("SLUICE_CACHE_DIR")
        .spawn()
        .unwrap();
    let mut heard = Vec::new();
    let mut recv = |want: &str| loop {
        let mut buf = [0u8; 4096];
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {want}: {e}; heard {heard:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        heard.push(msg.clone());
        if msg.lines().any(|l| l == want) {
            return msg;
        }
    };
    recv("READY=1");
    terminate_with(child.id(), "-HUP");
    let reloading = recv("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    recv("READY=1");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(d.path().join("out.log")).is_ok_and(|t| t.contains("\"a\"")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the line was never written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    terminate_with(child.id(), "-TERM");
    recv("STOPPING=1");
    assert!(child.wait().unwrap().success());
    // Checkpoints and the compile cache went to the state directory.
    assert!(
        state.join("checkpoints.json").exists(),
        "no checkpoint in {}",
        state.display()
    );
    assert!(!d.path().join("checkpoints.json").exists());
    let cached = std::fs::read_dir(state.join("cache"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                .count()
        })
        .unwrap_or(0);
    assert!(
        cached >= 1,
        "no compiled plugin in {}/cache",
        state.display()
    );
}

fn terminate_with(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_folder_reloads_when_a_file_comes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::write(
        dir.join("10-source.toml"),
        "[reload]\npoll_interval = \"50ms\"\n\n[sources.gen]\ntype = \"generate\"\nrate = 200.0\nseed = 3\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("20-sink.toml"),
        "[sinks.first]\ntype = \"file\"\npath = \"first.log\"\ninputs = [\"gen\"]\n",
    )
    .unwrap();
    let config = PipelineConfig::load(dir).unwrap();
    let plan = sluice::topology::plan(config, crate::util::runtime())
        .await
        .unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    let watcher = tokio::spawn(sluice::topology::reload::watch(
        running.reload_handle(),
        dir.to_path_buf(),
        // Polled, the way for filesystems that report no changes.
        sluice::config::ReloadConfig {
            watch: true,
            poll_interval: Duration::from_millis(50),
            poll: true,
        },
        metrics.clone(),
    ));
    let stop = running.stop_handle();
    let waiter = tokio::spawn(running.wait());
    crate::util::until("the first sink writes", 20, || {
        dir.join("first.log").exists()
    })
    .await;
    // A new file in the folder: a second sink, picked up without a restart.
    std::fs::write(
        dir.join("30-more.toml"),
        "[sinks.second]\ntype = \"file\"\npath = \"second.log\"\ninputs = [\"gen\"]\n",
    )
    .unwrap();
    crate::util::until("the new file's sink writes", 20, || {
        std::fs::read_to_string(dir.join("second.log")).is_ok_and(|t| !t.is_empty())
    })
    .await;
    assert!(
        metrics
            .reloads_ok
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    watcher.abort();
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
