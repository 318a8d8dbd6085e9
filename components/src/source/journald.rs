//! `type = "journald"`: the systemd journal, followed through `journalctl
//! -o json --follow` (as Vector does), from the saved cursor on.
//!
//! - Each entry becomes an event: `timestamp` (`__REALTIME_TIMESTAMP`, to
//!   the microsecond), `message` (`MESSAGE`), `level` (`PRIORITY`),
//!   `host` (`_HOSTNAME`), `service` (`_SYSTEMD_UNIT`, else
//!   `SYSLOG_IDENTIFIER`), and every other field under `journald`
//!   (a field given several times as an array; binary values as base64).
//! - `units`, `include_matches` are handed to journalctl as matches;
//!   `exclude_matches` are dropped here.
//! - With `checkpoint`, the cursor of the last entry whose batch every
//!   sink took (and all before it) is saved on each acknowledgement, and
//!   a restart passes it as `--after-cursor`: nothing is skipped, and
//!   what was delivered is not read again.
//! - journalctl ending (the journal rotated away, a crash) is logged and
//!   it is started again from the last cursor read, after a backoff.

/// This module's log target, as in the `sluice` crate (see the crate's docs).
const LOG_TARGET: &str = "sluice::source::journald";

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

use super::{runs_itself, Batcher, Source, SourceContext, SourceKind};
use crate::base::ack::Ack;
use crate::base::event::push_json_str;
use crate::base::settings::{BatchOverride, BuildContext, BuildError, TypeTag};
use crate::base::timestamp::Stamp;
use crate::delivery::Backoff;

/// `[sources.NAME] type = "journald"`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournaldConfig {
    #[serde(rename = "type")]
    _type: TypeTag,
    /// A journal folder (`--directory`); the system's journal by default.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Only these units (`_SYSTEMD_UNIT=`; `.service` is added to a name
    /// without a suffix).
    #[serde(default)]
    pub units: Vec<String>,
    /// Only entries with these values: `{ PRIORITY = ["0", "1", "2", "3"] }`
    /// (values of one field: any; several fields: all).
    #[serde(default)]
    pub include_matches: BTreeMap<String, Vec<String>>,
    /// Entries with any of these values are dropped.
    #[serde(default)]
    pub exclude_matches: BTreeMap<String, Vec<String>>,
    /// Where the cursor is saved; none: not saved.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Without a saved cursor: `beginning` (everything the journal holds)
    /// or `end` (what comes from now on).
    #[serde(default)]
    pub read_from: super::file::ReadFrom,
    /// The journalctl to run.
    #[serde(default = "default_journalctl")]
    pub journalctl_path: PathBuf,
    #[serde(default)]
    pub batch: Option<BatchOverride>,
}

fn default_journalctl() -> PathBuf {
    PathBuf::from("journalctl")
}

fn field_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl SourceKind for JournaldConfig {
    fn build(&self, cx: &BuildContext<'_>) -> Result<Box<dyn Source>, BuildError> {
        for (key, m) in [
            ("include_matches", &self.include_matches),
            ("exclude_matches", &self.exclude_matches),
        ] {
            if let Some(bad) = m.keys().find(|k| !field_name_ok(k)) {
                return Err(BuildError::key(
                    key,
                    format!("`{bad}` is not a journal field name (A-Z, 0-9 and _)"),
                ));
            }
        }
        let mut c = self.clone();
        c.directory = c.directory.map(|d| cx.resolve(&d));
        if let Some(d) = &c.directory {
            if !d.is_dir() {
                return Err(BuildError::key(
                    "directory",
                    format!("{} is not a folder", d.display()),
                ));
            }
        }
        c.checkpoint = c.checkpoint.map(|p| cx.resolve_state(&p));
        Ok(Box::new(c))
    }

    fn batch(&self) -> Option<BatchOverride> {
        self.batch
    }
}
runs_itself!(JournaldConfig);

