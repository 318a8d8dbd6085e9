//! Hand-written scanners for formats known ahead of time: the access and
//! error logs of nginx and Apache, logfmt and key=value, CSV, klog. Each
//! reads one line into `(name, value)` pairs or says why it cannot; none
//! indexes past a slice's end (property-tested).

use std::borrow::Cow;

use serde_json::Value;
use sluice_common::bytes::{find_by, zero_bytes, ONES};

/// Fields read from a line, in order, their names and text borrowed from
/// the line where they need no decoding.
pub type Fields<'a> = Vec<(Cow<'a, str>, Val<'a>)>;

/// A field's value: text (borrowed from the line when it can be), or any
/// JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Json(Value),
}

impl Val<'_> {
    /// As a JSON value (copies borrowed text).
    pub fn into_value(self) -> Value {
        match self {
            Val::Str(s) => Value::String(s.into_owned()),
            Val::Json(v) => v,
        }
    }

    /// The text, if it is text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Json(Value::String(s)) => Some(s),
            Val::Json(_) => None,
        }
    }
}

impl PartialEq<&str> for Val<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<Value> for Val<'_> {
    fn eq(&self, other: &Value) -> bool {
        match self {
            Val::Str(s) => other.as_str() == Some(s.as_ref()),
            Val::Json(v) => v == other,
        }
    }
}

fn s(v: &str) -> Val<'_> {
    Val::Str(Cow::Borrowed(v))
}

fn own<'a>(v: String) -> Val<'a> {
    Val::Str(Cow::Owned(v))
}

fn json<'a>(v: impl Into<Value>) -> Val<'a> {
    Val::Json(v.into())
}

/// The first `a` or `b` in `hay`, eight bytes at a time (the values of a
/// line are short: a vectorised search's setup cost more than it saved).
fn find2(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (a8, b8) = (ONES * u64::from(a), ONES * u64::from(b));
    find_by(
        hay,
        |x| zero_bytes(x ^ a8) | zero_bytes(x ^ b8),
        |c| c == a || c == b,
    )
}

/// The first `a` in `hay`, as [`find2`].
fn find1(hay: &[u8], a: u8) -> Option<usize> {
    let a8 = ONES * u64::from(a);
    find_by(hay, |x| zero_bytes(x ^ a8), |c| c == a)
}

/// A cursor over a line.
struct Cur<'a> {
    t: &'a str,
    at: usize,
}

impl<'a> Cur<'a> {
    fn new(t: &'a str) -> Self {
        Cur { t, at: 0 }
    }
    fn rest(&self) -> &'a str {
        self.t.get(self.at..).unwrap_or("")
    }
    fn eat(&mut self, p: &str) -> Result<(), String> {
        if self.rest().starts_with(p) {
            self.at += p.len();
            Ok(())
        } else {
            Err(format!("expected `{p}` at byte {}", self.at))
        }
    }
    /// Up to the next `c` (not included; it is skipped).
    fn until(&mut self, c: char) -> Result<&'a str, String> {
        let r = self.rest();
        // Short runs: words of eight beat a vectorised search's setup.
        let i = if c.is_ascii() {
            find1(r.as_bytes(), c as u8)
        } else {
            r.find(c)
        };
        let i = i.ok_or_else(|| format!("expected `{c}` after byte {}", self.at))?;
        self.at += i + c.len_utf8();
        Ok(&r[..i])
    }
    /// A word up to a space (or the end).
    fn word(&mut self) -> &'a str {
        let r = self.rest();
        let i = find1(r.as_bytes(), b' ').unwrap_or(r.len());
        self.at += i + usize::from(i < r.len());
        &r[..i]
    }
    /// A `"..."` string with `\"` and `\\` escapes (Apache's), and `\xHH`
    /// (nginx's) decoded.
    fn quoted(&mut self) -> Result<Cow<'a, str>, String> {
        self.eat("\"")?;
        let r = self.rest();
        // Most values have no escape: borrowed.
        match find2(r.as_bytes(), b'"', b'\\') {
            Some(i) if r.as_bytes()[i] == b'"' => {
                self.at += i + 1;
                return Ok(Cow::Borrowed(&r[..i]));
            }
            None => return Err("a quoted string is not closed".into()),
            Some(_) => {}
        }
        let mut out = String::with_capacity(r.len().min(256));
        // Runs between escapes copied whole (cut at ASCII bytes only).
        let mut from = 0;
        while let Some(p) = r.get(from..).and_then(|t| find2(t.as_bytes(), b'"', b'\\')) {
            out.push_str(r.get(from..from + p).unwrap_or_default());
            from += p;
            if r.as_bytes().get(from) == Some(&b'"') {
                self.at += from + 1;
                return Ok(Cow::Owned(out));
            }
            // A backslash: its escape decoded below, one character at a
            // time until the next run.
            let mut chars = r.get(from..).unwrap_or_default().char_indices();
            let Some((_, '\\')) = chars.next() else {
                break;
            };
            match chars.next() {
                Some((_, 'x')) => {
                    let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    match u8::from_str_radix(&hex, 16) {
                        Ok(b) if b.is_ascii() => out.push(b as char),
                        _ => {
                            out.push_str("\\x");
                            out.push_str(&hex);
                        }
                    }
                }
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e)) => out.push(e),
                None => out.push('\\'),
            }
            from += chars.offset();
        }
        Err("a quoted string is not closed".into())
    }
}

