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
//!   smallest), the median is p50;
//! - a lost request is one whose last component is not the one where most
//!   multi-component requests end.

pub mod read;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

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

/// Follows requests by correlation id.
#[derive(Default)]
struct Tracker {
    /// Component names, shared by every segment that names them (no copy
    /// of a name per event).
    names: std::collections::HashSet<Arc<str>>,
    active: HashMap<String, Active>,
    hops: Vec<(HopKey, Vec<i64>)>,
    slowest: Vec<RequestPath>,
    ends: HashMap<Arc<str>, u64>,
    /// Finished requests, kept to list the lost ones (bounded; beyond it
    /// they are only counted).
    finished: Vec<Finished>,
    requests: u64,
}

const MAX_FINISHED: usize = 100_000;
const MAX_SAMPLES: usize = 1_000_000;
const SLOWEST: usize = 10;

impl Tracker {
    fn see(&mut self, r: &Record) {
        let Some(id) = r.correlation() else { return };
        if !self.active.contains_key(id) {
            self.active.insert(
                id.to_string(),
                Active {
                    first: r.ts,
                    last: r.ts,
                    segments: Vec::new(),
                },
            );
        }
        let a = self.active.get_mut(id).expect("inserted above");
        a.last = r.ts;
        match a.segments.last_mut() {
            Some((c, _, last)) if &**c == r.component() => *last = r.ts,
            _ => {
                let name = match self.names.get(r.component()) {
                    Some(n) => n.clone(),
                    None => {
                        let n: Arc<str> = r.component().into();
                        self.names.insert(n.clone());
                        n
                    }
                };
                a.segments.push((name, r.ts, r.ts));
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
            match self.hops.iter_mut().find(|(k, _)| (&k.0, &k.1) == key) {
                Some((_, samples)) if samples.len() < MAX_SAMPLES => samples.push(latency),
                Some(_) => {}
                None => self
                    .hops
                    .push(((pair[0].0.clone(), pair[1].0.clone()), vec![latency])),
            }
        }
        let request = Finished {
            id,
            total_us: a.last - a.first,
            path: a.segments.into_iter().map(|s| s.0).collect(),
        };
        if request.path.len() >= 2 {
            *self
                .ends
                .entry(request.path.last().expect("non-empty").clone())
                .or_default() += 1;
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
            .map(|((from, to), mut samples)| {
                samples.sort_unstable();
                Hop {
                    from: from.to_string(),
                    to: to.to_string(),
                    requests: samples.len() as u64,
                    min_us: samples[0],
                    median_us: percentile(&samples, 50.0),
                    p95_us: percentile(&samples, 95.0),
                    max_us: *samples.last().expect("non-empty"),
                }
            })
            .collect();
        summary.slowest = self.slowest;
        let expected = self
            .ends
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(c, _)| c.to_string());
        if let Some(end) = &expected {
            let lost = || {
                self.finished
                    .iter()
                    .filter(|r| r.path.last().map(|c| &**c) != Some(end.as_str()))
            };
            summary.lost_total = lost().count() as u64;
            summary.lost = lost().take(50).map(Finished::to_path).collect();
        }
        summary.expected_end = expected;
    }
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
            && level_rank(r.level()) >= self.min_rank
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
pub fn run(o: &Options, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let inputs = inputs(o)?;
    write_report(o, &inputs, out)
}

/// Write the report over already scanned inputs.
pub fn write_report(o: &Options, inputs: &Inputs, out: &mut dyn Write) -> anyhow::Result<Summary> {
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
    let mut merge = Merge::new(&inputs.selected, &inputs.scans)?;
    let mut seen = 0u64;
    while let Some(r) = merge.next_record()? {
        if !filter.keeps(&r) {
            continue;
        }
        summary.events += 1;
        summary.first_us.get_or_insert(r.ts);
        summary.last_us = Some(r.ts);
        // Looked up before inserting: no key copied per event.
        if !summary.per_component.contains_key(r.component()) {
            summary
                .per_component
                .insert(r.component().to_string(), LevelCounts::default());
        }
        let counts = summary
            .per_component
            .get_mut(r.component())
            .expect("inserted above");
        match level_rank(r.level()) {
            5.. => counts.error += 1,
            4 => counts.warn += 1,
            2 | 3 => counts.info += 1,
            _ => counts.debug += 1,
        }
        counts.total += 1;
        tracker.see(&r);
        seen += 1;
        if seen.is_multiple_of(4096) {
            tracker.expire(r.ts - o.request_timeout_us);
        }
        if o.mode == Mode::Timeline {
            writer.event(&r, &inputs.files)?;
        }
    }
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
            let mut merge = Merge::new(&inputs.selected, &inputs.scans)?;
            while let Some(r) = merge.next_record()? {
                if r.component() == c && filter.keeps(&r) {
                    writer.event(&r, &inputs.files)?;
                }
            }
        }
    }
    writer.finish(&summary)?;
    Ok(summary)
}
