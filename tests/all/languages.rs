//! Plugins in Python, JavaScript, TypeScript and Rust, made and built the
//! way a user does (`sluice plugin new`, `sluice plugin build`, with the
//! real componentize-py, componentize-js, tsc and cargo), then run in
//! pipelines: the same output as the bundled Rust filter, exceptions in the
//! dead letters with their message, and a swap under load.
//!
//! The toolchains come from `scripts/setup-test-deps`; built projects are
//! kept under `target/lang-plugins/`, keyed by the kits' contents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::util::{counts, read_json_lines, root, run, sluice, start};

/// A hash of everything a built project depends on.
fn kits_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let mut files = Vec::new();
        for dir in [
            "plugins/kits",
            "plugins/sdk/src",
            "wit",
            "tests/plugins/lang",
        ] {
            collect(&root().join(dir), &mut files);
        }
        files.sort();
        let mut h = Sha256::new();
        for f in files {
            h.update(f.to_string_lossy().as_bytes());
            h.update(std::fs::read(&f).unwrap());
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
    .clone()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// `sluice plugin new NAME --lang LANG`, the entry replaced by `entry` (a
/// file of `tests/plugins/lang`) if given, then `sluice plugin build`.
/// Built once per kits' contents; returns the component.
fn built(name: &str, lang: &str, entry: Option<(&str, &str)>) -> PathBuf {
    static LOCKS: OnceLock<Mutex<BTreeMap<String, ()>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(Default::default);
    // One build at a time: each toolchain uses both cores.
    let _guard = locks.lock().unwrap_or_else(|e| e.into_inner());
    let base = root().join("target").join("lang-plugins");
    let dir = base.join(format!("{name}-{}", kits_hash()));
    let wasm = dir.join(format!("{name}.wasm"));
    if wasm.exists() {
        return wasm;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&base).unwrap();
    let started = std::time::Instant::now();
    new_project(&dir, name, lang);
    if let Some((from, to)) = entry {
        std::fs::copy(root().join("tests/plugins/lang").join(from), dir.join(to)).unwrap();
    }
    ok_or(
        &format!("`sluice plugin build` of the {lang} project failed (scripts/setup-test-deps installs the toolchains):\n"),
        sluice().args(["plugin", "build"]).arg(&dir),
    );
    assert!(wasm.exists());
    // How long `plugin new` + `plugin build` took, for the 2-minute path.
    std::fs::write(
        dir.join("build-seconds"),
        started.elapsed().as_secs_f64().to_string(),
    )
    .unwrap();
    wasm
}

fn python_filter() -> PathBuf {
    built("py-filter", "python", None)
}
fn js_filter() -> PathBuf {
    built("js-filter", "js", None)
}
fn ts_filter() -> PathBuf {
    built("ts-filter", "ts", None)
}
fn rust_filter() -> PathBuf {
    built("rs-filter", "rust", None)
}
fn python_tag() -> PathBuf {
    built("py-tag", "python", Some(("tag.py", "app.py")))
}
fn js_tag() -> PathBuf {
    built("js-tag", "js", Some(("tag.js", "plugin.js")))
}

/// Run `cmd`, which must succeed (else its stderr, after `what`); its
/// stderr.
fn ok_or(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}{stderr}");
    stderr
}

fn ok(cmd: &mut Command) -> String {
    ok_or("", cmd)
}

/// `sluice plugin new NAME --lang LANG --dir DIR`, which must succeed.
fn new_project(dir: &Path, name: &str, lang: &str) {
    ok_or(
        "plugin new: ",
        sluice()
            .args(["plugin", "new", name, "--lang", lang, "--dir"])
            .arg(dir),
    );
}

