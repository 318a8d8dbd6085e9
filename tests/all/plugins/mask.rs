//! The `mask` component.

use super::{load, process, replacements};
use crate::MASK;

#[test]
fn masks_every_kind_in_nested_fields() {
    let mut p = load(MASK, "{}");
    assert!(p.info().masks, "mask must declare that it masks");
    let events = [
        r#"{"message":"user jane@example.com from 203.0.113.9","data":{"card":"4111-1111-1111-1111","peer":"2001:db8::1"}}"#,
        r#"{"message":"iban DE89370400440532013000 token Bearer abcdefgh12345678"}"#,
        r#"{"message":"nothing to see"}"#,
    ];
    let v = process(&mut p, &events);
    assert_eq!(v.actions, [2, 2, 1]);
    let out = replacements(&v);
    assert_eq!(
        out[0],
        r#"{"message":"user [email] from [ipv4]","data":{"card":"[card]","peer":"[ipv6]"}}"#
    );
    assert_eq!(out[1], r#"{"message":"iban [iban] token Bearer [bearer]"}"#);
}

#[test]
fn keyed_hash_keeps_equal_values_correlatable() {
    let mut p = load(MASK, r#"{"hash_key":"k","detect":["email"]}"#);
    let v = process(
        &mut p,
        &[
            r#"{"u":"a@b.io"}"#,
            r#"{"u":"a@b.io"}"#,
            r#"{"u":"c@d.io"}"#,
        ],
    );
    let out = replacements(&v);
    assert_eq!(out[0], out[1]);
    assert_ne!(out[0], out[2]);
    assert!(!out[0].contains("a@b.io"));
}
