//! `dedup`: an event that repeats one seen within `window` is dropped; the
//! first of each window passes, optionally with the count of the repeats
//! the previous window dropped.
//!
//! ```toml
//! [transforms.once]
//! plugin = "dedup"
//! inputs = ["app"]
//! config = { fields = ["service", "message"],  # or none: every field but `timestamp`
//!            window = "10s",
//!            emit = "first_with_count",         # or "first"
//!            count_field = "repeats",
//!            max_entries = 100000 }
//! ```
//!
//! **Windows.** Per repeated value, fixed: a window opens at the value's
//! first event and lasts `window`; repeats within it are dropped and
//! counted. The first event after it passes and opens the next window.
//!
//! **The count.** A plugin answers each event with a verdict and makes no
//! events of its own, so the count of a window's repeats is not a new
//! event at its close: with `first_with_count` it rides on the value's
//! next first event, as `count_field` (the repeats dropped in the window
//! before; absent when there were none). A value that never comes back
//! keeps its count to itself: the count is for "this line repeated N times
//! since it was last shown", not for totals (use metrics for those).
//!
//! **Memory.** Values are remembered by a 128-bit hash of their fields
//! (not the fields), at most `max_entries` of them; the least recently
//! seen are forgotten beyond, and a forgotten value passes again when it
//! comes back. Forgotten values are counted (the host's `count`:
//! `forgotten_values` on `/metrics`, once per batch) and logged. State lasts as
//! `throttle`'s does: one instance, kept across reloads that leave the
//! config as it was.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};

use hashlink::LruCache;
use serde::Deserialize;
use sluice_plugin::{export_plugin, log, Config, Event, LogLevel, Plugin, Verdict};

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct DedupConfig {
    /// What makes a repeat: these fields (dotted); none: every field but
    /// `timestamp`.
    #[serde(default)]
    fields: Vec<String>,
    /// How long a value is remembered: `"10s"`.
    window: String,
    /// What passes of a window.
    #[serde(default)]
    emit: Emit,
    /// With `first_with_count`: the field the count goes in.
    #[serde(default = "default_count_field")]
    count_field: String,
    /// Values remembered; the least recently seen are forgotten beyond it.
    #[serde(default = "default_max_entries")]
    max_entries: usize,
}

fn default_count_field() -> String {
    "repeats".into()
}
fn default_max_entries() -> usize {
    100_000
}

/// What passes of a window.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
enum Emit {
    /// The first event, as it is.
    #[default]
    First,
    /// The first event, with the count of the previous window's repeats.
    FirstWithCount,
}

/// The most entries `max_entries` may ask for.
const MAX_ENTRIES: usize = 10_000_000;

/// One value's window.
#[derive(Debug, Clone, Copy)]
struct Seen {
    start: u64,
    repeats: u64,
}

/// Drops repeats within a window.
#[derive(Debug)]
pub struct Dedup {
    fields: Vec<String>,
    window: u64,
    emit: Emit,
    count_field: String,
    state: RefCell<State>,
}

#[derive(Debug)]
struct State {
    seen: LruCache<u128, Seen>,
    forgotten: u64,
    /// `forgotten` as last given to the host's `forgotten_values` counter.
    reported: u64,
    now: u64,
    key: Vec<u8>,
}

/// A 128-bit hash of `bytes`: two runs of the standard hasher (the same
/// keys for every instance of a process), salted apart.
fn hash128(bytes: &[u8]) -> u128 {
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        bytes.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

impl Dedup {
    /// What identifies a repeat: the `fields`, or every field but
    /// `timestamp` (names and raw values, in order).
    fn key_of(&self, event: &Event<'_>, out: &mut Vec<u8>) {
        if !self.fields.is_empty() {
            event.key_into(&self.fields, out);
            return;
        }
        out.clear();
        for (name, raw) in event.raw_fields() {
            if name != "timestamp" {
                out.extend_from_slice(name.as_bytes());
                out.push(0x1e);
                out.extend_from_slice(raw.as_bytes());
                out.push(0x1f);
            }
        }
    }

    /// The verdict for one event at `now` (ns).
    pub fn decide(&self, event: &Event<'_>, now: u64) -> Verdict {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Verdict::Keep;
        };
        let mut key = std::mem::take(&mut state.key);
        self.key_of(event, &mut key);
        let id = hash128(&key);
        state.key = key;
        let State {
            seen, forgotten, ..
        } = &mut *state;
        if let Some(s) = seen.get_mut(&id) {
            if now.saturating_sub(s.start) < self.window {
                s.repeats = s.repeats.saturating_add(1);
                return Verdict::Drop;
            }
            let repeats = s.repeats;
            *s = Seen {
                start: now,
                repeats: 0,
            };
            if self.emit == Emit::FirstWithCount && repeats > 0 {
                return Verdict::Replace(event.edit().set(&self.count_field, repeats).to_bytes());
            }
            return Verdict::Keep;
        }
        if seen.len() >= seen.capacity() {
            seen.remove_lru();
            *forgotten += 1;
            if forgotten.is_power_of_two() {
                log(
                    LogLevel::Warn,
                    &format!(
                        "{forgotten} values forgotten to stay within max_entries = {}: a forgotten value passes again when it comes back",
                        seen.capacity()
                    ),
                );
            }
        }
        seen.insert(
            id,
            Seen {
                start: now,
                repeats: 0,
            },
        );
        Verdict::Keep
    }

    /// Values forgotten so far to stay within `max_entries`.
    pub fn forgotten(&self) -> u64 {
        self.state.try_borrow().map_or(0, |s| s.forgotten)
    }
}

