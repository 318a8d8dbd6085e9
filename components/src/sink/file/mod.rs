//! `type = "file"`: events written as lines to files named by a template
//! (`logs/{channel}-{%Y-%m-%d}.log`), rotated by time and size, compressed
//! and expired off the write path.
//!
//! A failed write (the folder deleted, the disk full) marks the sink down
//! (`/health` says why), and the bytes not yet written are retried with
//! exponential backoff until they are: nothing is lost or written twice, and
//! backpressure reaches the sources meanwhile. A file whose path no longer
//! leads to it (deleted or moved away by a rotation tool) is reopened.
//! Batches are dropped, which acknowledges their events to the source, only
//! once written and, with `sync`, once synced.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::file";

mod format;
mod sealed;
mod template;
mod tidy;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use super::{inputs_field, runs_itself, Sink, SinkContext, SinkKind};
use crate::base::crypt::Recipients;
use crate::base::event::SharedBatch;
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, size, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, DeadLetter, ErrorKind};

pub use format::{LineFormat, DEFAULT_TEXT};
pub use template::{DateFrom, Part, PathTemplate, Template, Zone};

/// When written data is forced to disk, and so when sources hear that it is
/// delivered.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Sync {
    /// Leave it to the OS (data survives a crash of sluice, not of the machine).
    #[default]
    None,
    /// `fsync` after every batch.
    Batch,
    /// `fsync` every `sync_interval`; acknowledgements wait for it.
    Interval,
}

/// `[sinks.NAME] type = "file"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Where each event goes, relative to the pipeline file: `{field}`,
    /// `{field|lower}`, `{%Y-%m-%d}` (in `timezone`, at the time `date_from`
    /// says). Folders are created.
    pub path: PathTemplate,
    /// The zone of `{%...}` in `path` and `template`: `"UTC"` (the
    /// default), `"local"` (the system's) or an IANA name
    /// (`"Europe/Paris"`): a day's file then runs from local midnight to
    /// local midnight, across daylight-saving changes.
    #[serde(default)]
    pub timezone: Zone,
    /// Which time `{%...}` shows: `"write"` (the default: when the line is
    /// written) or `"event"` (the event's `timestamp`; the time of writing
    /// when it has none): a replayed backlog lands in its days' files.
    #[serde(default)]
    pub date_from: DateFrom,
    /// What a field the path names is replaced by when an event lacks it.
    #[serde(default = "default_missing")]
    pub missing: String,
    /// Components this sink reads (may be empty for a `fallback` target).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    #[serde(default)]
    pub format: LineFormat,
    /// The line of `format = "text"`.
    #[serde(default, deserialize_with = "text_template")]
    pub template: Option<Template>,
    /// Start a new file when the current one is this old.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Duration>")]
    pub rotate_every: Option<Duration>,
    /// Start a new file before one would grow past this size.
    #[serde(default, with = "size::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Size>")]
    pub rotate_size: Option<usize>,
    /// Delete closed files older than this.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Duration>")]
    pub keep_for: Option<Duration>,
    /// Keep at most this many closed files of each path.
    #[serde(default)]
    pub keep_files: Option<usize>,
    /// Gzip closed files (`NAME.gz`).
    #[serde(default)]
    pub compress: bool,
    /// Most files open at once; the least recently used is closed.
    #[serde(default = "default_max_open_files")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_open_files: usize,
    #[serde(default)]
    pub sync: Sync,
    /// How often `sync = "interval"` syncs.
    #[serde(default = "default_sync_interval", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub sync_interval: Duration,
    /// Encrypt every file to age recipients (`NAME.age`; with `compress`,
    /// compressed then encrypted: `NAME.gz.age`).
    #[serde(default)]
    pub encrypt: Option<EncryptConfig>,
}

/// `encrypt = { recipients = ["age1..."] }` of a file sink.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptConfig {
    /// Public keys (`age1...`, as `age-keygen` prints them).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of public keys, one per line (`#` comments), relative to the
    /// pipeline file; read when the sink starts.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// Finish a file whose last lines have waited this long for their
    /// 64 KiB chunk to fill: only then are they durable and acknowledged.
    #[serde(default = "default_seal_after", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub seal_after: Duration,
    /// The keys, once `build` has read them.
    #[serde(skip)]
    pub keys: Option<Recipients>,
}

