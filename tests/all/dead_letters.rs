//! Dead letters you can act on: the record format, `sluice dead-letters
//! list | show | replay` (each event once, however often it is run), sink
//! dead letters replayed after a fix, and the `dead_letters` source that
//! retries by itself up to `max_attempts`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice::delivery::dead_letters::Record;

use crate::sinks::TestServer;
use crate::util::{read_json_lines, sluice, start, until};
use crate::{CHAOS, MASK};

fn dead_letters_cli(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = sluice()
        .arg("dead-letters")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| Record::parse(l).unwrap())
        .collect()
}

fn seqs(path: &Path) -> Vec<u64> {
    let mut s: Vec<u64> = read_json_lines(path)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    s.sort();
    s
}

const POISONED: [u64; 3] = [4, 9, 15];

/// 20 events with a timestamp (so the file source passes them verbatim),
/// an email each, and `chaos = "panic"` on the POISONED ones.
fn write_input(path: &Path) -> Vec<String> {
    let lines: Vec<String> = (1..=20u64)
        .map(|seq| {
            let chaos = if POISONED.contains(&seq) { r#","chaos":"panic""# } else { "" };
            format!(
                r#"{{"timestamp":"2026-12-01T10:00:{seq:02}.000Z","seq":{seq},"level":"error","message":"card declined for user{seq}@example.com"{chaos}}}"#
            )
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
    lines
}

const PIPELINE: &str = r#"[sources.in]
type = "file"
path = "in.jsonl"
follow = false

[transforms.mask]
plugin = "masker.wasm"
inputs = ["in"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["mask"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#;

/// Run PIPELINE with the chaos plugin as `mask` over the input: 17 events
/// out, the POISONED ones dead-lettered. Returns the input lines.
fn poisoned_run(dir: &Path) -> Vec<String> {
    let input = write_input(&dir.join("in.jsonl"));
    std::fs::copy(CHAOS, dir.join("masker.wasm")).unwrap();
    std::fs::write(dir.join("pipeline.toml"), PIPELINE).unwrap();
    let out = sluice()
        .args(["run", "--quiet", "pipeline.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(seqs(&dir.join("out.log")).len(), 17);
    input
}

#[test]
fn a_trapping_plugin_version_then_a_fixed_one_replays_each_event_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let input = poisoned_run(dir);

    // The record format: versioned, with an id, an attempt, the reason and
    // the original event byte for byte.
    let dead = records(&dir.join("dead.log"));
    assert_eq!(dead.len(), 3);
    for (r, seq) in dead.iter().zip(POISONED) {
        assert_eq!(r.value["dl_version"], 1);
        assert_eq!(r.attempt, 1);
        assert_eq!((r.component.as_str(), r.kind.as_str()), ("mask", "trap"));
        assert_eq!(
            r.event,
            input[seq as usize - 1].as_bytes(),
            "the event, byte for byte"
        );
        assert_eq!(r.id, sluice::delivery::dead_letters::dl_id(&r.event));
    }

    let (ok, listed, _) = dead_letters_cli(&["list", "dead.log"], dir);
    assert!(ok);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("mask") && l.contains("trap") && l.contains(" 3 ")),
        "{listed}"
    );
    assert!(
        listed.contains("3 dead letters, 3 not replayed yet"),
        "{listed}"
    );
    let (ok, shown, _) =
        dead_letters_cli(&["show", "dead.log", "--events", "--field", "seq=9"], dir);
    assert!(ok);
    assert_eq!(shown.trim(), input[8]);

    let (ok, dry, _) = dead_letters_cli(
        &[
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
            "--dry-run",
        ],
        dir,
    );
    assert!(ok && dry.contains("3 event(s) would be sent"), "{dry}");
    assert_eq!(
        seqs(&dir.join("out.log")).len(),
        17,
        "a dry run sends nothing"
    );

    // The fixed version: the real mask plugin.
    std::fs::copy(MASK, dir.join("masker.wasm")).unwrap();
    let (ok, said, err) = dead_letters_cli(
        &[
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
        ],
        dir,
    );
    assert!(ok, "{err}");
    assert!(
        said.contains("replayed 3 event(s)") && said.contains("0 failed again"),
        "{said}"
    );
    assert_eq!(
        seqs(&dir.join("out.log")),
        (1..=20).collect::<Vec<_>>(),
        "each event once"
    );
    let replayed: Vec<serde_json::Value> = read_json_lines(&dir.join("out.log"))[17..].to_vec();
    assert!(
        replayed
            .iter()
            .all(|e| e["message"] == "card declined for [email]"),
        "{replayed:?}"
    );
    assert_eq!(
        records(&dir.join("dead.log")).len(),
        3,
        "the replay wrote no dead letters there"
    );

    // Again: nothing is sent twice.
    let (ok, said, _) = dead_letters_cli(
        &[
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
        ],
        dir,
    );
    assert!(ok && said.contains("nothing to replay"), "{said}");
    assert_eq!(seqs(&dir.join("out.log")).len(), 20);
    let (_, listed, _) = dead_letters_cli(&["list", "dead.log"], dir);
    assert!(
        listed.contains("3 dead letters, 0 not replayed yet"),
        "{listed}"
    );
}

#[test]
fn events_that_fail_again_go_to_a_new_file_with_one_attempt_more() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    poisoned_run(dir);
    // Not fixed: the replay fails again.
    let (ok, said, err) = dead_letters_cli(
        &[
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
            "--kind",
            "trap",
            "--failed",
            "again.log",
        ],
        dir,
    );
    assert!(ok, "{err}");
    assert!(said.contains("3 failed again"), "{said}");
    let first = records(&dir.join("dead.log"));
    let again = records(&dir.join("again.log"));
    assert_eq!(again.len(), 3);
    for (a, f) in again.iter().zip(&first) {
        assert_eq!(
            (a.id.as_str(), a.attempt, a.event.as_slice()),
            (f.id.as_str(), 2, f.event.as_slice())
        );
    }
    assert_eq!(seqs(&dir.join("out.log")).len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_dead_letters_are_replayed_after_the_fix() {
    // An HTTP endpoint that refuses events marked bad, until it is fixed;
    // and a file sink whose file the filesystem refuses.
    let fixed = Arc::new(Mutex::new(false));
    let f = fixed.clone();
    let server = TestServer::start(Arc::new(move |_, body: &[u8]| {
        let bad = String::from_utf8_lossy(body).contains("\"bad\":true");
        if bad && !*f.lock().unwrap() {
            (
                400,
                vec![],
                r#"{"error":"mapping error: bad is not allowed"}"#.to_string(),
            )
        } else {
            (200, vec![], String::new())
        }
    }))
    .await;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A folder where the file for name "blocked" should be.
    std::fs::create_dir_all(dir.join("files/blocked.log")).unwrap();
    let mut lines = String::new();
    for seq in 1..=6u64 {
        let bad = if seq % 3 == 0 { r#","bad":true"# } else { "" };
        let name = if seq == 2 { "blocked" } else { "ok" };
        lines.push_str(&format!(
            "{{\"timestamp\":\"2026-12-01T10:00:0{seq}.000Z\",\"seq\":{seq},\"name\":\"{name}\"{bad}}}\n"
        ));
    }
    std::fs::write(dir.join("in.jsonl"), lines).unwrap();
    let pipeline = |name_field: &str| {
        format!(
            r#"[batch]
max_events = 1

[sources.in]
type = "file"
path = "in.jsonl"
follow = false

[sinks.api]
type = "http"
uri = "http://127.0.0.1:{}/logs"
max_events = 1
retry_for = "2s"
inputs = ["in"]

[sinks.files]
type = "file"
path = "files/{{{name_field}}}.log"
inputs = ["in"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
            server.port
        )
    };
    std::fs::write(dir.join("pipeline.toml"), pipeline("name")).unwrap();
    let mut run = sluice();
    run.args(["run", "--quiet", "pipeline.toml"])
        .current_dir(dir);
    crate::util::succeeds(run).await;
    let dead = records(&dir.join("dead.log"));
    let mut by: Vec<(String, String, u64)> = dead
        .iter()
        .map(|r| {
            let e: serde_json::Value = serde_json::from_slice(&r.event).unwrap();
            (
                r.component.clone(),
                r.kind.clone(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    by.sort();
    assert_eq!(
        by,
        [
            ("api".to_string(), "rejected".to_string(), 3),
            ("api".to_string(), "rejected".to_string(), 6),
            ("files".to_string(), "write".to_string(), 2),
        ],
        "{dead:?}"
    );
    assert!(
        dead.iter().any(|r| r.message.contains("mapping error")),
        "{dead:?}"
    );

    // The fixes: the endpoint accepts, the files are named by another field.
    *fixed.lock().unwrap() = true;
    std::fs::write(dir.join("pipeline.toml"), pipeline("seq")).unwrap();
    let before = server.delivered().len();
    for component in ["api", "files"] {
        let dir = dir.to_path_buf();
        let args = [
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
            "--component",
            component,
        ];
        let (ok, said, err) = tokio::task::spawn_blocking(move || dead_letters_cli(&args, &dir))
            .await
            .unwrap();
        assert!(ok, "{err}");
        assert!(said.contains("0 failed again"), "{said}");
    }
    // Replayed through the whole pipeline: the API got its two, once each
    // (and the file event once more), the files their one.
    let api: Vec<u64> = server.delivered()[before..]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let mut api_sorted = api.clone();
    api_sorted.sort();
    assert_eq!(api_sorted, [2, 3, 6], "{api:?}");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("files"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(files.contains(&"2.log".to_string()), "{files:?}");
    // And again: nothing.
    let dir2 = dir.to_path_buf();
    let (ok, said, _) = tokio::task::spawn_blocking(move || {
        dead_letters_cli(
            &[
                "replay",
                "dead.log",
                "--into",
                "pipeline.toml",
                "--source",
                "in",
            ],
            &dir2,
        )
    })
    .await
    .unwrap();
    assert!(ok && said.contains("nothing to replay"), "{said}");
    assert_eq!(server.delivered().len(), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_round_trip_the_exact_bytes_even_invalid_utf8() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // A line that is not JSON and not UTF-8, and a JSON object with odd
    // spacing and escapes that a plugin refuses.
    let garbage: &[u8] = b"\xff\xfe not json \xc3\x28\n";
    let odd = r#"{"timestamp":"2026-12-01T10:00:00Z",  "k" : "caf\u00e9 \"q\"", "n":1.50, "chaos":"panic"}"#;
    let mut bytes = garbage.to_vec();
    bytes.extend_from_slice(odd.as_bytes());
    bytes.push(b'\n');
    std::fs::write(dir.join("in.jsonl"), &bytes).unwrap();
    std::fs::copy(CHAOS, dir.join("masker.wasm")).unwrap();
    let toml = PIPELINE.replace("follow = false", "follow = false\nformat = \"json\"");
    let metrics = crate::util::run(dir, &toml).await.unwrap();
    let dead = records(&dir.join("dead.log"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let decode = dead.iter().find(|r| r.kind == "decode").unwrap();
    assert_eq!(
        decode.event,
        &garbage[..garbage.len() - 1],
        "invalid UTF-8 kept exactly"
    );
    assert!(decode.value["event_base64"].is_string());
    let trap = dead.iter().find(|r| r.kind == "trap").unwrap();
    assert_eq!(trap.event, odd.as_bytes(), "the object kept byte for byte");
    assert!(
        trap.value.get("event_base64").is_none(),
        "verbatim needs no copy"
    );
    let rows = metrics.dead_letters.rows();
    assert!(
        rows.contains(&("in".to_string(), "decode".to_string(), 1, 0, 0)),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("mask".to_string(), "trap".to_string(), 1, 0, 0)),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_source_retries_up_to_max_attempts() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    write_input(&dir.join("in.jsonl"));
    std::fs::copy(CHAOS, dir.join("masker.wasm")).unwrap();
    let toml = PIPELINE.replace(
        "inputs = [\"in\"]\n\n[sinks.out]",
        "inputs = [\"in\", \"retry\"]\n\n[sinks.out]",
    ) + r#"
[sources.retry]
type = "dead_letters"
path = "dead.log"
retry_after = "0s"
max_attempts = 3
poll_interval = "50ms"
"#;
    let (running, metrics) = start(dir, &toml).await;
    let stop = running.stop_handle();
    let waiter = tokio::spawn(running.wait());
    let dead = dir.join("dead.log");
    until("three attempts of each poisoned event", 60, || {
        records(&dead).len() >= 9
    })
    .await;
    // Past max_attempts, nothing more is sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let all = records(&dead);
    assert_eq!(all.len(), 9, "attempts 1, 2 and 3 of each, then it gave up");
    for seq in POISONED {
        let mut attempts: Vec<u64> = all
            .iter()
            .filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.event).unwrap()["seq"] == seq
            })
            .map(|r| r.attempt)
            .collect();
        attempts.sort();
        assert_eq!(attempts, [1, 2, 3], "seq {seq}");
        let ids: std::collections::BTreeSet<&str> = all
            .iter()
            .filter(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.event).unwrap()["seq"] == seq
            })
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "one id across attempts");
    }
    assert_eq!(seqs(&dir.join("out.log")).len(), 17);
    let rows = metrics.dead_letters.rows();
    assert_eq!(
        rows,
        [("mask".to_string(), "trap".to_string(), 9, 6, 6)],
        "written, replayed, failed again"
    );
    assert_eq!(
        crate::util::counts(&metrics, "retry").dropped,
        3,
        "given up on, counted"
    );
}

/// #36: two replays of one file at once sent everything twice. The second
/// waits for the first and sends nothing.
#[test]
fn two_replays_at_once_send_each_event_once() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    poisoned_run(dir);
    std::fs::copy(MASK, dir.join("masker.wasm")).unwrap();
    let replay = || {
        sluice()
            .args([
                "dead-letters",
                "replay",
                "dead.log",
                "--into",
                "pipeline.toml",
                "--source",
                "in",
            ])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (replay(), replay());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let want: Vec<u64> = (1..=20).collect();
    assert_eq!(seqs(&dir.join("out.log")), want, "each event once");
}

/// #36: `--failed` naming a folder ended the replay before FILE.replayed
/// was saved. What failed again and could not be written stays to replay;
/// nothing is lost or marked done.
#[test]
fn a_failed_file_that_cannot_be_written_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    poisoned_run(dir);
    std::fs::create_dir(dir.join("a-folder")).unwrap();
    let args = |failed: &'static str| {
        [
            "replay",
            "dead.log",
            "--into",
            "pipeline.toml",
            "--source",
            "in",
            "--failed",
            failed,
        ]
    };
    let (ok, _, err) = dead_letters_cli(&args("a-folder"), dir);
    assert!(!ok && err.contains("a-folder"), "{err}");
    let (ok, said, err) = dead_letters_cli(&args("again.log"), dir);
    assert!(ok, "{err}");
    assert!(
        said.contains("replayed 3 event(s)") && said.contains("3 failed again"),
        "{said}"
    );
    assert_eq!(records(&dir.join("again.log")).len(), 3);
    let (ok, said, _) = dead_letters_cli(&args("again.log"), dir);
    assert!(ok && said.contains("nothing to replay"), "{said}");
}

/// #36: the `dead_letters` source held every record read whole (a 1 GiB
/// record took 6 GB) and cut lines in quadratic time (100k records: 49 s
/// before the first event). A record past `max_record` is skipped as it
/// is read and counted; 20,000 records behind it all arrive once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letters_source_skips_huge_records_and_reads_a_backlog_whole() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let dead = dir.join("dead.log");
    {
        use std::io::Write as _;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&dead).unwrap());
        let huge = "x".repeat(8 << 20);
        writeln!(
            f,
            r#"{{"dl_version":1,"attempt":1,"timestamp":"2026-12-01T10:00:00Z","event":{{"seq":0,"pad":"{huge}"}}}}"#
        )
        .unwrap();
        for seq in 1..=20_000u64 {
            writeln!(
                f,
                r#"{{"dl_version":1,"attempt":1,"timestamp":"2026-12-01T10:00:00Z","component":"mask","error":{{"kind":"trap","message":"x"}},"event":{{"timestamp":"2026-12-01T10:00:00.000Z","seq":{seq}}}}}"#
            )
            .unwrap();
        }
    }
    let toml = r#"[sources.retry]
type = "dead_letters"
path = "dead.log"
retry_after = "0s"
max_record = "1MiB"
poll_interval = "50ms"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["retry"]
"#;
    let (running, metrics) = start(dir, toml).await;
    let stop = running.stop_handle();
    let waiter = tokio::spawn(running.wait());
    let out = dir.join("out.log");
    until("every record of the backlog", 120, || {
        crate::util::json_lines_if_any(&out).len() >= 20_000
    })
    .await;
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let want: Vec<u64> = (1..=20_000).collect();
    assert_eq!(seqs(&out), want);
    assert_eq!(crate::util::counts(&metrics, "retry").long_lines, 1);
}
