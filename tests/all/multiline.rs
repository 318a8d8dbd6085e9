//! Multi-line records and container logs through the file source: traces
//! written by real runtimes (Python's `logging.exception`, a Java
//! program's `printStackTrace`, a Go panic) into files tailed while they
//! grow; CRI and docker json-file logs written to their specifications;
//! a restart that resumes at a held record, not inside it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{start, until, whole_json_lines};

fn messages(events: &[serde_json::Value], source: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["source"] == source)
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

const PYTHON: &str = r#"
import logging, sys, time
logging.basicConfig(filename=sys.argv[1], level=logging.INFO,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("api")
for i in range(20):
    if i % 4 == 1:
        try:
            try:
                int("x%d" % i)
            except ValueError:
                raise KeyError("k%d" % i)
        except KeyError:
            log.exception("request %d failed", i)
    else:
        log.info("request %d ok", i)
    time.sleep(0.02)
"#;

const JAVA: &str = r#"
public class Main {
    static void fail(int i) {
        try {
            Integer.parseInt("x" + i);
        } catch (NumberFormatException e) {
            throw new IllegalStateException("request " + i + " failed", e);
        }
    }
    public static void main(String[] args) throws Exception {
        for (int i = 0; i < 20; i++) {
            if (i % 4 == 1) {
                try {
                    fail(i);
                } catch (IllegalStateException e) {
                    System.out.println(java.time.Instant.now() + " ERROR request " + i + " failed");
                    e.printStackTrace(System.out);
                }
            } else {
                System.out.println(java.time.Instant.now() + " INFO request " + i + " ok");
            }
            System.out.flush();
            Thread.sleep(20);
        }
    }
}
"#;

const GO: &str = r#"
package main

import (
	"log"
	"time"
)

type worker struct{ n int }

func (w *worker) run(i int) {
	if i == 9 {
		var m map[string]int
		m["boom"] = i
	}
	log.Printf("request %d ok", i)
}

func main() {
	w := &worker{}
	for i := 0; i < 10; i++ {
		w.run(i)
		time.Sleep(20 * time.Millisecond)
	}
}
"#;

fn pipeline(dir: &Path) -> String {
    let src = |name: &str, preset: &str| {
        format!(
            r#"
[sources.{name}]
type = "file"
path = "{}"
follow = true
multiline = {{ preset = "{preset}", timeout = "500ms" }}
"#,
            dir.join(format!("{name}.log")).display()
        )
    };
    format!(
        r#"{}{}{}
[sinks.out]
type = "file"
path = "out.log"
inputs = ["python", "java", "go"]
"#,
        src("python", "python"),
        src("java", "java"),
        src("go", "go")
    )
}

/// Each runtime writes its traces into a file sluice tails while it
/// grows: every record is one event, none merged across records, and the
/// last one (a Go panic at the end of a file that then stays quiet) is let
/// go by the timeout while sluice runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_real_runtimes_are_one_event_each() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in ["python.log", "java.log", "go.log"] {
        std::fs::write(d.join(f), "").unwrap();
    }
    std::fs::write(d.join("app.py"), PYTHON).unwrap();
    std::fs::write(d.join("Main.java"), JAVA).unwrap();
    std::fs::write(d.join("main.go"), GO).unwrap();
    let (running, _m) = start(d, &pipeline(d)).await;
    let dd = d.to_path_buf();
    let writers = tokio::task::spawn_blocking(move || {
        let d = &dd;
        let py = Command::new("python3")
            .arg(d.join("app.py"))
            .arg(d.join("python.log"))
            .status()
            .unwrap();
        assert!(py.success());
        let java_out = std::fs::File::options()
            .append(true)
            .open(d.join("java.log"))
            .unwrap();
        let java = Command::new("java")
            .arg(d.join("Main.java"))
            .stdout(java_out)
            .stderr(Stdio::inherit())
            .status()
            .expect("java (default-jdk-headless) is installed");
        assert!(java.success());
        // `go run` prints the panic and its own `exit status 2`.
        let go_out = std::fs::File::options()
            .append(true)
            .open(d.join("go.log"))
            .unwrap();
        let go = Command::new("go")
            .arg("run")
            .arg(d.join("main.go"))
            .current_dir(d)
            .env("GO111MODULE", "off")
            .stderr(go_out)
            .status()
            .expect("go (golang-go) is installed");
        assert!(!go.success(), "the program panics");
    });
    writers.await.unwrap();
    let out = d.join("out.log");
    until("every record", 60, || {
        let e = whole_json_lines(&out);
        messages(&e, "python").len() >= 20
            && messages(&e, "java").len() >= 20
            && messages(&e, "go").len() >= 10
    })
    .await;
    // Nothing more comes, whatever the wait.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let events = whole_json_lines(&out);
    running.shutdown().await;
    running.wait().await.unwrap();

    let py = messages(&events, "python");
    assert_eq!(py.len(), 20, "{py:#?}");
    for (i, m) in py.iter().enumerate() {
        if i % 4 == 1 {
            assert!(
                m.contains(&format!(
                    "request {i} failed\nTraceback (most recent call last):"
                )),
                "{m}"
            );
            assert!(
                m.contains(&format!(
                    "ValueError: invalid literal for int() with base 10: 'x{i}'"
                )),
                "{m}"
            );
            assert!(m.contains("During handling of the above exception"), "{m}");
            assert!(m.ends_with(&format!("KeyError: 'k{i}'")), "{m}");
        } else {
            assert!(
                m.ends_with(&format!("request {i} ok")) && !m.contains('\n'),
                "{m}"
            );
        }
    }
    let java = messages(&events, "java");
    assert_eq!(java.len(), 20, "{java:#?}");
    for (i, m) in java.iter().enumerate() {
        if i % 4 == 1 {
            assert!(
                m.contains(&format!(
                    "ERROR request {i} failed\njava.lang.IllegalStateException: request {i} failed"
                )),
                "{m}"
            );
            assert!(m.contains("\tat Main.fail(Main.java"), "{m}");
            assert!(
                m.contains("Caused by: java.lang.NumberFormatException"),
                "{m}"
            );
            assert!(m.contains("... "), "{m}");
        } else {
            assert!(
                m.ends_with(&format!("INFO request {i} ok")) && !m.contains('\n'),
                "{m}"
            );
        }
    }
    let go = messages(&events, "go");
    assert_eq!(go.len(), 10, "{go:#?}");
    for (i, m) in go.iter().take(9).enumerate() {
        assert!(m.ends_with(&format!("request {i} ok")), "{m}");
    }
    let panic = &go[9];
    assert!(
        panic.starts_with("panic: assignment to entry in nil map"),
        "{panic}"
    );
    assert!(panic.contains("goroutine 1 [running]:"), "{panic}");
    assert!(panic.contains("main.(*worker).run("), "{panic}");
    assert!(panic.contains("main.main()"), "{panic}");
    assert!(panic.ends_with("exit status 2"), "{panic}");
}

