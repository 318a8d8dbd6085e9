//! Multi-line records: the `multiline` settings (a preset, or `start`,
//! `continue` and `end` patterns) and the rules that tell whether a line
//! goes on the record before it (tracebacks of Python, Java, Go, ...).

use super::*;

/// Built-in rules for the traces of common runtimes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Python tracebacks (with chained exceptions), as `logging.exception`
    /// and uncaught exceptions print them.
    Python,
    /// Java stack traces: `at` frames, `... N more`, `Caused by:`,
    /// `Suppressed:`, and an exception's line after a log line.
    Java,
    /// Go panics: `goroutine N [...]:`, function lines and their indented
    /// file lines, `created by`, `exit status`.
    Go,
}

/// `multiline = { ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this begins a record; others continue it.
    #[serde(default)]
    pub start: Option<String>,
    /// A line matching this continues the record before it; others begin
    /// one.
    #[serde(default, rename = "continue")]
    pub continue_: Option<String>,
    /// A ready-made rule: `python` (tracebacks), `java` (stack traces with
    /// `at`, `Caused by:`, `...`) or `go` (panics and goroutine dumps).
    #[serde(default)]
    pub preset: Option<Preset>,
    /// A record is let go after this long without a line added.
    #[serde(default = "default_timeout", with = "duration")]
    #[schemars(with = "crate::base::settings::schema::Duration")]
    pub timeout: Duration,
    /// Most lines in one record; a longer record is let go at this many.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Most bytes of one record (default: the source's `max_line`).
    #[serde(default, with = "size::option")]
    #[schemars(with = "Option<crate::base::settings::schema::Size>")]
    pub max_bytes: Option<usize>,
}

pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_max_lines() -> usize {
    500
}

pub(super) enum Rule {
    Start(Regex),
    Continue(Regex),
    StartAndContinue(Regex, Regex),
    Preset(Preset),
}

/// Multiline rules ready to apply.
pub struct Multiline {
    pub(super) rule: Rule,
    pub(super) timeout: Duration,
    pub(super) max_lines: usize,
    pub(super) max_bytes: usize,
}

pub(super) fn regex(key: &'static str, re: &str) -> Result<Regex, BuildError> {
    Regex::new(re).map_err(|e| BuildError::key(key, format!("not a regular expression: {e}")))
}

impl MultilineConfig {
    /// Check the rules (`max_line`: the source's, the default
    /// `max_bytes`).
    pub fn build(&self, max_line: usize) -> Result<Multiline, BuildError> {
        let rule = match (&self.start, &self.continue_, self.preset) {
            (None, None, Some(p)) => Rule::Preset(p),
            (Some(s), None, None) => Rule::Start(regex("multiline.start", s)?),
            (None, Some(c), None) => Rule::Continue(regex("multiline.continue", c)?),
            (Some(s), Some(c), None) => Rule::StartAndContinue(
                regex("multiline.start", s)?,
                regex("multiline.continue", c)?,
            ),
            (None, None, None) => {
                return Err(BuildError::key(
                    "multiline",
                    "give `start`, `continue` or `preset` (python, java, go)",
                ))
            }
            (_, _, Some(_)) => {
                return Err(BuildError::key(
                    "multiline.preset",
                    "a preset has its own rules: give `preset` or `start`/`continue`, not both",
                ))
            }
        };
        if self.max_lines == 0 || self.max_lines > 100_000 {
            return Err(BuildError::key(
                "multiline.max_lines",
                "must be between 1 and 100000",
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err(BuildError::key(
                "multiline.timeout",
                "must be between 1ms and 1h",
            ));
        }
        let max_bytes = self.max_bytes.unwrap_or(max_line);
        if max_bytes == 0 || max_bytes > 1 << 30 {
            return Err(BuildError::key(
                "multiline.max_bytes",
                "must be between 1 byte and 1GiB",
            ));
        }
        Ok(Multiline {
            rule,
            timeout: self.timeout,
            max_lines: self.max_lines,
            max_bytes,
        })
    }
}

/// Whether `line` continues a record whose last line is `prev` (under a
/// preset, `traceback`: the record holds a Python traceback).
pub(super) fn continues(rule: &Rule, line: &str, prev: &str, traceback: bool) -> bool {
    match rule {
        Rule::Start(s) => !s.is_match(line),
        Rule::Continue(c) => c.is_match(line),
        Rule::StartAndContinue(s, c) => c.is_match(line) && !s.is_match(line),
        Rule::Preset(Preset::Python) => {
            let indented = |l: &str| l.starts_with([' ', '\t']);
            indented(line)
                || line.starts_with("Traceback (most recent call last):")
                || line.starts_with("During handling of the above exception")
                || line.starts_with("The above exception was the direct cause")
                || (traceback && line.trim().is_empty())
                // The exception's own line ends the frames: `ValueError: x`.
                || (traceback && indented(prev) && exception_line(line))
                // Chained tracebacks: the blank line after one.
                || (traceback && prev.trim().is_empty() && line.starts_with("Traceback"))
        }
        Rule::Preset(Preset::Java) => {
            line.starts_with([' ', '\t'])
                || line.starts_with("Caused by:")
                || line.starts_with("Suppressed:")
                || java_exception_line(line)
        }
        Rule::Preset(Preset::Go) => {
            line.starts_with([' ', '\t'])
                || line.trim().is_empty()
                || line.starts_with("goroutine ")
                || line.starts_with("created by ")
                || line.starts_with("[signal ")
                || line.starts_with("exit status ")
                || line.starts_with("panic: ") && prev.trim_start().starts_with("panic: ")
                || go_function_line(line)
        }
    }
}

/// `ValueError: bad`, `KeyError`, `mod.sub.Error: x`.
pub(super) fn exception_line(line: &str) -> bool {
    let name_end = line.find(':').unwrap_or(line.len());
    let name = &line[..name_end];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
}

/// `java.lang.IllegalStateException: boom` (a dotted class name ending in
/// Exception, Error or Throwable).
pub(super) fn java_exception_line(line: &str) -> bool {
    let name = line.split([':', ' ']).next().unwrap_or("");
    name.contains('.')
        && (name.ends_with("Exception") || name.ends_with("Error") || name.ends_with("Throwable"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'$')
}

/// `main.main()`, `main.(*T).run(0x1, ...)`, `runtime/debug.Stack(...)`.
pub(super) fn go_function_line(line: &str) -> bool {
    let Some(open) = line.find('(') else {
        return false;
    };
    let name = &line[..open];
    line.ends_with(')') && name.contains('.') && !name.contains(' ') && !name.is_empty()
        || line.contains(".(*") && line.ends_with(')') && !line.contains(' ')
}
