//! Syslog messages: RFC 5424 and RFC 3164 with the variants devices and
//! daemons really send (no year, no hostname, an RFC 3339 time in a 3164
//! header as rsyslog forwards it, `<PRI>` and text only), read into
//! [`Message`] and written as one event.
//!
//! Input faces the network: nothing here indexes past a slice's end or
//! panics, and every loop advances (property-tested below).

use std::borrow::Cow;

use chrono::{Datelike, Local, NaiveDate, TimeZone};

use crate::base::event::push_json_str;
use crate::base::timestamp::{self, Stamp, TimeFormat};

/// A structured data element: its id and its parameters.
pub type SdElement<'a> = (&'a str, Vec<(&'a str, Cow<'a, str>)>);

/// One syslog message, borrowing its text.
#[derive(Debug, Default, PartialEq)]
pub struct Message<'a> {
    /// From `<PRI>`: facility and severity.
    pub facility: u8,
    pub severity: u8,
    /// `1` for RFC 5424; `None` for RFC 3164.
    pub version: Option<u16>,
    pub time: Option<Stamp>,
    pub host: Option<&'a str>,
    /// APP-NAME (5424) or the TAG (3164).
    pub app: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    /// Structured data: each element's id and its parameters.
    pub sd: Vec<SdElement<'a>>,
    pub message: &'a str,
}

pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// sluice's level for a syslog severity.
pub fn level(severity: u8) -> &'static str {
    match severity {
        0..=2 => "fatal",
        3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// The severity for a sluice level (or a syslog severity name), for the
/// sink: `notice` when there is none or it is unknown.
pub fn severity_of(level: &str) -> u8 {
    match level.to_ascii_lowercase().as_str() {
        "emerg" | "emergency" | "panic" => 0,
        "alert" => 1,
        "fatal" | "crit" | "critical" => 2,
        "error" | "err" => 3,
        "warn" | "warning" => 4,
        "notice" => 5,
        "info" | "information" => 6,
        "debug" | "trace" => 7,
        _ => 5,
    }
}

/// The facility numbered by `name` (`local0`, `user`, ...).
pub fn facility_of(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == name).map(|i| i as u8)
}

/// Split `s` at its first space: the word and the rest after the space.
fn word(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn nil(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// `<PRI>` at the start: the priority and the rest.
fn pri(s: &str) -> Result<(u8, &str), String> {
    let rest = s
        .strip_prefix('<')
        .ok_or("not syslog: no `<PRI>` at the start")?;
    let end = rest
        .bytes()
        .take(4)
        .position(|b| b == b'>')
        .ok_or("not syslog: `<PRI>` is not closed within 3 digits")?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not syslog: `<{digits}>` is not a priority"));
    }
    let pri: u16 = digits.parse().map_err(|_| "bad priority".to_string())?;
    if pri > 191 {
        return Err(format!("priority {pri} is over 191"));
    }
    Ok((pri as u8, &rest[end + 1..]))
}

/// When a frame came, asked only for a 3164 time without a year (reading
/// the clock and the zone is not free, and most frames do not need it).
pub type Now<'a> = &'a dyn Fn() -> chrono::DateTime<Local>;

/// Parse one frame (its line ending already cut).
pub fn parse<'t>(text: &'t str, now: Now<'_>) -> Result<Message<'t>, String> {
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (pri, rest) = pri(text)?;
    let mut m = Message {
        facility: pri / 8,
        severity: pri % 8,
        ..Message::default()
    };
    // RFC 5424: a version (1 to 2 digits) then a space.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=2).contains(&digits) && rest.as_bytes().get(digits) == Some(&b' ') {
        m.version = rest[..digits].parse().ok();
        rfc5424(&rest[digits + 1..], &mut m)?;
    } else {
        rfc3164(rest, now, &mut m);
    }
    Ok(m)
}

