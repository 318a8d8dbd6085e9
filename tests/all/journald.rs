//! The journald source on journal files written by Debian's
//! `systemd-journal-remote` from export-format input, read with
//! `directory` through the real `journalctl`: fields, units and matches,
//! following new files, and `kill -9` with a restart at the cursor.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{start, until, whole_json_lines};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// One entry in the journal export format: text fields as `NAME=value`,
/// a value with a newline or other bytes as `NAME\n<le64 size><bytes>\n`.
fn export(entries: &[Vec<(&str, Vec<u8>)>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        for (k, v) in e {
            let binary = v.iter().any(|&b| !(0x20..0x7f).contains(&b));
            if binary {
                out.extend_from_slice(k.as_bytes());
                out.push(b'\n');
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
                out.push(b'\n');
            } else {
                out.extend_from_slice(k.as_bytes());
                out.push(b'=');
                out.extend_from_slice(v);
                out.push(b'\n');
            }
        }
        out.push(b'\n');
    }
    out
}

/// Write `entries` into the journal file `file` with systemd-journal-remote.
fn write_journal(file: &Path, entries: &[Vec<(&str, Vec<u8>)>]) {
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-journal-remote (Debian's package) is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&export(entries))
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "systemd-journal-remote failed"
    );
}

fn entry(i: u64, unit: &str, priority: u8, message: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "__REALTIME_TIMESTAMP",
            format!("{}", 1_796_529_600_000_000 + i * 1000).into_bytes(),
        ),
        ("_HOSTNAME", b"web-1".to_vec()),
        ("PRIORITY", priority.to_string().into_bytes()),
        ("_SYSTEMD_UNIT", unit.as_bytes().to_vec()),
        (
            "SYSLOG_IDENTIFIER",
            unit.trim_end_matches(".service").as_bytes().to_vec(),
        ),
        ("_PID", (1000 + i).to_string().into_bytes()),
        ("MESSAGE", message.as_bytes().to_vec()),
    ]
}

/// Fields, `units`, `exclude_matches` and `include_matches` on journal
/// files, and a new file in the folder followed as it comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_files_with_units_matches_and_following() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let journal = d.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let mut first = vec![
        entry(1, "shop.service", 3, "payment failed"),
        entry(2, "cron.service", 6, "job ok"),
        entry(3, "shop.service", 6, "payment ok"),
        entry(4, "shop.service", 4, "slow payment"),
    ];
    // A binary field and a message on two lines.
    first[0].push(("DUMP", vec![0xff, 0x00, 0x01]));
    first[3].retain(|(k, _)| *k != "MESSAGE");
    first[3].push(("MESSAGE", b"slow payment\nsecond line".to_vec()));
    write_journal(&journal.join("first.journal"), &first);
    let toml = format!(
        r#"
[sources.all]
type = "journald"
directory = "{j}"

[sources.shop]
type = "journald"
directory = "{j}"
units = ["shop"]
exclude_matches = {{ PRIORITY = ["6"] }}

[sources.errors]
type = "journald"
directory = "{j}"
include_matches = {{ PRIORITY = ["0", "1", "2", "3"] }}

[sinks.all_out]
type = "file"
path = "all.log"
inputs = ["all"]

[sinks.shop_out]
type = "file"
path = "shop.log"
inputs = ["shop"]

[sinks.errors_out]
type = "file"
path = "errors.log"
inputs = ["errors"]
"#,
        j = journal.display()
    );
    let (running, _) = start(d, &toml).await;
    let all = d.join("all.log");
    until("the first entries", 20, || {
        whole_json_lines(&all).len() == 4
    })
    .await;
    // A new journal file in the folder, while following.
    let second = journal.join("second.journal");
    tokio::task::spawn_blocking(move || {
        write_journal(&second, &[entry(5, "shop.service", 2, "disk on fire")])
    })
    .await
    .unwrap();
    until("the entry of the new file", 20, || {
        whole_json_lines(&all).len() == 5
    })
    .await;
    until("the shop entries", 20, || {
        whole_json_lines(&d.join("shop.log")).len() == 3
    })
    .await;
    until("the errors", 20, || {
        whole_json_lines(&d.join("errors.log")).len() == 2
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();

    let events = whole_json_lines(&all);
    let e = &events[0];
    assert_eq!(e["timestamp"], "2026-12-06T04:00:00.001000Z");
    assert_eq!(e["message"], "payment failed");
    assert_eq!(e["level"], "error");
    assert_eq!(e["host"], "web-1");
    assert_eq!(e["service"], "shop.service");
    assert_eq!(e["source"], "all");
    assert_eq!(e["journald"]["_PID"], "1001");
    assert_eq!(e["journald"]["SYSLOG_IDENTIFIER"], "shop");
    assert_eq!(e["journald"]["DUMP"], "/wAB", "binary values as base64");
    assert_eq!(events[1]["level"], "info");
    assert_eq!(events[3]["message"], "slow payment\nsecond line");
    assert_eq!(events[3]["level"], "warn");
    assert_eq!(events[4]["level"], "fatal");
    let shop: Vec<String> = whole_json_lines(&d.join("shop.log"))
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        shop,
        [
            "payment failed",
            "slow payment\nsecond line",
            "disk on fire"
        ]
    );
    let errors: Vec<String> = whole_json_lines(&d.join("errors.log"))
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors, ["payment failed", "disk on fire"]);
}

