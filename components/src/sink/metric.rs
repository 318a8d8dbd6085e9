//! `type = "metric"`: a metric declared in the pipeline, from the events
//! of its inputs, exported on `/metrics` beside sluice's own (what
//! Vector's `log_to_metric` and the OpenTelemetry Collector's `count`
//! connector do):
//!
//! ```toml
//! [sinks.errors_by_service]
//! type = "metric"
//! inputs = ["app"]
//! metric = "counter"                  # counter | gauge | histogram
//! name = "app_errors_total"           # default: the sink's name
//! conditions = [{ field = "level", one_of = ["error", "fatal"] }]
//! labels = { service = "service", level = "level" }
//! ```
//!
//! The conditions are `route`'s and `filter`'s (`sluice_common::cond`, the
//! same code the plugins run). It writes nothing else: each batch is
//! acknowledged once it is counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use sluice_common::cond::{self, Condition, Fields, Mode};
use toml::Spanned;

use super::{inputs_field, runs_itself, Sink, SinkContext, SinkKind};
use crate::base::declared::{Declared, MetricType};
use crate::base::settings::{BuildContext, BuildError, TypeTag};

/// `[sinks.NAME] type = "metric"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Components whose events this sink reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// What it measures: `counter` (events, or the sum of `value`),
    /// `gauge` (the last `value`) or `histogram` (the distribution of
    /// `value` over `buckets`).
    pub metric: MetricType,
    /// Its name on `/metrics` (default: the sink's name). A counter's ends
    /// in `_total`; `sluice_` is sluice's own.
    #[serde(default)]
    pub name: Option<String>,
    /// Its `# HELP` text.
    #[serde(default)]
    pub help: Option<String>,
    /// Only events that satisfy these count (`route`'s conditions).
    #[serde(default)]
    #[schemars(with = "Vec<crate::base::settings::schema::Condition>")]
    pub conditions: Vec<Condition>,
    /// How `conditions` combine: `all` (default) or `any`.
    #[serde(default)]
    #[schemars(with = "crate::base::settings::schema::Mode")]
    pub mode: Mode,
    /// The field (dotted) whose number a gauge or histogram takes, or a
    /// counter adds instead of 1. A string holding a number counts.
    #[serde(default)]
    pub value: Option<String>,
    /// A factor applied to `value`'s numbers (`0.001`: milliseconds
    /// in the event, seconds on `/metrics`, Prometheus' base unit).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Label name -> field (dotted) whose value it takes; a missing field
    /// gives "".
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A histogram's upper bounds, rising (default: Prometheus' own,
    /// 0.005 to 10).
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
    /// Most label sets; events with others count in one series whose
    /// labels are all `other` (`sluice_metric_folded_total`).
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_max_series() -> usize {
    1000
}

