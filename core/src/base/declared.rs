//! Metrics declared in a pipeline (`type = "metric"` sinks): counters,
//! gauges and histograms of events' fields, labelled by fields, bounded
//! in series; kept here and written into `/metrics` beside sluice's own.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// What a declared metric measures.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// Events (or the sum of a field's values), only ever rising.
    Counter,
    /// The last value of a field.
    Gauge,
    /// The distribution of a field's values over `buckets`.
    Histogram,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// The label values every series past `max_series` is folded into.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, Default)]
struct Series {
    /// Counter: the count (or sum); gauge: the last value; histogram: the
    /// sum of the values.
    value: f64,
    /// Histogram: observations per bucket, not cumulative; last is +Inf.
    buckets: Vec<u64>,
    count: u64,
}

/// One declared metric's series.
#[derive(Debug)]
pub struct Declared {
    pub name: String,
    pub help: String,
    pub kind: MetricType,
    /// Label names, in the order of the values of each series.
    pub labels: Vec<String>,
    pub buckets: Vec<f64>,
    pub max_series: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    series: HashMap<Vec<String>, Series>,
    /// Events that went to the `other` series because `max_series` was
    /// reached.
    folded: u64,
    /// Events that matched but had no numeric value to use.
    no_value: u64,
}

impl Declared {
    pub fn new(
        name: String,
        help: String,
        kind: MetricType,
        labels: Vec<String>,
        buckets: Vec<f64>,
        max_series: usize,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
            buckets,
            max_series,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record one event: its label values and its value (`None` for a
    /// counter of events; a gauge or histogram without one is counted in
    /// `no_value` instead).
    pub fn record(&self, labels: Vec<String>, value: Option<f64>) {
        let mut st = self.lock();
        let v = match (self.kind, value) {
            (MetricType::Counter, None) => 1.0,
            (_, Some(v)) => v,
            (_, None) => {
                st.no_value += 1;
                return;
            }
        };
        let key = if st.series.contains_key(&labels) || st.series.len() < self.max_series {
            labels
        } else {
            st.folded += 1;
            vec![OTHER.to_string(); self.labels.len()]
        };
        let kind = self.kind;
        let nb = self.buckets.len();
        let s = st.series.entry(key).or_insert_with(|| Series {
            buckets: vec![
                0;
                if kind == MetricType::Histogram {
                    nb + 1
                } else {
                    0
                }
            ],
            ..Series::default()
        });
        s.count += 1;
        match kind {
            MetricType::Counter => s.value += v,
            MetricType::Gauge => s.value = v,
            MetricType::Histogram => {
                s.value += v;
                let i = self.buckets.iter().position(|b| v <= *b).unwrap_or(nb);
                if let Some(b) = s.buckets.get_mut(i) {
                    *b += 1;
                }
            }
        }
    }

    /// An event that matched without a numeric value to use.
    pub fn missing(&self) {
        self.lock().no_value += 1;
    }

    /// Series held now.
    pub fn series(&self) -> usize {
        self.lock().series.len()
    }

    /// The family in Prometheus' text format.
    pub fn write(&self, out: &mut String) {
        let st = self.lock();
        let help = self.help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {} {help}", self.name);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind.as_str());
        let mut keys: Vec<&Vec<String>> = st.series.keys().collect();
        keys.sort();
        for key in keys {
            let Some(s) = st.series.get(key) else {
                continue;
            };
            let labels: Vec<String> = self
                .labels
                .iter()
                .zip(key)
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let joined = labels.join(",");
            match self.kind {
                MetricType::Counter | MetricType::Gauge => {
                    let _ = writeln!(out, "{}{} {}", self.name, braces(&joined), number(s.value));
                }
                MetricType::Histogram => {
                    let mut cumulative = 0u64;
                    for (i, n) in s.buckets.iter().enumerate() {
                        cumulative += n;
                        let le = self
                            .buckets
                            .get(i)
                            .map_or("+Inf".to_string(), |b| number(*b));
                        let sep = if joined.is_empty() { "" } else { "," };
                        let _ = writeln!(
                            out,
                            "{}_bucket{{{joined}{sep}le=\"{le}\"}} {cumulative}",
                            self.name
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{}_sum{} {}",
                        self.name,
                        braces(&joined),
                        number(s.value)
                    );
                    let _ = writeln!(out, "{}_count{} {}", self.name, braces(&joined), s.count);
                }
            }
        }
    }

    /// Every series as an event (what a `declared_metrics` source sends):
    /// `{"timestamp", "metric", "type", "labels": {..}, "value"}`, and for
    /// a histogram `"count"`, `"sum"` and cumulative `"buckets"` of
    /// `{"le", "count"}` (the last `le` is `"+Inf"`).
    pub fn events(&self, timestamp: &str) -> Vec<serde_json::Value> {
        use serde_json::{json, Map, Value};
        let st = self.lock();
        let mut keys: Vec<&Vec<String>> = st.series.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(s) = st.series.get(key) else {
                continue;
            };
            let labels: Map<String, Value> = self
                .labels
                .iter()
                .zip(key)
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut e = json!({
                "timestamp": timestamp,
                "metric": self.name,
                "type": self.kind.as_str(),
                "labels": labels,
            });
            match self.kind {
                MetricType::Counter | MetricType::Gauge => e["value"] = json!(s.value),
                MetricType::Histogram => {
                    let mut cumulative = 0u64;
                    let buckets: Vec<Value> = s
                        .buckets
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            cumulative += n;
                            let le = self.buckets.get(i).map_or(json!("+Inf"), |b| json!(b));
                            json!({"le": le, "count": cumulative})
                        })
                        .collect();
                    e["count"] = json!(s.count);
                    e["sum"] = json!(s.value);
                    e["buckets"] = Value::Array(buckets);
                }
            }
            out.push(e);
        }
        out
    }

    /// (events folded into `other`, events without a value).
    pub fn losses(&self) -> (u64, u64) {
        let st = self.lock();
        (st.folded, st.no_value)
    }
}

fn braces(labels: &str) -> String {
    if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    }
}

/// A float as Prometheus writes one (integers without a fraction).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_past_the_bound_fold_into_other() {
        let d = Declared::new(
            "x_total".into(),
            "h".into(),
            MetricType::Counter,
            vec!["k".into()],
            vec![],
            2,
        );
        for k in ["a", "b", "c", "d", "a"] {
            d.record(vec![k.into()], None);
        }
        assert_eq!(d.series(), 3);
        assert_eq!(d.losses(), (2, 0));
        let mut out = String::new();
        d.write(&mut out);
        assert!(out.contains("x_total{k=\"a\"} 2\n"), "{out}");
        assert!(out.contains("x_total{k=\"other\"} 2\n"), "{out}");
    }

    #[test]
    fn histograms_are_cumulative() {
        let d = Declared::new(
            "ms".into(),
            "h".into(),
            MetricType::Histogram,
            vec![],
            vec![10.0, 100.0],
            10,
        );
        for v in [5.0, 50.0, 500.0, 7.0] {
            d.record(vec![], Some(v));
        }
        d.record(vec![], None);
        let mut out = String::new();
        d.write(&mut out);
        for line in [
            "ms_bucket{le=\"10\"} 2",
            "ms_bucket{le=\"100\"} 3",
            "ms_bucket{le=\"+Inf\"} 4",
            "ms_sum 562",
            "ms_count 4",
        ] {
            assert!(out.contains(line), "{line}: {out}");
        }
        assert_eq!(d.losses(), (0, 1));
    }
}
