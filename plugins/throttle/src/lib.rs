//! `throttle`: at most `events` events and `bytes` bytes per key in each
//! `window`; what is over goes where `exceeded` says.
//!
//! ```toml
//! [transforms.limit]
//! plugin = "throttle"
//! inputs = ["app"]
//! config = { key = ["service", "tenant"],   # dotted fields; none: one key for all
//!            events = 1000,                 # per key per window (optional)
//!            bytes = "1MiB",                # per key per window (optional)
//!            window = "1s",
//!            exceeded = "drop",             # or "route:over" (an output, `limit.over`),
//!                                           # or "dead_letter" (with the reason)
//!            max_keys = 100000 }            # least recently used keys forgotten beyond
//! ```
//!
//! **Windows.** Fixed windows per key: a key's window opens at its first
//! event and lasts `window`; the first event after it opens the next one.
//! An event passes when both limits allow it (`events` counted, `bytes` the
//! event's JSON size), and only passed events count. Not a token bucket: a
//! bucket of `events` refilled at `events` per `window` lets up to twice
//! `events` through in one window (the full bucket, then its refill), while
//! a fixed window passes at most the limit in each, which is what a quota
//! or Loki's per-stream limits mean, at the cost of one (start, events,
//! bytes) per key.
//!
//! **Time.** The instance's monotonic clock (`wasi:clocks`), read once per
//! batch: every event of a batch is in the same instant.
//!
//! **State.** Kept in the one instance the host runs (`throttle` ignores
//! `concurrency`): a pipeline reload that leaves this transform's config as
//! it was keeps the windows; a changed config or a new sluice version
//! starts with empty ones, as does an instance replaced after a trap. A key
//! forgotten beyond `max_keys` (the least recently seen) opens a new window
//! when it comes back; forgotten keys are counted (the host's `count`:
//! `evicted_keys` on `/metrics`, once per batch) and logged.

use std::cell::RefCell;

use hashlink::LruCache;
use serde::Deserialize;
use sluice_plugin::{export_plugin, log, Config, Event, LogLevel, Plugin, Verdict};

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ThrottleConfig {
    /// The fields (dotted) whose values make a key; none: one key for
    /// every event.
    #[serde(default)]
    key: Vec<String>,
    /// Events per key per window.
    #[serde(default)]
    events: Option<u64>,
    /// Bytes (the events' JSON size) per key per window: a number or
    /// `"1MiB"`.
    #[serde(default)]
    bytes: Option<Size>,
    /// The window: `"1s"`, `"1m"`.
    window: String,
    /// What happens past the limit: `drop`, `dead_letter` (with the
    /// reason) or `route:NAME` (a sink reads `TRANSFORM.NAME`).
    #[serde(default = "default_exceeded")]
    exceeded: String,
    /// Keys remembered; the least recently seen are forgotten beyond it.
    #[serde(default = "default_max_keys")]
    max_keys: usize,
}

fn default_exceeded() -> String {
    "drop".into()
}
fn default_max_keys() -> usize {
    100_000
}

/// `1048576` or `"1MiB"`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
enum Size {
    N(u64),
    S(String),
}

/// One key's window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    events: u64,
    bytes: u64,
}

/// The most keys `max_keys` may ask for.
const MAX_KEYS: usize = 10_000_000;

/// Limits per key, and the windows.
#[derive(Debug)]
pub struct Throttle {
    key: Vec<String>,
    events: u64,
    bytes: u64,
    window: u64,
    route: bool,
    /// `exceeded = "dead_letter"`: the reason every refused event carries.
    dead_letter: Option<String>,
    /// `[NAME]` of `exceeded = "route:NAME"`.
    outputs: Vec<String>,
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    windows: LruCache<Vec<u8>, Window>,
    /// Keys forgotten to stay within `max_keys`.
    evicted: u64,
    /// `evicted` as last given to the host's `evicted_keys` counter.
    reported: u64,
    /// The clock for the batch being processed (ns).
    now: u64,
    /// A reusable buffer for the key.
    key: Vec<u8>,
}