fn rfc5424<'a>(s: &'a str, m: &mut Message<'a>) -> Result<(), String> {
    let (ts, s) = word(s);
    if ts != "-" {
        m.time = Some(
            timestamp::parse_raw(timestamp::Raw::Str(ts), &TimeFormat::Rfc3339)
                .ok_or_else(|| format!("RFC 5424 timestamp `{}` is not RFC 3339", cut(ts)))?,
        );
    }
    let (host, s) = word(s);
    let (app, s) = word(s);
    let (procid, s) = word(s);
    let (msgid, s) = word(s);
    m.host = nil(host);
    m.app = nil(app);
    m.procid = nil(procid);
    m.msgid = nil(msgid);
    let rest = if let Some(r) = s.strip_prefix('-') {
        r
    } else if s.starts_with('[') {
        structured_data(s, &mut m.sd)?
    } else if s.is_empty() {
        return Err("RFC 5424 header ends before its structured data".into());
    } else {
        return Err(format!(
            "RFC 5424 structured data must be `-` or `[...]`, not `{}`",
            cut(s)
        ));
    };
    let msg = rest.strip_prefix(' ').unwrap_or(rest);
    m.message = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    Ok(())
}

/// The elements at the start of `s`; the rest after them.
fn structured_data<'a>(mut s: &'a str, out: &mut Vec<SdElement<'a>>) -> Result<&'a str, String> {
    while let Some(body) = s.strip_prefix('[') {
        let id_end = body
            .find([' ', ']'])
            .ok_or("structured data element not closed")?;
        let id = &body[..id_end];
        if id.is_empty() {
            return Err("structured data element without an id".into());
        }
        let mut r = &body[id_end..];
        let mut params = Vec::new();
        loop {
            if let Some(after) = r.strip_prefix(']') {
                r = after;
                break;
            }
            let p = r
                .strip_prefix(' ')
                .ok_or_else(|| format!("structured data `{id}`: expected a space or `]`"))?;
            let eq = p
                .find('=')
                .ok_or_else(|| format!("structured data `{id}`: a parameter without `=`"))?;
            let name = &p[..eq];
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return Err(format!("structured data `{id}`: bad parameter name"));
            }
            let v = p[eq + 1..]
                .strip_prefix('"')
                .ok_or_else(|| format!("structured data `{id}`: `{name}` is not quoted"))?;
            // The value to its closing quote; `\"`, `\\` and `\]` escaped.
            let mut end = None;
            let mut escaped = false;
            let mut has_escape = false;
            for (i, c) in v.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => {
                        escaped = true;
                        has_escape = true;
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| format!("structured data `{id}`: `{name}` not closed"))?;
            let raw = &v[..end];
            let value = if has_escape {
                let mut t = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        match chars.next() {
                            Some(n @ ('"' | '\\' | ']')) => t.push(n),
                            Some(n) => {
                                t.push('\\');
                                t.push(n);
                            }
                            None => t.push('\\'),
                        }
                    } else {
                        t.push(c);
                    }
                }
                Cow::Owned(t)
            } else {
                Cow::Borrowed(raw)
            };
            params.push((name, value));
            r = &v[end + 1..];
        }
        out.push((id, params));
        s = r;
    }
    Ok(s)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A 3164 time at the start of `s` (`Mmm dd hh:mm:ss`, with an optional
/// fraction and an optional year before or after the clock, or RFC 3339):
/// the time and the rest.
fn time_3164<'s>(s: &'s str, now: Now<'_>) -> Option<(Stamp, &'s str)> {
    // RFC 3339, as rsyslog's forward format writes it.
    if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (w, rest) = word(s);
        let t = timestamp::parse_raw(timestamp::Raw::Str(w), &TimeFormat::Rfc3339)?;
        return Some((t, rest));
    }
    let month = MONTHS.iter().position(|m| s.starts_with(m))? as u32 + 1;
    let r = s.get(3..)?.strip_prefix(' ')?;
    let r = r.strip_prefix(' ').unwrap_or(r);
    let (day, r) = word(r);
    let day: u32 = day.parse().ok()?;
    let (mut w, mut r) = word(r);
    let mut year = None;
    if w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit()) {
        year = w.parse::<i32>().ok();
        (w, r) = word(r);
    }
    let (clock, frac) = match w.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (w, None),
    };
    let mut hms = clock.split(':');
    let (h, mi, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, mi, sec): (u32, u32, u32) = (h.parse().ok()?, mi.parse().ok()?, sec.parse().ok()?);
    let nanos = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    // A year after the clock (`Mmm dd hh:mm:ss yyyy`, some devices).
    if year.is_none() {
        let (y, after) = word(r);
        if y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()) {
            year = y.parse().ok();
            r = after;
        }
    }
    let at = |y: i32| {
        NaiveDate::from_ymd_opt(y, month, day)?
            .and_hms_nano_opt(h, mi, sec, nanos)
            .and_then(|n| Local.from_local_datetime(&n).earliest())
    };
    let t = match year {
        Some(y) => at(y)?,
        // No year: this one, unless that is more than a day ahead (a
        // December message read in January): then last year's.
        None => {
            let now = now();
            let t = at(now.year())?;
            if t > now + chrono::Duration::days(1) {
                at(now.year() - 1)?
            } else {
                t
            }
        }
    };
    let t = Stamp::of(t.with_timezone(&chrono::Utc))?;
    Some((t, r))
}

