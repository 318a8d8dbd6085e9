//! Writing the timeline report as Markdown or JSON.

use std::io::Write;

use super::read::{format_time, LogFile, Record};
use super::{Mode, Options, Summary};
use sluice_core::base::event::value_text;

/// The report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Json,
    /// One self-contained page (see `html.rs`), written at the end.
    Html,
}

pub struct Writer<'a> {
    o: &'a Options,
    out: &'a mut (dyn Write + Send),
    /// What is written goes here first and to `out` a mebibyte at a time:
    /// small writes cost the file system far more per byte.
    buf: Vec<u8>,
    /// The date of the last event written, to head each new day.
    day: Option<String>,
    /// JSON: whether an element of the current array was written.
    first: bool,
    in_events: bool,
    /// The second of the last event, and its "HH:MM:SS" (formatting a clock
    /// per event would cost more than the rest of the line).
    second: Option<(i64, String)>,
}

/// Bytes gathered before a write to the output.
const BUFFER: usize = 1 << 20;

/// `.mmm`: the milliseconds of a time in microseconds, zero-padded.
fn millis(us: i64) -> [u8; 4] {
    // 0..=999: three digits, each below 10.
    let m = us.rem_euclid(1_000_000) / 1000;
    let digit = |d: i64| b'0' + d as u8;
    [b'.', digit(m / 100), digit(m / 10 % 10), digit(m % 10)]
}

