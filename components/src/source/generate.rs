//! `type = "generate"`: synthetic application logs, the kind a team's
//! `test-logging --count=10` command emits: a realistic mix of levels and
//! services, request ids shared across services, and messages that carry
//! emails, IP addresses and card numbers for masking to find.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::generate";

use std::io::Write as _;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{runs_itself, Batcher, Source, SourceContext, SourceKind};
use crate::base::event::Clock;
use crate::base::settings::{bounded, BatchOverride, BuildContext, BuildError, TypeTag};

/// `[sources.NAME] type = "generate"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// How many events; without it, the source runs until shutdown.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second; without it, as fast as the pipeline takes them.
    #[serde(default)]
    #[schemars(range(min = 0.001, max = 100000000.0))]
    pub rate: Option<f64>,
    /// Seed of the random mix, for reproducible runs.
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

const SERVICES: [&str; 7] = [
    "api-gateway",
    "auth",
    "payments",
    "orders",
    "webhook",
    "trading",
    "exchange",
];
const USERS: [&str; 6] = [
    "jane.doe@example.com",
    "bob@shop.example.org",
    "alice.smith+logs@mail.example.net",
    "ops@acme.example",
    "li.wei@example.cn",
    "m.garcia@example.es",
];
const IPS: [&str; 6] = [
    "203.0.113.7",
    "198.51.100.23",
    "192.168.10.4",
    "10.0.3.17",
    "2001:db8::8a2e:370:7334",
    "fe80::1ff:fe23:4567:890a",
];
// Test card numbers that pass the Luhn check, as payment providers publish.
const CARDS: [&str; 4] = [
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "340000000000009",
    "6011000990139424",
];
const PATHS: [&str; 6] = [
    "/api/orders",
    "/api/login",
    "/api/pay",
    "/health",
    "/api/webhook",
    "/api/quotes",
];

/// The generator's state: a seeded random source and a request counter.
pub struct Generator {
    rng: fastrand::Rng,
    clock: Clock,
    seq: u64,
}

impl Generator {
    pub fn new(seed: Option<u64>) -> Self {
        Self {
            rng: seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            clock: Clock::default(),
            seq: 0,
        }
    }

    /// Append one event (JSON, no newline) to `out`.
    pub fn event(&mut self, out: &mut Vec<u8>) {
        self.seq += 1;
        let r = &mut self.rng;
        let level = match r.u8(0..100) {
            0..=14 => "debug",
            15..=69 => "info",
            70..=87 => "warn",
            88..=98 => "error",
            _ => "fatal",
        };
        let service = SERVICES[r.usize(..SERVICES.len())];
        let user = USERS[r.usize(..USERS.len())];
        let ip = IPS[r.usize(..IPS.len())];
        let path = PATHS[r.usize(..PATHS.len())];
        let ms = r.u32(1..2500);
        let request = r.u64(..1 << 48);
        let message = match (level, r.u8(0..6)) {
            ("debug", _) => format!("cache lookup for {path} took {}us", r.u32(5..900)),
            ("info", 0) => format!("user {user} logged in from {ip}"),
            ("info", 1) => format!("GET {path} 200 in {ms}ms"),
            ("info", 2) => format!("order ORD-{:06} created by {user}", r.u32(..1_000_000)),
            ("info", _) => format!("POST {path} 201 in {ms}ms from {ip}"),
            ("warn", 0) => format!("slow request {path} took {ms}ms"),
            ("warn", 1) => format!("retrying webhook delivery to {ip} (attempt {})", r.u8(2..6)),
            ("warn", _) => format!("rate limit near for {user}: {} req/min", r.u32(500..1000)),
            (_, 0) => format!("payment declined for card {} (user {user})", CARDS[r.usize(..CARDS.len())]),
            (_, 1) => format!("upstream {ip} timed out after {ms}ms on {path}"),
            (_, 2) => "authorization failed: header was Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl".to_string(),
            (_, _) => format!("unhandled exception in {path}: connection reset by {ip}"),
        };
        let _ = write!(out, "{{\"timestamp\":\"{}\",\"level\":\"{level}\",\"service\":\"{service}\",\"channel\":\"{service}\",\"message\":", self.clock.now());
        crate::base::event::push_json_str(out, &message);
        let _ = write!(
            out,
            ",\"request_id\":\"req-{request:012x}\",\"seq\":{},\"duration_ms\":{ms},\"data\":{{\"path\":\"{path}\",\"client_ip\":\"{ip}\"}}}}",
            self.seq
        );
    }
}

impl SourceKind for GenerateConfig {
    fn build(&self, _: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        if let Some(rate) = self.rate {
            bounded("rate", rate, 0.001, 100_000_000.0)?;
        }
        Ok(Box::new(self.clone()))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(GenerateConfig);

impl GenerateConfig {
    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate > 0.0 && rate.is_finite(),
                "source {}: rate must be a positive number",
                ctx.name
            );
        }
        let mut gen = Generator::new(self.seed);
        let mut batcher = Batcher::new(ctx.batch);
        let mut shutdown = ctx.shutdown.clone();
        let started = Instant::now();
        let mut sent = 0u64;
        let limit = self.count.unwrap_or(u64::MAX);
        while sent < limit && !shutdown.is_set() {
            // How many events are due now: all of them without a rate.
            let due = match self.rate {
                None => limit - sent,
                Some(rate) => {
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    due.min(limit).saturating_sub(sent)
                }
            };
            if due == 0 {
                let wait = Duration::from_secs_f64(1.0 / self.rate.unwrap_or(1.0))
                    .min(Duration::from_millis(50));
                let wait_until = batcher
                    .deadline()
                    .map_or(Instant::now() + wait, |d| d.min(Instant::now() + wait));
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep_until(wait_until) => {}
                }
                if batcher.is_due() {
                    batcher.flush(&ctx).await?;
                }
                continue;
            }
            let room = ctx.batch.max_events - batcher.batch.len();
            for _ in 0..due.min(room as u64) {
                gen.event(&mut batcher.batch.data);
                batcher.batch.seal();
                batcher.pushed();
                sent += 1;
            }
            if batcher.is_due() {
                batcher.flush(&ctx).await?;
            }
        }
        batcher.flush(&ctx).await?;
        tracing::debug!(target: LOG_TARGET, source = %ctx.name, events = sent, "generator done");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_objects_with_the_usual_fields() {
        let mut g = Generator::new(Some(7));
        let mut levels = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let mut out = Vec::new();
            g.event(&mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            for f in ["timestamp", "level", "service", "message", "request_id"] {
                assert!(v.get(f).is_some(), "missing {f} in {v}");
            }
            levels.insert(v["level"].as_str().unwrap().to_string());
        }
        assert_eq!(levels.len(), 5, "{levels:?}");
    }

    #[test]
    fn seeded_runs_repeat_apart_from_time() {
        let strip = |b: Vec<u8>| {
            let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            v.as_object_mut().unwrap().remove("timestamp");
            v
        };
        let (mut a, mut b) = (Generator::new(Some(1)), Generator::new(Some(1)));
        for _ in 0..20 {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.event(&mut x);
            b.event(&mut y);
            assert_eq!(strip(x), strip(y));
        }
    }
}
