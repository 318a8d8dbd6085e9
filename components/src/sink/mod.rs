//! Sinks: where events end up.

pub mod alert;
pub mod elasticsearch;
pub mod file;
pub mod hops;
pub mod http;
pub mod loki;
pub mod metric;
pub mod nats;
pub mod otlp;
pub mod redis;
pub mod stdout;
pub mod syslog;

use std::sync::Arc;

use tokio::sync::mpsc;
use toml::Spanned;

use crate::base::event::{Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{kinds, BuildContext, BuildError, Task};

kinds! {
    /// `[sinks.NAME]`: the closed set of sink kinds, chosen by `type`.
    pub enum SinkConfig: dyn SinkKind {
        "stdout" => Stdout(stdout::StdoutConfig),
        "file" => File(file::FileSinkConfig),
        "redis" => Redis(redis::RedisSinkConfig),
        "http" => Http(http::HttpSinkConfig),
        "elasticsearch" => Elasticsearch(elasticsearch::ElasticsearchConfig),
        "loki" => Loki(loki::LokiConfig),
        "alert" => Alert(alert::AlertConfig),
        "otlp" => Otlp(otlp::OtlpSinkConfig),
        "syslog" => Syslog(syslog::SyslogSinkConfig),
        "hops" => Hops(hops::HopsConfig),
        "nats" => Nats(nats::NatsSinkConfig),
        "metric" => Metric(metric::MetricConfig),
    }
    internal {
        /// Keeps what it receives in memory: what `sluice test` reads. Not a
        /// `type` a pipeline file can name.
        Capture(CaptureConfig),
    }
}

/// What every sink kind's config implements. The topology knows sinks only
/// through it.
pub trait SinkKind: std::fmt::Debug + Send + Sync {
    /// Check what can be checked before running (a template, a URL, an
    /// unset variable) and return the sink ready to start, its paths
    /// resolved. `sluice validate` reports these errors as it reports
    /// parse errors.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError>;

    /// The components this sink reads (`inputs = [...]`).
    fn inputs(&self) -> &[Spanned<String>];

    /// The same, to change (a reload compares sinks without their inputs).
    fn inputs_mut(&mut self) -> &mut Vec<Spanned<String>>;

    /// The sink that takes what this one gives up on (`fallback = "..."`).
    fn fallback(&self) -> Option<&Spanned<String>> {
        None
    }
}

/// A built sink.
pub trait Sink: Send {
    /// The task that writes what arrives on `ctx.input` until it closes,
    /// dropping each batch (which acknowledges it) only once it is durable.
    fn start(self: Box<Self>, ctx: SinkContext) -> Task;
}

/// The `inputs` / `inputs_mut` of a [`SinkKind`] whose config has an
/// `inputs` field, as every kind's does.
macro_rules! inputs_field {
    () => {
        fn inputs(&self) -> &[toml::Spanned<String>] {
            &self.inputs
        }

        fn inputs_mut(&mut self) -> &mut Vec<toml::Spanned<String>> {
            &mut self.inputs
        }
    };
}
use inputs_field;

/// `impl Sink` for a config that is its own running sink, through its
/// inherent `async fn run(self, ctx)`.
macro_rules! runs_itself {
    ($t:ty) => {
        impl $crate::sink::Sink for $t {
            fn start(
                self: Box<Self>,
                ctx: $crate::sink::SinkContext,
            ) -> $crate::base::settings::Task {
                Box::pin(self.run(ctx))
            }
        }
    };
}
use runs_itself;

impl SinkConfig {
    /// The components this sink reads.
    pub fn inputs(&self) -> &[Spanned<String>] {
        self.kind().inputs()
    }

    /// The sink that takes what this one gives up on.
    pub fn fallback(&self) -> Option<&Spanned<String>> {
        self.kind().fallback()
    }

    /// Whether a running sink of config `self` can stay when the pipeline
    /// now says `other`: the same settings, compared by value (not by
    /// where they stand in the file), apart from its inputs, which are
    /// rewired without a restart.
    pub fn same_settings(&self, other: &SinkConfig) -> bool {
        let (mut a, mut b) = (self.clone(), other.clone());
        a.kind_mut().inputs_mut().clear();
        b.kind_mut().inputs_mut().clear();
        a == b
    }
}

/// The events a [`SinkConfig::Capture`] sink received.
#[derive(Debug, Clone, Default)]
pub struct CaptureConfig {
    pub inputs: Vec<Spanned<String>>,
    pub events: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl PartialEq for CaptureConfig {
    /// Two captures are the same when they fill the same memory.
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs && Arc::ptr_eq(&self.events, &other.events)
    }
}

impl SinkKind for CaptureConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        Ok(Box::new(self.clone()))
    }

    inputs_field!();
}
runs_itself!(CaptureConfig);

