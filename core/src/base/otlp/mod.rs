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

mod cost;
mod records;

pub use self::cost::*;
pub use self::records::*;

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
            let scope = scope_of(sl);
            let shared = Shared {
                resource: &resource,
                resource_dropped,
                resource_schema_url: &rl.schema_url,
                service,
                scope: &scope,
                flatten_attributes,
            };
            out.extend(
                sl.log_records
                    .iter()
                    .map(|r| Value::Object(event_of(r, &shared))),
            );
        }
    }
    out
}

/// What the events of one scope's records share.
struct Shared<'a> {
    resource: &'a Map<String, Value>,
    resource_dropped: u32,
    resource_schema_url: &'a str,
    service: Option<&'a str>,
    scope: &'a Map<String, Value>,
    flatten_attributes: bool,
}

/// The `scope` field of the events of one scope's records.
fn scope_of(sl: &ScopeLogs) -> Map<String, Value> {
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
    scope
}

/// One record as an event (the table at the top of this file).
fn event_of(r: &LogRecord, shared: &Shared<'_>) -> Map<String, Value> {
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
        (!r.severity_text.is_empty()).then(|| sluice_common::level::normalize(&r.severity_text))
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
    if let Some(s) = shared.service {
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
    if let Some(name) = shared.scope.get("name") {
        // As the python-logging preset names it (the SDKs'
        // logging bridges name the scope after the logger).
        e.insert("logger".into(), name.clone());
    }
    if !r.attributes.is_empty() {
        let attrs = attributes(&r.attributes);
        if shared.flatten_attributes {
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
    if !shared.resource.is_empty() {
        e.insert("resource".into(), shared.resource.clone().into());
    }
    if !shared.scope.is_empty() {
        e.insert("scope".into(), shared.scope.clone().into());
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
    if !shared.resource_schema_url.is_empty() {
        e.insert(
            "resource_schema_url".into(),
            shared.resource_schema_url.to_string().into(),
        );
    }
    if shared.resource_dropped != 0 {
        e.insert(
            "resource_dropped_attributes_count".into(),
            shared.resource_dropped.into(),
        );
    }
    e
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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
