//! `type = "dead_letters"`: send dead letters through the pipeline again,
//! automatically, after a delay, up to a number of attempts.
//!
//! ```toml
//! [sources.retry]
//! type = "dead_letters"
//! path = "logs/dead-letters.log"   # what a sink reading `_dead_letters` writes
//! retry_after = "10m"              # wait this long after a failure
//! max_attempts = 5                 # give up (and log it) after this many failures
//! ```
//!
//! The file is followed from its start; each record whose `attempt` is
//! below `max_attempts` is sent again `retry_after` after it was written,
//! once: what was sent is remembered, once delivered, in `FILE.replayed`
//! (the log `sluice dead-letters replay` keeps too), so a restart sends
//! nothing twice. An event that fails again becomes a new record with one
//! attempt more, which this source picks up in turn.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::dead_letters";

use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::{runs_itself, Batcher, Format, LineDecoder, Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BatchOverride, BuildContext, BuildError, TypeTag};
use crate::delivery::dead_letters::{replaying, Line, LineCutter, Record, ReplayLog};

/// `[sources.NAME] type = "dead_letters"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersSourceConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// The dead-letter file to follow.
    pub path: PathBuf,
    #[serde(default = "default_retry_after", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub retry_after: Duration,
    /// How many times a record is sent through again before it is left in
    /// the dead letters.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_attempts: u64,
    #[serde(default = "default_poll", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub poll_interval: Duration,
    /// The longest record read; a longer line is skipped (counted in
    /// `long_lines`, with a warning), never held whole.
    #[serde(default = "default_max_record", with = "crate::base::settings::size")]
    #[schemars(with = "crate::base::settings::schema::Size")]
    #[schemars(range(min = 1024, max = 1 << 30))]
    pub max_record: usize,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_retry_after() -> Duration {
    Duration::from_secs(600)
}
fn default_max_attempts() -> u64 {
    5
}
fn default_max_record() -> usize {
    crate::delivery::dead_letters::DEFAULT_MAX_RECORD
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}

impl SourceKind for DeadLettersSourceConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        bounded("max_attempts", self.max_attempts, 1, 1000)?;
        bounded(
            "retry_after",
            self.retry_after,
            Duration::ZERO,
            Duration::from_secs(366 * 24 * 3600),
        )?;
        bounded(
            "poll_interval",
            self.poll_interval,
            Duration::from_millis(10),
            Duration::from_secs(3600),
        )?;
        bounded("max_record", self.max_record, 1024, 1 << 30)?;
        let mut c = self.clone();
        c.path = cx.resolve(&self.path);
        Ok(Box::new(c))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(DeadLettersSourceConfig);

impl DeadLettersSourceConfig {
    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let log = Arc::new(Mutex::new(ReplayLog::load(&self.path)?));
        // Records read and not sent yet, with when they are due.
        let mut pending: VecDeque<(Record, std::time::SystemTime)> = VecDeque::new();
        let mut offset = 0u64;
        let mut cutter = LineCutter::new(self.max_record);
        let mut decoder = LineDecoder::new(Format::Auto, &ctx.name, None);
        let mut shutdown = ctx.shutdown.clone();
        loop {
            // New complete lines of the file.
            match read_from(&self.path, &mut offset, &mut cutter) {
                Ok(lines) => {
                    for line in lines {
                        let line = match line {
                            Line::Whole(l) => l,
                            Line::TooLong => {
                                tracing::warn!(target: LOG_TARGET, source = %ctx.name, max_record = self.max_record, "skipping a dead letter longer than max_record");
                                ComponentMetrics::add(&ctx.metrics.long_lines, 1);
                                continue;
                            }
                        };
                        let Ok(text) = std::str::from_utf8(&line) else {
                            continue;
                        };
                        if text.trim().is_empty() {
                            continue;
                        }
                        let record = match Record::parse(text) {
                            Ok(r) => r,
                            Err(e) => {
                                tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %e, "skipping a line that is not a dead letter");
                                continue;
                            }
                        };
                        if log.lock().expect("replay log").has(&record) {
                            continue;
                        }
                        if record.attempt >= self.max_attempts {
                            tracing::warn!(target: LOG_TARGET, source = %ctx.name,
                                dl_id = %record.id,
                                attempts = record.attempt,
                                component = %record.component,
                                error = %record.message,
                                "giving up on a dead letter after max_attempts"
                            );
                            ctx.metrics
                                .dropped
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let mut l = log.lock().expect("replay log");
                            l.insert(&record);
                            if let Err(e) = l.save() {
                                tracing::warn!(target: LOG_TARGET, source = %ctx.name, error = %format!("{e:#}"), "cannot save the replay log");
                            }
                            continue;
                        }
                        let due = chrono::DateTime::parse_from_rfc3339(&record.timestamp)
                            .map(|t| std::time::SystemTime::from(t.with_timezone(&chrono::Utc)))
                            .unwrap_or_else(|_| std::time::SystemTime::now())
                            + self.retry_after;
                        pending.push_back((record, due));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(target: LOG_TARGET, source = %ctx.name, path = %self.path.display(), error = %e, "cannot read the dead-letter file")
                }
            }
            // Send what is due, in batches, each remembered once delivered.
            let now = std::time::SystemTime::now();
            let (mut due, later): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(_, at)| *at <= now);
            pending.extend(later);
            while !due.is_empty() {
                let take = due.len().min(ctx.batch.max_events.max(1));
                let sent: Vec<Record> = due.drain(..take).map(|(r, _)| r).collect();
                let mut batcher = Batcher::new(ctx.batch);
                for r in &sent {
                    replaying(&r.id, r.attempt);
                    batcher.line(&mut decoder, &r.event);
                    ctx.dead.stats().replayed(&r.component, &r.kind, 1);
                }
                let log = log.clone();
                let name = ctx.name.clone();
                batcher.batch.acks.push(Ack::new(move |delivered| {
                    if !delivered {
                        return;
                    }
                    let mut l = log.lock().expect("replay log");
                    for r in &sent {
                        l.insert(r);
                    }
                    if let Err(e) = l.save() {
                        tracing::warn!(target: LOG_TARGET, source = %name, error = %format!("{e:#}"), "cannot save the replay log");
                    }
                }));
                if batcher.flush(&ctx).await.is_err() {
                    return Ok(());
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}

/// Most bytes read from the file per poll: what is read is held as
/// records until sent, so a huge backlog is taken a piece at a time.
const READ_PER_POLL: u64 = 64 << 20;

/// The complete lines of `path` past `offset` (a shorter file, rotated or
/// truncated, is read from its start again), at most [`READ_PER_POLL`]
/// bytes of them; each line at most the cutter's bound.
fn read_from(
    path: &std::path::Path,
    offset: &mut u64,
    cutter: &mut LineCutter,
) -> std::io::Result<Vec<Line>> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len < *offset {
        *offset = 0;
        cutter.reset();
    }
    file.seek(SeekFrom::Start(*offset))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(len - *offset));
    let mut lines = Vec::new();
    *offset += cutter.feed(&mut reader, &mut lines, READ_PER_POLL)?;
    Ok(lines)
}
