//! The test-only `chaos` component: a misbehaving plugin costs one event.

use sluice::base::event::Batch;
use sluice::delivery::ErrorKind;
use sluice::plugin::PluginLimits;

use super::{load, process, replacements};
use crate::CHAOS;

fn fails_with(marker: &str) -> ErrorKind {
    let mut p = load(CHAOS, "{}");
    let event = format!(r#"{{"chaos":"{marker}"}}"#);
    let batch = Batch::from_events([event.as_bytes()]);
    let err = p
        .process(&batch.data, &batch.ends)
        .expect_err("the plugin must fail");
    // The instance was dropped; the next call works on a fresh one.
    assert!(p.needs_restart());
    let v = process(&mut p, &[r#"{"ok":1}"#]);
    assert_eq!(v.actions, [1]);
    err.kind
}

#[test]
fn panic_is_a_trap() {
    assert_eq!(fails_with("panic"), ErrorKind::Trap);
}

#[test]
fn endless_loop_hits_the_time_budget() {
    assert_eq!(fails_with("loop"), ErrorKind::Timeout);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    assert_eq!(fails_with("alloc"), ErrorKind::Memory);
}

#[test]
fn deep_recursion_overflows_the_stack() {
    assert_eq!(fails_with("stack"), ErrorKind::StackOverflow);
}

#[test]
fn no_wasi_capability_is_granted() {
    let mut p = load(CHAOS, "{}");
    let v = process(&mut p, &[r#"{"chaos":"probe"}"#]);
    let got: serde_json::Value = serde_json::from_str(&replacements(&v)[0]).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"file": false, "dir": false, "env": 0, "args": 0, "socket": false})
    );
}

#[test]
fn custom_memory_limit_applies() {
    let mut p = crate::util::runtime()
        .load_file(
            "small",
            std::path::Path::new(CHAOS),
            "{}".into(),
            PluginLimits {
                memory: 4 << 20,
                ..Default::default()
            },
        )
        .unwrap();
    let batch = Batch::from_events([&br#"{"chaos":"alloc"}"#[..]]);
    assert_eq!(
        p.process(&batch.data, &batch.ends).unwrap_err().kind,
        ErrorKind::Memory
    );
}

#[test]
fn stack_limit_is_per_plugin() {
    // The same recursion overflows a 64 KiB stack much sooner than 1 MiB;
    // both are caught, with the kind named.
    for stack in [64 << 10, 4 << 20] {
        let mut p = crate::util::runtime()
            .load_file(
                "stack",
                std::path::Path::new(CHAOS),
                "{}".into(),
                PluginLimits {
                    stack,
                    ..Default::default()
                },
            )
            .unwrap();
        let batch = Batch::from_events([&br#"{"chaos":"stack"}"#[..]]);
        assert_eq!(
            p.process(&batch.data, &batch.ends).unwrap_err().kind,
            ErrorKind::StackOverflow
        );
        let v = process(&mut p, &[r#"{"ok":1}"#]);
        assert_eq!(v.actions, [1]);
    }
}

#[test]
fn a_panic_message_reaches_the_error_through_stderr() {
    let mut p = load(CHAOS, "{}");
    let batch = Batch::from_events([&br#"{"chaos":"panic"}"#[..]]);
    let err = p
        .process(&batch.data, &batch.ends)
        .expect_err("the plugin must fail");
    assert_eq!(err.kind, ErrorKind::Trap);
    // The panic's message first, where it happened, no wasm backtrace.
    assert!(
        err.message
            .starts_with("panicked: chaos: asked to panic (at tests/plugins/chaos/src/lib.rs:"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("<unknown>"), "{}", err.message);
}