/// `TAG[PID]:` or `TAG:` at the start of `s` (or, `loose`, a first word
/// `TAG ` as rsyslog takes it after a header: its forward format writes
/// a 5424 message's tag without a colon): the tag, the pid and the
/// message after them; `None` when `s` does not start with one.
fn tag(s: &str, loose: bool) -> Option<(&str, Option<&str>, &str)> {
    let end = s.find(['[', ':', ' '])?;
    let name = &s[..end];
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    let r = &s[end..];
    if let Some(p) = r.strip_prefix('[') {
        let close = p.find(']')?;
        let pid = &p[..close];
        let after = &p[close + 1..];
        let after = after.strip_prefix(':').unwrap_or(after);
        return Some((name, Some(pid), after.strip_prefix(' ').unwrap_or(after)));
    }
    if let Some(after) = r.strip_prefix(':') {
        return Some((name, None, after.strip_prefix(' ').unwrap_or(after)));
    }
    let after = r.strip_prefix(' ').filter(|_| loose && name.len() <= 32)?;
    Some((name, None, after))
}

fn rfc3164<'a>(s: &'a str, now: Now<'_>, m: &mut Message<'a>) {
    let s = s.trim_start_matches(' ');
    let Some((t, rest)) = time_3164(s, now) else {
        // `<PRI>` and text: a tag if it starts with one.
        match tag(s, false) {
            Some((app, pid, msg)) => {
                m.app = Some(app);
                m.procid = pid;
                m.message = msg;
            }
            None => m.message = s,
        }
        return;
    };
    m.time = Some(t);
    // Hostname, unless the first word is the tag itself.
    let rest = rest.trim_start_matches(' ');
    let (first, after) = word(rest);
    let first_is_tag = first.ends_with(':') || first.contains('[');
    let rest = if first_is_tag || first.is_empty() {
        rest
    } else {
        m.host = Some(first);
        after
    };
    match tag(rest, true) {
        Some((app, pid, msg)) => {
            m.app = Some(app);
            m.procid = pid;
            m.message = msg;
        }
        None => m.message = rest,
    }
}

