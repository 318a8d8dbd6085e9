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
