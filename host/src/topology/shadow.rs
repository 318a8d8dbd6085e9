//! Shadow runs: a new version of a transform's plugin beside the live one,
//! on the same batches, compared event by event; only the live version's
//! output is used.
//!
//! The live workers hand a copy of each sampled batch (without its
//! acknowledgements, so a slow shadow never holds a source's ack) and what
//! the live version made of each event to a queue of a few batches. One
//! thread of its own, at the lowest CPU priority (`SCHED_IDLE`), runs the shadow
//! instance with its own store and limits: its traps, loops and memory stay
//! its own, and when it falls behind the queue is full and batches are
//! skipped and counted. `promote` hands the shadow's plugin to the stage's
//! swap channel (the lossless hot reload); `stop`, the duration, or a
//! pipeline reload end it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_common::action;

use crate::base::event::{check_object, Batch};
use crate::delivery::ErrorKind;
use crate::plugin::bindings::Verdicts;
use crate::plugin::{plugin_reason, verdicts, CallError, LoadedPlugin};

/// Batches waiting for the shadow at most; more are skipped.
const QUEUE: usize = 16;
/// Differing events kept for `status` (the newest).
const SAMPLES: usize = 20;

pub use crate::base::metrics::{ShadowTotals, SHADOW_OUTCOMES as OUTCOMES};

/// What one version made of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    Dropped,
    /// Sent on `port` (0 is the default output), unchanged (`None`) or
    /// replaced by these bytes.
    Out {
        port: u16,
        bytes: Option<Vec<u8>>,
    },
    Failed(String),
}

/// One event's verdict as a `Fate`, from a plugin's packed verdicts. A
/// replacement that is not a JSON object fails (unless `trusted`).
pub fn fates(v: &Verdicts, events: usize, trusted: bool, out: &mut Vec<Fate>) {
    for (action, port, entry) in verdicts(v).take(events) {
        out.push(match action {
            action::DROP => Fate::Dropped,
            action::KEEP => Fate::Out { port, bytes: None },
            action::FAIL => Fate::Failed(format!(
                "{}: {}",
                ErrorKind::PluginError.as_str(),
                plugin_reason(entry)
            )),
            _ => match (trusted, check_object(entry)) {
                (false, Err(e)) => Fate::Failed(format!(
                    "the plugin replaced the event with invalid JSON: {e}"
                )),
                _ => Fate::Out {
                    port,
                    bytes: Some(entry.to_vec()),
                },
            },
        });
    }
}

/// A sampled batch for the shadow: the events and the live fates.
struct Job {
    batch: Batch,
    live: Vec<Fate>,
    live_nanos: u64,
}

/// What `start` needs besides the plugin.
pub struct ShadowSpec {
    pub transform: String,
    /// Share of batches compared, 0 < sample <= 1.
    pub sample: f64,
    pub duration: Option<Duration>,
    /// The live plugin masks: its output may be shown, its input and the
    /// shadow's values may not (they may hold what the live version hid).
    pub masks: bool,
    /// The transform feeds a mask: no value it sees may be shown.
    pub hide_values: bool,
    /// Where its per-transform counters are added up for `/metrics`.
    pub totals: Arc<ShadowTotals>,
    /// The shadow's own limits where they differ from the transform's.
    pub memory_mib: Option<u64>,
    pub time_budget: Option<Duration>,
}

#[derive(Default)]
struct Stats {
    batches: u64,
    events: u64,
    counts: [u64; 5],
    /// Batches the shadow did not see: the queue was full, or it was
    /// starved of CPU past its time budget.
    skipped_batches: u64,
    skipped_events: u64,
    live_nanos: u64,
    shadow_nanos: u64,
    samples: VecDeque<Value>,
    ended: Option<String>,
}

