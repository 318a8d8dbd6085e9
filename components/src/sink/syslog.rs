//! `type = "syslog"`: events as RFC 5424 messages to a syslog receiver (a
//! SIEM, rsyslog, syslog-ng) over TCP (octet-counted or newline framing),
//! TCP+TLS, or UDP.
//!
//! An event's fields go back where the syslog source takes them from:
//! `level` (or `syslog.severity`) is the severity, `syslog.facility` or
//! the sink's `facility` the facility, `service` the APP-NAME, `host` the
//! HOSTNAME (this machine's by default), `syslog.procid` and
//! `syslog.msgid`, `syslog.structured_data` the structured data,
//! `timestamp` the time, and `message` the MSG (the whole event as JSON
//! when it has none).
//!
//! A batch is written whole and then acknowledged; a failed write closes
//! the connection, and the batch is written again on a new one (at least
//! once: syslog has no acknowledgement, so what a dying connection took
//! is not known) with the shared backoff; after `retry_for` it goes to the
//! `fallback`, if there is one, and the breaker sends the next batches
//! there until a probe connects again.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::sink::syslog";

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use toml::Spanned;

use super::{inputs_field, runs_itself, to_fallback, SinkContext, SinkKind};
use crate::base::event::{Batch, SharedBatch};
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{bounded, duration, BuildContext, BuildError, TypeTag};
use crate::delivery::{Backoff, Breaker};
use crate::source::syslog::parse::{facility_of, severity_of, FACILITIES, SEVERITIES};

/// How frames are told apart on TCP.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// RFC 6587 octet counting: `LEN SP MSG`.
    #[default]
    OctetCounting,
    /// A newline after each message (messages' own newlines become spaces).
    Newline,
}

/// `tcp` (the default) or `udp`, as for the source.
pub use crate::source::syslog::Mode;

/// `[sinks.NAME] type = "syslog"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyslogSinkConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// `host:port` of the receiver.
    pub address: String,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub framing: Framing,
    /// The facility of events without `syslog.facility`.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME of events without `service`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// How long to retry a batch before it goes to `fallback`.
    #[serde(default = "default_retry_for", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub retry_for: Duration,
    /// A sink (by name) that takes what could not be delivered within
    /// `retry_for`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Spanned<String>>,
    /// TCP over TLS: `{ ca_file, cert_file, key_file, server_name, verify }`.
    #[serde(default)]
    pub tls: Option<crate::base::tls::ClientTls>,
    /// Components whose events this sink reads.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub inputs: Vec<Spanned<String>>,
}

fn default_facility() -> String {
    "user".into()
}
fn default_app_name() -> String {
    "sluice".into()
}
fn default_retry_for() -> Duration {
    Duration::from_secs(30)
}

const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest UDP message sent (a longer MSG is cut): what fits a datagram
/// on most paths without fragments is less, but receivers take this.
const UDP_MAX: usize = 65_000;

/// A built syslog sink.
pub struct SyslogSink {
    cfg: SyslogSinkConfig,
    facility: u8,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    host: String,
}

impl SinkKind for SyslogSinkConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn super::Sink>, BuildError> {
        bounded(
            "retry_for",
            self.retry_for,
            Duration::ZERO,
            Duration::from_secs(86_400),
        )?;
        let facility = facility_of(&self.facility).ok_or_else(|| {
            BuildError::key(
                "facility",
                format!(
                    "`{}` is not a facility: one of {}",
                    self.facility,
                    FACILITIES.join(", ")
                ),
            )
        })?;
        let (host, _port) = self
            .address
            .rsplit_once(':')
            .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            .ok_or_else(|| {
                BuildError::key(
                    "address",
                    format!(
                        "`{}` is not host:port (e.g. siem.example.com:6514)",
                        self.address
                    ),
                )
            })?;
        let tls = match &self.tls {
            Some(t) => {
                if self.mode == Mode::Udp {
                    return Err(BuildError::key("tls", "TLS is for `mode = \"tcp\"`"));
                }
                let t = t.resolved(cx);
                let config = t.client_config(cx.name, &[])?;
                let name = t
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
                let name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| BuildError::key("tls", format!("server name `{name}`: {e}")))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        Ok(Box::new(SyslogSink {
            cfg: self.clone(),
            facility,
            tls,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into()),
        }))
    }

    inputs_field!();

    fn fallback(&self) -> Option<&Spanned<String>> {
        self.fallback.as_ref()
    }
}
runs_itself!(SyslogSink);

