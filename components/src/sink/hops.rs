//! `type = "hops"`: per-hop latencies of requests, live, from the events of
//! its inputs (what `sluice timeline` reports on files, see
//! [`crate::base::hops`]), as histograms on `/metrics` and a panel of the
//! live page. It writes nothing else: each batch is acknowledged once it is
//! measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use toml::Spanned;

use super::{inputs_field, runs_itself, Sink, SinkContext, SinkKind};
use crate::base::event::{dotted, scalar_text, top_fields};
use crate::base::hops::{HopStats, Tracker};
use crate::base::settings::{duration, BuildContext, BuildError, TypeTag};
use crate::base::timestamp::{parse_json, TimeFormat};

/// `[sinks.NAME] type = "hops"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HopsConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Components whose events this sink reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// The field that follows a request across components (dotted paths
    /// read into objects).
    pub correlation: String,
    /// The field that names the component an event comes from.
    #[serde(default = "default_component")]
    pub component: String,
    /// Most requests followed at once; beyond, the least recently seen is
    /// forgotten (`sluice_hop_requests_forgotten_total{reason="max_requests"}`).
    #[serde(default = "default_max_requests")]
    pub max_requests: usize,
    /// A request unseen this long is forgotten.
    #[serde(default = "default_request_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub request_timeout: Duration,
    /// Most pairs of components with a histogram of their own; later ones
    /// are counted as `other -> other`.
    #[serde(default = "default_max_hops")]
    pub max_hops: usize,
}

fn default_component() -> String {
    "service".into()
}
fn default_max_requests() -> usize {
    100_000
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_hops() -> usize {
    100
}

impl SinkKind for HopsConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        for (key, value) in [
            ("correlation", &self.correlation),
            ("component", &self.component),
        ] {
            if value.trim().is_empty() {
                return Err(BuildError::key(key, "empty: name a field of the events"));
            }
        }
        if !(1..=10_000_000).contains(&self.max_requests) {
            return Err(BuildError::key("max_requests", "between 1 and 10000000"));
        }
        if !(1..=10_000).contains(&self.max_hops) {
            return Err(BuildError::key("max_hops", "between 1 and 10000"));
        }
        if self.request_timeout.is_zero() {
            return Err(BuildError::key("request_timeout", "more than 0s"));
        }
        Ok(Box::new(self.clone()))
    }

    inputs_field!();
}
runs_itself!(HopsConfig);

/// The time of an event (its `timestamp`, which sources always write), in
/// microseconds since the epoch.
fn event_us(raw: &serde_json::value::RawValue) -> Option<i64> {
    let s = parse_json(raw.get(), &TimeFormat::Auto)?;
    s.secs
        .checked_mul(1_000_000)?
        .checked_add(i64::from(s.nanos / 1000))
}

impl HopsConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let stats = Arc::new(HopStats::new(
            self.correlation.clone(),
            self.component.clone(),
            self.max_hops,
        ));
        *ctx.metrics.hops.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats.clone());
        let mut tracker = Tracker::new(stats, self.max_requests, self.request_timeout);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let batch = tokio::select! {
                b = ctx.input.recv() => match b {
                    Some(b) => b,
                    None => break,
                },
                _ = tick.tick() => {
                    tracker.forget(Instant::now());
                    continue;
                }
            };
            let started = Instant::now();
            for e in batch.iter() {
                let Ok(text) = std::str::from_utf8(e) else {
                    continue;
                };
                let Ok(fields) = top_fields(text) else {
                    continue;
                };
                let id = dotted(&fields, &self.correlation).and_then(scalar_text);
                let component = dotted(&fields, &self.component).and_then(scalar_text);
                let time = dotted(&fields, "timestamp").and_then(event_us);
                if let (Some(id), Some(component), Some(t)) = (id, component, time) {
                    if !id.is_empty() && !component.is_empty() {
                        tracker.see(&id, &component, t, started);
                    }
                }
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            ctx.account(&batch);
        }
        Ok(())
    }
}
