//! The byte tables and scans that decide, per string, which detectors
//! could match at all (their trigger bytes and shapes, 16 bytes at a
//! time), before any detector runs.

use super::*;

/// Bits of [`triggers`]: which built-in detectors could match a text.
pub(crate) const T_EMAIL: u16 = 1;
pub(crate) const T_IPV4: u16 = 2;
pub(crate) const T_IPV6: u16 = 4;
pub(crate) const T_CARD: u16 = 8;
pub(crate) const T_IBAN: u16 = 16;
pub(crate) const T_JWT: u16 = 32;
pub(crate) const T_BEARER: u16 = 64;
pub(crate) const T_MAC: u16 = 128;
/// Not a trigger: custom patterns are in use (always tried).
pub(crate) const CUSTOM: u16 = 0x8000;

pub(crate) fn trigger_of(kind: &str) -> u16 {
    match kind {
        "email" => T_EMAIL,
        "ipv4" => T_IPV4,
        "ipv6" => T_IPV6,
        "card" => T_CARD,
        "iban" => T_IBAN,
        "jwt" => T_JWT,
        "bearer" => T_BEARER,
        "mac" => T_MAC,
        _ => 0,
    }
}

/// Bits of [`SEEN`]: the kinds of bytes [`triggers`] looks for.
/// All but capitals fit a byte, digits its top bit: the wasm SIMD
/// [`kinds`] computes them as one byte per input byte.
pub(crate) const S_COLON: u16 = 0x01;
pub(crate) const S_DASH: u16 = 0x02;
pub(crate) const S_DOT: u16 = 0x04;
pub(crate) const S_AT: u16 = 0x08;
pub(crate) const S_B: u16 = 0x10; // b or B
pub(crate) const S_J: u16 = 0x20;
pub(crate) const S_ESC: u16 = 0x40; // a backslash: the text holds JSON escapes
pub(crate) const S_DIGIT: u16 = 0x80;
pub(crate) const S_UPPER: u16 = 0x100;
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) const SEEN: [u16; 256] = {
    let mut t = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_digit() {
            v |= S_DIGIT;
        }
        if c.is_ascii_uppercase() {
            v |= S_UPPER;
        }
        match c {
            b':' => v |= S_COLON,
            b'-' => v |= S_DASH,
            b'.' => v |= S_DOT,
            b'@' => v |= S_AT,
            b'b' | b'B' => v |= S_B,
            _ => {}
        }
        if c == b'J' {
            v |= S_J;
        }
        if c == b'\\' {
            v |= S_ESC;
        }
        t[b] = v;
        b += 1;
    }
    t
};

/// Byte classes of email addresses, for the check at an `@` and for
/// [`find_email`].
pub(crate) const LOCAL: u8 = 1; // the characters of an email's local part
pub(crate) const DOMAIN: u8 = 2; // those of its domain's labels
pub(crate) const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_alphanumeric() {
            v |= LOCAL | DOMAIN;
        }
        if matches!(c, b'.' | b'_' | b'%' | b'+' | b'-') {
            v |= LOCAL;
        }
        if c == b'-' {
            v |= DOMAIN;
        }
        t[b] = v;
        b += 1;
    }
    t
};

/// The kinds of bytes `b` holds (the `S_` bits of [`SEEN`]) and how many
/// digits, with each byte's class (the `S_` bits that fit a byte) put in
/// `classes`, 16 bytes to an entry (bytes past the end are of no kind):
/// one table look-up per byte.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) fn kinds(b: &[u8], classes: &mut Vec<[u8; 16]>) -> (u16, u32) {
    let mut seen = 0u16;
    let mut digits = 0u32;
    classes.clear();
    for chunk in b.chunks(16) {
        let mut out = [0u8; 16];
        for (o, &c) in out.iter_mut().zip(chunk) {
            let k = SEEN[c as usize];
            seen |= k;
            digits += u32::from(k & S_DIGIT != 0);
            *o = k as u8;
        }
        classes.push(out);
    }
    (seen, digits)
}

/// The lanes of a 16-byte entry of [`kinds`]' classes that hold any of
/// `bits`, as a bit mask (bit `i` for byte `i`).
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) fn lanes(classes: &[u8; 16], bits: u8) -> u16 {
    classes
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &c)| acc | (u16::from(c & bits != 0) << i))
}

