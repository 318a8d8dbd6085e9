//! The one retry schedule of sluice: exponential backoff with jitter.
//!
//! Every component that retries (the file sink's writes, the Redis sink's
//! `XADD`, the Redis source's connection and `XACK`, the network sinks)
//! waits through a [`Backoff`], so they all back off the same way and many
//! writers never retry in step. A server that says when to come back
//! (`Retry-After`, a 429 or 503) is believed.

use std::time::Duration;

/// Exponential backoff with jitter: the wait doubles from `first` up to
/// `max`, each wait drawn from `[step, 1.5 x step]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The step of the next wait, before jitter.
    step: Duration,
    /// Waits handed out since the last success, for logs and metrics.
    attempts: u32,
}

impl Backoff {
    /// A schedule whose first wait is about `first` and whose waits never
    /// pass `max` (a `Retry-After` may ask for more).
    pub fn new(first: Duration, max: Duration) -> Self {
        let max = max.max(first);
        Self {
            first,
            max,
            step: first,
            attempts: 0,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        let jitter_ms = fastrand::u64(0..=step.as_millis() as u64 / 2);
        (step + Duration::from_millis(jitter_ms)).min(self.max + self.max / 2)
    }

    /// The same, but a server's `Retry-After` wins when it asks for longer.
    pub fn next_delay_after(&mut self, retry_after: Option<Duration>) -> Duration {
        let own = self.next_delay();
        retry_after.map_or(own, |r| r.max(own))
    }

    /// Wait for the next delay; returns how long it waited.
    pub async fn wait(&mut self) -> Duration {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
        d
    }

    /// Attempts made since the last [`Backoff::reset`].
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt worked: the next failure starts from `first` again.
    pub fn reset(&mut self) {
        self.step = self.first;
        self.attempts = 0;
    }
}

/// A `Retry-After` header value: seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2026 07:28:00 GMT`, taken relative to now; a date past is
/// no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let steps = [100, 200, 400, 800, 1000, 1000];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= step * MS && d <= step * 3 / 2 * MS,
                "{d:?} for step {step}"
            );
        }
        assert_eq!(b.attempts(), steps.len() as u32);
    }

    #[test]
    fn jitter_spreads_waits() {
        let waits: std::collections::BTreeSet<_> = (0..50)
            .map(|_| Backoff::new(1000 * MS, 1000 * MS).next_delay())
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(50 * MS, 5000 * MS);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(b.next_delay() <= 75 * MS);
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let mut b = Backoff::new(50 * MS, 5000 * MS);
        assert_eq!(
            b.next_delay_after(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert!(b.next_delay_after(Some(Duration::ZERO)) >= 100 * MS);
        assert!(b.next_delay_after(None) >= 200 * MS);
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d > Duration::from_secs(85) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
