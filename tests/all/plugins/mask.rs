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

/// The plugin as sluice runs it (wasm, with SIMD: its byte classes come 16
/// at a time from nibble tables) says what its native build says (a table
/// look-up per byte) for texts that hold every kind of byte the detectors
/// look for, at every offset around the 16-byte steps.
#[test]
fn mask_in_wasm_says_what_it_says_natively() {
    use sluice_plugin::{Config, Plugin};
    let config = r#"{"detect":["email","ipv4","ipv6","card","iban","jwt","bearer","mac"]}"#;
    let native = sluice_mask::Mask::init(Config::new(config)).unwrap();
    let mut wasm = load(MASK, config);
    let pieces = [
        "jane.doe@example.com",
        "10.0.0.12",
        "2001:db8::8a2e:370:7334",
        "fe80::1",
        "4111 1111 1111 1111",
        "4111-1111-1111-1112",
        "DE89370400440532013000",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        "Bearer abcdefgh12345678",
        "bearer\u{a0}abcdefgh12345678",
        "00:1a:2b:3c:4d:5e",
        "00-1A-2B-3C-4D-5E",
        "550e8400-e29b-41d4-a716-446655440000",
        "std::io::Error",
        "v1.2.3.4.5",
        "12:30:45.123",
        "a\\u0040b.io",
        "x@y",
        "1234567890123",
        "\u{e9}t\u{e9} \u{1F600} @ : - .",
        "JJJ bbb BBB ZZZ AAA 999",
    ];
    let mut events = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        for pad in 0..34 {
            let before = "ab0Z:-.@ "
                .chars()
                .cycle()
                .skip(i)
                .take(pad)
                .collect::<String>();
            let text = format!("{before}{piece}");
            let escaped = serde_json::to_string(&text).unwrap();
            events.push(format!("{{\"message\":{escaped},\"n\":{pad}}}"));
            events.push(format!(
                "{{\"timestamp\":\"2026-01-01T00:00:00Z\",\"m\":{escaped},\"k\":\"{}\"}}",
                "x".repeat(pad)
            ));
        }
    }
    let refs: Vec<&str> = events.iter().map(String::as_str).collect();
    let v = process(&mut wasm, &refs);
    let replaced = replacements(&v);
    let mut next = replaced.iter();
    let mut masked = 0;
    for (event, &action) in events.iter().zip(&v.actions) {
        let want = native.mask_event(event.as_bytes()).unwrap();
        let got = (action == 2).then(|| next.next().unwrap().as_bytes().to_vec());
        assert_eq!(
            got.as_deref().map(String::from_utf8_lossy),
            want.as_deref().map(String::from_utf8_lossy),
            "{event}"
        );
        masked += usize::from(got.is_some());
    }
    assert!(
        masked > events.len() / 4,
        "many events hold something to mask: {masked} of {}",
        events.len()
    );
}
