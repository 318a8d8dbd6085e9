//! Encryption at rest: files the real `age` tool decrypts byte for byte,
//! `.age` input read back, key rotation by reload, `kill -9` while writing.
//! Field-level encryption is in `plugins/encrypt.rs`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::util::{counts, parse, plan_error, run, spawn_run, start, until, write_json_lines};

/// A new age key pair from `age-keygen`: the identity file and its public key.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.txt"));
    let status = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .expect("age-keygen (Debian package `age`; scripts/setup-test-deps installs it)");
    assert!(status.success());
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(&key)
        .output()
        .unwrap();
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(public.starts_with("age1"), "{public}");
    (key, public)
}

/// `age -d -i KEY FILE`: what it printed, and whether it succeeded (a file
/// cut by a crash prints its complete chunks, then fails). `.gz.age` is
/// gunzipped afterwards, as far as it goes.
pub fn age_decrypt(path: &Path, key: &Path) -> (Vec<u8>, bool) {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(path)
        .output()
        .unwrap();
    let mut plain = out.stdout;
    if path.to_string_lossy().ends_with(".gz.age") {
        let mut unzipped = Vec::new();
        let _ = flate2::read::MultiGzDecoder::new(&plain[..]).read_to_end(&mut unzipped);
        plain = unzipped;
    }
    (plain, out.status.success())
}

