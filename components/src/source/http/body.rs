//! Request bodies: read within the limits (size before and after gzip,
//! time), parsed into events by content type, and checked against the
//! source's rules.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_ENCODING, CONTENT_LENGTH};
use hyper::StatusCode;
use serde_json::{Map, Value};

use super::{form, BodyFormat, HttpConfig};

/// Why a request is refused: the status and the message of the answer.
pub(super) type Refusal = (StatusCode, String);

fn too_large(max: usize) -> Refusal {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {max} bytes"),
    )
}

/// Refuse a body announced larger than `max`, and say whether it is
/// gzipped (any other encoding is refused).
pub(super) fn check_headers(headers: &HeaderMap, max: usize) -> Result<bool, Refusal> {
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if len > max {
            return Err(too_large(max));
        }
    }
    match headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()) {
        None | Some("identity") => Ok(false),
        Some(e) if e.eq_ignore_ascii_case("gzip") => Ok(true),
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding `{other}` is not accepted (gzip is)"),
        )),
    }
}

/// Read a body of at most `max` bytes within `timeout`, decompressed when
/// `gzip` (to at most `max` bytes too: a bomb stops there).
pub(super) async fn read(
    body: Incoming,
    gzip: bool,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Refusal> {
    let collected = tokio::time::timeout(timeout, Limited::new(body, max).collect()).await;
    let body = match collected {
        Err(_) => {
            return Err((
                StatusCode::REQUEST_TIMEOUT,
                "the body took too long to arrive".into(),
            ))
        }
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(too_large(max))
        }
        Ok(Err(e)) => {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            ))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(&body[..]).take(max as u64 + 1);
    if let Err(e) = dec.read_to_end(&mut out) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("the gzip body is corrupt: {e}"),
        ));
    }
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(Bytes::from(out))
}

/// One rejected event of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// Index of the event in the request (0-based).
    pub event: usize,
    /// The offending field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// Turn a body into JSON objects (or say why not).
pub(super) fn parse(
    cfg: &HttpConfig,
    content_type: &str,
    body: &[u8],
) -> Result<Vec<Value>, (StatusCode, String)> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("the body is not UTF-8: {e}")))?;
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => return Ok(vec![form::form_event(text)]),
        "text/plain" if cfg.format == BodyFormat::Text => {
            return Ok(text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::json!({ "message": l }))
                .collect())
        }
        "application/json" | "application/x-ndjson" | "application/jsonl" | "text/plain" | "" => {}
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type `{other}` is not accepted: send application/json, application/x-ndjson{}", if cfg.format == BodyFormat::Text { " or text/plain" } else { "" }),
            ))
        }
    }
    let max = cfg.max_events_per_request;
    let too_many = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("more than {max} events in one request (max_events_per_request)"),
        )
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        // Counted while parsing: `[{},{},...]` stops at the limit instead of
        // growing millions of values first.
        let mut de = serde_json::Deserializer::from_str(text);
        return match serde::de::DeserializeSeed::deserialize(AtMost(max), &mut de)
            .and_then(|v| de.end().map(|()| v))
        {
            Ok(v) => Ok(v),
            Err(e) if e.to_string().starts_with(TOO_MANY) => Err(too_many()),
            Err(e) => Err(bad(format!("malformed JSON: {e}"))),
        };
    }
    // One object, or one per line.
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        match de.next() {
            None => break,
            Some(Ok(_)) if out.len() == max => return Err(too_many()),
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(bad(format!("malformed JSON (event {}): {e}", out.len()))),
        }
    }
    if out.is_empty() {
        return Err(bad("the body holds no event".into()));
    }
    Ok(out)
}

/// What `AtMost` says when the array is longer (matched by the caller).
const TOO_MANY: &str = "too many events";

/// A JSON array of at most this many values.
struct AtMost(usize);

impl<'de> serde::de::DeserializeSeed<'de> for AtMost {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AtMost {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {} events", self.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            if out.len() == self.0 {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            out.push(v);
        }
        Ok(out)
    }
}

