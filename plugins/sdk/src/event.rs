//! A borrowing, lazily parsed view of one event.
//!
//! Most plugins look at one or two fields of an event. Parsing the whole
//! object into a `serde_json::Value` would allocate every string; instead
//! the view parses the top level once, on first access, into borrowed keys
//! and raw (unparsed) values, and parses a value only when it is asked for.

use std::borrow::Cow;
use std::cell::OnceCell;

use serde_json::Value;

use crate::level::Level;

/// One event: a JSON object in UTF-8.
///
/// The host hands plugins only well-formed objects (sources check them;
/// replacements are checked too), so field lookups use a fast scanner of
/// the top level that skips values without parsing them; a value is
/// parsed only when asked for.
pub struct Event<'a> {
    raw: &'a [u8],
    text: OnceCell<Option<&'a str>>,
    fields: OnceCell<Vec<(Cow<'a, str>, &'a str)>>,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `i` at an opening quote: the index after the closing one.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    string_end(b, i).map(|(end, _)| end)
}

/// `i` at an opening quote: the index after the closing one, and whether
/// the string has escapes.
#[inline]
fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    // Natively, most keys and many values are short: a byte loop over the
    // first bytes costs less than setting up a search. (In wasm the search
    // is inline, sixteen bytes a step, and a byte loop pays the sandbox's
    // interruption check on every byte.)
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let short = b.len().min(j + 16);
        while j < short {
            match b[j] {
                b'"' => return Some((j + 1, false)),
                b'\\' => break,
                _ => j += 1,
            }
        }
    }
    loop {
        j += quote_or_backslash(b.get(j..)?)?;
        if *b.get(j)? == b'\\' {
            escaped = true;
            j += 2;
        } else {
            return Some((j + 1, escaped));
        }
    }
}

/// Where the first `"` or `\\` in `b` is: 16 bytes at a time with wasm
/// SIMD (a call to a vectorised search per escape cost more than the
/// string: a message holding quotes has many).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    use core::arch::wasm32::*;
    let hits = |block: &[u8]| -> u32 {
        let (quote, slash) = (u8x16_splat(b'"'), u8x16_splat(b'\\'));
        if block.len() < 16 {
            return 0;
        }
        // SAFETY: `block` is 16 readable bytes (checked above); wasm loads
        // need no alignment.
        let v = unsafe { v128_load(block.as_ptr().cast()) };
        u32::from(u8x16_bitmask(v128_or(
            u8x16_eq(v, quote),
            u8x16_eq(v, slash),
        )))
    };
    let mut i = 0;
    while let Some(block) = b.get(i..i + 16) {
        let bits = hits(block);
        if bits != 0 {
            return Some(i + bits.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < b.len() && b.len() >= 16 {
        // The last bytes by one block that overlaps those already read.
        let start = b.len() - 16;
        let bits = hits(b.get(start..)?) & (u32::MAX << (i - start));
        return (bits != 0).then(|| start + bits.trailing_zeros() as usize);
    }
    b.get(i..)?
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| i + p)
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    memchr::memchr2(b'"', b'\\', b)
}

/// `i` at the start of a value: the index after it.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Iterates over the top-level fields of an object: (key, raw value).
struct Scan<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(s: &'a str) -> Self {
        let b = s.as_bytes();
        let i = skip_ws(b, 0);
        // Not an object: an empty scan.
        let i = if b.get(i) == Some(&b'{') {
            i + 1
        } else {
            b.len()
        };
        Scan { s, i }
    }
}

/// Where one top-level field is: its key's inside (between the quotes),
/// whether the key has escapes, and its value; the scan goes on after it.
struct Field {
    key: std::ops::Range<usize>,
    escaped: bool,
    value: std::ops::Range<usize>,
}

/// The field at `i` (just after `{` or after the previous value), if any.
#[inline]
fn next_field(b: &[u8], i: usize) -> Option<Field> {
    let mut i = skip_ws(b, i);
    if *b.get(i)? == b',' {
        i = skip_ws(b, i + 1);
    }
    if *b.get(i)? != b'"' {
        return None;
    }
    let start = i + 1;
    let (end, escaped) = string_end(b, i)?;
    let key = start..end - 1;
    let colon = skip_ws(b, end);
    if *b.get(colon)? != b':' {
        return None;
    }
    let from = skip_ws(b, colon + 1);
    let to = skip_value(b, from)?;
    Some(Field {
        key,
        escaped,
        value: from..to,
    })
}

