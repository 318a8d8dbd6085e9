//! `sluice timeline` over fixtures with known requests: order, counts and
//! latencies checked against values computed here independently.

use crate::util::sluice;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sluice::timeline::{self, read::parse_time_str, Format, Mode, Options};

/// 10:00:00.000 on 2026-11-23, in milliseconds.
const T0: i64 = 1_795_428_000_000;

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Requests: (id, [(component, offset ms)]). req-5 stops in trading.
fn requests() -> Vec<(&'static str, Vec<(&'static str, i64)>)> {
    vec![
        (
            "req-1",
            vec![
                ("webhook", 0),
                ("webhook", 5),
                ("trading", 20),
                ("exchange", 70),
                ("trading", 90),
            ],
        ),
        (
            "req-2",
            vec![
                ("webhook", 100),
                ("trading", 130),
                ("exchange", 150),
                ("trading", 200),
            ],
        ),
        (
            "req-3",
            vec![
                ("webhook", 300),
                ("trading", 310),
                ("exchange", 400),
                ("trading", 405),
            ],
        ),
        (
            "req-4",
            vec![
                ("webhook", 500),
                ("webhook", 540),
                ("trading", 600),
                ("exchange", 610),
                ("trading", 700),
            ],
        ),
        ("req-5", vec![("webhook", 800), ("trading", 850)]),
    ]
}

/// Write one file per component, each in time order.
fn write_fixture(dir: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    for (id, hops) in requests() {
        for (i, (component, offset)) in hops.iter().enumerate() {
            let level = if *component == "exchange" && id == "req-3" {
                "error"
            } else {
                "info"
            };
            all.push(json!({
                "timestamp": iso(T0 + offset), "level": level, "service": component,
                "message": format!("{id} step {i}"), "request_id": id, "data": {"step": i},
            }));
        }
    }
    // Debug noise without a request id.
    all.push(json!({"timestamp": iso(T0 + 50), "level": "debug", "service": "trading", "message": "tick"}));
    all.sort_by_key(|e| e["timestamp"].as_str().unwrap().to_string());
    for c in ["webhook", "trading", "exchange"] {
        let mut f = std::fs::File::create(dir.join(format!("{c}-2026-11-23.log"))).unwrap();
        for e in all.iter().filter(|e| e["service"] == c) {
            writeln!(f, "{e}").unwrap();
        }
    }
    all
}

fn report(o: &Options) -> (String, timeline::Summary) {
    let mut out = Vec::new();
    let summary = timeline::run(o, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), summary)
}

fn options(dir: &Path) -> Options {
    Options {
        paths: vec![dir.to_path_buf()],
        ..Options::default()
    }
}

