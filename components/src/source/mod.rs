//! Sources: where events come from.
//!
//! A source is a config struct, a `run` over a [`SourceContext`], and the
//! shared machinery here: turning lines into events ([`LineDecoder`]) and
//! gathering events into batches ([`Batcher`]).

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source";

pub mod checkpoint;
pub mod dead_letters;
pub mod declared_metrics;
pub mod file;
pub mod fingerprint;
pub mod generate;
pub mod http;
pub mod journald;
pub mod nats;
pub mod otlp;
pub mod records;
pub mod redis;
pub mod redis_list;
pub mod stdin;
pub mod syslog;

use std::sync::Arc;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::base::event::{push_json_str, scan_object, Batch, Clock};
use crate::base::metrics::ComponentMetrics;
use crate::base::output::{Closed, Output, Shutdown};
use crate::base::settings::{kinds, BatchConfig, BatchOverride, BuildContext, BuildError, Task};
use crate::base::timestamp::{self, TimestampRules};
use crate::delivery::{DeadLetter, DeadLetters, ErrorKind};

kinds! {
    /// `[sources.NAME]`: the closed set of source kinds, chosen by `type`.
    pub enum SourceConfig: dyn SourceKind {
        "stdin" => Stdin(stdin::StdinConfig),
        "file" => File(file::FileConfig),
        "generate" => Generate(generate::GenerateConfig),
        "http" => Http(http::HttpConfig),
        "redis" => Redis(redis::RedisSourceConfig),
        "otlp" => Otlp(otlp::OtlpSourceConfig),
        "syslog" => Syslog(syslog::SyslogConfig),
        "journald" => Journald(journald::JournaldConfig),
        "dead_letters" => DeadLetters(dead_letters::DeadLettersSourceConfig),
        "nats" => Nats(nats::NatsSourceConfig),
        "declared_metrics" => DeclaredMetrics(declared_metrics::DeclaredMetricsConfig),
    }
    internal {
        /// Events given in memory: what `sluice test` feeds a pipeline. Not
        /// a `type` a pipeline file can name.
        Memory(MemoryConfig),
    }
}

/// What every source kind's config implements. The topology knows sources
/// only through it.
pub trait SourceKind: std::fmt::Debug + Send + Sync {
    /// Check what can be checked before running (an unset variable, a bad
    /// URL) and return the source ready to start, its paths resolved.
    /// `sluice validate` reports these errors as it reports parse errors.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError>;

    /// The source's override of the pipeline's batching (`batch = {...}`).
    fn batch(&self) -> Option<BatchOverride> {
        None
    }

    /// The addresses it listens on, each with its key (`address`,
    /// `grpc_address`): no two listeners of one pipeline may share one.
    fn listens_on(&self) -> Vec<(&'static str, &str)> {
        Vec::new()
    }
}

/// `impl Source` for a config that is its own running source, through its
/// inherent `async fn run(self, ctx)`.
macro_rules! runs_itself {
    ($t:ty) => {
        impl $crate::source::Source for $t {
            fn start(
                self: Box<Self>,
                ctx: $crate::source::SourceContext,
            ) -> $crate::base::settings::Task {
                Box::pin(self.run(ctx))
            }
        }
    };
}
use runs_itself;

/// A built source.
pub trait Source: Send {
    /// The task that reads until shutdown and sends what it reads to
    /// `ctx.output`.
    fn start(self: Box<Self>, ctx: SourceContext) -> Task;
}

/// The lines a [`SourceConfig::Memory`] source emits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryConfig {
    pub lines: std::sync::Arc<Vec<Vec<u8>>>,
}

impl SourceKind for MemoryConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        Ok(Box::new(self.clone()))
    }
}

runs_itself!(MemoryConfig);