impl<'a> Iterator for Scan<'a> {
    type Item = (Cow<'a, str>, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let Some(f) = next_field(self.s.as_bytes(), self.i) else {
            self.i = self.s.len();
            return None;
        };
        self.i = f.value.end;
        let key = if f.escaped {
            let quoted = self.s.get(f.key.start - 1..f.key.end + 1)?;
            Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
        } else {
            Cow::Borrowed(self.s.get(f.key)?)
        };
        Some((key, self.s.get(f.value)?))
    }
}

/// The text of a raw JSON string value, borrowed when it has no escapes.
fn unquote(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    // Inside a JSON string every quote is escaped: the first hit of a
    // search for either is the first backslash.
    match quote_or_backslash(inner.as_bytes()) {
        None => Some(Cow::Borrowed(inner)),
        Some(first) => unescape(inner, first)
            .or_else(|| serde_json::from_str::<String>(raw).ok())
            .map(Cow::Owned),
    }
}

/// The text of a JSON string's inside with its escapes decoded, runs
/// between them copied whole (`first`: where the first backslash is);
/// `None` for what it leaves to serde (`\u` escapes, anything odd).
fn unescape(inner: &str, first: usize) -> Option<String> {
    // Text is cut only at ASCII bytes (a backslash, the escape's letter),
    // so each run is text and the result needs no second UTF-8 check.
    let b = inner.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut from = 0;
    let mut at = first;
    loop {
        out.push_str(inner.get(from..at)?);
        if b.get(at) != Some(&b'\\') {
            return None;
        }
        let c = match b.get(at + 1)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            _ => return None,
        };
        out.push(c);
        from = at + 2;
        match quote_or_backslash(b.get(from..)?) {
            Some(p) => at = from + p,
            None => {
                out.push_str(inner.get(from..)?);
                return Some(out);
            }
        }
    }
}

impl<'a> Event<'a> {
    /// A view over the bytes of one event.
    pub fn new(raw: &'a [u8]) -> Self {
        Self {
            raw,
            text: OnceCell::new(),
            fields: OnceCell::new(),
        }
    }

