//! Configuration errors that point at the file, line, column and key.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// A pipeline file is invalid. Displays as
/// `pipeline.toml:12:9: transforms.keep.inputs: unknown input "gne"`.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {key}: {message}", file.display())]
pub struct ConfigError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line of the offending key or value.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted path of the key: `sources.gen.count`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Turns byte spans of a pipeline into [`ConfigError`]s. A pipeline of
/// several files is seen as their concatenation, each file starting on a
/// line of its own; spans index that text and map back to file and line.
#[derive(Debug, Clone)]
pub struct Locator {
    /// Each file and where it starts in `text`.
    files: Vec<(PathBuf, usize)>,
    text: String,
}

impl Locator {
    pub fn new(file: &Path, text: &str) -> Self {
        Self {
            files: vec![(file.to_path_buf(), 0)],
            text: text.to_string(),
        }
    }

    /// The locator of a pipeline made of `files`, in this order.
    pub fn of_files(files: &[(PathBuf, String)]) -> Self {
        let mut text = String::new();
        let mut starts = Vec::new();
        for (path, t) in files {
            starts.push((path.clone(), text.len()));
            text.push_str(t);
            if !t.ends_with('\n') {
                text.push('\n');
            }
        }
        Self {
            files: starts,
            text,
        }
    }

    /// The (first) file; relative paths in a pipeline are relative to its folder.
    pub fn file(&self) -> &Path {
        &self.files[0].0
    }

    /// Where the `i`-th file starts in the text.
    pub fn start_of(&self, i: usize) -> usize {
        self.files[i].1
    }

    /// The file holding `offset`, and where it starts and ends.
    fn segment(&self, offset: usize) -> (&Path, usize, usize) {
        let i = self
            .files
            .iter()
            .rposition(|(_, start)| *start <= offset)
            .unwrap_or(0);
        let end = self.files.get(i + 1).map_or(self.text.len(), |f| f.1);
        (&self.files[i].0, self.files[i].1, end)
    }

    /// 1-based line and column of a byte offset, in its file.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let (_, line, column) = self.place(offset);
        (line, column)
    }

    /// The file, 1-based line and column of a byte offset.
    pub fn place(&self, offset: usize) -> (&Path, usize, usize) {
        let offset = offset.min(self.text.len());
        let (file, start, _) = self.segment(offset);
        let before = &self.text[start..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (file, line, column)
    }

    /// An error at `span` about `key`.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (file, line, column) = match span {
            Some(s) => self.place(s.start),
            None => (self.file(), 1, 1),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// Convert an error of the TOML deserializer. `prefix` is the dotted path
    /// of the table being read (`sources.gen`); the key inside it is taken
    /// from the message (`unknown field `x``) or from the line at the span
    /// (`count = "ten"`), because serde's messages do not always name it.
    pub fn from_toml(&self, err: &toml::de::Error, prefix: &str) -> ConfigError {
        let message = err.message().trim().to_string();
        // An unknown field's span covers its whole table: point at the key.
        let span = match backticked(&message, "unknown field `") {
            Some(field) => self.find_key_line(err.span(), field).or(err.span()),
            None => err.span(),
        };
        let mut path: Vec<String> = Vec::new();
        match span.as_ref().and_then(|s| self.header_before(s.start)) {
            Some(header) => path.push(header),
            None if !prefix.is_empty() => path.push(prefix.to_string()),
            None => {}
        }
        if let Some(parent) = span.as_ref().and_then(|s| self.inline_parent(s.start)) {
            path.push(parent);
        }
        if let Some(key) = self.key_at(span.clone(), &message) {
            // An unknown table is reported at its own header.
            if path
                .last()
                .is_none_or(|h| h != &key && !h.ends_with(&format!(".{key}")))
            {
                path.push(key);
            }
        }
        let key = if path.is_empty() {
            "(document)".to_string()
        } else {
            path.join(".")
        };
        self.error(span, key, message)
    }

    /// The `[table.header]` in force at `offset`, if any.
    fn header_before(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let (_, start, _) = self.segment(offset);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        self.text[start..end]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .map(|l| {
                let inner = l.trim_start_matches('[');
                let inner = &inner[..inner.find(']').unwrap_or(inner.len())];
                inner
                    .split('.')
                    .map(|p| p.trim().trim_matches('"'))
                    .collect::<Vec<_>>()
                    .join(".")
            })
    }

    /// For a key inside an inline table (`batch = { max_events = 3 }`),
    /// the inline table's key.
    fn inline_parent(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let before = &self.text[line_start..offset];
        let brace = before.rfind('{')?;
        let head = before[..brace].trim_end().strip_suffix('=')?.trim_end();
        let key = head
            .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()?;
        (!key.is_empty()).then(|| key.trim_matches('"').to_string())
    }

    fn key_at(&self, span: Option<Range<usize>>, message: &str) -> Option<String> {
        if let Some(field) = backticked(message, "unknown field `")
            .or_else(|| backticked(message, "missing field `"))
        {
            return Some(field.to_string());
        }
        let span = span?;
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let before = &self.text[line_start..start];
        if before.trim_start().starts_with('[') {
            return None;
        }
        // `key = value` on one line, or `{ key = value }` inline.
        let eq = before.rfind('=')?;
        let key_part = before[..eq].trim_end();
        let key = key_part
            .rsplit(|c: char| c == '{' || c == ',' || c.is_whitespace())
            .next()?
            .trim_matches('"');
        (!key.is_empty()).then(|| key.to_string())
    }

    fn find_key_line(&self, span: Option<Range<usize>>, field: &str) -> Option<Range<usize>> {
        let start = span.map_or(0, |s| s.start).min(self.text.len());
        let (_, _, end) = self.segment(start);
        let mut offset = start;
        for line in self.text[start..end].split_inclusive('\n') {
            let t = line.trim_start();
            if offset > start && t.starts_with('[') {
                break;
            }
            if t.starts_with(field) && t[field.len()..].trim_start().starts_with('=') {
                let indent = line.len() - t.len();
                return Some(offset + indent..offset + indent + field.len());
            }
            // Inline tables: `batch = { max_evnts = 3 }`.
            if let Some(i) = line
                .find(&format!("{field} ="))
                .or_else(|| line.find(&format!("{field}=")))
            {
                let before = line[..i].chars().last();
                if matches!(before, Some(' ' | '{' | ',')) {
                    return Some(offset + i..offset + i + field.len());
                }
            }
            offset += line.len();
        }
        None
    }
}

fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(&rest[..rest.find('`')?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let l = Locator::new(Path::new("p.toml"), "a = 1\nbb = 2\n");
        assert_eq!(l.position(0), (1, 1));
        assert_eq!(l.position(6), (2, 1));
        assert_eq!(l.position(9), (2, 4));
    }
}
