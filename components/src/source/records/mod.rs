//! From lines to records, for the file and stdin sources: container log
//! lines (`format = "cri"` or `"docker"`) unwrapped and their partial
//! lines joined, then several lines joined into one record by
//! `multiline` rules (a traceback, a stack trace, a Go panic).
//!
//! A record is held until it is whole: the next record's first line
//! arrives, or nothing was added for `timeout`, or it reached `max_lines`
//! or `max_bytes`. What is held is never checkpointed past:
//! [`Records::held_from`] is where the oldest held line began, and a
//! restart reads from there again.

mod containers;
mod multiline;

pub use self::containers::*;
pub use self::multiline::*;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

use super::{Batcher, Format, LineDecoder};
use crate::base::event::push_json_str;
use crate::base::metrics::ComponentMetrics;
use crate::base::settings::{duration, size, BuildError};
use crate::base::timestamp::{self, Stamp, TimeFormat};

/// What a container record carries besides its content.
#[derive(Debug, Clone, Default, PartialEq)]
struct Meta {
    /// The time of its first line, as the runtime wrote it.
    time: Option<Stamp>,
    stream: Stream,
}

/// A stream's name: the two every runtime has without an allocation.
type Stream = Cow<'static, str>;

fn stream_name(s: &str) -> Stream {
    match s {
        "stdout" => Cow::Borrowed("stdout"),
        "stderr" => Cow::Borrowed("stderr"),
        other => Cow::Owned(other.to_string()),
    }
}

/// A record being put together: its lines joined by `\n`.
struct Held {
    text: Vec<u8>,
    /// Where its last line ends in the text (trailing blank lines are cut
    /// when it is let go).
    lines: usize,
    /// Offset in the file where its first line began, and where its last
    /// line ended.
    from: u64,
    to: u64,
    last_at: Instant,
    meta: Option<Meta>,
    /// Python: a traceback began in it.
    traceback: bool,
    /// Its last line, for the presets.
    prev: String,
}

/// A container line cut in parts (`P`), being joined.
struct Joining {
    content: Vec<u8>,
    from: u64,
    meta: Meta,
    cut: bool,
}

/// Records from the lines of one file (or stdin).
pub struct Records {
    container: Option<Container>,
    /// `,"kubernetes":{...}` from the file's path.
    kube: Vec<u8>,
    multiline: Option<std::sync::Arc<Multiline>>,
    max_line: usize,
    /// Per stream (stdout, stderr): the partial line being joined and the
    /// record being held, so interleaved streams do not mix.
    joining: Vec<(Stream, Joining)>,
    held: Vec<(Stream, Held)>,
}

impl Records {
    pub fn new(
        format: Format,
        multiline: Option<std::sync::Arc<Multiline>>,
        max_line: usize,
        kube: Option<Kubernetes>,
    ) -> Records {
        let mut k = Vec::new();
        if let Some(kube) = kube {
            k.extend_from_slice(b",\"kubernetes\":{\"namespace\":");
            push_json_str(&mut k, &kube.namespace);
            k.extend_from_slice(b",\"pod_name\":");
            push_json_str(&mut k, &kube.pod);
            if let Some(uid) = &kube.pod_uid {
                k.extend_from_slice(b",\"pod_uid\":");
                push_json_str(&mut k, uid);
            }
            k.extend_from_slice(b",\"container_name\":");
            push_json_str(&mut k, &kube.container);
            if let Some(id) = &kube.container_id {
                k.extend_from_slice(b",\"container_id\":");
                push_json_str(&mut k, id);
            }
            k.push(b'}');
        }
        Records {
            container: Container::of(format),
            kube: k,
            multiline,
            max_line,
            joining: Vec::new(),
            held: Vec::new(),
        }
    }

    /// Whether lines go straight to the decoder (no container format, no
    /// multiline): the callers' fast path.
    pub fn is_plain(&self) -> bool {
        self.container.is_none() && self.multiline.is_none()
    }

    /// Where the oldest line not yet in an emitted record began: a
    /// checkpoint may not pass it.
    pub fn held_from(&self) -> Option<u64> {
        let a = self.joining.iter().map(|(_, j)| j.from);
        let b = self.held.iter().map(|(_, h)| h.from);
        a.chain(b).min()
    }

