//! Adds `"tag": "<version>"` to every event, where the version is fixed when
//! the plugin is built (`SLUICE_TAG`, default `a`). `tests/build.rs` builds
//! it twice, `a` and `b`, so that hot-reload tests can tell which version
//! processed each event.

use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

/// This build's tag.
pub const TAG: &str = match option_env!("SLUICE_TAG") {
    Some(t) => t,
    None => "a",
};

pub struct Tag;

impl Plugin for Tag {
    fn init(config: Config) -> Result<Self, String> {
        match config.as_str().trim() {
            "" | "{}" => Ok(Tag),
            other => Err(format!("the tag plugin takes no config, got {other}")),
        }
    }

    fn version(&self) -> String {
        format!("tag {TAG}")
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        let raw = event.raw();
        // `{...}` -> `{"tag":"a",...}` without parsing.
        let mut out = Vec::with_capacity(raw.len() + 16);
        out.extend_from_slice(b"{\"tag\":\"");
        out.extend_from_slice(TAG.as_bytes());
        out.push(b'"');
        let body = &raw[1..];
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(body);
        Verdict::Replace(out)
    }
}

export_plugin!(Tag);
