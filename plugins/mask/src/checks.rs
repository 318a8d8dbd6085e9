//! The checks a candidate must pass to be masked: Luhn for cards,
//! mod-97 for IBANs, the shape of an email address.

use super::*;

pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

pub(crate) fn is_card(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    (13..=19).contains(&digits.len()) && (b'2'..=b'6').contains(&digits[0]) && luhn(&digits)
}

pub(crate) fn is_iban(text: &str) -> bool {
    let compact: Vec<u8> = text.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    // Move the country code and check digits to the end, letters to numbers,
    // and the remainder mod 97 must be 1 (ISO 13616).
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The next email at or after `from`, exactly where the `email` pattern
/// (`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`,
/// leftmost-first, greedy) would find it, without a regex: for each `@`,
/// the local part is the run of its characters before it (from `from` on);
/// the domain is labels apart by single dots, and the top-level part is the
/// last label that starts with two letters (its leading letters), as the
/// greedy repetition backs off label by label.
pub(crate) fn find_email(b: &[u8], from: usize) -> Option<(usize, usize)> {
    let local = |c: u8| CLASS[c as usize] & LOCAL != 0;
    let label = |c: u8| CLASS[c as usize] & DOMAIN != 0;
    for at in memchr::memchr_iter(b'@', b.get(from..)?).map(|i| i + from) {
        let mut start = at;
        while start > from && local(b[start - 1]) {
            start -= 1;
        }
        if start == at {
            continue;
        }
        // Labels after the `@`, apart by single dots; the top-level part
        // is the last one after the first that starts with two letters.
        let mut i = at + 1;
        let mut first = true;
        let mut top = None;
        loop {
            let s = i;
            while i < b.len() && label(b[i]) {
                i += 1;
            }
            if i == s {
                break;
            }
            if !first {
                let letters = b[s..i]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
                if letters >= 2 {
                    top = Some(s + letters);
                }
            }
            first = false;
            if i < b.len() && b[i] == b'.' {
                i += 1;
            } else {
                break;
            }
        }
        if let Some(end) = top {
            return Some((start, end));
        }
    }
    None
}

pub(crate) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
