//! Secrets a pipeline was given (from `${file:...}`, from a variable whose
//! name says it is one, from the `*_env` keys of authentication), and the
//! one function that keeps them out of what sluice prints: its logs, its
//! errors, the admin port's answers.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is shown as.
pub const MASK: &str = "***";

/// Secrets shorter than this are not redacted: masking every `a` of the
/// logs would hide more than it protects, and such a secret protects
/// nothing anyway.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Every form in which sluice could print `value`: as it is, escaped in
/// a JSON string (a `--log-format json` line, a `/reload` answer), in a
/// Rust debug string (`{:?}` of an error), percent-encoded (in a URL),
/// and each escape inside a JSON string again (an error quoted in a JSON
/// answer). A secret with `"` or `\` differs in each.
fn forms(value: &str) -> Vec<String> {
    fn json(v: &str) -> String {
        let quoted = serde_json::to_string(v).unwrap_or_default();
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(&quoted)
            .to_string()
    }
    fn debug(v: &str) -> String {
        let quoted = format!("{v:?}");
        quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(&quoted)
            .to_string()
    }
    let url = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let url_plus = url.replace("%20", "+");
    let once = [json(value), debug(value), url, url_plus];
    let twice: Vec<String> = once.iter().flat_map(|f| [json(f), debug(f)]).collect();
    let mut out = vec![value.to_string()];
    for f in once.into_iter().chain(twice) {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// Remember `value` as a secret (for the rest of the process), in every
/// form sluice could print it in.
pub fn register(value: &str) {
    if value.len() < MIN_LEN {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms(value) {
        if !s.contains(&form) {
            s.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    s.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// Whether any secret is known (callers skip work when none is).
pub fn any() -> bool {
    !SECRETS.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// `text` with every known secret replaced by [`MASK`].
pub fn redact(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() || !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

/// Whether a variable or key name says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "API_KEY",
        "APIKEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

/// A writer that redacts secrets from what goes through it (sluice's log
/// lines: `tracing` writes one whole event per call).
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !any() {
            return self.0.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_registered_secrets_longest_first() {
        register("hunter2-long-secret");
        register("hunter2");
        register("abc"); // too short to redact
        assert_eq!(
            redact("url redis://:hunter2-long-secret@host and hunter2, abc"),
            "url redis://:***@host and ***, abc"
        );
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }

    /// #36: a secret with a quote and a backslash leaked JSON-escaped in
    /// `--log-format json` lines and `/reload` answers.
    #[test]
    fn redacts_escaped_forms_too() {
        let secret = "Qz7\"pa\\ss9wd";
        register(secret);
        let as_json = serde_json::to_string(secret).unwrap();
        assert_eq!(redact(&as_json), "\"***\"");
        assert_eq!(redact(&format!("{secret:?}")), "\"***\"");
        let error = format!("cannot connect with {secret:?}");
        let answer = serde_json::json!({ "error": error }).to_string();
        assert!(!redact(&answer).contains("pa"), "{}", redact(&answer));
        let url = format!(
            "https://u:{}@host",
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        );
        assert_eq!(redact(&url), "https://u:***@host");
        assert_eq!(redact(&format!("raw {secret} raw")), "raw *** raw");
    }

    #[test]
    fn names_that_say_secret() {
        assert!(is_secret_name("REDIS_PASSWORD"));
        assert!(is_secret_name("es_api_key"));
        assert!(is_secret_name("LOKI_TOKEN"));
        assert!(!is_secret_name("LOG_DIR"));
    }
}
