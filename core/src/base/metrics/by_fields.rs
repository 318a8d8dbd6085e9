//! Events counted by the values of chosen fields (`metrics.by`), with
//! a cap on the label sets kept (past it, `other`).

use super::*;

/// `metrics = { by = ["channel", "level"], max_series = 1000 }` of a
/// component: its events counted by those fields' values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldMetricsConfig {
    /// Fields (dotted paths) whose values label the counts.
    pub by: Vec<String>,
    /// Most label sets; events with values past them count under `other`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

pub(super) fn default_max_series() -> usize {
    1000
}

/// The label a field is shown as: `user.tier` -> `user_tier`.
pub fn label_name(field: &str) -> String {
    let mut out: String = field
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

impl FieldMetricsConfig {
    /// Why these settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.by.is_empty() || self.by.len() > 8 {
            return Err("`by` names between 1 and 8 fields".into());
        }
        if !(1..=100_000).contains(&self.max_series) {
            return Err(format!(
                "max_series = {} is out of bounds: between 1 and 100000",
                self.max_series
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.by {
            let label = label_name(f);
            if f.is_empty() || label.starts_with("__") {
                return Err(format!("`{f}` cannot be a label"));
            }
            if label == "component" || label == "kind" {
                return Err(format!(
                    "`{f}` would be shown as the label `{label}`, which sluice's own metrics use"
                ));
            }
            if !seen.insert(label.clone()) {
                return Err(format!("two fields would be shown as the label `{label}`"));
            }
        }
        Ok(())
    }
}

/// The value label `other` stands for every series past `max_series`.
pub const OTHER: &str = "other";

/// Counts of a component's events by the values of some fields.
#[derive(Debug)]
pub struct ByFields {
    pub config: FieldMetricsConfig,
    /// The labels, in `by` order.
    pub labels: Vec<String>,
    series: Mutex<std::collections::HashMap<Vec<String>, u64>>,
}

/// The text of the value at `path` (the key as written, else dotted into
/// objects); empty when missing, null, an object or an array.
pub(super) fn field_text(fields: &crate::base::event::Fields<'_>, path: &str) -> String {
    crate::base::event::dotted(fields, path)
        .and_then(crate::base::event::scalar_text)
        .map(|t| t.into_owned())
        .unwrap_or_default()
}

impl ByFields {
    pub fn new(config: FieldMetricsConfig) -> Self {
        Self {
            labels: config.by.iter().map(|f| label_name(f)).collect(),
            config,
            series: Mutex::default(),
        }
    }

    /// Count a batch's events (one lock per batch).
    pub fn count(&self, batch: &crate::base::event::Batch) {
        // The batch's label sets in the order first seen, so that which of
        // them get the last places under `max_series` does not depend on
        // a hash map's order.
        let mut local: Vec<(Vec<String>, u64)> = Vec::new();
        let mut index: std::collections::HashMap<Vec<String>, usize> = Default::default();
        for e in batch.iter() {
            let text = std::str::from_utf8(e).unwrap_or("");
            let fields = crate::base::event::top_fields(text).unwrap_or_default();
            let key: Vec<String> = self
                .config
                .by
                .iter()
                .map(|f| field_text(&fields, f))
                .collect();
            match index.get(&key) {
                Some(&i) => local[i].1 += 1,
                None => {
                    index.insert(key.clone(), local.len());
                    local.push((key, 1));
                }
            }
        }
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        for (key, n) in local {
            if series.len() < self.config.max_series || series.contains_key(&key) {
                *series.entry(key).or_default() += n;
            } else {
                *series
                    .entry(vec![OTHER.to_string(); self.labels.len()])
                    .or_default() += n;
            }
        }
    }

    /// Every series and its count, sorted by label values.
    pub fn read(&self) -> Vec<(Vec<String>, u64)> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = series.iter().map(|(k, n)| (k.clone(), *n)).collect();
        out.sort();
        out
    }
}
