//! `type = "nats"`: publish events to NATS JetStream (or core NATS).
//!
//! With JetStream (the default) every event of a batch is published at
//! once and the batch counts as written only when the server acknowledged
//! each one (a stream stored it). Each message carries `Nats-Msg-Id`, a
//! stable id of the event (`id_field`'s value, or a hash of its bytes and
//! its place among equal events of the batch), so the stream's duplicate
//! window drops what a retry sends again: a batch retried after a lost
//! acknowledgement is stored once (exactly once within the window, two
//! minutes by default; at least once past it). What failed is retried with
//! backoff; with `fallback`, after `retry_for` it goes to that sink, as the
//! other network sinks do.
//!
//! `jetstream = false` publishes on core NATS: at most once, nothing is
//! stored or acknowledged, for subscribers that are there at the time.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::nats";

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use toml::Spanned;

use super::file::{Part, Template};
use super::{inputs_field, runs_itself, to_fallback, Sink, SinkContext, SinkKind};
use crate::base::event::{dotted, scalar_text, top_fields, Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::nats::{NatsAuth, NatsTarget};
use crate::base::settings::{bounded, duration, BuildContext, BuildError, TypeTag};
use crate::delivery::dead_letters::dl_id;
use crate::delivery::{Backoff, Breaker};

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// `[sinks.NAME] type = "nats"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `nats://host:port`, or several servers separated by commas.
    pub url: String,
    /// The subject, with `{field}` (dotted paths, `|upper`, `|lower`) from
    /// the event: `logs.{service}.{level}`.
    pub subject: String,
    /// Publish to JetStream and wait for its acknowledgements (default);
    /// `false`: core NATS, at most once.
    #[serde(default = "yes")]
    pub jetstream: bool,
    /// The field whose value is the message id (`Nats-Msg-Id`); without
    /// it, a hash of the event's bytes.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Headers from fields: `headers = { "X-Service" = "{service}" }`.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Longest wait for one publish acknowledgement.
    #[serde(default = "default_ack_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub ack_timeout: Duration,
    /// How to authenticate: `{ user, password_env }`, `{ token_env }`,
    /// `{ nkey_env }` or `{ creds_file }`.
    #[serde(default)]
    pub auth: Option<NatsAuth>,
    /// TLS: `{ ca_file, cert_file, key_file, verify }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ClientTls>,
    /// Components whose events this sink reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
    /// How long to retry a batch before it goes to `fallback`.
    #[serde(default = "default_retry_for", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub retry_for: Duration,
    /// The sink that takes batches NATS would not (events marked with
    /// `_sluice_error`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(30)
}

/// A subject or header template, checked.
#[derive(Debug, Clone)]
struct Rendered {
    template: Template,
    /// Subject tokens: `.`, `*`, `>` and white space in a value become `_`.
    subject: bool,
}

impl Rendered {
    fn parse(text: &str, subject: bool, key: &'static str) -> Result<Self, BuildError> {
        let template = Template::parse(text, false).map_err(|e| BuildError::key(key, e))?;
        if template.has_time() {
            return Err(BuildError::key(key, "a time (`{%...}`) has no place here"));
        }
        if subject {
            let literal: String = template
                .parts
                .iter()
                .map(|p| match p {
                    Part::Literal(l) => l.as_str(),
                    _ => "x",
                })
                .collect();
            if literal.is_empty()
                || literal.split('.').any(str::is_empty)
                || literal.contains(char::is_whitespace)
            {
                return Err(BuildError::key(
                    key,
                    format!(
                        "`{text}` is no NATS subject (tokens separated by single dots, no spaces)"
                    ),
                ));
            }
        }
        Ok(Self { template, subject })
    }

