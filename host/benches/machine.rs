//! `just bench`: machine logs (issue #40).
//!
//! 1. Syslog ingest over TCP: 4 connections each send a quarter of
//!    1,000,000 messages as fast as they can, into a `syslog` source and a
//!    file sink. Three shapes: RFC 5424 octet-counted (with structured
//!    data), RFC 5424 newline-framed, RFC 3164 newline-framed (what
//!    `logger --rfc3164` sends). Prints messages/s and MB/s from the first
//!    byte sent to the last event written.
//! 2. Multi-line reading: one file of text lines (1,000,000 lines, a
//!    Python traceback of 7 lines after every 10th log line) read by the
//!    file source plain (each line an event) and with `multiline = {
//!    preset = "python" }` (each record an event). Prints lines/s, MB/s
//!    and the ratio of the two.
//! 3. Container logs: the same lines as CRI lines (`format = "cri"`),
//!    every 5th cut in two parts, against plain lines.
//!
//! Environment: `SLUICE_BENCH_EVENTS` changes the message count.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use sluice::plugin::Runtime;

mod common;
use common::run_until;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` messages of one shape, framed, for connection `c`.
fn messages(shape: &str, c: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 180);
    for i in 0..n {
        let msg = match shape {
            "3164" => format!(
                "<134>Dec  6 03:10:{:02} web-{c} nginx[{}]: 10.0.{}.{} GET /api/orders/{i} 200 {} ms",
                i % 60,
                1000 + c,
                i % 256,
                (i / 256) % 256,
                i % 997
            ),
            _ => format!(
                "<134>1 2026-12-06T03:10:01.{:06}Z web-{c} orders {} ID47 [req@32473 id=\"r-{i}\" user=\"u{}\"] order {i} processed in {} ms",
                i % 1_000_000,
                1000 + c,
                i % 100,
                i % 997
            ),
        };
        if shape == "5424-octet" {
            let _ = write!(out, "{} ", msg.len());
            out.extend_from_slice(msg.as_bytes());
        } else {
            out.extend_from_slice(msg.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn main() {
    let n: usize = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(Runtime::new(None).unwrap());

    // --- 1. syslog over TCP, 4 connections ------------------------------
    println!("syslog TCP ingest: {n} messages over 4 connections -> file sink (best of 3)");
    for shape in ["5424-octet", "5424-newline", "3164"] {
        let per = n / 4;
        let data: Vec<Arc<Vec<u8>>> = (0..4).map(|c| Arc::new(messages(shape, c, per))).collect();
        let bytes: usize = data.iter().map(|d| d.len()).sum();
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let toml = format!(
                "[reload]\nwatch = false\n\n[sources.sys]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"sys\"]\n"
            );
            let data = data.clone();
            let took = run_until(
                &rt,
                &runtime,
                dir.path(),
                &toml,
                "out",
                (per * 4) as u64,
                true,
                move || {
                    let senders: Vec<_> = data
                        .into_iter()
                        .map(|d| {
                            std::thread::spawn(move || {
                                let mut s =
                                    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                                s.write_all(&d).unwrap();
                            })
                        })
                        .collect();
                    for s in senders {
                        s.join().unwrap();
                    }
                },
            );
            best = best.min(took);
        }
        println!(
            "  {shape:<14} {:>10.0} messages/s  {:>7.1} MB/s  ({:.2} s)",
            (per * 4) as f64 / best.as_secs_f64(),
            bytes as f64 / 1e6 / best.as_secs_f64(),
            best.as_secs_f64()
        );
    }

    // --- 2. multi-line and 3. CRI against plain --------------------------
    let mut text = Vec::with_capacity(n * 90);
    let mut records = 0u64;
    let mut lines = 0usize;
    let mut i = 0usize;
    while lines < n {
        let _ = writeln!(
            text,
            "2026-12-06 03:10:01,{:03} INFO orders: order {i} processed in {} ms",
            i % 1000,
            i % 997
        );
        lines += 1;
        records += 1;
        if i % 10 == 9 {
            text.extend_from_slice(
                b"Traceback (most recent call last):\n  File \"/srv/app/orders.py\", line 42, in handle\n    total = compute(order)\n  File \"/srv/app/pricing.py\", line 7, in compute\n    return price / qty\nZeroDivisionError: division by zero\n",
            );
            lines += 6;
        }
        i += 1;
    }
    let mut cri = Vec::with_capacity(text.len() * 2);
    for (k, line) in text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let t = format!("2026-12-06T03:10:01.{:09}Z", k % 1_000_000_000);
        if k % 5 == 0 && line.len() > 10 {
            let (a, b) = line.split_at(line.len() / 2);
            let _ = write!(cri, "{t} stdout P ");
            cri.extend_from_slice(a);
            let _ = write!(cri, "\n{t} stdout F ");
            cri.extend_from_slice(b);
            cri.push(b'\n');
        } else {
            let _ = write!(cri, "{t} stdout F ");
            cri.extend_from_slice(line);
            cri.push(b'\n');
        }
    }
    println!(
        "file source, {lines} text lines ({:.1} MB; {records} records with tracebacks) -> file sink (best of 3)",
        text.len() as f64 / 1e6
    );
    let plain_toml = "[reload]\nwatch = false\n\n[sources.app]\ntype = \"file\"\npath = \"input.log\"\nformat = \"text\"\n\n[sinks.out]\ntype = \"file\"\npath = \"out.log\"\ninputs = [\"app\"]\n";
    let multi_toml = plain_toml.replace(
        "format = \"text\"",
        "format = \"text\"\nmultiline = { preset = \"python\" }",
    );
    let cri_toml = plain_toml.replace("format = \"text\"", "format = \"cri\"");
    let mut results = Vec::new();
    for (name, toml, input, events) in [
        ("plain", plain_toml.to_string(), &text, lines as u64),
        ("multiline python", multi_toml, &text, records),
        ("cri (1 in 5 in parts)", cri_toml, &cri, lines as u64),
    ] {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("input.log"), input).unwrap();
            best = best.min(run_until(
                &rt,
                &runtime,
                dir.path(),
                &toml,
                "out",
                events,
                false,
                || {},
            ));
        }
        results.push(best);
        println!(
            "  {name:<22} {:>10.0} lines/s  {:>7.1} MB/s  ({events} events, {:.2} s, {:.2}x plain's time)",
            lines as f64 / best.as_secs_f64(),
            input.len() as f64 / 1e6 / best.as_secs_f64(),
            best.as_secs_f64(),
            best.as_secs_f64() / results[0].as_secs_f64()
        );
    }
}
