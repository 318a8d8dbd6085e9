//! Python's `%` formatting, for log records that arrive unformatted
//! (`"msg": "sku %s", "args": "('A-1',)"`), and the literals of a Python
//! `repr` (what `logging.handlers.HTTPHandler` sends `args` as).
//!
//! Both run on untrusted input, so both are bounded: a repr nests at most
//! [`MAX_DEPTH`] deep, a width or precision above [`MAX_SPEC`] is refused,
//! and a formatted message longer than [`MAX_OUTPUT`] bytes is refused
//! (`None`: the record keeps its template). Python itself would format
//! `%99999999999d`; no log line needs it, and a sender must not be able to
//! make the pipeline allocate gigabytes with 30 bytes.

use serde_json::{Map, Value};

/// The deepest nesting of tuples, lists and dicts a repr may have.
pub const MAX_DEPTH: usize = 32;
/// The largest width or precision of one conversion (`%500s`, `%.500f`).
pub const MAX_SPEC: usize = 512;
/// The longest formatted message, in bytes.
pub const MAX_OUTPUT: usize = 1 << 20;

/// Parse the repr of a Python literal: a tuple, list or dict of strings,
/// numbers, `None`, `True` and `False` (nested at most [`MAX_DEPTH`]
/// deep). Tuples become arrays.
pub fn parse_repr(text: &str) -> Option<Value> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        self.ws();
        let c = self.peek()?;
        if matches!(c, b'(' | b'[' | b'{') && depth >= MAX_DEPTH {
            return None;
        }
        match c {
            b'(' => self.seq(b'(', b')', depth).map(Value::Array),
            b'[' => self.seq(b'[', b']', depth).map(Value::Array),
            b'{' => self.dict(depth),
            b'\'' | b'"' => self.string().map(Value::String),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, open: u8, close: u8, depth: usize) -> Option<Vec<Value>> {
        self.eat(open).then_some(())?;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.value(depth + 1)?);
            if !self.eat(b',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Option<Value> {
        self.eat(b'{').then_some(())?;
        let mut map = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(map));
            }
            let key = match self.value(depth + 1)? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.eat(b':').then_some(())?;
            map.insert(key, self.value(depth + 1)?);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(map));
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.peek()?;
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'x' => {
                            let hex = self.b.get(self.i..self.i + 2)?;
                            let hex = std::str::from_utf8(hex).ok()?;
                            self.i += 2;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                c if c == quote => return String::from_utf8(out).ok(),
                c => out.push(c),
            }
        }
        None
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self.peek().is_some_and(|c| !b",)]}: \t\n".contains(&c)) {
            self.i += 1;
        }
        let word = std::str::from_utf8(self.b.get(start..self.i)?).ok()?;
        Some(match word {
            "None" => Value::Null,
            "True" => Value::Bool(true),
            "False" => Value::Bool(false),
            _ => {
                if let Ok(i) = word.parse::<i64>() {
                    Value::from(i)
                } else {
                    Value::from(word.parse::<f64>().ok().filter(|f| f.is_finite())?)
                }
            }
        })
    }
}

/// Text that refuses to grow past [`MAX_OUTPUT`] bytes.
struct Bounded(String);

impl Bounded {
    fn push_str(&mut self, s: &str) -> Option<()> {
        (self.0.len().saturating_add(s.len()) <= MAX_OUTPUT).then(|| self.0.push_str(s))
    }
    fn push(&mut self, c: char) -> Option<()> {
        (self.0.len().saturating_add(c.len_utf8()) <= MAX_OUTPUT).then(|| self.0.push(c))
    }
}

/// Python's `str()` of a value, appended to `out`.
fn py_str(v: &Value, out: &mut Bounded) -> Option<()> {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        other => py_repr(other, out),
    }
}

/// Python's `repr()` of a value, appended to `out`. JSON values nest at
/// most as deep as serde_json lets them (128), a parsed repr at most
/// [`MAX_DEPTH`].
fn py_repr(v: &Value, out: &mut Bounded) -> Option<()> {
    match v {
        Value::String(s) => {
            out.push('\'')?;
            for c in s.chars() {
                if c == '\\' || c == '\'' {
                    out.push('\\')?;
                }
                out.push(c)?;
            }
            out.push('\'')
        }
        Value::Null | Value::Bool(_) => py_str(v, out),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Array(items) => {
            out.push('[')?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ")?;
                }
                py_repr(item, out)?;
            }
            out.push(']')
        }
        Value::Object(m) => {
            out.push('{')?;
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ")?;
                }
                py_repr(&Value::String(k.clone()), out)?;
                out.push_str(": ")?;
                py_repr(v, out)?;
            }
            out.push('}')
        }
    }
}

