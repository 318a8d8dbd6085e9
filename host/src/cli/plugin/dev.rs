//! `sluice plugin dev [DIR] [--pipeline P]`: the edit loop. Watches the
//! project; on each change it builds (unchanged sources keep their bytes),
//! runs the sample test (`test/events.jsonl` against
//! `test/expected.jsonl`, printing the first difference), and, with
//! `--pipeline`, keeps that pipeline running beside it: the pipeline swaps
//! in each new `.wasm` itself (hot reload), without losing an event.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::Context;

use super::build::{self, Manifest};

/// How often the project is looked at.
const POLL: Duration = Duration::from_millis(400);

/// Run the sample test of the project against `wasm`: `Ok(summary)` when it
/// passes, `Err(difference)` when it does not.
fn sample_test(dir: &Path, wasm: &Path) -> Option<Result<String, String>> {
    let events = dir.join("test").join("events.jsonl");
    let expected = dir.join("test").join("expected.jsonl");
    let input = std::fs::File::open(&events).ok()?;
    let mut printed = Vec::new();
    let tally = match super::test::run(
        wasm,
        "{}",
        256,
        std::io::BufReader::new(input),
        &mut printed,
    ) {
        Ok(t) => t,
        Err(e) => return Some(Err(format!("{e:#}"))),
    };
    let text = String::from_utf8_lossy(&printed);
    let summary = format!(
        "{} kept, {} dropped, {} replaced, {} routed, {} failed",
        tally.kept, tally.dropped, tally.replaced, tally.routed, tally.failed
    );
    let Ok(want) = std::fs::read_to_string(&expected) else {
        return Some(Ok(format!("{summary} (no test/expected.jsonl to compare)")));
    };
    Some(match super::test::compare(&text, &want) {
        Ok(()) => Ok(summary),
        Err(diff) => Err(format!(
            "{summary}; differs from test/expected.jsonl: {diff} (`sluice plugin test --expect test/expected.jsonl --update` takes the new verdicts)"
        )),
    })
}

fn start_pipeline(pipeline: &Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the sluice binary")?;
    eprintln!("dev: running {}", pipeline.display());
    Command::new(exe)
        .arg("run")
        .arg(pipeline)
        .spawn()
        .with_context(|| format!("starting sluice run {}", pipeline.display()))
}

/// The loop; returns when the pipeline it runs stops (or never).
pub fn dev(dir: &Path, pipeline: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let manifest = Manifest::load(&dir)?;
    eprintln!(
        "dev: watching {} ({}); every change is built, tested{}",
        dir.display(),
        manifest.lang.title(),
        if pipeline.is_some() {
            " and swapped into the pipeline"
        } else {
            ""
        }
    );
    let mut last: Option<String> = None;
    let mut running: Option<Child> = None;
    loop {
        let inputs = build::inputs_hash(&dir, manifest.lang)?;
        if last.as_deref() != Some(inputs.as_str()) {
            last = Some(inputs);
            match build::build_with(&dir, false) {
                Ok(wasm) => {
                    match sample_test(&dir, &wasm) {
                        Some(Ok(summary)) => eprintln!("dev: sample test passes: {summary}"),
                        Some(Err(diff)) => eprintln!("dev: sample test FAILS: {diff}"),
                        None => eprintln!("dev: built (no test/events.jsonl to test with)"),
                    }
                    if let (Some(p), None) = (&pipeline, &running) {
                        running = Some(start_pipeline(p)?);
                    }
                }
                Err(e) => eprintln!("dev: build failed: {e:#}\ndev: waiting for the next change"),
            }
        }
        if let Some(child) = running.as_mut() {
            if let Some(status) = child.try_wait()? {
                eprintln!("dev: the pipeline stopped ({status})");
                return Ok(());
            }
        }
        std::thread::sleep(POLL);
    }
}
