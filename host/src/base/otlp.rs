//! OpenTelemetry logs (OTLP) and sluice events, both ways, on the
//! `opentelemetry-proto` crate's generated types.
//!
//! A log record becomes one event:
//!
//! | event field | from the record |
//! | --- | --- |
//! | `timestamp` | `time_unix_nano` (else `observed_time_unix_nano`), RFC 3339 to the nanosecond |
//! | `level` | `severity_number` as `trace`/`debug`/`info`/`warn`/`error`/`fatal` (else `severity_text`, normalised as `sluice_common::level` says) |
//! | `message` | `body`, when it is a string |
//! | `body` | `body`, when it is not a string (JSON: maps are objects, arrays arrays) |
//! | `service` | the resource's `service.name` |
//! | `trace_id`, `span_id` | as lower-case hex |
//! | `severity_number`, `severity_text` | as sent |
//! | `attributes` | the record's attributes, keys as sent (`code.file.path`); with the source's `flatten_attributes`, at the top level instead |
//! | `resource` | the resource's attributes |
//! | `scope` | `{name, version, attributes}` of the instrumentation scope |
//! | `logger` | the scope's name (what the `python-logging` preset calls the logger) |
//! | `observed_timestamp`, `flags`, `event_name`, `dropped_attributes_count` | when set |
//!
//! Values keep their types (string, bool, integer, double, array, map);
//! bytes values become base64 strings, the one type JSON cannot tell apart.
//! The way back reverses it: `level` (or `severity_number`) gives the
//! severity, `message` or `body` the body, `scope` (else `logger`) the
//! scope, `resource` and the fields the
//! sink maps (`service` -> `service.name`) the resource, `attributes` and
//! every other top-level field the attributes.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::{Map, Number, Value};

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From a `Content-Type`: OTLP/HTTP sends `application/x-protobuf` or
    /// `application/json`.
    pub fn of(content_type: &str) -> Option<Self> {
        let ct = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Self::Protobuf),
            "application/json" => Some(Self::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Parse an `ExportLogsServiceRequest`.
pub fn decode_request(encoding: Encoding, body: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => ExportLogsServiceRequest::decode(body)
            .map_err(|e| format!("not an OTLP ExportLogsServiceRequest (protobuf): {e}")),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| format!("not an OTLP ExportLogsServiceRequest (JSON): {e}")),
    }
}

/// What decoding a request will take, read off its bytes before it is
/// decoded: decoding multiplies size (an empty `LogRecord` is two bytes on
/// the wire and a few hundred in memory), so a request is charged for
/// [`Cost::bytes`] and refused past `max_events_per_request` records before
/// anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Log records, counted exactly (protobuf; JSON's are counted once
    /// decoded).
    pub records: Option<usize>,
    /// An upper bound of the memory the decoded request takes.
    pub bytes: usize,
}

/// The message types of a logs request, as far as their fields hold
/// other messages (protobuf field numbers of the OTLP protos).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceLogs,
    Resource,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
    /// Anything else: its fields are strings, bytes or scalars.
    Leaf,
}

impl Msg {
    fn child(self, field: u64) -> Msg {
        use Msg::*;
        match (self, field) {
            (Request, 1) => ResourceLogs,
            (ResourceLogs, 1) => Resource,
            (ResourceLogs, 2) => ScopeLogs,
            (Resource, 1) => KeyValue,
            (ScopeLogs, 1) => Scope,
            (ScopeLogs, 2) => LogRecord,
            (Scope, 3) => KeyValue,
            (LogRecord, 5) => AnyValue,
            (LogRecord, 6) => KeyValue,
            (KeyValue, 2) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            (ArrayValue, 1) => AnyValue,
            (KeyValueList, 1) => KeyValue,
            _ => Leaf,
        }
    }

    /// What one occurrence takes once decoded, besides its bytes.
    fn size(self) -> usize {
        use std::mem::size_of;
        match self {
            Msg::Request => size_of::<ExportLogsServiceRequest>(),
            Msg::ResourceLogs => size_of::<ResourceLogs>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::ScopeLogs => size_of::<ScopeLogs>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::LogRecord => size_of::<LogRecord>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KeyValueList => size_of::<KeyValueList>(),
            // A string or bytes: its `Vec`'s own header.
            Msg::Leaf => size_of::<Vec<u8>>(),
        }
    }
}

