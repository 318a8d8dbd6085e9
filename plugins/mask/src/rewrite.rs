//! The rewriter: one pass over an event's raw JSON, writing it out with
//! the masked strings in place and everything else copied as it is.

use super::*;

/// How the scanner treats a value: mask every string in it, check the keys
/// of its objects against `fields` and `skip_fields`, or leave it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    All,
    Paths,
    Skip,
}

/// A scan of one event's raw JSON, writing the masked event as it goes.
pub(crate) struct Scan<'a, 'o> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
    /// The masked event so far, after what `out` held: the raw bytes up to
    /// `copied`, with the masked strings in place (nothing until the first
    /// one).
    pub(crate) out: &'o mut Vec<u8>,
    pub(crate) copied: usize,
    /// The built-in detectors the event's bytes could trigger.
    pub(crate) wanted: u16,
}

/// The first `"` or `\\` in `b` at or after `from`.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) fn quote_or_escape(b: &[u8], from: usize) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', b.get(from..)?).map(|k| from + k)
}

/// [`quote_or_escape`] with wasm SIMD, 16 bytes a step: most strings end
/// in the first step, with none of a vector search's set-up.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn quote_or_escape(b: &[u8], from: usize) -> Option<usize> {
    use core::arch::wasm32::*;
    let mut j = from;
    while let Some(block) = b.get(j..j + 16) {
        // SAFETY: `block` is 16 readable bytes; wasm loads need no alignment.
        let v = unsafe { v128_load(block.as_ptr().cast()) };
        let hit = v128_or(
            i8x16_eq(v, u8x16_splat(b'"')),
            i8x16_eq(v, u8x16_splat(b'\\')),
        );
        let m = i8x16_bitmask(hit);
        if m != 0 {
            return Some(j + m.trailing_zeros() as usize);
        }
        j += 16;
    }
    let rest = b.get(j..)?;
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|k| j + k)
}

impl Scan<'_, '_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    pub(crate) fn rest_is_blank(&mut self) -> bool {
        self.ws();
        self.i == self.b.len()
    }

    /// The content of the string at `i` (after its quote), moving past
    /// it, and whether it holds escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), ()> {
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        loop {
            let k = quote_or_escape(self.b, j).ok_or(())?;
            if self.b[k] == b'\\' {
                escaped = true;
                j = k + 2;
                continue;
            }
            self.i = k + 1;
            return Ok((start, k, escaped));
        }
    }

    /// The text of a string the scanner found: borrowed, or decoded when
    /// it holds escapes.
    fn text<'b>(
        b: &'b [u8],
        (start, end, escaped): (usize, usize, bool),
    ) -> Result<Cow<'b, str>, ()> {
        if escaped {
            serde_json::from_slice::<String>(b.get(start - 1..=end).ok_or(())?)
                .map(Cow::Owned)
                .map_err(|_| ())
        } else {
            std::str::from_utf8(b.get(start..end).ok_or(())?)
                .map(Cow::Borrowed)
                .map_err(|_| ())
        }
    }

    pub(crate) fn value(&mut self, mask: &Mask, mode: Mode, path: &str) -> Result<(), ()> {
        self.ws();
        match *self.b.get(self.i).ok_or(())? {
            b'"' => {
                let span = self.string()?;
                let (start, end, _) = span;
                if mode != Mode::Skip {
                    // A plain string is looked at in place, and checked to be
                    // UTF-8 only when it holds something to mask.
                    let (text, hits) = match span.2 {
                        true => {
                            let text = Self::text(self.b, span)?;
                            let hits = mask.hits(text.as_bytes(), self.wanted);
                            (text, hits)
                        }
                        false => match mask.hits(&self.b[start..end], self.wanted) {
                            0 => return Ok(()),
                            hits => (Self::text(self.b, span)?, hits),
                        },
                    };
                    if hits == 0 {
                        return Ok(());
                    }
                    let mark = self.out.len();
                    if self.copied == 0 {
                        self.out.reserve(self.b.len() + 32);
                    }
                    self.out.extend_from_slice(&self.b[self.copied..start]);
                    let masked = self.out.len();
                    if !mask.mask_hits_into(&text, hits, self.out) {
                        self.out.truncate(mark);
                        return Ok(());
                    }
                    // The replacement may hold what JSON must escape.
                    if self.out[masked..]
                        .iter()
                        .any(|&c| c == b'"' || c == b'\\' || c < 0x20)
                    {
                        let text = String::from_utf8(self.out.split_off(masked)).map_err(|_| ())?;
                        let quoted = serde_json::to_string(&text).map_err(|_| ())?;
                        self.out
                            .extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
                    }
                    self.copied = end;
                }
                Ok(())
            }
            b'{' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return Err(());
                    }
                    let key_span = self.string()?;
                    self.ws();
                    if self.b.get(self.i) != Some(&b':') {
                        return Err(());
                    }
                    self.i += 1;
                    let child = match mode {
                        Mode::Paths => {
                            let key = Self::text(self.b, key_span)?;
                            let p = if path.is_empty() {
                                key
                            } else {
                                Cow::Owned(format!("{path}.{key}"))
                            };
                            let m = mask.mode_of(&p);
                            self.value(mask, m, &p)?;
                            None
                        }
                        other => Some(other),
                    };
                    if let Some(m) = child {
                        self.value(mask, m, "")?;
                    }
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(());
                }
                // Strings in an array are masked whole (no keys to check).
                let m = if mode == Mode::Skip {
                    Mode::Skip
                } else {
                    Mode::All
                };
                loop {
                    self.value(mask, m, "")?;
                    self.ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err(()),
                    }
                }
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = self.i;
                while self.b.get(self.i).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.i += 1;
                }
                if self.i == start {
                    return Err(());
                }
                Ok(())
            }
        }
    }

    /// Put the rest of the event after the last masked string.
    pub(crate) fn finish(self) {
        self.out.extend_from_slice(&self.b[self.copied..]);
    }
}
