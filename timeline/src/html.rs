//! `sluice timeline --format html`: one self-contained page (no script,
//! style or font from the network; a Content-Security-Policy forbids any
//! request) with swimlanes, request waterfalls, hop histograms and the
//! lost requests. The drawing is plain SVG from the page's own script
//! (`timeline.html`), no charting library: nothing to fetch, pin or audit.
//!
//! Bounded like the Markdown report: at most [`MAX_MARKS`] events are
//! drawn (every k-th, k doubling as the input grows, plus errors and
//! warnings up to [`MAX_NOTABLE`]), at most [`MAX_REQUESTS`] requests have
//! a waterfall (the slowest), and the page says what it left out.

use std::io::Write;

use super::read::{format_time, Record};
use super::{Options, Summary};

/// Events drawn at most.
pub const MAX_MARKS: usize = 20_000;
/// Errors and warnings drawn at most, besides the sampled events.
pub const MAX_NOTABLE: usize = 5_000;
/// Requests with a waterfall at most (the slowest).
pub const MAX_REQUESTS: usize = 5_000;
/// Bins of a hop's histogram.
pub const BINS: usize = 40;
/// Characters of a message, and of the fields' JSON, kept per mark.
const MESSAGE_CHARS: usize = 200;
const FIELDS_CHARS: usize = 1_000;

/// One hop's p99 and histogram (low, high, count per bin, in µs).
#[derive(Debug, Clone, Default)]
pub struct HopDetail {
    pub p99_us: i64,
    pub bins: Vec<(i64, i64, u64)>,
}

/// One request's segments: (component, first ts, last ts).
#[derive(Debug, Clone, Default)]
pub struct RequestDetail {
    pub id: String,
    pub total_us: i64,
    pub segments: Vec<(String, i64, i64)>,
}

/// One event drawn.
#[derive(Debug, Clone)]
struct Mark {
    ts: i64,
    component: String,
    rank: u8,
    message: String,
    fields: String,
}

/// The events to draw: every `stride`-th, the stride doubling whenever
/// [`MAX_MARKS`] are kept; errors and warnings besides, up to [`MAX_NOTABLE`].
#[derive(Debug, Clone)]
pub struct Marks {
    stride: u64,
    seen: u64,
    sampled: Vec<Mark>,
    notable: Vec<Mark>,
    notable_seen: u64,
}

impl Default for Marks {
    fn default() -> Self {
        Self {
            stride: 1,
            seen: 0,
            sampled: Vec::new(),
            notable: Vec::new(),
            notable_seen: 0,
        }
    }
}

fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn mark(r: &Record) -> Mark {
    let mut fields = String::from("{");
    for (i, (k, v)) in r.fields().enumerate() {
        if i > 0 {
            fields.push(',');
        }
        fields.push_str(&serde_json::to_string(k).unwrap_or_default());
        fields.push(':');
        fields.push_str(v);
        if fields.len() > FIELDS_CHARS * 4 {
            break;
        }
    }
    fields.push('}');
    // Kept as valid JSON when short; cut as text when long.
    let fields = if fields.chars().count() > FIELDS_CHARS {
        serde_json::to_string(&cut(&fields, FIELDS_CHARS)).unwrap_or_default()
    } else {
        fields
    };
    Mark {
        ts: r.ts,
        component: r.component().to_string(),
        rank: r.rank,
        message: cut(r.message(), MESSAGE_CHARS),
        fields,
    }
}

impl Marks {
    pub fn add(&mut self, r: &Record) {
        self.seen += 1;
        if r.rank >= 4 {
            self.notable_seen += 1;
            if self.notable.len() < MAX_NOTABLE {
                self.notable.push(mark(r));
            }
            return;
        }
        if !(self.seen - 1).is_multiple_of(self.stride) {
            return;
        }
        self.sampled.push(mark(r));
        if self.sampled.len() >= MAX_MARKS {
            // Keep every other one: the stride doubles.
            let mut i = 0;
            self.sampled.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
        }
    }
}