/// A width or precision: digits, at most [`MAX_SPEC`]. `Err` when it is
/// too large (the conversion is refused), `Ok(None)` when absent.
fn spec_number(digits: &str) -> Result<Option<usize>, ()> {
    if digits.is_empty() {
        return Ok(None);
    }
    match digits.parse::<usize>() {
        Ok(n) if n <= MAX_SPEC => Ok(Some(n)),
        Ok(_) => Err(()),
        Err(_) if digits.bytes().all(|b| b.is_ascii_digit()) => Err(()),
        // Python's `*` and other forms are not supported: no width.
        Err(_) => Ok(None),
    }
}

/// `template % args`, as Python does it for `%s %r %d %i %f %e %x %o %c %%`
/// with flags, width and precision, and `%(name)s` with a dict. `None` when
/// the arguments do not fit the template (Python would raise), or when a
/// width, precision or the result is past the bounds above.
pub fn format(template: &str, args: &Value) -> Option<String> {
    let single = [args.clone()];
    let positional: &[Value] = match args {
        Value::Array(items) => items,
        Value::Object(_) => &[],
        _ => &single,
    };
    let mut next = 0usize;
    let mut out = Bounded(String::with_capacity(template.len().min(MAX_OUTPUT) + 16));
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c)?;
            continue;
        }
        // %(name)
        let mut named: Option<String> = None;
        if chars.peek() == Some(&'(') {
            chars.next();
            let mut name = String::new();
            for c in chars.by_ref() {
                if c == ')' {
                    break;
                }
                name.push(c);
            }
            named = Some(name);
        }
        let mut spec = String::new();
        let conv = loop {
            let c = chars.next()?;
            if c.is_ascii_alphabetic() || c == '%' {
                break c;
            }
            // No real conversion spec is this long: refuse, do not collect.
            if spec.len() > 32 {
                return None;
            }
            spec.push(c);
        };
        if conv == '%' {
            out.push('%')?;
            continue;
        }
        let value = match &named {
            Some(name) => args.get(name)?,
            None => {
                let v = positional.get(next)?;
                next += 1;
                v
            }
        };
        let left = spec.starts_with('-');
        let zero = spec.starts_with('0');
        let spec_digits = spec.trim_start_matches(['-', '+', ' ', '#', '0']);
        let (width, precision) = match spec_digits.split_once('.') {
            Some((w, p)) => (
                spec_number(w).ok()?,
                Some(spec_number(p).ok()?.unwrap_or(0)),
            ),
            None => (spec_number(spec_digits).ok()?, None),
        };
        let number = || match value {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        };
        let mut text = match conv {
            's' => {
                let mut s = Bounded(String::new());
                py_str(value, &mut s)?;
                match precision {
                    Some(p) => s.0.chars().take(p).collect(),
                    None => s.0,
                }
            }
            'r' | 'a' => {
                let mut s = Bounded(String::new());
                py_repr(value, &mut s)?;
                s.0
            }
            'd' | 'i' | 'u' => format!("{}", number()?.trunc() as i64),
            // f64's largest value has 309 digits before the point, and the
            // precision is at most MAX_SPEC: a few hundred bytes at most.
            'f' | 'F' => format!("{:.*}", precision.unwrap_or(6), number()?),
            'e' | 'E' => {
                let s = format!("{:.*e}", precision.unwrap_or(6), number()?);
                if conv == 'E' {
                    s.to_uppercase()
                } else {
                    s
                }
            }
            'g' | 'G' => {
                let mut s = Bounded(String::new());
                py_str(value, &mut s)?;
                s.0
            }
            'x' => format!("{:x}", number()? as i64),
            'X' => format!("{:X}", number()? as i64),
            'o' => format!("{:o}", number()? as i64),
            'c' => match value {
                Value::String(s) => s.clone(),
                _ => char::from_u32(number()? as u32)?.to_string(),
            },
            _ => return None,
        };
        if let Some(w) = width {
            let len = text.chars().count();
            if len < w {
                let pad = w - len;
                if left {
                    text.push_str(&" ".repeat(pad));
                } else if zero && conv != 's' && conv != 'r' {
                    let (sign, digits) = match text.strip_prefix('-') {
                        Some(d) => ("-", d),
                        None => ("", text.as_str()),
                    };
                    text = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    text = format!("{}{text}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&text)?;
    }
    // Python raises when arguments are left over.
    if !args.is_object() && next < positional.len() {
        return None;
    }
    Some(out.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn reprs_of_python_literals() {
        assert_eq!(
            parse_repr("('A-1', \"it's\", 3, -2.5, None, True, [1, (2,)], {'k': 'v'})").unwrap(),
            json!(["A-1", "it's", 3, -2.5, null, true, [1, [2]], {"k": "v"}])
        );
        assert_eq!(parse_repr("()").unwrap(), json!([]));
        assert_eq!(parse_repr("('a\\'b\\n',)").unwrap(), json!(["a'b\n"]));
        assert_eq!(parse_repr("('\\xe9',)").unwrap(), json!(["é"]));
        assert!(parse_repr("(object at 0x7f,").is_none());
    }

    #[test]
    fn formats_as_python_does() {
        assert_eq!(
            format("%s and %r", &json!(["a", "b"])).unwrap(),
            "a and 'b'"
        );
        assert_eq!(
            format("%5d|%-4s|%05.1f|%x|%%", &json!([42, "ab", 2.25, 255])).unwrap(),
            "   42|ab  |002.2|ff|%"
        );
        assert_eq!(
            format(
                "%(user)s logged in %(n)d times",
                &json!({"user": "bob", "n": 3})
            )
            .unwrap(),
            "bob logged in 3 times"
        );
        assert_eq!(
            format("value %s", &json!("single")).unwrap(),
            "value single"
        );
        assert_eq!(format("%s %s", &json!([true, null])).unwrap(), "True None");
        assert_eq!(format("%r", &json!([["it's"]])).unwrap(), "['it\\'s']");
        assert!(format("%s %s", &json!(["only one"])).is_none(), "too few");
        assert!(format("%s", &json!(["a", "b"])).is_none(), "too many");
        assert!(format("%d", &json!(["x"])).is_none(), "not a number");
    }

    /// The three attacks of the hardening issue (#36): a huge width (abort
    /// on allocation), a huge precision (a panic in `format!`), and a repr
    /// nested 60,000 deep (a stack overflow). Each is refused, not run.
    #[test]
    fn hostile_specs_and_nesting_are_refused() {
        assert_eq!(format("%99999999999999d", &json!([1])), None);
        assert_eq!(format("%.99999999999f", &json!([1.5])), None);
        assert_eq!(format("%.99999999999999999999999f", &json!([1.5])), None);
        assert_eq!(format("%513s", &json!(["x"])), None);
        assert_eq!(format("%512s", &json!(["x"])).unwrap().len(), 512);
        assert_eq!(parse_repr(&"(".repeat(60_000)), None);
        let deep = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse_repr(&deep).is_some(), "as deep as allowed parses");
        let deeper = format!(
            "{}1{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse_repr(&deeper), None);
        // A dict argument named ten thousand times: the output is capped.
        let big = "x".repeat(200_000);
        let template = "%(a)s".repeat(10_000);
        assert_eq!(format(&template, &json!({ "a": big })), None);
        let template = "%(a)s".repeat(5);
        assert_eq!(
            format(&template, &json!({ "a": big })).unwrap().len(),
            1_000_000
        );
    }

    proptest! {
        /// The formatter never panics and never writes past its cap,
        /// whatever the template and arguments.
        #[test]
        fn prop_pyformat_is_total_and_bounded(
            template in "([a-z %()#+.0-9-]|%[-+ #0]{0,2}[0-9]{0,12}(\\.[0-9]{0,12})?[srdiufFeEgGxXoca%])*",
            args in "\\(([0-9.e+-]{0,8}|'[a-z\\\\x0-9]{0,6}'|None|True|\\(|\\)|\\[|\\]|, ){0,12}\\)",
        ) {
            let values = parse_repr(&args).unwrap_or(Value::Null);
            if let Some(out) = format(&template, &values) {
                prop_assert!(out.len() <= MAX_OUTPUT);
            }
            let _ = format(&template, &json!({"a": args}));
        }

        /// The repr parser is total on any bytes.
        #[test]
        fn prop_pyformat_repr_is_total(text in "[(){}\\[\\]'\",:a-zNT0-9\\\\ ]{0,200}") {
            let _ = parse_repr(&text);
        }
    }
}
