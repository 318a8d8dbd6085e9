//! The check every event gets on its way in: that its bytes are exactly
//! one JSON object, which every plugin and sink can parse, catching on the
//! way the values an event's time may be in, without building the object
//! or reading any byte twice.
//!
//! It accepts what `serde_json::from_str::<Value>` accepts (a property test
//! holds it to that): strings whose escapes make valid Unicode, numbers
//! of any size, at most 127 levels of nesting, JSON whitespace around
//! tokens and after the object. It is hand-written because this check is
//! most of what a passthrough event costs and serde's visitor machinery
//! made that cost depend on how many keys an event has: strings are
//! skipped eight bytes at a time, and keys are compared against the
//! wanted ones only when their length and first byte match.

use std::borrow::Cow;

use super::event::{Head, ObjectInfo};

mod bytes;
pub(crate) use bytes::special16;
use bytes::{bit, same};

/// JSON nesting allowed (serde_json's limit: 127 levels).
const MAX_DEPTH: u32 = 128;

/// `text`, checked: exactly one JSON object. `caught[i]` gets the raw
/// value (as written, without surrounding whitespace) of `heads[i]`: the
/// first top-level `key`, or with `rest`, the value at that dotted path
/// inside it (a key holding the whole rest of the path wins over nested
/// objects).
/// `filter` is [`filter`] of `heads`: a key whose length, first and last
/// byte it does not hold is skipped without a look at `heads`. Once a
/// top-level `timestamp` is read the filter is emptied: the event's time
/// is that one, so only keys written with escapes (which the filter never
/// skips) are still compared with `heads`.
pub fn scan<'a>(
    text: &'a str,
    heads: &[Head],
    filter: u64,
    caught: &mut [Option<&'a str>],
) -> Result<ObjectInfo, String> {
    let mut s = Scanner::new(text);
    s.object(heads, filter, caught).map_err(|Fail| s.message())
}

/// The keys a top-level key of an object may be wanted as (`timestamp`
/// and every head's key), as one bit each of 64: most keys of an event
/// share no bit with them and cost one test instead of a comparison with
/// every head.
pub fn filter(heads: &[Head]) -> u64 {
    heads
        .iter()
        .fold(bit(b"timestamp"), |m, h| m | bit(h.key.as_bytes()))
}

/// The raw value at a dotted `path` inside the raw JSON value `raw`, if it
/// is an object (a key holding the whole path wins over nested objects).
pub fn raw_field<'a>(raw: &'a str, path: &str) -> Option<&'a str> {
    let mut s = Scanner::new(raw);
    s.ws();
    s.path(path).ok().flatten()
}

/// The text is not one JSON object: what and where are kept in the
/// scanner and made into a message only when it is the answer (a
/// `String`, or even a position, on every `Result` of the pass is moved
/// through memory on every return and cost more than the pass).
#[derive(Debug, Clone, Copy)]
struct Fail;

/// A key as read: where its text is (without the quotes) and whether it
/// was written with escapes.
#[derive(Debug, Clone, Copy)]
struct Key {
    start: usize,
    end: usize,
    escaped: bool,
}

struct Scanner<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
    depth: u32,
    /// What the last `path_in` found.
    found: Option<&'a str>,
    /// Where the text failed, and why.
    failed: (usize, &'static str),
}

impl<'a> Scanner<'a> {
    fn new(text: &'a str) -> Self {
        Scanner {
            text,
            b: text.as_bytes(),
            i: 0,
            depth: 0,
            found: None,
            failed: (0, ""),
        }
    }
}

