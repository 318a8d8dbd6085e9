//! The tables of a pipeline file read into config types with their spans:
//! `[sources]`, `[transforms]`, `[sinks]` by `type`, `[metrics.NAME]` made
//! into `metric` sinks.

use super::*;

/// Record the span of every key of `table` (and of its tables) under its
/// dotted path.
pub(super) fn collect_spans(
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, Range<usize>>,
) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let DeValue::Table(t) = v.get_ref() {
            collect_spans(t, &path, out);
        }
        out.insert(path, k.span());
    }
}

pub(super) fn take<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let k = table.keys().find(|k| k.get_ref() == key)?.clone();
    table.remove(&k)
}

/// `[metrics.NAME]`: a metric declared in a table of its own, `type` its
/// kind (`counter`, `gauge`, `histogram`); the same as a `metric` sink
/// named NAME (`sink/metric.rs`), and run as one.
pub(super) fn declared_metrics(
    locator: &Locator,
    value: Option<Spanned<DeValue<'_>>>,
) -> Result<Vec<Named<SinkConfig>>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        return Err(locator.error(
            Some(span),
            "metrics",
            "expected tables of named metrics: [metrics.NAME]",
        ));
    };
    let mut out = Vec::new();
    for (name, mut entry) in entries {
        let name = name.into_inner().to_string();
        let prefix = format!("metrics.{name}");
        let entry_span = entry.span();
        let DeValue::Table(fields) = entry.get_mut() else {
            return Err(locator.error(Some(entry_span), prefix, "expected a table"));
        };
        if let Some(m) = take(fields, "metric") {
            return Err(locator.error(
                Some(m.span()),
                format!("{prefix}.metric"),
                "in [metrics.NAME], `type` says what it is (counter, gauge or histogram)",
            ));
        }
        let Some(kind) = take(fields, "type") else {
            return Err(locator.error(
                Some(entry_span),
                format!("{prefix}.type"),
                "missing `type`: counter, gauge or histogram",
            ));
        };
        // As a `metric` sink: `metric` is the kind, `type` the sink's.
        let at = kind.span();
        fields.insert(Spanned::new(at.clone(), "metric".into()), kind);
        fields.insert(
            Spanned::new(at.clone(), "type".into()),
            Spanned::new(at, DeValue::String("metric".into())),
        );
        let config = crate::sink::metric::MetricConfig::deserialize(ValueDeserializer::from(entry))
            .map_err(|e| {
                let mut err = locator.from_toml(&e, &prefix);
                if err.key.ends_with(".metric") {
                    err.key = format!("{prefix}.type");
                    err.message = err.message.replace("`metric`", "`type`");
                }
                err
            })?;
        out.push(Named {
            name,
            span: entry_span,
            config: SinkConfig::Metric(config),
            metrics: None,
            buffer: None,
        });
    }
    Ok(out)
}

pub(super) fn tagged<T: Tagged>(
    locator: &Locator,
    section: &str,
    value: Option<Spanned<DeValue<'_>>>,
) -> Result<Vec<Named<T>>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        return Err(locator.error(Some(span), section, "expected a table of named components"));
    };
    let mut out = Vec::new();
    for (name, mut entry) in entries {
        let name = name.into_inner().to_string();
        let prefix = format!("{section}.{name}");
        let entry_span = entry.span();
        // `metrics` is a key of every component, not of its kind.
        let metrics = match entry.get_mut() {
            DeValue::Table(fields) => take(fields, "metrics"),
            _ => None,
        };
        let metrics = metrics
            .map(|m| {
                crate::base::metrics::FieldMetricsConfig::deserialize(ValueDeserializer::from(m))
                    .map_err(|e| locator.from_toml(&e, &format!("{prefix}.metrics")))
            })
            .transpose()?;
        // `buffer` too, of every sink.
        let buffer = match entry.get_mut() {
            DeValue::Table(fields) => take(fields, "buffer"),
            _ => None,
        };
        let buffer = match buffer {
            Some(b) if section != "sinks" => {
                return Err(locator.error(
                    Some(b.span()),
                    format!("{prefix}.buffer"),
                    "`buffer` is a key of sinks",
                ))
            }
            Some(b) => {
                let span = b.span();
                let parsed =
                    crate::base::settings::BufferConfig::deserialize(ValueDeserializer::from(b));
                Some(parsed.map_err(|e| match e.span() {
                    Some(_) => locator.from_toml(&e, &format!("{prefix}.buffer")),
                    // Errors of a value taken out of its table carry no
                    // place: the `buffer` value's own.
                    None => locator.error(
                        Some(span),
                        format!("{prefix}.buffer"),
                        e.message().trim().to_string(),
                    ),
                })?)
            }
            None => None,
        };
        let DeValue::Table(fields) = entry.get_ref() else {
            return Err(locator.error(Some(entry_span), prefix, "expected a table"));
        };
        let kind = fields
            .iter()
            .find(|(k, _)| k.get_ref() == "type")
            .map(|(_, v)| v);
        let kind = match kind.map(|v| (v.span(), v.get_ref())) {
            Some((_, DeValue::String(s))) if T::KINDS.contains(&s.as_ref()) => s.to_string(),
            Some((span, DeValue::String(s))) => {
                return Err(locator.error(
                    Some(span),
                    format!("{prefix}.type"),
                    format!(
                        "unknown type `{s}`, expected one of: {}",
                        T::KINDS.join(", ")
                    ),
                ))
            }
            Some((span, _)) => {
                return Err(locator.error(
                    Some(span),
                    format!("{prefix}.type"),
                    "expected a string",
                ));
            }
            None => {
                return Err(locator.error(
                    Some(entry_span),
                    format!("{prefix}.type"),
                    format!("missing `type`, expected one of: {}", T::KINDS.join(", ")),
                ))
            }
        };
        let config = T::from_kind(&kind, ValueDeserializer::from(entry))
            .map_err(|e| locator.from_toml(&e, &prefix))?;
        out.push(Named {
            name,
            span: entry_span,
            config,
            metrics,
            buffer,
        });
    }
    Ok(out)
}
