//! Sinks: where events end up.

pub mod file;
pub mod redis;
pub mod stdout;

use std::sync::Arc;

use tokio::sync::mpsc;
use toml::de::ValueDeserializer;
use toml::Spanned;

use crate::config::{variant, Tagged};
use crate::event::{Batch, SharedBatch};
use crate::metrics::ComponentMetrics;

/// `[sinks.NAME]`: the closed set of sink kinds, chosen by `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Stdout(stdout::StdoutConfig),
    File(file::FileSinkConfig),
    Redis(redis::RedisSinkConfig),
    /// Keeps what it receives in memory: what `sluice test` reads. Not a
    /// `type` a pipeline file can name.
    Capture(CaptureConfig),
}

impl Tagged for SinkConfig {
    const KINDS: &'static [&'static str] = &["stdout", "file", "redis"];

    fn from_kind(kind: &str, table: ValueDeserializer<'_>) -> Result<Self, toml::de::Error> {
        Ok(match kind {
            "stdout" => SinkConfig::Stdout(variant(table)?),
            "file" => {
                let c: file::FileSinkConfig = variant(table)?;
                c.check()
                    .map_err(<toml::de::Error as serde::de::Error>::custom)?;
                SinkConfig::File(c)
            }
            "redis" => SinkConfig::Redis(variant(table)?),
            other => unreachable!("kind {other} is not in KINDS"),
        })
    }
}

impl SinkConfig {
    /// The same config with its paths resolved against the pipeline file.
    pub fn resolved(&self, pipeline: &crate::config::PipelineConfig) -> Self {
        match self.clone() {
            SinkConfig::File(mut c) => {
                c.path.base = pipeline.resolve(std::path::Path::new(""));
                SinkConfig::File(c)
            }
            other => other,
        }
    }

    /// What a running sink depends on, for reloads: its settings without
    /// its inputs (rewired without a restart) and without the positions of
    /// its keys in the file (moving a line must not restart it).
    pub fn restart_key(&self) -> String {
        let mut c = self.clone();
        match &mut c {
            SinkConfig::Stdout(x) => x.inputs.clear(),
            SinkConfig::File(x) => x.inputs.clear(),
            SinkConfig::Capture(x) => x.inputs.clear(),
            SinkConfig::Redis(x) => {
                x.inputs.clear();
                if let Some(f) = &mut x.fallback {
                    *f = Spanned::new(0..0, f.get_ref().clone());
                }
            }
        }
        format!("{c:?}")
    }

    /// The sink that takes what this one cannot write.
    pub fn fallback(&self) -> Option<&Spanned<String>> {
        match self {
            SinkConfig::Redis(c) => c.fallback.as_ref(),
            _ => None,
        }
    }

    /// The components this sink reads.
    pub fn inputs(&self) -> &[Spanned<String>] {
        match self {
            SinkConfig::Stdout(c) => &c.inputs,
            SinkConfig::File(c) => &c.inputs,
            SinkConfig::Capture(c) => &c.inputs,
            SinkConfig::Redis(c) => &c.inputs,
        }
    }
}

/// The events a [`SinkConfig::Capture`] sink received.
#[derive(Debug, Clone, Default)]
pub struct CaptureConfig {
    pub inputs: Vec<Spanned<String>>,
    pub events: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

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
    pub fallback: Option<crate::topology::output::Output>,
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
        self.metrics.tap.offer(batch);
        ComponentMetrics::add(&self.metrics.events_in, batch.len());
        ComponentMetrics::add(&self.metrics.bytes_in, batch.bytes());
        ComponentMetrics::add(&self.metrics.events_out, batch.len());
        ComponentMetrics::add(&self.metrics.bytes_out, batch.bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::PipelineConfig;

    fn key(text: &str) -> String {
        let c = PipelineConfig::parse(Path::new("p.toml"), text).unwrap();
        c.sinks[0].config.restart_key()
    }

    #[test]
    fn restart_key_ignores_inputs_and_positions() {
        let base = "[sources.a]\ntype = \"stdin\"\n[sources.b]\ntype = \"stdin\"\n[sinks.out]\ntype = \"file\"\npath = \"x.log\"\ninputs = [\"a\"]\n";
        let moved = format!(
            "# a comment\n\n{}",
            base.replace("[\"a\"]", "[\"a\", \"b\"]")
        );
        assert_eq!(key(base), key(&moved));
        assert_ne!(key(base), key(&base.replace("x.log", "y.log")));
    }
}
