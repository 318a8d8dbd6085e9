//! Where alerts go: a webhook (on the network sinks' HTTP core) and email
//! over SMTP (lettre), each attempt retried with the shared backoff.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::alert::channels";

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyper::Method;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;
use serde_json::{json, Value};

use super::groups::{lookup, text, Notification};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BuildError};
use crate::delivery::Backoff;
use crate::sink::file::{Part, Template};
use crate::sink::http::core::{
    Auth, Body, Compression, Core, CoreConfig, Decision, RetryLogic, StatusRetry,
};

/// First and longest wait between two attempts at a notification.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The body a webhook is sent.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"text", "title", "count", "group", "event", ...}`.
    #[default]
    Json,
    /// `{"text": ...}`: what Slack's (and Mattermost's, and Rocket.Chat's)
    /// incoming webhooks take.
    Slack,
}

/// `webhook = {...}` of an alert sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where notifications are posted.
    pub url: String,
    #[serde(default)]
    pub format: WebhookFormat,
    /// Headers sent with each notification.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Authentication: `{ bearer_env = "VAR" }` or `{ user = "...",
    /// password_env = "VAR" }` (the secrets from the environment).
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default = "default_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub request_timeout: Duration,
}

/// How an SMTP connection is secured.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption (a relay on localhost).
    None,
}

/// `email = {...}` of an alert sink.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name.
    pub server: String,
    /// Default: 587 with STARTTLS, 465 with TLS, 25 without.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: EmailTls,
    /// A PEM file of the CA that signed the server's certificate, trusted
    /// besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Login user; the password comes from `$password_env`.
    #[serde(default)]
    pub user: Option<String>,
    /// An environment variable holding the SMTP password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// The sender, `name <address>` or an address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    #[serde(default = "default_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

struct Webhook {
    core: Core,
    format: WebhookFormat,
}

struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

/// The channels of one alert sink.
pub struct Channels {
    webhook: Option<Webhook>,
    email: Option<Email>,
}

/// One notification rendered for the channels.
pub struct Message {
    pub text: String,
    pub title: String,
    /// The generic webhook body.
    pub json: Value,
}

/// A field of a notification as a template shows it: its group's first
/// event's, or `count`, `first_seen`, `last_seen`.
fn render(t: &Template, n: &Notification) -> String {
    let mut out = String::new();
    for part in &t.parts {
        match part {
            Part::Literal(s) => out.push_str(s),
            Part::Field(name, case) => {
                let value = match (n, name.as_str()) {
                    (Notification::Group { count, .. }, "count") => count.to_string(),
                    (Notification::Group { first_seen, .. }, "first_seen") => {
                        first_seen.to_rfc3339()
                    }
                    (Notification::Group { last_seen, .. }, "last_seen") => last_seen.to_rfc3339(),
                    (Notification::Group { sample, .. }, field) => lookup(sample, field)
                        .map(text)
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "-".to_string()),
                    (Notification::Suppressed { .. }, _) => "-".to_string(),
                };
                out.push_str(&case.apply(&value));
            }
            Part::Time(_) | Part::Rest => {}
        }
    }
    out
}

impl Message {
    pub fn of(n: &Notification, template: &Template, title: &Template, sink: &str) -> Self {
        match n {
            Notification::Group {
                key,
                sample,
                count,
                first_seen,
                last_seen,
            } => {
                let text = render(template, n);
                let title = render(title, n);
                let group: serde_json::Map<String, Value> = key
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                let json = json!({
                    "text": text,
                    "title": title,
                    "count": count,
                    "group": group,
                    "first_seen": first_seen.to_rfc3339(),
                    "last_seen": last_seen.to_rfc3339(),
                    "event": sample,
                    "sink": sink,
                });
                Self { text, title, json }
            }
            Notification::Suppressed {
                alerts,
                events,
                groups,
                more,
            } => {
                let named: Vec<String> = groups
                    .iter()
                    .map(|g| {
                        let key: Vec<String> =
                            g.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("{} ({} events)", key.join(" "), g.events)
                    })
                    .collect();
                let mut text = format!(
                    "{alerts} alerts suppressed ({events} events): more than max_per_minute in the last minute"
                );
                if !named.is_empty() {
                    text.push_str(&format!("; most frequent: {}", named.join(", ")));
                    if *more > 0 {
                        text.push_str(&format!(" and {more} more groups"));
                    }
                }
                let title = format!("sluice: {alerts} alerts suppressed");
                let json = json!({
                    "text": text,
                    "title": title,
                    "suppressed": alerts,
                    "count": events,
                    "groups": groups
                        .iter()
                        .map(|g| json!({
                            "group": g.key.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<String, Value>>(),
                            "alerts": g.alerts,
                            "count": g.events,
                        }))
                        .collect::<Vec<_>>(),
                    "more_groups": more,
                    "sink": sink,
                });
                Self { text, title, json }
            }
        }
    }
}

