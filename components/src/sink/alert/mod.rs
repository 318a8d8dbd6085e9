//! `type = "alert"`: matching events become notifications, sent to a
//! webhook (generic JSON or Slack-compatible) and/or by email over SMTP.
//!
//! What keeps alerting usable, after Alertmanager: events are grouped by
//! the values of `group_by`; a new group is notified once `group_wait`
//! after its first event, with the count of the events it stands for, and
//! then at most once per `repeat_interval` while events keep coming (a
//! group quiet for a `repeat_interval` is forgotten). Across groups, at
//! most `max_per_minute` notifications go out; the others are suppressed
//! and counted, and one "N alerts suppressed" summary follows the minute.
//!
//! Alerts are best-effort copies: a batch is acknowledged as soon as it is
//! counted into its groups, so a slow or dead channel never holds the
//! pipeline back (the events go on to their other sinks). Sending retries
//! with the shared backoff for `retry_for`; a notification still not sent
//! then is logged and counted in `sluice_alerts_total{result="failed"}`.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::alert";

mod channels;
mod groups;

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use self::channels::{Channels, EmailConfig, WebhookConfig};
use self::groups::{Groups, Limits, Notification};
use super::file::Template;
use super::{inputs_field, Sink, SinkContext, SinkKind};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BuildContext, BuildError, TypeTag};

/// `[sinks.NAME] type = "alert"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// Components this sink reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// Fields (dotted paths) whose values make a group: one notification
    /// per group. Empty: every event is in one group.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group gathers events before its first notification.
    #[serde(default = "default_group_wait", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub group_wait: Duration,
    /// Least time between two notifications of one group.
    #[serde(default = "default_repeat_interval", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub repeat_interval: Duration,
    /// Most notifications sent in a minute, over all groups.
    #[serde(default = "default_max_per_minute")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_per_minute: u32,
    /// Most groups kept at once; events of groups past it are counted in
    /// one `other` group.
    #[serde(default = "default_max_groups")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_groups: usize,
    /// The notification's text: fields of the group's first event
    /// (`{service}`, `{level|upper}`, `{user.id}`), `{count}`,
    /// `{first_seen}`, `{last_seen}`.
    #[serde(default = "default_template")]
    pub template: String,
    /// The email subject (and the webhook body's `title`).
    #[serde(default = "default_title")]
    pub title: String,
    /// How long one notification is retried before it is given up.
    #[serde(default = "default_retry_for", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub retry_for: Duration,
    /// A webhook notifications are posted to (Slack's format or JSON).
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// An SMTP server and the addresses notifications are mailed to.
    #[serde(default)]
    pub email: Option<EmailConfig>,
}

fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_repeat_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_per_minute() -> u32 {
    20
}
fn default_max_groups() -> usize {
    10_000
}
fn default_template() -> String {
    "[{level|upper}] {service}: {message} ({count} events)".to_string()
}
fn default_title() -> String {
    "sluice alert: {service} {level|upper}".to_string()
}
fn default_retry_for() -> Duration {
    Duration::from_secs(300)
}

/// Notifications waiting to be sent; past it new ones are given up
/// (counted as failed) rather than queued without bound.
const QUEUE: usize = 1024;
/// Notifications being sent at once.
const SENDING: usize = 8;
/// How long a stopping sink goes on sending what it has.
const FINAL_GRACE: Duration = Duration::from_secs(10);

impl SinkKind for AlertConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded(
            "group_wait",
            self.group_wait,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        bounded(
            "repeat_interval",
            self.repeat_interval,
            Duration::from_millis(1),
            Duration::from_secs(30 * 86_400),
        )?;
        bounded("max_per_minute", self.max_per_minute, 1, 100_000)?;
        bounded("max_groups", self.max_groups, 1, 1_000_000)?;
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        let template =
            Template::parse(&self.template, false).map_err(|e| BuildError::key("template", e))?;
        let title = Template::parse(&self.title, false).map_err(|e| BuildError::key("title", e))?;
        if template.has_time() || title.has_time() {
            return Err(BuildError::key(
                "template",
                "alert templates take fields, {count}, {first_seen} and {last_seen}, not {%...} times",
            ));
        }
        if self.webhook.is_none() && self.email.is_none() {
            return Err(BuildError::whole(
                "an alert sink needs a channel: `webhook = { url = \"...\" }` and/or `email = { server = \"...\", from = \"...\", to = [...] }`",
            ));
        }
        let channels = Channels::new(self.webhook.as_ref(), self.email.as_ref(), &|p| {
            cx.resolve(p)
        })?;
        Ok(Box::new(AlertSink {
            limits: Limits {
                group_by: self.group_by.clone(),
                group_wait: self.group_wait,
                repeat_interval: self.repeat_interval,
                max_per_minute: self.max_per_minute,
                max_groups: self.max_groups,
            },
            template,
            title,
            retry_for: self.retry_for,
            channels: Arc::new(channels),
        }))
    }

    inputs_field!();
}