/// A running (or ended) shadow of one transform.
pub struct Shadow {
    spec: ShadowSpec,
    source: String,
    version: String,
    started: Instant,
    started_at: String,
    active: AtomicBool,
    queued: Arc<AtomicUsize>,
    offered: AtomicU64,
    sender: Mutex<Option<std::sync::mpsc::SyncSender<Job>>>,
    stats: Mutex<Stats>,
    /// A detached copy of the shadow's plugin, for `promote`.
    seed: Mutex<LoadedPlugin>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shadow {
    /// Start the shadow's thread with `plugin` (loaded and `init`ed).
    pub fn start(spec: ShadowSpec, plugin: LoadedPlugin) -> Arc<Shadow> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let shadow = Arc::new(Shadow {
            source: plugin.source().to_string(),
            version: plugin.version(),
            seed: Mutex::new(plugin.detached()),
            started: Instant::now(),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            active: AtomicBool::new(true),
            queued: Arc::new(AtomicUsize::new(0)),
            offered: AtomicU64::new(0),
            sender: Mutex::new(Some(tx)),
            stats: Mutex::new(Stats::default()),
            spec,
        });
        let me = shadow.clone();
        let name = format!("shadow-{}", me.spec.transform);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || me.run(plugin, rx));
        if let Err(e) = spawned {
            shadow.end(&format!("cannot start its thread: {e}"));
        }
        shadow
    }

    pub fn transform(&self) -> &str {
        &self.spec.transform
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// End it (idempotent): the first reason stays.
    pub fn end(&self, reason: &str) {
        if self.active.swap(false, Ordering::Relaxed) {
            lock(&self.sender).take();
            lock(&self.stats).ended = Some(reason.to_string());
            tracing::info!(transform = %self.spec.transform, shadow = %self.version, reason, "shadow run ended");
        }
    }

    /// The shadow's plugin, for the live stage (promote).
    pub fn plugin(&self) -> LoadedPlugin {
        lock(&self.seed).detached()
    }

    /// Whether the shadow's plugin says it masks.
    pub fn masks(&self) -> bool {
        lock(&self.seed).info().masks
    }

    pub fn hash(&self) -> String {
        lock(&self.seed).hash().to_string()
    }

    /// Whether a live worker should record its fates for this batch: the
    /// sample says so and the queue has room (else the batch is counted
    /// skipped).
    pub fn wants(&self, events: usize) -> bool {
        if !self.is_active() {
            return false;
        }
        if self
            .spec
            .duration
            .is_some_and(|d| self.started.elapsed() >= d)
        {
            self.end("its duration elapsed");
            return false;
        }
        let n = self.offered.fetch_add(1, Ordering::Relaxed);
        let s = self.spec.sample;
        if ((n + 1) as f64 * s).floor() <= (n as f64 * s).floor() {
            return false;
        }
        if self.queued.load(Ordering::Relaxed) >= QUEUE {
            let mut st = lock(&self.stats);
            st.skipped_batches += 1;
            st.skipped_events += events as u64;
            return false;
        }
        true
    }

    /// Hand a batch and its live fates to the shadow.
    pub fn submit(&self, batch: &Batch, live: Vec<Fate>, live_nanos: u64) {
        let job = Job {
            batch: Batch {
                data: batch.data.clone(),
                ends: batch.ends.clone(),
                acks: Vec::new(),
            },
            live,
            live_nanos,
        };
        let events = batch.len() as u64;
        let sender = lock(&self.sender).clone();
        let sent = sender.is_some_and(|s| {
            self.queued.fetch_add(1, Ordering::Relaxed);
            let ok = s.try_send(job).is_ok();
            if !ok {
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
            ok
        });
        if !sent && self.is_active() {
            let mut st = lock(&self.stats);
            st.skipped_batches += 1;
            st.skipped_events += events;
        }
    }

    fn run(self: Arc<Self>, mut plugin: LoadedPlugin, rx: std::sync::mpsc::Receiver<Job>) {
        lowest_priority();
        let trusted = plugin.bundled();
        while let Ok(job) = rx.recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if !self.is_active() {
                break;
            }
            let started = Instant::now();
            let mut fates = Vec::with_capacity(job.batch.len());
            let starved = isolate(&mut plugin, &job.batch, trusted, &mut fates);
            let nanos = started.elapsed().as_nanos() as u64;
            if starved {
                let mut st = lock(&self.stats);
                st.skipped_batches += 1;
                st.skipped_events += job.batch.len() as u64;
                continue;
            }
            self.compare(&job, &fates, nanos);
        }
    }

    fn compare(&self, job: &Job, shadow: &[Fate], nanos: u64) {
        let mut counts = [0u64; 5];
        let mut samples = Vec::new();
        for (i, (live, new)) in job.live.iter().zip(shadow).enumerate() {
            let event = job.batch.get(i);
            let kind = outcome(live, new, event);
            counts[kind] += 1;
            if kind != 0 && samples.len() < SAMPLES {
                samples.push(self.sample(kind, event, live, new));
            }
        }
        self.spec.totals.add(&self.spec.transform, &counts);
        let mut st = lock(&self.stats);
        st.batches += 1;
        st.events += job.batch.len() as u64;
        st.live_nanos += job.live_nanos;
        st.shadow_nanos += nanos;
        for (a, b) in st.counts.iter_mut().zip(counts) {
            *a += b;
        }
        for s in samples {
            if st.samples.len() == SAMPLES {
                st.samples.pop_front();
            }
            st.samples.push_back(s);
        }
    }

    /// One differing event as `status` shows it. Only the live version's
    /// output is ever shown whole (a mask's output is masked); the
    /// shadow's values are shown where they differ, except for a mask
    /// (they may be what the live version hid) or a transform that feeds
    /// one (then no value at all, only paths).
    fn sample(&self, kind: usize, event: &[u8], live: &Fate, new: &Fate) -> Value {
        let hide = self.spec.hide_values;
        let shown = |f: &Fate| -> Option<Value> {
            match f {
                Fate::Out { bytes, .. } => {
                    serde_json::from_slice(bytes.as_deref().unwrap_or(event)).ok()
                }
                _ => None,
            }
        };
        let mut s = json!({
            "outcome": OUTCOMES[kind],
            "live": describe(live),
            "shadow": describe(new),
        });
        let (l, n) = (shown(live), shown(new));
        if let Some(l) = &l {
            if !hide {
                s["event"] = l.clone();
            }
        } else if !hide && !self.spec.masks {
            s["event"] = serde_json::from_slice(event).unwrap_or(Value::Null);
        }
        if let (Some(l), Some(n)) = (l, n) {
            let mut diffs = Vec::new();
            diff("", &l, &n, &mut diffs);
            let hidden = || json!("(hidden)");
            let fields: Vec<Value> = diffs
                .into_iter()
                .take(50)
                .map(|(path, lv, nv)| {
                    json!({
                        "path": path,
                        "live": if hide { hidden() } else { lv },
                        "shadow": if hide || self.spec.masks { hidden() } else { nv },
                    })
                })
                .collect();
            s["fields"] = Value::Array(fields);
        }
        s
    }

    /// `status`: the running comparison.
    pub fn status(&self) -> Value {
        if self.is_active()
            && self
                .spec
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
        {
            self.end("its duration elapsed");
        }
        let st = lock(&self.stats);
        let per_event = |nanos: u64| {
            nanos
                .checked_div(st.events)
                .map_or(Value::Null, |v| json!(v))
        };
        let counts: serde_json::Map<String, Value> = OUTCOMES
            .iter()
            .zip(st.counts)
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "transform": self.spec.transform,
            "plugin": self.source,
            "version": self.version,
            "sample": self.spec.sample,
            "started": self.started_at,
            "running": st.ended.is_none(),
            "ended": st.ended,
            "seconds": self.started.elapsed().as_secs(),
            "batches": st.batches,
            "events": st.events,
            "outcomes": counts,
            "skipped_batches": st.skipped_batches,
            "skipped_events": st.skipped_events,
            "live_ns_per_event": per_event(st.live_nanos),
            "shadow_ns_per_event": per_event(st.shadow_nanos),
            "memory_mib": lock(&self.seed).memory_limit() >> 20,
            "time_budget": humantime::format_duration(lock(&self.seed).time_budget()).to_string(),
            "values_hidden": if self.spec.hide_values { "all" } else if self.spec.masks { "shadow" } else { "none" },
            "samples": st.samples.iter().rev().cloned().collect::<Vec<_>>(),
        })
    }
}