/// Cursors of batches in flight, in order: the saved cursor moves to the
/// last of a run of delivered batches at the front.
struct Cursors {
    path: Option<PathBuf>,
    next: u64,
    /// Sequence, cursor of the batch's last entry, and whether delivered.
    flight: VecDeque<(u64, String, Option<bool>)>,
    /// A batch failed: the cursor stays before it for this run.
    stuck: bool,
    saved: Option<String>,
}

impl Cursors {
    fn done(&mut self, seq: u64, delivered: bool) {
        if let Some(slot) = self.flight.iter_mut().find(|(s, _, _)| *s == seq) {
            slot.2 = Some(delivered);
        }
        let mut last = None;
        while let Some((_, _, Some(ok))) = self.flight.front() {
            if !*ok {
                if !self.stuck {
                    tracing::warn!(target: LOG_TARGET, "journald: a batch was not delivered; the saved cursor stays before it until a restart reads it again");
                }
                self.stuck = true;
            }
            let (_, cursor, _) = self.flight.pop_front().expect("front exists");
            if !self.stuck {
                last = Some(cursor);
            }
        }
        if let Some(c) = last {
            self.save(&c);
        }
    }

    fn save(&mut self, cursor: &str) {
        let Some(path) = &self.path else { return };
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, cursor).and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => self.saved = Some(cursor.to_string()),
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, path = %path.display(), error = %e, "journald: cannot save the cursor")
            }
        }
    }
}

fn load_cursor(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the cursor {}", path.display())),
    }
}

/// A journal value as JSON: text, an array of them, or base64 for bytes.
fn value_json(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b.min(255) as u8)
                .collect();
            push_json_str(
                out,
                &base64::engine::general_purpose::STANDARD.encode(bytes),
            );
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value_json(out, item);
            }
            out.push(b']');
        }
        Value::Null => out.extend_from_slice(b"null"),
        other => push_json_str(out, &other.to_string()),
    }
}

/// A field's text, for matches and the mapped fields (the first of
/// several values; bytes as lossy text).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) && !items.is_empty() => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(Value::as_u64)
                .map(|b| b.min(255) as u8)
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(value_text),
        _ => None,
    }
}

/// One entry as an event in `out` (its cursor returned), or `None` when
/// an exclude match drops it.
fn entry_event(
    entry: &Map<String, Value>,
    exclude: &BTreeMap<String, Vec<String>>,
    meta: &[u8],
    out: &mut Vec<u8>,
) -> Option<()> {
    for (field, values) in exclude {
        if let Some(v) = entry.get(field).and_then(value_text) {
            if values.contains(&v) {
                return None;
            }
        }
    }
    out.extend_from_slice(b"{\"timestamp\":\"");
    let stamp = entry
        .get("__REALTIME_TIMESTAMP")
        .and_then(value_text)
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|us| {
            Stamp::of(chrono::DateTime::from_timestamp_micros(us)?).map(|mut s| {
                s.digits = 6;
                s
            })
        });
    match stamp {
        Some(s) => s.write(out),
        None => out.extend_from_slice(crate::base::event::now_rfc3339().as_bytes()),
    }
    out.push(b'"');
    if let Some(p) = entry
        .get("PRIORITY")
        .and_then(value_text)
        .and_then(|p| p.parse::<u8>().ok())
    {
        out.extend_from_slice(b",\"level\":\"");
        out.extend_from_slice(super::syslog::parse::level(p).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b",\"message\":");
    match entry.get("MESSAGE") {
        Some(v) => push_json_str(out, &value_text(v).unwrap_or_default()),
        None => out.extend_from_slice(b"\"\""),
    }
    if let Some(h) = entry.get("_HOSTNAME").and_then(value_text) {
        out.extend_from_slice(b",\"host\":");
        push_json_str(out, &h);
    }
    if let Some(s) = entry
        .get("_SYSTEMD_UNIT")
        .or_else(|| entry.get("SYSLOG_IDENTIFIER"))
        .and_then(value_text)
    {
        out.extend_from_slice(b",\"service\":");
        push_json_str(out, &s);
    }
    out.extend_from_slice(b",\"journald\":{");
    let mut first = true;
    for (k, v) in entry {
        if matches!(k.as_str(), "MESSAGE" | "__CURSOR") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        push_json_str(out, k);
        out.push(b':');
        value_json(out, v);
    }
    out.push(b'}');
    out.extend_from_slice(meta);
    out.push(b'}');
    Some(())
}