/// A CRI line: `TIME STREAM P|F CONTENT`, cut in parts of at most 16 KiB
/// as containerd does.
fn cri_lines(time: &str, stream: &str, content: &str) -> Vec<String> {
    let b = content.as_bytes();
    let parts: Vec<&[u8]> = if b.is_empty() {
        vec![b]
    } else {
        b.chunks(16 * 1024).collect()
    };
    let n = parts.len();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let tag = if i + 1 == n { "F" } else { "P" };
            format!("{time} {stream} {tag} {}", std::str::from_utf8(p).unwrap())
        })
        .collect()
}

/// A docker json-file line, cut at 16 KiB as dockerd does (only the last
/// part ends in `\n`).
fn docker_lines(time: &str, stream: &str, content: &str) -> Vec<String> {
    let whole = format!("{content}\n");
    let b = whole.as_bytes();
    b.chunks(16 * 1024)
        .map(|p| {
            serde_json::json!({"log": std::str::from_utf8(p).unwrap(), "stream": stream, "time": time})
                .to_string()
        })
        .collect()
}

/// CRI and docker json-file logs with lines longer than 16 KiB cut in
/// parts and stdout and stderr interleaved, at Kubernetes' paths: each
/// line whole once, with its stream, its time and its pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_join_their_parts_and_name_their_pod() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pods = d.join("var/log/pods/shop_api-7d9f_0e1c2d3b-aaaa-bbbb-cccc-123456789abc/api");
    std::fs::create_dir_all(&pods).unwrap();
    let id = "3f".repeat(32);
    let containers = d.join("var/log/containers");
    std::fs::create_dir_all(&containers).unwrap();
    let long = |c: char| c.to_string().repeat(40_000);
    // CRI: a long stdout line whose parts have a stderr line between them.
    let mut cri = Vec::new();
    let out_parts = cri_lines("2026-12-06T03:00:00.100000001Z", "stdout", &long('o'));
    cri.push(out_parts[0].clone());
    cri.extend(cri_lines(
        "2026-12-06T03:00:00.200000002Z",
        "stderr",
        "warning: disk 91% full",
    ));
    cri.extend(out_parts[1..].iter().cloned());
    cri.extend(cri_lines(
        "2026-12-06T03:00:01.000000000+00:00",
        "stdout",
        r#"{"level":"error","msg":"payment failed","request_id":"r-1"}"#,
    ));
    cri.extend(cri_lines("2026-12-06T03:00:02.5Z", "stdout", ""));
    cri.push("not a cri line".into());
    std::fs::write(pods.join("0.log"), cri.join("\n") + "\n").unwrap();
    // Docker: likewise.
    let mut docker = Vec::new();
    let out_parts = docker_lines("2026-12-06T03:00:00.1Z", "stdout", &long('d'));
    docker.push(out_parts[0].clone());
    docker.extend(docker_lines(
        "2026-12-06T03:00:00.2Z",
        "stderr",
        "café \"quoted\"",
    ));
    docker.extend(out_parts[1..].iter().cloned());
    std::fs::write(
        containers.join(format!("web-1_prod_nginx-{id}.log")),
        docker.join("\n") + "\n",
    )
    .unwrap();
    let toml = format!(
        r#"
[sources.cri]
type = "file"
path = "{}"
format = "cri"
kubernetes = true

[sources.docker]
type = "file"
path = "{}"
format = "docker"
kubernetes = true

[sinks.out]
type = "file"
path = "out.log"
inputs = ["cri", "docker"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
        d.join("var/log/pods/*/*/*.log").display(),
        containers.join("*.log").display()
    );
    crate::util::run(d, &toml).await.unwrap();
    let events = whole_json_lines(&d.join("out.log"));
    // (A JSON line is kept as it is, as the file source keeps any: with
    // no `source` of ours; the pod tells them apart.)
    let of = |ns: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["kubernetes"]["namespace"] == ns)
            .collect()
    };
    let cri = of("shop");
    // The empty line makes no event, as an empty line of any file.
    assert_eq!(cri.len(), 3, "{cri:#?}");
    assert_eq!(cri[0]["message"], "warning: disk 91% full");
    assert_eq!(cri[0]["stream"], "stderr");
    assert_eq!(cri[0]["timestamp"], "2026-12-06T03:00:00.200000002Z");
    assert_eq!(cri[1]["message"], long('o'));
    assert_eq!(cri[1]["stream"], "stdout");
    assert_eq!(cri[1]["timestamp"], "2026-12-06T03:00:00.100000001Z");
    assert_eq!(cri[1]["kubernetes"]["namespace"], "shop");
    assert_eq!(cri[1]["kubernetes"]["pod_name"], "api-7d9f");
    assert_eq!(
        cri[1]["kubernetes"]["pod_uid"],
        "0e1c2d3b-aaaa-bbbb-cccc-123456789abc"
    );
    assert_eq!(cri[1]["kubernetes"]["container_name"], "api");
    assert_eq!(cri[2]["level"], "error");
    assert_eq!(cri[2]["request_id"], "r-1");
    assert_eq!(cri[2]["stream"], "stdout");
    let docker = of("prod");
    assert_eq!(docker.len(), 2, "{docker:#?}");
    assert_eq!(docker[0]["message"], "café \"quoted\"");
    assert_eq!(docker[0]["stream"], "stderr");
    assert_eq!(docker[1]["message"], long('d'));
    assert_eq!(docker[1]["kubernetes"]["pod_name"], "web-1");
    assert_eq!(docker[1]["kubernetes"]["namespace"], "prod");
    assert_eq!(docker[1]["kubernetes"]["container_name"], "nginx");
    assert_eq!(docker[1]["kubernetes"]["container_id"], id.as_str());
    let dead = std::fs::read_to_string(d.join("dead.log")).unwrap();
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(dead.contains("not a cri line"), "{dead}");
}