fn lit(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[test]
fn every_template_passes_its_own_sample_test() {
    for (project, wasm) in [
        ("python", python_filter()),
        ("js", js_filter()),
        ("ts", ts_filter()),
        ("rust", rust_filter()),
    ] {
        let dir = wasm.parent().unwrap();
        // The README's 2-minute path: `plugin new` and `plugin build` (timed
        // when the project was built), then `plugin test` and `run` here.
        let build: f64 = std::fs::read_to_string(dir.join("build-seconds"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        let started = std::time::Instant::now();
        let out = sluice()
            .args(["plugin", "test"])
            .arg(dir)
            .args(["--config", r#"{"min_level":"warn"}"#, "--expect"])
            .arg(dir.join("test/expected.jsonl"))
            .stdin(std::fs::File::open(dir.join("test/events.jsonl")).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{project}: {stderr}");
        assert!(
            stderr.contains("4 events: 0 kept, 2 dropped, 2 replaced, 1 routed"),
            "{project}: {stderr}"
        );
        // #43: every language refuses a key its config does not take,
        // naming it (JavaScript and TypeScript let it vanish).
        let out = sluice()
            .args(["plugin", "test"])
            .arg(dir)
            .args(["--config", r#"{"min_lvl":"warn"}"#])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("min_lvl"),
            "{project}: {stderr}"
        );
        // Compiling ahead on its own, for a component built elsewhere.
        let out = sluice()
            .args(["plugin", "compile"])
            .arg(&wasm)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.contains("ready in"),
            "{project}: {stderr}"
        );
        // ... and its pipeline runs it as the README says.
        let out = sluice()
            .arg("run")
            .arg(dir.join("pipeline.toml"))
            .arg("--quiet")
            .stdin(std::fs::File::open(dir.join("test/events.jsonl")).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{project}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut levels: Vec<(&str, &str)> = printed
            .iter()
            .map(|e| (e["level"].as_str().unwrap(), e["env"].as_str().unwrap()))
            .collect();
        levels.sort();
        assert_eq!(levels, [("error", "dev"), ("warn", "dev")], "{project}");
        let rest = started.elapsed().as_secs_f64();
        println!(
            "{project}: plugin new + build {build:.1} s, test + compile + run {rest:.1} s, {:.1} s in all",
            build + rest
        );
        assert!(
            build + rest < 120.0,
            "{project}: the template's path took {:.1} s, more than two minutes",
            build + rest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_keeps_exactly_what_the_rust_filter_keeps() {
    let plugins = [
        ("py", python_filter()),
        ("js", js_filter()),
        ("ts", ts_filter()),
        ("rs", rust_filter()),
    ];
    let d = tempfile::tempdir().unwrap();
    let mut toml = String::from(
        r#"[sources.gen]
type = "generate"
count = 20000
seed = 11

[transforms.bundled]
plugin = "filter"
inputs = ["gen"]
config = { min_level = "warn", missing_level = "drop" }

[sinks.bundled_out]
type = "file"
path = "bundled.log"
inputs = ["bundled"]
"#,
    );
    // Each template keeps warn and above with `env` added, errors and worse
    // on its `alerts` output.
    for (name, wasm) in &plugins {
        toml.push_str(&format!(
            "\n[transforms.{name}]\nplugin = {}\ninputs = [\"gen\"]\nconfig = {{ min_level = \"warn\", env = \"prod\" }}\n\n[sinks.{name}_out]\ntype = \"file\"\npath = \"{name}.log\"\ninputs = [\"{name}\"]\n\n[sinks.{name}_alerts]\ntype = \"file\"\npath = \"{name}-alerts.log\"\ninputs = [\"{name}.alerts\"]\n",
            lit(wasm)
        ));
    }
    let metrics = run(d.path(), &toml).await.unwrap();
    let want = read_json_lines(&d.path().join("bundled.log"));
    let kept = want.len();
    assert!(kept > 5000 && kept < 10000, "{kept} of 20000 kept");
    let severe = |e: &serde_json::Value| matches!(e["level"].as_str(), Some("error" | "fatal"));
    let (want_alerts, want_rest): (Vec<_>, Vec<_>) = want.into_iter().partition(severe);
    let tagged = |mut v: Vec<serde_json::Value>| {
        for e in &mut v {
            e.as_object_mut()
                .unwrap()
                .insert("env".into(), "prod".into());
        }
        v
    };
    let (want_alerts, want_rest) = (tagged(want_alerts), tagged(want_rest));
    assert!(!want_alerts.is_empty() && !want_rest.is_empty());
    for (name, _) in &plugins {
        let rest = read_json_lines(&d.path().join(format!("{name}.log")));
        let alerts = read_json_lines(&d.path().join(format!("{name}-alerts.log")));
        assert!(
            rest == want_rest,
            "{name} kept other events than the Rust filter"
        );
        assert!(
            alerts == want_alerts,
            "{name} routed other events to alerts"
        );
        let c = counts(&metrics, name);
        assert_eq!((c.events_in, c.failed), (20000, 0), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_reaches_the_dead_letters_with_its_message() {
    let source = std::fs::read_to_string(root().join("tests/plugins/lang/tag.py")).unwrap();
    let line = 1 + source
        .lines()
        .position(|l| l.contains("raise ValueError"))
        .unwrap();
    for (wasm, kind, expected) in [
        (
            python_tag(),
            "python",
            format!("ValueError: poisoned event 3 (app.py line {line}, in tag)"),
        ),
        (js_tag(), "js", "RangeError: poisoned event 3".to_string()),
    ] {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.jsonl");
        let mut lines = String::new();
        for seq in 1..=5 {
            let poison = if seq == 3 { r#","poison":true"# } else { "" };
            lines.push_str(&format!("{{\"seq\":{seq},\"level\":\"info\"{poison}}}\n"));
        }
        std::fs::write(&input, lines).unwrap();
        let toml = format!(
            r#"[sources.input]
type = "stdin"

[transforms.tag]
plugin = {}
inputs = ["input"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["tag"]

[sinks.dead]
type = "file"
path = "dead.log"
inputs = ["_dead_letters"]
"#,
            lit(&wasm)
        );
        std::fs::write(d.path().join("pipeline.toml"), toml).unwrap();
        let out = sluice()
            .args(["run", "--quiet"])
            .arg(d.path().join("pipeline.toml"))
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kept = read_json_lines(&d.path().join("out.log"));
        let seqs: Vec<u64> = kept.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            [1, 2, 4, 5],
            "{kind}: one event lost, the others go on"
        );
        assert!(kept.iter().all(|e| e["tag"] == kind), "{kind}: {kept:?}");
        let dead = read_json_lines(&d.path().join("dead.log"));
        assert_eq!(dead.len(), 1, "{kind}: {dead:?}");
        assert_eq!(dead[0]["event"]["seq"], 3);
        assert_eq!(dead[0]["error"]["kind"], "plugin_error");
        let message = dead[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains(&expected), "{kind}: {message}");
        assert!(
            dead[0]["plugin_version"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{kind}-tag 1")),
            "{kind}: {}",
            dead[0]["plugin_version"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_swaps_for_a_js_one_under_load_losing_nothing() {
    let (py, js) = (python_tag(), js_tag());
    let d = tempfile::tempdir().unwrap();
    let plugin = d.path().join("tag.wasm");
    std::fs::copy(&py, &plugin).unwrap();
    // The hot-reload tests' pipeline: generate -> tag.wasm -> out.log.
    let toml = crate::reload::pipeline("");
    let (running, metrics) = start(d.path(), &toml).await;
    let reload = running.reload_handle();
    let stop = running.stop_handle();
    let waiter = tokio::spawn(running.wait());
    let out = d.path().join("out.log");
    let written = |tag: &str| {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.ends_with('}'))
            .is_some_and(|l| l.contains(&format!("\"tag\":\"{tag}\"")))
    };
    crate::util::until("python tags events", 30, || written("python")).await;
    crate::reload::replace(&plugin, js.to_str().unwrap());
    assert!(reload.reload_plugin("tag").await.unwrap(), "swap not taken");
    crate::util::until("js tags events", 30, || written("js")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.trigger();
    tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (n, tags) = crate::util::ordered_tag_runs(&out);
    assert_eq!(tags, ["python", "js"], "one switch-over");
    assert_eq!(counts(&metrics, "tag").events_in as usize, n);
}

#[test]
fn a_component_that_imports_http_is_refused_by_name() {
    // componentize-js without `-d http -d fetch-event` imports wasi:http.
    let dir = js_filter().parent().unwrap().to_path_buf();
    let tool = sluice::cli::plugin::build::tools_dir()
        .unwrap()
        .join("js/node_modules/.bin/componentize-js");
    let wasm = dir.join("with-http.wasm");
    if !wasm.exists() {
        let status = Command::new(&tool)
            .current_dir(&dir)
            .args([
                "--wit",
                "wit",
                "-n",
                "plugin",
                "-o",
                "with-http.wasm",
                "plugin.js",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = sluice()
        .args(["plugin", "test"])
        .arg(&wasm)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("imports wasi:http/") && stderr.contains("-d http -d fetch-event"),
        "{stderr}"
    );
}

/// #43: `plugin build` and a pipeline loading the same new bytes compiled
/// them twice at once (10-13 s for a Python plugin), and the cache grew
/// without bound. Two processes compiling one Python component together
/// compile it once; `plugin cache list` shows it and `prune` removes it.
#[test]
fn one_compile_per_change_and_a_cache_that_prunes() {
    let wasm = python_filter();
    let cache = tempfile::tempdir().unwrap();
    let compile = || {
        sluice()
            .args(["plugin", "compile"])
            .arg(&wasm)
            .env("SLUICE_CACHE_DIR", cache.path())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (compile(), compile());
    let mut logs = String::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        logs.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(
        logs.matches("compiled plugin").count(),
        1,
        "compiled once: {logs}"
    );
    let cache_cmd = |args: &[&str]| {
        let out = sluice()
            .args(["plugin", "cache"])
            .args(args)
            .env("SLUICE_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(cache_cmd(&["list"]).contains("1 compiled components"));
    assert!(cache_cmd(&["prune", "--max-size", "0"]).starts_with("removed 1 "));
    assert!(cache_cmd(&["list"]).contains("0 compiled components"));
}

/// #43: two builds of unchanged Python sources gave different bytes, so
/// every build and reload compiled again. A second build of unchanged
/// sources keeps the bytes (componentize-py itself is not reproducible:
/// its snapshot holds the clock and random numbers of its pre-init); a
/// changed source builds again.
#[test]
fn unchanged_sources_build_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("same");
    new_project(&dir, "same", "python");
    let wasm = dir.join("same.wasm");
    let sha = || format!("{:x}", Sha256::digest(std::fs::read(&wasm).unwrap()));
    let build = || ok(sluice().args(["plugin", "build"]).arg(&dir));
    build();
    let first = sha();
    let again = build();
    assert!(again.contains("is up to date"), "{again}");
    assert_eq!(sha(), first, "same sources, same bytes");
    let app = dir.join("app.py");
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# changed\n")).unwrap();
    let rebuilt = build();
    assert!(rebuilt.contains("built "), "{rebuilt}");
    let forced = ok(sluice().args(["plugin", "build", "--force"]).arg(&dir));
    assert!(forced.contains("built "), "{forced}");
}

/// #43: following `plugin build`'s install hints for TypeScript pulled
/// unpinned versions and ended in `ERR_MODULE_NOT_FOUND`. From an empty
/// tools folder, each missing-tool message names one command, `sluice
/// plugin setup --lang L`; after it the project builds, and a second run
/// leaves the tools as they are.
#[test]
fn an_empty_tools_folder_builds_after_the_one_setup_command() {
    let tools = tempfile::tempdir().unwrap();
    let projects = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let mut c = sluice();
        c.args(args)
            .env("SLUICE_TOOLS_DIR", tools.path())
            .current_dir(projects.path());
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for lang in ["ts", "python"] {
        let name = format!("setup-{lang}");
        assert!(cmd(&["plugin", "new", &name, "--lang", lang]).0);
        let (ok, stderr) = cmd(&["plugin", "build", &name]);
        let hint = format!("sluice plugin setup --lang {lang}");
        assert!(!ok && stderr.contains(&hint), "{lang}: {stderr}");
        let (ok, stderr) = cmd(&["plugin", "setup", "--lang", lang]);
        assert!(ok, "{lang}: {stderr}");
        let (ok, stderr) = cmd(&["plugin", "build", &name]);
        assert!(ok, "{lang}: {stderr}");
        let (ok, stderr) = cmd(&["plugin", "setup", "--lang", lang]);
        assert!(ok && stderr.contains("ready in"), "{lang}: {stderr}");
    }
    // scripts/setup-plugin-tools installs the same versions.
    let script = std::fs::read_to_string(root().join("scripts/setup-plugin-tools")).unwrap();
    use sluice::cli::plugin::setup::{COMPONENTIZE_JS, COMPONENTIZE_PY, JCO, TYPESCRIPT};
    for pin in [
        format!("componentize-py=={COMPONENTIZE_PY}"),
        format!("componentize-js@{COMPONENTIZE_JS}"),
        format!("jco@{JCO}"),
        format!("typescript@{TYPESCRIPT}"),
    ] {
        assert!(
            script.contains(&pin),
            "scripts/setup-plugin-tools lacks {pin}"
        );
    }
}

/// #43: `sluice plugin dev --pipeline P` builds the project, runs its
/// sample test and starts the pipeline; an edit of the source is built,
/// tested (the diff is printed) and swapped into the running pipeline,
/// which then does what the new code says.
#[test]
fn plugin_dev_swaps_an_edit_into_a_running_pipeline() {
    use std::io::Write as _;
    use std::os::unix::process::CommandExt as _;
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("devx");
    new_project(&project, "devx", "rust");
    std::fs::write(d.path().join("in.log"), "").unwrap();
    std::fs::write(
        d.path().join("dev.toml"),
        r#"[sources.app]
type = "file"
path = "in.log"
follow = true

[transforms.devx]
plugin = "devx/devx.wasm"
inputs = ["app"]

[sinks.out]
type = "file"
path = "out.log"
inputs = ["devx", "devx.alerts"]
"#,
    )
    .unwrap();
    let log = d.path().join("dev.log");
    let mut dev = sluice()
        .args(["plugin", "dev"])
        .arg(&project)
        .arg("--pipeline")
        .arg(d.path().join("dev.toml"))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    let wait = |what: &str, secs: u64, f: &dyn Fn() -> bool| {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                std::time::Instant::now() < until,
                "timed out: {what}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let append = |line: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join("in.log"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    };
    let seen = |n: u64| {
        crate::util::whole_json_lines(&d.path().join("out.log"))
            .iter()
            .any(|e| e["n"] == n)
    };
    wait("the first build and its test", 600, &|| {
        logged("sample test passes")
    });
    append(r#"{"level":"debug","n":1}"#);
    append(r#"{"level":"error","n":2}"#);
    wait("the error through the pipeline", 60, &|| seen(2));
    assert!(!seen(1), "the template keeps warn and above");
    // Keep every level: built, tested (now unlike the sample), swapped in.
    let lib = project.join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    let edited = text.replace("level >= config.min_level", "level >= Level::Trace");
    assert_ne!(text, edited);
    std::fs::write(&lib, edited).unwrap();
    wait("the edit built and tested", 600, &|| {
        logged("sample test FAILS")
    });
    wait("the new build swapped in", 120, &|| logged("reloaded"));
    append(r#"{"level":"debug","n":3}"#);
    wait("the new behaviour in the pipeline", 60, &|| seen(3));
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", dev.id())])
        .status();
    let _ = dev.wait();
}

/// #43: TypeScript errors pointed into the compiled `build/plugin.js`.
/// With the source map `plugin build` reads, they name `plugin.ts` and the
/// line of the `throw`.
#[test]
fn typescript_errors_point_at_the_ts_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("tsx");
    new_project(&dir, "tsx", "ts");
    let entry = dir.join("plugin.ts");
    let text = std::fs::read_to_string(&entry).unwrap();
    let patched = text.replace(
        "  process(event: Event): Verdict {\n",
        "  process(event: Event): Verdict {\n    check(event);\n",
    ) + "\nfunction check(event: Event): void {\n  if (event.level === \"error\") {\n    throw new Error(\"no errors here\");\n  }\n}\n";
    assert!(
        text.contains("  process(event: Event): Verdict {\n"),
        "the template changed: update this test"
    );
    std::fs::write(&entry, &patched).unwrap();
    let throw_line = patched
        .lines()
        .position(|l| l.contains("throw new Error(\"no errors here\")"))
        .unwrap()
        + 1;
    ok(sluice().args(["plugin", "build"]).arg(&dir));
    let out = sluice()
        .args(["plugin", "test"])
        .arg(&dir)
        .stdin(std::fs::File::open(dir.join("test/events.jsonl")).unwrap())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    let want = format!("Error: no errors here (check@plugin.ts:{throw_line})");
    assert!(printed.contains(&want), "{want} in {printed}");
}

/// #48: a project's `config.schema.json` goes into its component (a custom
/// section `sluice plugin build` appends), where `sluice schema --plugin`
/// finds it; the component still loads and runs.
#[test]
fn a_project_ships_its_config_schema() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("schemed");
    new_project(&dir, "schemed", "js");
    let schema = serde_json::json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "min_level": { "type": "string", "description": "Keep events at this level or above." }
        }
    });
    std::fs::write(dir.join("config.schema.json"), schema.to_string()).unwrap();
    ok(sluice().args(["plugin", "build"]).arg(&dir));
    let wasm = dir.join("schemed.wasm");
    let out = sluice()
        .args(["schema", "--plugin"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shipped, schema);
    let out = sluice()
        .args(["plugin", "test"])
        .arg(&dir)
        .args(["--config", r#"{"min_level":"warn"}"#, "--expect"])
        .arg(dir.join("test/expected.jsonl"))
        .stdin(std::fs::File::open(dir.join("test/events.jsonl")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