impl Throttle {
    /// Whether an event of `size` bytes under `key` passes at `now` (ns).
    fn admit(&self, state: &mut State, now: u64, size: u64) -> bool {
        let State {
            windows,
            key,
            evicted,
            ..
        } = state;
        let window = match windows.get_mut(key.as_slice()) {
            Some(w) => w,
            None => {
                if windows.len() >= windows.capacity() {
                    windows.remove_lru();
                    *evicted += 1;
                    if evicted.is_power_of_two() {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "{evicted} keys forgotten to stay within max_keys = {}: a forgotten key opens a new window when it comes back",
                                windows.capacity()
                            ),
                        );
                    }
                }
                windows.insert(
                    key.clone(),
                    Window {
                        start: now,
                        events: 0,
                        bytes: 0,
                    },
                );
                match windows.get_mut(key.as_slice()) {
                    Some(w) => w,
                    None => return true,
                }
            }
        };
        if now.saturating_sub(window.start) >= self.window {
            *window = Window {
                start: now,
                events: 0,
                bytes: 0,
            };
        }
        let events = window.events.saturating_add(1);
        let bytes = window.bytes.saturating_add(size);
        if events > self.events || bytes > self.bytes {
            return false;
        }
        window.events = events;
        window.bytes = bytes;
        true
    }

    /// The verdict for one event at `now` (ns): what `process` does with
    /// the batch's clock.
    pub fn decide(&self, event: &Event<'_>, now: u64) -> Verdict {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Verdict::Keep;
        };
        let mut key = std::mem::take(&mut state.key);
        event.key_into(&self.key, &mut key);
        state.key = key;
        if self.admit(&mut state, now, event.raw().len() as u64) {
            Verdict::Keep
        } else if self.route {
            Verdict::Route(1)
        } else if let Some(reason) = &self.dead_letter {
            Verdict::Fail(reason.clone())
        } else {
            Verdict::Drop
        }
    }

    /// Keys forgotten so far to stay within `max_keys`.
    pub fn evicted(&self) -> u64 {
        self.state.try_borrow().map_or(0, |s| s.evicted)
    }
}

impl Plugin for Throttle {
    fn init(config: Config) -> Result<Self, String> {
        let c: ThrottleConfig = config.parse()?;
        if c.events.is_none() && c.bytes.is_none() {
            return Err("give `events`, `bytes` or both: the limits per key per window".into());
        }
        if c.events == Some(0) {
            return Err("events: 0 would pass nothing; give at least 1".into());
        }
        let bytes = match c.bytes {
            None => u64::MAX,
            Some(Size::N(n)) => n,
            Some(Size::S(s)) => sluice_common::units::size(&s)
                .map(|n| n as u64)
                .map_err(|e| format!("bytes: {e}"))?,
        };
        if bytes == 0 {
            return Err("bytes: 0 would pass nothing".into());
        }
        let window =
            sluice_common::units::duration_ns(&c.window).map_err(|e| format!("window: {e}"))?;
        if window == 0 {
            return Err("window: give a positive duration such as 1s".into());
        }
        if c.max_keys == 0 || c.max_keys > MAX_KEYS {
            return Err(format!(
                "max_keys: {} is out of bounds: between 1 and {MAX_KEYS}",
                c.max_keys
            ));
        }
        let dead_letter = (c.exceeded == "dead_letter").then(|| {
            let mut limits = Vec::new();
            if let Some(n) = c.events {
                limits.push(format!("{n} events"));
            }
            if bytes != u64::MAX {
                limits.push(format!("{bytes} bytes"));
            }
            format!(
                "throttled: over {} per {} for its key",
                limits.join(" and "),
                c.window
            )
        });
        let route = match c.exceeded.as_str() {
            "drop" | "dead_letter" => None,
            other => match other.strip_prefix("route:") {
                Some(name) if !name.is_empty() && !name.contains('.') && name != "default" => {
                    Some(name.to_string())
                }
                _ => {
                    return Err(format!(
                    "exceeded: `{other}`: write drop, dead_letter or route:NAME (an output of this transform)"
                ))
                }
            },
        };
        if c.key.iter().any(String::is_empty) {
            return Err("key: an empty field name".into());
        }
        let outputs: Vec<String> = route.into_iter().collect();
        Ok(Throttle {
            key: c.key,
            events: c.events.unwrap_or(u64::MAX),
            bytes,
            window,
            route: !outputs.is_empty(),
            dead_letter,
            state: RefCell::new(State {
                windows: LruCache::new(c.max_keys),
                evicted: 0,
                reported: 0,
                now: 0,
                key: Vec::new(),
            }),
            outputs,
        })
    }