/// Check one event against the configured rules.
pub(super) fn validate(cfg: &HttpConfig, i: usize, v: &Value) -> Result<(), Rejection> {
    let reject = |field: Option<&str>, message: String| Rejection {
        event: i,
        field: field.map(str::to_string),
        message,
    };
    let Value::Object(map) = v else {
        return Err(reject(None, "an event must be a JSON object".into()));
    };
    for f in &cfg.required {
        match map.get(f) {
            None | Some(Value::Null) => return Err(reject(Some(f), format!("`{f}` is required"))),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(reject(Some(f), format!("`{f}` is empty")))
            }
            _ => {}
        }
    }
    if !cfg.levels.is_empty() {
        if let Some(level) = map.get("level") {
            let ok = level
                .as_str()
                .is_some_and(|l| cfg.levels.iter().any(|a| sluice_common::level::same(a, l)));
            if !ok {
                return Err(reject(
                    Some("level"),
                    format!("level {level} is not one of: {}", cfg.levels.join(", ")),
                ));
            }
        }
    }
    if let Some(max) = cfg.max_field {
        if let Some((k, len)) = longest_string(map, "") {
            if len > max {
                return Err(reject(
                    Some(&k),
                    format!("`{k}` is {len} bytes, more than the {max} allowed"),
                ));
            }
        }
    }
    Ok(())
}

fn longest(a: Option<(String, usize)>, b: Option<(String, usize)>) -> Option<(String, usize)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.1 > a.1 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The longest string in a value (recursively, through objects and
/// arrays): (its path, bytes).
fn longest_in(v: &Value, path: String) -> Option<(String, usize)> {
    match v {
        Value::String(s) => Some((path, s.len())),
        Value::Object(m) => longest_string(m, &path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| longest_in(item, format!("{path}[{i}]")))
            .fold(None, longest),
        _ => None,
    }
}

/// The longest string in an object, keys included, at any depth:
/// (dotted path, bytes).
fn longest_string(map: &Map<String, Value>, prefix: &str) -> Option<(String, usize)> {
    let mut best: Option<(String, usize)> = None;
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        // A key is a string too: a 200 KB key is as large as a value.
        let key = Some((path.clone(), k.len()));
        best = longest(longest(best, key), longest_in(v, path));
    }
    best
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn config(format: &str) -> HttpConfig {
        let toml = format!("type = \"http\"\naddress = \"127.0.0.1:0\"\nformat = \"{format}\"\nmax_field = 64\nmax_events_per_request = 50\nrequired = [\"m\"]\n");
        toml::from_str(&toml).unwrap()
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(Into::into),
            any::<i64>().prop_map(Into::into),
            "\\PC{0,80}".prop_map(Into::into),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Into::into),
                proptest::collection::btree_map("\\PC{0,70}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any bytes under any content type: an answer, never a panic.
        #[test]
        fn prop_bodies_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            ct in prop_oneof![Just("application/json"), Just("application/x-ndjson"), Just("text/plain"), Just("application/x-www-form-urlencoded"), Just("image/png")],
            text in any::<bool>(),
        ) {
            let cfg = config(if text { "text" } else { "json" });
            if let Ok(events) = parse(&cfg, ct, &body) {
                prop_assert!(events.len() <= 50);
                for (i, e) in events.iter().enumerate() {
                    let _ = validate(&cfg, i, e);
                }
            }
        }

        /// JSON events, one per line or in an array: parsed back as sent,
        /// and `max_field` holds for every string, keys included.
        #[test]
        fn prop_json_bodies_round_trip(
            events in proptest::collection::vec(
                proptest::collection::btree_map("\\PC{0,70}", json_value(), 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                1..20,
            ),
            array in any::<bool>(),
        ) {
            let cfg = config("json");
            let body = if array {
                serde_json::to_string(&events).unwrap()
            } else {
                events.iter().map(|e| format!("{e}\n")).collect()
            };
            let parsed = parse(&cfg, "application/json", body.as_bytes()).unwrap();
            prop_assert_eq!(&parsed, &events);
            for (i, e) in parsed.iter().enumerate() {
                if let (Ok(()), serde_json::Value::Object(m)) = (validate(&cfg, i, e), e) {
                    prop_assert!(longest_string(m, "").is_none_or(|(_, n)| n <= 64));
                }
            }
        }

        /// Gzip bodies: what went in comes out, bombs stop at the limit.
        #[test]
        fn prop_gzip_is_bounded(data in proptest::collection::vec(any::<u8>(), 0..4096), max in 1usize..2048) {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&data).unwrap();
            let gz = enc.finish().unwrap();
            let mut out = Vec::new();
            let n = flate2::read::MultiGzDecoder::new(&gz[..]).take(max as u64 + 1).read_to_end(&mut out).unwrap();
            prop_assert!(n <= max + 1);
            prop_assert_eq!(&out[..], &data[..data.len().min(max + 1)]);
        }
    }
}
