//! {{name}}: a sluice plugin in Rust.
//!
//! Keeps the events at or above `min_level` (default "warn"), adds `env`
//! (default "dev") from the transform's config, and sends errors and worse
//! to the output `alerts` (`{{ident}}.alerts` in a pipeline), the rest to
//! the default output. Build with `sluice plugin build`, try it with
//! `sluice plugin test {{name}}.wasm --expect test/expected.jsonl < test/events.jsonl`.

use serde::Deserialize;
use sluice_plugin::{transform, Event, Level, Verdict};

/// The `[transforms.NAME.config]` table; unknown keys and levels are
/// refused when the pipeline starts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "warn")]
    min_level: Level,
    #[serde(default = "dev")]
    env: String,
}

fn warn() -> Level {
    Level::Warn
}

fn dev() -> String {
    "dev".to_string()
}

transform!(route, config = Config, outputs = ["alerts"]);

/// What happens to one event. (Return `Verdict::Fail(reason)` to send it
/// to the dead letters.)
pub fn route(config: &Config, event: &Event) -> Verdict {
    let Some(level) = event.level().filter(|&level| level >= config.min_level) else {
        return Verdict::Drop;
    };
    // The other fields are copied as they are; only `env` is written.
    let tagged = event.edit().set("env", config.env.as_str()).to_bytes();
    if level >= Level::Error {
        Verdict::ReplaceTo(tagged, "alerts".into())
    } else {
        Verdict::Replace(tagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_warnings_and_routes_errors() {
        let config = Config {
            min_level: Level::Warn,
            env: "prod".into(),
        };
        let error = Event::new(br#"{"level":"error","message":"disk full"}"#);
        assert_eq!(
            route(&config, &error),
            Verdict::ReplaceTo(
                br#"{"level":"error","message":"disk full","env":"prod"}"#.to_vec(),
                "alerts".into()
            )
        );
        let debug = Event::new(br#"{"level":"debug","message":"tick"}"#);
        assert_eq!(route(&config, &debug), Verdict::Drop);
    }
}
