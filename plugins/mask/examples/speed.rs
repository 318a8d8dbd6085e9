//! `cargo run --release -p sluice-mask --example speed`: native ns per
//! event of `mask_event` (a third of the events hold an email), and of
//! `mask_str` on a message with one. The end-to-end figures, in wasm, are
//! `cargo bench -p sluice --bench mask`.
use sluice_plugin::{Config, Plugin};

fn main() {
    let events: Vec<String> = (0..200_000)
        .map(|i| {
            let msg = if i % 3 == 0 {
                format!("user jane.doe{i}@example.com logged in")
            } else {
                format!("order {i:08} processed in {} ms by worker {}", i % 997, i % 17)
            };
            format!("{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"info\",\"service\":\"orders\",\"message\":\"{msg}\"}}")
        })
        .collect();
    {
        let m = sluice_mask::Mask::init(Config::new(r#"{"detect":["email"]}"#)).unwrap();
        let msgs: Vec<String> = (0..100_000)
            .map(|i| format!("user jane.doe{i}@example.com logged in"))
            .collect();
        let start = std::time::Instant::now();
        let mut k = 0;
        for s in &msgs {
            k += m.mask_str(s).map_or(0, |s| s.len());
        }
        println!(
            "mask_str on an email message: {:.0} ns ({k})",
            start.elapsed().as_nanos() as f64 / msgs.len() as f64
        );
    }
    for config in ["{}", r#"{"detect":["email"]}"#] {
        let m = sluice_mask::Mask::init(Config::new(config)).unwrap();
        let start = std::time::Instant::now();
        let mut changed = 0;
        for e in &events {
            if m.mask_event(e.as_bytes()).unwrap().is_some() {
                changed += 1;
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / events.len() as f64;
        println!("{config}: {ns:.0} ns/event, {changed} changed");
    }
}
