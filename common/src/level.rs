//! One spelling of each log level, whatever the source or library: what
//! every preset and every source that knows an event's level writes.
//!
//! | written | from (any case) |
//! | --- | --- |
//! | `trace` | `trace` |
//! | `debug` | `debug`, `dbg` |
//! | `info` | `info`, `information`, `informational` |
//! | `notice` | `notice` |
//! | `warn` | `warn`, `warning` |
//! | `error` | `error`, `err` |
//! | `fatal` | `fatal`, `critical`, `crit`, `alert`, `emergency`, `emerg`, `panic` |
//!
//! Any other name (loguru's `SUCCESS`, a custom level) is kept, in lower
//! case. The Rust SDK's `Level::parse` reads the same names (a test holds
//! the two tables together).

/// The canonical name of a level name, or `None` if it is not in the table.
pub fn canonical(name: &str) -> Option<&'static str> {
    let name = name.trim();
    // Lower-cased on the stack: sources call this once per event.
    let mut buf = [0u8; 13];
    let lower = buf.get_mut(..name.len())?;
    for (d, b) in lower.iter_mut().zip(name.bytes()) {
        *d = b.to_ascii_lowercase();
    }
    Some(match &*lower {
        b"trace" => "trace",
        b"debug" | b"dbg" => "debug",
        b"info" | b"information" | b"informational" => "info",
        b"notice" => "notice",
        b"warn" | b"warning" => "warn",
        b"error" | b"err" => "error",
        b"fatal" | b"critical" | b"crit" | b"alert" | b"emergency" | b"emerg" | b"panic" => "fatal",
        _ => return None,
    })
}

/// The levels in severity order, as [`canonical`] names them.
pub const ORDER: [&str; 7] = ["trace", "debug", "info", "notice", "warn", "error", "fatal"];

/// A level's severity, trace 0 .. fatal 6 (the order of the plugin SDK's
/// `Level`): the names of [`canonical`], and the numbers pino and bunyan
/// write (10 trace .. 60 fatal). `None` for anything else.
pub fn rank(name: &str) -> Option<u8> {
    let name = match name.trim() {
        "10" => "trace",
        "20" => "debug",
        "30" => "info",
        "40" => "warn",
        "50" => "error",
        "60" => "fatal",
        other => canonical(other)?,
    };
    ORDER
        .iter()
        .position(|o| *o == name)
        .and_then(|p| u8::try_from(p).ok())
}

/// Whether two level names are the same level: the same canonical name,
/// or, outside the table, the same name in any case.
pub fn same(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Some(x), Some(y)) => x == y,
        (None, None) => a.trim().eq_ignore_ascii_case(b.trim()),
        _ => false,
    }
}

/// A level as sources and presets write it: the canonical name, or the
/// name in lower case when it is not in the table.
pub fn normalize(name: &str) -> String {
    canonical(name).map_or_else(|| name.trim().to_lowercase(), str::to_string)
}

/// [`normalize`] for a JSON value: strings are normalised, any other value
/// (a number) is kept as it is.
pub fn normalize_value(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(normalize(&s)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_has_one_name() {
        assert_eq!(normalize("WARNING"), "warn");
        assert_eq!(normalize(" Critical "), "fatal");
        assert_eq!(normalize("err"), "error");
        assert_eq!(normalize("SUCCESS"), "success");
        assert_eq!(canonical("informational"), Some("info"));
        assert_eq!(canonical("a-very-long-level-name"), None);
        assert_eq!(rank("WARNING"), Some(4));
        assert_eq!(rank(" 60"), Some(6));
        assert_eq!(rank("trace"), Some(0));
        assert_eq!(rank("success"), None);
        assert_eq!(
            normalize_value(serde_json::json!(30)),
            serde_json::json!(30)
        );
    }
}
