//! `sluice timeline`: merge many services' JSON-lines logs into one Markdown
//! (or JSON) timeline, with statistics and per-hop latencies of requests
//! followed across components by a correlation field.
//!
//! Files are merged in time order without loading them (a k-way merge; a
//! file found unsorted by a first quick pass is sorted in memory on its
//! own). Requests are tracked while they are active and finalized once idle
//! for `request_timeout` of log time, so memory follows the number of
//! requests in flight, not the size of the input.
//!
//! Definitions used by the report:
//! - a request's path is the sequence of components of its events in time
//!   order, with consecutive repeats merged into one segment;
//! - a hop `A -> B` takes from the last event of a segment in A to the first
//!   event of the next segment, in B;
//! - a request's end-to-end time is from its first event to its last;
//! - percentiles use the nearest-rank method (p-th: the ceil(p/100 * n)-th
//!   smallest), the median is p50; exact up to [`EXACT_SAMPLES`] requests
//!   per hop, within 1/2048 past that (see [`Latencies`]);
//! - a lost request is one whose last component is not the one where most
//!   multi-component requests end.

pub mod read;
mod report;
mod spill;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

use rustc_hash::{FxHashMap, FxHashSet};

use anyhow::Context;
use read::{level_rank, Merge, ParseOptions};
pub use read::{ComponentBy, LogFile, Problem, Record};
pub use report::Format;

/// What to include and how to show it.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files and folders to read.
    pub paths: Vec<PathBuf>,
    /// Components to keep (case-insensitive); empty keeps all.
    pub components: Vec<String>,
    pub component_by: ComponentBy,
    /// Minimum level name (`info`); `None` keeps every level.
    pub min_level: Option<String>,
    /// Time window, microseconds since the epoch.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// Only the newest N files of each component.
    pub newest_files: Option<usize>,
    pub mode: Mode,
    /// The field that follows a request across components.
    pub correlate: String,
    /// Keep only events whose message or fields contain this (any case).
    pub grep: Option<String>,
    pub format: Format,
    /// Log time after which an idle request is considered finished.
    pub request_timeout_us: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            components: Vec::new(),
            component_by: ComponentBy::Auto,
            min_level: None,
            from: None,
            to: None,
            newest_files: None,
            mode: Mode::Timeline,
            correlate: "request_id".to_string(),
            grep: None,
            format: Format::Markdown,
            request_timeout_us: 5 * 60 * 1_000_000,
        }
    }
}

/// How events are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every event in time order.
    Timeline,
    /// One section per component.
    Component,
}

/// Counts per level bucket: fatal+error, warn, info (and notice), debug (and trace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LevelCounts {
    pub error: u64,
    pub warn: u64,
    pub info: u64,
    pub debug: u64,
    pub total: u64,
}

/// Latencies of one hop, in microseconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    pub from: String,
    pub to: String,
    pub requests: u64,
    pub min_us: i64,
    pub median_us: i64,
    pub p95_us: i64,
    pub max_us: i64,
}

/// A request followed across components.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestPath {
    pub id: String,
    pub total_us: i64,
    pub path: Vec<String>,
}

/// Everything the report says besides the events.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub files: Vec<(String, u64)>,
    pub events: u64,
    pub first_us: Option<i64>,
    pub last_us: Option<i64>,
    pub per_component: BTreeMap<String, LevelCounts>,
    pub requests: u64,
    pub hops: Vec<Hop>,
    pub slowest: Vec<RequestPath>,
    /// Requests that stopped early, and where most requests end.
    pub lost: Vec<RequestPath>,
    pub lost_total: u64,
    pub expected_end: Option<String>,
    pub malformed: u64,
    pub no_timestamp: u64,
    pub problems: Vec<String>,
}

/// One request in flight.
struct Active {
    first: i64,
    last: i64,
    /// (component, first ts, last ts) per segment.
    segments: Vec<(Arc<str>, i64, i64)>,
}

/// A finished request, its path as shared component names.
struct Finished {
    id: String,
    total_us: i64,
    path: Vec<Arc<str>>,
}