impl JournaldConfig {
    fn command(&self, cursor: Option<&str>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.journalctl_path);
        // `--merge`: every journal of the folder, not this boot's only
        // (which `--follow` means otherwise); `--no-tail`: from the
        // cursor or the start, not the last ten.
        cmd.args([
            "--output=json",
            "--follow",
            "--all",
            "--no-pager",
            "--merge",
        ]);
        if let Some(d) = &self.directory {
            cmd.arg(format!("--directory={}", d.display()));
        }
        match cursor {
            Some(c) => {
                cmd.arg("--no-tail").arg(format!("--after-cursor={c}"));
            }
            None => match self.read_from {
                super::file::ReadFrom::Beginning => {
                    cmd.arg("--no-tail");
                }
                super::file::ReadFrom::End => {
                    cmd.arg("--lines=0");
                }
            },
        }
        for u in &self.units {
            let unit = if u.contains('.') {
                u.clone()
            } else {
                format!("{u}.service")
            };
            cmd.arg(format!("_SYSTEMD_UNIT={unit}"));
        }
        for (field, values) in &self.include_matches {
            for v in values {
                cmd.arg(format!("{field}={v}"));
            }
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub async fn run(self, ctx: SourceContext) -> anyhow::Result<()> {
        let saved = match &self.checkpoint {
            Some(p) => load_cursor(p)?,
            None => None,
        };
        let cursors = Arc::new(Mutex::new(Cursors {
            path: self.checkpoint.clone(),
            next: 0,
            flight: VecDeque::new(),
            stuck: false,
            saved: saved.clone(),
        }));
        let mut meta = Vec::new();
        meta.extend_from_slice(b",\"source\":");
        push_json_str(&mut meta, &ctx.name);
        // The cursor of the last entry read (where journalctl restarts).
        let mut read_to = saved;
        let mut shutdown = ctx.shutdown.clone();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut batcher = Batcher::new(ctx.batch);
        // The cursor of the batch's last entry.
        let mut batch_cursor: Option<String> = None;
        'run: loop {
            let mut child = self.command(read_to.as_deref()).spawn().with_context(|| {
                format!(
                    "source {}: cannot run {}",
                    ctx.name,
                    self.journalctl_path.display()
                )
            })?;
            tracing::info!(target: LOG_TARGET, source = %ctx.name, cursor = ?read_to, "reading the journal");
            let stdout = child.stdout.take().context("journalctl's stdout")?;
            let stderr = child.stderr.take().context("journalctl's stderr")?;
            let name = ctx.name.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    tracing::warn!(target: LOG_TARGET, source = %name, "journalctl: {l}");
                }
            });
            let mut lines = tokio::io::BufReader::with_capacity(256 << 10, stdout).lines();
            loop {
                let deadline = batcher.deadline();
                let line = tokio::select! {
                    biased;
                    _ = shutdown.wait() => break 'run,
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                        self.flush(&ctx, &mut batcher, &mut batch_cursor, &cursors).await?;
                        continue;
                    }
                    l = lines.next_line() => l,
                };
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => break,
                };
                backoff.reset();
                let entry: Map<String, Value> = match serde_json::from_str(&line) {
                    Ok(e) => e,
                    Err(e) => {
                        batcher.reject(
                            line.as_bytes(),
                            format!("journalctl wrote a line that is not a JSON object: {e}"),
                        );
                        continue;
                    }
                };
                let cursor = entry
                    .get("__CURSOR")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if entry_event(
                    &entry,
                    &self.exclude_matches,
                    &meta,
                    &mut batcher.batch.data,
                )
                .is_some()
                {
                    batcher.batch.seal();
                    batcher.pushed();
                }
                if let Some(c) = cursor {
                    read_to = Some(c.clone());
                    batch_cursor = Some(c);
                }
                if batcher.is_full() {
                    self.flush(&ctx, &mut batcher, &mut batch_cursor, &cursors)
                        .await?;
                }
            }
            // journalctl ended: start it again from where we are.
            let status = child.wait().await;
            self.flush(&ctx, &mut batcher, &mut batch_cursor, &cursors)
                .await?;
            let delay = backoff.next_delay();
            tracing::warn!(target: LOG_TARGET, source = %ctx.name, status = ?status.ok(), retry_in_ms = delay.as_millis() as u64, "journalctl ended; starting it again");
            tokio::select! {
                _ = shutdown.wait() => break 'run,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.flush(&ctx, &mut batcher, &mut batch_cursor, &cursors)
            .await?;
        drop(ctx);
        // The last acknowledgements, briefly.
        let waited = std::time::Instant::now();
        while !cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flight
            .is_empty()
            && waited.elapsed() < Duration::from_secs(30)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Send the batch with an acknowledgement that moves the saved cursor.
    async fn flush(
        &self,
        ctx: &SourceContext,
        batcher: &mut Batcher,
        batch_cursor: &mut Option<String>,
        cursors: &Arc<Mutex<Cursors>>,
    ) -> anyhow::Result<()> {
        if let Some(c) = batch_cursor.take() {
            if self.checkpoint.is_some() {
                let seq = {
                    let mut g = cursors.lock().unwrap_or_else(|e| e.into_inner());
                    let seq = g.next;
                    g.next += 1;
                    g.flight.push_back((seq, c, None));
                    seq
                };
                let cursors = cursors.clone();
                batcher.batch.acks.push(Ack::new(move |delivered| {
                    cursors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .done(seq, delivered);
                }));
            }
        }
        batcher
            .flush(ctx)
            .await
            .map_err(|_| anyhow::anyhow!("source {}: the pipeline closed", ctx.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_map_to_events() {
        let entry: Map<String, Value> = serde_json::from_str(
            r#"{"__CURSOR":"s=1","__REALTIME_TIMESTAMP":"1796529600123456","PRIORITY":"3","_HOSTNAME":"web-1","_SYSTEMD_UNIT":"shop.service","MESSAGE":"payment failed","_PID":"42","BLOB":[255,0,1],"TAG":["a","b"]}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        entry_event(&entry, &BTreeMap::new(), b",\"source\":\"j\"", &mut out).unwrap();
        crate::base::event::check_object(&out).unwrap();
        let e: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(e["timestamp"], "2026-12-06T04:00:00.123456Z");
        assert_eq!(e["level"], "error");
        assert_eq!(e["message"], "payment failed");
        assert_eq!(e["host"], "web-1");
        assert_eq!(e["service"], "shop.service");
        assert_eq!(e["journald"]["_PID"], "42");
        assert_eq!(e["journald"]["BLOB"], "/wAB");
        assert_eq!(e["journald"]["TAG"], serde_json::json!(["a", "b"]));
        assert!(e["journald"].get("__CURSOR").is_none());
        let mut ex = BTreeMap::new();
        ex.insert("_PID".to_string(), vec!["42".to_string()]);
        assert!(entry_event(&entry, &ex, b"", &mut Vec::new()).is_none());
    }

    #[test]
    fn the_cursor_moves_over_delivered_batches_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut c = Cursors {
            path: Some(path.clone()),
            next: 3,
            flight: [
                (0, "a".into(), None),
                (1, "b".into(), None),
                (2, "c".into(), None),
            ]
            .into(),
            stuck: false,
            saved: None,
        };
        c.done(1, true);
        assert!(!path.exists(), "the first is still in flight");
        c.done(0, true);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b");
        c.done(2, false);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "b",
            "a failure holds it"
        );
    }
}
