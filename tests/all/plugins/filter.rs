//! The `filter` component.

use super::{load, process};
use crate::FILTER;

#[test]
fn keeps_warn_and_above_through_the_component() {
    let mut p = load(FILTER, r#"{"min_level":"warn"}"#);
    assert!(p.info().outputs.is_empty());
    assert!(!p.info().masks);
    let v = process(
        &mut p,
        &[
            r#"{"level":"info"}"#,
            r#"{"level":"WARN"}"#,
            r#"{"level":"error"}"#,
            r#"{"level":"debug"}"#,
        ],
    );
    assert_eq!(v.actions, [0, 1, 1, 0]);
    assert!(v.ports.is_empty() && v.data.is_empty());
}

#[test]
fn field_conditions_through_the_component() {
    let mut p = load(
        FILTER,
        r#"{"mode":"all","conditions":[{"field":"service","one_of":["auth","payments"]},{"field":"message","contains":"fail"}]}"#,
    );
    let v = process(
        &mut p,
        &[
            r#"{"service":"auth","message":"login failed"}"#,
            r#"{"service":"auth","message":"ok"}"#,
            r#"{"service":"orders","message":"failed"}"#,
        ],
    );
    assert_eq!(v.actions, [1, 0, 0]);
}

#[test]
fn rejects_bad_config() {
    let e = crate::util::runtime()
        .load_file(
            "f",
            std::path::Path::new(FILTER),
            r#"{"min_level":"loud"}"#.into(),
            Default::default(),
        )
        .err()
        .expect("init must fail");
    assert!(e.to_string().contains("unknown level `loud`"), "{e}");
}