/// Nesting past this is refused (prost itself stops at 100).
const MAX_NESTING: usize = 100;

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn walk(b: &[u8], msg: Msg, depth: usize, cost: &mut Cost) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!("nested deeper than {MAX_NESTING} messages"));
    }
    let bad =
        || "not an OTLP ExportLogsServiceRequest (protobuf): a field runs past its end".to_string();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i).ok_or_else(bad)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(b, &mut i).ok_or_else(bad)?;
            }
            1 => i = i.checked_add(8).filter(|&e| e <= b.len()).ok_or_else(bad)?,
            5 => i = i.checked_add(4).filter(|&e| e <= b.len()).ok_or_else(bad)?,
            2 => {
                let len = usize::try_from(varint(b, &mut i).ok_or_else(bad)?).map_err(|_| bad())?;
                let end = i
                    .checked_add(len)
                    .filter(|&e| e <= b.len())
                    .ok_or_else(bad)?;
                let child = msg.child(field);
                cost.bytes = cost.bytes.saturating_add(child.size());
                if child == Msg::LogRecord {
                    cost.records = Some(cost.records.unwrap_or(0) + 1);
                }
                if child != Msg::Leaf {
                    walk(&b[i..end], child, depth + 1, cost)?;
                }
                i = end;
            }
            _ => {
                return Err(format!(
                    "not an OTLP ExportLogsServiceRequest (protobuf): wire type {wire}"
                ))
            }
        }
    }
    Ok(())
}

/// The [`Cost`] of decoding `body`, read off its bytes in one pass that
/// allocates nothing.
pub fn cost(encoding: Encoding, body: &[u8]) -> Result<Cost, String> {
    match encoding {
        Encoding::Protobuf => {
            let mut cost = Cost {
                records: Some(0),
                bytes: body.len().saturating_add(Msg::Request.size()),
            };
            walk(body, Msg::Request, 0, &mut cost)?;
            Ok(cost)
        }
        // Every object decoded comes from a `{` (one inside a string
        // counts too: an over-estimate), and none is larger than a log
        // record; strings are no longer than the body.
        Encoding::Json => {
            let objects = memchr::memchr_iter(b'{', body).count();
            Ok(Cost {
                records: None,
                bytes: body
                    .len()
                    .saturating_add(objects.saturating_mul(std::mem::size_of::<LogRecord>())),
            })
        }
    }
}

/// The events of a request of at most `max` log records, or why not.
pub fn events_within(
    req: &ExportLogsServiceRequest,
    max: usize,
    flatten_attributes: bool,
) -> Result<Vec<Value>, String> {
    let records: usize = req
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    if records > max {
        return Err(format!(
            "more than {max} log records in one request (max_events_per_request)"
        ));
    }
    Ok(to_events(req, flatten_attributes))
}

/// The answer to a request that was taken whole, as its encoding wants.
pub fn success_body(encoding: Encoding) -> Vec<u8> {
    match encoding {
        // An empty ExportLogsServiceResponse: no partial_success.
        Encoding::Protobuf => Vec::new(),
        Encoding::Json => b"{}".to_vec(),
    }
}

fn time_text(ns: u64) -> String {
    let t =
        DateTime::<Utc>::from_timestamp((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as u32)
            .unwrap_or_default();
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The level name of a severity number (the data model's ranges).
pub fn level_of(severity: i32) -> Option<&'static str> {
    Some(match severity {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => return None,
    })
}

/// The severity number of a level name (the first of its range).
pub fn severity_of(level: &str) -> i32 {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" | "notice" | "information" => 9,
        "warn" | "warning" => 13,
        "error" | "err" => 17,
        "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" => 21,
        _ => 0,
    }
}

/// An OTLP value as JSON.
pub fn to_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::Number((*i).into()),
        Some(Any::DoubleValue(d)) => Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(Any::ArrayValue(a)) => Value::Array(a.values.iter().map(to_json).collect()),
        Some(Any::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
        Some(Any::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Any::StringValueStrindex(i)) => Value::Number((*i).into()),
    }
}

/// JSON as an OTLP value.
pub fn from_json(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::String(s) => Some(Any::StringValue(s.clone())),
        Value::Bool(b) => Some(Any::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Any::IntValue(i),
            None => match n.as_f64() {
                Some(d) => Any::DoubleValue(d),
                None => Any::StringValue(n.to_string()),
            },
        }),
        Value::Array(a) => Some(Any::ArrayValue(ArrayValue {
            values: a.iter().map(from_json).collect(),
        })),
        Value::Object(m) => Some(Any::KvlistValue(KeyValueList {
            values: key_values(m.iter()),
        })),
    };
    AnyValue { value }
}

