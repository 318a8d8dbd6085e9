//! A plugin of the first contract, `sluice:plugin@0.1.0` (its WIT is kept
//! in `wit/` as it was): it drops events that hold `"drop"` and keeps the
//! others, logging once through the host. Built without the SDK, straight
//! from that WIT, so that what a host of a later contract must still load
//! is tested (`tests/all/plugins/contract_0_1_0.rs`).

wit_bindgen::generate!({
    world: "plugin",
    path: "wit",
});

struct Old;

impl Guest for Old {
    fn init(_config: String) -> Result<Info, String> {
        log(LogLevel::Info, "a plugin of contract 0.1.0");
        Ok(Info {
            outputs: Vec::new(),
            masks: false,
            version: "contract-0.1.0".into(),
        })
    }

    fn process(data: Vec<u8>, ends: Vec<u32>) -> Result<Verdicts, String> {
        let mut actions = Vec::with_capacity(ends.len());
        let mut start = 0usize;
        for end in ends {
            let event = data
                .get(start..end as usize)
                .ok_or("offsets outside the batch")?;
            start = end as usize;
            let drop = event.windows(6).any(|w| w == b"\"drop\"");
            actions.push(if drop { 0 } else { 1 });
        }
        Ok(Verdicts {
            actions,
            ports: Vec::new(),
            data: Vec::new(),
            ends: Vec::new(),
        })
    }
}

export!(Old);