impl MemoryConfig {
    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let mut decoder = LineDecoder::new(Format::Auto, &ctx.name, None);
        let mut batcher = Batcher::new(ctx.batch);
        for line in self.lines.iter() {
            batcher.line(&mut decoder, line);
            if batcher.is_full() {
                batcher.flush(&ctx).await?;
            }
        }
        batcher.flush(&ctx).await?;
        Ok(())
    }
}

/// How a line-oriented source reads its lines.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON objects as they are; any other line as `{"message": line}`.
    #[default]
    Auto,
    /// Every line must be a JSON object; others go to the dead letters.
    Json,
    /// Every line is text: `{"message": line}`.
    Text,
    /// containerd and CRI-O log files (`TIME STREAM P|F CONTENT`): the
    /// content read as `auto`, partial lines joined, with `stream`.
    Cri,
    /// Docker's json-file logs (`{"log":...,"stream":...,"time":...}`),
    /// likewise.
    Docker,
}

/// What every running source is given.
pub struct SourceContext {
    pub name: Arc<str>,
    pub batch: BatchConfig,
    pub output: Output,
    pub dead: DeadLetters,
    pub metrics: Arc<ComponentMetrics>,
    pub shutdown: Shutdown,
    /// Every component's metrics (what `declared_metrics` reads).
    pub registry: crate::base::metrics::Registry,
}

/// Turns lines of input into events.
#[derive(Debug)]
pub struct LineDecoder {
    format: Format,
    /// Metadata appended to text events: `"source":"NAME"` and, for files,
    /// `"file":"PATH"`, pre-encoded once.
    meta: Vec<u8>,
    clock: Clock,
    /// Where an object without `timestamp` has its time (the source's
    /// `timestamp` rules, or the defaults), ready to be caught in the pass
    /// that checks an object.
    candidates: timestamp::Candidates,
    /// The second of the last time written, and its text.
    seconds: timestamp::Seconds,
    /// Counts the times that did not parse.
    metrics: Option<Arc<ComponentMetrics>>,
}

impl LineDecoder {
    pub fn new(format: Format, source: &str, file: Option<&str>) -> Self {
        let mut meta = Vec::new();
        meta.extend_from_slice(b",\"source\":");
        push_json_str(&mut meta, source);
        if let Some(f) = file {
            meta.extend_from_slice(b",\"file\":");
            push_json_str(&mut meta, f);
        }
        Self {
            format,
            meta,
            clock: Clock::default(),
            candidates: timestamp::Candidates::new(None),
            seconds: timestamp::Seconds::default(),
            metrics: None,
        }
    }

    /// Take an event's time from `rules` (None: the defaults), counting in
    /// `metrics` the times that do not parse.
    pub fn with_times(
        mut self,
        rules: Option<TimestampRules>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        self.candidates = timestamp::Candidates::new(rules.as_ref());
        self.metrics = Some(metrics);
        self
    }

    /// Append the event for `line` (without its newline) to `batch`, or say
    /// why it cannot be one. Empty lines are skipped (`Ok(false)`).
    pub fn decode(&mut self, line: &[u8], batch: &mut Batch) -> Result<bool, String> {
        self.decode_at(line, batch, None)
    }