    /// The event's bytes, exactly as they arrived.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    fn text(&self) -> Option<&'a str> {
        *self.text.get_or_init(|| std::str::from_utf8(self.raw).ok())
    }

    /// Whether the event is a well-formed JSON object (a full parse).
    pub fn is_valid(&self) -> bool {
        self.error().is_none()
    }

    /// Why the event is not a well-formed JSON object, if it is not.
    pub fn error(&self) -> Option<String> {
        match self.text() {
            None => Some("not UTF-8".to_string()),
            Some(t) => match serde_json::from_str::<Value>(t) {
                Ok(Value::Object(_)) => None,
                Ok(_) => Some("not a JSON object".to_string()),
                Err(e) => Some(e.to_string()),
            },
        }
    }

    fn fields(&self) -> &[(Cow<'a, str>, &'a str)] {
        self.fields.get_or_init(|| {
            self.text()
                .map(|t| Scan::new(t).collect())
                .unwrap_or_default()
        })
    }

    /// The raw JSON text of a top-level field. Scans only up to the field.
    pub fn raw_field(&self, name: &str) -> Option<&'a str> {
        if let Some(fields) = self.fields.get() {
            return fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        }
        // Keys compared as bytes where they are, without building them;
        // only the value found is checked to be UTF-8 (every boundary the
        // scan finds is an ASCII byte, so a slice of valid text is valid).
        let b = self.raw;
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i += 1;
        while let Some(f) = next_field(b, i) {
            let hit = if f.escaped {
                let quoted = b.get(f.key.start - 1..f.key.end + 1)?;
                serde_json::from_slice::<String>(quoted).is_ok_and(|k| k == name)
            } else {
                b.get(f.key.clone()) == Some(name.as_bytes())
            };
            if hit {
                return std::str::from_utf8(b.get(f.value)?).ok();
            }
            i = f.value.end;
        }
        None
    }

    /// The top-level fields, in order: each name and its value's raw JSON
    /// text (to copy a field without parsing it).
    pub fn raw_fields(&self) -> impl Iterator<Item = (&str, &'a str)> {
        self.fields().iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// The top-level field names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.fields().iter().map(|(k, _)| k.as_ref())
    }

    /// The value at a dotted path (`service`, `data.user.id`), parsed.
    pub fn get(&self, path: &str) -> Option<Value> {
        let (head, rest) = split_path(path);
        let raw = self.raw_field(head)?;
        let mut value: Value = serde_json::from_str(raw).ok()?;
        if let Some(rest) = rest {
            for part in rest.split('.') {
                value = match value {
                    Value::Object(mut m) => m.remove(part)?,
                    Value::Array(mut a) => {
                        let i: usize = part.parse().ok()?;
                        if i < a.len() {
                            a.swap_remove(i)
                        } else {
                            return None;
                        }
                    }
                    _ => return None,
                };
            }
        }
        Some(value)
    }

    /// A key made of fields (for state per key: windows, counts): each
    /// path's JSON text (`null` when absent), separated by a byte no JSON
    /// text holds unescaped, written into `out` (cleared first).
    pub fn key_into(&self, paths: &[String], out: &mut Vec<u8>) {
        out.clear();
        for (i, path) in paths.iter().enumerate() {
            if i > 0 {
                out.push(0x1f);
            }
            if path.contains('.') {
                match self.get(path) {
                    Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    None => out.extend_from_slice(b"null"),
                }
            } else {
                out.extend_from_slice(self.raw_field(path).unwrap_or("null").as_bytes());
            }
        }
    }

    /// Whether a value exists at the dotted path (JSON `null` counts).
    pub fn has(&self, path: &str) -> bool {
        match split_path(path) {
            (head, None) => self.raw_field(head).is_some(),
            _ => self.get(path).is_some(),
        }
    }

    /// The string at a dotted path; borrowed from the event when it has no
    /// escapes. `None` when the value is absent or not a string.
    pub fn get_str(&self, path: &str) -> Option<Cow<'a, str>> {
        match split_path(path) {
            (head, None) => unquote(self.raw_field(head)?),
            _ => match self.get(path)? {
                Value::String(s) => Some(Cow::Owned(s)),
                _ => None,
            },
        }
    }

    /// The number at a dotted path: a JSON number, or a string that holds
    /// one (`"502"`, as text parsers leave them). `None` otherwise.
    pub fn get_f64(&self, path: &str) -> Option<f64> {
        let number = |raw: &str| raw.trim().parse::<f64>().ok().filter(|n| n.is_finite());
        match split_path(path) {
            (head, None) => {
                let raw = self.raw_field(head)?;
                match unquote(raw) {
                    Some(s) => number(&s),
                    None => number(raw),
                }
            }
            _ => match self.get(path)? {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => number(&s),
                _ => None,
            },
        }
    }

    /// The event's level from the field `field` (usually `level`): a string
    /// such as `"WARN"` or a pino/bunyan number such as `40`.
    pub fn level_in(&self, field: &str) -> Option<Level> {
        if !field.contains('.') {
            let raw = self.raw_field(field)?;
            return match unquote(raw) {
                Some(s) => Level::parse(&s),
                None => Level::parse(raw),
            };
        }
        match self.get(field)? {
            Value::String(s) => Level::parse(&s),
            Value::Number(n) => Level::parse(&n.to_string()),
            _ => None,
        }
    }

    /// The event's level from its `level` field.
    pub fn level(&self) -> Option<Level> {
        self.level_in("level")
    }

    /// The event's `message` field.
    pub fn message(&self) -> Option<Cow<'a, str>> {
        self.get_str("message")
    }

    /// The whole event, parsed (allocates; prefer the field accessors).
    pub fn to_value(&self) -> Result<Value, String> {
        serde_json::from_slice(self.raw).map_err(|e| e.to_string())
    }
}

/// A field of a parsed event by dotted path (`http.status`), a key that
/// itself holds the dots winning at each level.
pub fn field<'v>(obj: &'v serde_json::Map<String, Value>, path: &str) -> Option<&'v Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match obj.get(head)? {
        Value::Object(inner) => field(inner, rest),
        _ => None,
    }
}

/// Changes to an event, written as a new event: top-level fields that no
/// change touches are copied as they are (not parsed or re-serialised); a
/// field a nested path changes is parsed, changed and written alone.
///
/// ```ignore
/// let bytes = event.edit().set("env", "prod").remove("debug").to_bytes();
/// Verdict::Replace(bytes)
/// ```
pub struct Edit<'e, 'a> {
    event: &'e Event<'a>,
    /// Dotted paths and their new values (`None`: removed), in order.
    changes: Vec<(String, Option<Value>)>,
}

impl<'a> Event<'a> {
    /// Start changing this event (see [`Edit`]).
    pub fn edit(&self) -> Edit<'_, 'a> {
        Edit {
            event: self,
            changes: Vec::new(),
        }
    }
}

