//! Log levels as applications spell them, in severity order.

use std::fmt;

/// A log level. Ordered by severity: `Trace < Debug < ... < Fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// Parse the spellings apps use: names in any case (`WARNING`, `err`,
    /// `critical`, `emergency`...), and the numbers of pino and bunyan
    /// (10 trace .. 60 fatal). Returns `None` for anything else.
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        if s.len() > 13 {
            return None;
        }
        let mut buf = [0u8; 13];
        for (d, b) in buf.iter_mut().zip(s.bytes()) {
            *d = b.to_ascii_lowercase();
        }
        let lower = &buf[..s.len()];
        Some(match lower {
            b"trace" | b"10" => Level::Trace,
            b"debug" | b"dbg" | b"20" => Level::Debug,
            b"info" | b"information" | b"informational" | b"30" => Level::Info,
            b"notice" => Level::Notice,
            b"warn" | b"warning" | b"40" => Level::Warn,
            b"error" | b"err" | b"50" => Level::Error,
            b"fatal" | b"critical" | b"crit" | b"alert" | b"emergency" | b"emerg" | b"panic"
            | b"60" => Level::Fatal,
            _ => return None,
        })
    }

    /// The canonical lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level in a plugin's config (`min_level = "warn"`): any spelling
/// [`Level::parse`] knows; anything else is refused at `init`, naming it.
impl<'de> serde::Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Level::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown level `{s}` (expected trace, debug, info, notice, warn, error or fatal)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        assert_eq!(Level::parse("WARNING"), Some(Level::Warn));
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("Err"), Some(Level::Error));
        assert_eq!(Level::parse("critical"), Some(Level::Fatal));
        assert_eq!(Level::parse("30"), Some(Level::Info));
        assert_eq!(Level::parse("verbose"), None);
        assert_eq!(Level::parse("a very long level name"), None);
    }

    #[test]
    fn deserializes_from_config() {
        let l: Level = serde_json::from_str("\"WARNING\"").unwrap();
        assert_eq!(l, Level::Warn);
        let e = serde_json::from_str::<Level>("\"loud\"").unwrap_err();
        assert!(e.to_string().contains("unknown level `loud`"), "{e}");
    }

    #[test]
    fn orders_by_severity() {
        assert!(Level::Warn > Level::Info);
        assert!(Level::Fatal > Level::Error);
        assert!(Level::Trace < Level::Debug);
    }
}
