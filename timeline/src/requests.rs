//! Requests followed across components by their correlation id: tracked
//! while active, finalized once idle, their hops' latencies kept in bounded
//! memory (exact up to [`EXACT_SAMPLES`] per hop, then a log-linear
//! histogram within 1/2048).

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::*;

/// One request in flight.
pub(super) struct Active {
    first: i64,
    last: i64,
    /// (component, first ts, last ts) per segment.
    segments: Vec<(Arc<str>, i64, i64)>,
    /// The message of its last event (cut to [`LAST_MESSAGE`] bytes).
    last_message: String,
}

/// How much of a request's last message is kept.
pub(super) const LAST_MESSAGE: usize = 200;

/// `message` cut to [`LAST_MESSAGE`] bytes on a character boundary.
fn set_last_message(to: &mut String, message: &str) {
    let mut end = message.len().min(LAST_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    to.clear();
    to.push_str(&message[..end]);
}

/// A finished request, its path as shared component names.
pub(super) struct Finished {
    id: String,
    total_us: i64,
    path: Vec<Arc<str>>,
    /// (component, first ts, last ts) per segment, for the HTML report's
    /// waterfalls (empty unless asked for).
    pub(super) segments: Vec<(Arc<str>, i64, i64)>,
    last_message: String,
}

impl Finished {
    pub(super) fn to_path(&self) -> RequestPath {
        RequestPath {
            id: self.id.clone(),
            total_us: self.total_us,
            path: self.path.iter().map(|c| c.to_string()).collect(),
            last_message: self.last_message.clone(),
        }
    }
}

/// A hop: from one component to the next.
pub(super) type HopKey = (Arc<str>, Arc<str>);

/// The latencies of one hop, in microseconds. Exact while there are at
/// most [`EXACT_SAMPLES`]; past that they move into an HDR histogram
/// (`hdrhistogram`, three significant digits: every value within 1/1000),
/// whose memory follows the range of the values, not their number.
/// Minimum and maximum are always exact.
#[derive(Debug, Default)]
pub(super) struct Latencies {
    count: u64,
    min: i64,
    max: i64,
    exact: Vec<i64>,
    /// Once the exact samples are full.
    histogram: Option<hdrhistogram::Histogram<u64>>,
}

pub(super) const EXACT_SAMPLES: usize = 65_536;
/// Significant digits the histogram keeps.
const SIGFIG: u8 = 3;

impl Latencies {
    /// The recorded values and their counts: exact, or the histogram's
    /// (each bucket's middle, within the exact bounds).
    fn values(&self) -> Vec<(i64, u64)> {
        match &self.histogram {
            None => self.exact.iter().map(|&v| (v, 1)).collect(),
            Some(h) => h
                .iter_recorded()
                .map(|v| {
                    let at = h.median_equivalent(v.value_iterated_to()) as i64;
                    (at.clamp(self.min, self.max), v.count_at_value())
                })
                .collect(),
        }
    }

    /// `n` bins of equal width in log space from the minimum to the
    /// maximum: (low, high, count) each, for a histogram.
    pub(super) fn bins(&self, n: usize) -> Vec<(i64, i64, u64)> {
        if self.count == 0 {
            return Vec::new();
        }
        let (lo, hi) = ((self.min.max(1)) as f64, (self.max.max(1)) as f64);
        let step = ((hi / lo).ln() / n as f64).max(1e-9);
        let edge = |i: usize| (lo * (step * i as f64).exp()).round() as i64;
        let mut counts = vec![0u64; n];
        for (v, c) in self.values() {
            let i = (((v.max(1) as f64) / lo).ln() / step).floor().max(0.0) as usize;
            counts[i.min(n - 1)] += c;
        }
        (0..n)
            .map(|i| {
                (
                    if i == 0 { self.min } else { edge(i) },
                    edge(i + 1).max(self.min),
                    counts[i],
                )
            })
            .collect()
    }

    pub(super) fn add(&mut self, v: i64) {
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.histogram.is_none() && self.exact.len() < EXACT_SAMPLES {
            self.exact.push(v);
            return;
        }
        let h = self.histogram.get_or_insert_with(|| {
            hdrhistogram::Histogram::new(SIGFIG).expect("3 significant digits are valid")
        });
        for v in std::mem::take(&mut self.exact).into_iter().chain([v]) {
            // Auto-resizing: any non-negative value fits.
            let _ = h.record(v.max(0) as u64);
        }
    }

    /// The median: the middle sample, or the midpoint of the two middle
    /// ones for an even count (as other tools report it); from the
    /// histogram past the exact samples.
    pub(super) fn median(&mut self) -> i64 {
        if self.histogram.is_none() && !self.exact.is_empty() {
            self.exact.sort_unstable();
            return median(&self.exact);
        }
        self.percentile(50.0)
    }

    /// The nearest-rank percentile (see the module's definitions).
    pub(super) fn percentile(&mut self, p: f64) -> i64 {
        let Some(h) = &self.histogram else {
            self.exact.sort_unstable();
            return percentile(&self.exact, p);
        };
        let v = h.median_equivalent(h.value_at_quantile(p / 100.0)) as i64;
        v.clamp(self.min, self.max)
    }
}

/// Follows requests by correlation id.
#[derive(Default)]
pub(super) struct Tracker {
    /// Component names, shared by every segment that names them (no copy
    /// of a name per event).
    names: FxHashSet<Arc<str>>,
    pub(super) active: FxHashMap<String, Active>,
    hops: Vec<(HopKey, Latencies)>,
    slowest: Vec<RequestPath>,
    /// Requests of more than one component, by where they end.
    ends: FxHashMap<Arc<str>, u64>,
    /// Every request, by where it ends.
    lasts: FxHashMap<Arc<str>, u64>,
    /// Finished requests, kept to list the lost ones (bounded; beyond it
    /// they are only counted).
    finished: Vec<Finished>,
    requests: u64,
    /// Keep each finished request's segments (the HTML report).
    pub(super) keep_segments: bool,
}

pub(super) const MAX_FINISHED: usize = 100_000;
pub(super) const SLOWEST: usize = 10;

impl Tracker {
    pub(super) fn see(&mut self, r: &Record) {
        let Some(id) = r.correlation() else { return };
        match self.active.get_mut(id) {
            Some(a) => {
                a.last = r.ts;
                set_last_message(&mut a.last_message, r.message());
                match a.segments.last_mut() {
                    Some((c, _, last)) if &**c == r.component() => *last = r.ts,
                    _ => a
                        .segments
                        .push((intern(&mut self.names, r.component()), r.ts, r.ts)),
                }
            }
            None => {
                let segment = (intern(&mut self.names, r.component()), r.ts, r.ts);
                let mut last_message = String::new();
                set_last_message(&mut last_message, r.message());
                self.active.insert(
                    id.to_string(),
                    Active {
                        first: r.ts,
                        last: r.ts,
                        segments: vec![segment],
                        last_message,
                    },
                );
            }
        }
    }

    /// Finish requests idle since before `cutoff`.
    pub(super) fn expire(&mut self, cutoff: i64) {
        let done: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.last < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            let a = self.active.remove(&id).expect("listed");
            self.finish(id, a);
        }
    }

    pub(super) fn finish(&mut self, id: String, a: Active) {
        self.requests += 1;
        for pair in a.segments.windows(2) {
            let latency = pair[1].1 - pair[0].2;
            let key = (&pair[0].0, &pair[1].0);
            let i = match self.hops.iter().position(|(k, _)| (&k.0, &k.1) == key) {
                Some(i) => i,
                None => {
                    let key = (pair[0].0.clone(), pair[1].0.clone());
                    self.hops.push((key, Latencies::default()));
                    self.hops.len() - 1
                }
            };
            self.hops[i].1.add(latency);
        }
        let segments = match self.keep_segments {
            true => a.segments.clone(),
            false => Vec::new(),
        };
        let request = Finished {
            id,
            total_us: a.last - a.first,
            path: a.segments.into_iter().map(|s| s.0).collect(),
            segments,
            last_message: a.last_message,
        };
        let last = request.path.last().expect("a request has an event");
        *self.lasts.entry(last.clone()).or_default() += 1;
        if request.path.len() >= 2 {
            *self.ends.entry(last.clone()).or_default() += 1;
        }
        // Among the slowest? Compared before any copy is made.
        let slower = |x: &RequestPath| {
            request.total_us > x.total_us || (request.total_us == x.total_us && request.id < x.id)
        };
        if self.slowest.len() < SLOWEST || self.slowest.last().is_some_and(slower) {
            self.slowest.push(request.to_path());
            self.slowest
                .sort_by(|x, y| y.total_us.cmp(&x.total_us).then_with(|| x.id.cmp(&y.id)));
            self.slowest.truncate(SLOWEST);
        }
        if self.finished.len() < MAX_FINISHED {
            self.finished.push(request);
        }
    }

    pub(super) fn close(mut self, summary: &mut Summary) {
        let rest: Vec<(String, Active)> = {
            let mut v: Vec<_> = self.active.drain().collect();
            v.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
            v
        };
        for (id, a) in rest {
            self.finish(id, a);
        }
        summary.requests = self.requests;
        let keep = self.keep_segments;
        let mut details = Vec::new();
        summary.hops = self
            .hops
            .into_iter()
            .map(|((from, to), mut l)| {
                if keep {
                    details.push(super::html::HopDetail {
                        p99_us: l.percentile(99.0),
                        bins: l.bins(super::html::BINS),
                    });
                }
                Hop {
                    from: from.to_string(),
                    to: to.to_string(),
                    requests: l.count,
                    min_us: l.min,
                    median_us: l.median(),
                    p95_us: l.percentile(95.0),
                    max_us: l.max,
                }
            })
            .collect();
        summary.hop_details = details;
        summary.slowest = self.slowest;
        let expected = self
            .ends
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(c, _)| c.to_string());
        if let Some(end) = &expected {
            let reached = self.lasts.get(end.as_str()).copied().unwrap_or(0);
            summary.lost_total = self.requests - reached;
            summary.lost = self
                .finished
                .iter()
                .filter(|r| r.path.last().map(|c| &**c) != Some(end.as_str()))
                .take(50)
                .map(Finished::to_path)
                .collect();
        }
        summary.expected_end = expected;
        if keep {
            let mut kept: Vec<&Finished> = self
                .finished
                .iter()
                .filter(|f| f.segments.len() >= 2)
                .collect();
            kept.sort_by(|x, y| y.total_us.cmp(&x.total_us).then_with(|| x.id.cmp(&y.id)));
            summary.request_details = kept
                .into_iter()
                .take(super::html::MAX_REQUESTS)
                .map(|f| super::html::RequestDetail {
                    id: f.id.clone(),
                    total_us: f.total_us,
                    segments: f
                        .segments
                        .iter()
                        .map(|(c, a, b)| (c.to_string(), *a, *b))
                        .collect(),
                })
                .collect();
            summary.requests_kept_from = self.finished.len() as u64;
        }
    }
}

