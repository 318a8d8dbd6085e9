//! Syslog messages: RFC 5424 and RFC 3164 with the variants devices and
//! daemons really send (no year, no hostname, an RFC 3339 time in a 3164
//! header as rsyslog forwards it, `<PRI>` and text only), read into
//! [`Message`].
//!
//! Shared by the host's `syslog` source and the `parse` plugin's
//! `format = "syslog"`, so a line read from the network and a line parsed
//! from a file give the same fields. Times are made by the caller's
//! [`Times`] (the host has its own time type and the local zone; a plugin
//! has neither), so this module has no clock of its own.
//!
//! Input faces the network: nothing here indexes or panics, and every loop
//! advances (property-tested in the host).

use std::borrow::Cow;

/// A structured data element: its id and its parameters.
pub type SdElement<'a> = (&'a str, Vec<(&'a str, Cow<'a, str>)>);

/// One syslog message, borrowing its text; `S` is the caller's time.
#[derive(Debug, PartialEq)]
pub struct Message<'a, S> {
    /// From `<PRI>`: facility and severity (0 without one: see `pri`).
    pub facility: u8,
    pub severity: u8,
    /// Whether the line had a `<PRI>` (always, from [`parse`]; a line of
    /// a syslog file, from [`parse_line`], often has none).
    pub pri: bool,
    /// `1` for RFC 5424; `None` for RFC 3164.
    pub version: Option<u16>,
    pub time: Option<S>,
    pub host: Option<&'a str>,
    /// APP-NAME (5424) or the TAG (3164).
    pub app: Option<&'a str>,
    pub procid: Option<&'a str>,
    pub msgid: Option<&'a str>,
    /// Structured data: each element's id and its parameters.
    pub sd: Vec<SdElement<'a>>,
    pub message: &'a str,
}

impl<S> Default for Message<'_, S> {
    fn default() -> Self {
        Message {
            facility: 0,
            severity: 0,
            pri: false,
            version: None,
            time: None,
            host: None,
            app: None,
            procid: None,
            msgid: None,
            sd: Vec::new(),
            message: "",
        }
    }
}

/// A 3164 header's time as written: a calendar day and a clock, in the
/// receiver's zone, often without a year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: Option<i32>,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
}

/// How the caller makes times.
pub trait Times {
    type Stamp;
    /// An RFC 3339 time (`None` if it is not one).
    fn rfc3339(&self, text: &str) -> Option<Self::Stamp>;
    /// A 3164 time (`None` if there is no such day). Without a year: this
    /// year, unless that is more than a day ahead of the clock (a December
    /// message read in January): then last year's.
    fn civil(&self, c: Civil) -> Option<Self::Stamp>;
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

/// A facility's name (`unknown` past the table).
pub fn facility_name(facility: u8) -> &'static str {
    FACILITIES
        .get(usize::from(facility))
        .copied()
        .unwrap_or("unknown")
}

/// A severity's name (`unknown` past the table).
pub fn severity_name(severity: u8) -> &'static str {
    SEVERITIES
        .get(usize::from(severity))
        .copied()
        .unwrap_or("unknown")
}

/// The severity for a sluice level (or a syslog severity name), for a
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
    FACILITIES
        .iter()
        .position(|f| *f == name)
        .and_then(|i| u8::try_from(i).ok())
}

/// Split `s` at its first space: the word and the rest after the space.
fn word(s: &str) -> (&str, &str) {
    s.split_once(' ').unwrap_or((s, ""))
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
    let (digits, after) = (rest.get(..end), rest.get(end + 1..));
    let (Some(digits), Some(after)) = (digits, after) else {
        return Err("not syslog: `<PRI>` is not closed".into());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not syslog: `<{digits}>` is not a priority"));
    }
    let pri: u16 = digits.parse().map_err(|_| "bad priority".to_string())?;
    match u8::try_from(pri) {
        Ok(p) if p <= 191 => Ok((p, after)),
        _ => Err(format!("priority {pri} is over 191")),
    }
}

/// Parse one frame (its line ending already cut), making times with
/// `times`.
pub fn parse<'t, T: Times>(text: &'t str, times: &T) -> Result<Message<'t, T::Stamp>, String> {
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (pri, rest) = pri(text)?;
    let m = Message {
        facility: pri / 8,
        severity: pri % 8,
        pri: true,
        ..Message::default()
    };
    after_pri(rest, times, m)
}

/// A line as syslog daemons write their files: [`parse`], and without a
/// `<PRI>` (`Dec  6 07:30:00 web-1 sshd[42]: ...`, or rsyslog's
/// `RSYSLOG_FileFormat` with an RFC 3339 time) the header after it.
pub fn parse_line<'t, T: Times>(text: &'t str, times: &T) -> Result<Message<'t, T::Stamp>, String> {
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    if text.starts_with('<') {
        return parse(text, times);
    }
    let m = after_pri(text, times, Message::default())?;
    if m.time.is_none() {
        return Err("not syslog: no `<PRI>` and no time at the start".into());
    }
    Ok(m)
}

