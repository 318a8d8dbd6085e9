//! What a request will cost before it is decoded: the protobuf walked
//! without building it (records, nesting, bytes), so a small request
//! that would expand into a huge tree is refused first.

use super::*;

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
pub(super) enum Msg {
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
    pub(super) fn child(self, field: u64) -> Msg {
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
    pub(super) fn size(self) -> usize {
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
pub(super) const MAX_NESTING: usize = 100;

pub(super) fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
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

pub(super) fn walk(b: &[u8], msg: Msg, depth: usize, cost: &mut Cost) -> Result<(), String> {
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