/// Why an attempt failed, and whether another could work.
struct Failure {
    reason: String,
    retry: bool,
    after: Option<Duration>,
}

fn mailbox(key: &'static str, s: &str) -> Result<Mailbox, BuildError> {
    s.parse()
        .map_err(|e| BuildError::key(key, format!("`{s}` is not an email address: {e}")))
}

impl Channels {
    /// Check and build the channels; `resolve` makes a path of the
    /// pipeline file absolute.
    pub fn new(
        webhook: Option<&WebhookConfig>,
        email: Option<&EmailConfig>,
        resolve: &dyn Fn(&std::path::Path) -> PathBuf,
    ) -> Result<Self, BuildError> {
        let (least, most) = (Duration::from_millis(1), Duration::from_secs(3600));
        if let Some(w) = webhook {
            bounded("webhook.request_timeout", w.request_timeout, least, most)?;
        }
        if let Some(e) = email {
            bounded("email.timeout", e.timeout, least, most)?;
        }
        let webhook = match webhook {
            None => None,
            Some(w) => {
                let core = Core::new(CoreConfig {
                    uri: &w.url,
                    headers: &w.headers,
                    auth: w.auth.as_ref(),
                    compression: Compression::None,
                    request_timeout: w.request_timeout,
                    tls: None,
                    server_name: None,
                })
                .map_err(|e| {
                    BuildError::key(
                        match e.key {
                            Some("uri") => "webhook.url",
                            Some("auth") => "webhook.auth",
                            Some("headers") => "webhook.headers",
                            _ => "webhook",
                        },
                        e.message,
                    )
                })?;
                Some(Webhook {
                    core,
                    format: w.format,
                })
            }
        };
        let email = match email {
            None => None,
            Some(e) => Some(Self::email(e, resolve)?),
        };
        Ok(Self { webhook, email })
    }

