//! Searches over bytes eight at a time (SWAR): short values, where a
//! vectorised search's setup costs more than it saves, and code that must
//! run alike in the host and in a wasm plugin.

/// Each byte of a word set to 1: `ONES * u64::from(c)` is `c` eight times.
pub const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero (exact for the lowest
/// such byte; a borrow may mark the bytes above it, which no caller reads).
#[inline(always)]
pub fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bit of each byte of `x` below `n` (exact for the lowest, as
/// [`zero_bytes`]).
#[inline(always)]
pub fn bytes_below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

/// The first byte of `hay` that `hits` marks (the high bit of a byte, as
/// [`zero_bytes`] does), eight bytes at a time; the last few by one word
/// that overlaps the bytes already read (short values end in a partial
/// word, and a byte loop there cost more than the words before it).
/// `one` is the same test for a single byte, for `hay` under 8 bytes.
#[inline(always)]
pub fn find_by(hay: &[u8], hits: impl Fn(u64) -> u64, one: impl Fn(u8) -> bool) -> Option<usize> {
    let word = |at: usize| {
        u64::from_le_bytes(
            hay.get(at..at + 8)
                .and_then(|w| w.try_into().ok())
                .unwrap_or([0; 8]),
        )
    };
    let mut i = 0;
    while i + 8 <= hay.len() {
        let hit = hits(word(i));
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    if i == hay.len() {
        return None;
    }
    if hay.len() >= 8 {
        // The bytes below `i` were read: no hit there, so no borrow from
        // them either, and the lowest mark left is exact.
        let start = hay.len() - 8;
        let hit = hits(word(start)) & (u64::MAX << ((i - start) * 8));
        return (hit != 0).then(|| start + (hit.trailing_zeros() / 8) as usize);
    }
    hay.get(i..)?.iter().position(|&c| one(c)).map(|p| i + p)
}