    fn render(&self, fields: &crate::base::event::Fields<'_>, out: &mut String) {
        out.clear();
        for part in &self.template.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Field(name, case) => {
                    let text = dotted(fields, name).and_then(scalar_text);
                    let text = text.as_deref().unwrap_or("");
                    let text = case.apply(text);
                    if self.subject {
                        if text.is_empty() {
                            out.push('_');
                        }
                        out.extend(text.chars().map(|c| match c {
                            '.' | '*' | '>' => '_',
                            c if c.is_whitespace() || c.is_control() => '_',
                            c => c,
                        }));
                    } else {
                        out.extend(text.chars().filter(|c| !c.is_control()));
                    }
                }
                Part::Time(_) | Part::Rest => {}
            }
        }
    }
}

/// The sink, built.
#[derive(Debug, Clone)]
struct NatsSink {
    cfg: NatsSinkConfig,
    target: NatsTarget,
    subject: Rendered,
    headers: Vec<(String, Rendered)>,
}

impl SinkKind for NatsSinkConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Sink>, BuildError> {
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        bounded(
            "ack_timeout",
            self.ack_timeout,
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        let target = NatsTarget::open(&self.url, self.auth.as_ref(), self.tls.as_ref(), cx)?;
        let subject = Rendered::parse(&self.subject, true, "subject")?;
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            if name.is_empty()
                || name.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
            {
                return Err(BuildError::key(
                    "headers",
                    format!("`{name}` is no header name"),
                ));
            }
            headers.push((name.clone(), Rendered::parse(value, false, "headers")?));
        }
        if !self.jetstream && self.id_field.is_some() {
            return Err(BuildError::key(
                "id_field",
                "is for JetStream (its duplicate window): core NATS keeps no ids",
            ));
        }
        Ok(Box::new(NatsSink {
            cfg: self.clone(),
            target,
            subject,
            headers,
        }))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}
runs_itself!(NatsSink);

/// One event, ready to publish.
struct Message {
    subject: String,
    id: String,
    headers: async_nats::HeaderMap,
}

/// The id of `event`: `given` (its `id_field`'s value), or the hash of its
/// bytes and how many equal events `seen` came before it in its batch.
fn event_id(
    event: &[u8],
    given: Option<std::borrow::Cow<'_, str>>,
    seen: &mut std::collections::HashMap<String, u32>,
) -> String {
    if let Some(id) = given {
        return id.into_owned();
    }
    let mut id = dl_id(event);
    let n = seen.entry(id.clone()).or_default();
    if *n > 0 {
        id.push_str(&format!("-{n}"));
    }
    *n += 1;
    id
}

impl NatsSink {
    /// Each event of `batch` with its subject, headers and (JetStream) id.
    fn messages(&self, batch: &Batch) -> Vec<Message> {
        let mut out = Vec::with_capacity(batch.len());
        let mut text = String::new();
        let mut seen: std::collections::HashMap<String, u32> = Default::default();
        let id_field = self.cfg.id_field.as_deref().filter(|_| self.cfg.jetstream);
        // Fields are read only if a template or `id_field` names one.
        let named = id_field.is_some()
            || self.subject.template.fields().next().is_some()
            || self
                .headers
                .iter()
                .any(|(_, h)| h.template.fields().next().is_some());
        for event in batch.iter() {
            let fields = match named {
                true => {
                    top_fields(std::str::from_utf8(event).unwrap_or_default()).unwrap_or_default()
                }
                false => Vec::new(),
            };
            let mut subject = String::new();
            self.subject.render(&fields, &mut subject);
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in &self.headers {
                value.render(&fields, &mut text);
                headers.insert(name.as_str(), text.as_str());
            }
            // Core NATS keeps no ids.
            let id = match self.cfg.jetstream {
                true => {
                    let given = id_field.and_then(|f| dotted(&fields, f).and_then(scalar_text));
                    event_id(event, given, &mut seen)
                }
                false => String::new(),
            };
            out.push(Message {
                subject,
                id,
                headers,
            });
        }
        out
    }