fn attributes(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(to_json).unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn key_values<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> Vec<KeyValue> {
    fields
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(from_json(v)),
            key_strindex: 0,
        })
        .collect()
}

/// Every log record of a request as an event, in order; with
/// `flatten_attributes`, the record's attributes at the top level (an
/// attribute whose name the event already has stays under `attributes`).
pub fn to_events(req: &ExportLogsServiceRequest, flatten_attributes: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let resource = rl
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let resource_dropped = rl
            .resource
            .as_ref()
            .map_or(0, |r| r.dropped_attributes_count);
        let service = resource.get("service.name").and_then(Value::as_str);
        for sl in &rl.scope_logs {
            let mut scope = Map::new();
            if let Some(s) = &sl.scope {
                if !s.name.is_empty() {
                    scope.insert("name".into(), s.name.clone().into());
                }
                if !s.version.is_empty() {
                    scope.insert("version".into(), s.version.clone().into());
                }
                if !s.attributes.is_empty() {
                    scope.insert("attributes".into(), attributes(&s.attributes).into());
                }
                if s.dropped_attributes_count > 0 {
                    scope.insert(
                        "dropped_attributes_count".into(),
                        s.dropped_attributes_count.into(),
                    );
                }
            }
            if !sl.schema_url.is_empty() {
                scope.insert("schema_url".into(), sl.schema_url.clone().into());
            }
            for r in &sl.log_records {
                let mut e = Map::new();
                let time = if r.time_unix_nano != 0 {
                    r.time_unix_nano
                } else {
                    r.observed_time_unix_nano
                };
                if time != 0 {
                    e.insert("timestamp".into(), time_text(time).into());
                }
                let level = level_of(r.severity_number).map(str::to_string).or_else(|| {
                    (!r.severity_text.is_empty())
                        .then(|| sluice_common::level::normalize(&r.severity_text))
                });
                if let Some(level) = level {
                    e.insert("level".into(), level.into());
                }
                match r.body.as_ref().map(|b| &b.value) {
                    Some(Some(Any::StringValue(s))) => {
                        e.insert("message".into(), s.clone().into());
                    }
                    Some(Some(_)) => {
                        e.insert("body".into(), to_json(r.body.as_ref().expect("matched")));
                    }
                    _ => {}
                }
                if let Some(s) = service {
                    e.insert("service".into(), s.into());
                }
                if !r.trace_id.is_empty() {
                    e.insert("trace_id".into(), hex(&r.trace_id).into());
                }
                if !r.span_id.is_empty() {
                    e.insert("span_id".into(), hex(&r.span_id).into());
                }
                if r.severity_number != 0 {
                    e.insert("severity_number".into(), r.severity_number.into());
                }
                if !r.severity_text.is_empty() {
                    e.insert("severity_text".into(), r.severity_text.clone().into());
                }
                if let Some(name) = scope.get("name") {
                    // As the python-logging preset names it (the SDKs'
                    // logging bridges name the scope after the logger).
                    e.insert("logger".into(), name.clone());
                }
                if !r.attributes.is_empty() {
                    let attrs = attributes(&r.attributes);
                    if flatten_attributes {
                        let mut clash = Map::new();
                        for (k, v) in attrs {
                            if e.contains_key(&k) || OWN.contains(&k.as_str()) {
                                clash.insert(k, v);
                            } else {
                                e.insert(k, v);
                            }
                        }
                        if !clash.is_empty() {
                            e.insert("attributes".into(), clash.into());
                        }
                    } else {
                        e.insert("attributes".into(), attrs.into());
                    }
                }
                if !resource.is_empty() {
                    e.insert("resource".into(), resource.clone().into());
                }
                if !scope.is_empty() {
                    e.insert("scope".into(), scope.clone().into());
                }
                if r.observed_time_unix_nano != 0 && r.observed_time_unix_nano != time {
                    e.insert(
                        "observed_timestamp".into(),
                        time_text(r.observed_time_unix_nano).into(),
                    );
                }
                if r.flags != 0 {
                    e.insert("flags".into(), r.flags.into());
                }
                if !r.event_name.is_empty() {
                    e.insert("event_name".into(), r.event_name.clone().into());
                }
                if r.dropped_attributes_count != 0 {
                    e.insert(
                        "dropped_attributes_count".into(),
                        r.dropped_attributes_count.into(),
                    );
                }
                if !rl.schema_url.is_empty() {
                    e.insert("resource_schema_url".into(), rl.schema_url.clone().into());
                }
                if resource_dropped != 0 {
                    e.insert(
                        "resource_dropped_attributes_count".into(),
                        resource_dropped.into(),
                    );
                }
                out.push(Value::Object(e));
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `len` bytes from hex text, if it is that.
fn unhex(text: &str, len: usize) -> Option<Vec<u8>> {
    if text.len() != len * 2 || !text.is_ascii() {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// A time field as nanoseconds since the epoch.
fn nanos(v: &Value) -> Option<u64> {
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
const OWN: [&str; 16] = [
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
fn resource_of(
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
fn logger_as_scope(mut e: Map<String, Value>) -> Map<String, Value> {
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
fn record_of(
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// #36: 10 MiB of empty log records (`12 00` repeated) took 978 MiB to
    /// decode. Their number and what they decode to are known first.
    #[test]
    fn the_cost_of_a_request_is_known_before_decoding_it() {
        let records = 1000usize;
        let mut scope = Vec::new();
        for _ in 0..records {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let wrap = |field: u8, inner: &[u8]| {
            let mut out = vec![(field << 3) | 2];
            let mut n = inner.len();
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(inner);
            out
        };
        let body = wrap(1, &wrap(2, &scope));
        let c = cost(Encoding::Protobuf, &body).unwrap();
        assert_eq!(c.records, Some(records));
        assert!(c.bytes >= records * std::mem::size_of::<LogRecord>());
        let decoded = ExportLogsServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(
            decoded.resource_logs[0].scope_logs[0].log_records.len(),
            records
        );
        // A real request: its count is exact, its cost above its size.
        let req = sample();
        let bytes = req.encode_to_vec();
        let c = cost(Encoding::Protobuf, &bytes).unwrap();
        assert_eq!(
            c.records,
            Some(req.resource_logs[0].scope_logs[0].log_records.len())
        );
        assert!(c.bytes > bytes.len());
        // Cut short, or nested past prost's limit: refused, not decoded.
        assert!(cost(Encoding::Protobuf, &bytes[..bytes.len() - 1]).is_err());
        let mut deep = vec![0x08, 0x01];
        for _ in 0..60 {
            deep = wrap(5, &wrap(1, &deep));
        }
        let deep = wrap(1, &wrap(2, &wrap(2, &wrap(6, &wrap(2, &deep)))));
        assert!(cost(Encoding::Protobuf, &deep)
            .unwrap_err()
            .contains("nested"));
        // JSON: each object is charged as a log record.
        let json = format!(
            "{{\"resourceLogs\":[{{\"scopeLogs\":[{{\"logRecords\":[{}{{}}]}}]}}]}}",
            "{},".repeat(999)
        );
        let c = cost(Encoding::Json, json.as_bytes()).unwrap();
        assert!(c.bytes >= 1000 * std::mem::size_of::<LogRecord>());
    }

    proptest! {
        /// The cost walker is total on any bytes, agrees with prost on
        /// what decodes, and counts its log records exactly.
        #[test]
        fn prop_otlp_protobuf_cost_is_total(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let walked = cost(Encoding::Protobuf, &body);
            if let Ok(req) = ExportLogsServiceRequest::decode(body.as_slice()) {
                let c = walked.unwrap();
                let n: usize = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
                prop_assert_eq!(c.records, Some(n));
            }
        }

        /// A real request, cut anywhere: never a panic.
        #[test]
        fn prop_otlp_protobuf_cut_anywhere(cut in 0usize..400) {
            let bytes = sample().encode_to_vec();
            let end = cut.min(bytes.len());
            let _ = cost(Encoding::Protobuf, &bytes[..end]);
            let _ = decode_request(Encoding::Protobuf, &bytes[..end]);
        }

        /// The JSON decoder on any text shaped like OTLP/JSON: never a panic.
        #[test]
        fn prop_otlp_json_decoder_is_total(text in "[{}\\[\\],:\"a-zA-Z0-9 .-]{0,300}") {
            let _ = cost(Encoding::Json, text.as_bytes());
            if let Ok(req) = decode_request(Encoding::Json, text.as_bytes()) {
                let _ = events_within(&req, 1000, false);
            }
        }
    }

    fn sample() -> ExportLogsServiceRequest {
        let kv = |k: &str, v: Any| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", Any::StringValue("checkout".into())),
                        kv("host.name", Any::StringValue("web-1".into())),
                    ],
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "shop.orders".into(),
                        version: "1.2".into(),
                        attributes: vec![],
                        dropped_attributes_count: 0,
                    }),
                    log_records: vec![LogRecord {
                        time_unix_nano: 1_764_000_000_123_456_789,
                        observed_time_unix_nano: 1_764_000_000_223_456_789,
                        severity_number: 17,
                        severity_text: "ERROR".into(),
                        body: Some(AnyValue {
                            value: Some(Any::StringValue("order 7 failed".into())),
                        }),
                        attributes: vec![
                            kv("order_id", Any::IntValue(7)),
                            kv("ratio", Any::DoubleValue(0.25)),
                            kv("ok", Any::BoolValue(false)),
                            kv("code.file.path", Any::StringValue("/app/shop.py".into())),
                            kv(
                                "tags",
                                Any::ArrayValue(ArrayValue {
                                    values: vec![AnyValue {
                                        value: Some(Any::StringValue("a".into())),
                                    }],
                                }),
                            ),
                        ],
                        dropped_attributes_count: 0,
                        flags: 1,
                        trace_id: (1..=16).collect(),
                        span_id: (1..=8).collect(),
                        event_name: String::new(),
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn a_record_becomes_an_event_and_comes_back_the_same() {
        let req = sample();
        let events = to_events(&req, false);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e["timestamp"], "2025-11-24T16:00:00.123456789Z");
        assert_eq!(e["level"], "error");
        assert_eq!(e["message"], "order 7 failed");
        assert_eq!(e["service"], "checkout");
        assert_eq!(e["trace_id"], "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(e["span_id"], "0102030405060708");
        assert_eq!(e["attributes"]["order_id"], 7);
        assert_eq!(e["attributes"]["ratio"], 0.25);
        assert_eq!(e["attributes"]["code.file.path"], "/app/shop.py");
        assert_eq!(e["resource"]["host.name"], "web-1");
        assert_eq!(e["scope"]["name"], "shop.orders");
        assert_eq!(e["observed_timestamp"], "2025-11-24T16:00:00.223456789Z");
        let text = serde_json::to_vec(e).unwrap();
        let fields = BTreeMap::from([("service.name".to_string(), "service".to_string())]);
        let back = to_request(&[&text], &fields, 0);
        assert_eq!(back, req);
    }

    #[test]
    fn plain_events_get_severity_body_resource_and_attributes() {
        let fields = BTreeMap::from([("service.name".to_string(), "service".to_string())]);
        let a = br#"{"timestamp":"2026-12-01T10:00:00Z","level":"warning","message":"slow","service":"api","user":{"id":3},"trace_id":"nope"}"#;
        let b = br#"{"level":"info","message":"ok","service":"db"}"#;
        let req = to_request(&[a, b, a], &fields, 42);
        assert_eq!(req.resource_logs.len(), 2);
        let api = &req.resource_logs[0];
        assert_eq!(api.scope_logs[0].log_records.len(), 2);
        let r = &api.scope_logs[0].log_records[0];
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "WARNING");
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap();
        assert_eq!(r.time_unix_nano, at.timestamp_nanos_opt().unwrap() as u64);
        assert!(r.trace_id.is_empty());
        let keys: Vec<&str> = r.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["trace_id", "user"]);
        assert_eq!(
            req.resource_logs[1].scope_logs[0].log_records[0].observed_time_unix_nano,
            42
        );
    }

    #[test]
    fn otlp_json_with_hex_ids_and_string_integers() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"js"}}]},"scopeLogs":[{"scope":{"name":"s"},"logRecords":[{"timeUnixNano":"1764000000000000000","severityNumber":9,"body":{"stringValue":"hi"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","attributes":[{"key":"n","value":{"intValue":"5"}}]}]}]}]}"#;
        let req = decode_request(Encoding::Json, body).unwrap();
        let e = &to_events(&req, false)[0];
        assert_eq!(e["trace_id"], "5b8efff798038103d269b633813fc60c");
        assert_eq!(e["attributes"]["n"], 5);
        assert_eq!(e["level"], "info");
        assert!(decode_request(Encoding::Json, b"{\"resourceLogs\":3}").is_err());
        assert!(decode_request(Encoding::Protobuf, b"\xff\xff").is_err());
    }
}