/// The median as the midpoint of the two middle samples for an even count,
/// written out again here on purpose.
fn midpoint_median(mut v: Vec<i64>) -> i64 {
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// Nearest-rank percentile, written out again here on purpose.
fn nearest_rank(mut v: Vec<i64>, p: f64) -> i64 {
    v.sort();
    let k = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[k.max(1) - 1]
}

#[test]
fn order_counts_and_latencies() {
    let d = tempfile::tempdir().unwrap();
    let all = write_fixture(d.path());
    let (json_text, summary) = report(&Options {
        format: Format::Json,
        ..options(d.path())
    });
    let doc: Value = serde_json::from_str(&json_text).unwrap();

    // Order: exactly every event, in time order.
    let messages: Vec<&str> = doc["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = all.iter().map(|e| e["message"].as_str().unwrap()).collect();
    assert_eq!(messages, want);
    assert_eq!(summary.events, all.len() as u64);
    assert_eq!(summary.per_component["trading"].total, 10);
    assert_eq!(summary.per_component["trading"].debug, 1);
    assert_eq!(summary.per_component["exchange"].error, 1);

    // Hops: from the last event of a segment to the first of the next.
    let mut expected: Vec<((String, String), Vec<i64>)> = Vec::new();
    for (_, hops) in requests() {
        let mut segments: Vec<(&str, i64, i64)> = Vec::new();
        for (c, t) in hops {
            match segments.last_mut() {
                Some(s) if s.0 == c => s.2 = t,
                _ => segments.push((c, t, t)),
            }
        }
        for w in segments.windows(2) {
            let key = (w[0].0.to_string(), w[1].0.to_string());
            let latency = (w[1].1 - w[0].2) * 1000;
            match expected.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(latency),
                None => expected.push((key, vec![latency])),
            }
        }
    }
    assert_eq!(summary.hops.len(), expected.len());
    for ((from, to), samples) in expected {
        let hop = summary
            .hops
            .iter()
            .find(|h| h.from == from && h.to == to)
            .unwrap();
        assert_eq!(hop.requests, samples.len() as u64, "{from}->{to}");
        assert_eq!(hop.min_us, *samples.iter().min().unwrap());
        assert_eq!(hop.max_us, *samples.iter().max().unwrap());
        assert_eq!(hop.median_us, midpoint_median(samples.clone()));
        assert_eq!(hop.p95_us, nearest_rank(samples, 95.0));
    }
    // webhook -> trading: 15, 30, 10, 60, 50 ms.
    let wt = summary
        .hops
        .iter()
        .find(|h| h.from == "webhook" && h.to == "trading")
        .unwrap();
    assert_eq!(
        (wt.min_us, wt.median_us, wt.max_us),
        (10_000, 30_000, 60_000)
    );

    // Slowest end to end: req-4 (200 ms), then req-2 (100 ms)...
    let slowest: Vec<(&str, i64)> = summary
        .slowest
        .iter()
        .map(|r| (r.id.as_str(), r.total_us))
        .collect();
    assert_eq!(
        slowest[..3],
        [("req-4", 200_000), ("req-3", 105_000), ("req-2", 100_000)]
    );
    // req-5 skips exchange but ends in trading like every other request: not lost.
    assert_eq!(summary.expected_end.as_deref(), Some("trading"));
    assert_eq!(summary.lost_total, 0);
    assert_eq!(summary.requests, 5);
}

#[test]
fn lost_requests_are_listed() {
    let d = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(d.path().join("all.log")).unwrap();
    for (i, (id, comps)) in [
        ("a", vec!["web", "api", "db"]),
        ("b", vec!["web", "api", "db"]),
        ("c", vec!["web", "api"]),
    ]
    .into_iter()
    .enumerate()
    {
        for (j, c) in comps.iter().enumerate() {
            let t = iso(T0 + (i * 100 + j * 10) as i64);
            writeln!(
                f,
                "{}",
                json!({"timestamp": t, "service": c, "message": format!("{id} in {c}"), "request_id": id})
            )
            .unwrap();
        }
    }
    drop(f);
    let (md, summary) = report(&options(d.path()));
    assert_eq!(summary.expected_end.as_deref(), Some("db"));
    assert_eq!(summary.lost_total, 1);
    assert_eq!(summary.lost[0].id, "c");
    // #42: with its last message, which says why it stopped.
    assert!(
        md.contains("- c stopped in api (path: web → api), last: c in api"),
        "{md}"
    );
}

#[test]
fn markdown_layout() {
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let (md, _) = report(&Options {
        min_level: Some("info".into()),
        ..options(d.path())
    });
    assert!(md.starts_with("# Timeline\n"), "{md}");
    assert!(md.contains("- Level: info and above"));
    assert!(md.contains("### 2026-11-23"));
    assert!(md.contains("**10:00:00.000** [webhook] INFO - req-1 step 0\n  - request_id: req-1\n  - data: {\"step\":0}\n"), "{md}");
    assert!(!md.contains("tick"), "debug filtered out");
    assert!(
        md.contains("| webhook → trading | 5 | 10.000 ms | 30.000 ms | 60.000 ms | 60.000 ms |"),
        "{md}"
    );
    // Errors first in the statistics table.
    let table = &md[md.find("| component |").unwrap()..];
    assert!(
        table
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("| exchange | 1 |"),
        "{table}"
    );
}

#[test]
fn markdown_milliseconds_past_255() {
    let d = tempfile::tempdir().unwrap();
    let lines: Vec<Value> = [256, 544, 999]
        .iter()
        .map(|ms| json!({"timestamp": iso(T0 + 1000 + ms), "service": "orders", "level": "info", "message": format!("at {ms}")}))
        .collect();
    let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(d.path().join("orders.log"), text).unwrap();
    let (md, _) = report(&options(d.path()));
    for ms in [256, 544, 999] {
        assert!(
            md.contains(&format!("**10:00:01.{ms}** [orders] INFO - at {ms}")),
            "{md}"
        );
    }
}

#[test]
fn all_refuses_the_filters_it_would_override() {
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let out = sluice()
        .args(["timeline", "--all", "--level", "error"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--all") && err.contains("--level"), "{err}");
    let out = sluice()
        .args(["timeline", "--all"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("tick"),
        "--all keeps debug"
    );
}

#[test]
fn rotated_files_in_a_folder_are_read() {
    let d = tempfile::tempdir().unwrap();
    let line = |ms: i64, m: &str| {
        format!(
            "{}\n",
            json!({"timestamp": iso(T0 + ms), "service": "orders", "level": "info", "message": m})
        )
    };
    std::fs::write(d.path().join("orders.log"), line(300, "current")).unwrap();
    std::fs::write(d.path().join("orders.log.1"), line(200, "rotated")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(line(100, "rotated and compressed").as_bytes())
        .unwrap();
    std::fs::write(d.path().join("orders.log.2.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(d.path().join("notes.txt.1"), "not a log").unwrap();
    let (md, s) = report(&options(d.path()));
    assert_eq!(s.events, 3, "{md}");
    let at = |m: &str| {
        md.find(&format!("INFO - {m}\n"))
            .unwrap_or_else(|| panic!("{m}: {md}"))
    };
    assert!(at("rotated and compressed") < at("rotated") && at("rotated") < at("current"));
}

#[test]
fn component_mode_filters_and_grep() {
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let (md, s) = report(&Options {
        mode: Mode::Component,
        components: vec!["Trading".into(), "exchange".into()],
        ..options(d.path())
    });
    let trading = md.find("## trading").unwrap();
    let exchange = md.find("## exchange").unwrap();
    assert!(exchange < trading, "sections in name order");
    assert!(!md.contains("[webhook]"));
    assert_eq!(s.events, 10 + 4);
    assert_eq!(
        s.files.len(),
        2,
        "the webhook file is not read: {:?}",
        s.files
    );

    let (_, s) = report(&Options {
        grep: Some("REQ-3".into()),
        ..options(d.path())
    });
    assert_eq!(s.events, 4);
}

#[test]
fn clocks_gz_unsorted_and_problems() {
    let d = tempfile::tempdir().unwrap();
    let lines = [
        json!({"timestamp": "2026-11-23T12:00:00.300+02:00", "service": "a", "message": "third"})
            .to_string(),
        json!({"time": (T0 / 1000), "service": "a", "message": "first"}).to_string(),
        json!({"ts": T0 + 200, "service": "a", "message": "second"}).to_string(),
        json!({"timestamp": "2026-11-23 10:00:00.400", "service": "a", "message": "fourth"})
            .to_string(),
        json!({"service": "a", "message": "no clock"}).to_string(),
        "{not json".to_string(),
    ];
    // Unsorted on purpose, and gzipped.
    let file = std::fs::File::create(d.path().join("a.log.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    for l in &lines {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap();
    let (md, s) = report(&options(d.path()));
    let order: Vec<usize> = ["first", "second", "third", "fourth"]
        .iter()
        .map(|m| md.find(&format!("- {m}\n")).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{md}");
    assert_eq!(s.events, 4);
    assert_eq!(s.no_timestamp, 1);
    assert_eq!(s.malformed, 1);
    assert!(md.contains("a.log.gz:5: no readable timestamp"), "{md}");
    assert!(md.contains("a.log.gz:6: malformed"), "{md}");
    assert_eq!(
        parse_time_str("2026-11-23T12:00:00.300+02:00"),
        Some((T0 + 300) * 1000)
    );
}

#[test]
fn newest_files_per_component() {
    let d = tempfile::tempdir().unwrap();
    for (i, day) in ["21", "22", "23"].iter().enumerate() {
        let path = d.path().join(format!("web-2026-11-{day}.log"));
        std::fs::write(
            &path,
            format!(
                "{}\n",
                json!({"timestamp": iso(T0 + i as i64), "service": "web", "message": day})
            ),
        )
        .unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + i as u64),
        )
        .unwrap();
    }
    let (_, s) = report(&Options {
        newest_files: Some(2),
        ..options(d.path())
    });
    assert_eq!(s.events, 2);
    assert!(
        s.files.iter().all(|(f, _)| !f.contains("11-21")),
        "{:?}",
        s.files
    );
}

#[test]
fn clear_messages_for_missing_dir_and_empty_window() {
    let out = sluice()
        .args(["timeline", "/nonexistent/logs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read /nonexistent/logs"), "{err}");

    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let tmp = tempfile::tempdir().unwrap();
    let out = sluice()
        .arg("timeline")
        .arg(d.path())
        .args(["--from", "2030-01-01T00:00:00Z"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    // The temporary records are gone with the run.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no events match these filters"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No events match these filters."));
}

#[test]
fn interactive_mode_in_a_real_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test (scripts/setup-test-deps installs it)");
    }
    let d = tempfile::tempdir().unwrap();
    write_fixture(d.path());
    let out = d.path().join("report.md");
    let session = format!("sluice-test-{}", std::process::id());
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    let cmd = format!(
        "{} timeline -i {}; sleep 30",
        bin.display(),
        d.path().display()
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "200",
            "-y",
            "50",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let send = |keys: &str| {
        std::thread::sleep(Duration::from_millis(300));
        Command::new("tmux")
            .args(["send-keys", "-t", &session, keys, "Enter"])
            .status()
            .unwrap();
    };
    let capture = || {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Wait for the component list.
    let mut screen = String::new();
    for _ in 0..100 {
        screen = capture();
        if screen.contains("Components (") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(screen.contains("2) trading (10 events)"), "{screen}");
    send("nope");
    send("1,3"); // exchange, webhook
    send("all");
    send("info");
    send("component");
    send(out.to_str().unwrap());
    let mut done = false;
    for _ in 0..100 {
        if capture().contains("wrote ") {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = capture();
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    assert!(done, "{screen}");
    assert!(screen.contains("unknown component `nope`"), "{screen}");
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(
        md.contains("## exchange") && md.contains("## webhook") && !md.contains("## trading"),
        "{md}"
    );
    assert!(md.contains("- Mode: component"));
}