fn dash_or_str(v: &str) -> Option<&str> {
    (v != "-" && !v.is_empty()).then_some(v)
}

fn dash_or_cow(v: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (v != "-" && !v.is_empty()).then_some(v)
}

fn number_or_dash(name: &str, v: &str) -> Result<Option<u64>, String> {
    if v == "-" {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{name} `{v}` is not a number"))
}

/// `[06/Dec/2026:03:10:01 +0000]` as RFC 3339 (`2026-12-06T03:10:01+00:00`),
/// read by hand (every access log line has one: a strftime parse costs
/// more than the rest of the line).
#[cfg(test)]
fn clf_time(t: &str) -> Result<String, String> {
    clf_time_bytes(t).map(|b| b.iter().map(|&c| char::from(c)).collect())
}

/// [`clf_time`] into a fixed buffer of ASCII (no allocation per line).
fn clf_time_bytes(t: &str) -> Result<[u8; 25], String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bad = || format!("time `{t}` is not `%d/%b/%Y:%H:%M:%S %z`");
    let b = t.as_bytes();
    if b.len() != 26 || !t.is_ascii() {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| -> Result<u32, String> {
        b.get(r).ok_or_else(bad)?.iter().try_fold(0u32, |n, &c| {
            if c.is_ascii_digit() {
                Ok(n * 10 + u32::from(c - b'0'))
            } else {
                Err(bad())
            }
        })
    };
    let day = digits(0..2)?;
    let month = MONTHS.iter().position(|m| *m == &t[3..6]).ok_or_else(bad)? + 1;
    let year = digits(7..11)?;
    let (h, mi, sec) = (digits(12..14)?, digits(15..17)?, digits(18..20)?);
    let sign = b[21];
    let (oh, om) = (digits(22..24)?, digits(24..26)?);
    let seps = [
        (2, b'/'),
        (6, b'/'),
        (11, b':'),
        (14, b':'),
        (17, b':'),
        (20, b' '),
    ];
    if seps.iter().any(|&(i, c)| b[i] != c)
        || !matches!(sign, b'+' | b'-')
        || !(1..=31).contains(&day)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    // Written by hand: `format!` cost more than reading the time.
    let mut out = *b"0000-00-00T00:00:00+00:00";
    let mut two = |at: usize, n: u32| {
        out[at] = b'0' + (n / 10 % 10) as u8;
        out[at + 1] = b'0' + (n % 10) as u8;
    };
    two(0, year / 100);
    two(2, year % 100);
    two(5, month as u32);
    two(8, day);
    two(11, h);
    two(14, mi);
    two(17, sec);
    two(20, oh);
    two(23, om);
    out[19] = sign;
    Ok(out)
}

/// An access log line read: each part borrowed from the line where it
/// needs no decoding. [`access`] makes it fields; the plugin may also
/// write it as JSON directly (no list of fields built per line).
#[derive(Debug)]
pub struct Access<'a> {
    pub client: &'a str,
    pub ident: Option<&'a str>,
    pub user: Option<&'a str>,
    /// The time as RFC 3339, ASCII.
    pub time: [u8; 25],
    pub request: Cow<'a, str>,
    /// Where the method, the path and the protocol are in `request`, when
    /// it has that shape.
    pub parts: Option<[std::ops::Range<usize>; 3]>,
    pub status: u64,
    pub size: Option<u64>,
    pub referer: Option<Cow<'a, str>>,
    pub agent: Option<Cow<'a, str>>,
}

