//! JSON string literals written as serde_json writes them, by runs: the
//! host's text sources and the `parse` plugin both write many strings that
//! need no escape, or a few (an access log line's quotes).
//!
//! The search for the next byte to escape is the caller's: the host's
//! tests sixteen bytes at a time with SSE2, the plugin's with wasm SIMD.
//! [`plain_until`] is a portable one, eight bytes at a time.

/// Append `text` to `out` as a JSON string literal (quotes included), as
/// serde_json writes it. `plain_until(bytes, i)` is where the first byte
/// from `i` on that must be escaped (`"`, `\`, a control character) is,
/// or `bytes.len()`; the runs between are copied whole.
#[inline]
pub fn push_str_with(out: &mut Vec<u8>, text: &str, plain_until: impl Fn(&[u8], usize) -> usize) {
    let b = text.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut from = 0;
    while from < b.len() {
        let i = plain_until(b, from).max(from);
        out.extend_from_slice(b.get(from..i).unwrap_or_default());
        let Some(&c) = b.get(i) else {
            break;
        };
        push_escape(out, c);
        from = i + 1;
    }
    out.push(b'"');
}

/// [`push_str_with`] with the portable search.
pub fn push_str(out: &mut Vec<u8>, text: &str) {
    push_str_with(out, text, plain_until);
}

/// The escape of `c` (a byte [`plain_until`] stops at), as serde_json
/// writes it.
#[inline]
fn push_escape(out: &mut Vec<u8>, c: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match c {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        c if c < 0x20 => {
            out.extend_from_slice(b"\\u00");
            out.extend(HEX.get(usize::from(c >> 4)));
            out.extend(HEX.get(usize::from(c & 15)));
        }
        // Not a byte to escape (a search that stopped early): as it is.
        c => out.push(c),
    }
}

/// Where the first byte from `i` on that a JSON string must escape is, or
/// `b.len()`: eight bytes at a time ([`crate::bytes::find_by`]).
pub fn plain_until(b: &[u8], i: usize) -> usize {
    use crate::bytes::{bytes_below, find_by, zero_bytes, ONES};
    let hits = |x: u64| {
        zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | bytes_below(x, 0x20)
    };
    let one = |c: u8| c < 0x20 || c == b'"' || c == b'\\';
    b.get(i..)
        .and_then(|rest| find_by(rest, hits, one))
        .map_or(b.len(), |p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_writes_them() {
        let mut texts: Vec<String> = (0u8..=0x7f)
            .map(|b| format!("ab{}cdefghij", b as char))
            .collect();
        texts.extend(
            [
                "",
                "\"",
                "\\",
                "é\u{2028}x\"y\\z\n",
                "12345678\"",
                "1234567\u{1}",
            ]
            .map(String::from),
        );
        for len in 0..20 {
            texts.push("q\"".repeat(len));
        }
        // Each byte to escape at every place of every length up to three
        // words, after a first character of two bytes.
        for len in 1..26 {
            for at in 0..len {
                for special in ['"', '\\', '\u{1f}', '\n', '\u{8}'] {
                    let mut t: Vec<char> =
                        "é".chars().chain(std::iter::repeat_n('x', len)).collect();
                    t[at + 1] = special;
                    texts.push(t.into_iter().collect());
                }
            }
        }
        for t in texts {
            let mut out = Vec::new();
            push_str(&mut out, &t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&t).unwrap()
            );
        }
    }

    #[test]
    fn the_search_agrees_with_a_byte_loop_from_every_start() {
        let fill = [b'a', 0x80 | b'"', b'"' + 1, b'\\' - 1, 0x20, 0xff];
        for len in 0usize..26 {
            for &f in &fill {
                for at in 0..=len {
                    let mut h = vec![f; len];
                    if at < len {
                        h[at] = b'"';
                    }
                    for i in 0..=len {
                        let want = h[i..]
                            .iter()
                            .position(|&c| c < 0x20 || c == b'"' || c == b'\\')
                            .map_or(len, |p| i + p);
                        assert_eq!(plain_until(&h, i), want, "{h:?} from {i}");
                    }
                }
            }
        }
    }
}
