//! The `dedup` component.

use super::{load, process};
use crate::DEDUP;

/// Repeats within the window are dropped, in a batch and across batches
/// (one instance keeps the values it saw); other values pass.
#[test]
fn repeats_are_dropped_across_batches() {
    let mut p = load(DEDUP, r#"{"fields":["message"],"window":"1h"}"#);
    let v = process(
        &mut p,
        &[
            r#"{"timestamp":"1","message":"disk full"}"#,
            r#"{"timestamp":"2","message":"disk full"}"#,
            r#"{"timestamp":"3","message":"ok"}"#,
        ],
    );
    assert_eq!(v.actions, [1, 0, 1]);
    let v = process(
        &mut p,
        &[
            r#"{"timestamp":"4","message":"ok"}"#,
            r#"{"timestamp":"5","message":"new"}"#,
        ],
    );
    assert_eq!(v.actions, [0, 1]);
    // Every field but `timestamp` by default.
    let mut p = load(DEDUP, r#"{"window":"1h"}"#);
    let v = process(
        &mut p,
        &[
            r#"{"timestamp":"1","level":"error","message":"x"}"#,
            r#"{"timestamp":"2","level":"error","message":"x"}"#,
            r#"{"timestamp":"3","level":"warn","message":"x"}"#,
        ],
    );
    assert_eq!(v.actions, [1, 0, 1]);
}

/// Values forgotten beyond `max_entries` are counted through the host's
/// `count` (`sluice_plugin_count_total{name="forgotten_values"}`), and a
/// forgotten value passes again.
#[test]
fn forgotten_values_are_counted() {
    let mut p = load(
        DEDUP,
        r#"{"fields":["message"],"window":"1h","max_entries":2}"#,
    );
    let events: Vec<String> = (0..5).map(|i| format!(r#"{{"message":"m{i}"}}"#)).collect();
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    let v = process(&mut p, &refs);
    assert_eq!(v.actions, [1, 1, 1, 1, 1]);
    assert_eq!(p.take_counts(), [("forgotten_values".to_string(), 3)]);
    // m0 was forgotten: it passes again, and forgets another.
    let v = process(&mut p, &[r#"{"message":"m0"}"#, r#"{"message":"m4"}"#]);
    assert_eq!(v.actions, [1, 0]);
    assert_eq!(p.take_counts(), [("forgotten_values".to_string(), 1)]);
    assert!(p.take_counts().is_empty());
}