impl<'a> Access<'a> {
    /// The time as text.
    pub fn time(&self) -> &str {
        std::str::from_utf8(&self.time).unwrap_or_default()
    }

    /// The method, the path and the protocol of the request, if split.
    pub fn parts(&self) -> Option<[&str; 3]> {
        let [m, p, v] = self.parts.clone()?;
        let r = self.request.as_ref();
        Some([r.get(m)?, r.get(p)?, r.get(v)?])
    }

    /// As fields, in the order the plugin writes them.
    pub fn into_fields(self) -> Fields<'a> {
        let mut out = Fields::with_capacity(12);
        out.push(("client".into(), s(self.client)));
        if let Some(v) = self.ident {
            out.push(("ident".into(), s(v)));
        }
        if let Some(v) = self.user {
            out.push(("user".into(), s(v)));
        }
        out.push(("timestamp".into(), own(self.time().to_string())));
        // The parts borrow the line when the request did (no escapes).
        let parts = self.parts.clone();
        let part = |r: &Cow<'a, str>, at: std::ops::Range<usize>| -> Val<'a> {
            match r {
                Cow::Borrowed(b) => Val::Str(Cow::Borrowed(b.get(at).unwrap_or(""))),
                Cow::Owned(o) => own(o.get(at).unwrap_or("").to_string()),
            }
        };
        let split = parts.map(|[m, p, v]| {
            (
                part(&self.request, m),
                part(&self.request, p),
                part(&self.request, v),
            )
        });
        out.push(("request".into(), Val::Str(self.request)));
        if let Some((method, path, proto)) = split {
            out.push(("method".into(), method));
            out.push(("path".into(), path));
            out.push(("protocol".into(), proto));
        }
        out.push(("status".into(), json(self.status)));
        if let Some(v) = self.size {
            out.push(("size".into(), json(v)));
        }
        if let Some(v) = self.referer {
            out.push(("referer".into(), Val::Str(v)));
        }
        if let Some(v) = self.agent {
            out.push(("agent".into(), Val::Str(v)));
        }
        out
    }
}

/// Where `METHOD PATH PROTOCOL` has its parts in `r`, when it has that
/// shape.
fn request_parts(r: &str) -> Option<[std::ops::Range<usize>; 3]> {
    let b = r.as_bytes();
    let m = find1(b, b' ')?;
    let p = find1(b.get(m + 1..)?, b' ')?;
    let upper = m > 0
        && b.get(..m)
            .is_some_and(|m| m.iter().all(u8::is_ascii_uppercase));
    upper.then(|| [0..m, m + 1..m + 1 + p, m + p + 2..r.len()])
}

/// Apache common (`%h %l %u %t "%r" %>s %b`) and, `combined`, with
/// `"%{Referer}i" "%{User-agent}i"` (nginx's default `combined` is the
/// same), as fields.
pub fn access(line: &str, combined: bool) -> Result<Fields<'_>, String> {
    access_line(line, combined).map(Access::into_fields)
}

/// [`access`], read into its parts.
pub fn access_line(line: &str, combined: bool) -> Result<Access<'_>, String> {
    let mut c = Cur::new(line);
    let client = c.word();
    if client.is_empty() {
        return Err("no client address".into());
    }
    let ident = dash_or_str(c.word());
    let user = dash_or_str(c.word());
    c.eat("[")?;
    let time = clf_time_bytes(c.until(']')?)?;
    c.eat(" ")?;
    let request = c.quoted()?;
    let parts = request_parts(&request);
    c.eat(" ")?;
    let status = c.word();
    let status: u64 = status
        .parse()
        .map_err(|_| format!("status `{status}` is not a number"))?;
    let size = number_or_dash("size", c.word())?;
    let (mut referer, mut agent) = (None, None);
    if combined {
        referer = dash_or_cow(c.quoted()?);
        c.eat(" ")?;
        agent = dash_or_cow(c.quoted()?);
    }
    Ok(Access {
        client,
        ident,
        user,
        time,
        request,
        parts,
        status,
        size,
        referer,
        agent,
    })
}