/// Set `path` (dotted; objects are made on the way) in `target`.
fn set_in(target: &mut Option<Value>, path: Option<&str>, value: Option<Value>) {
    let Some(path) = path else {
        *target = value;
        return;
    };
    let (head, rest) = split_path(path);
    if value.is_none() {
        // Removing below a value that is not an object: nothing to do.
        if let Some(Value::Object(m)) = target {
            match rest {
                None => {
                    m.remove(head);
                }
                Some(_) => {
                    let mut child = m.remove(head);
                    set_in(&mut child, rest, None);
                    if let Some(c) = child {
                        m.insert(head.to_string(), c);
                    }
                }
            }
        }
        return;
    }
    if !matches!(target, Some(Value::Object(_))) {
        *target = Some(Value::Object(serde_json::Map::new()));
    }
    if let Some(Value::Object(m)) = target {
        let mut child = m.remove(head);
        set_in(&mut child, rest, value);
        if let Some(c) = child {
            m.insert(head.to_string(), c);
        }
    }
}

impl Edit<'_, '_> {
    /// Set the value at a dotted path (`env`, `http.status`).
    pub fn set(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.changes.push((path.to_string(), Some(value.into())));
        self
    }

    /// Remove the value at a dotted path (nothing if it is not there).
    pub fn remove(mut self, path: &str) -> Self {
        self.changes.push((path.to_string(), None));
        self
    }

    /// The changes under the top-level field `head`, in order.
    fn changed<'s>(
        &'s self,
        head: &'s str,
    ) -> impl Iterator<Item = &'s (String, Option<Value>)> + 's {
        self.changes
            .iter()
            .filter(move |(p, _)| split_path(p).0 == head)
    }

    /// Append the new event to `out` (for [`crate::Plugin::process_into`]
    /// and [`crate::Verdict::Written`]).
    pub fn write_into(&self, out: &mut Vec<u8>) {
        let mut first = true;
        let mut field =
            |out: &mut Vec<u8>, name: &str, raw: Option<&str>, value: Option<&Value>| {
                out.push(if first { b'{' } else { b',' });
                first = false;
                // Writing JSON into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, name);
                out.push(b':');
                match (raw, value) {
                    (Some(r), _) => out.extend_from_slice(r.as_bytes()),
                    (None, Some(v)) => {
                        let _ = serde_json::to_writer(&mut *out, v);
                    }
                    (None, None) => out.extend_from_slice(b"null"),
                }
            };
        let mut seen: Vec<&str> = Vec::new();
        for (name, raw) in self.event.raw_fields() {
            if self.changed(name).next().is_none() {
                field(out, name, Some(raw), None);
                continue;
            }
            seen.push(name);
            let mut value: Option<Value> = serde_json::from_str(raw).ok();
            for (path, v) in self.changed(name) {
                set_in(&mut value, split_path(path).1, v.clone());
            }
            if let Some(v) = &value {
                field(out, name, None, Some(v));
            }
        }
        let mut added: Vec<&str> = Vec::new();
        for (path, _) in &self.changes {
            let head = split_path(path).0;
            if seen.contains(&head) || added.contains(&head) {
                continue;
            }
            added.push(head);
            let mut value = None;
            for (path, v) in self.changed(head) {
                set_in(&mut value, split_path(path).1, v.clone());
            }
            if let Some(v) = &value {
                field(out, head, None, Some(v));
            }
        }
        if first {
            out.push(b'{');
        }
        out.push(b'}');
    }

    /// The new event's bytes (for [`crate::Verdict::Replace`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.event.raw().len() + 32);
        self.write_into(&mut out);
        out
    }
}

fn split_path(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    }
}