/// [`kinds`] with wasm SIMD, 16 bytes a step: each byte's class is the AND
/// of a table indexed by its low nibble and one indexed by its high nibble
/// (two swizzles), which holds every kind but capitals (a range compare);
/// digits are the class's top bit, so the byte mask counts them. The
/// integration tests hold the plugin built this way to the table above
/// (`mask_in_wasm_says_what_it_says_natively`).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn kinds(b: &[u8], classes: &mut Vec<[u8; 16]>) -> (u16, u32) {
    use core::arch::wasm32::*;
    // The nibble tables' output: the `S_` bits that fit a byte.
    const C_DIGIT: u8 = S_DIGIT as u8;
    const C_COLON: u8 = S_COLON as u8;
    const C_DASH: u8 = S_DASH as u8;
    const C_DOT: u8 = S_DOT as u8;
    const C_AT: u8 = S_AT as u8;
    const C_B: u8 = S_B as u8;
    const C_J: u8 = S_J as u8;
    const C_ESC: u8 = S_ESC as u8;
    // By low nibble: digits are 0-9 (high 3), `@` 0 (4), `b`/`B` 2 (4, 6),
    // `:` and `J` A (3, 4), `\` C (5), `-` D (2), `.` E (2).
    const D: u8 = C_DIGIT;
    let lo_table = u8x16(
        D | C_AT,
        D,
        D | C_B,
        D,
        D,
        D,
        D,
        D,
        D,
        D,
        C_COLON | C_J,
        0,
        C_ESC,
        C_DASH,
        C_DOT,
        0,
    );
    let hi_table = u8x16(
        0,
        0,
        C_DASH | C_DOT,
        C_DIGIT | C_COLON,
        C_AT | C_B | C_J,
        C_ESC,
        C_B,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    );
    let (nibble, a, letters) = (u8x16_splat(0x0f), u8x16_splat(b'A'), u8x16_splat(26));
    let (mut class, mut upper) = (u8x16_splat(0), u8x16_splat(0));
    let mut digits = 0u32;
    classes.clear();
    classes.reserve(b.len().div_ceil(16));
    let mut step = |v: v128| {
        let c = v128_and(
            i8x16_swizzle(lo_table, v128_and(v, nibble)),
            i8x16_swizzle(hi_table, u8x16_shr(v, 4)),
        );
        digits += i8x16_bitmask(c).count_ones();
        class = v128_or(class, c);
        upper = v128_or(upper, u8x16_lt(u8x16_sub(v, a), letters));
        let mut out = [0u8; 16];
        // SAFETY: `out` is 16 writable bytes.
        unsafe { v128_store(out.as_mut_ptr().cast(), c) };
        classes.push(out);
    };
    let mut blocks = b.chunks_exact(16);
    for block in &mut blocks {
        // SAFETY: `block` is 16 readable bytes; wasm loads need no alignment.
        step(unsafe { v128_load(block.as_ptr().cast()) });
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        // Zero bytes are of no kind.
        let mut last = [0u8; 16];
        last[..rest.len()].copy_from_slice(rest);
        // SAFETY: `last` is 16 bytes.
        step(unsafe { v128_load(last.as_ptr().cast()) });
    }
    let mut all = [0u8; 16];
    // SAFETY: `all` is 16 writable bytes.
    unsafe { v128_store(all.as_mut_ptr().cast(), class) };
    let class = all.iter().fold(0u8, |acc, &c| acc | c);
    let upper = if v128_any_true(upper) { S_UPPER } else { 0 };
    (u16::from(class) | upper, digits)
}

/// [`lanes`] with wasm SIMD: a compare and a byte mask.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn lanes(classes: &[u8; 16], bits: u8) -> u16 {
    use core::arch::wasm32::*;
    // SAFETY: `classes` is 16 readable bytes.
    let c = unsafe { v128_load(classes.as_ptr().cast()) };
    let hit = v128_and(c, u8x16_splat(bits));
    i8x16_bitmask(i8x16_ne(hit, u8x16_splat(0)))
}

/// Whether `f` holds at the position of a byte whose class holds any of
/// `bits`, trying them in order.
pub(crate) fn any_at(classes: &[[u8; 16]], bits: u8, mut f: impl FnMut(usize) -> bool) -> bool {
    for (j, c) in classes.iter().enumerate() {
        let mut m = lanes(c, bits);
        while m != 0 {
            if f(16 * j + m.trailing_zeros() as usize) {
                return true;
            }
            m &= m - 1;
        }
    }
    false
}

