//! The file sink: templated paths, line formats, rotation, compression,
//! retention, many open files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::util::{parse, plan_error, read_json_lines, run, tree, write_json_lines};

/// Today's date as the sink writes it (UTC).
fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// The content of a file, gunzipped (every member) if it ends in `.gz`.
fn content(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

/// `base`'s rotated files `base.N[.gz]` in order of N, then `base` itself.
fn rotated_series(base: &Path) -> Vec<PathBuf> {
    let name = base.file_name().unwrap().to_string_lossy().into_owned();
    let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(base.parent().unwrap())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let rest = n.strip_prefix(&format!("{name}."))?;
            let n = rest.strip_suffix(".gz").unwrap_or(rest).parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort();
    let mut out: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if base.exists() {
        out.push(base.to_path_buf());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_files_per_channel_with_missing_and_hostile_values() {
    let d = tempfile::tempdir().unwrap();
    let events = [
        json!({"timestamp":"t","channel":"app","level":"error","message":"a1"}),
        json!({"timestamp":"t","channel":"api","level":"info","message":"b1"}),
        json!({"timestamp":"t","level":"warn","message":"no channel"}),
        json!({"timestamp":"t","channel":"../../escape","message":"up"}),
        json!({"timestamp":"t","channel":"/etc/passwd","message":"abs"}),
        json!({"timestamp":"t","channel":"..","message":"dots"}),
        json!({"timestamp":"t","channel":{"nested":1},"message":"object"}),
        json!({"timestamp":"t","channel":"app","level":"error","message":"a2","user":"ann"}),
    ];
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = r#"
[sources.in]
type = "file"
path = "in.log"

[sinks.daily]
type = "file"
path = "out/logs/{channel}-{%Y-%m-%d}.log"
inputs = ["in"]

[sinks.text]
type = "file"
path = "out/text/{channel|upper}.log"
missing = "none"
format = "text"
inputs = ["in"]

[sinks.logfmt]
type = "file"
path = "out/all.logfmt"
format = "logfmt"
inputs = ["in"]
"#;
    run(d.path(), toml).await.unwrap();
    let day = today();
    let files = tree(&d.path().join("out"));
    let expect: Vec<String> = [
        format!("logs/.._.._escape-{day}.log"),
        format!("logs/_etc_passwd-{day}.log"),
        format!("logs/__-{day}.log"),
        format!("logs/api-{day}.log"),
        format!("logs/app-{day}.log"),
        format!("logs/unknown-{day}.log"),
        "all.logfmt".to_string(),
        "text/.._.._ESCAPE.log".to_string(),
        "text/API.log".to_string(),
        "text/APP.log".to_string(),
        "text/NONE.log".to_string(),
        "text/_ETC_PASSWD.log".to_string(),
        "text/__.log".to_string(),
    ]
    .into_iter()
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect();
    assert_eq!(files, expect);
    // Nothing escaped the folder.
    assert_eq!(
        tree(d.path()).len(),
        files.len() + 2,
        "{:?}",
        tree(d.path())
    );

    let app = read_json_lines(&d.path().join(format!("out/logs/app-{day}.log")));
    assert_eq!(app, [events[0].clone(), events[7].clone()]);
    let unknown = read_json_lines(&d.path().join(format!("out/logs/unknown-{day}.log")));
    assert_eq!(unknown, [events[2].clone(), events[6].clone()]);

    assert_eq!(
        std::fs::read_to_string(d.path().join("out/text/APP.log")).unwrap(),
        "[t] app.ERROR: a1\n[t] app.ERROR: a2 user=ann\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("out/text/NONE.log")).unwrap(),
        // A missing field reads as `missing`, in the line as in the file name.
        "[t] none.WARN: no channel\n[t] {\"nested\":1}.NONE: object\n"
    );
    let logfmt = std::fs::read_to_string(d.path().join("out/all.logfmt")).unwrap();
    assert_eq!(logfmt.lines().count(), events.len());
    assert_eq!(
        logfmt.lines().nth(7).unwrap(),
        "timestamp=t channel=app level=error message=a2 user=ann"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_rotation_with_gzip_loses_and_splits_nothing() {
    let d = tempfile::tempdir().unwrap();
    let toml = r#"
[sources.gen]
type = "generate"
count = 60000
seed = 7

[sinks.whole]
type = "file"
path = "whole.log"
inputs = ["gen"]

[sinks.rotated]
type = "file"
path = "out/events.log"
rotate_size = "256KiB"
compress = true
inputs = ["gen"]
"#;
    run(d.path(), toml).await.unwrap();
    let series = rotated_series(&d.path().join("out/events.log"));
    assert!(series.len() > 10, "{series:?}");
    let mut joined = Vec::new();
    for (i, path) in series.iter().enumerate() {
        let last = i == series.len() - 1;
        assert_eq!(
            path.extension().is_some_and(|e| e == "gz"),
            !last,
            "closed files are compressed, the active one is not: {path:?}"
        );
        if !last {
            let status = std::process::Command::new("gzip")
                .arg("-t")
                .arg(path)
                .status()
                .unwrap();
            assert!(status.success(), "gzip -t {path:?}");
        }
        let bytes = content(path);
        assert!(
            bytes.len() <= 256 * 1024,
            "{path:?} has {} bytes",
            bytes.len()
        );
        assert!(bytes.ends_with(b"\n"), "{path:?} ends inside a line");
        joined.extend_from_slice(&bytes);
    }
    let whole = std::fs::read(d.path().join("whole.log")).unwrap();
    assert_eq!(whole.split(|b| *b == b'\n').count() - 1, 60000);
    assert!(
        joined == whole,
        "the rotated files are not the events in order"
    );
    // Nothing left half-done.
    assert!(!tree(d.path()).iter().any(|f| f.ends_with(".tmp")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_rotation_keeps_the_newest_files() {
    let d = tempfile::tempdir().unwrap();
    let toml = r#"
[batch]
max_wait = "20ms"

[sources.gen]
type = "generate"
count = 3000
rate = 1500

[sinks.rotated]
type = "file"
path = "out/events.log"
rotate_every = "300ms"
keep_files = 2
inputs = ["gen"]

[sinks.whole]
type = "file"
path = "whole.log"
inputs = ["gen"]
"#;
    run(d.path(), toml).await.unwrap();
    let active = d.path().join("out/events.log");
    let series = rotated_series(&active);
    let numbers: Vec<String> = series
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // About seven rotations in two seconds; only the newest two remain
    // (plus the active file, unless an idle sweep just rotated it).
    let rotated: Vec<&String> = numbers
        .iter()
        .filter(|n| n.as_str() != "events.log")
        .collect();
    assert_eq!(rotated.len(), 2, "{numbers:?}");
    let first: u64 = rotated[0].rsplit('.').next().unwrap().parse().unwrap();
    assert!(first >= 3, "older files were kept: {numbers:?}");
    // What remains is the tail of the stream, in order, each line whole.
    let mut joined = Vec::new();
    for p in &series {
        joined.extend_from_slice(&content(p));
    }
    let whole = std::fs::read(d.path().join("whole.log")).unwrap();
    assert!(!joined.is_empty() && whole.ends_with(&joined));
    assert!(joined.starts_with(b"{") && joined.ends_with(b"}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_old_files_of_the_family() {
    let d = tempfile::tempdir().unwrap();
    let logs = d.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let old = [
        "app-2020-01-01.log",
        "app-2020-01-02.log.gz",
        "app-2020-01-03.log.4",
    ];
    let kept = [
        "api-2020-01-01.log",    // another channel
        "app-2020-01-01.txt",    // not of the template
        "app-notes-2020.log",    // a name the template cannot make for app
        "app-2020-01-05.log.gz", // recent
    ];
    for name in old.iter().chain(&kept) {
        let f = std::fs::File::create(logs.join(name)).unwrap();
        if *name != "app-2020-01-05.log.gz" {
            f.set_modified(hour_ago).unwrap();
        }
    }
    write_json_lines(
        &d.path().join("in.log"),
        &[json!({"timestamp":"t","channel":"app","message":"now"})],
    );
    let toml = r#"
[sources.in]
type = "file"
path = "in.log"
follow = true
poll_interval = "50ms"

[sinks.daily]
type = "file"
path = "logs/{channel}-{%Y-%m-%d}.log"
keep_for = "10m"
inputs = ["in"]
"#;
    let config = parse(d.path(), toml).unwrap();
    let plan = sluice::topology::plan(config, crate::util::runtime())
        .await
        .unwrap();
    let running = plan
        .start(sluice::base::metrics::Registry::default())
        .unwrap();
    let current = format!("app-{}.log", today());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let names = tree(&logs);
        if old.iter().all(|o| !names.contains(&o.to_string())) && names.contains(&current) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "retention did not run: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.shutdown().await;
    running.wait().await.unwrap();
    let mut expect: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    expect.push(current);
    expect.sort();
    assert_eq!(tree(&logs), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_through_few_open_files() {
    let d = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    for i in 0..5000 {
        events.push(json!({"timestamp":"t","channel":format!("c{}", (i * 7) % 50),"n":i}));
    }
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = r#"
[sources.in]
type = "file"
path = "in.log"

[sinks.out]
type = "file"
path = "out/{channel}.log"
max_open_files = 4
sync = "interval"
sync_interval = "50ms"
inputs = ["in"]
"#;
    run(d.path(), toml).await.unwrap();
    let files = tree(&d.path().join("out"));
    assert_eq!(files.len(), 50);
    let mut total = 0;
    for f in files {
        let channel = f.strip_suffix(".log").unwrap();
        let got = read_json_lines(&d.path().join("out").join(&f));
        let want: Vec<_> = events
            .iter()
            .filter(|e| e["channel"] == channel)
            .cloned()
            .collect();
        assert_eq!(got, want, "{f}");
        total += got.len();
    }
    assert_eq!(total, events.len());
}

#[tokio::test]
async fn bad_templates_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    for (path, extra, want) in [
        ("logs/{channel", "", "unclosed"),
        ("logs/{%Q}.log", "", "invalid time format"),
        ("logs/{..}.log", "", "text line template"),
        ("logs/x.log", "template = \"{a\"", "unclosed"),
        (
            "logs/x.log",
            "missing = \"../x\"",
            "cannot be part of a file name",
        ),
        (
            "logs/x.log",
            "format = \"json\"\ntemplate = \"{a}\"",
            "format = \"text\"",
        ),
        (
            "logs/x.log",
            "timezone = \"Mars/Olympus\"",
            "not a time zone",
        ),
        ("logs/x.log", "date_from = \"read\"", "unknown variant"),
    ] {
        let toml = format!(
            "[sources.in]\ntype = \"stdin\"\n\n[sinks.out]\ntype = \"file\"\npath = \"{path}\"\n{extra}\ninputs = [\"in\"]\n"
        );
        // Shapes fail to parse; what the sink's `build` checks fails the plan.
        let err = match parse(d.path(), &toml) {
            Err(e) => format!("{e:#}"),
            Ok(_) => plan_error(d.path(), &toml).await,
        };
        assert!(err.contains(want), "{path} {extra}: {err}");
        assert!(err.contains("pipeline.toml:"), "{err}");
        assert!(err.contains("sinks.out"), "{err}");
    }
}

/// #42: a Paris team's 00:00-01:00 logs landed in the previous day's file,
/// and a replayed backlog in today's. With `timezone` and `date_from =
/// "event"`, each event goes to its own local day, across both changes of
/// daylight-saving time, whatever shape its time had at the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn days_from_event_times_in_a_zone_across_daylight_saving() {
    let d = tempfile::tempdir().unwrap();
    let events = [
        // Saturday before the spring change: 23:30 in Paris (+01:00).
        json!({"timestamp":"2026-03-28T22:30:00Z","message":"a"}),
        // 00:30 in Paris, the next day; a pino time in milliseconds.
        json!({"time":1774740600000u64,"message":"b"}),
        // After the change (+02:00): 23:30, then 00:30 the next day.
        json!({"timestamp":"2026-03-29T23:30:00+02:00","message":"c"}),
        json!({"timestamp":"2026-03-29T22:30:00Z","message":"d"}),
        // The autumn change: 00:30 (+02:00), 23:30 and 00:30 (+01:00).
        json!({"timestamp":"2026-10-24T22:30:00Z","message":"e"}),
        json!({"timestamp":"2026-10-25T22:30:00Z","message":"f"}),
        json!({"timestamp":"2026-10-25T23:30:00Z","message":"g"}),
        // No time: the time of writing.
        json!({"message":"h"}),
    ];
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = r#"
[sources.in]
type = "file"
path = "in.log"

[sinks.paris]
type = "file"
path = "out/paris/app-{%Y-%m-%d}.log"
timezone = "Europe/Paris"
date_from = "event"
format = "text"
template = "{%H:%M%z} {message}"
inputs = ["in"]

[sinks.utc]
type = "file"
path = "out/utc/app-{%Y-%m-%d}.log"
date_from = "event"
format = "text"
template = "{%H:%M%z} {message}"
inputs = ["in"]

[sinks.written]
type = "file"
path = "out/written/app-{%Y-%m-%d}.log"
timezone = "Europe/Paris"
format = "text"
template = "{message}"
inputs = ["in"]
"#;
    run(d.path(), toml).await.unwrap();
    let local_today = |zone: &str| {
        let out = std::process::Command::new("date")
            .env("TZ", zone)
            .arg("+%Y-%m-%d")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let files = |sub: &str| -> Vec<(String, String)> {
        tree(&d.path().join("out").join(sub))
            .into_iter()
            .map(|f| {
                let text =
                    std::fs::read_to_string(d.path().join("out").join(sub).join(&f)).unwrap();
                (f, text)
            })
            .collect()
    };
    let paris_today = local_today("Europe/Paris");
    let paris = files("paris");
    let (today_file, today_text) = paris
        .iter()
        .find(|(f, _)| *f == format!("app-{paris_today}.log"))
        .cloned()
        .unwrap_or_else(|| panic!("no file for today in Paris: {paris:?}"));
    assert!(today_text.ends_with(" h\n"), "{today_text}");
    let rest: Vec<(String, String)> = paris
        .into_iter()
        .filter(|(f, _)| *f != today_file)
        .collect();
    let want = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect()
    };
    assert_eq!(
        rest,
        want(&[
            ("app-2026-03-28.log", "23:30+0100 a\n"),
            ("app-2026-03-29.log", "00:30+0100 b\n23:30+0200 c\n"),
            ("app-2026-03-30.log", "00:30+0200 d\n"),
            ("app-2026-10-25.log", "00:30+0200 e\n23:30+0100 f\n"),
            ("app-2026-10-26.log", "00:30+0100 g\n"),
        ])
    );
    let utc_today = local_today("UTC");
    let utc: Vec<(String, String)> = files("utc")
        .into_iter()
        .filter(|(f, _)| *f != format!("app-{utc_today}.log"))
        .collect();
    assert_eq!(
        utc,
        want(&[
            ("app-2026-03-28.log", "22:30+0000 a\n23:30+0000 b\n"),
            ("app-2026-03-29.log", "21:30+0000 c\n22:30+0000 d\n"),
            ("app-2026-10-24.log", "22:30+0000 e\n"),
            ("app-2026-10-25.log", "22:30+0000 f\n23:30+0000 g\n"),
        ])
    );
    // The default: every line in the file of the day it was written.
    assert_eq!(
        files("written"),
        want(&[(
            &format!("app-{paris_today}.log"),
            "a\nb\nc\nd\ne\nf\ng\nh\n"
        )])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_the_filesystem_refuses_go_to_the_dead_letters_and_the_sink_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let emoji = "🦀".repeat(100); // 400 bytes: past the 255-byte name limit
    let long = "x".repeat(100);
    // A folder where one channel's file would go: EISDIR.
    std::fs::create_dir_all(d.path().join("out/dir-t-k.log")).unwrap();
    let mut events = Vec::new();
    for i in 0..2000 {
        let (channel, tag) = match i % 4 {
            0 => ("plain".to_string(), "t".to_string()),
            1 => (emoji.clone(), "t".to_string()),
            // Three fields of 100 bytes each: past 255 bytes, ENAMETOOLONG.
            2 => (long.clone(), long.clone()),
            _ => ("dir".to_string(), "t".to_string()),
        };
        let kind = if i % 4 == 2 {
            long.clone()
        } else {
            "k".to_string()
        };
        events.push(json!({"timestamp":"t","channel":channel,"tag":tag,"kind":kind,"n":i}));
    }
    write_json_lines(&d.path().join("in.log"), &events);
    let toml = r#"
[reload]
watch = false

[sources.in]
type = "file"
path = "in.log"

[sinks.out]
type = "file"
path = "out/{channel}-{tag}-{kind}.log"
inputs = ["in"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#;
    // The run ends: nothing wedges on a name that can never be written.
    tokio::time::timeout(Duration::from_secs(60), run(d.path(), toml))
        .await
        .expect("the run ends")
        .unwrap();
    let plain = read_json_lines(&d.path().join("out/plain-t-k.log"));
    assert_eq!(plain.len(), 500);
    // The emoji channel is cut to 100 bytes on a character boundary.
    let cut = "🦀".repeat(25);
    assert_eq!(cut.len(), 100);
    let crabs = read_json_lines(&d.path().join(format!("out/{cut}-t-k.log")));
    assert_eq!(crabs.len(), 500);
    let dead = read_json_lines(&d.path().join("dead.log"));
    assert_eq!(dead.len(), 1000, "the refused ones, each once");
    for letter in &dead {
        assert_eq!(letter["component"], "out");
        assert_eq!(letter["error"]["kind"], "write");
        let message = letter["error"]["message"].as_str().unwrap();
        let n = letter["event"]["n"].as_u64().unwrap();
        match n % 4 {
            2 => assert!(message.contains("too long"), "{message}"),
            3 => assert!(message.to_lowercase().contains("directory"), "{message}"),
            _ => panic!("event {n} should have been written"),
        }
    }
}

#[test]
fn templates_ending_in_a_field_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let toml = "[sources.in]\ntype = \"stdin\"\n\n[sinks.out]\ntype = \"file\"\npath = \"out/{channel}\"\ninputs = [\"in\"]\n";
    let err = format!("{:#}", parse(d.path(), toml).unwrap_err());
    assert!(err.contains("pipeline.toml:"), "{err}");
    assert!(err.contains("sinks.out.path"), "{err}");
    assert!(err.contains("end it in text such as `.log`"), "{err}");
}