fn ms(us: i64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn duration(us: i64) -> String {
    let s = us as f64 / 1e6;
    if s < 1.0 {
        ms(us)
    } else if s < 120.0 {
        format!("{s:.3} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

impl<'a> Writer<'a> {
    pub fn new(o: &'a Options, out: &'a mut (dyn Write + Send)) -> Self {
        Self {
            o,
            out,
            buf: Vec::with_capacity(BUFFER + 64 * 1024),
            day: None,
            first: true,
            in_events: false,
            second: None,
        }
    }

    pub fn header(&mut self, s: &Summary) -> std::io::Result<()> {
        let o = self.o;
        let period = match (o.from, o.to) {
            (None, None) => "all".to_string(),
            (f, t) => format!(
                "{} to {}",
                f.map_or("the beginning".to_string(), format_time),
                t.map_or("the end".to_string(), format_time)
            ),
        };
        let components = if o.components.is_empty() {
            "all".to_string()
        } else {
            o.components.join(", ")
        };
        let level = o
            .min_level
            .as_deref()
            .map_or("all".to_string(), |l| format!("{l} and above"));
        let mode = match o.mode {
            Mode::Timeline => "timeline",
            Mode::Component => "component",
        };
        match o.format {
            Format::Html => {}
            Format::Markdown => {
                writeln!(self.buf, "# Timeline\n")?;
                writeln!(self.buf, "- Period: {period}")?;
                writeln!(self.buf, "- Components: {components}")?;
                writeln!(self.buf, "- Level: {level}")?;
                writeln!(self.buf, "- Mode: {mode}")?;
                if let Some(g) = &o.grep {
                    writeln!(self.buf, "- Matching: `{g}`")?;
                }
                writeln!(self.buf, "- Files read ({}):", s.files.len())?;
                for (f, n) in &s.files {
                    writeln!(self.buf, "  - `{f}` ({n} events)")?;
                }
                writeln!(self.buf)?;
                if o.mode == Mode::Timeline {
                    writeln!(self.buf, "## Events\n")?;
                }
            }
            Format::Json => {
                let header = serde_json::json!({
                    "period": period, "components": components, "level": level, "mode": mode,
                    "grep": o.grep, "files": s.files.iter().map(|(f, n)| serde_json::json!({"path": f, "events": n})).collect::<Vec<_>>(),
                });
                write!(self.buf, "{{\"header\":{header},\"events\":[")?;
                self.in_events = true;
            }
        }
        Ok(())
    }

    /// Start a component's section (component mode).
    pub fn section(&mut self, component: &str) -> std::io::Result<()> {
        self.day = None;
        if self.o.format == Format::Markdown {
            writeln!(self.buf, "## {component}\n")?;
        }
        Ok(())
    }

    pub fn event(&mut self, r: &Record, files: &[LogFile]) -> std::io::Result<()> {
        match self.o.format {
            Format::Html => return Ok(()),
            Format::Markdown => {
                let second = r.ts.div_euclid(1_000_000);
                if self.second.as_ref().is_none_or(|(s, _)| *s != second) {
                    let time = format_time(second * 1_000_000);
                    let (date, clock) = time.split_once('T').unwrap_or(("", &time));
                    if self.day.as_deref() != Some(date) {
                        writeln!(self.buf, "### {date}\n")?;
                        self.day = Some(date.to_string());
                    }
                    let hms = clock.split('.').next().unwrap_or(clock).to_string();
                    self.second = Some((second, hms));
                }
                let hms = &self.second.as_ref().expect("set above").1;
                let line = &mut self.buf;
                line.extend_from_slice(b"**");
                line.extend_from_slice(hms.as_bytes());
                line.extend_from_slice(&millis(r.ts));
                line.extend_from_slice(b"** [");
                line.extend_from_slice(r.component().as_bytes());
                line.extend_from_slice(b"] ");
                let level = r.level().unwrap_or("-");
                if level.is_ascii() {
                    line.extend(level.bytes().map(|b| b.to_ascii_uppercase()));
                } else {
                    line.extend_from_slice(level.to_uppercase().as_bytes());
                }
                line.extend_from_slice(b" - ");
                // One event, one line: a message's line breaks become spaces.
                let message = r.message().as_bytes();
                if memchr::memchr(b'\n', message).is_some() {
                    line.extend(message.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                } else {
                    line.extend_from_slice(message);
                }
                line.push(b'\n');
                for (k, v) in r.fields() {
                    line.extend_from_slice(b"  - ");
                    line.extend_from_slice(k.as_bytes());
                    line.extend_from_slice(b": ");
                    line.extend_from_slice(value_text(v).as_bytes());
                    line.push(b'\n');
                }
                line.push(b'\n');
            }
            Format::Json => {
                let time = format_time(r.ts);
                if !self.first {
                    write!(self.buf, ",")?;
                }
                self.first = false;
                let mut fields = serde_json::Map::new();
                for (k, v) in r.fields() {
                    fields.insert(
                        k.to_string(),
                        serde_json::from_str(v).unwrap_or(serde_json::Value::Null),
                    );
                }
                let e = serde_json::json!({
                    "time": time, "component": r.component(), "level": r.level(), "message": r.message(),
                    "fields": fields, "file": files[r.file].path.display().to_string(), "line": r.line,
                });
                write!(self.buf, "{e}")?;
            }
        }
        self.pass_on()
    }

    pub fn finish(&mut self, s: &Summary) -> std::io::Result<()> {
        match self.o.format {
            Format::Json => {
                let summary = serde_json::to_value(s).unwrap_or_default();
                writeln!(self.buf, "],\"summary\":{summary}}}")?;
            }
            Format::Markdown => self.markdown_summary(s)?,
            Format::Html => super::html::page(self.o, s, &mut self.buf)?,
        }
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }

    /// Pass what was gathered on to the output once it is a mebibyte.
    fn pass_on(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= BUFFER {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn markdown_summary(&mut self, s: &Summary) -> std::io::Result<()> {
        let out = &mut self.buf;
        if s.events == 0 {
            writeln!(out, "No events match these filters.\n")?;
        }
        writeln!(out, "## Statistics\n")?;
        writeln!(out, "- Events: {}", s.events)?;
        if let (Some(f), Some(l)) = (s.first_us, s.last_us) {
            writeln!(
                out,
                "- Span: {} to {} ({})",
                format_time(f),
                format_time(l),
                duration(l - f)
            )?;
        }
        writeln!(out)?;
        if !s.per_component.is_empty() {
            writeln!(out, "| component | error | warn | info | debug | total |")?;
            writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
            let mut rows: Vec<_> = s.per_component.iter().collect();
            // Errors first.
            rows.sort_by(|a, b| b.1.error.cmp(&a.1.error).then_with(|| a.0.cmp(b.0)));
            for (c, n) in rows {
                writeln!(
                    out,
                    "| {c} | {} | {} | {} | {} | {} |",
                    n.error, n.warn, n.info, n.debug, n.total
                )?;
            }
            writeln!(out)?;
        }
        writeln!(
            out,
            "## Per-hop latencies\n\nRequests followed by `{}`: {}.\n",
            self.o.correlate, s.requests
        )?;
        if !s.hops.is_empty() {
            writeln!(out, "| hop | requests | min | median | p95 | max |")?;
            writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |")?;
            for h in &s.hops {
                writeln!(
                    out,
                    "| {} → {} | {} | {} | {} | {} | {} |",
                    h.from,
                    h.to,
                    h.requests,
                    ms(h.min_us),
                    ms(h.median_us),
                    ms(h.p95_us),
                    ms(h.max_us)
                )?;
            }
            writeln!(out)?;
        }
        if !s.slowest.is_empty() {
            writeln!(out, "### Slowest requests end to end\n")?;
            writeln!(out, "| request | total | path |")?;
            writeln!(out, "| --- | ---: | --- |")?;
            for r in &s.slowest {
                writeln!(
                    out,
                    "| {} | {} | {} |",
                    r.id,
                    ms(r.total_us),
                    r.path.join(" → ")
                )?;
            }
            writeln!(out)?;
        }
        if let Some(end) = &s.expected_end {
            writeln!(out, "### Lost events\n")?;
            if s.lost_total == 0 {
                writeln!(out, "Every request reached `{end}`.\n")?;
            } else {
                writeln!(
                    out,
                    "{} requests stopped before `{end}`, where most requests end:\n",
                    s.lost_total
                )?;
                for r in &s.lost {
                    writeln!(
                        out,
                        "- {} stopped in {} (path: {}), last: {}",
                        r.id,
                        r.path.last().map_or("?", String::as_str),
                        r.path.join(" → "),
                        r.last_message.replace('\n', " ")
                    )?;
                }
                writeln!(out)?;
            }
        }
        if s.malformed + s.no_timestamp > 0 {
            writeln!(out, "## Problems\n")?;
            writeln!(out, "- Malformed lines: {}", s.malformed)?;
            writeln!(
                out,
                "- Lines without a readable timestamp: {}",
                s.no_timestamp
            )?;
            for p in &s.problems {
                writeln!(out, "  - {p}")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn milliseconds_past_255_are_printed_whole() {
        for (us, want) in [
            (0, ".000"),
            (7_000, ".007"),
            (255_000, ".255"),
            (256_000, ".256"),
            (544_999, ".544"),
            (999_000, ".999"),
            (1_795_428_001_544_000, ".544"),
            (-1_000, ".999"),
        ] {
            assert_eq!(std::str::from_utf8(&millis(us)).unwrap(), want, "{us}");
        }
    }
}