/// nginx's error log: `2026/12/06 03:10:01 [error] 12#12: *5 message,
/// client: 127.0.0.1, server: localhost, request: "GET /x HTTP/1.1",
/// host: "localhost:8080"`.
pub fn nginx_error(line: &str) -> Result<Fields<'_>, String> {
    let mut c = Cur::new(line);
    let mut out = Fields::new();
    let date = c.word();
    let time = c.word();
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y/%m/%d %H:%M:%S")
        .map_err(|_| format!("time `{date} {time}` is not `%Y/%m/%d %H:%M:%S`"))?;
    out.push((
        "timestamp".into(),
        own(t.format("%Y-%m-%dT%H:%M:%S").to_string()),
    ));
    c.eat("[")?;
    out.push(("severity".into(), s(c.until(']')?)));
    c.eat(" ")?;
    let ids = c.until(':')?;
    let (pid, tid) = ids.split_once('#').ok_or("expected PID#TID")?;
    out.push((
        "pid".into(),
        json(pid.parse::<u64>().map_err(|_| "bad pid")?),
    ));
    out.push((
        "tid".into(),
        json(tid.parse::<u64>().map_err(|_| "bad tid")?),
    ));
    let mut rest = c.rest().trim_start();
    if let Some(r) = rest.strip_prefix('*') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(cid) = r[..n].parse::<u64>() {
            out.push(("connection".into(), json(cid)));
        }
        rest = r[n..].trim_start();
    }
    // The trailing `, key: value` pairs nginx adds, from the known keys.
    const KEYS: [&str; 7] = [
        "client",
        "server",
        "request",
        "upstream",
        "host",
        "referrer",
        "subrequest",
    ];
    let mut message_end = rest.len();
    let mut pairs = Vec::new();
    let mut search = rest;
    while let Some(i) = search.rfind(", ") {
        let tail = &search[i + 2..];
        let Some((k, v)) = tail.split_once(": ") else {
            break;
        };
        if !KEYS.contains(&k) {
            break;
        }
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        pairs.push((Cow::Owned(k.to_string()), s(v)));
        message_end = i;
        search = &search[..i];
    }
    out.push(("message".into(), s(&rest[..message_end])));
    pairs.reverse();
    out.extend(pairs);
    Ok(out)
}

/// Apache's error log (2.4): `[Sun Dec 06 03:10:01.123456 2026]
/// [core:error] [pid 12:tid 34] [client 127.0.0.1:5678] AH00128: File does
/// not exist: /var/www/html/x`.
pub fn apache_error(line: &str) -> Result<Fields<'_>, String> {
    let mut c = Cur::new(line);
    let mut out = Fields::new();
    c.eat("[")?;
    let t = c.until(']')?;
    let parsed = chrono::NaiveDateTime::parse_from_str(t, "%a %b %d %H:%M:%S%.f %Y")
        .map_err(|_| format!("time `{t}` is not Apache's"))?;
    out.push((
        "timestamp".into(),
        own(parsed.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
    ));
    loop {
        c.at += c.rest().len() - c.rest().trim_start().len();
        if !c.rest().starts_with('[') {
            break;
        }
        c.eat("[")?;
        let part = c.until(']')?;
        if let Some(p) = part.strip_prefix("pid ") {
            let (pid, tid) = match p.split_once(":tid ") {
                Some((a, b)) => (a, Some(b)),
                None => (p, None),
            };
            if let Ok(n) = pid.parse::<u64>() {
                out.push(("pid".into(), json(n)));
            }
            if let Some(Ok(n)) = tid.map(str::parse::<u64>) {
                out.push(("tid".into(), json(n)));
            }
        } else if let Some(cl) = part.strip_prefix("client ") {
            out.push(("client".into(), s(cl)));
        } else if let Some((module, severity)) = part.split_once(':') {
            out.push(("module".into(), s(module)));
            out.push(("severity".into(), s(severity)));
        } else {
            out.push(("severity".into(), s(part)));
        }
    }
    let msg = c.rest();
    if let Some((code, m)) = msg.split_once(": ") {
        if code.len() == 7
            && code.starts_with("AH")
            && code[2..].bytes().all(|b| b.is_ascii_digit())
        {
            out.push(("code".into(), s(code)));
            out.push(("message".into(), s(m)));
            return Ok(out);
        }
    }
    out.push(("message".into(), s(msg)));
    Ok(out)
}

