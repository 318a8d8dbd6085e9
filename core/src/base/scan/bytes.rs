//! The byte classes the scanner skips strings by: sixteen bytes tested at
//! once. In a module of their own, `#[inline(always)]`, so that each use
//! is compiled into the scanner's loop.

/// The bytes of a block of sixteen that end a run of plain string bytes
/// (a quote, a backslash, a control character), one bit each, lowest
/// first. SSE2 (every x86-64 has it): three compares and a mask.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn special16(block: &[u8]) -> u32 {
    use std::arch::x86_64::*;
    if block.len() < 16 {
        return u32::MAX;
    }
    // SAFETY: SSE2 is part of every x86-64 CPU (the target's baseline);
    // the sixteen bytes loaded are in `block` (checked above), and the
    // load takes any alignment.
    unsafe {
        let x = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
        let slash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
        // x <= 0x1f (unsigned): max(x, 0x1f) == 0x1f.
        let low = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(x, low), low);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, slash), control)) as u32
    }
}

/// [`special16`] without SSE2: two words of eight bytes, each byte's
/// test in its high bit.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn special16(block: &[u8]) -> u32 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let word = |w: &[u8]| -> u32 {
        let x = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        let special = zero_bytes(x ^ (ONES * u64::from(b'"')))
            | zero_bytes(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS);
        // Only the lowest set byte is exact; the bits above it are not
        // read (the scan stops at the lowest).
        let low = special & special.wrapping_neg();
        if low == 0 {
            0
        } else {
            1 << (low.trailing_zeros() / 8)
        }
    };
    match (block.get(..8), block.get(8..16)) {
        (Some(a), Some(b)) => match word(a) {
            0 => word(b) << 8,
            m => m,
        },
        _ => u32::MAX,
    }
}

/// A key's bit in a [`super::filter`]: from its length, first and last byte,
/// mixed by a multiplication (with the length and first byte alone,
/// `message` and `datetime` shared a bit, and every event with a
/// `message` compared it with every head).
#[inline(always)]
pub(super) fn bit(key: &[u8]) -> u64 {
    let (first, last) = (key.first().copied(), key.last().copied());
    let h =
        key.len() as u64 | u64::from(first.unwrap_or(0)) << 16 | u64::from(last.unwrap_or(0)) << 24;
    1 << (h.wrapping_mul(0xFF51_AFD7_ED55_8CCD) >> 58)
}

/// Whether a wanted key is the key read: the length and first byte
/// inline, the rest only then (most keys differ in one of those, and a
/// call to `memcmp` per key and wanted key was a tenth of an event's cost).
#[inline]
pub(super) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a.iter().zip(b).all(|(x, y)| x == y)
}