    fn email(
        e: &EmailConfig,
        resolve: &dyn Fn(&std::path::Path) -> PathBuf,
    ) -> Result<Email, BuildError> {
        let from = mailbox("email.from", &e.from)?;
        if e.to.is_empty() {
            return Err(BuildError::key("email.to", "name at least one address"));
        }
        let to =
            e.to.iter()
                .map(|t| mailbox("email.to", t))
                .collect::<Result<Vec<_>, _>>()?;
        if e.server.trim().is_empty() {
            return Err(BuildError::key(
                "email.server",
                "name the SMTP server's host",
            ));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.server)
            .timeout(Some(e.timeout));
        let tls = match e.tls {
            EmailTls::None => None,
            EmailTls::Starttls | EmailTls::Tls => {
                let mut params = TlsParameters::builder(e.server.clone());
                if let Some(ca) = &e.ca_file {
                    let path = resolve(ca);
                    let pem = std::fs::read(&path).map_err(|err| {
                        BuildError::key(
                            "email.ca_file",
                            format!("cannot read {}: {err}", path.display()),
                        )
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|err| {
                        BuildError::key(
                            "email.ca_file",
                            format!("{} is not a PEM certificate: {err}", path.display()),
                        )
                    })?;
                    params = params.add_root_certificate(cert);
                }
                Some(params.build_rustls().map_err(|err| {
                    BuildError::key("email.tls", format!("cannot set up TLS: {err}"))
                })?)
            }
        };
        let (tls, port) = match (e.tls, tls) {
            (EmailTls::Starttls, Some(p)) => (Tls::Required(p), 587),
            (EmailTls::Tls, Some(p)) => (Tls::Wrapper(p), 465),
            _ => (Tls::None, 25),
        };
        builder = builder.tls(tls).port(e.port.unwrap_or(port));
        match (&e.user, &e.password_env) {
            (Some(user), Some(var)) => {
                let password = std::env::var(var).map_err(|_| {
                    BuildError::key(
                        "email.password_env",
                        format!("names `{var}`, which is not set"),
                    )
                })?;
                crate::base::secrets::register(&password);
                builder = builder.credentials(Credentials::new(user.clone(), password));
            }
            (None, None) => {}
            _ => {
                return Err(BuildError::key(
                    "email.user",
                    "give both `user` and `password_env`, or neither",
                ))
            }
        }
        Ok(Email {
            transport: builder.build(),
            from,
            to,
            server: e.server.clone(),
        })
    }

    /// Send `m` on every channel, each retried for `retry_for`; whether
    /// every channel took it.
    pub async fn send(
        &self,
        m: &Message,
        retry_for: Duration,
        sink: &str,
        metrics: &ComponentMetrics,
    ) -> bool {
        let mut all = true;
        if let Some(w) = &self.webhook {
            all &= retrying("webhook", retry_for, sink, metrics, || w.send(m)).await;
        }
        if let Some(e) = &self.email {
            all &= retrying("email", retry_for, sink, metrics, || e.send(m)).await;
        }
        all
    }
}

async fn retrying<F, Fut>(
    channel: &str,
    retry_for: Duration,
    sink: &str,
    metrics: &ComponentMetrics,
    mut attempt: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
    loop {
        let failure = match attempt().await {
            Ok(()) => {
                if backoff.attempts() > 0 {
                    tracing::info!(target: LOG_TARGET, sink,
                        channel,
                        attempts = backoff.attempts() + 1,
                        "alert sent after retrying"
                    );
                }
                metrics.set_down(None);
                return true;
            }
            Err(f) => f,
        };
        metrics.set_down(Some(format!("{channel}: {}", failure.reason)));
        if !failure.retry || started.elapsed() >= retry_for {
            tracing::error!(target: LOG_TARGET, sink, channel, error = %failure.reason, attempts = backoff.attempts() + 1, "alert not sent; given up (the events went on to their other sinks)");
            return false;
        }
        ComponentMetrics::add(&metrics.retries, 1);
        let delay = backoff.next_delay_after(failure.after).min(
            retry_for
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(10)),
        );
        if backoff.attempts() == 1 {
            tracing::warn!(target: LOG_TARGET, sink, channel, error = %failure.reason, retry_in_ms = delay.as_millis() as u64, "alert not sent; retrying");
        }
        tokio::time::sleep(delay).await;
    }
}

impl Webhook {
    async fn send(&self, m: &Message) -> Result<(), Failure> {
        let body = match self.format {
            WebhookFormat::Json => m.json.to_string(),
            WebhookFormat::Slack => json!({ "text": m.text }).to_string(),
        };
        let body = Body::new(body.into_bytes(), "application/json", Compression::None);
        let answer = self
            .core
            .send(Method::POST, &self.core.uri, &body)
            .await
            .map_err(|reason| Failure {
                reason,
                retry: true,
                after: None,
            })?;
        match StatusRetry.decide(&answer) {
            Decision::Delivered => Ok(()),
            Decision::Retry { after, reason } => Err(Failure {
                reason,
                retry: true,
                after,
            }),
            Decision::Refused(reason) | Decision::Partial { reason, .. } => Err(Failure {
                reason,
                retry: false,
                after: None,
            }),
        }
    }
}

impl Email {
    async fn send(&self, m: &Message) -> Result<(), Failure> {
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(m.title.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder.body(m.text.clone()).map_err(|e| Failure {
            reason: format!("cannot make the message: {e}"),
            retry: false,
            after: None,
        })?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| Failure {
                // A 5xx answer will not change; a 4xx or a connection
                // failure may.
                retry: !e.is_permanent(),
                reason: format!("SMTP {}: {e}", self.server),
                after: None,
            })
    }
}
