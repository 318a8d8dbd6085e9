//! Hot reload: plugin swaps under load, refused versions, pipeline reloads,
//! and the admin port and SIGHUP triggers.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice::base::metrics::Registry;
use sluice::config::PipelineConfig;
use sluice::topology;
use sluice::topology::reload::ReloadHandle;
use sluice::topology::running::StopHandle;

use crate::util::{counts, free_port, raw_http as http, read_json_lines, start};
use crate::{FILTER, TAG, TAG_B};

/// Replace a file atomically: write aside, then rename over it.
pub fn replace(path: &Path, from: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// generate -> `tag.wasm` -> `out.log`, small batches, no file watching;
/// `extra` appended.
pub fn pipeline(extra: &str) -> String {
    format!(
        r#"[batch]
max_events = 64
max_wait = "10ms"

[reload]
watch = false

[sources.gen]
type = "generate"
seed = 3

[transforms.tag]
plugin = "tag.wasm"
inputs = ["gen"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["tag"]
{extra}"#
    )
}

/// Wait until the sink has written an event tagged `tag` after `after` events.
async fn wait_for_tag(metrics: &Registry, out: &Path, tag: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        // Read the tail of the file: the last complete line.
        if counts(metrics, "out").events_out > 0 {
            if let Ok(text) = std::fs::read_to_string(out) {
                if let Some(last) = text.lines().rev().find(|l| l.ends_with('}')) {
                    if last.contains(&format!("\"tag\":\"{tag}\"")) {
                        return;
                    }
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "version {tag} never took over"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Check the output: every generated event once, in order, each tagged, and
/// the tags forming `runs` alternating runs starting with `a`.
/// A generate -> tag -> file pipeline running from a folder that holds a
/// copy of the tag plugin (version `a`), its first tagged events written.
struct Tagging {
    d: tempfile::TempDir,
    plugin: PathBuf,
    out: PathBuf,
    metrics: Registry,
    reload: ReloadHandle,
    stop: StopHandle,
    waiter: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Tagging {
    async fn start() -> Self {
        Self::start_with(&pipeline("")).await
    }

    /// The tagging pipeline from `toml` (a [`pipeline`], changed).
    async fn start_with(toml: &str) -> Self {
        let d = tempfile::tempdir().unwrap();
        let plugin = d.path().join("tag.wasm");
        std::fs::copy(TAG, &plugin).unwrap();
        let (running, metrics) = start(d.path(), toml).await;
        let reload = running.reload_handle();
        let stop = running.stop_handle();
        let waiter = tokio::spawn(running.wait());
        let out = d.path().join("out.log");
        wait_for_tag(&metrics, &out, "a").await;
        Self {
            d,
            plugin,
            out,
            metrics,
            reload,
            stop,
            waiter,
        }
    }

    /// Stop the pipeline and wait for it to drain, without error.
    async fn stop(self) -> tempfile::TempDir {
        self.stop.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        self.d
    }
}

fn check_runs(out: &Path, runs: usize) -> usize {
    let (n, tags) = crate::util::ordered_tag_runs(out);
    let expected: Vec<&str> = (0..runs)
        .map(|i| if i % 2 == 0 { "a" } else { "b" })
        .collect();
    assert_eq!(
        tags, expected,
        "tags must switch over in order, once per swap"
    );
    n
}

/// On three instances of the plugin (whatever the machine's cores): every
/// swap still takes effect at one batch for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_lose_nothing() {
    let toml = pipeline("").replace(
        "inputs = [\"gen\"]\n",
        "inputs = [\"gen\"]\nconcurrency = 3\n",
    );
    assert!(toml.contains("concurrency = 3"));
    let t = Tagging::start_with(&toml).await;
    let (out, metrics) = (t.out.clone(), t.metrics.clone());
    for i in 0..50 {
        let (file, tag) = if i % 2 == 0 { (TAG_B, "b") } else { (TAG, "a") };
        replace(&t.plugin, file);
        assert!(
            t.reload.reload_plugin("tag").await.unwrap(),
            "swap {i} not taken"
        );
        wait_for_tag(&metrics, &out, tag).await;
    }
    let _dir = t.stop().await;
    let n = check_runs(&out, 51);
    assert!(n > 1000, "the generator ran at full speed: {n} events");
    assert_eq!(counts(&metrics, "tag").events_in as usize, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_versions_are_refused_while_traffic_continues() {
    let t = Tagging::start().await;
    let (plugin, out) = (t.plugin.clone(), t.out.clone());
    let (metrics, reload) = (t.metrics.clone(), t.reload.clone());

    // Not wasm at all, then a real component whose init rejects the config.
    std::fs::write(&plugin, b"not wasm").unwrap();
    let e = reload.reload_plugin("tag").await.unwrap_err();
    assert!(
        format!("{e:#}").contains("not a WebAssembly component"),
        "{e:#}"
    );
    replace(&plugin, FILTER);
    let e = reload.reload_plugin("tag").await.unwrap_err();
    assert!(format!("{e:#}").contains("rejected its config"), "{e:#}");
    let before = counts(&metrics, "out").events_out;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        counts(&metrics, "out").events_out > before,
        "traffic continues on the old version"
    );

    // And a good version still goes in afterwards.
    replace(&plugin, TAG_B);
    assert!(reload.reload_plugin("tag").await.unwrap());
    wait_for_tag(&metrics, &out, "b").await;
    let _dir = t.stop().await;
    check_runs(&out, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_waits_for_whole_files() {
    let t = Tagging::start().await;
    let (plugin, out, metrics) = (t.plugin.clone(), t.out.clone(), t.metrics.clone());
    let watcher = tokio::spawn(topology::reload::watch(
        t.reload.clone(),
        t.d.path().join("pipeline.toml"),
        // Watched: the folder's events wake it; 50 ms of quiet loads.
        sluice::config::ReloadConfig {
            watch: true,
            poll_interval: Duration::from_millis(50),
            poll: false,
        },
        metrics.clone(),
    ));

    // A slow writer: half the bytes, a pause, the rest. While the file is
    // partial, the old version keeps running; once whole, the new one wins.
    let bytes = std::fs::read(TAG_B).unwrap();
    let mut f = std::fs::File::create(&plugin).unwrap();
    f.write_all(&bytes[..bytes.len() / 2]).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.write_all(&bytes[bytes.len() / 2..]).unwrap();
    f.flush().unwrap();
    drop(f);
    wait_for_tag(&metrics, &out, "b").await;
    // Then an atomic rename back to `a`.
    replace(&plugin, TAG);
    wait_for_tag(&metrics, &out, "a").await;
    assert!(metrics.reloads_ok.load(Ordering::Relaxed) >= 2);
    let _dir = t.stop().await;
    watcher.abort();
    check_runs(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_reload_adds_and_removes_sinks_and_refuses_bad_files() {
    let t = Tagging::start().await;
    let (out, metrics, reload) = (t.out.clone(), t.metrics.clone(), t.reload.clone());
    let dir = t.d.path().to_path_buf();

    // An invalid pipeline is refused and changes nothing.
    std::fs::write(
        dir.join("bad.toml"),
        pipeline("").replace("inputs = [\"gen\"]", "inputs = [\"gne\"]"),
    )
    .unwrap();
    let bad = PipelineConfig::load(&dir.join("bad.toml")).unwrap();
    let e = reload.reload(bad).await.unwrap_err();
    assert!(format!("{e:#}").contains("unknown input `gne`"), "{e:#}");

    // Move the output to a new sink `out2` (and drop `out`): `out` drains.
    let moved = pipeline("")
        .replace("[sinks.out]", "[sinks.out2]")
        .replace("out.log", "out2.log");
    std::fs::write(dir.join("pipeline.toml"), &moved).unwrap();
    reload
        .reload(PipelineConfig::load(&dir.join("pipeline.toml")).unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.get("out2").is_none_or(|s| s.events_out < 500) {
        assert!(tokio::time::Instant::now() < deadline, "out2 never filled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _dir = t.stop().await;
    let mut seqs: Vec<u64> = read_json_lines(&out)
        .into_iter()
        .chain(read_json_lines(&dir.join("out2.log")))
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let first_len = read_json_lines(&out).len();
    seqs.sort();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(
        seqs == want,
        "every event once across the old and the new sink"
    );
    assert!(first_len > 0 && first_len < seqs.len());
}

#[test]
fn admin_reload_and_sighup_in_the_binary() {
    let d = tempfile::tempdir().unwrap();
    let plugin = d.path().join("tag.wasm");
    std::fs::copy(TAG, &plugin).unwrap();
    let port = free_port();
    let toml = pipeline(&format!("\n[admin]\naddress = \"127.0.0.1:{port}\"\n"))
        .replace("seed = 3", "seed = 3\nrate = 2000.0");
    std::fs::write(d.path().join("pipeline.toml"), toml).unwrap();
    let mut child = crate::util::sluice()
        .arg("run")
        .arg(d.path().join("pipeline.toml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = d.path().join("out.log");
    let wait_tag = |tag: &str| {
        for _ in 0..400 {
            if let Ok(text) = std::fs::read_to_string(&out) {
                if text
                    .lines()
                    .rev()
                    .find(|l| l.ends_with('}'))
                    .is_some_and(|l| l.contains(&format!("\"tag\":\"{tag}\"")))
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("tag {tag} never seen");
    };
    // Wait for the admin port.
    let mut health = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .unwrap();
            s.read_to_string(&mut health).unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    wait_tag("a");

    replace(&plugin, TAG_B);
    let r = http(
        port,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("\"ok\""), "{r}");
    wait_tag("b");

    replace(&plugin, TAG);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_tag("a");

    let metrics = http(
        port,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        metrics.contains("sluice_reloads_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_events_in_total{component=\"tag\",kind=\"transform\"}"),
        "{metrics}"
    );

    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    check_runs(&out, 3);
}