/// Which of `OUTCOMES` a pair of fates is.
fn outcome(live: &Fate, new: &Fate, event: &[u8]) -> usize {
    match (live, new) {
        (Fate::Failed(_), Fate::Failed(_)) | (Fate::Dropped, Fate::Dropped) => 0,
        (Fate::Failed(_), _) | (_, Fate::Failed(_)) => 4,
        (Fate::Dropped, _) | (_, Fate::Dropped) => 1,
        (Fate::Out { port: a, bytes: x }, Fate::Out { port: b, bytes: y }) => {
            if a != b {
                return 2;
            }
            let (x, y) = (x.as_deref().unwrap_or(event), y.as_deref().unwrap_or(event));
            if x == y {
                return 0;
            }
            // Same JSON written differently (key order, spacing) is the same.
            match (
                serde_json::from_slice::<Value>(x),
                serde_json::from_slice::<Value>(y),
            ) {
                (Ok(x), Ok(y)) if x == y => 0,
                _ => 3,
            }
        }
    }
}

fn describe(f: &Fate) -> Value {
    match f {
        Fate::Dropped => json!("dropped"),
        Fate::Out { port: 0, bytes } => json!(if bytes.is_some() { "replaced" } else { "kept" }),
        Fate::Out { port, bytes } => json!(format!(
            "{} to output {}",
            if bytes.is_some() { "replaced" } else { "kept" },
            port - 1
        )),
        Fate::Failed(m) => json!(format!("failed: {m}")),
    }
}

/// Field-level differences of two JSON values: (dotted path, live, shadow)
/// with `null` for a field one side lacks.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff(&p, v, y.get(k).unwrap_or(&Value::Null), out);
            }
            for (k, v) in y {
                if !x.contains_key(k) {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.push((p, Value::Null, v.clone()));
                }
            }
        }
        _ if a != b => out.push((path.to_string(), a.clone(), b.clone())),
        _ => {}
    }
}

