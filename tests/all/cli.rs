//! The `sluice` binary itself: validate, run, signals.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{read_json_lines, root, sluice};

#[test]
fn validate_accepts_the_quickstart() {
    let out = sluice()
        .arg("validate")
        .arg(root().join("pipelines/quickstart.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok (1 sources, 3 transforms, 2 sinks)"),
        "{stdout}"
    );
}

#[test]
fn validate_reports_file_line_and_key() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("bad.toml");
    std::fs::write(&path, "[sources.app]\ntype = \"generate\"\ncolour = 1\n").unwrap();
    let out = sluice().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3:1: sources.app.colour: unknown field `colour`"),
        "{stderr}"
    );
}

#[test]
fn run_reads_stdin_and_writes_stdout() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[sources.in]\ntype = \"stdin\"\n\n[transforms.m]\nplugin = \"mask\"\ninputs = [\"in\"]\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"m\"]\n",
    )
    .unwrap();
    let mut child = sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"mail from bob@example.com\n{\"timestamp\":\"t\",\"ip\":\"10.1.2.3\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["message"], "mail from [email]");
    assert_eq!(lines[1], serde_json::json!({"timestamp":"t","ip":"[ipv4]"}));
}

#[test]
fn sigterm_drains_in_flight_events_and_prints_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let input = d.path().join("in.log");
    let lines: String = (0..2000).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[batch]\nmax_wait = \"5s\"\n\n[sources.in]\ntype = \"file\"\npath = \"in.log\"\nfollow = true\n\n\
         [transforms.keep]\nplugin = \"filter\"\ninputs = [\"in\"]\nconfig = { min_level = \"info\" }\n\n\
         [sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"keep\"]\n",
    )
    .unwrap();
    let child = sluice()
        .arg("run")
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // max_wait is 5 s, so after one second the events are still batched in
    // the source: only a drain on SIGTERM writes them.
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(read_json_lines(&d.path().join("out.log")).len(), 2000);
    assert!(
        stderr.contains("2000 events in"),
        "summary missing: {stderr}"
    );
}

#[test]
fn logs_to_a_file_are_plain_text_and_the_summary_is_in_pipeline_order() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[reload]\nwatch = false\n\n[sources.zeta]\ntype = \"generate\"\ncount = 20\n\n[sources.alpha]\ntype = \"generate\"\ncount = 20\n\n[transforms.tail]\nplugin = \"filter\"\ninputs = [\"zeta\", \"alpha\"]\nconfig = { min_level = \"debug\" }\n\n[transforms.head]\nplugin = \"filter\"\ninputs = [\"tail\"]\nconfig = { min_level = \"debug\" }\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"head\"]\n",
    )
    .unwrap();
    let out = sluice()
        .arg("run")
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pipeline running"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no ANSI codes off a terminal: {stderr:?}"
    );
    let rows: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("kind"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(
        rows,
        ["zeta", "alpha", "_dead_letters", "tail", "head", "out"],
        "{stderr}"
    );
}

#[test]
fn an_admin_port_in_use_is_a_clear_error_and_a_clean_exit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        format!("[admin]\naddress = \"{address}\"\n\n[sources.gen]\ntype = \"generate\"\nrate = 100.0\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"gen\"]\n"),
    )
    .unwrap();
    let out = sluice().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn shutdown_gives_up_after_shutdown_timeout_when_a_sink_never_writes() {
    let port = crate::util::free_port();
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    // Nothing listens on the Redis port and there is no fallback: the
    // sink retries for ever, and a drain could never end.
    std::fs::write(
        &path,
        format!("shutdown_timeout = \"1s\"\n\n[reload]\nwatch = false\n\n[sources.gen]\ntype = \"generate\"\nrate = 200.0\n\n[sinks.q]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/\"\nstream = \"s\"\ninputs = [\"gen\"]\n"),
    )
    .unwrap();
    let mut child = sluice()
        .arg("run")
        .arg(&path)
        .env("RUST_LOG", "error")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not exit after shutdown_timeout");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shutdown_timeout passed"), "{stderr}");
}

#[test]
fn stdin_cuts_lines_longer_than_max_line() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[reload]\nwatch = false\n\n[sources.in]\ntype = \"stdin\"\nformat = \"text\"\nmax_line = \"1KiB\"\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"in\"]\n",
    )
    .unwrap();
    let mut child = sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"short\n").unwrap();
        // One line of 5 MB, written in pieces: never held whole.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..80 {
            stdin.write_all(&chunk).unwrap();
        }
        stdin.write_all(b"\nafter\n").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let events = read_json_lines(&d.path().join("out.log"));
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages.len(),
        3,
        "{:?}",
        messages.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    assert_eq!(messages[0], "short");
    assert_eq!(messages[1].len(), 1024);
    assert_eq!(messages[2], "after");
}

#[test]
fn validate_names_an_unset_admin_token_variable_at_its_line() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[admin]\naddress = \"127.0.0.1:0\"\nauth_token_env = \"SLUICE_TEST_NEVER_SET_TOKEN\"\n\n[sources.a]\ntype = \"stdin\"\n[sinks.o]\ntype = \"stdout\"\ninputs = [\"a\"]\n",
    )
    .unwrap();
    let out = sluice().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.toml:3:1: admin.auth_token_env:")
            && stderr.contains("`SLUICE_TEST_NEVER_SET_TOKEN`, which is not set"),
        "{stderr}"
    );
}

/// #43: `plugin test --expect FILE --update` writes the expected file, a
/// second run matches it, and a failing event is reported at its input
/// line with the reason first (not as `event 0` of the call that found
/// it).
#[test]
fn plugin_test_update_writes_the_expected_verdicts_by_input_line() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"i\":0}\n{\"i\":1,\"chaos\":\"panic\"}\n{\"i\":2}\n",
    )
    .unwrap();
    let expected = d.path().join("expected.jsonl");
    let test = |update: bool| {
        let mut cmd = sluice();
        cmd.args(["plugin", "test"])
            .arg(crate::CHAOS)
            .arg("--expect")
            .arg(&expected)
            .stdin(std::fs::File::open(&events).unwrap());
        if update {
            cmd.arg("--update");
        }
        cmd.output().unwrap()
    };
    let out = test(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("updated"), "{stderr}");
    let lines = read_json_lines(&expected);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["verdict"], "keep");
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.starts_with("line 2: trap: panicked: chaos: asked to panic (at "),
        "{error}"
    );
    let out = test(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("match"), "{stderr}");
    let out = test(true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
}
