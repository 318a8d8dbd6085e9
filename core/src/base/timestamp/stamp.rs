//! A time as an event gave it (seconds, nanoseconds, and the fraction
//! digits it had), the calendar arithmetic, and its RFC 3339 text written
//! with the second's text kept from one event to the next.

use super::*;

/// A time as an event gave it: seconds and nanoseconds since 1970 (UTC),
/// and how many fraction digits it carried (at least 3, at most 9), so it
/// is written back with the precision it had: a Python `created` of
/// `1796474732.999999` stays `...:32.999999Z`, a pino `time` in
/// milliseconds `...:32.999Z`, an OTLP time in nanoseconds nine digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub secs: i64,
    pub nanos: u32,
    pub digits: u8,
}

/// Seconds from 1970 to the years sluice writes (0001 to 9999).
pub(super) const MIN_SECS: i64 = -62_135_596_800;
pub(super) const MAX_SECS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`).
pub(super) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (`civil_from_days`).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub(super) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

pub(super) fn push2(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

impl Stamp {
    pub(super) fn new(secs: i64, nanos: u32, digits: usize) -> Option<Stamp> {
        ((MIN_SECS..=MAX_SECS).contains(&secs) && nanos < 1_000_000_000).then_some(Stamp {
            secs,
            nanos,
            digits: digits.clamp(3, 9) as u8,
        })
    }

    /// A chrono time, with as many digits as its nanoseconds need.
    pub fn of(t: DateTime<Utc>) -> Option<Stamp> {
        let nanos = t.timestamp_subsec_nanos();
        let digits = if nanos.is_multiple_of(1_000_000) {
            3
        } else if nanos.is_multiple_of(1000) {
            6
        } else {
            9
        };
        Stamp::new(t.timestamp(), nanos, digits)
    }

    /// Nanoseconds since 1970.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// Append it as RFC 3339 in UTC: `2026-11-23T10:00:00.123Z`.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_with(&mut Seconds::default(), out);
    }

    /// [`Stamp::write`], the date and time to the second taken from `last`
    /// when it is the same second (events come in time order: a source
    /// writes the calendar of one second once, not once per event).
    pub fn write_with(&self, last: &mut Seconds, out: &mut Vec<u8>) {
        if last.secs != Some(self.secs) {
            let (y, m, d) = civil_from_days(self.secs.div_euclid(86_400));
            let sod = self.secs.rem_euclid(86_400) as u32;
            let y = y as u32;
            let mut t = Vec::with_capacity(19);
            push2(&mut t, y / 100);
            push2(&mut t, y % 100);
            t.push(b'-');
            push2(&mut t, m);
            t.push(b'-');
            push2(&mut t, d);
            t.push(b'T');
            push2(&mut t, sod / 3600);
            t.push(b':');
            push2(&mut t, sod / 60 % 60);
            t.push(b':');
            push2(&mut t, sod % 60);
            t.push(b'.');
            last.text.copy_from_slice(&t);
            last.secs = Some(self.secs);
        }
        out.extend_from_slice(&last.text);
        // As many fraction digits as the time had (3 to 9): the fraction
        // in those units (a division by a constant), then its digits.
        let digits = usize::from(self.digits).clamp(3, 9);
        let mut n = match digits {
            3 => self.nanos / 1_000_000,
            4 => self.nanos / 100_000,
            5 => self.nanos / 10_000,
            6 => self.nanos / 1000,
            7 => self.nanos / 100,
            8 => self.nanos / 10,
            _ => self.nanos,
        };
        let mut frac = [b'0'; 9];
        for d in frac[..digits].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&frac[..digits]);
        out.push(b'Z');
    }

    pub fn to_rfc3339(&self) -> String {
        let mut out = Vec::with_capacity(32);
        self.write(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The last second a [`Stamp`] was written in, and its text
/// (`2026-11-23T10:00:00.`).
#[derive(Debug, Clone)]
pub struct Seconds {
    pub(super) secs: Option<i64>,
    pub(super) text: [u8; 20],
}

impl Default for Seconds {
    fn default() -> Self {
        Seconds {
            secs: None,
            text: [b'0'; 20],
        }
    }
}
