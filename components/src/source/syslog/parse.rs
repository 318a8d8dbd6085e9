//! Syslog messages: RFC 5424 and RFC 3164 with the variants devices and
//! daemons really send (no year, no hostname, an RFC 3339 time in a 3164
//! header as rsyslog forwards it, `<PRI>` and text only), read into
//! [`Message`] and written as one event.
//!
//! Input faces the network: nothing here indexes past a slice's end or
//! panics, and every loop advances (property-tested below).

use chrono::{Datelike, Local, NaiveDate, TimeZone};

use crate::base::event::push_json_str;
use crate::base::timestamp::{self, Stamp, TimeFormat};

pub use sluice_common::syslog::{
    facility_of, level, severity_of, Civil, SdElement, Times, FACILITIES, SEVERITIES,
};

/// One syslog message, its time as sluice's [`Stamp`].
pub type Message<'a> = sluice_common::syslog::Message<'a, Stamp>;

/// When a frame came, asked only for a 3164 time without a year (reading
/// the clock and the zone is not free, and most frames do not need it).
pub type Now<'a> = &'a dyn Fn() -> chrono::DateTime<Local>;

/// The host's times: RFC 3339 by sluice's exact reader, 3164 clocks in
/// the local zone.
struct HostTimes<'n>(Now<'n>);

impl Times for HostTimes<'_> {
    type Stamp = Stamp;

    fn rfc3339(&self, text: &str) -> Option<Stamp> {
        timestamp::parse_raw(timestamp::Raw::Str(text), &TimeFormat::Rfc3339)
    }

    fn civil(&self, c: Civil) -> Option<Stamp> {
        let at = |y: i32| {
            NaiveDate::from_ymd_opt(y, c.month, c.day)?
                .and_hms_nano_opt(c.hour, c.minute, c.second, c.nanos)
                .and_then(|n| Local.from_local_datetime(&n).earliest())
        };
        let t = match c.year {
            Some(y) => at(y)?,
            None => {
                let now = (self.0)();
                let t = at(now.year())?;
                if t > now + chrono::Duration::days(1) {
                    at(now.year() - 1)?
                } else {
                    t
                }
            }
        };
        Stamp::of(t.with_timezone(&chrono::Utc))
    }
}

/// Parse one frame (its line ending already cut).
pub fn parse<'t>(text: &'t str, now: Now<'_>) -> Result<Message<'t>, String> {
    sluice_common::syslog::parse(text, &HostTimes(now))
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
    out.extend_from_slice(sluice_common::syslog::facility_name(m.facility).as_bytes());
    out.extend_from_slice(b"\",\"severity\":\"");
    out.extend_from_slice(sluice_common::syslog::severity_name(m.severity).as_bytes());
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
        for (i, (id, names)) in sluice_common::syslog::structured(&m.sd).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_json_str(out, id);
            out.extend_from_slice(b":{");
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