/// The bit of a key's end that says it has escapes (texts are far
/// shorter than half the address space).
const ESCAPED: usize = 1 << (usize::BITS - 1);

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// `what` at the current place.
    #[cold]
    fn error(&mut self, what: &'static str) -> Fail {
        self.failed = (self.i, what);
        Fail
    }

    /// The failure as serde_json says it: what, at which line and column.
    fn message(&self) -> String {
        let (at, what) = self.failed;
        let before = self.b.get(..at).unwrap_or(self.b);
        let line = before.iter().filter(|&&c| c == b'\n').count() + 1;
        let column = before.len()
            - before
                .iter()
                .rposition(|&c| c == b'\n')
                .map_or(0, |p| p + 1);
        format!("{what} at line {line} column {}", column + 1)
    }

    /// Into an object or array (at its opening byte).
    fn enter(&mut self) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.i += 1;
        Ok(())
    }

    /// In an object, after `{` (`first`) or a value: the next key, its
    /// `:` read and the whitespace after it; `None` after the closing `}`.
    #[inline(always)]
    fn next_key(&mut self, first: bool) -> Result<Option<Key>, Fail> {
        let next = self.next_key_words(first);
        match next {
            (0, _) => Ok(None),
            (usize::MAX, _) => Err(Fail),
            (start, end) => Ok(Some(Key {
                start,
                end: end & !ESCAPED,
                escaped: end & ESCAPED != 0,
            })),
        }
    }

    /// [`Scanner::next_key`] as two words, which are returned in registers
    /// (a `Result<Option<Key>>` went through memory, and reading it back
    /// stalled the pass): `(0, _)` at the closing `}`, `(usize::MAX, _)`
    /// on failure, else the key's start and its end (with [`ESCAPED`] set
    /// if it has escapes). A key never starts at 0: the `{` is there.
    #[inline(always)]
    fn next_key_words(&mut self, first: bool) -> (usize, usize) {
        match self.next_key_in(first) {
            Ok(Some((start, end))) => (start, end),
            Ok(None) => (0, 0),
            Err(Fail) => (usize::MAX, 0),
        }
    }

    #[inline(always)]
    fn next_key_in(&mut self, first: bool) -> Result<Option<(usize, usize)>, Fail> {
        self.ws();
        match self.peek() {
            Some(b'"') if first => {}
            Some(b',') if !first => {
                self.i += 1;
                self.ws();
                if self.peek() != Some(b'"') {
                    return Err(self.error(match self.peek() {
                        Some(b'}') => "trailing comma",
                        None => "EOF while parsing a value",
                        Some(_) => "key must be a string",
                    }));
                }
            }
            Some(b'}') => {
                self.i += 1;
                self.depth -= 1;
                return Ok(None);
            }
            None => return Err(self.error("EOF while parsing an object")),
            Some(_) if first => return Err(self.error("key must be a string")),
            Some(_) => return Err(self.error("expected `,` or `}`")),
        }
        let start = self.i + 1;
        let escaped = self.string()?;
        let end = self.i - 1;
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.error(if self.peek().is_none() {
                "EOF while parsing an object"
            } else {
                "expected `:`"
            }));
        }
        self.i += 1;
        self.ws();
        Ok(Some((start, if escaped { end | ESCAPED } else { end })))
    }

    /// Whether `key` is `want`: its bytes compared inline, length and
    /// first byte first (most keys differ in one of those; a call to
    /// `memcmp` per key cost more than the loop).
    #[inline]
    fn key_is(&self, key: Key, want: &str) -> bool {
        if key.escaped {
            return self.key(key).is_some_and(|k| k == want);
        }
        let k = self.b.get(key.start..key.end).unwrap_or_default();
        same(k, want.as_bytes())
    }

    /// The rest of a dotted `path` after `key`, if `key` is its head.
    #[inline]
    fn key_heads<'p>(&self, key: Key, path: &'p str) -> Option<&'p str> {
        let len = if key.escaped {
            let k = self.key(key)?;
            (path.len() > k.len() && path.starts_with(k.as_ref())).then_some(k.len())?
        } else {
            let k = self.b.get(key.start..key.end)?;
            (path.len() > k.len() && same(path.as_bytes().get(..k.len())?, k)).then_some(k.len())?
        };
        (path.as_bytes().get(len) == Some(&b'.')).then(|| path.get(len + 1..))?
    }

    /// A key's text (unescaped if it was written with escapes).
    fn key(&self, key: Key) -> Option<Cow<'a, str>> {
        if !key.escaped {
            return self.text.get(key.start..key.end).map(Cow::Borrowed);
        }
        let whole = self.text.get(key.start - 1..key.end + 1)?;
        serde_json::from_str::<String>(whole).map(Cow::Owned).ok()
    }

    /// The whole text as one object, catching what `heads` want.
    fn object(
        &mut self,
        heads: &[Head],
        filter: u64,
        caught: &mut [Option<&'a str>],
    ) -> Result<ObjectInfo, Fail> {
        self.ws();
        if self.peek() != Some(b'{') {
            return Err(self.error(if self.peek().is_none() {
                "EOF while parsing a value"
            } else {
                "expected a JSON object"
            }));
        }
        let mut has_timestamp = false;
        let mut filter = filter;
        self.enter()?;
        let mut first = true;
        while let Some(key) = self.next_key(first)? {
            first = false;
            if !key.escaped && filter & bit(self.b.get(key.start..key.end).unwrap_or_default()) == 0
            {
                self.value()?;
                continue;
            }
            let k: Cow<'a, [u8]> = if key.escaped {
                let Some(k) = self.key(key) else {
                    return Err(self.error("invalid key"));
                };
                Cow::Owned(k.into_owned().into_bytes())
            } else {
                let bytes: &'a [u8] = self.b;
                Cow::Borrowed(bytes.get(key.start..key.end).unwrap_or_default())
            };
            if same(&k, b"timestamp") {
                // The event's own time: nothing more to catch.
                has_timestamp = true;
                filter = 0;
                self.value()?;
                continue;
            }
            let wanted = |i: usize, caught: &[Option<&str>]| {
                heads.get(i).is_some_and(|h| same(&k, h.key.as_bytes()))
                    && caught.get(i).is_some_and(Option::is_none)
            };
            let Some(first_head) = (0..heads.len()).find(|&i| wanted(i, caught)) else {
                self.value()?;
                continue;
            };
            if !(first_head + 1..heads.len()).any(|i| wanted(i, caught)) {
                // One value wanted of this key: read once, down to the
                // nested value if that is what is wanted.
                let got = match heads.get(first_head).and_then(|h| h.rest.as_deref()) {
                    None => Some(self.raw_value()?),
                    Some(rest) => self.path(rest)?,
                };
                if let Some(c) = caught.get_mut(first_head) {
                    *c = got;
                }
                continue;
            }
            // Several: the value whole, then each path in it.
            let raw = self.raw_value()?;
            for (i, head) in heads.iter().enumerate().skip(first_head) {
                if wanted(i, caught) {
                    caught[i] = match &head.rest {
                        None => Some(raw),
                        Some(rest) => raw_field(raw, rest),
                    };
                }
            }
        }
        self.ws();
        if self.i < self.b.len() {
            return Err(self.error("trailing characters"));
        }
        Ok(ObjectInfo { has_timestamp })
    }

    /// A string, from its opening quote to after its closing one: whether
    /// it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, Fail> {
        let mut escaped = false;
        // The index in a local: stored back once per string, not once per
        // block read (the scanner's fields live in memory).
        let mut i = self.i + 1;
        let b = self.b;
        loop {
            // Sixteen bytes at a time while none is a quote, a backslash or
            // a control character (strings are most of an event's bytes).
            while let Some(block) = b.get(i..i + 16) {
                let stops = special16(block);
                if stops != 0 {
                    i += stops.trailing_zeros() as usize;
                    break;
                }
                i += 16;
            }
            // The last few bytes, or the byte that stopped the run.
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i = i;
                    self.escape()?;
                    i = self.i;
                }
                Some(0..=0x1f) => {
                    self.i = i;
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
                Some(_) => i += 1,
                None => {
                    self.i = i;
                    return Err(self.error("EOF while parsing a string"));
                }
            }
        }
    }

    /// One escape, at its backslash.
    fn escape(&mut self) -> Result<(), Fail> {
        self.i += 1;
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.i += 1;
                Ok(())
            }
            Some(b'u') => {
                self.i += 1;
                let unit = self.hex4()?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: a trailing one must follow.
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            let rest = self.b.get(self.i..).unwrap_or_default();
                            if b"\\u".starts_with(rest) {
                                self.i = self.b.len();
                                return Err(self.error("EOF while parsing a string"));
                            }
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.i += 2;
                        if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(self.error("lone trailing surrogate in hex escape")),
                    _ => Ok(()),
                }
            }
            None => Err(self.error("EOF while parsing a string")),
            Some(_) => Err(self.error("invalid escape")),
        }
    }

    fn hex4(&mut self) -> Result<u32, Fail> {
        let mut n = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                None => return Err(self.error("EOF while parsing a string")),
                Some(_) => return Err(self.error("invalid escape")),
            };
            n = n * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(n)
    }

    /// A number, or what serde says of it: a text that ends inside it ends
    /// early.
    fn number(&mut self) -> Result<(), Fail> {
        self.number_in().map_err(|Fail| {
            if self.peek().is_none() {
                self.error("EOF while parsing a value")
            } else {
                Fail
            }
        })
    }

    /// A number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number_in(&mut self) -> Result<(), Fail> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.error("invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// `true`, `false` or `null` (`word`), at its first byte; as serde
    /// says it, a text that ends inside the word ends early, and a wrong
    /// byte is named where it is.
    fn literal(&mut self, word: &[u8]) -> Result<(), Fail> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            return Ok(());
        }
        for &want in word {
            match self.peek() {
                None => return Err(self.error("EOF while parsing a value")),
                Some(c) if c != want => {
                    self.i += 1;
                    return Err(self.error("expected ident"));
                }
                Some(_) => self.i += 1,
            }
        }
        Ok(())
    }

    /// One value, at its first byte (whitespace before it read), skipped.
    /// A string (most values) is skipped inline, without a call.
    #[inline(always)]
    fn value(&mut self) -> Result<(), Fail> {
        if self.peek() == Some(b'"') {
            return self.string().map(|_| ());
        }
        self.value_other()
    }

    /// [`Scanner::value`] for what is not a string (read there).
    fn value_other(&mut self) -> Result<(), Fail> {
        match self.peek() {
            Some(b'{') => {
                // Skipped: its keys are checked, not read.
                self.enter()?;
                let mut first = true;
                while self.next_key(first)?.is_some() {
                    first = false;
                    self.value()?;
                }
                Ok(())
            }
            Some(b'[') => {
                self.enter()?;
                self.ws();
                match self.peek() {
                    Some(b']') => {
                        self.i += 1;
                        self.depth -= 1;
                        return Ok(());
                    }
                    None => return Err(self.error("EOF while parsing a list")),
                    Some(_) => {}
                }
                loop {
                    self.ws();
                    self.value()?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.ws();
                            if self.peek() == Some(b']') {
                                return Err(self.error("trailing comma"));
                            }
                        }
                        Some(b']') => {
                            self.i += 1;
                            self.depth -= 1;
                            return Ok(());
                        }
                        None => return Err(self.error("EOF while parsing a list")),
                        Some(_) => return Err(self.error("expected `,` or `]`")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            None => Err(self.error("EOF while parsing a value")),
            Some(_) => Err(self.error("expected value")),
        }
    }

    /// One value, skipped: its text as written.
    #[inline]
    fn raw_value(&mut self) -> Result<&'a str, Fail> {
        let start = self.i;
        self.value()?;
        Ok(self.text.get(start..self.i).unwrap_or_default())
    }

    /// One value, skipped: the raw value at the dotted `path` inside it
    /// if it is an object (the whole path as one key wins).
    fn path(&mut self, path: &str) -> Result<Option<&'a str>, Fail> {
        self.path_in(path)?;
        Ok(self.found)
    }

    /// [`Scanner::path`], its answer left in `self.found` (an answer
    /// returned through memory on every level cost a tenth of the pass).
    fn path_in(&mut self, path: &str) -> Result<(), Fail> {
        self.found = None;
        if self.peek() != Some(b'{') {
            return self.value();
        }
        self.enter()?;
        let (mut exact, mut nested) = (None, None);
        let lead = path.as_bytes().first().copied();
        let mut first = true;
        while let Some(key) = self.next_key(first)? {
            first = false;
            // Most keys differ from the path in their first byte: one test,
            // not a comparison with the path and with its head.
            if !key.escaped && lead.is_some() && self.b.get(key.start).copied() != lead {
                self.value()?;
                continue;
            }
            if exact.is_none() && self.key_is(key, path) {
                exact = Some(self.raw_value()?);
            } else if let Some(rest) = nested
                .is_none()
                .then(|| self.key_heads(key, path))
                .flatten()
            {
                self.path_in(rest)?;
                nested = self.found;
            } else {
                self.value()?;
            }
        }
        self.found = exact.or(nested);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(key: &str, rest: Option<&str>) -> Head {
        Head {
            key: key.into(),
            rest: rest.map(Into::into),
        }
    }

    /// Whether serde_json (as the host builds it) takes `text` as an object.
    fn serde_takes(text: &str) -> bool {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).is_ok()
    }

    #[test]
    fn catches_top_level_and_nested_values() {
        let heads = [
            head("ts", None),
            head("record", Some("time.timestamp")),
            head("record.time.timestamp", None),
            head("created", None),
        ];
        let text = r#" {"a":[1,{"ts":9}],"ts" : 17.5 ,"record":{"time":{"repr":"x","timestamp":1796474732.25}},"ts":2} "#;
        let mut caught = [None; 4];
        let info = scan(text, &heads, filter(&heads), &mut caught).unwrap();
        assert!(!info.has_timestamp);
        assert_eq!(caught, [Some("17.5"), Some("1796474732.25"), None, None]);
        // The whole path as one key wins; several heads of one key.
        let heads = [
            head("a", Some("b.c")),
            head("a", Some("b")),
            head("a", None),
        ];
        let text = r#"{"a":{"b":{"c":1},"b.c":2},"timestamp":"t"}"#;
        let mut caught = [None; 3];
        let info = scan(text, &heads, filter(&heads), &mut caught).unwrap();
        assert!(info.has_timestamp);
        assert_eq!(
            caught,
            [
                Some("2"),
                Some(r#"{"c":1}"#),
                Some(r#"{"b":{"c":1},"b.c":2}"#)
            ]
        );
        // An escaped key is compared by its text.
        let mut caught = [None; 1];
        let info = scan(
            r#"{"time\u0073tamp":1,"t\u0073":3}"#,
            &[head("ts", None)],
            filter(&[head("ts", None)]),
            &mut caught,
        )
        .unwrap();
        assert!(info.has_timestamp);
        assert_eq!(caught, [Some("3")]);
    }

    #[test]
    fn rejects_what_serde_rejects() {
        for bad in [
            "",
            " ",
            "[]",
            "1",
            "\"s\"",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{a:1}",
            "{\"a\":01}",
            "{\"a\":-}",
            "{\"a\":1.}",
            "{\"a\":1e}",
            "{\"a\":.5}",
            "{\"a\":tru}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":\"\u{1}\"}",
            "{\"a\":1} x",
            "{\"a\":1}{}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":+1}",
            "{\"a\":NaN}",
        ] {
            assert!(
                scan(bad, &[], filter(&[]), &mut []).is_err(),
                "{bad:?} was taken"
            );
            assert!(!serde_takes(bad), "{bad:?} is taken by serde");
        }
        for good in [
            "{}",
            " {\n\"a\" : [ ] , \"b\":{} }\r\n",
            r#"{"a":"\ud83d\ude00\n\"é"}"#,
            r#"{"a":-0.5e+10,"b":1E-2,"c":123456789012345678901234567890}"#,
            r#"{"a":[true,false,null,[{}]]}"#,
            r#"{"a":1,"a":2}"#,
        ] {
            assert!(
                scan(good, &[], filter(&[]), &mut []).is_ok(),
                "{good:?} was refused"
            );
            assert!(serde_takes(good), "{good:?} is refused by serde");
        }
    }

    #[test]
    fn nesting_stops_where_serde_stops() {
        for depth in [1usize, 100, 126, 127, 128, 200] {
            let text = format!("{}{}", "{\"a\":".repeat(depth - 1) + "{", "}".repeat(depth));
            assert_eq!(
                scan(&text, &[], filter(&[]), &mut []).is_ok(),
                serde_takes(&text),
                "depth {depth}"
            );
            let text = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                scan(&text, &[], filter(&[]), &mut []).is_ok(),
                serde_takes(&text),
                "arrays at depth {depth}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let e = scan("{\"a\":1,\n \"b\" 2}", &[], filter(&[]), &mut []).unwrap_err();
        assert_eq!(e, "expected `:` at line 2 column 6");
        let e = scan(r#"{"service":"s","#, &[], filter(&[]), &mut []).unwrap_err();
        assert!(e.starts_with("EOF while parsing a value"), "{e}");
    }

    /// `text` cut at `cut` bytes, or at the character boundary before.
    fn cut_at(text: &str, cut: usize) -> &str {
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        &text[..cut]
    }

    /// JSON-ish text: the bytes JSON is made of, in any order.
    fn jsonish() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::string::string_regex(
            r#"\{(["a-c\\u0-9dDeE.+\-:,\[\]{} \t\nntrufals]|\\u[dD][89abcAB][0-9a-f]{2}|é|\x01){0,40}"#,
        )
        .unwrap()
    }

    /// Any JSON value, as text, with whitespace and escapes.
    fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "\\PC{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            r#""([a-z]|\\[nt"\\/]|\\u00e9|\\ud83d\\ude00){0,6}""#,
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[ {} ]", v.join(" ,"))),
                proptest::collection::vec(("[a-z]{0,3}", inner), 0..5).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" :{v}"))
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest::proptest! {
        /// Taken exactly when serde_json takes it, on near-JSON text.
        #[test]
        fn prop_takes_what_serde_takes(text in jsonish()) {
            proptest::prop_assert_eq!(scan(&text, &[], filter(&[]), &mut []).is_ok(), serde_takes(&text), "{:?}", text);
        }

        /// Every object serde_json writes or reads is taken, and a value
        /// caught is the value serde reads there.
        #[test]
        fn prop_objects_are_taken_and_caught(v in json_value(), k in "[a-c]{1,2}") {
            let text = format!("{{\"x\":{v},\"{k}\":{v}}}");
            proptest::prop_assert_eq!(scan(&text, &[], filter(&[]), &mut []).is_ok(), serde_takes(&text));
            let mut caught = [None];
            if scan(&text, &[head(&k, None)], filter(&[head(&k, None)]), &mut caught).is_ok() {
                let want: serde_json::Value = serde_json::from_str(&v).unwrap();
                let got: serde_json::Value = serde_json::from_str(caught[0].unwrap()).unwrap();
                proptest::prop_assert_eq!(got, want);
            }
        }

        /// Nested objects and arrays, cut anywhere: the error is serde's,
        /// at serde's place.
        #[test]
        fn prop_cut_errors_are_serdes(v in json_value(), cut in 1usize..200) {
            // (At the end of the text serde names the last byte's column,
            // sluice the one after it: the messages are compared alone.)
            let what = |e: String| match e.starts_with("EOF") {
                true => e.split(" at line").next().unwrap_or_default().to_string(),
                false => e,
            };
            // Skipped whole, and read by the path that catches nested values.
            for (text, heads) in [
                (format!("{{\"a\":[{v},{{\"b\":{v}}}]}}"), vec![]),
                (format!("{{\"a\":{{\"x\":{v},\"b\":{v}}}}}"), vec![head("a", Some("b"))]),
            ] {
                let text = cut_at(&text, cut);
                let ours = scan(text, &heads, filter(&heads), &mut vec![None; heads.len()]).err().map(what);
                let serdes = serde_json::from_str::<serde_json::Value>(text).err().map(|e| what(e.to_string()));
                proptest::prop_assert_eq!(ours, serdes, "{:?}", text);
            }
        }

        /// Cut anywhere, an object is refused as serde refuses it.
        #[test]
        fn prop_cut_objects(v in json_value(), cut in 0usize..200) {
            let text = format!("{{\"a\":{v}}}");
            let text = cut_at(&text, cut);
            proptest::prop_assert_eq!(scan(text, &[], filter(&[]), &mut []).is_ok(), serde_takes(text), "{:?}", text);
        }
    }
}