/// `kill -9` at random moments while the journal grows: each restart
/// resumes at the saved cursor, and in the end every entry is in the
/// output. Delivery is at least once: a batch the sink wrote but whose
/// acknowledgement had not yet moved the cursor when the process died is
/// read again, so duplicates are bounded by the batches in flight at each
/// kill (never a re-read from the start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_resume_at_the_cursor() {
    const ROUNDS: u64 = 6;
    const PER: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let journal = d.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let pipeline = d.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[sources.j]
type = "journald"
directory = "{}"
checkpoint = "cursor"
batch = {{ max_events = 100 }}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["j"]
"#,
            journal.display()
        ),
    )
    .unwrap();
    let out = d.join("out.log");
    let mut killed_with = Vec::new();
    for round in 0..ROUNDS {
        let mut child = crate::util::spawn_run(&pipeline);
        let entries: Vec<_> = (round * PER..(round + 1) * PER)
            .map(|i| entry(i, "app.service", 6, &format!("seq {i}")))
            .collect();
        let file = journal.join(format!("round{round}.journal"));
        tokio::task::spawn_blocking(move || write_journal(&file, &entries))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..400))).await;
        let _ = child.kill();
        let _ = child.wait();
        killed_with.push(whole_json_lines(&out).len());
    }
    let mut child = crate::util::spawn_run(&pipeline);
    let total = ROUNDS * PER;
    let seen = || {
        let mut m: BTreeMap<u64, usize> = BTreeMap::new();
        for e in whole_json_lines(&out) {
            let n: u64 = e["message"].as_str().unwrap()[4..].parse().unwrap();
            *m.entry(n).or_default() += 1;
        }
        m
    };
    until("every entry", 60, || seen().len() as u64 == total).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = child.kill();
    let _ = child.wait();
    let m = seen();
    assert_eq!(
        m.len() as u64,
        total,
        "lost entries (output after each kill: {killed_with:?})"
    );
    let duplicates: usize = m.values().map(|n| n - 1).sum();
    println!("kill -9 x{ROUNDS}: {duplicates} entries read again (output after each kill: {killed_with:?})");
    // At most a few batches of 100 are between the sink's write and the
    // saved cursor when a kill lands.
    assert!(
        duplicates as u64 <= ROUNDS * 4 * 100,
        "read again: {duplicates} entries (output after each kill: {killed_with:?})"
    );
}