/// Run the shadow over a batch as the live stage does: split a failing
/// batch until each failure is one event's. True when it was starved: a
/// timeout that used less CPU than half its time budget (the thread runs
/// at the lowest priority; waiting for a core is not looping).
fn isolate(plugin: &mut LoadedPlugin, batch: &Batch, trusted: bool, out: &mut Vec<Fate>) -> bool {
    if batch.is_empty() {
        return false;
    }
    let call_cpu = thread_cpu();
    match plugin.process(&batch.data, &batch.ends) {
        Ok(v) => {
            fates(&v, batch.len(), trusted, out);
            false
        }
        Err(e) if e.kind == ErrorKind::Timeout && starved(call_cpu, plugin) => true,
        Err(e) if batch.len() == 1 => {
            out.push(Fate::Failed(failure(&e)));
            false
        }
        Err(e) if e.kind == ErrorKind::Timeout => {
            for i in 0..batch.len() {
                if isolate(plugin, &batch.slice(i..i + 1), trusted, out) {
                    return true;
                }
            }
            false
        }
        Err(_) => {
            let mid = batch.len() / 2;
            isolate(plugin, &batch.slice(0..mid), trusted, out)
                || isolate(plugin, &batch.slice(mid..batch.len()), trusted, out)
        }
    }
}

fn failure(e: &CallError) -> String {
    format!("{}: {}", e.kind.as_str(), crate::plugin::alone(&e.message))
}

fn starved(call_cpu: Option<Duration>, plugin: &LoadedPlugin) -> bool {
    match (call_cpu, thread_cpu()) {
        (Some(a), Some(b)) => b.saturating_sub(a) < plugin.time_budget() / 2,
        _ => false,
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The calling thread runs only when a core is otherwise idle
/// (`SCHED_IDLE`; nice 19 where that is refused): the live workers, the
/// sources and the sinks always come first.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is valid for the call.
        let idle = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0;
        if !idle {
            // SAFETY: gettid has no preconditions; setpriority on our own
            // thread id only changes this thread's scheduling weight.
            let rc = unsafe {
                let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 19)
            };
            if rc != 0 {
                tracing::debug!("could not lower the shadow thread's priority");
            }
        }
    }
}

/// The shadow of a transform, shared by its live workers and the pipeline.
#[derive(Default)]
pub struct ShadowSlot {
    current: Mutex<Option<Arc<Shadow>>>,
}

impl ShadowSlot {
    /// The shadow, running or ended (for `status`).
    pub fn get(&self) -> Option<Arc<Shadow>> {
        lock(&self.current).clone()
    }

    /// The running shadow.
    pub fn active(&self) -> Option<Arc<Shadow>> {
        lock(&self.current).clone().filter(|s| s.is_active())
    }

    pub fn set(&self, shadow: Arc<Shadow>) {
        *lock(&self.current) = Some(shadow);
    }

    /// End the running shadow, if any, with `reason`.
    pub fn end(&self, reason: &str) {
        if let Some(s) = lock(&self.current).as_ref() {
            s.end(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(port: u16, bytes: Option<&str>) -> Fate {
        Fate::Out {
            port,
            bytes: bytes.map(|b| b.as_bytes().to_vec()),
        }
    }

    #[test]
    fn outcomes_by_kind() {
        let e = br#"{"a":1}"#;
        assert_eq!(outcome(&out(0, None), &out(0, None), e), 0);
        assert_eq!(outcome(&Fate::Dropped, &Fate::Dropped, e), 0);
        assert_eq!(outcome(&out(0, None), &Fate::Dropped, e), 1);
        assert_eq!(outcome(&Fate::Dropped, &out(1, None), e), 1);
        assert_eq!(outcome(&out(0, None), &out(1, None), e), 2);
        assert_eq!(outcome(&out(0, None), &out(0, Some(r#"{"a":2}"#)), e), 3);
        // The same JSON, written with other spacing, is the same event.
        assert_eq!(outcome(&out(0, None), &out(0, Some(r#"{ "a": 1 }"#)), e), 0);
        assert_eq!(outcome(&out(0, None), &Fate::Failed("x".into()), e), 4);
        assert_eq!(
            outcome(&Fate::Failed("x".into()), &Fate::Failed("y".into()), e),
            0
        );
    }

    #[test]
    fn field_level_diff() {
        let a = json!({"a": 1, "b": {"c": "x", "d": true}});
        let b = json!({"a": 1, "b": {"c": "y"}, "e": 2});
        let mut d = Vec::new();
        diff("", &a, &b, &mut d);
        assert_eq!(
            d,
            vec![
                ("b.c".into(), json!("x"), json!("y")),
                ("b.d".into(), json!(true), Value::Null),
                ("e".into(), Value::Null, json!(2)),
            ]
        );
    }
}