/// `key=value key="quoted \"value\"" flag` (logfmt; a bare key is `true`),
/// or with other separators (`kv`).
pub fn kv(
    line: &str,
    pair_sep: char,
    value_sep: char,
    bare_true: bool,
) -> Result<Fields<'_>, String> {
    let mut out = Fields::with_capacity(16);
    let mut chars = line.char_indices().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|&(_, c)| c == pair_sep || c == ' ')
        {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut end = line.len();
        let mut has_value = false;
        while let Some(&(i, c)) = chars.peek() {
            if c == value_sep {
                end = i;
                has_value = true;
                chars.next();
                break;
            }
            if c == pair_sep || c == ' ' {
                end = i;
                break;
            }
            chars.next();
        }
        let key = &line[start..end.max(start)];
        if key.is_empty() {
            return Err(format!("an empty key at byte {start}"));
        }
        if !has_value {
            if bare_true {
                out.push((Cow::Borrowed(key), json(true)));
                continue;
            }
            return Err(format!("`{key}` has no `{value_sep}`"));
        }
        let value = if chars.peek().is_some_and(|&(_, c)| c == '"') {
            chars.next();
            let mut v = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => v.push('\n'),
                        Some((_, 't')) => v.push('\t'),
                        Some((_, e)) => v.push(e),
                        None => v.push('\\'),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(format!("the value of `{key}` is not closed"));
            }
            own(v)
        } else {
            let from = chars.peek().map_or(line.len(), |&(i, _)| i);
            let mut to = line.len();
            while let Some(&(i, c)) = chars.peek() {
                if c == pair_sep || c == ' ' {
                    to = i;
                    break;
                }
                chars.next();
            }
            s(line.get(from..to).unwrap_or(""))
        };
        out.push((Cow::Borrowed(key), value));
    }
    if out.is_empty() {
        return Err("no key=value pair".into());
    }
    Ok(out)
}

/// One CSV record (RFC 4180: `"` quotes, `""` inside them, newlines
/// inside quotes), its values named by `columns` (`column_N` past them).
pub fn csv<'a>(line: &'a str, delimiter: char, columns: &[String]) -> Result<Fields<'a>, String> {
    let mut values = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && cur.is_empty() && !was_quoted {
            quoted = true;
            was_quoted = true;
        } else if c == delimiter {
            values.push(std::mem::take(&mut cur));
            was_quoted = false;
        } else if c == '\r' && chars.peek().is_none() {
        } else {
            cur.push(c);
        }
    }
    if quoted {
        return Err("a quoted value is not closed".into());
    }
    values.push(cur);
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let name = columns
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column_{}", i + 1));
            (Cow::Owned(name), own(v))
        })
        .collect())
}

