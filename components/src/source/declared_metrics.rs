//! `type = "declared_metrics"`: the metrics `metric` sinks declare, sent
//! as events every `interval`, so that any sink (a file, Elasticsearch,
//! an HTTP endpoint) can keep them beside `/metrics`:
//!
//! ```toml
//! [sources.metric_events]
//! type = "declared_metrics"
//! interval = "10s"                         # default 10s
//! names = ["app_errors_total"]             # default: every declared metric
//! ```
//!
//! One event per series: `{"timestamp", "metric", "type", "labels",
//! "value"}` (histograms: `count`, `sum`, cumulative `buckets`). A last
//! snapshot is sent when the pipeline stops.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::declared_metrics";

use std::time::Duration;

use serde::Deserialize;

use super::{runs_itself, Batcher, Source, SourceContext, SourceKind};
use crate::base::event::now_rfc3339;
use crate::base::settings::{BatchOverride, BuildContext, BuildError, TypeTag};

/// `[sources.NAME] type = "declared_metrics"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclaredMetricsConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// How often every series is sent.
    #[serde(default = "default_interval", with = "crate::base::settings::duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub interval: Duration,
    /// Only these metrics (their names on `/metrics`); empty: all.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl SourceKind for DeclaredMetricsConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(86_400)
        {
            return Err(BuildError::key("interval", "between 100ms and 24h"));
        }
        Ok(Box::new(self.clone()))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(DeclaredMetricsConfig);

impl DeclaredMetricsConfig {
    /// Every series of the declared metrics this source sends, as events.
    fn snapshot(&self, ctx: &SourceContext, batcher: &mut Batcher) -> usize {
        let now = now_rfc3339();
        let mut n = 0;
        for (_, _, m) in ctx.registry.components() {
            let Some(d) = m.declared.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                continue;
            };
            if !self.names.is_empty() && !self.names.contains(&d.name) {
                continue;
            }
            for e in d.events(&now) {
                if serde_json::to_writer(&mut batcher.batch.data, &e).is_ok() {
                    batcher.batch.seal();
                    batcher.pushed();
                    n += 1;
                }
            }
        }
        n
    }

    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let mut batcher = Batcher::new(ctx.batch);
        let mut shutdown = ctx.shutdown.clone();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: nothing has been counted yet.
        tick.tick().await;
        loop {
            let stopping = tokio::select! {
                _ = shutdown.wait() => true,
                _ = tick.tick() => false,
            };
            let sent = self.snapshot(&ctx, &mut batcher);
            tracing::debug!(target: LOG_TARGET, source = %ctx.name, series = sent, "declared metrics sent");
            batcher.flush(&ctx).await?;
            if stopping {
                return Ok(());
            }
        }
    }
}
