//! A test plugin that misbehaves when an event's `chaos` field asks it to:
//! `panic`, `loop` (forever), `alloc` (without bound), `stack` (recurse until
//! the stack overflows), `garbage` (replace the event with invalid JSON),
//! `probe` (try every WASI capability and report what it got), `whoami`
//! (replace the event with its `i` and a number drawn when this instance
//! was `init`-ed, to tell instances apart). Any other event is kept. Used by the tests to check that a bad plugin costs one
//! event, never the pipeline.

use sluice_plugin::{export_plugin, Config, Event, Plugin, Verdict};

pub struct Chaos {
    /// Drawn at `init`: which instance this is.
    instance: u64,
}

#[inline(never)]
fn recurse(n: u64, sink: &mut [u64; 64]) -> u64 {
    sink[(n % 64) as usize] = n;
    if n == u64::MAX {
        return 0;
    }
    recurse(n + 1, sink) + sink[(n % 7) as usize]
}

fn probe() -> serde_json::Value {
    let file = std::fs::read_to_string("/etc/passwd")
        .map(|s| s.len())
        .map_err(|e| e.to_string());
    let dir = std::fs::read_dir(".")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let env: Vec<(String, String)> = std::env::vars().collect();
    let args: Vec<String> = std::env::args().collect();
    let socket = std::net::TcpStream::connect("127.0.0.1:1")
        .map(|_| ())
        .map_err(|e| e.to_string());
    println!("chaos plugin printing to stdout");
    eprintln!("chaos plugin printing to stderr");
    serde_json::json!({
        "file": file.is_ok(),
        "dir": dir.is_ok(),
        "env": env.len(),
        "args": args.len(),
        "socket": socket.is_ok(),
    })
}

impl Plugin for Chaos {
    fn init(_config: Config) -> Result<Self, String> {
        use std::hash::BuildHasher;
        // Random keys from WASI's random source.
        let instance = std::collections::hash_map::RandomState::new().hash_one(0u8);
        Ok(Chaos { instance })
    }

    fn process(&self, event: &Event<'_>) -> Verdict {
        match event.get_str("chaos").as_deref() {
            Some("panic") => panic!("chaos: asked to panic"),
            Some("loop") => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Reserve without touching: reaches the limit in
                    // microseconds, whatever the time budget.
                    let mut block = Vec::<u8>::with_capacity(1 << 20);
                    block.push(1);
                    hoard.push(block);
                    std::hint::black_box(&hoard);
                }
            }
            Some("stack") => {
                let mut sink = [0u64; 64];
                let n = recurse(0, &mut sink);
                Verdict::Replace(format!("{{\"n\":{n}}}").into_bytes())
            }
            Some("garbage") => Verdict::Replace(b"{not json".to_vec()),
            Some("probe") => Verdict::Replace(probe().to_string().into_bytes()),
            Some("whoami") => {
                let i = event.get("i").and_then(|v| v.as_u64());
                let out = serde_json::json!({"i": i, "instance": self.instance});
                Verdict::Replace(out.to_string().into_bytes())
            }
            _ => Verdict::Keep,
        }
    }
}

export_plugin!(Chaos);