/// Settings compare by value for reloads; a recipients file may have new
/// keys behind the same name, so a sink reading one is always restarted by
/// a reload (its files are finished, new ones use the file's keys now).
impl PartialEq for EncryptConfig {
    fn eq(&self, other: &Self) -> bool {
        self.recipients_file.is_none()
            && other.recipients_file.is_none()
            && self.recipients == other.recipients
            && self.seal_after == other.seal_after
    }
}

fn default_seal_after() -> Duration {
    Duration::from_secs(60)
}

fn default_missing() -> String {
    "unknown".to_string()
}
fn default_max_open_files() -> usize {
    256
}
fn default_sync_interval() -> Duration {
    Duration::from_secs(1)
}

fn text_template<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Template>, D::Error> {
    let text = String::deserialize(d)?;
    Template::parse(&text, true)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// First and longest wait between two attempts at a failed write.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often idle files are checked for rotation.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How often retention looks at the folders (a listing per path written).
const RETAIN_EVERY: Duration = Duration::from_secs(5);

/// Most bytes of queued batches written in one round.
const ROUND_BYTES: usize = 4 << 20;

/// Most bytes of batches an encrypting sink holds unacknowledged while
/// their lines wait for a chunk to complete; past it the files they wait
/// on are finished.
const HOLD_BYTES: usize = 64 << 20;

/// Batches written to encrypted files whose lines are not all durable.
struct Held {
    round: u64,
    keys: Vec<Vec<String>>,
    batches: Vec<SharedBatch>,
    bytes: usize,
}

impl SinkKind for FileSinkConfig {
    /// Check what serde cannot (a name for missing fields that is one, a
    /// template for the text format only); resolve the path against the
    /// pipeline file.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded("max_open_files", self.max_open_files, 1, 65_536)?;
        if let Some(n) = self.rotate_size {
            bounded("rotate_size", n, 1024, usize::MAX)?;
        }
        if let Some(n) = self.keep_files {
            bounded("keep_files", n, 1, 1_000_000)?;
        }
        bounded(
            "sync_interval",
            self.sync_interval,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        if template::file_name_part(&self.missing, "") != self.missing || self.missing.is_empty() {
            return Err(BuildError::key(
                "missing",
                format!("missing = {:?} cannot be part of a file name", self.missing),
            ));
        }
        if self.template.is_some() && self.format != LineFormat::Text {
            return Err(BuildError::key(
                "template",
                "`template` is for format = \"text\"",
            ));
        }
        let mut c = self.clone();
        c.path.base = cx.resolve(std::path::Path::new(""));
        c.path.zone = c.timezone;
        c.path.from_event = c.date_from == DateFrom::Event;
        if let Some(e) = c.encrypt.as_mut() {
            bounded(
                "encrypt.seal_after",
                e.seal_after,
                Duration::from_millis(10),
                Duration::from_secs(24 * 3600),
            )?;
            let mut entries = e.recipients.clone();
            if let Some(file) = &e.recipients_file {
                let path = cx.resolve(file);
                let text = std::fs::read_to_string(&path).map_err(|err| {
                    BuildError::key(
                        "encrypt",
                        format!("recipients_file: cannot read {}: {err}", path.display()),
                    )
                })?;
                entries.extend(text.lines().map(str::to_string));
            }
            let keys = Recipients::parse(entries.iter().map(String::as_str)).map_err(|err| {
                let which = match e.recipients_file {
                    Some(_) => "recipients and recipients_file",
                    None => "recipients",
                };
                BuildError::key("encrypt", format!("{which}: {err}"))
            })?;
            e.keys = Some(keys);
            c.path.suffix = match c.compress {
                true => ".gz.age".into(),
                false => ".age".into(),
            };
        }
        Ok(Box::new(c))
    }

    inputs_field!();
}
runs_itself!(FileSinkConfig);

impl FileSinkConfig {
    fn formatter(&self) -> format::Formatter {
        let template = self
            .template
            .clone()
            .unwrap_or_else(|| Template::parse(DEFAULT_TEXT, true).expect("default parses"));
        format::Formatter::new(
            self.format,
            template,
            &self.missing,
            self.timezone,
            self.date_from == DateFrom::Event,
        )
    }

    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let cfg = Arc::new(self);
        let in_use = writer::InUse::default();
        let (jobs, rx) = std::sync::mpsc::channel();
        let tidier = {
            let (cfg, in_use) = (cfg.clone(), in_use.clone());
            std::thread::Builder::new()
                .name(format!("sluice-tidy-{}", ctx.name))
                .spawn(move || tidy::run(cfg, in_use, rx))?
        };
        let mut w = Some(Box::new(writer::Writer::new(
            cfg.clone(),
            in_use,
            jobs.clone(),
            ctx.metrics.clone(),
        )));
        let encrypted = cfg.encrypt.is_some();
        if let Some(keys) = cfg.encrypt.as_ref().and_then(|e| e.keys.as_ref()) {
            ctx.metrics
                .set_recipients(Some((keys.fingerprint.clone(), keys.len())));
            tracing::info!(target: LOG_TARGET, sink = %ctx.name, recipients = keys.len(), fingerprint = %keys.fingerprint, "encrypting files (age)");
        }
        // Batches written but not yet synced (`sync = "interval"`): their
        // acknowledgements wait.
        let mut unsynced: Vec<SharedBatch> = Vec::new();
        // Batches in encrypted files' incomplete chunks: their
        // acknowledgements wait too.
        let mut held: VecDeque<Held> = VecDeque::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        // The first retention pass comes with the first sweep after writing.
        let mut retained_at: Option<Instant> = None;
        let mut sync_tick = tokio::time::interval(cfg.sync_interval);
        loop {
            tokio::select! {
                first = ctx.input.recv() => {
                    let Some(first) = first else { break };
                    // Write whatever else is already queued in the same round.
                    let mut bytes = first.bytes();
                    let mut batches = vec![first];
                    while bytes < ROUND_BYTES {
                        match ctx.input.try_recv() {
                            Ok(batch) => {
                                bytes += batch.bytes();
                                batches.push(batch);
                            }
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    let round = batches.clone();
                    on_writer(&mut w, move |w| w.append(&round, chrono::Utc::now())).await;
                    retry(&ctx, &mut w, writer::Writer::flush).await;
                    refuse(&ctx, &mut w, &batches).await;
                    if cfg.sync == Sync::Batch {
                        retry(&ctx, &mut w, writer::Writer::sync_dirty).await;
                    }
                    ctx.metrics.batch_seconds.observe(started.elapsed());
                    for b in &batches {
                        ctx.account(b);
                    }
                    if encrypted {
                        let home = w.as_ref().expect("writer is home");
                        held.push_back(Held {
                            round: home.round(),
                            keys: home.touched(),
                            bytes: batches.iter().map(|b| b.bytes()).sum(),
                            batches,
                        });
                        if held.iter().map(|h| h.bytes).sum::<usize>() > HOLD_BYTES {
                            let oldest = held.front().map_or(0, |h| h.round);
                            tracing::debug!(target: LOG_TARGET, sink = %ctx.name, "too much waits for chunks to complete: finishing the files it waits on");
                            on_writer(&mut w, move |w| w.seal_waiting(oldest, chrono::Utc::now())).await;
                            retry(&ctx, &mut w, writer::Writer::flush).await;
                        }
                        release(&w, &mut held, &mut unsynced, cfg.sync);
                    } else if cfg.sync == Sync::Interval {
                        unsynced.extend(batches);
                    }
                }
                _ = sweep.tick() => {
                    on_writer(&mut w, |w| w.sweep(chrono::Utc::now())).await;
                    retry(&ctx, &mut w, writer::Writer::flush).await;
                    release(&w, &mut held, &mut unsynced, cfg.sync);
                    if (cfg.keep_for.is_some() || cfg.keep_files.is_some())
                        && retained_at.is_none_or(|t| t.elapsed() >= RETAIN_EVERY)
                    {
                        let keys = w.as_ref().expect("writer is home").keys();
                        if !keys.is_empty() {
                            retained_at = Some(Instant::now());
                            let _ = jobs.send(tidy::Job::Sweep(keys));
                        }
                    }
                }
                _ = sync_tick.tick(), if cfg.sync == Sync::Interval => {
                    retry(&ctx, &mut w, writer::Writer::sync_dirty).await;
                    unsynced.clear();
                }
            }
        }
        retry(&ctx, &mut w, writer::Writer::close).await;
        drop(held);
        drop(unsynced);
        drop((w, jobs));
        tokio::task::spawn_blocking(move || tidier.join())
            .await?
            .map_err(|_| anyhow::anyhow!("sink {}: the tidying thread panicked", ctx.name))?;
        Ok(())
    }
}

/// Run `f` on the writer on a blocking thread, and bring the writer back.
async fn on_writer<T: Send + 'static>(
    w: &mut Option<Box<writer::Writer>>,
    f: impl FnOnce(&mut writer::Writer) -> T + Send + 'static,
) -> T {
    let mut taken = w.take().expect("writer is home");
    let result = tokio::task::spawn_blocking(move || {
        let out = f(&mut taken);
        (taken, out)
    })
    .await;
    let (back, out) = match result {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down under us (a failed start, the end
        // of a test): this task is being dropped; do not panic about it.
        Err(_) => std::future::pending().await,
    };
    *w = Some(back);
    out
}

/// Acknowledge (or, with `sync = "interval"`, pass on to the next sync) the
/// held batches whose lines are all durable now, oldest first.
fn release(
    w: &Option<Box<writer::Writer>>,
    held: &mut VecDeque<Held>,
    unsynced: &mut Vec<SharedBatch>,
    sync: Sync,
) {
    let w = w.as_ref().expect("writer is home");
    while let Some(h) = held.front() {
        if h.keys
            .iter()
            .any(|k| w.waiting_round(k).is_some_and(|r| r <= h.round))
        {
            break;
        }
        let h = held.pop_front().expect("checked above");
        if sync == Sync::Interval {
            unsynced.extend(h.batches);
        }
    }
}

/// Send what the writer can never write to the dead letters, with the
/// reason; the round's sources hear of their events once those are written.
async fn refuse(ctx: &SinkContext, w: &mut Option<Box<writer::Writer>>, round: &[SharedBatch]) {
    let refused = std::mem::take(&mut w.as_mut().expect("writer is home").refused);
    if refused.is_empty() {
        return;
    }
    let letters: Vec<DeadLetter<'_>> = refused
        .iter()
        .map(|(event, reason)| DeadLetter {
            event,
            kind: ErrorKind::Write,
            message: reason.clone(),
        })
        .collect();
    match &ctx.dead {
        Some(dead) => {
            let acks: Vec<_> = round.iter().flat_map(|b| b.acks.iter().cloned()).collect();
            dead.send(&ctx.metrics, &letters, &acks).await;
        }
        None => {
            ComponentMetrics::add(&ctx.metrics.failed, letters.len());
            tracing::error!(target: LOG_TARGET, sink = %ctx.name, events = letters.len(), error = %letters[0].message, "events this sink can never write are lost: it reads the dead letters itself");
        }
    }
}

/// Run `f` until it succeeds, with backoff, marking the sink down meanwhile.
async fn retry(
    ctx: &SinkContext,
    w: &mut Option<Box<writer::Writer>>,
    f: fn(&mut writer::Writer) -> Result<(), writer::WriteError>,
) {
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    while let Err(reason) = on_writer(w, f).await {
        let delay = backoff.next_delay();
        tracing::warn!(target: LOG_TARGET, sink = %ctx.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
        ctx.metrics.set_down(Some(reason.to_string()));
        ComponentMetrics::add(&ctx.metrics.retries, 1);
        tokio::time::sleep(delay).await;
    }
    if backoff.attempts() > 0 {
        tracing::info!(target: LOG_TARGET, sink = %ctx.name, "writing again");
        ctx.metrics.set_down(None);
    }
}