impl CaptureConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        while let Some(batch) = ctx.input.recv().await {
            self.events
                .lock()
                .expect("capture lock poisoned")
                .extend(batch.iter().map(<[u8]>::to_vec));
            ctx.account(&batch);
        }
        Ok(())
    }
}

/// What every running sink is given.
pub struct SinkContext {
    pub name: Arc<str>,
    pub input: mpsc::Receiver<SharedBatch>,
    pub metrics: Arc<ComponentMetrics>,
    /// Where batches go when this sink gives up on them (`fallback`).
    pub fallback: Option<crate::base::output::Output>,
    /// Where events it can never write go, with the reason. `None` for a
    /// sink that reads the dead letters itself (it would feed itself).
    pub dead: Option<crate::delivery::DeadLetters>,
}

/// Encode a batch as JSON lines into `out`.
pub fn json_lines(batch: &Batch, out: &mut Vec<u8>) {
    out.reserve(batch.bytes() + batch.len());
    for event in batch.iter() {
        out.extend_from_slice(event);
        out.push(b'\n');
    }
}

impl SinkContext {
    /// Count a batch as received and written.
    pub fn account(&self, batch: &SharedBatch) {
        let metrics = &self.metrics;
        metrics.tap.offer(batch);
        metrics.count_fields(batch);
        ComponentMetrics::add(&metrics.events_in, batch.len());
        ComponentMetrics::add(&metrics.bytes_in, batch.bytes());
        ComponentMetrics::add(&metrics.events_out, batch.len());
        ComponentMetrics::add(&metrics.bytes_out, batch.bytes());
    }
}

/// Give `batch` to the sink's `fallback`, each event marked with `reason`
/// (counted as failed here); if the fallback is gone, the batch's sources
/// hear that it failed.
pub async fn to_fallback(
    ctx: &SinkContext,
    fallback: &crate::base::output::Output,
    batch: &SharedBatch,
    reason: &str,
) {
    ComponentMetrics::add(&ctx.metrics.failed, batch.len());
    if fallback.send(0, marked(batch, reason)).await.is_err() {
        batch.acks.iter().for_each(|a| a.fail());
    }
}

/// A batch with `_sluice_error` added to each event: what a sink gives its
/// `fallback` when its target would not take the batch.
pub fn marked(batch: &Batch, error: &str) -> Batch {
    let mut out = Batch::with_capacity(
        batch.len(),
        batch.bytes() + batch.len() * (error.len() + 24),
    );
    for e in batch.iter() {
        out.data.extend_from_slice(b"{\"_sluice_error\":");
        crate::base::event::push_json_str(&mut out.data, error);
        let rest = e[1..].trim_ascii_start();
        if rest != b"}" {
            out.data.push(b',');
        }
        out.data.extend_from_slice(rest);
        out.seal();
    }
    out.acks = batch.acks.clone();
    out
}

#[cfg(test)]
mod tests {
    use super::{marked, Batch};

    #[test]
    fn marking_keeps_events_valid() {
        let b = Batch::from_events([&br#"{"a":1}"#[..], b"{}"]);
        let m = marked(&b, "down \"now\"");
        assert_eq!(m.get(0), br#"{"_sluice_error":"down \"now\"","a":1}"#);
        assert_eq!(m.get(1), br#"{"_sluice_error":"down \"now\""}"#);
    }
}