    /// [`LineDecoder::decode`], with `time` (a container runtime's) in place
    /// of the arrival time for an event that has no time of its own.
    pub fn decode_at(
        &mut self,
        line: &[u8],
        batch: &mut Batch,
        time: Option<timestamp::Stamp>,
    ) -> Result<bool, String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let looks_json = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if self.format != Format::Text && looks_json {
            // The time candidates are caught in the pass that checks the
            // object (a field lookup's cost, whatever the shape); on the
            // stack for up to MAX_CAUGHT of them.
            let heads = &self.candidates.heads;
            let mut small = [None; MAX_CAUGHT];
            let mut large = Vec::new();
            let caught = if heads.len() <= MAX_CAUGHT {
                &mut small[..heads.len()]
            } else {
                large.resize(heads.len(), None);
                &mut large[..]
            };
            match scan_object(line, heads, self.candidates.filter, caught) {
                Ok(info) if info.has_timestamp => {
                    batch.push(line);
                    return Ok(true);
                }
                Ok(_) => {
                    let line = line.trim_ascii();
                    let body = line[1..].trim_ascii_start();
                    batch.data.extend_from_slice(b"{\"timestamp\":\"");
                    match self.candidates.find(caught) {
                        timestamp::Found::Time(t) => {
                            t.write_with(&mut self.seconds, &mut batch.data)
                        }
                        found => {
                            if found == timestamp::Found::Unparsable {
                                if let Some(m) = &self.metrics {
                                    ComponentMetrics::add(&m.timestamps_unparsed, 1);
                                }
                            }
                            match time {
                                Some(t) => t.write_with(&mut self.seconds, &mut batch.data),
                                None => batch.data.extend_from_slice(self.clock.now().as_bytes()),
                            }
                        }
                    }
                    batch.data.push(b'"');
                    if body != b"}" {
                        batch.data.push(b',');
                    }
                    batch.data.extend_from_slice(body);
                    batch.seal();
                    return Ok(true);
                }
                Err(e) if self.format == Format::Json => {
                    return Err(format!("malformed JSON: {e}"))
                }
                Err(_) => {}
            }
        } else if self.format == Format::Json {
            return Err("not a JSON object".to_string());
        }
        // Checked whole first (vectorised): the lossy decoder goes a
        // character at a time, and most lines are valid.
        let text = match std::str::from_utf8(line) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(line),
        };
        batch.data.extend_from_slice(b"{\"timestamp\":\"");
        match time {
            Some(t) => t.write_with(&mut self.seconds, &mut batch.data),
            None => batch.data.extend_from_slice(self.clock.now().as_bytes()),
        }
        batch.data.extend_from_slice(b"\",\"message\":");
        push_json_str(&mut batch.data, &text);
        batch.data.extend_from_slice(&self.meta);
        batch.data.push(b'}');
        batch.seal();
        Ok(true)
    }
}

/// Most time candidates caught without an allocation.
const MAX_CAUGHT: usize = 16;

/// The time of a parsed event that has no `timestamp`, from its own
/// fields by `rules` (None: the defaults); a candidate that does not parse
/// is counted in `metrics`.
pub fn event_time_of(
    rules: Option<&TimestampRules>,
    map: &serde_json::Map<String, serde_json::Value>,
    metrics: Option<&ComponentMetrics>,
) -> Option<String> {
    match timestamp::find(rules, map) {
        timestamp::Found::Time(t) => Some(t.to_rfc3339()),
        timestamp::Found::Unparsable => {
            if let Some(m) = metrics {
                ComponentMetrics::add(&m.timestamps_unparsed, 1);
            }
            None
        }
        timestamp::Found::Absent => None,
    }
}

/// Gathers events into batches of `max_events`, sent at the latest
/// `max_wait` after their first event.
pub struct Batcher {
    cfg: BatchConfig,
    pub batch: Batch,
    first_at: Option<Instant>,
    /// Lines that failed to decode, with the reason, awaiting dead-lettering.
    rejected: Vec<(Vec<u8>, String)>,
}

impl Batcher {
    pub fn new(cfg: BatchConfig) -> Self {
        Self {
            cfg,
            batch: Batch::with_capacity(cfg.max_events, cfg.max_events * 256),
            first_at: None,
            rejected: Vec::new(),
        }
    }

    /// Decode one line into the current batch.
    pub fn line(&mut self, decoder: &mut LineDecoder, line: &[u8]) {
        match decoder.decode(line, &mut self.batch) {
            Ok(true) => {
                if self.first_at.is_none() {
                    self.first_at = Some(Instant::now());
                }
            }
            Ok(false) => {}
            Err(reason) => self.rejected.push((line.to_vec(), reason)),
        }
    }

