//! The `route` component.

use super::{load, process};
use crate::ROUTE;

#[test]
fn routes_by_level_and_declares_outputs() {
    let mut p = load(
        ROUTE,
        r#"{"field":"level","routes":{"errors":["error","fatal"],"warnings":"warn"}}"#,
    );
    assert_eq!(p.info().outputs, ["errors", "warnings"]);
    let v = process(
        &mut p,
        &[
            r#"{"level":"info"}"#,
            r#"{"level":"error"}"#,
            r#"{"level":"warning"}"#,
            r#"{"level":"fatal"}"#,
        ],
    );
    assert_eq!(v.actions, [1, 1, 1, 1]);
    assert_eq!(v.ports, [0, 1, 2, 1]);
}

#[test]
fn rules_by_conditions() {
    let mut p = load(
        ROUTE,
        r#"{"rules":[{"output":"pay","conditions":[{"field":"service","equals":"payments"}]}]}"#,
    );
    let v = process(
        &mut p,
        &[r#"{"service":"payments"}"#, r#"{"service":"auth"}"#],
    );
    assert_eq!(v.ports, [1, 0]);
}
