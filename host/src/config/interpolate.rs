//! `${VAR}` in pipeline files: every string value may take variables from
//! the environment and secrets from files, resolved before anything else
//! reads the file (Vector's and Docker Compose's syntax).
//!
//! - `${VAR}`: the variable; an error if it is unset.
//! - `${VAR:-default}`: the default if `VAR` is unset or empty;
//!   `${VAR-default}`: only if unset.
//! - `${VAR:?message}`: an error with `message` if unset or empty;
//!   `${VAR?message}`: only if unset.
//! - `${file:PATH}`: the contents of a file (relative to the pipeline
//!   file), without its final newline: systemd credentials
//!   (`${file:${CREDENTIALS_DIRECTORY}/redis}`) and container secrets.
//! - `$$`: a `$`. A `$` not followed by `{` or `$` stays as it is.
//!
//! Values from files, and from variables whose name says they are secret
//! (`*PASSWORD*`, `*TOKEN*`, `*SECRET*`, `*API_KEY*`...), are registered
//! as secrets: sluice prints them as `***` from then on.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::base::secrets;

/// Where a value could not be resolved.
#[derive(Debug)]
pub struct InterpolationError {
    pub span: Range<usize>,
    pub key: String,
    pub message: String,
}

/// Resolve every string value of `doc` (keys are left alone).
pub fn interpolate(
    doc: &mut DeTable<'_>,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    walk_table(doc, "", dir, env)
}

fn walk_table(
    table: &mut DeTable<'_>,
    prefix: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    for (k, v) in table.iter_mut() {
        let key = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        walk_value(v, &key, dir, env)?;
    }
    Ok(())
}

fn walk_value(
    value: &mut Spanned<DeValue<'_>>,
    key: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolationError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => {
            let expanded = expand(s, dir, env).map_err(|message| InterpolationError {
                span,
                key: key.to_string(),
                message,
            })?;
            *s = expanded.into();
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                walk_value(item, key, dir, env)?;
            }
        }
        DeValue::Table(t) => walk_table(t, key, dir, env)?,
        _ => {}
    }
    Ok(())
}

/// Expand one string.
pub fn expand(
    text: &str,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = closing_brace(body)
                .ok_or_else(|| format!("`${{` without its `}}` in `{}`", secrets::redact(text)))?;
            out.push_str(&resolve(&body[..end], dir, env)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` that closes an expression, allowing `${...}`
/// nested in it (`${file:${CREDENTIALS_DIRECTORY}/redis}`).
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn resolve(expr: &str, dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if let Some(path) = expr.strip_prefix("file:") {
        let path = expand(path, dir, env)?;
        let full = dir.join(&path);
        let mut text = std::fs::read_to_string(&full)
            .map_err(|e| format!("`${{file:{path}}}`: cannot read {}: {e}", full.display()))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        secrets::register(&text);
        return Ok(text);
    }
    let name_end = expr
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(expr.len());
    let (name, op) = expr.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "`${{{expr}}}`: expected a variable name (letters, digits, `_`) or `file:PATH`"
        ));
    }
    let value = env(name);
    let secret = secrets::is_secret_name(name);
    let found = |v: String| {
        if secret {
            secrets::register(&v);
        }
        Ok(v)
    };
    let (op, arg) = if let Some(a) = op.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = op.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = op.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = op.strip_prefix('?') {
        ("?", a)
    } else if op.is_empty() {
        ("", "")
    } else {
        return Err(format!(
            "`${{{expr}}}`: unknown operator `{op}` (expected `:-`, `-`, `:?` or `?`)"
        ));
    };
    let empty = value.as_deref().is_none_or(str::is_empty);
    match (op, value) {
        ("", Some(v)) => found(v),
        ("", None) => Err(format!(
            "the variable `{name}` is not set (write `${{{name}:-default}}` for a default)"
        )),
        (":-", Some(v)) if !empty => found(v),
        (":-", _) | ("-", None) => expand(arg, dir, env),
        ("-", Some(v)) => found(v),
        (":?", Some(v)) if !empty => found(v),
        ("?", Some(v)) => found(v),
        (_, _) => Err(if arg.is_empty() {
            format!("the variable `{name}` is not set")
        } else {
            format!("the variable `{name}` is not set: {arg}")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            "DIR" => Some("secrets".into()),
            _ => None,
        }
    }

    fn x(text: &str) -> Result<String, String> {
        expand(text, Path::new("/nonexistent"), &env)
    }

    #[test]
    fn variables_defaults_and_escapes() {
        assert_eq!(
            x("redis://${HOST}:6379").unwrap(),
            "redis://db.internal:6379"
        );
        assert_eq!(x("${PORT:-6379}").unwrap(), "6379");
        assert_eq!(x("${EMPTY:-x}").unwrap(), "x");
        assert_eq!(x("${EMPTY-x}").unwrap(), "");
        assert_eq!(x("${PORT-x}").unwrap(), "x");
        assert_eq!(x("${PORT:-${HOST}}").unwrap(), "db.internal");
        assert_eq!(x("cost $$5, ^a$ stays").unwrap(), "cost $5, ^a$ stays");
        assert_eq!(x("no variables").unwrap(), "no variables");
    }

    #[test]
    fn unset_required_and_malformed_are_errors() {
        assert!(x("${PORT}").unwrap_err().contains("`PORT` is not set"));
        assert_eq!(
            x("${PORT:?the Redis port}").unwrap_err(),
            "the variable `PORT` is not set: the Redis port"
        );
        assert!(x("${EMPTY:?needed}").is_err());
        assert_eq!(x("${EMPTY?needed}").unwrap(), "");
        assert!(x("${HOST").unwrap_err().contains("without its"));
        assert!(x("${1X}").unwrap_err().contains("expected a variable name"));
        assert!(x("${HOST:+x}").unwrap_err().contains("unknown operator"));
    }

    #[test]
    fn files_are_read_trimmed_and_kept_secret() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("secrets")).unwrap();
        std::fs::write(d.path().join("secrets/redis"), "s3cr3t-from-file\n").unwrap();
        let got = expand("redis://:${file:${DIR}/redis}@h", d.path(), &env).unwrap();
        assert_eq!(got, "redis://:s3cr3t-from-file@h");
        assert_eq!(secrets::redact(&got), "redis://:***@h");
        let e = expand("${file:missing}", d.path(), &env).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