/// At most 64 characters of `s`, for an error message.
fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Append `m` as one event's JSON to `out`: `timestamp` (the message's, or
/// `arrival`), `level`, `message`, `host`, `service`, and `syslog` with the
/// rest (`facility`, `severity`, `version`, `procid`, `msgid` and the
/// structured data by element); then `meta` (`,"source":...`), already
/// encoded.
pub fn write_event(m: &Message<'_>, arrival: &str, meta: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    match &m.time {
        Some(t) => t.write(out),
        None => out.extend_from_slice(arrival.as_bytes()),
    }
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level(m.severity).as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_json_str(out, m.message);
    if let Some(h) = m.host {
        out.extend_from_slice(b",\"host\":");
        push_json_str(out, h);
    }
    if let Some(a) = m.app {
        out.extend_from_slice(b",\"service\":");
        push_json_str(out, a);
    }
    out.extend_from_slice(b",\"syslog\":{\"facility\":\"");
    out.extend_from_slice(
        FACILITIES
            .get(usize::from(m.facility))
            .unwrap_or(&"unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"severity\":\"");
    out.extend_from_slice(
        SEVERITIES
            .get(usize::from(m.severity))
            .unwrap_or(&"unknown")
            .as_bytes(),
    );
    out.push(b'"');
    if let Some(v) = m.version {
        out.extend_from_slice(format!(",\"version\":{v}").as_bytes());
    }
    if let Some(p) = m.procid {
        out.extend_from_slice(b",\"procid\":");
        push_json_str(out, p);
    }
    if let Some(p) = m.msgid {
        out.extend_from_slice(b",\"msgid\":");
        push_json_str(out, p);
    }
    if !m.sd.is_empty() {
        out.extend_from_slice(b",\"structured_data\":{");
        // An id given twice: its parameters merged (the last value wins
        // when a name repeats), so the object has unique keys.
        let mut ids: Vec<&str> = Vec::new();
        for (id, _) in &m.sd {
            if !ids.contains(id) {
                ids.push(id);
            }
        }
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(out, id);
            out.extend_from_slice(b":{");
            let mut names: Vec<(&str, &str)> = Vec::new();
            for (_, params) in m.sd.iter().filter(|(e, _)| e == id) {
                for (n, v) in params {
                    match names.iter_mut().find(|(k, _)| k == n) {
                        Some(slot) => slot.1 = v,
                        None => names.push((n, v)),
                    }
                }
            }
            for (j, (n, v)) in names.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                push_json_str(out, n);
                out.push(b':');
                push_json_str(out, v);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }
    out.push(b'}');
    out.extend_from_slice(meta);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> chrono::DateTime<Local> {
        Local.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()
    }

    fn event(text: &str) -> serde_json::Value {
        let m = parse(text, &now).unwrap();
        let mut out = Vec::new();
        write_event(
            &m,
            "2026-12-06T12:00:00.000Z",
            b",\"source\":\"s\"",
            &mut out,
        );
        crate::base::event::check_object(&out).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn rfc5424_with_structured_data() {
        let e = event(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event log entry..."#,
        );
        assert_eq!(e["timestamp"], "2003-10-11T22:14:15.003Z");
        assert_eq!(e["level"], "info");
        assert_eq!(e["host"], "mymachine.example.com");
        assert_eq!(e["service"], "evntslog");
        assert_eq!(e["message"], "An application event log entry...");
        assert_eq!(e["syslog"]["facility"], "local4");
        assert_eq!(e["syslog"]["severity"], "notice");
        assert_eq!(e["syslog"]["version"], 1);
        assert_eq!(e["syslog"]["msgid"], "ID47");
        assert!(e["syslog"].get("procid").is_none());
        assert_eq!(
            e["syslog"]["structured_data"]["exampleSDID@32473"]["eventSource"],
            "Application"
        );
        assert_eq!(
            e["syslog"]["structured_data"]["examplePriority@32473"]["class"],
            "high"
        );
        assert_eq!(e["source"], "s");
    }

    #[test]
    fn rfc5424_nil_values_escapes_offsets_and_bom() {
        let e = event("<34>1 2003-10-11T22:14:15.000003-07:00 - - - - - \u{feff}'su root' failed");
        assert_eq!(e["timestamp"], "2003-10-12T05:14:15.000003Z");
        assert_eq!(e["level"], "fatal");
        assert_eq!(e["message"], "'su root' failed");
        assert!(e.get("host").is_none() && e.get("service").is_none());
        let e = event(r#"<14>1 - h a 42 - [x@1 q="a \"b\" c\]d\\e"]"#);
        assert_eq!(e["syslog"]["structured_data"]["x@1"]["q"], r#"a "b" c]d\e"#);
        assert_eq!(e["syslog"]["procid"], "42");
        assert_eq!(e["message"], "");
        assert_eq!(e["timestamp"], "2026-12-06T12:00:00.000Z");
        // An id twice: one object.
        let e = event(r#"<14>1 - h a - - [x a="1"][x b="2" a="3"] m"#);
        assert_eq!(e["syslog"]["structured_data"]["x"]["a"], "3");
        assert_eq!(e["syslog"]["structured_data"]["x"]["b"], "2");
    }

    #[test]
    fn rfc5424_errors_say_what() {
        let err = |t: &str| parse(t, &now).unwrap_err();
        assert!(err("<14>1 yesterday h a - - - m").contains("not RFC 3339"));
        assert!(err(r#"<14>1 - h a - - [x a="1"#).contains("not closed"));
        assert!(err(r#"<14>1 - h a - - [x a="1" m"#).contains("without `=`"));
        assert!(err(r#"<14>1 - h a - - [x a=1] m"#).contains("not quoted"));
        assert!(err("<14>1 - h a - - m").contains("structured data"));
        assert!(err("hello").contains("no `<PRI>`"));
        assert!(err("<999>x").contains("over 191"));
        assert!(err("<1x>x").contains("not a priority"));
    }

    #[test]
    fn rfc3164_and_its_variants() {
        // What `logger --rfc3164` sends over the network.
        let e = event("<13>Dec  6 03:10:01 web-1 root[4242]: disk full on /var");
        assert_eq!(e["host"], "web-1");
        assert_eq!(e["service"], "root");
        assert_eq!(e["syslog"]["procid"], "4242");
        assert_eq!(e["message"], "disk full on /var");
        assert_eq!(e["syslog"]["facility"], "user");
        assert!(e["syslog"].get("version").is_none());
        let want = Local
            .with_ymd_and_hms(2026, 12, 6, 3, 10, 1)
            .unwrap()
            .with_timezone(&chrono::Utc)
            .format("%Y-%m-%dT%H:%M:%S.000Z")
            .to_string();
        assert_eq!(e["timestamp"], want);
        // No hostname.
        let e = event("<13>Dec 16 03:10:01 sshd: accepted");
        assert!(e.get("host").is_none());
        assert_eq!(e["service"], "sshd");
        assert_eq!(e["message"], "accepted");
        // `<PRI>` only, with and without a tag.
        let e = event("<11>kernel: oops");
        assert_eq!(e["service"], "kernel");
        assert_eq!(e["level"], "error");
        let e = event("<11>just text here");
        assert_eq!(e["message"], "just text here");
        assert_eq!(e["timestamp"], "2026-12-06T12:00:00.000Z");
        // RFC 3339 in a 3164 header (rsyslog's forward format).
        let e = event("<86>2026-12-06T03:10:01.123456+00:00 db-2 CRON[77]: job done");
        assert_eq!(e["timestamp"], "2026-12-06T03:10:01.123456Z");
        assert_eq!(e["host"], "db-2");
        assert_eq!(e["service"], "CRON");
        assert_eq!(e["syslog"]["facility"], "authpriv");
        // A year, and a fraction (high-precision devices).
        let e = event("<13>Jan  2 2025 03:10:01 sw1 %LINK-3-UPDOWN: down");
        assert!(e["timestamp"].as_str().unwrap().starts_with("2025-01-0"));
        assert_eq!(e["service"], "%LINK-3-UPDOWN");
        let e = event("<13>Feb  3 04:05:06.789 sw1 app: x");
        assert!(e["timestamp"].as_str().unwrap().ends_with(".789Z"));
        // December read in January of the next year: last year.
        let jan = Local.with_ymd_and_hms(2027, 1, 1, 0, 5, 0).unwrap();
        let m = parse("<13>Dec 31 23:59:00 h a: b", &|| jan).unwrap();
        let y = m.time.unwrap().to_rfc3339();
        assert!(
            y.starts_with("2026-12-31") || y.starts_with("2027-01-01"),
            "{y}"
        );
        // A host then a word without a colon: the tag, as rsyslog reads
        // it (its forward format writes 5424 tags so).
        let e = event("<13>Dec  6 03:10:01 host hello world");
        assert_eq!(e["host"], "host");
        assert_eq!(e["service"], "hello");
        assert_eq!(e["message"], "world");
        let e = event("<13>2026-12-06T03:33:54.118744+00:00 vm fwdfmt 1");
        assert_eq!(
            (&e["host"], &e["service"], &e["message"]),
            (&"vm".into(), &"fwdfmt".into(), &"1".into())
        );
    }

    #[test]
    fn levels_both_ways() {
        for s in 0..8u8 {
            assert_eq!(level(severity_of(SEVERITIES[usize::from(s)])), level(s));
        }
        assert_eq!(severity_of("warn"), 4);
        assert_eq!(severity_of("whatever"), 5);
        assert_eq!(facility_of("local7"), Some(23));
    }

    proptest! {
        /// Whatever arrives: no panic, and what parses writes one JSON
        /// object.
        #[test]
        fn any_input_parses_or_says_why(s in "(<[0-9]{1,3}>)?(1 )?[ -~\\[\\]\"\\\\=é\u{feff}]{0,80}") {
            if let Ok(m) = parse(&s, &now) {
                let mut out = Vec::new();
                write_event(&m, "2026-12-06T12:00:00.000Z", b"", &mut out);
                prop_assert!(crate::base::event::check_object(&out).is_ok());
            }
        }

        #[test]
        fn any_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s = String::from_utf8_lossy(&b);
            let _ = parse(&s, &now);
            let t = format!("<13>{s}");
            let _ = parse(&t, &now);
            let t = format!("<13>1 {s}");
            let _ = parse(&t, &now);
            let t = format!("<13>Dec  6 03:10:01 {s}");
            let _ = parse(&t, &now);
        }
    }
}
