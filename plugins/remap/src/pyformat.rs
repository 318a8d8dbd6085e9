//! Python's `%` formatting, for log records that arrive unformatted
//! (`"msg": "sku %s", "args": "('A-1',)"`), and the literals of a Python
//! `repr` (what `logging.handlers.HTTPHandler` sends `args` as).

use serde_json::{Map, Value};

/// Parse the repr of a Python literal: a tuple, list or dict of strings,
/// numbers, `None`, `True` and `False` (nested). Tuples become arrays.
pub fn parse_repr(text: &str) -> Option<Value> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match *self.b.get(self.i)? {
            b'(' => self.seq(b'(', b')').map(Value::Array),
            b'[' => self.seq(b'[', b']').map(Value::Array),
            b'{' => self.dict(),
            b'\'' | b'"' => self.string().map(Value::String),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, open: u8, close: u8) -> Option<Vec<Value>> {
        self.eat(open).then_some(())?;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.value()?);
            if !self.eat(b',') {
                return self.eat(close).then_some(items);
            }
        }
    }

    fn dict(&mut self) -> Option<Value> {
        self.eat(b'{').then_some(())?;
        let mut map = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            self.eat(b':').then_some(())?;
            map.insert(key, self.value()?);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(map));
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let quote = self.b[self.i];
        self.i += 1;
        let mut out = Vec::new();
        while let Some(&c) = self.b.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'x' => {
                            let hex = std::str::from_utf8(self.b.get(self.i..self.i + 2)?).ok()?;
                            self.i += 2;
                            let ch = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                            out.extend_from_slice(ch.to_string().as_bytes());
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
        while self.i < self.b.len() && !b",)]}: \t\n".contains(&self.b[self.i]) {
            self.i += 1;
        }
        let word = std::str::from_utf8(&self.b[start..self.i]).ok()?;
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

/// Python's `str()` of a value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a value.
fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Null | Value::Bool(_) => py_str(v),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `template % args`, as Python does it for `%s %r %d %i %f %e %x %o %c %%`
/// with flags, width and precision, and `%(name)s` with a dict. `None` when
/// the arguments do not fit the template (Python would raise).
pub fn format(template: &str, args: &Value) -> Option<String> {
    let positional: Vec<Value> = match args {
        Value::Array(items) => items.clone(),
        Value::Object(_) => Vec::new(),
        other => vec![other.clone()],
    };
    let mut next = 0usize;
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // %(name)
        let mut named: Option<String> = None;
        if chars.peek().map(|&(_, c)| c) == Some('(') {
            chars.next();
            let mut name = String::new();
            for (_, c) in chars.by_ref() {
                if c == ')' {
                    break;
                }
                name.push(c);
            }
            named = Some(name);
        }
        let mut spec = String::new();
        let conv = loop {
            let (_, c) = chars.next()?;
            if c.is_ascii_alphabetic() || c == '%' {
                break c;
            }
            spec.push(c);
        };
        if conv == '%' {
            out.push('%');
            continue;
        }
        let value = match &named {
            Some(name) => args.get(name)?.clone(),
            None => {
                let v = positional.get(next)?.clone();
                next += 1;
                v
            }
        };
        let left = spec.starts_with('-');
        let zero = spec.starts_with('0');
        let spec_digits = spec.trim_start_matches(['-', '+', ' ', '#', '0']);
        let (width, precision) = match spec_digits.split_once('.') {
            Some((w, p)) => (w.parse::<usize>().ok(), p.parse::<usize>().ok()),
            None => (spec_digits.parse::<usize>().ok(), None),
        };
        let number = || match &value {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(*b as i64 as f64),
            _ => None,
        };
        let mut text = match conv {
            's' => {
                let s = py_str(&value);
                match precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                }
            }
            'r' | 'a' => py_repr(&value),
            'd' | 'i' | 'u' => format!("{}", number()?.trunc() as i64),
            'f' | 'F' => format!("{:.*}", precision.unwrap_or(6), number()?),
            'e' | 'E' => {
                let s = format!("{:.*e}", precision.unwrap_or(6), number()?);
                if conv == 'E' {
                    s.to_uppercase()
                } else {
                    s
                }
            }
            'g' | 'G' => py_str(&value),
            'x' => format!("{:x}", number()? as i64),
            'X' => format!("{:X}", number()? as i64),
            'o' => format!("{:o}", number()? as i64),
            'c' => match &value {
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
                        Some(d) => ("-", d.to_string()),
                        None => ("", text.clone()),
                    };
                    text = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    text = format!("{}{text}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&text);
    }
    // Python raises when arguments are left over.
    if !args.is_object() && next < positional.len() {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs_of_python_literals() {
        assert_eq!(
            parse_repr("('A-1', \"it's\", 3, -2.5, None, True, [1, (2,)], {'k': 'v'})").unwrap(),
            json!(["A-1", "it's", 3, -2.5, null, true, [1, [2]], {"k": "v"}])
        );
        assert_eq!(parse_repr("()").unwrap(), json!([]));
        assert_eq!(parse_repr("('a\\'b\\n',)").unwrap(), json!(["a'b\n"]));
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
        assert!(format("%s %s", &json!(["only one"])).is_none(), "too few");
        assert!(format("%s", &json!(["a", "b"])).is_none(), "too many");
        assert!(format("%d", &json!(["x"])).is_none(), "not a number");
    }
}
