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
//!   smallest); the median is the middle sample, or the midpoint of the
//!   two middle ones for an even count; exact up to [`EXACT_SAMPLES`] requests
//!   per hop, within 1/2048 past that (see [`Latencies`]);
//! - a lost request is one whose last component is not the one where most
//!   multi-component requests end.
//!
//! Its modules log under the targets they had in the `sluice` crate
//! (`sluice::{module}`, not this crate's name), so log lines and
//! `RUST_LOG=sluice::...` filters did not change when it was split off: each
//! module that logs names its `LOG_TARGET` (`tests/all/layers.rs` checks).

mod html;
pub mod read;
mod report;
mod requests;
mod select;
mod spill;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::Context;
use read::Merge;
pub use read::{ComponentBy, LogFile, Problem, Record};
pub use report::Format;
use requests::Tracker;
pub use requests::{median, percentile};
use select::Filter;
pub use select::{inputs, Inputs};

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
    /// The field that follows a request across components (a dotted path).
    pub correlate: String,
    /// Where the time, level and message are, if not in the usual fields.
    pub fields: read::FieldNames,
    /// Keep only events whose message or fields contain this (any case).
    pub grep: Option<String>,
    pub format: Format,
    /// Log time after which an idle request is considered finished.
    pub request_timeout_us: i64,
    /// Keys for `.age` files.
    pub identities: Option<sluice_core::base::crypt::Identities>,
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
            fields: Default::default(),
            grep: None,
            format: Format::Markdown,
            request_timeout_us: 5 * 60 * 1_000_000,
            identities: None,
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
    /// The message of the request's last event (its first 200 bytes).
    pub last_message: String,
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
    /// For the HTML report: each hop's p99 and histogram (same order as
    /// `hops`), the slowest requests' segments, and how many finished
    /// requests they were chosen from.
    #[serde(skip)]
    pub hop_details: Vec<html::HopDetail>,
    #[serde(skip)]
    pub request_details: Vec<html::RequestDetail>,
    #[serde(skip)]
    pub requests_kept_from: u64,
    /// For the HTML report: the events drawn as marks (bounded).
    #[serde(skip)]
    pub marks: html::Marks,
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
    let html = o.format == Format::Html;
    let mut tracker = Tracker::default();
    tracker.keep_segments = html;
    let mut marks = html::Marks::default();
    let mut counts = Counts::new(inputs.files.len());
    let mut until_expiry = 4096;
    // The page draws events as marks rather than listing them.
    let events = (o.mode == Mode::Timeline && !html).then_some(&mut writer);
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
            if html {
                marks.add(r);
            }
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
    summary.marks = marks;

    if o.mode == Mode::Component && !html {
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
    use read::{parse_line, LogFile, ParseOptions};

    /// A log file `x.log` and the default parse options.
    pub(super) fn fixture() -> (LogFile, ParseOptions) {
        let log = LogFile {
            path: PathBuf::from("x.log"),
            name_component: "x".into(),
            modified: std::time::SystemTime::UNIX_EPOCH,
        };
        let opts = ParseOptions {
            component_by: ComponentBy::Auto,
            correlate: "request_id".into(),
            fields: Default::default(),
            identities: None,
        };
        (log, opts)
    }

    pub(super) fn record(line: &str) -> Record {
        let (log, opts) = fixture();
        parse_line(line, 0, 1, &log, &opts).unwrap().unwrap()
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