const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (no `:`
/// in labels).
fn valid_name(s: &str, colon: bool) -> bool {
    let ok = |c: char, first: bool| {
        c.is_ascii_alphabetic() || c == '_' || (colon && c == ':') || (!first && c.is_ascii_digit())
    };
    let mut chars = s.chars();
    chars.next().is_some_and(|c| ok(c, true)) && chars.all(|c| ok(c, false))
}

impl MetricConfig {
    /// The metric's name on `/metrics`, given the sink's.
    pub fn metric_name<'a>(&'a self, sink: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(sink)
    }

    fn check(&self, sink: &str) -> Result<(), BuildError> {
        let name = self.metric_name(sink);
        let key = if self.name.is_some() {
            "name"
        } else {
            "metric"
        };
        if !valid_name(name, true) {
            return Err(BuildError::key(
                key,
                format!("`{name}` is not a Prometheus metric name (letters, digits, `_` and `:`, not starting with a digit); set `name`"),
            ));
        }
        if name.starts_with("sluice_") {
            return Err(BuildError::key(key, format!("`{name}`: names starting with `sluice_` are sluice's own metrics; choose another")));
        }
        if self.metric == MetricType::Counter && !name.ends_with("_total") {
            return Err(BuildError::key(
                key,
                format!("`{name}`: a counter's name ends in `_total` (Prometheus' rule; `{name}_total`)"),
            ));
        }
        if self.metric != MetricType::Counter && self.value.is_none() {
            return Err(BuildError::key(
                "value",
                format!(
                    "a {} needs `value`: the field whose number it takes",
                    self.metric.as_str()
                ),
            ));
        }
        if let Some(f) = self.scale {
            if self.value.is_none() {
                return Err(BuildError::key(
                    "scale",
                    "`scale` multiplies `value`, which is not set",
                ));
            }
            if !f.is_finite() || f == 0.0 {
                return Err(BuildError::key("scale", "a finite number other than 0"));
            }
        }
        cond::check_all(&self.conditions).map_err(|e| BuildError::key("conditions", e))?;
        for (label, field) in &self.labels {
            if !valid_name(label, false) || label.starts_with("__") || label == "le" {
                return Err(BuildError::key(
                    "labels",
                    format!("`{label}` is not a label name (letters, digits and `_`, not `le` or starting with `__`)"),
                ));
            }
            if field.trim().is_empty() {
                return Err(BuildError::key(
                    "labels",
                    format!("`{label}` names no field"),
                ));
            }
        }
        if let Some(b) = &self.buckets {
            if self.metric != MetricType::Histogram {
                return Err(BuildError::key("buckets", "only a histogram has buckets"));
            }
            if b.is_empty()
                || b.len() > 100
                || b.windows(2).any(|w| w[0] >= w[1])
                || b.iter().any(|v| !v.is_finite())
            {
                return Err(BuildError::key(
                    "buckets",
                    "1 to 100 finite upper bounds, rising",
                ));
            }
        }
        if !(1..=100_000).contains(&self.max_series) {
            return Err(BuildError::key("max_series", "between 1 and 100000"));
        }
        Ok(())
    }
}

impl SinkKind for MetricConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        self.check(cx.name)?;
        let mut c = self.clone();
        c.name = Some(self.metric_name(cx.name).to_string());
        Ok(Box::new(c))
    }

    inputs_field!();
}
runs_itself!(MetricConfig);

/// A label's value: a string as it is, a number or boolean as written,
/// "" when missing or not a scalar.
fn label_value(event: &Value, path: &str) -> String {
    match Fields::get(event, path) {
        Some(Value::String(s)) => s,
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        _ => String::new(),
    }
}

impl MetricConfig {
    pub async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let declared = Arc::new(Declared::new(
            self.name.clone().unwrap_or_default(),
            self.help.clone().unwrap_or_else(|| {
                format!(
                    "Declared in the pipeline (a {} of events).",
                    self.metric.as_str()
                )
            }),
            self.metric,
            self.labels.keys().cloned().collect(),
            match (&self.buckets, self.metric) {
                (Some(b), _) => b.clone(),
                (None, MetricType::Histogram) => DEFAULT_BUCKETS.to_vec(),
                (None, _) => Vec::new(),
            },
            self.max_series,
        ));
        *ctx.metrics
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(declared.clone());
        let scale = self.scale.unwrap_or(1.0);
        while let Some(batch) = ctx.input.recv().await {
            let started = Instant::now();
            for e in batch.iter() {
                let Ok(event) = serde_json::from_slice::<Value>(e) else {
                    continue;
                };
                if !cond::matches_all(&self.conditions, self.mode, &event) {
                    continue;
                }
                let labels = self
                    .labels
                    .values()
                    .map(|f| label_value(&event, f))
                    .collect();
                let value = self
                    .value
                    .as_deref()
                    .map(|f| Fields::get_f64(&event, f).map(|v| v * scale));
                match value {
                    // A value field that is missing or not a number.
                    Some(None) => declared.missing(),
                    // A counter never goes down: a negative amount is
                    // not added (counted as no value).
                    Some(Some(v)) if self.metric == MetricType::Counter && v < 0.0 => {
                        declared.missing()
                    }
                    Some(Some(v)) => declared.record(labels, Some(v)),
                    None => declared.record(labels, None),
                }
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            ctx.account(&batch);
        }
        Ok(())
    }
}
