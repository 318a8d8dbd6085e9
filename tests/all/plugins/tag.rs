//! The test-only `tag` component, built twice (`a` and `b`).

use super::{load, process, replacements};
use crate::{TAG, TAG_B};

#[test]
fn the_two_builds_tag_differently() {
    let mut a = load(TAG, "{}");
    let mut b = load(TAG_B, "{}");
    assert_eq!(
        replacements(&process(&mut a, &[r#"{"n":1}"#])),
        [r#"{"tag":"a","n":1}"#]
    );
    assert_eq!(replacements(&process(&mut b, &["{}"])), [r#"{"tag":"b"}"#]);
    assert_ne!(a.hash(), b.hash());
}