impl Finished {
    fn to_path(&self) -> RequestPath {
        RequestPath {
            id: self.id.clone(),
            total_us: self.total_us,
            path: self.path.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// A hop: from one component to the next.
type HopKey = (Arc<str>, Arc<str>);

/// The latencies of one hop, in microseconds. Exact while there are at
/// most [`EXACT_SAMPLES`]; past that they move into a log-linear histogram
/// whose buckets are within 1/2048 of their values, so memory stays the
/// same whatever the input's size. Minimum and maximum are always exact.
#[derive(Debug, Default)]
struct Latencies {
    count: u64,
    min: i64,
    max: i64,
    exact: Vec<i64>,
    /// Counts per [`bucket`], once the exact samples are full.
    buckets: Vec<u64>,
}

const EXACT_SAMPLES: usize = 65_536;
/// Values below this have a bucket each.
const LINEAR: i64 = 2048;

/// The histogram bucket of a latency: its own below [`LINEAR`], then 1,024
/// buckets per power of two.
fn bucket(v: i64) -> usize {
    let v = v.max(0);
    if v < LINEAR {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() as usize - 10;
    LINEAR as usize + (shift - 1) * 1024 + ((v >> shift) as usize - 1024)
}

/// The middle of a bucket's values.
fn bucket_value(b: usize) -> i64 {
    if b < LINEAR as usize {
        return b as i64;
    }
    let shift = (b - LINEAR as usize) / 1024 + 1;
    let mantissa = ((b - LINEAR as usize) % 1024 + 1024) as i64;
    (mantissa << shift) + (1i64 << shift) / 2
}

impl Latencies {
    fn add(&mut self, v: i64) {
        if self.count == 0 {
            (self.min, self.max) = (v, v);
        }
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.buckets.is_empty() && self.exact.len() < EXACT_SAMPLES {
            self.exact.push(v);
            return;
        }
        for v in std::mem::take(&mut self.exact).into_iter().chain([v]) {
            let b = bucket(v);
            if b >= self.buckets.len() {
                self.buckets.resize(b + 1, 0);
            }
            self.buckets[b] += 1;
        }
    }

    /// The nearest-rank percentile (see the module's definitions).
    fn percentile(&mut self, p: f64) -> i64 {
        if self.buckets.is_empty() {
            self.exact.sort_unstable();
            return percentile(&self.exact, p);
        }
        let rank = (((p / 100.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_value(b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

/// Follows requests by correlation id.
#[derive(Default)]
struct Tracker {
    /// Component names, shared by every segment that names them (no copy
    /// of a name per event).
    names: FxHashSet<Arc<str>>,
    active: FxHashMap<String, Active>,
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
}

const MAX_FINISHED: usize = 100_000;
const SLOWEST: usize = 10;

impl Tracker {
    fn see(&mut self, r: &Record) {
        let Some(id) = r.correlation() else { return };
        match self.active.get_mut(id) {
            Some(a) => {
                a.last = r.ts;
                match a.segments.last_mut() {
                    Some((c, _, last)) if &**c == r.component() => *last = r.ts,
                    _ => a
                        .segments
                        .push((intern(&mut self.names, r.component()), r.ts, r.ts)),
                }
            }
            None => {
                let segment = (intern(&mut self.names, r.component()), r.ts, r.ts);
                self.active.insert(
                    id.to_string(),
                    Active {
                        first: r.ts,
                        last: r.ts,
                        segments: vec![segment],
                    },
                );
            }
        }
    }

    /// Finish requests idle since before `cutoff`.
    fn expire(&mut self, cutoff: i64) {
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

    fn finish(&mut self, id: String, a: Active) {
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
        let request = Finished {
            id,
            total_us: a.last - a.first,
            path: a.segments.into_iter().map(|s| s.0).collect(),
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

    fn close(mut self, summary: &mut Summary) {
        let rest: Vec<(String, Active)> = {
            let mut v: Vec<_> = self.active.drain().collect();
            v.sort_by(|a, b| a.1.first.cmp(&b.1.first).then_with(|| a.0.cmp(&b.0)));
            v
        };
        for (id, a) in rest {
            self.finish(id, a);
        }
        summary.requests = self.requests;
        summary.hops = self
            .hops
            .into_iter()
            .map(|((from, to), mut l)| Hop {
                from: from.to_string(),
                to: to.to_string(),
                requests: l.count,
                min_us: l.min,
                median_us: l.percentile(50.0),
                p95_us: l.percentile(95.0),
                max_us: l.max,
            })
            .collect();
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
    }
}

/// The shared copy of a component name.
fn intern(names: &mut FxHashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return n.clone();
    }
    let n: Arc<str> = name.into();
    names.insert(n.clone());
    n
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whether a record passes the filters.
struct Filter {
    components: Vec<String>,
    min_rank: u8,
    from: Option<i64>,
    to: Option<i64>,
    grep: Option<String>,
}

impl Filter {
    fn new(o: &Options) -> Self {
        Self {
            components: o.components.iter().map(|c| c.to_lowercase()).collect(),
            min_rank: o.min_level.as_deref().map_or(0, |l| level_rank(Some(l))),
            from: o.from,
            to: o.to,
            grep: o.grep.as_ref().map(|g| g.to_lowercase()),
        }
    }

    fn component(&self, c: &str) -> bool {
        self.components.is_empty() || self.components.iter().any(|x| x.eq_ignore_ascii_case(c))
    }

    fn keeps(&self, r: &Record) -> bool {
        self.component(r.component())
            && r.rank >= self.min_rank
            && self.from.is_none_or(|f| r.ts >= f)
            && self.to.is_none_or(|t| r.ts <= t)
            && self.grep.as_ref().is_none_or(|g| {
                r.message().to_lowercase().contains(g)
                    || r.fields().any(|(_, v)| v.to_lowercase().contains(g))
            })
    }
}

/// The files a report reads, after `--components` and `--files N`.
pub struct Inputs {
    pub files: Vec<LogFile>,
    pub scans: Vec<read::Scan>,
    pub selected: Vec<bool>,
}

/// Find and scan the input files.
pub fn inputs(o: &Options) -> anyhow::Result<Inputs> {
    let files = read::discover(&o.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no log files (.log, .json, .jsonl, .ndjson, maybe .gz) under {}",
        o.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let popts = parse_options(o);
    let scans = read::scan_all(&files, &popts)?;
    let filter = Filter::new(o);
    let mut selected: Vec<bool> = scans
        .iter()
        .map(|s| s.components.is_empty() || s.components.iter().any(|(c, _)| filter.component(c)))
        .collect();
    if let Some(n) = o.newest_files {
        // A file belongs to the component most of its events have.
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, s) in scans.iter().enumerate() {
            let main = s
                .components
                .iter()
                .max_by_key(|(_, count)| *count)
                .map_or_else(|| files[i].name_component.clone(), |(c, _)| c.clone());
            groups.entry(main).or_default().push(i);
        }
        for members in groups.values_mut() {
            members.sort_by(|a, b| files[*b].modified.cmp(&files[*a].modified).then(b.cmp(a)));
            for &i in members.iter().skip(n) {
                selected[i] = false;
            }
        }
    }
    Ok(Inputs {
        files,
        scans,
        selected,
    })
}

fn parse_options(o: &Options) -> ParseOptions {
    ParseOptions {
        component_by: o.component_by.clone(),
        correlate: o.correlate.clone(),
    }
}

/// Write the report for `o` to `out`.
pub fn run(o: &Options, out: &mut (dyn Write + Send)) -> anyhow::Result<Summary> {
    let inputs = inputs(o)?;
    write_report(o, &inputs, out)
}

/// Events per component, found through the last component of each file
/// (a file usually holds one): no lookup by name per event.
struct Counts {
    components: Vec<(String, LevelCounts)>,
    /// Per file, the index of the component its last event had.
    last: Vec<usize>,
}

impl Counts {
    fn new(files: usize) -> Self {
        Self {
            components: Vec::new(),
            last: vec![usize::MAX; files],
        }
    }

    fn add(&mut self, r: &Record) {
        let c = r.component();
        let cached = self.last[r.file];
        let i = if self.components.get(cached).is_some_and(|(n, _)| n == c) {
            cached
        } else {
            match self.components.iter().position(|(n, _)| n == c) {
                Some(i) => i,
                None => {
                    self.components
                        .push((c.to_string(), LevelCounts::default()));
                    self.components.len() - 1
                }
            }
        };
        self.last[r.file] = i;
        let counts = &mut self.components[i].1;
        match r.rank {
            5.. => counts.error += 1,
            4 => counts.warn += 1,
            2 | 3 => counts.info += 1,
            _ => counts.debug += 1,
        }
        counts.total += 1;
    }
}

/// Records handed to the writer thread at a time, and batches in flight.
const BATCH: usize = 256;
const BATCHES: usize = 8;

/// Merge the selected files in time order; `see` is shown each record
/// `keep` accepts, in order. With a writer, those records are seen, then
/// formatted and written, on a thread of its own while the merge goes on,
/// in batches whose records are read into again once written. Returns the
/// merge, for its problems.
fn pump(
    inputs: &Inputs,
    writer: Option<&mut report::Writer<'_>>,
    keep: impl Fn(&Record) -> bool,
    mut see: impl FnMut(&Record) + Send,
) -> anyhow::Result<Merge> {
    let mut merge = Merge::new(&inputs.selected, &inputs.scans)?;
    let Some(writer) = writer else {
        let mut r = Record::default();
        while merge.next_into(&mut r)? {
            if keep(&r) {
                see(&r);
            }
        }
        return Ok(merge);
    };
    let files = &inputs.files;
    let (full_tx, full_rx) = mpsc::sync_channel::<(Vec<Record>, usize)>(BATCHES);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<Record>>();
    std::thread::scope(|s| {
        let formatter = s.spawn(move || -> std::io::Result<()> {
            for (batch, n) in full_rx {
                for r in &batch[..n] {
                    see(r);
                    writer.event(r, files)?;
                }
                // The merge has finished when nobody takes it back.
                let _ = empty_tx.send(batch);
            }
            Ok(())
        });
        let merged = (|| -> anyhow::Result<()> {
            let mut made = 0;
            loop {
                let mut batch = match empty_rx.try_recv() {
                    Ok(batch) => batch,
                    Err(_) if made < BATCHES + 1 => {
                        made += 1;
                        Vec::with_capacity(BATCH)
                    }
                    Err(_) => match empty_rx.recv() {
                        Ok(batch) => batch,
                        // The writer stopped: its error is the one to tell.
                        Err(_) => return Ok(()),
                    },
                };
                let (mut n, mut more) = (0, true);
                while n < BATCH {
                    if n == batch.len() {
                        batch.push(Record::default());
                    }
                    if !merge.next_into(&mut batch[n])? {
                        more = false;
                        break;
                    }
                    if keep(&batch[n]) {
                        n += 1;
                    }
                }
                if n > 0 && full_tx.send((batch, n)).is_err() || !more {
                    return Ok(());
                }
            }
        })();
        drop(full_tx);
        let written = formatter.join().expect("the timeline's writer thread");
        merged?;
        written.context("writing the timeline")
    })?;
    Ok(merge)
}

/// Write the report over already scanned inputs.
pub fn write_report(
    o: &Options,
    inputs: &Inputs,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<Summary> {
    let filter = Filter::new(o);
    let mut summary = Summary {
        files: inputs
            .files
            .iter()
            .zip(&inputs.selected)
            .zip(&inputs.scans)
            .filter(|((_, sel), _)| **sel)
            .map(|((f, _), s)| (f.path.display().to_string(), s.events))
            .collect(),
        ..Summary::default()
    };
    let mut writer = report::Writer::new(o, out);
    writer.header(&summary)?;

    // One pass for the statistics (and, in timeline mode, the events).
    let mut tracker = Tracker::default();
    let mut counts = Counts::new(inputs.files.len());
    let mut until_expiry = 4096;
    let events = (o.mode == Mode::Timeline).then_some(&mut writer);
    let merge = pump(
        inputs,
        events,
        |r| filter.keeps(r),
        |r| {
            summary.events += 1;
            summary.first_us.get_or_insert(r.ts);
            summary.last_us = Some(r.ts);
            counts.add(r);
            tracker.see(r);
            until_expiry -= 1;
            if until_expiry == 0 {
                tracker.expire(r.ts - o.request_timeout_us);
                // A pass looks at every request in flight: passes at most
                // that many events apart cost one look per event.
                until_expiry = tracker.active.len().max(4096);
            }
        },
    )?;
    summary.per_component = counts.components.into_iter().collect();
    for p in &merge.problems {
        summary.problems.push(match p {
            Problem::Malformed { file, line, error } => {
                format!(
                    "{}:{line}: malformed: {error}",
                    inputs.files[*file].path.display()
                )
            }
            Problem::NoTimestamp { file, line } => {
                format!(
                    "{}:{line}: no readable timestamp",
                    inputs.files[*file].path.display()
                )
            }
        });
    }
    summary.malformed = merge.malformed;
    summary.no_timestamp = merge.no_timestamp;
    tracker.close(&mut summary);

    if o.mode == Mode::Component {
        let components: Vec<String> = summary.per_component.keys().cloned().collect();
        for c in components {
            writer.section(&c)?;
            let keep = |r: &Record| r.component() == c && filter.keeps(r);
            pump(inputs, Some(&mut writer), keep, |_| {})?;
        }
    }
    writer.finish(&summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use read::{parse_line, LogFile};

    fn record(line: &str) -> Record {
        let log = LogFile {
            path: PathBuf::from("x.log"),
            name_component: "x".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let opts = ParseOptions {
            component_by: ComponentBy::Auto,
            correlate: "request_id".into(),
        };
        parse_line(line, 0, 1, &log, &opts).unwrap().unwrap()
    }

    #[test]
    fn latencies_past_the_exact_samples_stay_within_their_buckets() {
        let mut exact = Vec::new();
        let mut l = Latencies::default();
        // Spread over six decades, in a scrambled order.
        for i in 0..(EXACT_SAMPLES as i64 * 3) {
            let v = (i * 7919) % 1_000_003 * (1 + i % 1000);
            exact.push(v);
            l.add(v);
        }
        exact.sort_unstable();
        assert!(l.exact.is_empty() && l.buckets.len() <= bucket(exact[exact.len() - 1]) + 1);
        assert_eq!(
            (l.count, l.min, l.max),
            (exact.len() as u64, exact[0], exact[exact.len() - 1])
        );
        for p in [1.0, 50.0, 95.0, 99.9, 100.0] {
            let want = percentile(&exact, p);
            let got = l.percentile(p);
            assert!(
                (got - want).abs() as f64 <= want as f64 / 2048.0 + 1.0,
                "p{p}: {got} vs {want}"
            );
        }
        // Below the cap, exact.
        let mut small = Latencies::default();
        for v in [5, 1, 3] {
            small.add(v);
        }
        assert_eq!((small.percentile(50.0), small.percentile(95.0)), (3, 5));
        // Every value lands in a bucket whose middle is within 1/2048.
        for v in [
            0,
            1,
            2047,
            2048,
            2049,
            4095,
            4096,
            123_456_789,
            i64::MAX / 2,
        ] {
            let m = bucket_value(bucket(v));
            assert!(
                (m - v).abs() as f64 <= v as f64 / 2048.0 + 0.5,
                "{v} -> {m}"
            );
        }
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

    /// Fails every write after `left` bytes.
    struct Failing {
        left: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.left {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.left -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_ends_the_report_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for i in 0..50_000i64 {
            lines.push_str(&format!(
                "{{\"ts\":{},\"service\":\"api\",\"message\":\"event {i}\"}}\n",
                1_795_428_000_000 + i
            ));
        }
        std::fs::write(dir.path().join("api.log"), lines).unwrap();
        let o = Options {
            paths: vec![dir.path().to_path_buf()],
            ..Options::default()
        };
        for left in [0, 100, 3 << 19] {
            let err = run(&o, &mut Failing { left }).unwrap_err();
            assert!(
                format!("{err:#}").to_lowercase().contains("pipe"),
                "{err:#}"
            );
        }
    }
}