    /// When the next held record is due by `timeout`.
    pub fn due_at(&self) -> Option<Instant> {
        let m = self.multiline.as_ref()?;
        self.held.iter().map(|(_, h)| h.last_at + m.timeout).min()
    }

    /// One line (without its newline) that began at `from` and ended
    /// (newline included) at `to`.
    pub fn line(
        &mut self,
        line: &[u8],
        from: u64,
        to: u64,
        batcher: &mut Batcher,
        decoder: &mut LineDecoder,
        metrics: &ComponentMetrics,
    ) {
        let Some(container) = self.container else {
            self.add(Cow::Borrowed(""), line, None, from, to, batcher, decoder);
            return;
        };
        let u = match unwrap(container, line) {
            Ok(u) => u,
            Err(reason) => {
                batcher.reject(line, reason);
                return;
            }
        };
        let stream = stream_name(&u.stream);
        let slot = self.joining.iter().position(|(s, _)| *s == stream);
        if !u.whole || slot.is_some() {
            let max = self.max_line;
            let j = match slot {
                Some(i) => &mut self.joining[i].1,
                None => {
                    self.joining.push((
                        stream.clone(),
                        Joining {
                            content: Vec::new(),
                            from,
                            meta: Meta {
                                time: u.time,
                                stream: stream.clone(),
                            },
                            cut: false,
                        },
                    ));
                    &mut self.joining.last_mut().expect("pushed").1
                }
            };
            let room = max.saturating_sub(j.content.len());
            if u.content.len() > room && !j.cut {
                j.cut = true;
                ComponentMetrics::add(&metrics.long_lines, 1);
            }
            j.content
                .extend_from_slice(&u.content[..u.content.len().min(room)]);
            if !u.whole {
                return;
            }
            let i = slot.unwrap_or(self.joining.len() - 1);
            let (_, j) = self.joining.remove(i);
            self.add(
                stream,
                &j.content,
                Some(j.meta),
                j.from,
                to,
                batcher,
                decoder,
            );
            return;
        }
        let meta = Meta {
            time: u.time,
            stream: stream.clone(),
        };
        let content = if u.content.len() > self.max_line {
            ComponentMetrics::add(&metrics.long_lines, 1);
            &u.content[..self.max_line]
        } else {
            &u.content[..]
        };
        self.add(stream, content, Some(meta), from, to, batcher, decoder);
    }