    /// Publish the events of `batch` at `todo` (indexes); what is left in
    /// `todo` failed, with the first error.
    async fn publish(
        &self,
        client: &async_nats::Client,
        js: &async_nats::jetstream::Context,
        batch: &Batch,
        messages: &[Message],
        todo: &mut Vec<usize>,
        duplicates: &mut u64,
    ) -> Result<(), String> {
        if !self.cfg.jetstream {
            for &i in todo.iter() {
                let m = &messages[i];
                client
                    .publish_with_headers(
                        m.subject.clone(),
                        m.headers.clone(),
                        bytes::Bytes::copy_from_slice(batch.get(i)),
                    )
                    .await
                    .map_err(|e| format!("cannot publish to {}: {e}", m.subject))?;
            }
            client
                .flush()
                .await
                .map_err(|e| format!("cannot flush to nats: {e}"))?;
            todo.clear();
            return Ok(());
        }
        // Everything sent first, then the acknowledgements awaited.
        let mut waiting = Vec::with_capacity(todo.len());
        let mut first: Option<String> = None;
        let mut failed = Vec::new();
        for &i in todo.iter() {
            let m = &messages[i];
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(bytes::Bytes::copy_from_slice(batch.get(i)))
                .headers(m.headers.clone())
                .message_id(&m.id);
            match js.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => waiting.push((i, ack)),
                Err(e) => {
                    first.get_or_insert_with(|| format!("cannot publish to {}: {e}", m.subject));
                    failed.push(i);
                }
            }
        }
        let acks = futures_util::future::join_all(
            waiting
                .into_iter()
                .map(|(i, ack)| async move { (i, ack.await) }),
        )
        .await;
        for (i, r) in acks {
            match r {
                Ok(ack) => *duplicates += u64::from(ack.duplicate),
                Err(e) => {
                    first.get_or_insert_with(|| {
                        format!("no acknowledgement for {}: {e}", messages[i].subject)
                    });
                    failed.push(i);
                }
            }
        }
        failed.sort_unstable();
        *todo = failed;
        first.map_or(Ok(()), Err)
    }

    async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
        let down_since = Instant::now();
        let client = loop {
            match self.target.connect(&ctx.name, &ctx.metrics).await {
                Ok(c) => break c,
                Err(e) => {
                    ctx.metrics.set_down(Some(e.clone()));
                    ComponentMetrics::add(&ctx.metrics.retries, 1);
                    let delay = backoff.next_delay();
                    tracing::warn!(target: LOG_TARGET, sink = %ctx.name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to nats; retrying");
                    // Batches wait in the channel meanwhile (backpressure),
                    // or with a fallback go there once `retry_for` passed.
                    if let (Some(_), Some(fallback)) = (&self.cfg.fallback, &ctx.fallback) {
                        if down_since.elapsed() >= self.cfg.retry_for {
                            while let Ok(batch) = ctx.input.try_recv() {
                                to_fallback(&ctx, fallback, &batch, &e).await;
                            }
                        }
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        };
        ctx.metrics.set_down(None);
        let js = async_nats::jetstream::ContextBuilder::new()
            .ack_timeout(self.cfg.ack_timeout)
            .timeout(self.cfg.ack_timeout)
            .build(client.clone());
        tracing::info!(target: LOG_TARGET, sink = %ctx.name, urls = %self.target.urls.join(","), subject = %self.cfg.subject, jetstream = self.cfg.jetstream, "publishing to nats");
        let breaker = Breaker::default();
        let mut last_error = String::new();
        let mut duplicates = 0u64;
        while let Some(batch) = ctx.input.recv().await {
            let started = Instant::now();
            if let (true, Some(fallback)) = (breaker.is_open(), &ctx.fallback) {
                to_fallback(&ctx, fallback, &batch, &last_error).await;
                continue;
            }
            let messages = self.messages(&batch);
            let mut todo: Vec<usize> = (0..batch.len()).collect();
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            loop {
                let before = duplicates;
                match self
                    .publish(&client, &js, &batch, &messages, &mut todo, &mut duplicates)
                    .await
                {
                    Ok(()) => {
                        if backoff.attempts() > 0 {
                            tracing::info!(target: LOG_TARGET, sink = %ctx.name, "nats takes events again");
                        }
                        if duplicates > before {
                            tracing::info!(target: LOG_TARGET, sink = %ctx.name, duplicates = duplicates - before, total = duplicates, "events the stream already had (sent again after a failure, or equal events within its duplicate window): stored once");
                        }
                        ctx.metrics.set_down(None);
                        ctx.account(&batch);
                        break;
                    }
                    Err(reason) => {
                        ctx.metrics.set_down(Some(reason.clone()));
                        ComponentMetrics::add(&ctx.metrics.retries, 1);
                        if let (Some(_), Some(fallback)) = (&self.cfg.fallback, &ctx.fallback) {
                            if started.elapsed() >= self.cfg.retry_for {
                                tracing::warn!(target: LOG_TARGET, sink = %ctx.name, events = todo.len(), error = %reason, "sending what nats did not take to the fallback sink");
                                let mut rest =
                                    Batch::from_events(todo.iter().map(|&i| batch.get(i)));
                                rest.acks = batch.acks.clone();
                                let rest: SharedBatch = rest.into();
                                to_fallback(&ctx, fallback, &rest, &reason).await;
                                let m = &ctx.metrics;
                                ComponentMetrics::add(&m.events_in, batch.len());
                                ComponentMetrics::add(&m.bytes_in, batch.bytes());
                                ComponentMetrics::add(&m.events_out, batch.len() - rest.len());
                                // Probed through JetStream's API: a server
                                // that answers but has no JetStream is down.
                                let (check, jetstream) = (js.clone(), self.cfg.jetstream);
                                breaker.trip(&ctx.name, move || {
                                    let check = check.clone();
                                    async move {
                                        match jetstream {
                                            true => check.query_account().await.is_ok(),
                                            false => {
                                                check.client().connection_state()
                                                    == async_nats::connection::State::Connected
                                            }
                                        }
                                    }
                                });
                                last_error = reason;
                                break;
                            }
                        }
                        let delay = backoff.next_delay();
                        tracing::warn!(target: LOG_TARGET, sink = %ctx.name, error = %reason, left = todo.len(), retry_in_ms = delay.as_millis() as u64, "publish failed; retrying what failed");
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            drop::<SharedBatch>(batch);
        }
        client
            .flush()
            .await
            .context("flushing to nats at the end")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(text: &str) -> crate::base::event::Fields<'_> {
        top_fields(text).unwrap()
    }

    #[test]
    fn subjects_are_rendered_into_safe_tokens() {
        let r = Rendered::parse("logs.{service}.{level|lower}", true, "subject").unwrap();
        let mut out = String::new();
        r.render(
            &fields_of(r#"{"service":"a.b c","level":"WARN"}"#),
            &mut out,
        );
        assert_eq!(out, "logs.a_b_c.warn");
        r.render(&fields_of(r#"{"service":">"}"#), &mut out);
        assert_eq!(out, "logs._._");
        assert!(Rendered::parse("logs..{x}", true, "subject").is_err());
        assert!(Rendered::parse("logs {x}", true, "subject").is_err());
    }

    /// The ids of `batch`'s events, as `messages` gives them.
    fn ids(batch: &Batch, id_field: Option<&str>) -> Vec<String> {
        let mut seen = Default::default();
        batch
            .iter()
            .map(|e| {
                let fields = top_fields(std::str::from_utf8(e).unwrap()).unwrap();
                let given = id_field.and_then(|f| dotted(&fields, f).and_then(scalar_text));
                event_id(e, given, &mut seen)
            })
            .collect()
    }

    #[test]
    fn ids_are_stable_and_tell_equal_events_of_a_batch_apart() {
        let b = Batch::from_events([&br#"{"a":1}"#[..], br#"{"a":1}"#, br#"{"id":"x"}"#]);
        let one = ids(&b, None);
        assert_eq!(one, ids(&b, None));
        assert_eq!(one[1], format!("{}-1", one[0]));
        let by_field = ids(&b, Some("id"));
        assert_eq!(by_field[2], "x");
        assert_eq!(by_field[0], one[0]);
    }
}
