//! `sluice plugin test`: run a component over JSON lines and print one
//! verdict per line, without a pipeline.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

use crate::plugin::{LoadedPlugin, PluginLimits, Runtime};

/// What happened to one input line.
#[derive(Debug, Default)]
pub struct Tally {
    pub kept: usize,
    pub dropped: usize,
    pub replaced: usize,
    pub routed: usize,
    pub failed: usize,
}

/// Run `wasm` (configured with `config`, a JSON object) over the lines of
/// `input`, `batch` at a time; write one JSON line per input line to `out`.
pub fn run(
    wasm: &Path,
    config: &str,
    batch: usize,
    input: impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<Tally> {
    let parsed: Value = serde_json::from_str(config).context("--config is not JSON")?;
    anyhow::ensure!(
        parsed.is_object(),
        "--config must be a JSON object, like '{{\"min_level\":\"warn\"}}'"
    );
    let runtime = Arc::new(Runtime::new(Runtime::default_cache_dir())?);
    let mut plugin = runtime
        .load_file("test", wasm, config.to_string(), PluginLimits::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tally = Tally::default();
    let mut pending: Vec<(usize, String)> = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.context("reading the events")?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(_)) => pending.push((n + 1, line)),
            Ok(_) | Err(_) => {
                flush(&mut plugin, &mut pending, out, &mut tally)?;
                tally.failed += 1;
                let mut m = Map::new();
                m.insert("verdict".into(), "error".into());
                m.insert(
                    "error".into(),
                    format!("line {}: not a JSON object", n + 1).into(),
                );
                m.insert("line".into(), line.into());
                writeln!(out, "{}", Value::Object(m))?;
            }
        }
        if pending.len() >= batch {
            flush(&mut plugin, &mut pending, out, &mut tally)?;
        }
    }
    flush(&mut plugin, &mut pending, out, &mut tally)?;
    Ok(tally)
}

fn pack(events: &[(usize, String)]) -> (Vec<u8>, Vec<u32>) {
    let mut data = Vec::new();
    let mut ends = Vec::with_capacity(events.len());
    for (_, e) in events {
        data.extend_from_slice(e.as_bytes());
        ends.push(data.len() as u32);
    }
    (data, ends)
}

fn flush(
    plugin: &mut LoadedPlugin,
    pending: &mut Vec<(usize, String)>,
    out: &mut impl Write,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let (data, ends) = pack(pending);
    match plugin.process(&data, &ends) {
        Ok(v) => {
            for ((action, port, entry), (n, event)) in
                crate::plugin::verdicts(&v).zip(pending.iter())
            {
                if action == sluice_common::action::FAIL {
                    // The plugin dead-letters it, with its reason.
                    let e = crate::plugin::CallError {
                        kind: crate::delivery::ErrorKind::PluginError,
                        message: crate::plugin::plugin_reason(entry),
                    };
                    write_error(*n, event, &e, out, tally)?;
                    continue;
                }
                let body = match action {
                    sluice_common::action::REPLACE => entry,
                    _ => event.as_bytes(),
                };
                write_verdict(plugin, action, port, body, out, tally)?;
            }
        }
        Err(_) if pending.len() > 1 => {
            // Find the events that fail: one at a time.
            for one in std::mem::take(pending).chunks(1) {
                let mut one = one.to_vec();
                flush(plugin, &mut one, out, tally)?;
            }
        }
        Err(e) => {
            let (n, event) = &pending[0];
            // The input's line, not the event's place in the one-event
            // call that found it (`event 0: ...`).
            let e = crate::plugin::CallError {
                kind: e.kind,
                message: crate::plugin::alone(&e.message).to_string(),
            };
            write_error(*n, event, &e, out, tally)?;
        }
    }
    pending.clear();
    Ok(())
}

/// An event the plugin failed (or dead-lettered), with its input line.
fn write_error(
    n: usize,
    event: &str,
    e: &crate::plugin::CallError,
    out: &mut impl Write,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    tally.failed += 1;
    let mut m = Map::new();
    m.insert("verdict".into(), "error".into());
    m.insert("error".into(), format!("line {n}: {e}").into());
    m.insert("line".into(), n.into());
    m.insert("event".into(), serde_json::from_str(event)?);
    writeln!(out, "{}", Value::Object(m))?;
    Ok(())
}

fn write_verdict(
    plugin: &LoadedPlugin,
    action: u8,
    port: u16,
    body: &[u8],
    out: &mut impl Write,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    use sluice_common::action::{DROP, KEEP, REPLACE};
    let verdict = match action {
        DROP => {
            tally.dropped += 1;
            "drop"
        }
        KEEP => {
            tally.kept += 1;
            "keep"
        }
        REPLACE => {
            tally.replaced += 1;
            "replace"
        }
        other => bail!("the plugin returned action {other}"),
    };
    let mut m = Map::new();
    m.insert("verdict".into(), verdict.into());
    if port != 0 {
        tally.routed += 1;
        let name = plugin
            .info()
            .outputs
            .get(port as usize - 1)
            .cloned()
            .unwrap_or_else(|| format!("#{port}"));
        m.insert("output".into(), name.into());
    }
    let event: Value = serde_json::from_slice(body).context("the plugin's event is not JSON")?;
    m.insert("event".into(), event);
    writeln!(out, "{}", Value::Object(m))?;
    Ok(())
}

/// Compare what `run` printed with an expected file, line by line (as
/// JSON, so spacing does not matter). Returns the first difference.
pub fn compare(got: &str, expected: &str) -> Result<(), String> {
    let got: Vec<&str> = got.lines().filter(|l| !l.trim().is_empty()).collect();
    let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let same = match (
            serde_json::from_str::<Value>(g),
            serde_json::from_str::<Value>(w),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => g.trim() == w.trim(),
        };
        if !same {
            return Err(format!(
                "line {} differs:\n  expected: {w}\n  got:      {g}",
                i + 1
            ));
        }
    }
    if got.len() != want.len() {
        return Err(format!(
            "{} lines expected, {} printed",
            want.len(),
            got.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_ignores_spacing_and_names_the_line() {
        assert!(compare("{\"a\":1}\n{\"b\":2}\n", "{\"a\": 1}\n{ \"b\" : 2 }").is_ok());
        let e = compare("{\"a\":1}\n{\"b\":3}\n", "{\"a\":1}\n{\"b\":2}\n").unwrap_err();
        assert!(e.starts_with("line 2 differs"), "{e}");
        let e = compare("{\"a\":1}\n", "{\"a\":1}\n{\"b\":2}\n").unwrap_err();
        assert_eq!(e, "2 lines expected, 1 printed");
    }
}