/// Conditions (`crate::cond`) read an event's fields without a tree.
impl crate::cond::Fields for Event<'_> {
    fn has(&self, path: &str) -> bool {
        Event::has(self, path)
    }
    fn get_str(&self, path: &str) -> Option<Cow<'_, str>> {
        Event::get_str(self, path)
    }
    fn get_f64(&self, path: &str) -> Option<f64> {
        Event::get_f64(self, path)
    }
    fn get(&self, path: &str) -> Option<Value> {
        Event::get(self, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_copy_what_they_do_not_touch() {
        let e = Event::new(
            br#"{"timestamp":"2026-12-01T10:00:00Z","message":"caf\u00e9 \"x\"","http":{"status":200,"path":"/"},"debug":true}"#,
        );
        let out = e
            .edit()
            .set("env", "prod")
            .set("http.status", 503)
            .remove("debug")
            .remove("http.path")
            .set("user.id", 7)
            .to_bytes();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"timestamp":"2026-12-01T10:00:00Z","message":"caf\u00e9 \"x\"","http":{"status":503},"env":"prod","user":{"id":7}}"#,
            "untouched fields keep their bytes, escapes included"
        );
        let e = Event::new(br#"{"a":1}"#);
        assert_eq!(e.edit().remove("a").to_bytes(), b"{}");
        assert_eq!(e.edit().set("a.b", "x").to_bytes(), br#"{"a":{"b":"x"}}"#);
        assert_eq!(e.edit().remove("a.b").to_bytes(), br#"{"a":1}"#);
        let odd = Event::new(br#"{"we\"ird":1}"#);
        assert_eq!(
            odd.edit().set("x", true).to_bytes(),
            br#"{"we\"ird":1,"x":true}"#
        );
    }

    #[test]
    fn reads_top_level_and_nested_fields() {
        let raw = br#"{"level":"WARN","message":"disk \"full\"","data":{"user":{"id":7}},"tags":["a","b"]}"#;
        let e = Event::new(raw);
        assert_eq!(e.level(), Some(Level::Warn));
        assert_eq!(e.message().unwrap(), "disk \"full\"");
        assert_eq!(e.get("data.user.id"), Some(Value::from(7)));
        assert_eq!(e.get_str("tags.1").unwrap(), "b");
        assert!(e.has("data.user"));
        assert!(!e.has("data.nope"));
        assert_eq!(
            e.keys().collect::<Vec<_>>(),
            ["level", "message", "data", "tags"]
        );
    }

    #[test]
    fn escapes_are_decoded_as_serde_decodes_them() {
        for t in [
            "a\"b",
            "\\",
            "x\n\t\r\u{8}\u{c}/y",
            "é\"",
            "\u{1}\u{2028}😀",
            "end\\",
            "\"\"\"",
        ] {
            let raw = serde_json::to_string(t).unwrap();
            assert_eq!(unquote(&raw).unwrap(), t, "{raw}");
            let slashed = raw.replace('/', "\\/");
            assert_eq!(unquote(&slashed).unwrap(), t, "{slashed}");
        }
        assert_eq!(unquote(r#""\u00e9\ud83d\ude00""#).unwrap(), "é😀");
    }

    #[test]
    fn borrows_plain_strings() {
        let e = Event::new(br#"{"service":"auth"}"#);
        assert!(matches!(e.get_str("service"), Some(Cow::Borrowed("auth"))));
    }

    #[test]
    fn numeric_levels() {
        assert_eq!(Event::new(br#"{"level":50}"#).level(), Some(Level::Error));
    }

    #[test]
    fn scanner_handles_nesting_escapes_and_spaces() {
        let raw = br#" { "a" : { "x" : "}\"]" , "y" : [1, {"z": "]"}] } , "k\u0065y" : "v\n" , "n" : -1.5e3 , "t" : true } "#;
        let e = Event::new(raw);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["a", "key", "n", "t"]);
        assert_eq!(e.get_str("key").unwrap(), "v\n");
        assert_eq!(e.get("n").and_then(|v| v.as_f64()), Some(-1500.0));
        assert_eq!(e.get("t"), Some(Value::Bool(true)));
        assert_eq!(e.get_str("a.x").unwrap(), "}\"]");
        assert_eq!(e.get_str("a.y.1.z").unwrap(), "]");
        assert!(e.is_valid());
        // Looked up without the field table: the same answers.
        let e = Event::new(raw);
        assert_eq!(e.raw_field("key"), Some(r#""v\n""#));
        assert_eq!(e.raw_field("t"), Some("true"));
        assert_eq!(e.raw_field("k\\u0065y"), None);
        let e = Event::new(br#"{"a\"b":1,"c":2}"#);
        assert_eq!(e.raw_field("a\"b"), Some("1"));
        assert_eq!(e.raw_field("c"), Some("2"));
        // A field past bytes that are not UTF-8 is still found; one that is
        // not UTF-8 is not.
        let e = Event::new(b"{\"bad\":\"\xff\",\"ok\":\"yes\"}");
        assert_eq!(e.raw_field("ok"), Some("\"yes\""));
        assert_eq!(e.raw_field("bad"), None);
        // Cut short: nothing past the cut.
        let e = Event::new(br#"{"a":1,"b":"#);
        assert_eq!(e.raw_field("a"), Some("1"));
        assert_eq!(e.raw_field("b"), None);
    }

    #[test]
    fn malformed_event_reports_error() {
        let e = Event::new(b"{not json");
        assert!(!e.is_valid());
        assert!(e.error().is_some());
        assert_eq!(e.get_str("x"), None);
    }
}