/// Bit `i` set when byte `64 w + i` is a digit (none past the end).
pub(crate) fn digit_word(classes: &[[u8; 16]], w: usize) -> u64 {
    classes
        .iter()
        .skip(4 * w)
        .take(4)
        .enumerate()
        .fold(0, |acc, (k, c)| {
            acc | u64::from(lanes(c, S_DIGIT as u8)) << (16 * k)
        })
}

/// Whether 13 digits are at most one byte apart somewhere (what a card
/// number needs): a run of 13 once single gaps between digits are filled,
/// found 64 bytes a step.
pub(crate) fn card_shape(classes: &[[u8; 16]]) -> bool {
    let words = classes.len().div_ceil(4);
    let (mut prev, mut cur) = (0u64, digit_word(classes, 0));
    // The length of the run that reaches the end of the previous word.
    let mut run = 0u32;
    for w in 0..words {
        let next = digit_word(classes, w + 1);
        let before = (cur << 1) | (prev >> 63);
        let after = (cur >> 1) | (next << 63);
        let f = cur | (before & after);
        run += f.trailing_ones();
        if run >= 13 {
            return true;
        }
        // Runs of 13 inside the word: bits that start runs of 2, 4, 8, 13.
        let mut x = f & (f >> 1);
        x &= x >> 2;
        x &= x >> 4;
        x &= x >> 5;
        if x != 0 {
            return true;
        }
        run = f.leading_ones();
        (prev, cur) = (cur, next);
    }
    false
}

/// Whether a replacement can never take part in a match: it begins and
/// ends with a byte no detector's pattern holds (`[`, `]`, `*`, ...), so no
/// match runs into it, and nothing inside it triggers a detector.
pub(crate) fn inert(replacement: &str, wanted: u16) -> bool {
    let closed = |c: u8| {
        !(c.is_ascii_alphanumeric()
            || c.is_ascii_whitespace()
            || c >= 0x80
            || b"._%+-:@~/=".contains(&c))
    };
    let b = replacement.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => closed(f) && closed(l) && triggers(b, wanted) == 0,
        _ => false,
    }
}

/// Which built-in detectors could match somewhere in `b`: for each, a
/// condition every match needs (an `@` between an address's characters,
/// three dots between digits in one run of digits and dots, 13 digits
/// apart by at most one space or dash, two capitals before two digits,
/// `eyJ`, `bearer` and a space, two colons with only hex digits and dots
/// between, five separators between hex pairs). A detector whose bit is
/// unset is skipped: no regex runs over texts that cannot hold its kind.
pub(crate) fn triggers(b: &[u8], wanted: u16) -> u16 {
    scan_triggers(b, wanted, false).0
}

/// [`triggers`], and whether `b` holds a backslash (a JSON escape). With
/// `any`, it stops at the first kind found (all the gate needs to know).
pub(crate) fn scan_triggers(b: &[u8], wanted: u16, any: bool) -> (u16, bool) {
    CLASSES.with_borrow_mut(|classes| scan_classes(b, wanted, any, classes))
}

