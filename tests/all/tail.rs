//! The file source tailing real files: globs and new files, rotation by
//! rename and by copytruncate, deletion, partial and long lines, gzip, and
//! checkpoints across a clean stop and a `kill -9`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::{read_json_lines, run, spawn_run, start, until};

/// The `(file, n)` of every event a sink wrote, from lines `"<file> <n>"`.
fn seen(out: &Path) -> Vec<(String, u64)> {
    let Ok(text) = std::fs::read_to_string(out) else {
        return Vec::new();
    };
    // A process killed mid-write may leave a torn last line: skipped.
    text.lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let (f, n) = v["message"].as_str()?.split_once(' ')?;
            Some((f.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Append lines `"<tag> <n>"` for `n` in `range` to `path`.
fn append(path: &Path, tag: &str, range: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for n in range {
        text.push_str(&format!("{tag} {n}\n"));
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// Events per tag, each tag's numbers in the order read.
fn by_tag(events: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (t, n) in events {
        out.entry(t.clone()).or_default().push(*n);
    }
    out
}

fn tail_pipeline(glob: &str, extra: &str) -> String {
    format!(
        r#"
[batch]
max_wait = "20ms"

[sources.logs]
type = "file"
path = "{glob}"
follow = true
poll_interval = "20ms"
format = "text"
{extra}

[sinks.out]
type = "file"
path = "out.log"
inputs = ["logs"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seven_growing_files_and_one_that_appears() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for i in 0..7 {
        append(&logs.join(format!("s{i}.log")), &format!("s{i}"), 0..10);
    }
    std::fs::write(logs.join("ignored.txt"), "not matched\n").unwrap();
    let (running, _) = start(d.path(), &tail_pipeline("logs/*.log", "")).await;
    // Seven writers, each appending in small steps.
    let writers: Vec<_> = (0..7)
        .map(|i| {
            let path = logs.join(format!("s{i}.log"));
            std::thread::spawn(move || {
                for step in 0..20u64 {
                    append(
                        &path,
                        &format!("s{i}"),
                        10 + step * 100..10 + (step + 1) * 100,
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&logs.join("new.log"), "new", 0..500);
    for w in writers {
        w.join().unwrap();
    }
    let out = d.path().join("out.log");
    until("every line of the eight files", 30, || {
        seen(&out).len() >= 7 * 2010 + 500
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let tags = by_tag(&seen(&out));
    assert_eq!(tags.len(), 8, "{:?}", tags.keys());
    for (tag, ns) in &tags {
        let want = if tag == "new" { 500 } else { 2010 };
        assert_eq!(
            *ns,
            (0..want).collect::<Vec<_>>(),
            "{tag}: in order, each once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_create_reads_the_old_file_to_its_end() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("logs")).unwrap();
    let app = d.path().join("logs/app.log");
    append(&app, "a", 0..1000);
    let (running, _) = start(
        d.path(),
        &tail_pipeline(
            "logs/*.log",
            "rotate_wait = \"500ms\"\ncheckpoint = \"state/tail.json\"",
        ),
    )
    .await;
    let out = d.path().join("out.log");
    until("the first file", 10, || seen(&out).len() >= 1000).await;
    // The application keeps its handle on the renamed file a moment longer.
    let mut old = std::fs::OpenOptions::new().append(true).open(&app).unwrap();
    std::fs::rename(&app, d.path().join("logs/app.log.1")).unwrap();
    append(&app, "a", 1100..1200);
    for n in 1000..1100 {
        writeln!(old, "a {n}").unwrap();
    }
    drop(old);
    until("both files", 10, || seen(&out).len() >= 1200).await;
    // A deleted file is read to its end, then forgotten.
    append(&app, "a", 1200..1300);
    until("the last lines", 10, || seen(&out).len() >= 1300).await;
    std::fs::remove_file(&app).unwrap();
    std::fs::remove_file(d.path().join("logs/app.log.1")).unwrap();
    let state = d.path().join("state/tail.json");
    let forgotten = || std::fs::read_to_string(&state).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !forgotten().contains("\"files\": []") {
        assert!(
            std::time::Instant::now() < deadline,
            "deleted files stay in the checkpoint: {}",
            forgotten()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await;
    running.wait().await.unwrap();
    let mut ns: Vec<u64> = seen(&out).into_iter().map(|(_, n)| n).collect();
    ns.sort();
    assert_eq!(ns, (0..1300).collect::<Vec<_>>(), "every line once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_starts_again_and_rescues_from_the_copy() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("logs")).unwrap();
    let app = d.path().join("logs/app.log");
    append(&app, "a", 0..1000);
    let toml = tail_pipeline("logs/*.log", "poll_interval = \"300ms\"")
        .replace("poll_interval = \"20ms\"\n", "");
    let (running, metrics) = start(d.path(), &toml).await;
    let out = d.path().join("out.log");
    until("the first lines", 10, || seen(&out).len() >= 1000).await;
    // Between two polls: more lines, then copy and truncate.
    append(&app, "a", 1000..1500);
    std::fs::copy(&app, d.path().join("logs/app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&app)
        .unwrap()
        .set_len(0)
        .unwrap();
    until("the truncation", 10, || {
        metrics.get("logs").is_some_and(|s| s.truncations == 1)
    })
    .await;
    append(&app, "b", 0..300);
    until("the lines after it", 10, || seen(&out).len() >= 1800).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let tags = by_tag(&seen(&out));
    assert_eq!(
        tags["a"],
        (0..1500).collect::<Vec<_>>(),
        "read once, copy window included"
    );
    assert_eq!(tags["b"], (0..300).collect::<Vec<_>>());
    let s = metrics.get("logs").unwrap();
    assert_eq!(s.truncations, 1);
    assert!(s.rescued_lines <= 500, "{}", s.rescued_lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_lines_wait_for_their_newline_or_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app.log");
    let patient = d.path().join("patient.log");
    std::fs::write(&app, "").unwrap();
    std::fs::write(&patient, "").unwrap();
    let toml = tail_pipeline("app.log", "")
        + &tail_pipeline("patient.log", "partial_timeout = \"300ms\"")
            .replace("[batch]\nmax_wait = \"20ms\"\n", "")
            .replace("[sources.logs]", "[sources.patient]")
            .replace("[sinks.out]", "[sinks.out2]")
            .replace("out.log", "out2.log")
            .replace("inputs = [\"logs\"]", "inputs = [\"patient\"]");
    let (running, _) = start(d.path(), &toml).await;
    let mut f = std::fs::OpenOptions::new().append(true).open(&app).unwrap();
    let mut p = std::fs::OpenOptions::new()
        .append(true)
        .open(&patient)
        .unwrap();
    write!(f, "x 1").unwrap();
    write!(p, "y 1").unwrap();
    let out2 = d.path().join("out2.log");
    until("the timed-out partial line", 10, || seen(&out2).len() == 1).await;
    assert!(
        seen(&d.path().join("out.log")).is_empty(),
        "a partial line waits"
    );
    writeln!(f, "23").unwrap();
    until("the completed line", 10, || {
        seen(&d.path().join("out.log")).len() == 1
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    assert_eq!(seen(&d.path().join("out.log")), [("x".to_string(), 123)]);
    assert_eq!(seen(&out2), [("y".to_string(), 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_truncated_or_dead_lettered() {
    let d = tempfile::tempdir().unwrap();
    let long = "z".repeat(5000);
    std::fs::write(
        d.path().join("in.log"),
        format!("short 1\n{long}\nshort 2\n{long}{long}\nshort 3\n"),
    )
    .unwrap();
    let pipeline = |mode: &str| {
        format!(
            r#"
[sources.in]
type = "file"
path = "in.log"
format = "text"
max_line = 1000
long_lines = "{mode}"

[sinks.out]
type = "file"
path = "out-{mode}.log"
inputs = ["in"]

[sinks.dead]
type = "file"
path = "dead-{mode}.log"
inputs = ["_dead_letters"]
"#
        )
    };
    let metrics = run(d.path(), &pipeline("truncate")).await.unwrap();
    let out = read_json_lines(&d.path().join("out-truncate.log"));
    let messages: Vec<&str> = out.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(
        messages,
        [
            "short 1",
            &long[..1000],
            "short 2",
            &long[..1000],
            "short 3"
        ]
    );
    assert_eq!(metrics.get("in").unwrap().long_lines, 2);

    let metrics = run(d.path(), &pipeline("dead-letter")).await.unwrap();
    let out = read_json_lines(&d.path().join("out-dead-letter.log"));
    let messages: Vec<&str> = out.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["short 1", "short 2", "short 3"]);
    let dead = read_json_lines(&d.path().join("dead-dead-letter.log"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[0].to_string().contains("max_line"), "{}", dead[0]);
    assert_eq!(metrics.get("in").unwrap().long_lines, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_files_are_read_whole_when_asked() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(logs.join("old.log.gz")).unwrap(),
        flate2::Compression::default(),
    );
    for n in 0..2000 {
        writeln!(enc, "gz {n}").unwrap();
    }
    enc.finish().unwrap();
    append(&logs.join("app.log"), "plain", 0..10);
    let pipeline = |gzip: bool| {
        format!(
            "[sources.in]\ntype = \"file\"\npath = \"logs/*\"\nformat = \"text\"\ngzip = {gzip}\n\n[sinks.out]\ntype = \"file\"\npath = \"out-{gzip}.log\"\ninputs = [\"in\"]\n"
        )
    };
    run(d.path(), &pipeline(true)).await.unwrap();
    let tags = by_tag(&seen(&d.path().join("out-true.log")));
    assert_eq!(tags["gz"], (0..2000).collect::<Vec<_>>());
    assert_eq!(tags["plain"], (0..10).collect::<Vec<_>>());
    run(d.path(), &pipeline(false)).await.unwrap();
    let tags = by_tag(&seen(&d.path().join("out-false.log")));
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["plain"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_resumes_after_a_clean_stop_exactly_once() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app.log");
    append(&app, "a", 0..3000);
    let toml = tail_pipeline("app.log", "checkpoint = \"tail.json\"");
    let out = d.path().join("out.log");
    for (round, upto) in [(0u64, 3000u64), (1, 5000), (2, 9000)] {
        let (running, _) = start(d.path(), &toml).await;
        if round > 0 {
            append(&app, "a", upto - 2000..upto - 1000);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if round > 0 {
            append(&app, "a", upto - 1000..upto);
        }
        until("this round's lines", 10, || seen(&out).len() as u64 >= upto).await;
        running.shutdown().await;
        running.wait().await.unwrap();
        if round == 1 {
            // Lines written while nothing runs are read at the next start.
            append(&app, "a", 5000..7000);
        }
    }
    let ns: Vec<u64> = seen(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        ns,
        (0..9000).collect::<Vec<_>>(),
        "nothing skipped, nothing repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_tailing_skips_nothing() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app.log");
    let toml = tail_pipeline("app.log", "checkpoint = \"tail.json\"");
    let path = d.path().join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    let spawn = || spawn_run(&path);
    let out = d.path().join("out.log");
    let total = 60_000u64;
    // Writing goes on across the kills.
    let writer = {
        let app = app.clone();
        std::thread::spawn(move || {
            for step in 0..60 {
                append(&app, "a", step * 1000..(step + 1) * 1000);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for threshold in [5_000usize, 20_000, 35_000] {
        let mut child = spawn();
        until("progress before the kill", 60, || {
            seen(&out).len() >= threshold
        })
        .await;
        // Time to save a position; writing goes on, lines are in flight.
        tokio::time::sleep(Duration::from_millis(400)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    writer.join().unwrap();
    let mut child = spawn();
    until("every line", 60, || {
        let mut ns: Vec<u64> = seen(&out).into_iter().map(|(_, n)| n).collect();
        ns.sort();
        ns.dedup();
        ns.len() as u64 == total
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let all = seen(&out);
    let duplicates = all.len() as u64 - total;
    println!("kill -9 x3 while tailing {total} lines: {duplicates} duplicates");
    // At most what was in flight or not yet saved at each kill.
    assert!(duplicates < 3 * 10_000, "{duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_from_end_skips_what_was_there_but_not_new_files() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append(&logs.join("a.log"), "old", 0..100);
    let (running, _) = start(
        d.path(),
        &tail_pipeline("logs/*.log", "read_from = \"end\""),
    )
    .await;
    let out = d.path().join("out.log");
    // Give the first glob time to place a.log at its end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&logs.join("a.log"), "a", 0..50);
    append(&logs.join("b.log"), "b", 0..20);
    until("the new lines", 10, || seen(&out).len() >= 70).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let tags = by_tag(&seen(&out));
    assert_eq!(tags.keys().collect::<Vec<_>>(), ["a", "b"], "nothing old");
    assert_eq!(tags["a"], (0..50).collect::<Vec<_>>());
    assert_eq!(
        tags["b"],
        (0..20).collect::<Vec<_>>(),
        "a file that appears later is read whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_refilled_past_our_position_is_still_seen() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("logs")).unwrap();
    let app = d.path().join("logs/app.log");
    append(&app, "a", 0..100);
    let toml = tail_pipeline("logs/*.log", "poll_interval = \"300ms\"")
        .replace("poll_interval = \"20ms\"\n", "");
    let (running, metrics) = start(d.path(), &toml).await;
    let out = d.path().join("out.log");
    until("the first lines", 10, || seen(&out).len() >= 100).await;
    // Truncated and refilled beyond the old size between two polls: only
    // the first bytes tell.
    std::fs::write(&app, "").unwrap();
    append(&app, "c", 0..1000);
    until("the new content", 10, || seen(&out).len() >= 1100).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let tags = by_tag(&seen(&out));
    assert_eq!(tags["a"], (0..100).collect::<Vec<_>>());
    assert_eq!(tags["c"], (0..1000).collect::<Vec<_>>());
    assert_eq!(metrics.get("logs").unwrap().truncations, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlink_loops_and_the_pipelines_own_output_are_not_read() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(logs.join("a")).unwrap();
    // A loop under the glob, and a link to what the sink writes.
    std::os::unix::fs::symlink(&logs, logs.join("a/loop")).unwrap();
    std::os::unix::fs::symlink(d.path().join("out.log"), logs.join("a/mirror.log")).unwrap();
    append(&logs.join("a/app.log"), "app", 0..50);
    let toml = tail_pipeline("logs/**/*.log", "");
    let (running, metrics) = start(d.path(), &toml).await;
    let out = d.path().join("out.log");
    until("the 50 events", 20, || seen(&out).len() >= 50).await;
    append(&logs.join("a/app.log"), "app", 50..60);
    until("10 more", 20, || seen(&out).len() >= 60).await;
    // Several more polls: nothing comes back from the output or the loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = seen(&out);
    assert_eq!(
        events.len(),
        60,
        "no event read twice: {:?}",
        by_tag(&events).keys().collect::<Vec<_>>()
    );
    assert_eq!(by_tag(&events)["app"], (0..60).collect::<Vec<_>>());
    running.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("the source stops")
        .unwrap();
    assert_eq!(crate::util::counts(&metrics, "logs").events_in, 60);
}

/// Lines and files appear while a source follows a folder, by watching
/// (`poll_interval = "1h"`: polling would see nothing for an hour) and by
/// polling (`poll = true`), in a folder below the glob's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_and_polled_folders_both_see_new_lines_and_files() {
    for (how, extra) in [
        ("watched", "poll_interval = \"1h\"\n"),
        ("polled", "poll = true\n"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("logs/web");
        std::fs::create_dir_all(&logs).unwrap();
        append(&logs.join("a.log"), "a", 0..10);
        let toml = tail_pipeline("logs/*/*.log", extra).replace("poll_interval = \"20ms\"\n", "");
        let toml = if how == "polled" {
            toml.replace("poll = true\n", "poll = true\npoll_interval = \"20ms\"\n")
        } else {
            toml
        };
        let (running, _) = start(d.path(), &toml).await;
        let out = d.path().join("out.log");
        until(&format!("{how}: the first lines"), 10, || {
            seen(&out).len() == 10
        })
        .await;
        for round in 0..5u64 {
            append(&logs.join("a.log"), "a", 10 + round * 10..20 + round * 10);
            let want = 20 + round as usize * 10;
            until(&format!("{how}: round {round}"), 10, || {
                seen(&out).len() == want
            })
            .await;
        }
        // A file that appears, and one in a folder that appears.
        append(&logs.join("b.log"), "b", 0..5);
        std::fs::create_dir_all(d.path().join("logs/api")).unwrap();
        append(&d.path().join("logs/api/c.log"), "c", 0..5);
        until(&format!("{how}: new files"), 10, || seen(&out).len() == 70).await;
        running.shutdown().await;
        running.wait().await.unwrap();
        let tags = by_tag(&seen(&out));
        assert_eq!(tags["a"], (0..60).collect::<Vec<_>>(), "{how}");
        assert_eq!(tags["b"], (0..5).collect::<Vec<_>>(), "{how}");
        assert_eq!(tags["c"], (0..5).collect::<Vec<_>>(), "{how}");
    }
}

/// A file read once (`follow = false`) and stopped half way: the line being
/// read at the stop is not emitted cut short (it was, as a last line
/// "without its newline"), and the next start reads from its beginning, so
/// every line arrives whole, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_half_way_through_a_file_read_once_cuts_no_line() {
    let d = tempfile::tempdir().unwrap();
    let app = d.path().join("app.log");
    // 30 MB in lines of 300 bytes: read 4 MiB at a time, the stop comes
    // between two turns, with a line half read.
    const LINES: u64 = 100_000;
    append(&app, &"a".repeat(290), 0..LINES);
    let toml = tail_pipeline("app.log", "checkpoint = \"tail.json\"")
        .replace("follow = true", "follow = false");
    let out = d.path().join("out.log");
    let (running, metrics) = start(d.path(), &toml).await;
    until("some lines", 20, || {
        crate::util::counts(&metrics, "out").events_out >= 5_000
    })
    .await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let first = seen(&out).len() as u64;
    // Every line written is whole: "a N" with N in range, nothing torn.
    let lines = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    assert_eq!(lines, first, "a line cut short at the stop");
    assert!(first < LINES, "the stop came before the end: {first}");
    let (running, _) = start(d.path(), &toml).await;
    until("the rest", 60, || seen(&out).len() as u64 >= LINES).await;
    running.shutdown().await;
    running.wait().await.unwrap();
    let ns: Vec<u64> = seen(&out).into_iter().map(|(_, n)| n).collect();
    assert_eq!(ns, (0..LINES).collect::<Vec<_>>(), "each line once, whole");
}