/// With a checkpoint, a record held when sluice stops is read again from
/// its first line at the next start: each record once, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_a_held_record_not_inside_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = d.join("app.log");
    let toml = format!(
        r#"
[sources.app]
type = "file"
path = "{}"
follow = true
checkpoint = "pos.json"
multiline = {{ start = '^\[', timeout = "30s" }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["app"]
"#,
        log.display()
    );
    let append = |text: &str| {
        use std::io::Write;
        let mut f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append("[1] first\n  one more\n[2] second\n  part a\n");
    let out = d.join("out.log");
    let (running, _) = start(d, &toml).await;
    until("the first record", 20, || whole_json_lines(&out).len() == 1).await;
    // The second is held (its end has not come); stop, write its end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    append("  part b\n[3] third\n");
    let (running, _) = start(d, &toml).await;
    until("the second record", 20, || {
        whole_json_lines(&out).len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let m: Vec<String> = whole_json_lines(&out)
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        m,
        ["[1] first\n  one more", "[2] second\n  part a\n  part b"]
    );
}

/// `sluice run` with a stdin source and the python preset: a traceback
/// piped in is one event; one held while stdin stays open is let go by
/// the timeout, the last at its end.
#[test]
fn stdin_joins_tracebacks_and_lets_the_last_go() {
    use std::io::{BufRead, Write};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.toml");
    std::fs::write(
        &path,
        "[sources.in]\ntype = \"stdin\"\nmultiline = { preset = \"python\", timeout = \"300ms\" }\nbatch = { max_wait = \"10ms\" }\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"in\"]\n",
    )
    .unwrap();
    let mut child = crate::util::sluice()
        .args(["run", "--quiet"])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdin
        .write_all(b"ERROR:root:failed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: x\nINFO:root:next\n")
        .unwrap();
    stdin.flush().unwrap();
    // Both records while stdin is still open: the second by the timeout.
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let first: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        first["message"],
        "ERROR:root:failed\nTraceback (most recent call last):\n  File \"a.py\", line 1, in <module>\nValueError: x"
    );
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let second: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(second["message"], "INFO:root:next");
    stdin
        .write_all(b"WARNING:root:last\n  indented tail\n")
        .unwrap();
    drop(stdin);
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let last: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(last["message"], "WARNING:root:last\n  indented tail");
    assert!(child.wait().unwrap().success());
}