/// Write the page.
pub fn page(o: &Options, s: &Summary, out: &mut Vec<u8>) -> std::io::Result<()> {
    use serde_json::json;
    let lanes = flow_order(s.per_component.keys().map(String::as_str), &s.hops);
    let lane = |c: &str| lanes.iter().position(|l| l == c).unwrap_or(0);
    let mut marks: Vec<&Mark> = s.marks.sampled.iter().chain(&s.marks.notable).collect();
    marks.sort_by_key(|m| m.ts);
    let drawn = marks.len();
    let marks_json: Vec<serde_json::Value> = marks
        .iter()
        .map(|m| {
            json!([
                m.ts,
                lane(&m.component),
                m.rank,
                m.message,
                serde_json::from_str::<serde_json::Value>(&m.fields)
                    .unwrap_or_else(|_| m.fields.clone().into())
            ])
        })
        .collect();
    let mut marks_note = format!("{drawn} of {} events drawn", s.events);
    if s.marks.stride > 1 {
        marks_note.push_str(&format!(
            ": every {}th event below warn, and every warning and error",
            s.marks.stride
        ));
        if s.marks.notable_seen > s.marks.notable.len() as u64 {
            marks_note.push_str(&format!(
                " up to {MAX_NOTABLE} (of {})",
                s.marks.notable_seen
            ));
        }
    } else if s.marks.notable_seen > s.marks.notable.len() as u64 {
        marks_note.push_str(&format!(
            ": warnings and errors past the first {MAX_NOTABLE} (of {}) left out",
            s.marks.notable_seen
        ));
    }
    let requests: Vec<serde_json::Value> = s
        .request_details
        .iter()
        .map(|r| {
            json!({"id": r.id, "total_us": r.total_us,
                   "segments": r.segments.iter().map(|(c, a, b)| json!([c, a, b])).collect::<Vec<_>>()})
        })
        .collect();
    let mut requests_note = format!("{} requests followed by `{}`", s.requests, o.correlate);
    if (s.request_details.len() as u64) < s.requests {
        requests_note.push_str(&format!(
            "; waterfalls for the {} slowest of those crossing components{}",
            s.request_details.len(),
            if s.requests_kept_from < s.requests {
                format!(" among the first {}", s.requests_kept_from)
            } else {
                String::new()
            }
        ));
    }
    // The hops' histograms in the lanes' order too.
    let mut by_flow: Vec<(usize, &super::Hop)> = s.hops.iter().enumerate().collect();
    by_flow.sort_by_key(|(_, h)| (lane(&h.from), lane(&h.to)));
    let hops: Vec<serde_json::Value> = by_flow
        .into_iter()
        .map(|(i, h)| {
            let d = s.hop_details.get(i).cloned().unwrap_or_default();
            json!({"from": h.from, "to": h.to, "requests": h.requests, "min": h.min_us,
                   "p50": h.median_us, "p95": h.p95_us, "p99": d.p99_us, "max": h.max_us,
                   "bins": d.bins.iter().map(|(a, b, n)| json!([a, b, n])).collect::<Vec<_>>()})
        })
        .collect();
    let lost: Vec<serde_json::Value> = s
        .lost
        .iter()
        .map(|r| json!({"id": r.id, "path": r.path, "stopped": r.path.last(), "last": r.last_message}))
        .collect();
    let period = match (o.from, o.to) {
        (None, None) => "all".to_string(),
        (f, t) => format!(
            "{} to {}",
            f.map_or("the beginning".to_string(), format_time),
            t.map_or("the end".to_string(), format_time)
        ),
    };
    let data = json!({
        "period": period,
        "span": match (s.first_us, s.last_us) {
            (Some(f), Some(l)) => json!([f, l, format_time(f), format_time(l)]),
            _ => serde_json::Value::Null,
        },
        "components": if o.components.is_empty() { "all".to_string() } else { o.components.join(", ") },
        "level": o.min_level.as_deref().map_or("all".to_string(), |l| format!("{l} and above")),
        "grep": o.grep,
        "correlate": o.correlate,
        "files": s.files,
        "events": s.events,
        "lanes": lanes,
        "counts": s.per_component,
        "marks": marks_json,
        "marks_note": marks_note,
        "requests": requests,
        "requests_total": s.requests,
        "requests_note": requests_note,
        "hops": hops,
        "lost": lost,
        "lost_total": s.lost_total,
        "expected_end": s.expected_end,
        "problems": s.problems.iter().take(20).collect::<Vec<_>>(),
        "malformed": s.malformed,
        "no_timestamp": s.no_timestamp,
    });
    let data = script_safe(&data.to_string());
    let template = include_str!("timeline.html");
    let (head, tail) = template
        .split_once("/*DATA*/")
        .expect("the template has its data slot");
    out.write_all(head.as_bytes())?;
    out.write_all(data.as_bytes())?;
    out.write_all(tail.as_bytes())
}

