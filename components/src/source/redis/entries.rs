//! Stream entries as Redis replies them, made into events, and the
//! group's consumers as `XINFO CONSUMERS` lists them.

use super::*;

/// A value as JSON, losslessly: text as a string, other bytes as
/// `{"base64": "..."}`.
pub fn lossless(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.into(),
        Err(_) => {
            use base64::Engine as _;
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

/// An entry's fields as a JSON object (for dead letters), values lossless.
pub(super) fn fields_json(entry: &Entry) -> Vec<u8> {
    let map: serde_json::Map<String, serde_json::Value> = entry
        .fields
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), lossless(v)))
        .collect();
    serde_json::to_vec(&map).expect("a map of JSON values serializes")
}

/// One stream entry: its ID and field/value pairs.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

pub(super) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub(super) fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Entries of an `[[id, [f, v, ...]], ...]` reply. Deleted entries (whose
/// fields are nil) come back with no fields.
pub fn parse_entries(v: &Value) -> Vec<Entry> {
    array(v)
        .iter()
        .filter_map(|e| {
            let parts = array(e);
            let id = text(parts.first()?)?;
            let kv = parts.get(1).map(array).unwrap_or(&[]);
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((bytes(p.first()?)?, bytes(p.get(1)?)?)))
                .collect();
            Some(Entry { id, fields })
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply (RESP2 array or RESP3 map).
pub(super) fn read_reply(v: &Value) -> Vec<Entry> {
    match v {
        Value::Nil => Vec::new(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(_, entries)| parse_entries(entries))
            .collect(),
        other => array(other)
            .iter()
            .flat_map(|s| array(s).get(1).map(parse_entries).unwrap_or_default())
            .collect(),
    }
}

/// Turn an entry into an event: one field holding a JSON object is that
/// object; otherwise the fields become an object of strings.
pub fn entry_event(
    entry: &Entry,
    id_field: &str,
    clock: &mut Clock,
    times: &Candidates,
    metrics: Option<&crate::base::metrics::ComponentMetrics>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if entry.fields.is_empty() {
        return Err("the entry has no fields (deleted?)".into());
    }
    let mut body: Vec<u8> = Vec::new();
    let single_json = entry.fields.len() == 1 && entry.fields[0].1.first() == Some(&b'{');
    let has_timestamp;
    if single_json {
        let v = &entry.fields[0].1;
        let info = check_object(v).map_err(|e| {
            format!(
                "field `{}` is not a JSON object: {e}",
                String::from_utf8_lossy(&entry.fields[0].0)
            )
        })?;
        has_timestamp = info.has_timestamp;
        body.extend_from_slice(v.trim_ascii());
    } else {
        let mut map = serde_json::Map::new();
        for (k, v) in &entry.fields {
            map.insert(String::from_utf8_lossy(k).into_owned(), lossless(v));
        }
        has_timestamp = map.contains_key("timestamp");
        serde_json::to_writer(&mut body, &map).expect("writing to a Vec cannot fail");
    }
    // `{` + [timestamp,] + [id,] + rest
    out.push(b'{');
    let mut first = true;
    if !has_timestamp {
        out.extend_from_slice(b"\"timestamp\":\"");
        // The time candidates caught in one pass over the body, as the
        // line sources do (no tree of the event is built).
        let mut caught = vec![None; times.heads.len()];
        let found = scan_object(&body, &times.heads, times.filter, &mut caught)
            .map(|_| times.find(&caught))
            .unwrap_or(Found::Absent);
        match found {
            Found::Time(t) => t.write(out),
            found => {
                if found == Found::Unparsable {
                    if let Some(m) = metrics {
                        crate::base::metrics::ComponentMetrics::add(&m.timestamps_unparsed, 1);
                    }
                }
                out.extend_from_slice(clock.now().as_bytes());
            }
        }
        out.push(b'"');
        first = false;
    }
    if !id_field.is_empty() {
        if !first {
            out.push(b',');
        }
        push_json_str(out, id_field);
        out.push(b':');
        push_json_str(out, &entry.id);
        first = false;
    }
    let rest = body[1..].trim_ascii_start();
    if !first && rest != b"}" {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Ok(())
}

/// One consumer of a group, as `XINFO CONSUMERS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    pub pending: i64,
    pub idle_ms: i64,
}

/// The consumers of an `XINFO CONSUMERS` reply (a list of flat key/value
/// lists in RESP2, of maps in RESP3).
pub fn consumers(v: &Value) -> Vec<Consumer> {
    array(v)
        .iter()
        .map(|c| {
            let pairs: Vec<(String, &Value)> = match c {
                Value::Map(m) => m.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
                other => array(other)
                    .chunks(2)
                    .filter_map(|p| Some((text(p.first()?)?, p.get(1)?)))
                    .collect(),
            };
            let int = |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| match v {
                        Value::Int(n) => Some(*n),
                        other => text(other)?.parse().ok(),
                    })
                    .unwrap_or(0)
            };
            Consumer {
                name: pairs
                    .iter()
                    .find(|(k, _)| k == "name")
                    .and_then(|(_, v)| text(v))
                    .unwrap_or_default(),
                pending: int("pending"),
                idle_ms: int("idle"),
            }
        })
        .collect()
}
