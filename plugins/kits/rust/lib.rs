//! {{name}}: a sluice plugin in Rust.
//!
//! Keeps the events at or above `min_level` (default "warn") of the
//! transform's config. Build with `sluice plugin build`, try it with
//! `sluice plugin test {{name}}.wasm < test/events.jsonl`.

use serde::Deserialize;
use sluice_plugin::{filter, Event, Level};

/// The `[transforms.NAME.config]` table; unknown keys and levels are
/// refused when the pipeline starts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "warn")]
    min_level: Level,
}

fn warn() -> Level {
    Level::Warn
}

filter!(keep, config = Config);

/// Whether an event goes on. (Return `Result<bool, String>` instead to send
/// an event to the dead letters with a reason.)
pub fn keep(config: &Config, event: &Event) -> bool {
    event.level().is_some_and(|level| level >= config.min_level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_warnings_and_errors() {
        let config = Config { min_level: Level::Warn };
        assert!(keep(&config, &Event::new(br#"{"level":"error","message":"disk full"}"#)));
        assert!(!keep(&config, &Event::new(br#"{"level":"debug","message":"tick"}"#)));
    }
}