/// The rest of a message after its `<PRI>`.
fn after_pri<'t, T: Times>(
    rest: &'t str,
    times: &T,
    mut m: Message<'t, T::Stamp>,
) -> Result<Message<'t, T::Stamp>, String> {
    // RFC 5424: a version (1 to 2 digits) then a space.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let version = rest
        .get(..digits)
        .filter(|_| (1..=2).contains(&digits) && rest.as_bytes().get(digits) == Some(&b' '));
    match (version, rest.get(digits + 1..)) {
        (Some(v), Some(after)) => {
            m.version = v.parse().ok();
            rfc5424(after, times, &mut m)?;
        }
        _ => rfc3164(rest, times, &mut m),
    }
    Ok(m)
}

fn rfc5424<'a, T: Times>(
    s: &'a str,
    times: &T,
    m: &mut Message<'a, T::Stamp>,
) -> Result<(), String> {
    let (ts, s) = word(s);
    if ts != "-" {
        m.time = Some(
            times
                .rfc3339(ts)
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
        let (id, mut r) = body.split_at_checked(id_end).unwrap_or((body, ""));
        if id.is_empty() {
            return Err("structured data element without an id".into());
        }
        let mut params = Vec::new();
        loop {
            if let Some(after) = r.strip_prefix(']') {
                r = after;
                break;
            }
            let p = r
                .strip_prefix(' ')
                .ok_or_else(|| format!("structured data `{id}`: expected a space or `]`"))?;
            let (name, v) = p
                .split_once('=')
                .ok_or_else(|| format!("structured data `{id}`: a parameter without `=`"))?;
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return Err(format!("structured data `{id}`: bad parameter name"));
            }
            let v = v
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
            let (raw, after) = end
                .and_then(|e| Some((v.get(..e)?, v.get(e + 1..)?)))
                .ok_or_else(|| format!("structured data `{id}`: `{name}` not closed"))?;
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
            r = after;
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
fn time_3164<'s, T: Times>(s: &'s str, times: &T) -> Option<(T::Stamp, &'s str)> {
    // RFC 3339, as rsyslog's forward format writes it.
    if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        let (w, rest) = word(s);
        return Some((times.rfc3339(w)?, rest));
    }
    let month = MONTHS.iter().position(|m| s.starts_with(m))?;
    let month = u32::try_from(month).ok()? + 1;
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
    let (hour, minute, second): (u32, u32, u32) =
        (h.parse().ok()?, mi.parse().ok()?, sec.parse().ok()?);
    let nanos = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let scale = 10u32.checked_pow(9 - u32::try_from(f.len()).ok()?)?;
            f.parse::<u32>().ok()?.checked_mul(scale)?
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
    let t = times.civil(Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
    })?;
    Some((t, r))
}

/// `TAG[PID]:` or `TAG:` at the start of `s` (or, `loose`, a first word
/// `TAG ` as rsyslog takes it after a header: its forward format writes
/// a 5424 message's tag without a colon): the tag, the pid and the
/// message after them; `None` when `s` does not start with one.
fn tag(s: &str, loose: bool) -> Option<(&str, Option<&str>, &str)> {
    let end = s.find(['[', ':', ' '])?;
    let (name, r) = s.split_at_checked(end)?;
    if name.is_empty() || name.len() > 64 {
        return None;
    }
    if let Some(p) = r.strip_prefix('[') {
        let (pid, after) = p.split_once(']')?;
        let after = after.strip_prefix(':').unwrap_or(after);
        return Some((name, Some(pid), after.strip_prefix(' ').unwrap_or(after)));
    }
    if let Some(after) = r.strip_prefix(':') {
        return Some((name, None, after.strip_prefix(' ').unwrap_or(after)));
    }
    let after = r.strip_prefix(' ').filter(|_| loose && name.len() <= 32)?;
    Some((name, None, after))
}

fn rfc3164<'a, T: Times>(s: &'a str, times: &T, m: &mut Message<'a, T::Stamp>) {
    let s = s.trim_start_matches(' ');
    let Some((t, rest)) = time_3164(s, times) else {
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
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// The structured data as one object per element id: an id given twice
/// has its parameters merged (the last value wins when a name repeats),
/// so the object has unique keys.
pub fn structured<'m>(sd: &'m [SdElement<'_>]) -> Vec<(&'m str, Vec<(&'m str, &'m str)>)> {
    let mut out: Vec<(&str, Vec<(&str, &str)>)> = Vec::new();
    for (id, params) in sd {
        let at = match out.iter().position(|(i, _)| i == id) {
            Some(at) => at,
            None => {
                out.push((id, Vec::new()));
                out.len() - 1
            }
        };
        if let Some((_, names)) = out.get_mut(at) {
            for (n, v) in params {
                match names.iter_mut().find(|(k, _)| k == n) {
                    Some(slot) => slot.1 = v,
                    None => names.push((n, v)),
                }
            }
        }
    }
    out
}
