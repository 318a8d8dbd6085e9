//! Keeps every event without looking at it. With it, a benchmark measures
//! the plugin boundary alone: the batch copied in, one call, the verdicts
//! copied out.

use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

pub struct Noop;

impl Plugin for Noop {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Noop)
    }

    fn process(&self, _event: &Event<'_>) -> Verdict {
        Verdict::Keep
    }
}

export_plugin!(Noop);
