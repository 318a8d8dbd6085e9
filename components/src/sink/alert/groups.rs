//! The alert sink's grouping and rate limit, as a state machine over
//! explicit instants (so its tests need no clock).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::time::Instant;

/// The window `max_per_minute` counts in.
const MINUTE: Duration = Duration::from_secs(60);

/// The longest `group_by` value kept as a group's key: a longer one is
/// kept as its start and a hash of the whole (so two values still make two
/// groups), never whole.
pub const MAX_KEY_VALUE: usize = 256;
/// The longest string kept in a group's sample event; longer ones are cut
/// (with a note of how much was cut).
pub const MAX_SAMPLE_STRING: usize = 1024;
/// Most bytes of a group's sample event: fields past it are left out.
/// With `max_groups` these bound what the sink holds (10,000 groups hold
/// at most about 10,000 x (16 KiB + the keys)).
pub const MAX_SAMPLE_BYTES: usize = 16 << 10;

/// A `group_by` value as its key: short values as they are, long ones cut
/// and told apart by a hash of the whole.
fn key_value(text: String) -> String {
    if text.len() <= MAX_KEY_VALUE {
        return text;
    }
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    text.hash(&mut h);
    let mut cut = MAX_KEY_VALUE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…#{:016x}", &text[..cut], h.finish())
}

/// `v` cut to fit a sample: strings to [`MAX_SAMPLE_STRING`] bytes, and
/// fields (depth first) left out once [`MAX_SAMPLE_BYTES`] are spent.
fn bounded_sample(v: Value) -> Value {
    fn cut(v: Value, budget: &mut usize, depth: usize) -> Option<Value> {
        if *budget == 0 || depth > 32 {
            return None;
        }
        Some(match v {
            Value::String(s) if s.len() > MAX_SAMPLE_STRING => {
                let mut end = MAX_SAMPLE_STRING;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                let t = format!("{}… ({} bytes cut)", &s[..end], s.len() - end);
                *budget = budget.saturating_sub(t.len());
                Value::String(t)
            }
            Value::String(s) => {
                *budget = budget.saturating_sub(s.len() + 2);
                Value::String(s)
            }
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match cut(item, budget, depth + 1) {
                        Some(i) => out.push(i),
                        None => break,
                    }
                }
                Value::Array(out)
            }
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, item) in map {
                    *budget = budget.saturating_sub(k.len().min(MAX_SAMPLE_STRING) + 4);
                    match cut(item, budget, depth + 1) {
                        Some(i) => {
                            out.insert(key_value(k), i);
                        }
                        None => break,
                    }
                }
                Value::Object(out)
            }
            other => {
                *budget = budget.saturating_sub(8);
                other
            }
        })
    }
    let mut budget = MAX_SAMPLE_BYTES;
    cut(v, &mut budget, 0).unwrap_or(Value::Null)
}

/// What the grouping is told by the config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub repeat_interval: Duration,
    pub max_per_minute: u32,
    pub max_groups: usize,
}

/// One notification to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// A group's events since its last notification.
    Group {
        /// `group_by` fields and their values.
        key: Vec<(String, String)>,
        /// The first of those events.
        sample: Value,
        count: u64,
        first_seen: DateTime<Utc>,
        last_seen: DateTime<Utc>,
    },
    /// Notifications the rate limit held back in the last window, and
    /// the groups they were for: the most events first, at most
    /// [`SUMMARY_GROUPS`] (`more` says how many others).
    Suppressed {
        alerts: u64,
        events: u64,
        groups: Vec<SuppressedGroup>,
        more: usize,
    },
}

/// A group whose notifications were held back in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressedGroup {
    pub key: Vec<(String, String)>,
    pub alerts: u64,
    pub events: u64,
}

/// Most groups a summary names.
pub const SUMMARY_GROUPS: usize = 10;

#[derive(Debug)]
struct Group {
    sample: Value,
    /// Events not notified yet.
    pending: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// When its pending events may be notified.
    due: Instant,
    last_event: Instant,
    last_sent: Option<Instant>,
}

