//! Live hop latencies: what `sluice timeline` measures after the fact on
//! files, measured on the events of a running pipeline (the `hops` sink).
//!
//! The definitions are the timeline's: a request is the events that share
//! the correlation field; its path is the components of its events in time
//! order, consecutive repeats merged into one segment; a hop `A -> B` takes
//! from the last event of a segment in A to the first event of the next
//! segment, in B. Live, the events of a request arrive in the order the
//! pipeline sees them, so a hop is measured when B's first event arrives
//! after A's; an event older than the segment it would follow is counted
//! as out of order and starts the new segment without a hop.
//!
//! Memory is bounded: at most `max_requests` requests are held (the least
//! recently seen is forgotten beyond, counted), a request unseen for
//! `request_timeout` is forgotten (counted), and at most `max_hops` pairs
//! of components get a histogram of their own (later pairs count as
//! `other -> other`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::metrics::{Histogram, BUCKETS};

/// The name a pair past `max_hops` is counted under.
pub const OTHER: &str = "other";

/// A hop: the component a request left, the one it reached.
type Pair = (Arc<str>, Arc<str>);

/// What the `/metrics` page and the live page read of one `hops` sink.
#[derive(Debug)]
pub struct HopStats {
    /// The field that follows a request, and the one that names a component.
    pub correlation: String,
    pub component: String,
    hops: Mutex<BTreeMap<Pair, Arc<Histogram>>>,
    max_hops: usize,
    /// Requests held now.
    pub held: AtomicU64,
    /// Requests forgotten to stay within `max_requests`.
    pub forgotten_full: AtomicU64,
    /// Requests forgotten after `request_timeout` unseen.
    pub forgotten_idle: AtomicU64,
    /// Events older than the segment they would follow (no hop measured).
    pub out_of_order: AtomicU64,
}

/// One hop's histogram, read: cumulative counts per bucket (the last is
/// `+Inf`), the sum in seconds.
pub struct HopRead {
    pub from: Arc<str>,
    pub to: Arc<str>,
    pub cumulative: Vec<u64>,
    pub sum: f64,
}

impl HopRead {
    /// The upper bound of the bucket holding the `p`-th percentile (nearest
    /// rank), in seconds: the true value is at most this. `None` with no
    /// samples or past the last finite bucket.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = *self.cumulative.last()?;
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
        let i = self.cumulative.iter().position(|c| *c >= rank)?;
        BUCKETS.get(i).copied()
    }
}

impl HopStats {
    pub fn new(correlation: String, component: String, max_hops: usize) -> Self {
        Self {
            correlation,
            component,
            hops: Mutex::default(),
            max_hops,
            held: AtomicU64::new(0),
            forgotten_full: AtomicU64::new(0),
            forgotten_idle: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
        }
    }

    fn histogram(&self, from: &Arc<str>, to: &Arc<str>) -> Arc<Histogram> {
        let mut hops = self.hops.lock().unwrap_or_else(|e| e.into_inner());
        let key = (from.clone(), to.clone());
        if let Some(h) = hops.get(&key) {
            return h.clone();
        }
        let key = if hops.len() < self.max_hops {
            key
        } else {
            (Arc::from(OTHER), Arc::from(OTHER))
        };
        hops.entry(key).or_default().clone()
    }

    /// Every hop's histogram, by `from` then `to`.
    pub fn read(&self) -> Vec<HopRead> {
        let hops = self.hops.lock().unwrap_or_else(|e| e.into_inner());
        hops.iter()
            .map(|((from, to), h)| {
                let (cumulative, sum) = h.read();
                HopRead {
                    from: from.clone(),
                    to: to.clone(),
                    cumulative,
                    sum,
                }
            })
            .collect()
    }
}

/// A request being followed: the component of its current segment and the
/// time of that segment's last event.
struct Request {
    component: Arc<str>,
    last_us: i64,
    seen: Instant,
    /// Its newest place in [`Tracker::order`].
    seq: u64,
}

/// Follows requests and feeds [`HopStats`]; one per sink, on its task.
pub struct Tracker {
    stats: Arc<HopStats>,
    requests: HashMap<Box<str>, Request>,
    /// Requests in the order last seen, with stale places skipped when
    /// popped (a request seen again has a newer place).
    order: VecDeque<(Box<str>, u64)>,
    seq: u64,
    names: HashMap<Box<str>, Arc<str>>,
    max_requests: usize,
    timeout: Duration,
}

impl Tracker {
    pub fn new(stats: Arc<HopStats>, max_requests: usize, timeout: Duration) -> Self {
        Self {
            stats,
            requests: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
            names: HashMap::new(),
            max_requests: max_requests.max(1),
            timeout,
        }
    }

    /// One component name, shared (bounded: past `max_hops * 2` names, new
    /// ones share [`OTHER`]).
    fn name(&mut self, component: &str) -> Arc<str> {
        if let Some(n) = self.names.get(component) {
            return n.clone();
        }
        let n: Arc<str> = if self.names.len() < self.stats.max_hops.saturating_mul(2) {
            Arc::from(component)
        } else {
            Arc::from(OTHER)
        };
        self.names.insert(component.into(), n.clone());
        n
    }