    /// Send `line` to the dead letters with `reason` at the next flush.
    pub fn reject(&mut self, line: &[u8], reason: String) {
        self.rejected.push((line.to_vec(), reason));
    }

    /// Note that an event was appended to `batch` directly.
    pub fn pushed(&mut self) {
        if self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
    }

    pub fn is_full(&self) -> bool {
        self.batch.len() >= self.cfg.max_events
    }

    /// When the partial batch must go, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.cfg.max_wait)
    }

    pub fn is_due(&self) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| d <= Instant::now())
    }

    /// Send the lines rejected since the last flush to the dead letters,
    /// holding `acks` until they are written (none: the dead letters are
    /// the end of the line for them).
    pub async fn dead_letter_rejected(
        &mut self,
        ctx: &SourceContext,
        acks: &[Arc<crate::base::ack::Ack>],
    ) {
        if self.rejected.is_empty() {
            return;
        }
        let rejected = std::mem::take(&mut self.rejected);
        let letters: Vec<DeadLetter<'_>> = rejected
            .iter()
            .map(|(line, reason)| DeadLetter {
                event: line,
                kind: ErrorKind::Decode,
                message: reason.clone(),
            })
            .collect();
        ctx.dead.send(&ctx.metrics, &letters, acks).await;
    }

    /// Send the current batch with `ack` on it, the lines rejected since
    /// the last flush going to the dead letters holding the same `ack`:
    /// it fires once both are delivered.
    pub async fn flush_acked(
        &mut self,
        ctx: &SourceContext,
        ack: Arc<crate::base::ack::Ack>,
    ) -> Result<(), Closed> {
        self.dead_letter_rejected(ctx, std::slice::from_ref(&ack))
            .await;
        self.batch.acks.push(ack);
        self.flush(ctx).await
    }

    /// Send the current batch (and any rejected lines to the dead letters).
    pub async fn flush(&mut self, ctx: &SourceContext) -> Result<(), Closed> {
        self.dead_letter_rejected(ctx, &[]).await;
        self.first_at = None;
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = Batch::with_capacity(self.cfg.max_events, self.batch.data.capacity());
        let batch = std::mem::replace(&mut self.batch, next);
        ComponentMetrics::add(&ctx.metrics.events_in, batch.len());
        ComponentMetrics::add(&ctx.metrics.bytes_in, batch.bytes());
        ctx.output.send(0, batch).await
    }
}