/// The files of `stem` (`events.log`) in `dir` in the order written:
/// `stem.N[.gz].age` by N, then the live `stem[.gz].age`.
fn series(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut numbered: Vec<(u64, PathBuf)> = Vec::new();
    let mut live = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(stem) else {
            continue;
        };
        let rest = rest.strip_suffix(".age").expect("every file is encrypted");
        let rest = rest.strip_suffix(".gz").unwrap_or(rest);
        match rest.strip_prefix('.') {
            Some(n) => numbered.push((n.parse().unwrap(), e.path())),
            None => live.push(e.path()),
        }
    }
    numbered.sort();
    numbered.into_iter().map(|(_, p)| p).chain(live).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_tool_decrypts_what_sluice_wrote_byte_for_byte() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let (_, other) = keygen(d.path(), "other");
    std::fs::write(
        d.path().join("recipients.txt"),
        format!("# ops team\n{public}\n{other}\n"),
    )
    .unwrap();
    let toml = format!(
        r#"
[sources.gen]
type = "generate"
count = 60000
seed = 7

[sinks.plain]
type = "file"
path = "plain.log"
inputs = ["gen"]

[sinks.sealed]
type = "file"
path = "sealed/events.log"
rotate_size = "256KiB"
encrypt = {{ recipients = ["{public}"] }}
inputs = ["gen"]

[sinks.packed]
type = "file"
path = "packed/events.log"
rotate_size = "1MiB"
compress = true
encrypt = {{ recipients_file = "recipients.txt" }}
inputs = ["gen"]
"#
    );
    let metrics = run(d.path(), &toml).await.unwrap();
    let plain = std::fs::read(d.path().join("plain.log")).unwrap();
    assert_eq!(plain.iter().filter(|b| **b == b'\n').count(), 60000);
    for (sink, min_files) in [("sealed", 20), ("packed", 5)] {
        let files = series(&d.path().join(sink), "events.log");
        assert!(files.len() >= min_files, "{sink}: {files:?}");
        let mut joined = Vec::new();
        for f in &files {
            let raw = std::fs::read(f).unwrap();
            assert!(raw.starts_with(b"age-encryption.org/v1\n"), "{f:?}");
            assert!(
                !raw.windows(8).any(|w| w == b"\"seq\":12"),
                "{f:?} holds plaintext"
            );
            let (bytes, ok) = age_decrypt(f, &key);
            assert!(ok, "age -d {f:?}");
            assert!(bytes.ends_with(b"\n"), "{f:?} ends inside a line");
            if sink == "sealed" {
                assert!(bytes.len() <= 256 * 1024, "{f:?}: {} bytes", bytes.len());
            }
            joined.extend_from_slice(&bytes);
        }
        assert!(
            joined == plain,
            "{sink}: decrypted files are not the plain output"
        );
        let snap = counts(&metrics, sink);
        assert!(snap.encrypted_bytes > 0);
        let (fingerprint, keys) = snap.recipients.clone().unwrap();
        assert_eq!(keys, if sink == "sealed" { 1 } else { 2 });
        let text = sluice::admin::prometheus(&metrics);
        assert!(
            text.contains(&format!(
                "sluice_file_encryption_recipients{{component=\"{sink}\",kind=\"sink\",fingerprint=\"{fingerprint}\"}} {keys}"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "sluice_file_encrypted_bytes_total{{component=\"{sink}\",kind=\"sink\"}} {}",
            snap.encrypted_bytes
        )));
    }
    // Compressed before encryption: the packed files are far smaller.
    let size = |sink: &str| -> u64 {
        series(&d.path().join(sink), "events.log")
            .iter()
            .map(|f| f.metadata().unwrap().len())
            .sum()
    };
    assert!(size("packed") * 3 < size("sealed"));
    // A second run never appends to a finished age file: it is moved aside.
    run(d.path(), &toml).await.unwrap();
    let files = series(&d.path().join("sealed"), "events.log");
    let mut total = 0;
    for f in &files {
        let (bytes, ok) = age_decrypt(f, &key);
        assert!(ok, "age -d {f:?}");
        total += bytes.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(total, 120_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_files_are_read_by_the_file_source_and_the_timeline() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let (stranger, _) = keygen(d.path(), "stranger");
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let events: Vec<Value> = (0..3000)
        .map(|i| {
            json!({"timestamp": format!("2026-11-23T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                   "service": "api", "level": "error", "message": format!("m{i}"), "request_id": format!("r{i}")})
        })
        .collect();
    write_json_lines(&d.path().join("a.jsonl"), &events[..2000]);
    write_json_lines(&d.path().join("b.jsonl"), &events[2000..]);
    // Encrypted by the age tool itself, one of them gzipped first.
    let status = Command::new("age")
        .args(["-r", &public, "-o"])
        .arg(logs.join("api.log.age"))
        .arg(d.path().join("a.jsonl"))
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "gzip -c b.jsonl | age -r {public} -o logs/api.log.1.gz.age"
        ))
        .current_dir(d.path())
        .status()
        .unwrap();
    assert!(status.success());
    let pipeline = |identity: &str| {
        format!(
            r#"
[sources.archive]
type = "file"
path = "logs/*.age"
{identity}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["archive"]
"#
        )
    };
    let metrics = run(d.path(), &pipeline("identity_file = \"key.txt\""))
        .await
        .unwrap();
    assert_eq!(counts(&metrics, "archive").events_in, 3000);
    let mut got: Vec<String> = crate::util::read_json_lines(&d.path().join("out.log"))
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    // Without an identity the files are skipped, and the source says why;
    // with another key they cannot be read.
    std::fs::remove_file(d.path().join("out.log")).unwrap();
    let e = format!("{:#}", run(d.path(), &pipeline("")).await.unwrap_err());
    assert!(e.contains("identity_file"), "{e}");
    let metrics = run(d.path(), &pipeline("identity_file = \"stranger.txt\""))
        .await
        .unwrap();
    assert_eq!(counts(&metrics, "archive").events_in, 0);
    let _ = stranger;

    // The timeline reads them with --identity, and says what is missing without.
    let out = crate::util::sluice()
        .args(["timeline", "--all", "--format", "json", "--identity"])
        .arg(&key)
        .arg(&logs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"m2999\"") && text.contains("\"m0\""),
        "{text:.2000}"
    );
    let out = crate::util::sluice()
        .args(["timeline", "--all"])
        .arg(&logs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--identity"), "{err}");
}

/// `(seq, recipient index)` of every event in the files of `dir`, each file
/// decrypted with the one key that opens it.
fn seqs_by_key(dir: &Path, keys: &[&Path]) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    for f in series(dir, "events.log") {
        let opened: Vec<(usize, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let (bytes, ok) = age_decrypt(&f, k);
                ok.then_some((i, bytes))
            })
            .collect();
        assert_eq!(opened.len(), 1, "{f:?} opens with exactly one key");
        let (i, bytes) = &opened[0];
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).unwrap();
            out.push((v["seq"].as_u64().unwrap(), *i));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_new_recipients_rotates_keys_under_load() {
    let d = tempfile::tempdir().unwrap();
    let (old_key, old) = keygen(d.path(), "old");
    let (new_key, new) = keygen(d.path(), "new");
    let toml = |public: &str| {
        format!(
            r#"
[batch]
max_events = 100
max_wait = "5ms"

[reload]
watch = false

[sources.gen]
type = "generate"
rate = 20000
seed = 3

[sinks.vault]
type = "file"
path = "out/events.log"
rotate_size = "64KiB"
encrypt = {{ recipients = ["{public}"], seal_after = "200ms" }}
inputs = ["gen"]
"#
        )
    };
    let (running, metrics) = start(d.path(), &toml(&old)).await;
    let reload = running.reload_handle();
    until("events under the old key", 30, || {
        metrics.get("vault").is_some_and(|s| s.events_out > 4000)
    })
    .await;
    let old_print = counts(&metrics, "vault").recipients.unwrap().0;
    let config = parse(d.path(), &toml(&new)).unwrap();
    reload.reload(config).await.unwrap();
    let at_reload = counts(&metrics, "vault").events_out;
    // Events counted after the reload returned include the old sink's last
    // batches (its input drained under the old key; one run saw 4 such):
    // 2,000 more than asserted below leave room for them.
    until("events under the new key", 30, || {
        counts(&metrics, "vault").events_out > at_reload + 6000
    })
    .await;
    let new_print = counts(&metrics, "vault").recipients.unwrap().0;
    assert_ne!(old_print, new_print);
    running.stop_handle().trigger();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .unwrap()
        .unwrap();
    let got = seqs_by_key(&d.path().join("out"), &[&old_key, &new_key]);
    let mut seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    seqs.sort();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(seqs == want, "every event once, across both keys");
    let under = |k: usize| got.iter().filter(|(_, i)| *i == k).count();
    assert!(
        under(0) >= 4000 && under(1) >= 4000,
        "{} / {}",
        under(0),
        under(1)
    );
}

/// The byte offset the file source saved for its one file.
fn saved_offset(checkpoint: &Path) -> u64 {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["files"][0]["offset"].as_u64())
        .unwrap_or(0)
}