impl Plugin for Dedup {
    fn init(config: Config) -> Result<Self, String> {
        let c: DedupConfig = config.parse()?;
        let window =
            sluice_common::units::duration_ns(&c.window).map_err(|e| format!("window: {e}"))?;
        if window == 0 {
            return Err("window: give a positive duration such as 10s".into());
        }
        if c.max_entries == 0 || c.max_entries > MAX_ENTRIES {
            return Err(format!(
                "max_entries: {} is out of bounds: between 1 and {MAX_ENTRIES}",
                c.max_entries
            ));
        }
        if c.fields.iter().any(String::is_empty) {
            return Err("fields: an empty field name".into());
        }
        if c.count_field.is_empty() {
            return Err("count_field: give a field name".into());
        }
        Ok(Dedup {
            fields: c.fields,
            window,
            emit: c.emit,
            count_field: c.count_field,
            state: RefCell::new(State {
                seen: LruCache::new(c.max_entries),
                forgotten: 0,
                reported: 0,
                now: 0,
                key: Vec::new(),
            }),
        })
    }

    fn version(&self) -> String {
        concat!("dedup ", env!("CARGO_PKG_VERSION")).to_string()
    }

    fn begin_batch(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            s.now = sluice_plugin::clock_ns();
        }
    }

    /// What this batch forgot, on the host's `/metrics`
    /// (`sluice_plugin_count_total{name="forgotten_values"}`).
    fn end_batch(&self) {
        if let Ok(mut s) = self.state.try_borrow_mut() {
            let s = &mut *s;
            sluice_plugin::count_growth("forgotten_values", s.forgotten, &mut s.reported);
        }
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        let now = self.state.try_borrow().map_or(0, |s| s.now);
        self.decide(event, now)
    }
}

export_plugin!(Dedup);

// The config schema `sluice schema` and editors check `config` against.
sluice_plugin::config_schema!("../config.schema.json");

#[cfg(test)]
mod tests {
    /// config.schema.json, which the component ships, is the config
    /// type's schema (`SLUICE_BLESS=1` rewrites it).
    #[test]
    fn config_schema_is_current() {
        sluice_plugin::schema::check::<super::DedupConfig>(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config.schema.json"
        ));
    }

    use super::*;

    fn dedup(config: &str) -> Dedup {
        Dedup::init(Config::new(config)).unwrap()
    }

    /// (kept, replaced bytes) of one event at `now`.
    fn verdict(d: &Dedup, raw: &str, now: u64) -> (bool, Option<String>) {
        match d.decide(&Event::new(raw.as_bytes()), now) {
            Verdict::Keep => (true, None),
            Verdict::Drop => (false, None),
            Verdict::Replace(b) => (true, Some(String::from_utf8(b).unwrap())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = |c: &str| Dedup::init(Config::new(c)).unwrap_err();
        assert!(e(r#"{}"#).contains("missing field `window`"));
        assert!(e(r#"{"window":"soon"}"#).starts_with("window:"));
        assert!(e(r#"{"window":"1s","emit":"last"}"#).contains("unknown variant `last`"));
        assert!(e(r#"{"window":"1s","max_entries":0}"#).starts_with("max_entries:"));
    }

    /// Repeats within and across windows: counts right, and the count
    /// rides on the next first event.
    #[test]
    fn repeats_within_and_across_windows() {
        let d = dedup(r#"{"fields":["message"],"window":"10s","emit":"first_with_count"}"#);
        let s = 1_000_000_000u64;
        let disk = |t: &str| format!(r#"{{"timestamp":"{t}","message":"disk full"}}"#);
        assert_eq!(verdict(&d, &disk("0"), 0), (true, None));
        for i in 1..=4 {
            assert_eq!(verdict(&d, &disk(&i.to_string()), i * s), (false, None));
        }
        // Another message has its own window.
        assert_eq!(verdict(&d, r#"{"message":"ok"}"#, 5 * s), (true, None));
        // The next window: passes, carrying the 4 repeats of the last one.
        let (kept, with) = verdict(&d, &disk("10"), 10 * s);
        assert!(kept);
        assert_eq!(
            with.as_deref(),
            Some(r#"{"timestamp":"10","message":"disk full","repeats":4}"#)
        );
        assert_eq!(verdict(&d, &disk("11"), 11 * s), (false, None));
        // A window without repeats: the next first event comes as it is.
        assert_eq!(verdict(&d, r#"{"message":"ok"}"#, 16 * s), (true, None));

        // No fields: the whole event but `timestamp`.
        let d = dedup(r#"{"window":"10s"}"#);
        assert!(verdict(&d, r#"{"timestamp":1,"a":1,"b":"x"}"#, 0).0);
        assert!(!verdict(&d, r#"{"timestamp":2,"a":1,"b":"x"}"#, 1).0);
        assert!(verdict(&d, r#"{"timestamp":3,"a":1,"b":"y"}"#, 2).0);
        assert!(verdict(&d, r#"{"timestamp":4,"a":1}"#, 3).0);
    }

    #[test]
    fn memory_is_bounded_and_forgetting_is_counted() {
        let d = dedup(r#"{"fields":["n"],"window":"1h","max_entries":100}"#);
        for n in 0..1000 {
            assert!(verdict(&d, &format!(r#"{{"n":{n}}}"#), 0).0);
        }
        assert_eq!(d.state.borrow().seen.len(), 100);
        assert_eq!(d.forgotten(), 900);
        // The most recent are remembered; the first were forgotten.
        assert!(!verdict(&d, r#"{"n":999}"#, 1).0);
        assert!(verdict(&d, r#"{"n":0}"#, 1).0);
    }
}