/// Kubernetes' klog: `I1206 03:10:01.123456   12345 file.go:42] message`.
pub fn klog(line: &str) -> Result<Fields<'_>, String> {
    let mut out = Fields::new();
    let level = match line.as_bytes().first() {
        Some(b'I') => "info",
        Some(b'W') => "warn",
        Some(b'E') => "error",
        Some(b'F') => "fatal",
        _ => return Err("klog lines begin with I, W, E or F".into()),
    };
    out.push(("level".into(), s(level)));
    let mut c = Cur::new(line.get(1..).ok_or("too short")?);
    let md = c.word();
    if md.len() != 4 || !md.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{md}` is not MMDD"));
    }
    let time = c.word();
    out.push((
        "timestamp".into(),
        own(format!("{}-{}T{time}", &md[..2], &md[2..])),
    ));
    let rest = c.rest().trim_start();
    let mut c = Cur::new(rest);
    let tid = c.word();
    out.push((
        "thread".into(),
        json(
            tid.parse::<u64>()
                .map_err(|_| format!("thread `{tid}` is not a number"))?,
        ),
    ));
    let at = c.until(']')?;
    if let Some((file, n)) = at.rsplit_once(':') {
        out.push(("file".into(), s(file)));
        if let Ok(n) = n.parse::<u64>() {
            out.push(("line".into(), json(n)));
        }
    }
    out.push((
        "message".into(),
        s(c.rest().strip_prefix(' ').unwrap_or(c.rest())),
    ));
    Ok(out)
}

/// Times for a syslog line parsed in a plugin: RFC 3339 as given, made
/// UTC; a 3164 clock in UTC (a plugin has no zone), its year from the
/// clock when the line has none.
struct PluginTimes;

impl sluice_common::syslog::Times for PluginTimes {
    type Stamp = String;

    fn rfc3339(&self, text: &str) -> Option<String> {
        let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        )
    }

    fn civil(&self, c: sluice_common::syslog::Civil) -> Option<String> {
        use chrono::Datelike;
        let at = |y: i32| {
            chrono::NaiveDate::from_ymd_opt(y, c.month, c.day)?
                .and_hms_nano_opt(c.hour, c.minute, c.second, c.nanos)
                .map(|n| n.and_utc())
        };
        let t = match c.year {
            Some(y) => at(y)?,
            None => {
                let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
                let t = at(now.year())?;
                if t > now + chrono::Duration::days(1) {
                    at(now.year() - 1)?
                } else {
                    t
                }
            }
        };
        Some(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

/// A syslog line (RFC 5424 or 3164 and their variants, read by the same
/// parser as the `syslog` source, or a line of a syslog file without its
/// `<PRI>`): the fields that source gives (without a `<PRI>`, no `level`,
/// `facility` or `severity`).
pub fn syslog(line: &str) -> Result<Fields<'_>, String> {
    use sluice_common::syslog as sl;
    let m = sl::parse_line(line, &PluginTimes)?;
    let mut out = Fields::new();
    if let Some(t) = m.time {
        out.push(("timestamp".into(), own(t)));
    }
    if m.pri {
        out.push(("level".into(), s(sl::level(m.severity))));
    }
    out.push(("message".into(), s(m.message)));
    if let Some(h) = m.host {
        out.push(("host".into(), s(h)));
    }
    if let Some(a) = m.app {
        out.push(("service".into(), s(a)));
    }
    let sv = |v: &str| Value::String(v.to_string());
    let mut meta = serde_json::Map::new();
    if m.pri {
        meta.insert("facility".into(), sv(sl::facility_name(m.facility)));
        meta.insert("severity".into(), sv(sl::severity_name(m.severity)));
    }
    if let Some(v) = m.version {
        meta.insert("version".into(), Value::from(v));
    }
    if let Some(p) = m.procid {
        meta.insert("procid".into(), sv(p));
    }
    if let Some(p) = m.msgid {
        meta.insert("msgid".into(), sv(p));
    }
    if !m.sd.is_empty() {
        let sd = sl::structured(&m.sd)
            .into_iter()
            .map(|(id, params)| {
                let params = params.into_iter().map(|(n, v)| (n.to_string(), sv(v)));
                (id.to_string(), Value::Object(params.collect()))
            })
            .collect();
        meta.insert("structured_data".into(), Value::Object(sd));
    }
    out.push(("syslog".into(), json(Value::Object(meta))));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(f: &Fields, k: &str) -> Option<Value> {
        f.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone().into_value())
    }

    #[test]
    fn word_searches_agree_with_a_byte_loop() {
        // Neighbours of the bytes sought (a borrow across bytes would show
        // as a wrong first hit), at every place of every length, one or
        // two of them.
        let fill = [b'a', 0, 0x80 | b' ', b' ' - 1, b' ' + 1, b'"' + 1, 0xff];
        for len in 0usize..34 {
            for &f in &fill {
                for at in 0..=len {
                    for second in [None, Some(len.saturating_sub(1)), Some(at / 2)] {
                        let mut h = vec![f; len];
                        if at < len {
                            h[at] = b' ';
                        }
                        if let Some(j) = second.filter(|&j| j < len) {
                            h[j] = b'"';
                        }
                        let one = h.iter().position(|&c| c == b' ');
                        let two = h.iter().position(|&c| c == b' ' || c == b'"');
                        assert_eq!(find1(&h, b' '), one, "{h:?}");
                        assert_eq!(find2(&h, b' ', b'"'), two, "{h:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn find2_finds_the_first_of_two() {
        for len in 0..40 {
            for at in 0..len {
                for (x, y) in [(b'"', b'\\'), (b'\\', b'"')] {
                    let mut h = vec![b'a'; len];
                    h[at] = x;
                    if at + 3 < len {
                        h[at + 3] = y;
                    }
                    assert_eq!(find2(&h, b'"', b'\\'), Some(at), "{len} {at}");
                }
            }
            assert_eq!(find2(&vec![0x80 | b'"'; len], b'"', b'\\'), None);
        }
    }

    #[test]
    fn syslog_lines_with_and_without_pri() {
        let f = syslog(r#"<165>1 2026-12-06T03:10:01.123456+01:00 web-1 shop 42 ID7 [order@32473 id="9" note="a \"q\""] paid"#).unwrap();
        assert_eq!(get(&f, "timestamp").unwrap(), "2026-12-06T02:10:01.123456Z");
        assert_eq!(get(&f, "level").unwrap(), "info");
        assert_eq!(get(&f, "host").unwrap(), "web-1");
        assert_eq!(get(&f, "service").unwrap(), "shop");
        assert_eq!(get(&f, "message").unwrap(), "paid");
        let meta = get(&f, "syslog").unwrap();
        assert_eq!(meta["facility"], "local4");
        assert_eq!(meta["severity"], "notice");
        assert_eq!(meta["procid"], "42");
        assert_eq!(meta["structured_data"]["order@32473"]["note"], "a \"q\"");
        let f = syslog("Dec  6 07:30:00 web-1 sshd[42]: Accepted key").unwrap();
        assert!(get(&f, "level").is_none());
        assert!(get(&f, "timestamp")
            .unwrap()
            .as_str()
            .unwrap()
            .ends_with("-12-06T07:30:00Z"));
        assert_eq!(get(&f, "service").unwrap(), "sshd");
        assert_eq!(get(&f, "syslog").unwrap()["procid"], "42");
        assert!(syslog("just words").is_err());
        assert!(syslog("<999>x").is_err());
    }

    #[test]
    fn combined_with_escapes() {
        let f = access(
            r#"127.0.0.1 - alice [06/Dec/2026:03:10:01 +0100] "GET /a?b=\x22c\x22 HTTP/1.1" 404 153 "-" "curl/8 \"quoted\"""#,
            true,
        )
        .unwrap();
        assert_eq!(get(&f, "client").unwrap(), "127.0.0.1");
        assert_eq!(get(&f, "user").unwrap(), "alice");
        assert_eq!(get(&f, "timestamp").unwrap(), "2026-12-06T03:10:01+01:00");
        assert!(clf_time("06/Dec/2026:03:10:01 0000").is_err());
        assert!(clf_time("06/Foo/2026:03:10:01 +0000").is_err());
        assert_eq!(
            clf_time("31/Jan/2027:23:59:60 -0530").unwrap(),
            "2027-01-31T23:59:60-05:30"
        );
        assert_eq!(get(&f, "method").unwrap(), "GET");
        assert_eq!(get(&f, "path").unwrap(), "/a?b=\"c\"");
        assert_eq!(get(&f, "status").unwrap(), 404);
        assert_eq!(get(&f, "size").unwrap(), 153);
        assert!(get(&f, "referer").is_none());
        assert_eq!(get(&f, "agent").unwrap(), "curl/8 \"quoted\"");
        let f = access(r#"::1 - - [06/Dec/2026:03:10:01 +0000] "-" 400 - "#, false).unwrap();
        assert_eq!(get(&f, "request").unwrap(), "-");
        assert!(get(&f, "size").is_none());
        assert!(access("nonsense", true).is_err());
    }

    #[test]
    fn error_logs() {
        let f = nginx_error(r#"2026/12/06 03:10:01 [error] 12#12: *5 open() "/x" failed (2: No such file or directory), client: 127.0.0.1, server: localhost, request: "GET /x HTTP/1.1", host: "localhost:8080""#).unwrap();
        assert_eq!(get(&f, "severity").unwrap(), "error");
        assert_eq!(get(&f, "connection").unwrap(), 5);
        assert_eq!(
            get(&f, "message").unwrap(),
            "open() \"/x\" failed (2: No such file or directory)"
        );
        assert_eq!(get(&f, "request").unwrap(), "GET /x HTTP/1.1");
        assert_eq!(get(&f, "host").unwrap(), "localhost:8080");
        let f = apache_error("[Sun Dec 06 03:10:01.123456 2026] [core:error] [pid 12:tid 34] [client 127.0.0.1:5678] AH00128: File does not exist: /var/www/html/x").unwrap();
        assert_eq!(get(&f, "timestamp").unwrap(), "2026-12-06T03:10:01.123456");
        assert_eq!(get(&f, "module").unwrap(), "core");
        assert_eq!(get(&f, "severity").unwrap(), "error");
        assert_eq!(get(&f, "pid").unwrap(), 12);
        assert_eq!(get(&f, "client").unwrap(), "127.0.0.1:5678");
        assert_eq!(get(&f, "code").unwrap(), "AH00128");
        assert_eq!(
            get(&f, "message").unwrap(),
            "File does not exist: /var/www/html/x"
        );
    }

    #[test]
    fn logfmt_kv_csv_klog() {
        let f = kv(
            r#"time=2026-12-06T03:10:01Z level=INFO msg="hello \"you\"" n=3 ok"#,
            ' ',
            '=',
            true,
        )
        .unwrap();
        assert_eq!(get(&f, "msg").unwrap(), "hello \"you\"");
        assert_eq!(get(&f, "ok").unwrap(), true);
        let f = kv("a:1;b:two", ';', ':', false).unwrap();
        assert_eq!(get(&f, "b").unwrap(), "two");
        assert!(kv(r#"a="open"#, ' ', '=', true).is_err());
        let f = csv("1,\"a, \"\"b\"\"\nc\",", ',', &["id".into(), "text".into()]).unwrap();
        assert_eq!(get(&f, "text").unwrap(), "a, \"b\"\nc");
        assert_eq!(get(&f, "column_3").unwrap(), "");
        let f = klog("E1206 03:10:01.123456   12345 server.go:42] listen failed").unwrap();
        assert_eq!(get(&f, "level").unwrap(), "error");
        assert_eq!(get(&f, "file").unwrap(), "server.go");
        assert_eq!(get(&f, "line").unwrap(), 42);
        assert_eq!(get(&f, "message").unwrap(), "listen failed");
    }

    #[test]
    fn quoted_strings_decode_as_a_character_loop_does() {
        // The decoder as first written: a character at a time.
        fn reference(r: &str) -> Option<(String, usize)> {
            let mut out = String::new();
            let mut chars = r.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => return Some((out, i + 1)),
                    '\\' => match chars.next() {
                        Some((_, 'x')) => {
                            let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                            match u8::from_str_radix(&hex, 16) {
                                Ok(b) if b.is_ascii() => out.push(b as char),
                                _ => {
                                    out.push_str("\\x");
                                    out.push_str(&hex);
                                }
                            }
                        }
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, e)) => out.push(e),
                        None => out.push('\\'),
                    },
                    c => out.push(c),
                }
            }
            None
        }
        let chars: Vec<char> = "ab\"\\x2n7tzé ".chars().collect();
        let mut seed = 11u64;
        for _ in 0..50_000 {
            let mut body = String::new();
            for _ in 0..(seed % 40) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                body.push(chars[(seed >> 33) as usize % chars.len()]);
            }
            let line = format!("\"{body}");
            let mut c = Cur::new(&line);
            let got = c.quoted().ok().map(|v| (v.into_owned(), c.at - 1));
            assert_eq!(got, reference(&body), "{line:?}");
        }
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut seed = 7u64;
        let alphabet = "ab \"\\[]:=,-/x0123456789#*AHIEé\n";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..20_000 {
            let mut line = String::new();
            for _ in 0..(seed % 60) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                line.push(chars[(seed >> 33) as usize % chars.len()]);
            }
            let _ = access(&line, true);
            let _ = nginx_error(&line);
            let _ = apache_error(&line);
            let _ = kv(&line, ' ', '=', true);
            let _ = csv(&line, ',', &[]);
            let _ = klog(&line);
        }
    }
}
