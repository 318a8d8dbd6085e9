//! `sluice test`: run the `[[tests]]` of a pipeline file.
//!
//! Each test runs the pipeline's real transforms (the wasm plugins) in a
//! copy of the pipeline whose sources emit the test's input events and whose
//! sinks, like every component a test looks at, keep what they receive in
//! memory. Nothing is read from or written to the real sources and sinks.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use toml::Spanned;

use crate::base::metrics::Registry;
use crate::config::{Named, PipelineConfig, TestCondition, TestConfig};
use crate::plugin::Runtime;
use crate::sink::{CaptureConfig, SinkConfig};
use crate::source::{MemoryConfig, SourceConfig};
use crate::topology;

/// The events a capture sink received.
type Captured = Arc<Mutex<Vec<Vec<u8>>>>;

/// The outcome of one test.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    /// Empty when the test passed; otherwise what differed.
    pub failures: Vec<String>,
}

fn to_json(v: &toml::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Whether `actual` has every field of `expected` with the same value
/// (recursively for objects).
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|x| matches(v, x))),
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, p| v.get(p))
}

fn check_condition(c: &TestCondition, event: &Value) -> Result<(), String> {
    let found = lookup(event, &c.field);
    if let Some(want) = c.exists {
        if found.is_some() != want {
            return Err(format!(
                "`{}` should {}exist",
                c.field,
                if want { "" } else { "not " }
            ));
        }
    }
    let text = found.map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if let Some(want) = &c.equals {
        let want = to_json(want);
        if found.is_none_or(|f| !matches(&want, f)) {
            return Err(format!(
                "`{}` should equal {want}, is {}",
                c.field,
                found.map_or("absent".into(), |f| f.to_string())
            ));
        }
    }
    if let Some(needle) = &c.contains {
        if !text.as_deref().is_some_and(|t| t.contains(needle.as_str())) {
            return Err(format!(
                "`{}` should contain {needle:?}, is {text:?}",
                c.field
            ));
        }
    }
    if let Some(needle) = &c.not_contains {
        if text.as_deref().is_some_and(|t| t.contains(needle.as_str())) {
            return Err(format!(
                "`{}` should not contain {needle:?}, is {text:?}",
                c.field
            ));
        }
    }
    Ok(())
}

/// A diff of expected and actual events, one JSON line each.
fn diff(expected: &[Value], actual: &[Value]) -> String {
    let mut out = String::new();
    for i in 0..expected.len().max(actual.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if matches(e, a) => out.push_str(&format!("    {a}\n")),
            (e, a) => {
                if let Some(e) = e {
                    out.push_str(&format!("  - {e}\n"));
                }
                if let Some(a) = a {
                    out.push_str(&format!("  + {a}\n"));
                }
            }
        }
    }
    out
}

/// Run one test.
pub async fn run_test(
    config: &PipelineConfig,
    test: &Spanned<TestConfig>,
    runtime: Arc<Runtime>,
) -> anyhow::Result<Outcome> {
    let t = test.get_ref();
    let loc = &config.locator;
    let key = format!("tests.{}", t.name);
    let mut c = config.clone();
    c.tests.clear();
    c.admin = None;
    c.reload.watch = false;
    // Sources emit the test's events.
    for input in &t.inputs {
        if !c.sources.iter().any(|s| s.name == input.source) {
            return Err(loc
                .error(
                    Some(test.span()),
                    &key,
                    format!("unknown source `{}`", input.source),
                )
                .into());
        }
    }
    for s in &mut c.sources {
        let mut lines = Vec::new();
        for input in t.inputs.iter().filter(|i| i.source == s.name) {
            lines.extend(
                input
                    .events
                    .iter()
                    .map(|e| to_json(e).to_string().into_bytes()),
            );
            lines.extend(input.lines.iter().map(|l| l.clone().into_bytes()));
        }
        s.config = SourceConfig::Memory(MemoryConfig {
            lines: Arc::new(lines),
        });
    }
    // Sinks that only take another sink's fallback get nothing in a test.
    c.sinks.retain(|s| !s.config.inputs().is_empty());
    // Sinks keep what they receive; so does every component looked at.
    let mut captures: Vec<(String, Captured)> = Vec::new();
    for s in &mut c.sinks {
        let events = Arc::new(Mutex::new(Vec::new()));
        s.buffer = None;
        s.config = SinkConfig::Capture(CaptureConfig {
            inputs: s.config.inputs().to_vec(),
            events: events.clone(),
        });
        captures.push((s.name.clone(), events));
    }
    for (i, out) in t.outputs.iter().enumerate() {
        if captures.iter().any(|(n, _)| *n == out.component) {
            continue;
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let name = format!("__test_output_{i}");
        c.sinks.push(Named {
            metrics: None,
            buffer: None,
            name: name.clone(),
            span: test.span(),
            config: SinkConfig::Capture(CaptureConfig {
                inputs: vec![Spanned::new(test.span(), out.component.clone())],
                events: events.clone(),
            }),
        });
        captures.push((out.component.clone(), events));
    }
    let plan = topology::plan(c, runtime).await?;
    plan.start(Registry::default())?.wait().await?;

    let mut failures = Vec::new();
    for out in &t.outputs {
        let got: Vec<Value> = captures
            .iter()
            .find(|(n, _)| *n == out.component)
            .map(|(_, e)| {
                e.lock()
                    .expect("capture lock poisoned")
                    .iter()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(expected) = &out.events {
            let expected: Vec<Value> = expected.iter().map(to_json).collect();
            let same = expected.len() == got.len()
                && expected.iter().zip(&got).all(|(e, a)| matches(e, a));
            if !same {
                failures.push(format!(
                    "{}: events differ (- expected, + actual):\n{}",
                    out.component,
                    diff(&expected, &got)
                ));
            }
        }
        if let Some(n) = out.count {
            if got.len() != n {
                failures.push(format!(
                    "{}: {} events, expected {n}",
                    out.component,
                    got.len()
                ));
            }
        }
        for (i, e) in got.iter().enumerate() {
            for cond in &out.conditions {
                if let Err(why) = check_condition(cond, e) {
                    failures.push(format!("{}: event {i}: {why}\n    {e}", out.component));
                }
            }
        }
    }
    Ok(Outcome {
        name: t.name.clone(),
        failures,
    })
}

/// Run every test of a pipeline file; prints pass/fail with diffs.
/// Returns the number of failed tests.
pub async fn run_all(
    config: &PipelineConfig,
    runtime: Arc<Runtime>,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<usize> {
    if config.tests.is_empty() {
        anyhow::bail!(
            "{}: no [[tests]] in this pipeline file",
            config.locator.file().display()
        );
    }
    let mut failed = 0;
    for test in &config.tests {
        let outcome = run_test(config, test, runtime.clone()).await?;
        if outcome.failures.is_empty() {
            writeln!(out, "test {} ... ok", outcome.name)?;
        } else {
            failed += 1;
            writeln!(out, "test {} ... FAILED", outcome.name)?;
            for f in &outcome.failures {
                writeln!(out, "  {f}")?;
            }
        }
    }
    writeln!(
        out,
        "\n{} passed, {failed} failed ({})",
        config.tests.len() - failed,
        config.locator.file().display()
    )?;
    Ok(failed)
}