/// Every line of the decrypted files of `dir` (a file cut by a crash gives
/// its complete chunks).
fn decrypted_lines(dir: &Path, key: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for f in series(dir, "events.log") {
        let (bytes, _) = age_decrypt(&f, key);
        let text = String::from_utf8(bytes).unwrap();
        out.extend(text.lines().map(str::to_string));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_writing_loses_nothing_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let input = d.path().join("input.log");
    std::fs::write(&input, "").unwrap();
    let total = 120_000usize;
    let line = |i: usize| {
        format!("{{\"timestamp\":\"2026-12-01T00:00:00Z\",\"n\":{i},\"message\":\"event number {i} of the kill test\"}}")
    };
    // The application: appends lines while sluice runs.
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .unwrap();
            for chunk in 0..(total / 500) {
                let mut text = String::new();
                for i in chunk * 500..(chunk + 1) * 500 {
                    text.push_str(&line(i));
                    text.push('\n');
                }
                f.write_all(text.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };
    let pipeline = d.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[sources.app]
type = "file"
path = "input.log"
follow = true
poll_interval = "10ms"
checkpoint = "state/app.json"

[sinks.vault]
type = "file"
path = "out/events.log"
sync = "batch"
encrypt = {{ recipients = ["{public}"], seal_after = "300ms" }}
inputs = ["app"]
"#
        ),
    )
    .unwrap();
    let checkpoint = d.path().join("state/app.json");
    let mut child = spawn_run(&pipeline);
    until("a third acknowledged", 60, || {
        saved_offset(&checkpoint) > 3_000_000
    })
    .await;
    child.kill().unwrap(); // SIGKILL, mid-write
    child.wait().unwrap();
    let acknowledged = saved_offset(&checkpoint) as usize;
    let text = std::fs::read_to_string(&input).unwrap();
    let acked_lines = text[..acknowledged].lines().count();
    let got = decrypted_lines(&d.path().join("out"), &key);
    let have: std::collections::HashSet<&str> = got.iter().map(String::as_str).collect();
    let missing = text[..acknowledged]
        .lines()
        .filter(|l| !have.contains(l))
        .count();
    assert_eq!(
        missing, 0,
        "{missing} of the {acked_lines} acknowledged lines cannot be decrypted after kill -9"
    );
    // The file cut by the kill reads to its last complete chunk with age.
    let live = d.path().join("out/events.log.age");
    let (_, ok) = age_decrypt(&live, &key);
    assert!(!ok, "the live file was cut mid-stream");

    // A restart moves the cut file aside and goes on from the checkpoint.
    let mut child = spawn_run(&pipeline);
    writer.join().unwrap();
    let size = std::fs::metadata(&input).unwrap().len();
    until("everything acknowledged", 60, || {
        saved_offset(&checkpoint) == size
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    // The cut file ends where its last complete chunk does, inside a line
    // (never acknowledged): that fragment is not an event.
    let got: Vec<String> = decrypted_lines(&d.path().join("out"), &key)
        .into_iter()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .collect();
    let mut unique: Vec<&String> = got.iter().collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), total, "every line, at least once");
    println!(
        "kill -9 with {acked_lines} lines acknowledged: {} written twice (read again after the restart)",
        got.len() - total
    );
    // The cut file was moved aside (age files are never appended to); every
    // other file is complete.
    let cut: Vec<PathBuf> = series(&d.path().join("out"), "events.log")
        .into_iter()
        .filter(|f| !age_decrypt(f, &key).1)
        .collect();
    assert!(cut.len() == 1 && cut[0] != live, "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_refused_at_their_key() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let sink = |encrypt: &str| {
        format!("[sources.a]\ntype = \"stdin\"\n[sinks.f]\ntype = \"file\"\npath = \"x.log\"\ninputs = [\"a\"]\nencrypt = {encrypt}\n")
    };
    let e = plan_error(
        d.path(),
        &sink(&format!("{{ recipients = [\"{public}\", \"age1nope\"] }}")),
    )
    .await;
    assert!(
        e.contains("encrypt") && e.contains("entry 2") && e.contains("age1nope"),
        "{e}"
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let e = plan_error(
        d.path(),
        &sink(&format!("{{ recipients = [\"{secret}\"] }}")),
    )
    .await;
    assert!(e.contains("secret key") && !e.contains(secret), "{e}");
    let e = plan_error(d.path(), &sink("{ recipients_file = \"none.txt\" }")).await;
    assert!(e.contains("none.txt"), "{e}");
    let e = plan_error(d.path(), &sink("{ recipients = [] }")).await;
    assert!(e.contains("no recipients"), "{e}");
    let e = plan_error(
        d.path(),
        "[sources.a]\ntype = \"file\"\npath = \"*.age\"\nidentity_file = \"x.toml\"\n[sinks.o]\ntype = \"stdout\"\ninputs = [\"a\"]\n",
    )
    .await;
    assert!(e.contains("identity_file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_few_open_files_keep_every_encrypted_line() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    // Five channels in turn (runs of 100) through two open files: a
    // switch closes (finishes) one, and its channel's next line starts a
    // new age file.
    let events: Vec<Value> = (0..5000)
        .map(|i| json!({"timestamp": "t", "channel": format!("c{}", i / 100 % 5), "n": i}))
        .collect();
    write_json_lines(&d.path().join("in.jsonl"), &events);
    let toml = format!(
        r#"
[batch]
max_events = 7

[sources.app]
type = "file"
path = "in.jsonl"

[sinks.vault]
type = "file"
path = "out/{{channel}}.log"
max_open_files = 2
encrypt = {{ recipients = ["{public}"] }}
inputs = ["app"]
"#
    );
    run(d.path(), &toml).await.unwrap();
    let mut seen: Vec<u64> = Vec::new();
    for c in 0..5 {
        let files = series(&d.path().join("out"), &format!("c{c}.log"));
        assert!(files.len() > 1, "c{c}: {files:?}");
        let mut last = None;
        for f in files {
            let (bytes, ok) = age_decrypt(&f, &key);
            assert!(ok, "age -d {f:?}");
            for line in String::from_utf8(bytes).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["channel"], format!("c{c}").as_str());
                let n = v["n"].as_u64().unwrap();
                assert!(
                    last.is_none_or(|l| n > l),
                    "c{c}: in order across its files"
                );
                last = Some(n);
                seen.push(n);
            }
        }
    }
    seen.sort();
    assert_eq!(seen, (0..5000).collect::<Vec<u64>>(), "every event once");
}

/// #36: the file source emitted the cut last line of a truncated `.age`
/// file as an event, and one `.age` file that could not be decrypted
/// aborted a whole timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_age_file_gives_whole_lines_and_a_bad_one_does_not_stop_a_timeline() {
    let d = tempfile::tempdir().unwrap();
    let (key, public) = keygen(d.path(), "key");
    let (_, stranger) = keygen(d.path(), "stranger");
    let logs = d.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    // 200 KiB of lines: chunks of 64 KiB end inside lines.
    let events: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"timestamp": format!("2026-11-23T10:{:02}:{:02}Z", i / 60 % 60, i % 60),
                   "service": "api", "message": format!("m{i} {}", "x".repeat(60)), "request_id": format!("r{i}")})
        })
        .collect();
    write_json_lines(&d.path().join("a.jsonl"), &events);
    let whole = logs.join("api.log.age");
    let status = Command::new("age")
        .args(["-r", &public, "-o"])
        .arg(&whole)
        .arg(d.path().join("a.jsonl"))
        .status()
        .unwrap();
    assert!(status.success());
    // Cut inside its third chunk, as a crash of the writer would leave it.
    let sealed = std::fs::read(&whole).unwrap();
    let cut = d.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    std::fs::write(cut.join("api.log.age"), &sealed[..sealed.len() - 20_000]).unwrap();
    let metrics = run(
        d.path(),
        r#"
[sources.archive]
type = "file"
path = "cut/*.age"
identity_file = "key.txt"

[sinks.out]
type = "file"
path = "out.log"
inputs = ["archive"]
"#,
    )
    .await
    .unwrap();
    let got = crate::util::read_json_lines(&d.path().join("out.log"));
    assert!(got.len() > 1000 && got.len() < 2000, "{} events", got.len());
    assert_eq!(counts(&metrics, "archive").events_in as usize, got.len());
    for (e, want) in got.iter().zip(&events) {
        assert_eq!(e["message"], want["message"], "every event whole, none cut");
    }
    // A second file for another key: the timeline reads the first, warns
    // about the second.
    let status = Command::new("age")
        .args(["-r", &stranger, "-o"])
        .arg(logs.join("other.log.age"))
        .arg(d.path().join("a.jsonl"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = crate::util::sluice()
        .args(["timeline", "--all", "--format", "json", "--identity"])
        .arg(&key)
        .arg(&logs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"r1999\""), "{text:.1000}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other.log.age"), "{err}");
}