    /// An event of request `id` in `component` at `t_us` (microseconds
    /// since the epoch), seen at `now`.
    pub fn see(&mut self, id: &str, component: &str, t_us: i64, now: Instant) {
        let component = self.name(component);
        self.seq += 1;
        let seq = self.seq;
        match self.requests.get_mut(id) {
            Some(r) if r.component == component => {
                r.last_us = r.last_us.max(t_us);
                r.seen = now;
                r.seq = seq;
            }
            Some(r) => {
                let took = t_us - r.last_us;
                if took >= 0 {
                    self.stats
                        .histogram(&r.component, &component)
                        .observe(Duration::from_micros(took as u64));
                } else {
                    self.stats.out_of_order.fetch_add(1, Relaxed);
                }
                *r = Request {
                    component,
                    last_us: t_us,
                    seen: now,
                    seq,
                };
            }
            None => {
                self.requests.insert(
                    id.into(),
                    Request {
                        component,
                        last_us: t_us,
                        seen: now,
                        seq,
                    },
                );
            }
        }
        self.order.push_back((id.into(), seq));
        self.forget(now);
    }

    /// Forget the requests past `max_requests` (least recently seen first)
    /// and those unseen for `request_timeout`.
    pub fn forget(&mut self, now: Instant) {
        while let Some((id, seq)) = self.order.front() {
            let Some(r) = self.requests.get(id) else {
                self.order.pop_front();
                continue;
            };
            if r.seq != *seq {
                // A stale place: the request was seen again since.
                self.order.pop_front();
                continue;
            }
            let full = self.requests.len() > self.max_requests;
            let idle = now.saturating_duration_since(r.seen) >= self.timeout;
            if !full && !idle {
                break;
            }
            let counter = if full {
                &self.stats.forgotten_full
            } else {
                &self.stats.forgotten_idle
            };
            counter.fetch_add(1, Relaxed);
            self.requests.remove(id);
            self.order.pop_front();
        }
        // Stale places are dropped as they reach the front; compact when
        // they outnumber the live ones, so the queue stays bounded too.
        if self.order.len() > 2 * self.requests.len() + 1024 {
            let mut live: Vec<(Box<str>, u64)> = self
                .requests
                .iter()
                .map(|(id, r)| (id.clone(), r.seq))
                .collect();
            live.sort_by_key(|(_, s)| *s);
            self.order = live.into();
        }
        self.stats.held.store(self.requests.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(max: usize) -> (Arc<HopStats>, Tracker) {
        let stats = Arc::new(HopStats::new("request_id".into(), "service".into(), 100));
        let t = Tracker::new(stats.clone(), max, Duration::from_secs(60));
        (stats, t)
    }

    fn count(stats: &HopStats, from: &str, to: &str) -> u64 {
        stats
            .read()
            .iter()
            .find(|h| &*h.from == from && &*h.to == to)
            .map_or(0, |h| *h.cumulative.last().unwrap())
    }

    #[test]
    fn hops_run_from_a_segments_last_event_to_the_next_ones_first() {
        let (stats, mut t) = tracker(10);
        let now = Instant::now();
        t.see("r1", "web", 1_000, now);
        t.see("r1", "web", 3_000, now);
        t.see("r1", "orders", 23_000, now); // 20 ms after web's last
        t.see("r1", "orders", 30_000, now);
        t.see("r1", "web", 31_000, now); // 1 ms back
        let h = stats.read();
        let wo = h.iter().find(|h| &*h.from == "web").unwrap();
        assert_eq!(*wo.cumulative.last().unwrap(), 1);
        assert!((wo.sum - 0.020).abs() < 1e-9);
        assert_eq!(wo.percentile(50.0), Some(0.025));
        assert_eq!(count(&stats, "orders", "web"), 1);
    }

    #[test]
    fn requests_held_stay_within_max_requests_least_recent_first() {
        let (stats, mut t) = tracker(3);
        let now = Instant::now();
        for id in ["a", "b", "c", "a", "d"] {
            t.see(id, "web", 0, now);
        }
        // b was the least recently seen.
        assert_eq!(stats.forgotten_full.load(Relaxed), 1);
        assert_eq!(stats.held.load(Relaxed), 3);
        t.see("a", "orders", 5, now);
        t.see("b", "orders", 5, now);
        assert_eq!(count(&stats, "web", "orders"), 1, "b was forgotten");
        for i in 0..100_000 {
            t.see("a", if i % 2 == 0 { "web" } else { "orders" }, i, now);
        }
        assert!(t.order.len() <= 2 * 3 + 1024, "{}", t.order.len());
        t.forget(now + Duration::from_secs(61));
        assert_eq!(stats.held.load(Relaxed), 0);
        assert_eq!(stats.forgotten_idle.load(Relaxed), 3);
    }

    #[test]
    fn out_of_order_events_measure_no_hop() {
        let (stats, mut t) = tracker(10);
        let now = Instant::now();
        t.see("r", "web", 10_000, now);
        t.see("r", "orders", 5_000, now);
        assert_eq!(stats.out_of_order.load(Relaxed), 1);
        assert!(stats.read().is_empty());
    }
}