/// The groups and the rate limit's window.
#[derive(Debug)]
pub struct Groups {
    limits: Limits,
    groups: HashMap<Vec<String>, Group>,
    /// When the current window began and how many it sent.
    window: Option<(Instant, u32)>,
    /// Held back in the current window: notifications and their events.
    suppressed: (u64, u64),
    /// The same by group (at most `max_groups` of them).
    suppressed_groups: HashMap<Vec<String>, (u64, u64)>,
    /// Held back since the last [`Groups::take_suppressed`].
    newly_suppressed: u64,
}

/// The value at `path` of an event: the key as written (`code.filepath`),
/// else a dotted path into nested objects (the plugins' own lookup).
pub fn lookup<'a>(event: &'a Value, path: &str) -> Option<&'a Value> {
    sluice_common::get(event.as_object()?, path)
}

/// A value as text: a string as it is, `null` as nothing, others as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Groups {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            groups: HashMap::new(),
            window: None,
            suppressed: (0, 0),
            suppressed_groups: HashMap::new(),
            newly_suppressed: 0,
        }
    }

    /// Count one event into its group.
    pub fn observe(&mut self, event: &[u8], now: Instant) {
        let v: Value = serde_json::from_slice(event)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(event).into_owned()));
        let mut key: Vec<String> = self
            .limits
            .group_by
            .iter()
            .map(|f| key_value(lookup(&v, f).map(text).unwrap_or_default()))
            .collect();
        if !self.groups.contains_key(&key) && self.groups.len() >= self.limits.max_groups {
            key = vec!["other".to_string(); self.limits.group_by.len().max(1)];
        }
        let wall = Utc::now();
        let group_wait = self.limits.group_wait;
        let g = self.groups.entry(key).or_insert_with(|| Group {
            sample: Value::Null,
            pending: 0,
            first_seen: wall,
            last_seen: wall,
            due: now + group_wait,
            last_event: now,
            last_sent: None,
        });
        if g.pending == 0 {
            g.sample = bounded_sample(v);
            g.first_seen = wall;
        }
        g.pending += 1;
        g.last_seen = wall;
        g.last_event = now;
    }

    /// When something is next due: a group's notification, or the
    /// summary at the end of a window that suppressed some.
    pub fn next_wake(&self) -> Option<Instant> {
        let groups = self
            .groups
            .values()
            .filter(|g| g.pending > 0)
            .map(|g| g.due)
            .min();
        let summary = match self.window {
            Some((start, _)) if self.suppressed.0 > 0 => Some(start + MINUTE),
            _ => None,
        };
        match (groups, summary) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notifications held back by the limit since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.newly_suppressed)
    }

    /// The summary of a window that suppressed notifications, once it ended.
    fn roll_window(&mut self, now: Instant, out: &mut Vec<Notification>) {
        if let Some((start, _)) = self.window {
            if now >= start + MINUTE {
                self.summarize(out);
                self.window = None;
            }
        }
    }

    fn summarize(&mut self, out: &mut Vec<Notification>) {
        let (alerts, events) = std::mem::take(&mut self.suppressed);
        let mut groups: Vec<SuppressedGroup> = std::mem::take(&mut self.suppressed_groups)
            .into_iter()
            .map(|(key, (alerts, events))| SuppressedGroup {
                key: self.limits.group_by.iter().cloned().zip(key).collect(),
                alerts,
                events,
            })
            .collect();
        groups.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.key.cmp(&b.key)));
        let more = groups.len().saturating_sub(SUMMARY_GROUPS);
        groups.truncate(SUMMARY_GROUPS);
        if alerts > 0 {
            out.push(Notification::Suppressed {
                alerts,
                events,
                groups,
                more,
            });
        }
    }

    /// What is due at `now` (every group with events when `all`).
    fn take(&mut self, now: Instant, all: bool) -> Vec<Notification> {
        let mut out = Vec::new();
        self.roll_window(now, &mut out);
        let mut due: Vec<(Instant, Vec<String>)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.pending > 0 && (all || g.due <= now))
            .map(|(k, g)| (g.due, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            let allowed = match &mut self.window {
                Some((_, sent)) if *sent >= self.limits.max_per_minute => false,
                Some((_, sent)) => {
                    *sent += 1;
                    true
                }
                None => {
                    self.window = Some((now, 1));
                    true
                }
            };
            let g = self.groups.get_mut(&key).expect("key taken from the map");
            let count = std::mem::take(&mut g.pending);
            g.due = now + self.limits.repeat_interval;
            g.last_sent = Some(now);
            if allowed {
                out.push(Notification::Group {
                    key: self
                        .limits
                        .group_by
                        .iter()
                        .cloned()
                        .zip(key.iter().cloned())
                        .collect(),
                    sample: std::mem::take(&mut g.sample),
                    count,
                    first_seen: g.first_seen,
                    last_seen: g.last_seen,
                });
            } else {
                self.suppressed.0 += 1;
                self.suppressed.1 += count;
                self.newly_suppressed += 1;
                let room = self.suppressed_groups.len() < self.limits.max_groups;
                if room || self.suppressed_groups.contains_key(&key) {
                    let (a, e) = self.suppressed_groups.entry(key.clone()).or_default();
                    *a += 1;
                    *e += count;
                }
            }
        }
        // Groups quiet for a repeat interval are forgotten.
        let repeat = self.limits.repeat_interval;
        self.groups.retain(|_, g| {
            g.pending > 0 || now < g.last_event.max(g.last_sent.unwrap_or(g.last_event)) + repeat
        });
        out
    }

    /// The notifications due at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Notification> {
        self.take(now, false)
    }

    /// Everything still waiting (the sink is stopping): every group with
    /// events, within the limit, then the summary of what it held back.
    pub fn flush(&mut self, now: Instant) -> Vec<Notification> {
        let mut out = self.take(now, true);
        self.summarize(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32) -> Limits {
        Limits {
            group_by: vec!["service".into(), "message".into()],
            group_wait: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(600),
            max_per_minute: per_minute,
            max_groups: 100,
        }
    }

    fn counts(n: &[Notification]) -> Vec<u64> {
        n.iter()
            .map(|n| match n {
                Notification::Group { count, .. } => *count,
                Notification::Suppressed { alerts, .. } => 1_000_000 + alerts,
            })
            .collect()
    }

    #[test]
    fn a_burst_is_one_notification_with_its_count_then_one_per_repeat() {
        let t0 = Instant::now();
        let mut g = Groups::new(limits(10));
        for _ in 0..10_000 {
            g.observe(br#"{"service":"api","message":"boom","level":"error"}"#, t0);
        }
        assert!(g.due(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(g.next_wake(), Some(t0 + Duration::from_secs(30)));
        let sent = g.due(t0 + Duration::from_secs(30));
        assert_eq!(counts(&sent), [10_000]);
        let Notification::Group { key, sample, .. } = &sent[0] else {
            panic!()
        };
        assert_eq!(key[0], ("service".to_string(), "api".to_string()));
        assert_eq!(sample["level"], "error");
        // More of the same: held until the repeat interval is over.
        g.observe(
            br#"{"service":"api","message":"boom"}"#,
            t0 + Duration::from_secs(40),
        );
        g.observe(
            br#"{"service":"api","message":"boom"}"#,
            t0 + Duration::from_secs(50),
        );
        assert!(g.due(t0 + Duration::from_secs(600)).is_empty());
        assert_eq!(counts(&g.due(t0 + Duration::from_secs(630))), [2]);
        // Quiet for a repeat interval: forgotten, and a new event waits
        // group_wait again.
        assert!(g.due(t0 + Duration::from_secs(1231)).is_empty());
        assert!(g.groups.is_empty());
        let t1 = t0 + Duration::from_secs(2000);
        g.observe(br#"{"service":"api","message":"boom"}"#, t1);
        assert!(g.due(t1 + Duration::from_secs(1)).is_empty());
        assert_eq!(counts(&g.due(t1 + Duration::from_secs(30))), [1]);
    }

    #[test]
    fn the_rate_limit_holds_and_a_summary_follows_the_minute() {
        let t0 = Instant::now();
        let mut g = Groups::new(limits(5));
        for i in 0..50 {
            let e = format!(r#"{{"service":"api","message":"error {i}"}}"#);
            g.observe(e.as_bytes(), t0);
            g.observe(e.as_bytes(), t0);
        }
        // The most frequent group comes last, among the suppressed.
        for _ in 0..30 {
            g.observe(br#"{"service":"api","message":"zone b disk full"}"#, t0);
        }
        let sent = g.due(t0 + Duration::from_secs(30));
        assert_eq!(counts(&sent), [2; 5]);
        assert_eq!(g.take_suppressed(), 46);
        assert_eq!(g.next_wake(), Some(t0 + Duration::from_secs(90)));
        let later = g.due(t0 + Duration::from_secs(90));
        let [Notification::Suppressed {
            alerts,
            events,
            groups,
            more,
        }] = &later[..]
        else {
            panic!("{later:?}")
        };
        assert_eq!((*alerts, *events), (46, 120));
        // Named, the most events first, bounded.
        assert_eq!(groups.len(), SUMMARY_GROUPS);
        assert_eq!(*more, 46 - SUMMARY_GROUPS);
        assert_eq!(
            groups[0].key,
            [
                ("service".to_string(), "api".to_string()),
                ("message".to_string(), "zone b disk full".to_string())
            ]
        );
        assert_eq!((groups[0].alerts, groups[0].events), (1, 30));
        assert_eq!(groups[1].events, 2);
        assert_eq!(g.next_wake(), None);
    }

    #[test]
    fn groups_past_the_cap_share_one_and_flush_sends_what_waits() {
        let t0 = Instant::now();
        let mut g = Groups::new(Limits {
            max_groups: 2,
            ..limits(100)
        });
        for i in 0..5 {
            g.observe(format!(r#"{{"service":"s{i}"}}"#).as_bytes(), t0);
        }
        let mut sent = counts(&g.flush(t0));
        sent.sort();
        assert_eq!(sent, [1, 1, 3]);
    }

    /// What the groups hold: keys and samples, in bytes.
    fn held(g: &Groups) -> usize {
        g.groups
            .iter()
            .map(|(k, v)| k.iter().map(String::len).sum::<usize>() + v.sample.to_string().len())
            .sum()
    }

    /// #36: 2,000 distinct 1 MiB messages grouped by message left 4.2 GB
    /// held after delivery. Keys and samples are bounded, long values still
    /// tell groups apart, and delivered groups keep no sample.
    #[test]
    fn huge_distinct_messages_are_held_in_bounded_memory() {
        let t0 = Instant::now();
        let mut g = Groups::new(Limits {
            group_by: vec!["message".into()],
            max_groups: 10_000,
            ..limits(100_000)
        });
        let big = "m".repeat(1 << 20);
        for i in 0..2000 {
            let e = serde_json::json!({"message": format!("{big}{i}"), "level": "error", "note": "x".repeat(100_000)});
            g.observe(e.to_string().as_bytes(), t0);
        }
        assert_eq!(g.groups.len(), 2000, "distinct values stay distinct groups");
        let limit = 2000 * (MAX_KEY_VALUE + 40 + MAX_SAMPLE_BYTES + 100);
        assert!(held(&g) < limit, "{} bytes held", held(&g));
        let sent = g.due(t0 + Duration::from_secs(30));
        assert_eq!(sent.len(), 2000);
        let Notification::Group { sample, key, .. } = &sent[0] else {
            panic!()
        };
        assert!(sample["message"].as_str().unwrap().contains("bytes cut)"));
        assert_eq!(sample["level"], "error");
        assert!(key[0].1.len() < MAX_KEY_VALUE + 40);
        assert!(
            held(&g) < 2000 * (MAX_KEY_VALUE + 60),
            "after delivery: {}",
            held(&g)
        );
    }

    #[test]
    fn dotted_paths_and_flat_dotted_keys() {
        let v: Value = serde_json::from_str(r#"{"a":{"b":1},"code.line":7}"#).unwrap();
        assert_eq!(lookup(&v, "a.b"), Some(&Value::from(1)));
        assert_eq!(lookup(&v, "code.line"), Some(&Value::from(7)));
        assert_eq!(lookup(&v, "a.c"), None);
    }
}