    /// A whole line of `stream`, to the multiline rules.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        stream: Stream,
        line: &[u8],
        meta: Option<Meta>,
        from: u64,
        to: u64,
        batcher: &mut Batcher,
        decoder: &mut LineDecoder,
    ) {
        let Some(m) = self.multiline.clone() else {
            self.emit(line, meta.as_ref(), batcher, decoder);
            return;
        };
        let text = String::from_utf8_lossy(line);
        let slot = self.held.iter().position(|(s, _)| *s == stream);
        if let Some(i) = slot {
            let h = &self.held[i].1;
            let fits = h.lines < m.max_lines && h.text.len() + 1 + line.len() <= m.max_bytes;
            if continues(&m.rule, &text, &h.prev, h.traceback) && fits {
                let h = &mut self.held[i].1;
                h.text.push(b'\n');
                h.text.extend_from_slice(line);
                h.lines += 1;
                h.to = to;
                h.last_at = Instant::now();
                h.traceback |= text.starts_with("Traceback (most recent call last):");
                h.prev.clear();
                h.prev.push_str(&text);
                return;
            }
            let (_, h) = self.held.remove(i);
            self.let_go(h, batcher, decoder);
        }
        let cut = line.len().min(m.max_bytes);
        self.held.push((
            stream,
            Held {
                text: line[..cut].to_vec(),
                lines: 1,
                from,
                to,
                last_at: Instant::now(),
                meta,
                traceback: text.starts_with("Traceback (most recent call last):"),
                prev: text.into_owned(),
            },
        ));
    }

    fn let_go(&mut self, h: Held, batcher: &mut Batcher, decoder: &mut LineDecoder) {
        let mut text = h.text;
        // Blank lines at its end belong to no one.
        while text.last().is_some_and(|b| b.is_ascii_whitespace()) {
            text.pop();
        }
        self.emit(&text, h.meta.as_ref(), batcher, decoder);
    }

    /// Let go of the records held longer than `timeout`; the offset the
    /// checkpoint may now reach is [`Records::held_from`].
    pub fn expire(&mut self, batcher: &mut Batcher, decoder: &mut LineDecoder) {
        let Some(m) = self.multiline.clone() else {
            return;
        };
        let now = Instant::now();
        let mut i = 0;
        while i < self.held.len() {
            if now >= self.held[i].1.last_at + m.timeout {
                let (_, h) = self.held.remove(i);
                self.let_go(h, batcher, decoder);
            } else {
                i += 1;
            }
        }
    }

    /// Let go of everything held (the input ended); partial container
    /// lines are emitted as they are.
    pub fn finish(&mut self, batcher: &mut Batcher, decoder: &mut LineDecoder) {
        for (stream, j) in std::mem::take(&mut self.joining) {
            let to = j.from;
            self.add(
                stream,
                &j.content,
                Some(j.meta),
                j.from,
                to,
                batcher,
                decoder,
            );
        }
        for (_, h) in std::mem::take(&mut self.held) {
            self.let_go(h, batcher, decoder);
        }
    }

    /// One record to the batch: plain, or a container's with its time,
    /// stream and Kubernetes metadata.
    fn emit(
        &self,
        content: &[u8],
        meta: Option<&Meta>,
        batcher: &mut Batcher,
        decoder: &mut LineDecoder,
    ) {
        let Some(meta) = meta else {
            batcher.line(decoder, content);
            return;
        };
        let content = content.trim_ascii_end();
        let time = meta.time;
        let before = batcher.batch.len();
        match decoder.decode_at(content, &mut batcher.batch, time) {
            Ok(true) => {}
            Ok(false) => return,
            Err(reason) => {
                batcher.reject(content, reason);
                return;
            }
        }
        batcher.pushed();
        if batcher.batch.len() != before + 1 {
            return;
        }
        // `..."stream":"stdout","kubernetes":{...}}` in place of the
        // event's closing brace.
        let b = &mut batcher.batch;
        b.ends.pop();
        if b.data.last() == Some(&b'}') {
            b.data.pop();
        }
        let empty = b.data.last() == Some(&b'{');
        if !empty {
            b.data.push(b',');
        }
        b.data.extend_from_slice(b"\"stream\":");
        push_json_str(&mut b.data, &meta.stream);
        b.data.extend_from_slice(&self.kube);
        b.data.push(b'}');
        b.seal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::settings::BatchConfig;

    fn run(
        format: Format,
        ml: Option<&str>,
        lines: &[&str],
        kube: Option<Kubernetes>,
    ) -> Vec<serde_json::Value> {
        let multiline = ml.map(|t| {
            let c: MultilineConfig = toml::from_str(t).unwrap();
            std::sync::Arc::new(c.build(1 << 20).unwrap())
        });
        let mut r = Records::new(format, multiline, 1 << 20, kube);
        let mut batcher = Batcher::new(BatchConfig::default());
        let mut decoder = LineDecoder::new(Format::Auto, "s", None);
        let metrics = ComponentMetrics::default();
        let mut at = 0;
        for l in lines {
            let to = at + l.len() as u64 + 1;
            r.line(l.as_bytes(), at, to, &mut batcher, &mut decoder, &metrics);
            at = to;
        }
        r.finish(&mut batcher, &mut decoder);
        batcher
            .batch
            .iter()
            .map(|e| {
                crate::base::event::check_object(e).unwrap();
                serde_json::from_slice(e).unwrap()
            })
            .collect()
    }

    #[test]
    fn python_tracebacks_chained_are_one_record() {
        let lines = [
            "ERROR:root:request failed",
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in <module>",
            "    int('x')",
            "ValueError: invalid literal for int() with base 10: 'x'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            "  File \"app.py\", line 5, in <module>",
            "    raise KeyError('k')",
            "KeyError: 'k'",
            "INFO:root:next request",
            "WARNING:root:slow",
        ];
        let got = run(Format::Auto, Some("preset = \"python\""), &lines, None);
        assert_eq!(got.len(), 3, "{got:#?}");
        let first = got[0]["message"].as_str().unwrap();
        assert!(first.starts_with("ERROR:root:request failed\nTraceback"));
        assert!(first.ends_with("KeyError: 'k'"));
        assert_eq!(got[1]["message"], "INFO:root:next request");
    }

    #[test]
    fn java_and_go_presets() {
        let java = [
            "2026-12-06 03:00:00 ERROR request failed",
            "java.lang.IllegalStateException: boom",
            "\tat Main.fail(Main.java:5)",
            "\tat Main.main(Main.java:9)",
            "Caused by: java.lang.RuntimeException: root",
            "\t... 2 more",
            "2026-12-06 03:00:01 INFO next",
        ];
        let got = run(Format::Auto, Some("preset = \"java\""), &java, None);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0]["message"].as_str().unwrap().ends_with("... 2 more"));
        let go = [
            "2026/12/06 03:00:00 starting",
            "panic: boom",
            "",
            "goroutine 1 [running]:",
            "main.fail(...)",
            "\t/src/main.go:7",
            "main.main()",
            "\t/src/main.go:12 +0x25",
            "exit status 2",
            "2026/12/06 03:00:02 restarted",
        ];
        let got = run(Format::Auto, Some("preset = \"go\""), &go, None);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(got[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("panic: boom\n\ngoroutine 1"));
    }

    #[test]
    fn start_and_limits() {
        let lines = ["[1] a", "b", "c", "[2] d", "e"];
        let got = run(Format::Auto, Some("start = '^\\['"), &lines, None);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["message"], "[1] a\nb\nc");
        let got = run(
            Format::Auto,
            Some("start = '^\\['\nmax_lines = 2"),
            &lines,
            None,
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        let got = run(
            Format::Auto,
            Some("continue = '^\\s'"),
            &["a", " b", "c"],
            None,
        );
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn cri_partials_join_per_stream_with_their_time() {
        let lines = [
            "2026-12-06T03:00:00.123456789Z stdout P part one ",
            "2026-12-06T03:00:00.200000000Z stderr F an error",
            "2026-12-06T03:00:00.300000000Z stdout F and two",
            "2026-12-06T03:00:01.000000000+01:00 stdout F {\"level\":\"warn\",\"msg\":\"json\"}",
            "garbage",
        ];
        let kube = Kubernetes::of_path(std::path::Path::new(
            "/var/log/pods/shop_api-7d9_1234-abcd/api/0.log",
        ));
        let got = run(Format::Cri, None, &lines, kube);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(got[0]["message"], "an error");
        assert_eq!(got[0]["stream"], "stderr");
        assert_eq!(got[1]["message"], "part one and two");
        assert_eq!(got[1]["timestamp"], "2026-12-06T03:00:00.123456789Z");
        assert_eq!(got[1]["kubernetes"]["pod_name"], "api-7d9");
        assert_eq!(got[1]["kubernetes"]["namespace"], "shop");
        assert_eq!(got[1]["kubernetes"]["pod_uid"], "1234-abcd");
        assert_eq!(got[1]["kubernetes"]["container_name"], "api");
        assert_eq!(got[2]["level"], "warn");
        assert_eq!(got[2]["timestamp"], "2026-12-06T02:00:01.000000000Z");
    }

    #[test]
    fn docker_lines_and_the_containers_path() {
        let a = "x".repeat(16384);
        let lines = [
            format!(r#"{{"log":"{a}","stream":"stdout","time":"2026-12-06T03:00:00.1Z"}}"#),
            r#"{"log":"tail\n","stream":"stdout","time":"2026-12-06T03:00:00.2Z"}"#.to_string(),
            r#"{"log":"café \"q\"\n","stream":"stderr","time":"2026-12-06T03:00:00.3Z"}"#
                .to_string(),
        ];
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let id = "a".repeat(64);
        let kube = Kubernetes::of_path(std::path::Path::new(&format!(
            "/var/log/containers/web-1_prod_nginx-{id}.log"
        )));
        assert_eq!(kube.as_ref().unwrap().container, "nginx");
        let got = run(Format::Docker, None, &refs, kube);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["message"].as_str().unwrap().len(), 16384 + 4);
        assert_eq!(got[1]["message"], "café \"q\"");
        assert_eq!(got[1]["kubernetes"]["namespace"], "prod");
        assert_eq!(got[1]["kubernetes"]["container_id"], id.as_str());
    }
}