/// A header field as RFC 5424 allows it: printable ASCII without spaces,
/// at most `max` characters; `-` when empty.
fn header_field(out: &mut Vec<u8>, value: Option<&str>, max: usize) {
    let mut n = 0;
    for c in value.unwrap_or("").chars().take(max) {
        out.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
        n += 1;
    }
    if n == 0 {
        out.push(b'-');
    }
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// Structured data from `syslog.structured_data` (`{ID: {NAME: VALUE}}`).
fn structured_data(out: &mut Vec<u8>, sd: Option<&Value>) {
    let Some(Value::Object(elements)) = sd else {
        out.push(b'-');
        return;
    };
    let mut any = false;
    for (id, params) in elements {
        let Value::Object(params) = params else {
            continue;
        };
        out.push(b'[');
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
            .take(32)
            .collect();
        out.extend_from_slice(if id.is_empty() { b"x" } else { id.as_bytes() });
        for (name, v) in params {
            let name: String = name
                .chars()
                .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
                .take(32)
                .collect();
            if name.is_empty() {
                continue;
            }
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"=\"");
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            for c in value.chars() {
                if matches!(c, '"' | '\\' | ']') {
                    out.push(b'\\');
                }
                let mut b = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            out.push(b'"');
        }
        out.push(b']');
        any = true;
    }
    if !any {
        out.push(b'-');
    }
}

impl SyslogSink {
    /// One event as an RFC 5424 message (no framing).
    fn message(&self, event: &[u8]) -> Vec<u8> {
        let parsed: Option<Map<String, Value>> = serde_json::from_slice(event).ok();
        let empty = Map::new();
        let m = parsed.as_ref().unwrap_or(&empty);
        let sys = m.get("syslog").and_then(Value::as_object).unwrap_or(&empty);
        let severity = text(sys, "severity")
            .and_then(|s| SEVERITIES.iter().position(|n| *n == s))
            .map(|i| i as u8)
            .or_else(|| text(m, "level").map(severity_of))
            .unwrap_or(5);
        let facility = text(sys, "facility")
            .and_then(facility_of)
            .unwrap_or(self.facility);
        let mut out = Vec::with_capacity(event.len() + 96);
        out.extend_from_slice(
            format!("<{}>1 ", u16::from(facility) * 8 + u16::from(severity)).as_bytes(),
        );
        match text(m, "timestamp").filter(|t| {
            crate::base::timestamp::parse_raw(
                crate::base::timestamp::Raw::Str(t),
                &crate::base::timestamp::TimeFormat::Rfc3339,
            )
            .is_some()
        }) {
            Some(t) => header_field(&mut out, Some(t), 64),
            None => out.extend_from_slice(crate::base::event::now_rfc3339().as_bytes()),
        }
        out.push(b' ');
        header_field(&mut out, text(m, "host").or(Some(&self.host)), 255);
        out.push(b' ');
        header_field(
            &mut out,
            text(m, "service").or(Some(&self.cfg.app_name)),
            48,
        );
        out.push(b' ');
        header_field(&mut out, text(sys, "procid"), 128);
        out.push(b' ');
        header_field(&mut out, text(sys, "msgid"), 32);
        out.push(b' ');
        structured_data(&mut out, sys.get("structured_data"));
        out.push(b' ');
        match text(m, "message") {
            Some(msg) => out.extend_from_slice(msg.as_bytes()),
            None => out.extend_from_slice(event),
        }
        out
    }

    /// A batch framed for TCP.
    fn frames(&self, batch: &Batch) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.bytes() + batch.len() * 100);
        for event in batch.iter() {
            let msg = self.message(event);
            match self.cfg.framing {
                Framing::OctetCounting => {
                    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                    out.extend_from_slice(&msg);
                }
                Framing::Newline => {
                    out.extend(msg.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                    out.push(b'\n');
                }
            }
        }
        out
    }

    async fn connect(&self) -> Result<Box<dyn AsyncWrite + Send + Unpin>, String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&self.cfg.address),
        )
        .await
        .map_err(|_| format!("connecting to {} timed out", self.cfg.address))?
        .map_err(|e| format!("cannot connect to {}: {e}", self.cfg.address))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    Duration::from_secs(10),
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| "TLS handshake timed out".to_string())?
                .map_err(|e| format!("TLS handshake with {} failed: {e}", self.cfg.address))?;
                Ok(Box::new(tls))
            }
        }
    }

    async fn run(self, mut ctx: SinkContext) -> anyhow::Result<()> {
        let this = Arc::new(self);
        let breaker = Breaker::default();
        let mut last_error = String::new();
        let mut con: Option<Box<dyn AsyncWrite + Send + Unpin>> = None;
        let udp = match this.cfg.mode {
            Mode::Udp => {
                let bind = if this.cfg.address.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                Some(tokio::net::UdpSocket::bind(bind).await?)
            }
            Mode::Tcp => None,
        };
        while let Some(batch) = ctx.input.recv().await {
            let started = Instant::now();
            if let (true, Some(fallback)) = (breaker.is_open(), &ctx.fallback) {
                to_fallback(&ctx, fallback, &batch, &last_error).await;
                continue;
            }
            let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX);
            let frames = match &udp {
                None => this.frames(&batch),
                Some(_) => Vec::new(),
            };
            loop {
                let written: Result<(), String> = match &udp {
                    Some(socket) => {
                        let mut r = Ok(());
                        for event in batch.iter() {
                            let mut msg = this.message(event);
                            msg.truncate(UDP_MAX);
                            if let Err(e) = socket.send_to(&msg, &this.cfg.address).await {
                                r = Err(format!("sending to {}: {e}", this.cfg.address));
                                break;
                            }
                        }
                        r
                    }
                    None => {
                        let mut failed = None;
                        if con.is_none() {
                            match this.connect().await {
                                Ok(c) => con = Some(c),
                                Err(e) => failed = Some(e),
                            }
                        }
                        match con.as_mut() {
                            Some(c) => {
                                let w = async {
                                    c.write_all(&frames).await?;
                                    c.flush().await
                                };
                                match tokio::time::timeout(Duration::from_secs(30), w).await {
                                    Ok(Ok(())) => Ok(()),
                                    Ok(Err(e)) => {
                                        con = None;
                                        Err(format!("writing to {}: {e}", this.cfg.address))
                                    }
                                    Err(_) => {
                                        con = None;
                                        Err(format!("writing to {} timed out", this.cfg.address))
                                    }
                                }
                            }
                            None => Err(failed.unwrap_or_else(|| {
                                format!("cannot connect to {}", this.cfg.address)
                            })),
                        }
                    }
                };
                match written {
                    Ok(()) => {
                        if backoff.attempts() > 0 {
                            tracing::info!(target: LOG_TARGET, sink = %ctx.name, "delivering again");
                            ComponentMetrics::add(&ctx.metrics.reconnects, 1);
                        }
                        ctx.metrics.set_down(None);
                        ctx.account(&batch);
                        break;
                    }
                    Err(reason) => {
                        ctx.metrics.set_down(Some(reason.clone()));
                        ComponentMetrics::add(&ctx.metrics.retries, 1);
                        if let (Some(_), Some(fallback)) = (&this.cfg.fallback, &ctx.fallback) {
                            if started.elapsed() >= this.cfg.retry_for {
                                tracing::warn!(target: LOG_TARGET, sink = %ctx.name, events = batch.len(), error = %reason, "sending the batch to the fallback sink");
                                to_fallback(&ctx, fallback, &batch, &reason).await;
                                let probe = this.clone();
                                breaker.trip(&ctx.name, move || {
                                    let probe = probe.clone();
                                    async move { probe.connect().await.is_ok() }
                                });
                                last_error = reason;
                                break;
                            }
                        }
                        let delay = backoff.next_delay();
                        if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
                            tracing::warn!(target: LOG_TARGET, sink = %ctx.name, error = %reason, retry_in_ms = delay.as_millis() as u64, "write failed; retrying");
                        }
                        tokio::time::sleep(delay).await;
                    }
                }
            }
            ctx.metrics.batch_seconds.observe(started.elapsed());
            drop::<SharedBatch>(batch);
        }
        if let Some(mut c) = con {
            let _ = c.shutdown().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> SyslogSink {
        let cfg: SyslogSinkConfig =
            toml::from_str("type = \"syslog\"\naddress = \"127.0.0.1:514\"").unwrap();
        SyslogSink {
            cfg,
            facility: 1,
            tls: None,
            host: "h".into(),
        }
    }

    /// What the sink writes, the source reads back the same.
    #[test]
    fn events_round_trip_through_the_source_parser() {
        let s = sink();
        let event = r#"{"timestamp":"2026-12-06T03:10:01.123456Z","level":"error","message":"payment failed\nsecond line","host":"web 1","service":"shop","syslog":{"facility":"local3","procid":"42","msgid":"ID7","structured_data":{"order@1":{"id":"4\"2]","n":3}}}}"#;
        let msg = s.message(event.as_bytes());
        let text = String::from_utf8(msg).unwrap();
        let m = crate::source::syslog::parse::parse(&text, &chrono::Local::now).unwrap();
        assert_eq!(m.severity, 3);
        assert_eq!(m.facility, 19);
        assert_eq!(m.host, Some("web_1"));
        assert_eq!(m.app, Some("shop"));
        assert_eq!(m.procid, Some("42"));
        assert_eq!(m.msgid, Some("ID7"));
        assert_eq!(m.message, "payment failed\nsecond line");
        assert_eq!(m.sd[0].0, "order@1");
        assert_eq!(m.sd[0].1[0], ("id", "4\"2]".into()));
        assert_eq!(m.time.unwrap().to_rfc3339(), "2026-12-06T03:10:01.123456Z");
        // No message: the event itself; no level: notice, the sink's facility.
        let msg = String::from_utf8(s.message(br#"{"a":1}"#)).unwrap();
        assert!(
            msg.starts_with("<13>1 ") && msg.ends_with(r#" h sluice - - - {"a":1}"#),
            "{msg}"
        );
    }

    #[test]
    fn octet_counting_frames_count_bytes() {
        let s = sink();
        let b = Batch::from_events([r#"{"message":"é"}"#.as_bytes(), br#"{"message":"b"}"#]);
        let frames = s.frames(&b);
        let text = String::from_utf8(frames).unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        let len: usize = len.parse().unwrap();
        assert!(rest.as_bytes()[..len].ends_with("é".as_bytes()));
    }
}