/// The shared copy of a component name.
pub(super) fn intern(names: &mut FxHashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    names.insert(n.clone());
    n
}

/// The median of sorted samples: the midpoint of the two middle ones for
/// an even count.
pub fn median(sorted: &[i64]) -> i64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        let (a, b) = (sorted[n / 2 - 1], sorted[n / 2]);
        a + (b - a) / 2
    }
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::record;

    #[test]
    fn latencies_past_the_exact_samples_stay_within_their_precision() {
        let mut exact = Vec::new();
        let mut l = Latencies::default();
        // Spread over six decades, in a scrambled order.
        for i in 0..(EXACT_SAMPLES as i64 * 3) {
            let v = (i * 7919) % 1_000_003 * (1 + i % 1000);
            exact.push(v);
            l.add(v);
        }
        exact.sort_unstable();
        assert!(l.exact.is_empty() && l.histogram.is_some());
        assert_eq!(
            (l.count, l.min, l.max),
            (exact.len() as u64, exact[0], exact[exact.len() - 1])
        );
        for p in [1.0, 50.0, 95.0, 99.9, 100.0] {
            let want = percentile(&exact, p);
            let got = l.percentile(p);
            assert!(
                (got - want).abs() as f64 <= want as f64 / 1000.0 + 1.0,
                "p{p}: {got} vs {want}"
            );
        }
        let binned: u64 = l.bins(40).iter().map(|b| b.2).sum();
        assert_eq!(binned, exact.len() as u64);
        // Below the cap, exact.
        let mut small = Latencies::default();
        for v in [5, 1, 3] {
            small.add(v);
        }
        assert_eq!((small.percentile(50.0), small.percentile(95.0)), (3, 5));
        assert_eq!(median(&[10, 20, 30, 40]), 25);
        assert_eq!(median(&[10, 20, 30]), 20);
        let mut even = Latencies::default();
        for v in [40, 10, 30, 20] {
            even.add(v);
        }
        assert_eq!(even.median(), 25, "the midpoint, not the lower median");
    }

    #[test]
    fn lost_requests_are_counted_past_the_listed_ones() {
        let mut t = Tracker::default();
        let total = MAX_FINISHED + 1000;
        for i in 0..total {
            let ts = 1_000_000 + i as i64;
            let first = record(&format!(
                r#"{{"ts":{ts},"service":"api","request_id":"r{i}"}}"#
            ));
            t.see(&first);
            // Every 10th request stops in api; the others reach db.
            if i % 10 != 0 {
                t.see(&record(&format!(
                    r#"{{"ts":{},"service":"db","request_id":"r{i}"}}"#,
                    ts + 1
                )));
            }
            t.expire(first.ts - 10_000_000);
        }
        let mut s = Summary::default();
        t.close(&mut s);
        assert_eq!(s.requests, total as u64);
        assert_eq!(s.expected_end.as_deref(), Some("db"));
        assert_eq!(s.lost_total, total.div_ceil(10) as u64);
        assert_eq!(s.lost.len(), 50);
        assert_eq!(s.hops.len(), 1);
        assert_eq!(s.hops[0].requests, (total - total.div_ceil(10)) as u64);
    }
}