    fn outputs(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn version(&self) -> String {
        concat!("throttle ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        let now = self.state.try_borrow().map_or(0, |s| s.now);
        self.decide(event, now)
    }

    fn begin_batch(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.now = sluice_plugin::clock_ns();
        }
    }

    /// What this batch forgot, on the host's `/metrics`
    /// (`sluice_plugin_count_total{name="evicted_keys"}`).
    fn end_batch(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            let s = &mut *s;
            sluice_plugin::count_growth("evicted_keys", s.evicted, &mut s.reported);
        }
    }
}

export_plugin!(Throttle);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::ThrottleConfig>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;
    use std::collections::HashMap;

    fn throttle(config: &str) -> Throttle {
        Throttle::init(Config::new(config)).unwrap()
    }

    fn error(config: &str) -> String {
        Throttle::init(Config::new(config)).unwrap_err()
    }

    #[test]
    fn dead_letter_gives_each_refused_event_its_reason() {
        let t = throttle(r#"{"events":1,"bytes":"1KiB","window":"1s","exceeded":"dead_letter"}"#);
        let e = br#"{"m":1}"#;
        assert!(matches!(t.decide(&Event::new(e), 1), Verdict::Keep));
        match t.decide(&Event::new(e), 2) {
            Verdict::Fail(reason) => assert_eq!(
                reason,
                "throttled: over 1 events and 1024 bytes per 1s for its key"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        assert!(error(r#"{"window":"1s"}"#).contains("give `events`, `bytes`"));
        assert!(error(r#"{"events":10,"window":"1 fortnight"}"#).starts_with("window:"));
        assert!(error(r#"{"events":10,"window":"1s","bytes":"1 parsec"}"#).starts_with("bytes:"));
        assert!(
            error(r#"{"events":10,"window":"1s","exceeded":"route:"}"#).starts_with("exceeded:")
        );
        assert!(error(r#"{"events":10,"window":"1s","max_keys":0}"#).starts_with("max_keys:"));
        assert!(error(r#"{"events":10,"window":"1s","kee":["a"]}"#).contains("unknown field `kee`"));
        let t = throttle(r#"{"events":10,"window":"1s","exceeded":"route:over"}"#);
        assert_eq!(t.outputs(), ["over"]);
    }

    #[test]
    fn per_key_windows_open_at_the_first_event() {
        let t = throttle(r#"{"key":["service"],"events":2,"window":"1s","exceeded":"route:over"}"#);
        let a = br#"{"service":"a"}"#;
        let b = br#"{"service":"b"}"#;
        let verdicts =
            |at: u64, raw: &[u8]| matches!(t.decide(&Event::new(raw), at), Verdict::Keep);
        let s = 1_000_000_000;
        assert!(verdicts(0, a) && verdicts(1, a));
        assert!(!verdicts(2, a), "a third in the window");
        assert!(
            verdicts(3, b) && verdicts(4, b),
            "another key has its own window"
        );
        assert!(!verdicts(s - 1, a), "still a's first window");
        assert!(verdicts(s, a), "a's next window");
        assert!(matches!(t.decide(&Event::new(a), s + 1), Verdict::Keep));
        assert!(matches!(t.decide(&Event::new(a), s + 2), Verdict::Route(1)));
        // Absent key fields are one key: `null`.
        let t = throttle(r#"{"key":["tenant","data.user"],"events":1,"window":"1s"}"#);
        assert!(verdicts_of(&t, br#"{"x":1}"#));
        assert!(!verdicts_of(&t, br#"{"y":2}"#));
        assert!(verdicts_of(&t, br#"{"tenant":"t","data":{"user":7}}"#));
        assert!(verdicts_of(&t, br#"{"tenant":"t","data":{"user":8}}"#));
    }

    fn verdicts_of(t: &Throttle, raw: &[u8]) -> bool {
        matches!(t.decide(&Event::new(raw), 0), Verdict::Keep)
    }

    /// xorshift64*: a fixed sequence, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Zipf-distributed keys (100,000 of them, s = 1.1) and events of
    /// 100 B to 10 KB over four windows: in every key's every window the
    /// passed events and bytes are within the limits, and a refused event
    /// is refused only because passing it would have gone over one (the
    /// limits are reached exactly, to the event). With `max_keys` below the
    /// number of keys, the table stays within it and counts what it forgot.
    #[test]
    fn zipf_keys_are_held_to_their_limits_per_window() {
        const KEYS: usize = 100_000;
        const EVENTS: usize = 200_000;
        const WINDOW: u64 = 1_000_000_000;
        let (events_limit, bytes_limit) = (40u64, 64u64 * 1024);
        let mut cdf = Vec::with_capacity(KEYS);
        let mut total = 0.0;
        for k in 1..=KEYS {
            total += 1.0 / (k as f64).powf(1.1);
            cdf.push(total);
        }
        let t = throttle(&format!(
            r#"{{"key":["service"],"events":{events_limit},"bytes":{bytes_limit},"window":"1s","max_keys":{KEYS}}}"#
        ));
        // The test's own account: (window start, passed events, passed
        // bytes, whether one was refused) per key.
        let mut windows: HashMap<usize, (u64, u64, u64, bool)> = HashMap::new();
        let mut checked = 0;
        let mut check = |w: &(u64, u64, u64, bool)| {
            assert!(w.1 <= events_limit && w.2 <= bytes_limit, "{w:?}");
            checked += 1;
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let filler = "x".repeat(10_000);
        let mut refused = 0;
        for i in 0..EVENTS {
            let u = rng.unit() * total;
            let k = cdf.partition_point(|&c| c < u).min(KEYS - 1);
            let size = 100 + (rng.next() % 9_900) as usize;
            let head = format!(r#"{{"service":"s{k}","message":""#);
            let pad = size.saturating_sub(head.len() + 2);
            let raw = format!("{head}{}\"}}", &filler[..pad]);
            let now = i as u64 * (4 * WINDOW) / EVENTS as u64;
            let passed = matches!(t.decide(&Event::new(raw.as_bytes()), now), Verdict::Keep);
            let w = windows.entry(k).or_insert((now, 0, 0, false));
            if now - w.0 >= WINDOW {
                check(w);
                *w = (now, 0, 0, false);
            }
            let size = raw.len() as u64;
            if passed {
                w.1 += 1;
                w.2 += size;
            } else {
                refused += 1;
                assert!(
                    w.1 + 1 > events_limit || w.2 + size > bytes_limit,
                    "key s{k} refused below its limits: {w:?}, an event of {size} bytes"
                );
            }
        }
        windows.values().for_each(&mut check);
        assert!(refused > EVENTS / 10, "the hot keys went over: {refused}");
        assert!(checked > 20_000, "windows checked: {checked}");
        assert_eq!(t.evicted(), 0);

        // Fewer keys remembered than there are: bounded, evictions counted.
        let t = throttle(r#"{"key":["service"],"events":5,"window":"1s","max_keys":1000}"#);
        for k in 0..5_000 {
            let raw = format!(r#"{{"service":"s{k}"}}"#);
            t.decide(&Event::new(raw.as_bytes()), 0);
        }
        assert_eq!(t.state.borrow().windows.len(), 1000);
        assert_eq!(t.evicted(), 4_000);
    }
}
