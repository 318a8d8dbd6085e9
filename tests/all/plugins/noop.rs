//! The test-only `noop` component: keeps everything, reads nothing.

use super::{load, process};
use crate::NOOP;

#[test]
fn keeps_every_event_unread() {
    let mut p = load(NOOP, "{}");
    let v = process(&mut p, &[r#"{"a":1}"#, "{}", r#"{"level":"debug"}"#]);
    assert_eq!(v.actions, [1, 1, 1]);
    assert!(v.ports.is_empty() && v.data.is_empty() && v.ends.is_empty());
}
