//! The `sample` component: a custom plugin written with the SDK.

use super::{load, process, replacements};
use crate::SAMPLE;

#[test]
fn drop_route_and_replace_through_the_component() {
    let mut p = load(
        SAMPLE,
        r#"{"drop_paths":["/health"],"slow_ms":1000,"vip_services":["payments"]}"#,
    );
    assert_eq!(p.info().outputs, ["vip"]);
    let v = process(
        &mut p,
        &[
            r#"{"data":{"path":"/health"}}"#,
            r#"{"service":"payments","duration_ms":3}"#,
            r#"{"service":"auth","duration_ms":2000}"#,
        ],
    );
    assert_eq!(v.actions, [0, 1, 2]);
    assert_eq!(v.ports, [0, 1, 0]);
    assert_eq!(
        replacements(&v),
        [r#"{"service":"auth","duration_ms":2000,"slow":true}"#]
    );
}