pub(crate) fn scan_classes(
    b: &[u8],
    wanted: u16,
    any: bool,
    classes: &mut Vec<[u8; 16]>,
) -> (u16, bool) {
    // Which kinds of bytes the text holds, how many digits, and where
    // ([`kinds`]). Most texts lack what every kind needs; only a kind
    // whose bytes are all there is looked at closer, at the positions of
    // its rarest byte.
    let (seen, digits) = kinds(b, classes);
    let escaped = seen & S_ESC != 0;
    if b.len() < 3 {
        // The shortest match of any kind (`::1`) has three bytes.
        return (0, escaped);
    }
    let has = |bits: u16| seen & bits == bits;
    let c = &classes[..];
    let digit = |p: usize| b.get(p).is_some_and(u8::is_ascii_digit);
    let mut found = 0u16;
    macro_rules! hit {
        ($t:expr) => {{
            found |= $t;
            if any {
                return (found, escaped);
            }
        }};
    }
    if wanted & T_EMAIL != 0
        && has(S_AT)
        && any_at(c, S_AT as u8, |p| {
            p > 0
                && CLASS[b[p - 1] as usize] & LOCAL != 0
                && b.get(p + 1)
                    .is_some_and(|&c| CLASS[c as usize] & DOMAIN != 0)
        })
    {
        hit!(T_EMAIL);
    }
    if wanted & T_JWT != 0 && has(S_J) && any_at(c, S_J as u8, |p| p >= 2 && &b[p - 2..p] == b"ey")
    {
        hit!(T_JWT);
    }
    if wanted & T_BEARER != 0
        && has(S_B)
        && any_at(c, S_B as u8, |p| {
            // `\s` in the pattern is any Unicode space: a non-ASCII byte
            // after the word may start one.
            b.len() >= p + 7
                && b[p..p + 6].eq_ignore_ascii_case(b"bearer")
                && (b[p + 6].is_ascii_whitespace() || b[p + 6] >= 0x80)
        })
    {
        hit!(T_BEARER);
    }
    // An address has three dots between digits.
    if wanted & T_IPV4 != 0
        && has(S_DOT)
        && digits >= 4
        && {
            let mut between = 0;
            any_at(c, S_DOT as u8, |p| {
                between += u32::from(p > 0 && digit(p - 1) && digit(p + 1));
                between == 3
            })
        }
        && ipv4_run(b)
    {
        hit!(T_IPV4);
    }
    if wanted & T_CARD != 0 && digits >= 13 && card_shape(c) && card_run(b) {
        hit!(T_CARD);
    }
    // Two capitals, then two digits.
    if wanted & T_IBAN != 0
        && has(S_UPPER)
        && digits >= 2
        && any_at(c, S_DIGIT as u8, |p| {
            p >= 2 && b[p - 2].is_ascii_uppercase() && b[p - 1].is_ascii_uppercase() && digit(p + 1)
        })
    {
        hit!(T_IBAN);
    }
    // IPv6 and MAC addresses, from their separators, in one walk.
    let seps = wanted & (T_IPV6 | T_MAC);
    if seps != 0 && seen & (S_COLON | S_DASH) != 0 {
        let (v6, mac) = separators(b, seps, c);
        if v6 {
            hit!(T_IPV6);
        }
        if mac {
            hit!(T_MAC);
        }
    }
    (found, escaped)
}

/// Whether the IPv6 shape (two colons with only hex digits and dots
/// between, in a run with a hex digit) and the MAC shape (a separator, two
/// hex digits, a separator) are in `b`, from one walk over the positions of
/// its colons and dashes (from their `classes`).
pub(crate) fn separators(b: &[u8], wanted: u16, classes: &[[u8; 16]]) -> (bool, bool) {
    let (mut v6, mut mac) = (wanted & T_IPV6 == 0, wanted & T_MAC == 0);
    let run = |c: u8| c.is_ascii_hexdigit() || c == b'.';
    any_at(classes, (S_COLON | S_DASH) as u8, |p| {
        if !mac
            && b.len() > p + 3
            && b[p + 1].is_ascii_hexdigit()
            && b[p + 2].is_ascii_hexdigit()
            && matches!(b[p + 3], b':' | b'-')
        {
            mac = true;
        }
        if !v6 && b[p] == b':' {
            let mut i = p + 1;
            while i < b.len() && run(b[i]) {
                i += 1;
            }
            if i < b.len() && b[i] == b':' {
                let mut s = p;
                while s > 0 && (run(b[s - 1]) || b[s - 1] == b':') {
                    s -= 1;
                }
                let mut e = i;
                while e < b.len() && (run(b[e]) || b[e] == b':') {
                    e += 1;
                }
                v6 = b[s..e].iter().any(u8::is_ascii_hexdigit);
            }
        }
        v6 && mac
    });
    (v6 && wanted & T_IPV6 != 0, mac && wanted & T_MAC != 0)
}

/// Three dots inside one run of digits and dots (an IPv4 address's shape).
pub(crate) fn ipv4_run(b: &[u8]) -> bool {
    let (mut dots, mut inside) = (0u32, false);
    let mut prev = 0u8;
    for &c in b {
        if c.is_ascii_digit() {
            inside = true;
        } else if c == b'.' && inside {
            dots += 1;
            if dots >= 3 && prev.is_ascii_digit() {
                return true;
            }
        } else {
            (dots, inside) = (0, false);
        }
        prev = c;
    }
    false
}

/// Thirteen digits, at most one space or dash between two.
pub(crate) fn card_run(b: &[u8]) -> bool {
    let (mut digits, mut sep) = (0u32, false);
    for &c in b {
        if c.is_ascii_digit() {
            digits += 1;
            sep = false;
            if digits >= 13 {
                return true;
            }
        } else if (c == b' ' || c == b'-') && !sep && digits > 0 {
            sep = true;
        } else {
            (digits, sep) = (0, false);
        }
    }
    false
}