/// A built alert sink.
struct AlertSink {
    limits: Limits,
    template: Template,
    title: Template,
    retry_for: Duration,
    channels: Arc<Channels>,
}

impl Sink for AlertSink {
    fn start(self: Box<Self>, ctx: SinkContext) -> crate::base::settings::Task {
        Box::pin(self.run(ctx))
    }
}

impl AlertSink {
    async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let mut groups = Groups::new(self.limits.clone());
        let (tx, rx) = tokio::sync::mpsc::channel::<Notification>(QUEUE);
        let sender = tokio::spawn(send_all(
            rx,
            self.channels.clone(),
            self.template.clone(),
            self.title.clone(),
            self.retry_for,
            ctx.name.clone(),
            ctx.metrics.clone(),
        ));
        let queue = |n: Notification| {
            if let Err(e) = tx.try_send(n) {
                ComponentMetrics::add(&ctx.metrics.alerts_failed, 1);
                tracing::error!(target: LOG_TARGET, sink = %ctx.name, error = %e, "alert given up: {QUEUE} notifications are already waiting to be sent");
            }
        };
        loop {
            let wake = groups.next_wake();
            tokio::select! {
                batch = ctx.input.recv() => {
                    let Some(batch) = batch else { break };
                    let now = tokio::time::Instant::now();
                    for event in batch.iter() {
                        groups.observe(event, now);
                    }
                    // Counted: the batch is acknowledged (alerts are copies).
                    ctx.account(&batch);
                }
                _ = sleep_until(wake) => {}
            }
            for n in groups.due(tokio::time::Instant::now()) {
                queue(n);
            }
            ComponentMetrics::add(
                &ctx.metrics.alerts_suppressed,
                groups.take_suppressed() as usize,
            );
        }
        // The input closed: what is waiting goes now (within the limit).
        for n in groups.flush(tokio::time::Instant::now()) {
            queue(n);
        }
        ComponentMetrics::add(
            &ctx.metrics.alerts_suppressed,
            groups.take_suppressed() as usize,
        );
        drop(tx);
        // Sending on does not hold a stop for long: alerts are copies.
        if tokio::time::timeout(FINAL_GRACE, sender).await.is_err() {
            tracing::warn!(target: LOG_TARGET, sink = %ctx.name, "stopping with alerts still unsent after {FINAL_GRACE:?}");
        }
        Ok(())
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Send every notification to every channel, a few at once, each retried
/// for `retry_for`.
async fn send_all(
    mut rx: tokio::sync::mpsc::Receiver<Notification>,
    channels: Arc<Channels>,
    template: Template,
    title: Template,
    retry_for: Duration,
    sink: Arc<str>,
    metrics: Arc<ComponentMetrics>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(SENDING));
    let mut sending = tokio::task::JoinSet::new();
    while let Some(n) = rx.recv().await {
        let message = channels::Message::of(&n, &template, &title, &sink);
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        while sending.try_join_next().is_some() {}
        let (channels, sink, metrics) = (channels.clone(), sink.clone(), metrics.clone());
        sending.spawn(async move {
            let sent = channels.send(&message, retry_for, &sink, &metrics).await;
            let counter = if sent {
                &metrics.alerts_sent
            } else {
                &metrics.alerts_failed
            };
            ComponentMetrics::add(counter, 1);
            drop(slot);
        });
    }
    while sending.join_next().await.is_some() {}
}