/// Read lines from `reader` until EOF or shutdown, batching their events
/// (stdin; files have their own reader in [`file`]). A line longer than
/// `max_line` bytes is cut there (the event holds its first `max_line`
/// bytes; the rest of it is skipped), so memory stays bounded whatever the
/// input. Returns the number of bytes read.
pub async fn read_lines<R: AsyncRead + Unpin>(
    ctx: &mut SourceContext,
    reader: &mut R,
    decoder: &mut LineDecoder,
    records: &mut records::Records,
    max_line: usize,
) -> Result<u64, Closed> {
    let mut batcher = Batcher::new(ctx.batch);
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut total = 0u64;
    // Inside a line already cut at `max_line`: drop bytes to its newline.
    let mut skipping = false;
    let mut shutdown = ctx.shutdown.clone();
    let metrics = ctx.metrics.clone();
    loop {
        let deadline = batcher.deadline();
        let held = records.due_at().map(Instant::from_std);
        let read = tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep_until(held.unwrap_or_else(Instant::now)), if held.is_some() => {
                records.expire(&mut batcher, decoder);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                batcher.flush(ctx).await?;
                continue;
            }
            r = reader.read_buf(&mut buf) => r,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(target: LOG_TARGET, source = %ctx.name, error = %e, "read failed; stopping source");
                break;
            }
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        // Every complete line of the buffer; the partial last one stays.
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[start..]) {
            if !std::mem::take(&mut skipping) {
                let line = &buf[start..start + i.min(max_line)];
                if records.is_plain() {
                    batcher.line(decoder, line);
                } else {
                    records.line(line, 0, 0, &mut batcher, decoder, &metrics);
                }
            }
            start += i + 1;
            if batcher.is_full() {
                batcher.flush(ctx).await?;
            }
        }
        buf.drain(..start);
        if buf.len() > max_line {
            // No newline within `max_line`: the line is cut here.
            if !skipping {
                ComponentMetrics::add(&ctx.metrics.long_lines, 1);
                batcher.line(decoder, &buf[..max_line]);
                skipping = true;
            }
            buf.clear();
        }
        if batcher.is_due() {
            batcher.flush(ctx).await?;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
    }
    // A last line without a newline at EOF is still a line.
    if !buf.is_empty() && !skipping {
        if records.is_plain() {
            batcher.line(decoder, &buf);
        } else {
            records.line(&buf, 0, 0, &mut batcher, decoder, &metrics);
        }
    }
    records.finish(&mut batcher, decoder);
    batcher.flush(ctx).await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::event::check_object;

    fn decode(format: Format, line: &str) -> Result<String, String> {
        let mut d = LineDecoder::new(format, "src", Some("app.log"));
        let mut b = Batch::default();
        d.decode(line.as_bytes(), &mut b)?;
        Ok(String::from_utf8(b.get(0).to_vec()).unwrap())
    }

    #[test]
    fn json_with_timestamp_is_kept_verbatim() {
        let line = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"info"}"#;
        assert_eq!(decode(Format::Auto, line).unwrap(), line);
    }

    #[test]
    fn json_without_timestamp_gets_one() {
        let out = decode(Format::Auto, r#"{"level":"info"}"#).unwrap();
        assert!(
            out.starts_with(r#"{"timestamp":""#) && out.ends_with(r#"","level":"info"}"#),
            "{out}"
        );
        check_object(out.as_bytes()).unwrap();
        let out = decode(Format::Auto, "{}").unwrap();
        check_object(out.as_bytes()).unwrap();
    }

    #[test]
    fn text_lines_become_messages() {
        let out = decode(Format::Auto, "disk \"full\"\r").unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], "disk \"full\"");
        assert_eq!(v["source"], "src");
        assert_eq!(v["file"], "app.log");
        let out = decode(Format::Text, r#"{"a":1}"#).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], r#"{"a":1}"#);
    }

    #[test]
    fn json_format_rejects_bad_lines() {
        assert!(decode(Format::Json, "{broken")
            .unwrap_err()
            .contains("malformed JSON"));
        assert!(decode(Format::Json, "plain")
            .unwrap_err()
            .contains("not a JSON object"));
        assert!(decode(Format::Auto, "{broken")
            .unwrap()
            .contains(r#""message":"{broken""#));
    }

    /// The time each library writes, read in the checking pass, with the
    /// precision it had (#37).
    #[test]
    fn every_shape_gets_its_own_time_at_its_precision() {
        let cases = [
            (
                r#"{"created":1796474732.999999,"msg":"x"}"#,
                "2026-12-05T12:45:32.999999Z",
            ),
            (
                r#"{"time":1796474732999,"msg":"x"}"#,
                "2026-12-05T12:45:32.999Z",
            ),
            (
                r#"{"ts":1796474732999123,"msg":"x"}"#,
                "2026-12-05T12:45:32.999123Z",
            ),
            (
                r#"{"ts":1796474732999123456,"msg":"x"}"#,
                "2026-12-05T12:45:32.999123456Z",
            ),
            (r#"{"ts":1796474732,"msg":"x"}"#, "2026-12-05T12:45:32.000Z"),
            (
                r#"{"datetime":"2026-12-04T20:25:32.123456+01:00","msg":"x"}"#,
                "2026-12-04T19:25:32.123456Z",
            ),
            (
                r#"{"@timestamp":"2026-12-04T19:25:32.5Z","msg":"x"}"#,
                "2026-12-04T19:25:32.500Z",
            ),
            (
                r#"{"time":"2026-12-04 19:25:32,123","msg":"x"}"#,
                "2026-12-04T19:25:32.123Z",
            ),
            (
                r#"{"text":"t","record":{"level":{"name":"INFO"},"time":{"repr":"x","timestamp":1796474732.123456}}}"#,
                "2026-12-05T12:45:32.123456Z",
            ),
            (
                r#"{"record.time.timestamp":1796474732.5,"msg":"x"}"#,
                "2026-12-05T12:45:32.500Z",
            ),
            (
                r#"{"created":"1796474732.25","msg":"x"}"#,
                "2026-12-05T12:45:32.250Z",
            ),
        ];
        for (line, want) in cases {
            let out = decode(Format::Auto, line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["timestamp"], want, "{line}");
            // The rest of the event as it was.
            assert!(out.ends_with(&line[1..]), "{out}");
        }
        // A candidate that does not parse: the arrival time, counted.
        let metrics = Arc::new(ComponentMetrics::default());
        let mut d = LineDecoder::new(Format::Auto, "src", None).with_times(None, metrics.clone());
        let mut b = Batch::default();
        d.decode(br#"{"ts":5,"msg":"x"}"#, &mut b).unwrap();
        d.decode(br#"{"msg":"no time"}"#, &mut b).unwrap();
        assert_eq!(
            metrics
                .timestamps_unparsed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Configured candidates, nested, in order.
        let rules: TimestampRules = serde_json::from_str(
            r#"[{"field":"meta.at","format":"unix_ms"},{"field":"when","format":"rfc3339"}]"#,
        )
        .unwrap();
        let mut d = LineDecoder::new(Format::Auto, "src", None).with_times(Some(rules), metrics);
        let mut b = Batch::default();
        d.decode(
            br#"{"meta":{"at":"bad"},"when":"2026-12-04T19:25:32.1+00:00"}"#,
            &mut b,
        )
        .unwrap();
        d.decode(br#"{"meta":{"at":1796474732999},"when":"x"}"#, &mut b)
            .unwrap();
        let got: Vec<serde_json::Value> = b
            .iter()
            .map(|e| serde_json::from_slice(e).unwrap())
            .collect();
        assert_eq!(got[0]["timestamp"], "2026-12-04T19:25:32.100Z");
        // More candidates than fit on the stack: caught all the same.
        let many: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"field":"f{i}","format":"unix"}}"#))
            .collect();
        let rules: TimestampRules = serde_json::from_str(&format!("[{}]", many.join(","))).unwrap();
        let mut d = LineDecoder::new(Format::Auto, "src", None)
            .with_times(Some(rules), Arc::new(ComponentMetrics::default()));
        let mut b3 = Batch::default();
        d.decode(br#"{"f19":1796474732.25,"msg":"x"}"#, &mut b3)
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(b3.get(0)).unwrap();
        assert_eq!(e["timestamp"], "2026-12-05T12:45:32.250Z");
        // Two candidates inside one key: the value read once, both paths in it.
        let rules: TimestampRules = serde_json::from_str(
            r#"[{"field":"meta.a","format":"unix"},{"field":"meta.b","format":"unix"}]"#,
        )
        .unwrap();
        let metrics = Arc::new(ComponentMetrics::default());
        let mut d = LineDecoder::new(Format::Auto, "src", None).with_times(Some(rules), metrics);
        let mut b2 = Batch::default();
        d.decode(br#"{"meta":{"a":"x","b":1796474732.5}}"#, &mut b2)
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(b2.get(0)).unwrap();
        assert_eq!(e["timestamp"], "2026-12-05T12:45:32.500Z");
        assert_eq!(got[1]["timestamp"], "2026-12-05T12:45:32.999Z");
    }
}