/// The components in the order requests pass through them: a
/// topological order of the hops (weighted by requests), so the lanes read
/// top to bottom as the requests flow. Where the hops make a cycle, the
/// component with the fewest requests coming in from those left goes
/// first; among components ready together, the one sending most requests
/// on. Components no request crosses come last, by name.
pub fn flow_order<'a>(
    components: impl Iterator<Item = &'a str>,
    hops: &[super::Hop],
) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut left: BTreeMap<&str, (u64, u64)> = BTreeMap::new(); // (in, out)
    let mut alone = Vec::new();
    for c in components {
        if hops.iter().any(|h| h.from == c || h.to == c) {
            left.insert(c, (0, 0));
        } else {
            alone.push(c.to_string());
        }
    }
    let edges: Vec<(&str, &str, u64)> = hops
        .iter()
        .filter(|h| {
            h.from != h.to && left.contains_key(h.from.as_str()) && left.contains_key(h.to.as_str())
        })
        .map(|h| (h.from.as_str(), h.to.as_str(), h.requests))
        .collect();
    for &(f, t, n) in &edges {
        left.get_mut(f).expect("a known component").1 += n;
        left.get_mut(t).expect("a known component").0 += n;
    }
    alone.sort();
    let mut order = Vec::with_capacity(left.len() + alone.len());
    while let Some((&next, _)) = left.iter().min_by(|a, b| {
        a.1 .0
            .cmp(&b.1 .0)
            .then(b.1 .1.cmp(&a.1 .1))
            .then(a.0.cmp(b.0))
    }) {
        left.remove(next);
        for &(f, t, n) in &edges {
            if f == next {
                if let Some(to) = left.get_mut(t) {
                    to.0 -= n;
                }
            } else if t == next {
                if let Some(from) = left.get_mut(f) {
                    from.1 -= n;
                }
            }
        }
        order.push(next.to_string());
    }
    order.extend(alone);
    order
}

/// JSON made safe to sit inside a `<script>` element. Not only `</`
/// ends one early: `<!--` followed by `<script` puts the HTML parser into
/// its "double escaped" state, where the real `</script>` no longer closes
/// the element and the page is left blank. In JSON, `<`, `>` and `&` occur
/// only inside strings, where their `\u` escapes mean the same.
pub fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_in_a_script_cannot_end_or_escape_it() {
        let v = serde_json::json!({"m": "<!--<script></script>& \u{2028}"});
        let safe = script_safe(&v.to_string());
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
    }

    fn hop(from: &str, to: &str, requests: u64) -> crate::Hop {
        crate::Hop {
            from: from.into(),
            to: to.into(),
            requests,
            min_us: 0,
            median_us: 0,
            p95_us: 0,
            max_us: 0,
        }
    }

    #[test]
    fn lanes_follow_the_requests_not_the_alphabet() {
        let names = ["audit", "db", "web", "api", "cache"];
        // web -> api -> cache -> db; api -> db directly too; audit alone.
        let hops = [
            hop("api", "cache", 80),
            hop("cache", "db", 80),
            hop("web", "api", 100),
            hop("api", "db", 20),
        ];
        assert_eq!(
            flow_order(names.into_iter(), &hops),
            ["web", "api", "cache", "db", "audit"]
        );
        // A retry loop back (db -> api, few requests) does not turn the
        // flow around.
        let mut looped = hops.to_vec();
        looped.push(hop("db", "api", 3));
        assert_eq!(
            flow_order(names.into_iter(), &looped),
            ["web", "api", "cache", "db", "audit"]
        );
        // Two entries: the busier first.
        let two = [hop("cron", "db", 5), hop("web", "db", 50)];
        assert_eq!(
            flow_order(["db", "cron", "web"].into_iter(), &two),
            ["web", "cron", "db"]
        );
        assert_eq!(flow_order(["b", "a"].into_iter(), &[]), ["a", "b"]);
    }

    #[test]
    fn marks_stay_bounded_and_keep_the_notable_ones() {
        let mut m = Marks::default();
        for i in 0..1_000_000u64 {
            let level = if i % 1000 == 0 { "error" } else { "info" };
            let r = crate::tests::record(&format!(
                "{{\"ts\":{},\"service\":\"api\",\"level\":\"{level}\",\"message\":\"m{i}\"}}",
                1_795_428_000_000u64 + i
            ));
            m.add(&r);
        }
        assert!(m.sampled.len() < MAX_MARKS && m.sampled.len() > MAX_MARKS / 2);
        assert_eq!(m.notable.len(), 1000);
        assert!(m.stride >= 64);
    }
}
