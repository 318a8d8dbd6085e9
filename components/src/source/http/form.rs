//! HTML forms and query strings: `application/x-www-form-urlencoded`
//! decoding, shared by the HTTP source and the admin port.

use serde_json::{Map, Value};

/// Decode `application/x-www-form-urlencoded` text (`+` is a space, `%XX`
/// a byte; `percent-encoding` does the escapes). A malformed escape is kept
/// as it is, and escapes of bytes that are not text (`%FF`) are kept as
/// written rather than turned into U+FFFD: nothing is lost.
pub fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    match percent_encoding::percent_decode_str(&spaced).decode_utf8() {
        Ok(text) => text.into_owned(),
        Err(_) => spaced,
    }
}

/// The decoded `key=value` pairs of a form or a query string.
pub fn form_pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k), form_decode(v))
    })
}

/// An HTML form as an event: every field a string. (A Python
/// `LogRecord` that `logging.handlers.HTTPHandler` posts this way is mapped
/// to the common fields by the source, with the remap plugin's
/// `python-logging` preset.)
pub fn form_event(text: &str) -> Value {
    let mut map = Map::new();
    for (k, v) in form_pairs(text) {
        map.insert(k, Value::String(v));
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_logging_forms() {
        let e =
            form_event("name=app&msg=disk+full%21&levelname=WARNING&created=1795428000.5&lineno=3");
        assert_eq!(e["msg"], "disk full!");
        assert_eq!(e["levelname"], "WARNING");
        assert_eq!(e["lineno"], "3");
    }

    #[test]
    fn form_decoding_keeps_malformed_escapes() {
        assert_eq!(form_decode("a+b%21%zz%"), "a b!%zz%");
        // A `%` before a multi-byte character must not split it.
        assert_eq!(form_decode("x%é"), "x%é");
        // Escapes of bytes that are not UTF-8 stay as written: no U+FFFD.
        assert_eq!(form_decode("caf%C3%A9"), "café");
        assert_eq!(form_decode("bad+%FF%FE"), "bad %FF%FE");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Decoding never panics, and text encoded as a form decodes back.
        #[test]
        fn prop_forms_round_trip(text in "\\PC{0,60}", junk in "[%+=&a-f0-9é]{0,40}") {
            let _ = form_decode(&junk);
            let _: Vec<_> = form_pairs(&junk).collect();
            let encoded: String = text
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                    b' ' => "+".to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect();
            prop_assert_eq!(form_decode(&encoded), text);
        }
    }
}
