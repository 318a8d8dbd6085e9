//! Shared helpers: a runtime with a test cache, running pipelines in
//! process, reading JSON lines.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice::base::metrics::{Registry, Snapshot};
use sluice::config::PipelineConfig;
use sluice::plugin::Runtime;
use sluice::topology;

/// Every file under `dir`, relative to it, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One plugin runtime for all tests, with compiled components cached under
/// `target/`, so each component compiles once per machine.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Arc::new(Runtime::new(Some(root().join("target").join("test-plugin-cache"))).unwrap())
        })
        .clone()
}

/// Write `toml` as `dir/pipeline.toml` and parse it.
pub fn parse(dir: &Path, toml: &str) -> anyhow::Result<PipelineConfig> {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml)?;
    PipelineConfig::load(&path)
}

/// Parse and plan (load plugins, check the graph); the error as text.
pub async fn plan_error(dir: &Path, toml: &str) -> String {
    let result = async {
        let config = parse(dir, toml)?;
        topology::plan(config, runtime()).await
    }
    .await;
    match result {
        Ok(_) => panic!("expected the pipeline to be rejected:\n{toml}"),
        Err(e) => format!("{e:#}"),
    }
}

/// Run a pipeline file to completion (its sources must be finite).
pub async fn run_file(path: &Path) -> anyhow::Result<Registry> {
    let config = PipelineConfig::load(path)?;
    let plan = topology::plan(config, runtime()).await?;
    let metrics = Registry::default();
    let running = plan.start(metrics.clone())?;
    tokio::time::timeout(Duration::from_secs(120), running.wait())
        .await
        .map_err(|_| anyhow::anyhow!("pipeline did not finish in 120 s"))??;
    Ok(metrics)
}

/// Write `toml` as `dir/pipeline.toml` and run it to completion.
pub async fn run(dir: &Path, toml: &str) -> anyhow::Result<Registry> {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml)?;
    run_file(&path).await
}

/// Read a file of JSON lines.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Write events as JSON lines.
pub fn write_json_lines(path: &Path, events: &[serde_json::Value]) {
    let mut text = String::new();
    for e in events {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// A component's counters.
pub fn counts(metrics: &Registry, name: &str) -> Snapshot {
    metrics
        .get(name)
        .unwrap_or_else(|| panic!("no metrics for {name}"))
}

/// A plugin path as a TOML string literal.
pub fn toml_path(path: &str) -> String {
    format!("{path:?}")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `sluice` binary, which sits next to the `deps` folder of this test
/// executable (cargo builds it for `host/tests/bin.rs`).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("sluice");
    assert!(
        bin.exists(),
        "{} not built (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A command running the binary with the tests' plugin cache and quiet logs.
pub fn sluice() -> std::process::Command {
    let mut cmd = std::process::Command::new(sluice_bin());
    cmd.env(
        "SLUICE_CACHE_DIR",
        root().join("target").join("test-plugin-cache"),
    );
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// `sluice run --quiet` on a pipeline file, in the background, logging
/// only errors.
pub fn spawn_run(pipeline: &Path) -> std::process::Child {
    sluice()
        .args(["run", "--quiet"])
        .arg(pipeline)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap()
}

/// Resident memory of this process, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Write `toml` as `dir/pipeline.toml` and start it.
pub async fn start(
    dir: &Path,
    toml: &str,
) -> (sluice::topology::Running, sluice::base::metrics::Registry) {
    std::fs::write(dir.join("pipeline.toml"), toml).unwrap();
    let plan = sluice::topology::plan(
        sluice::config::PipelineConfig::load(&dir.join("pipeline.toml")).unwrap(),
        runtime(),
    )
    .await
    .unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    (running, metrics)
}

/// Wait until something accepts connections on `port` on loopback (a
/// source binds in its task, after `start` returns), for at most 20 s.
pub async fn accepting(port: u16) {
    until(&format!("something listening on {port}"), 20, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
}

/// Wait until `f` holds, for at most `secs` seconds.
pub async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Send `request` (a whole HTTP/1.1 request, `Connection: close`) to a
/// port on loopback; the whole answer, head and body, as text.
pub fn raw_http(port: u16, request: &str) -> String {
    crate::client::raw_text(port, request, b"")
}

/// The events of a file sink behind a plugin swapped under load: checks
/// that they are every generated event once and in order (`seq` 1..n), and
/// returns them with the runs of their `tag`, in order (`["a", "b"]` for
/// one switch-over from `a` to `b`).
pub fn ordered_tag_runs(out: &Path) -> (usize, Vec<String>) {
    let events = read_json_lines(out);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(seqs == want, "events lost, repeated or out of order");
    let mut tags: Vec<String> = Vec::new();
    for e in &events {
        let t = e["tag"].as_str().expect("every event tagged");
        if tags.last().map(String::as_str) != Some(t) {
            tags.push(t.to_string());
        }
    }
    (events.len(), tags)
}

/// A process a test runs beside sluice (a server), started once it has
/// printed `ready` on its stdout, killed when dropped.
pub struct Helper(std::process::Child);

impl Helper {
    pub fn start(cmd: &mut std::process::Command, what: &str) -> Helper {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e} (scripts/setup-test-deps installs it)"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{what} did not start");
        Helper(child)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON lines of a file, or none while it does not exist.
pub fn json_lines_if_any(path: &Path) -> Vec<serde_json::Value> {
    if path.exists() {
        read_json_lines(path)
    } else {
        Vec::new()
    }
}

/// The whole JSON lines of a file being written (a last line not ended
/// yet is left for later), or none while it does not exist.
pub fn whole_json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |i| &text[..i]);
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Run `cmd` on a blocking thread; it must succeed (its stderr is the
/// failure's message). Its stdout.
pub async fn succeeds(mut cmd: std::process::Command) -> String {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Write `toml` as `dir/pipeline.toml`, start it in process and serve its
/// `[admin]` port (which it must have).
pub async fn start_with_admin(
    dir: &Path,
    toml: &str,
) -> (
    sluice::topology::Running,
    sluice::base::metrics::Registry,
    std::path::PathBuf,
) {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    let address = config.admin.as_ref().unwrap().address.clone();
    let plan = topology::plan(config, runtime()).await.unwrap();
    let metrics = sluice::base::metrics::Registry::default();
    let running = plan.start(metrics.clone()).unwrap();
    let admin = sluice::admin::Admin {
        metrics: metrics.clone(),
        reload: running.reload_handle(),
        pipeline: path.clone(),
        token: None,
        hosts: Vec::new(),
        tls: None,
    };
    sluice::admin::serve(&address, admin).await.unwrap();
    (running, metrics, path)
}
