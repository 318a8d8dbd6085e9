//! Events back into OTLP: the resource, the scope and the record of
//! each event, grouped into one export request.

use super::*;

/// `len` bytes from hex text, if it is that.
pub(super) fn unhex(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 || !text.is_ascii() {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// A time field as nanoseconds since the epoch.
pub(super) fn nanos(v: &Value) -> Option<u64> {
    if let Value::String(s) = v {
        if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
            return u64::try_from(t.timestamp_nanos_opt()?).ok();
        }
    }
    let t = crate::base::timestamp::parse(v, &crate::base::timestamp::TimeFormat::Auto)?;
    u64::try_from(t.timestamp_nanos_opt()?).ok()
}

/// The fields of an event the way back reads itself (the rest become
/// attributes).
pub(super) const OWN: [&str; 16] = [
    "timestamp",
    "level",
    "message",
    "body",
    "trace_id",
    "span_id",
    "severity_number",
    "severity_text",
    "attributes",
    "resource",
    "scope",
    "observed_timestamp",
    "flags",
    "event_name",
    "dropped_attributes_count",
    "resource_schema_url",
];

/// Events as one request: records grouped by resource and scope, in the
/// order they came. `resource_fields` maps resource attributes to the
/// event fields that give them (`service.name` -> `service`).
pub fn to_request(
    events: &[&[u8]],
    resource_fields: &BTreeMap<String, String>,
    now_ns: u64,
) -> ExportLogsServiceRequest {
    let mut resources: Vec<ResourceLogs> = Vec::new();
    let mut index: HashMap<String, (usize, HashMap<String, usize>)> = HashMap::new();
    for raw in events {
        let e: Map<String, Value> = match serde_json::from_slice(raw) {
            Ok(Value::Object(m)) => m,
            _ => {
                let mut m = Map::new();
                m.insert(
                    "message".into(),
                    String::from_utf8_lossy(raw).into_owned().into(),
                );
                m
            }
        };
        let e = logger_as_scope(e);
        let (resource, resource_key, consumed) = resource_of(&e, resource_fields);
        let schema = e
            .get("resource_schema_url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let scope_value = e.get("scope").cloned().unwrap_or(Value::Null);
        let (record, scope, scope_schema) = record_of(&e, &consumed, now_ns);
        let rkey = format!("{resource_key}\u{0}{schema}");
        let (ri, scopes) = index.entry(rkey).or_insert_with(|| {
            resources.push(ResourceLogs {
                resource: Some(resource),
                scope_logs: Vec::new(),
                schema_url: schema,
            });
            (resources.len() - 1, HashMap::new())
        });
        let rl = &mut resources[*ri];
        let si = *scopes.entry(scope_value.to_string()).or_insert_with(|| {
            rl.scope_logs.push(ScopeLogs {
                scope,
                log_records: Vec::new(),
                schema_url: scope_schema,
            });
            rl.scope_logs.len() - 1
        });
        rl.scope_logs[si].log_records.push(record);
    }
    ExportLogsServiceRequest {
        resource_logs: resources,
    }
}

/// The resource of an event, its identity, and the event fields it took.
pub(super) fn resource_of(
    e: &Map<String, Value>,
    fields: &BTreeMap<String, String>,
) -> (Resource, String, Vec<String>) {
    let mut attrs: Map<String, Value> = e
        .get("resource")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut consumed = Vec::new();
    for (attr, field) in fields {
        if let Some(v) = e.get(field) {
            if OWN.contains(&field.as_str()) {
                continue;
            }
            match attrs.get(attr) {
                None => {
                    attrs.insert(attr.clone(), v.clone());
                    consumed.push(field.clone());
                }
                // The same value as the resource's own: nothing to keep.
                Some(same) if same == v => consumed.push(field.clone()),
                Some(_) => {}
            }
        }
    }
    let key = Value::Object(attrs.clone()).to_string();
    let dropped = e
        .get("resource_dropped_attributes_count")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    if dropped != 0 {
        consumed.push("resource_dropped_attributes_count".into());
    }
    (
        Resource {
            attributes: key_values(attrs.iter()),
            dropped_attributes_count: dropped,
            entity_refs: Vec::new(),
        },
        format!("{key}\u{0}{dropped}"),
        consumed,
    )
}

/// `logger` is the instrumentation scope's name, as the sources write it:
/// the scope of an event with a `logger` and no `scope`, and not an
/// attribute when it repeats the scope's name.
pub(super) fn logger_as_scope(mut e: Map<String, Value>) -> Map<String, Value> {
    let Some(Value::String(logger)) = e.get("logger") else {
        return e;
    };
    match e.get("scope") {
        None => {
            let mut scope = Map::new();
            scope.insert("name".into(), logger.clone().into());
            e.remove("logger");
            e.insert("scope".into(), scope.into());
        }
        Some(Value::Object(s)) if s.get("name").and_then(Value::as_str) == Some(logger) => {
            e.remove("logger");
        }
        Some(_) => {}
    }
    e
}

/// One event as a log record, with its scope and the scope's schema URL.
pub(super) fn record_of(
    e: &Map<String, Value>,
    consumed: &[String],
    now_ns: u64,
) -> (LogRecord, Option<InstrumentationScope>, String) {
    let mut r = LogRecord::default();
    let mut attrs: Vec<KeyValue> = Vec::new();
    if let Some(Value::Object(a)) = e.get("attributes") {
        attrs.extend(key_values(a.iter()));
    }
    let mut keep = |k: &str, v: &Value| {
        attrs.push(KeyValue {
            key: k.to_string(),
            value: Some(from_json(v)),
            key_strindex: 0,
        })
    };
    r.time_unix_nano = e.get("timestamp").and_then(nanos).unwrap_or(0);
    r.observed_time_unix_nano =
        e.get("observed_timestamp")
            .and_then(nanos)
            .unwrap_or(if r.time_unix_nano != 0 {
                r.time_unix_nano
            } else {
                now_ns
            });
    let level = e.get("level").and_then(Value::as_str);
    r.severity_number = e
        .get("severity_number")
        .and_then(Value::as_i64)
        .filter(|n| (1..=24).contains(n))
        .map(|n| n as i32)
        .or_else(|| level.map(severity_of))
        .unwrap_or(0);
    r.severity_text = match e.get("severity_text").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => level.map(str::to_ascii_uppercase).unwrap_or_default(),
    };
    match (e.get("message"), e.get("body")) {
        (Some(Value::String(m)), body) => {
            r.body = Some(AnyValue {
                value: Some(Any::StringValue(m.clone())),
            });
            if let Some(b) = body {
                keep("body", b);
            }
        }
        (m, Some(b)) => {
            r.body = Some(from_json(b));
            if let Some(m) = m {
                keep("message", m);
            }
        }
        (Some(m), None) => r.body = Some(from_json(m)),
        (None, None) => {}
    }
    for (field, len) in [("trace_id", 16), ("span_id", 8)] {
        if let Some(v) = e.get(field) {
            match v.as_str().and_then(|t| unhex(t, len)) {
                Some(bytes) if field == "trace_id" => r.trace_id = bytes,
                Some(bytes) => r.span_id = bytes,
                // Not an id: kept as an attribute rather than lost.
                None => keep(field, v),
            }
        }
    }
    r.flags = e.get("flags").and_then(Value::as_u64).unwrap_or(0) as u32;
    r.event_name = e
        .get("event_name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    r.dropped_attributes_count = e
        .get("dropped_attributes_count")
        .and_then(Value::as_u64)
        .unwrap_or(0) as u32;
    for (k, v) in e {
        if OWN.contains(&k.as_str()) || consumed.iter().any(|c| c == k) {
            continue;
        }
        keep(k, v);
    }
    r.attributes = attrs;
    let (scope, schema) = match e.get("scope") {
        Some(Value::Object(s)) => {
            let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (
                Some(InstrumentationScope {
                    name: text("name"),
                    version: text("version"),
                    attributes: s
                        .get("attributes")
                        .and_then(Value::as_object)
                        .map(|a| key_values(a.iter()))
                        .unwrap_or_default(),
                    dropped_attributes_count: s
                        .get("dropped_attributes_count")
                        .and_then(Value::as_u64)
                        .unwrap_or(0) as u32,
                }),
                text("schema_url"),
            )
        }
        _ => (None, String::new()),
    };
    (r, scope, schema)
}
