//! `cargo run --profile profiling -p sluice-mask --example prof [email|plain]`:
//! native ns per event of `mask_event` with every detector on (a third of
//! the events hold an email, or all, or none), to profile with `perf`. The
//! end-to-end figures, in wasm, are `cargo bench -p sluice --bench mask`.
use sluice_plugin::{Config, Plugin};
fn main() {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let events: Vec<String> = (0..300_000)
        .map(|i| {
            let email = match kind.as_str() { "email" => true, "plain" => false, _ => i % 3 == 0 };
            let msg = if email { format!("user jane.doe{i}@example.com logged in") } else { format!("order {i:08} processed in {} ms by worker {}", i % 997, i % 17) };
            format!("{{\"timestamp\":\"2026-11-23T10:00:00.000Z\",\"level\":\"info\",\"service\":\"orders\",\"message\":\"{msg}\"}}")
        })
        .collect();
    let m = sluice_mask::Mask::init(Config::new(
        r#"{"detect":["email","ipv4","ipv6","card","iban","jwt","bearer","mac"]}"#,
    ))
    .unwrap();
    for round in 0..5 {
        let start = std::time::Instant::now();
        let mut changed = 0;
        for e in &events {
            if m.mask_event(e.as_bytes()).unwrap().is_some() {
                changed += 1;
            }
        }
        println!(
            "round {round}: {:.0} ns/event ({changed} changed)",
            start.elapsed().as_nanos() as f64 / events.len() as f64
        );
    }
}
