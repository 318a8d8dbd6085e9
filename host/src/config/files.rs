//! A pipeline in several files: `sluice run /etc/sluice/` reads every
//! `*.toml` of the folder in name order and merges them into one pipeline.
//! `sources`, `transforms` and `sinks` merge by name (a name defined in two
//! files is an error naming both places), `[[tests]]` add up, and any other
//! top-level key (`batch`, `admin`, `reload`, `shutdown_timeout`) may be
//! set in one file only.
//!
//! Each file is parsed on its own (so a syntax error is reported in its
//! file), then its spans are moved to its place in the [`Locator`]'s
//! concatenation of all files, which maps them back to file and line.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, Locator};

/// The files of a pipeline: `path` itself, or the `*.toml` files of the
/// folder `path`, in name order.
pub fn pipeline_files(path: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| anyhow::anyhow!("cannot read pipeline file {}: {e}", p.display()))
    };
    if !path.is_dir() {
        return Ok(vec![(path.to_path_buf(), read(path)?)]);
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| anyhow::anyhow!("cannot read pipeline folder {}: {e}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    paths.sort();
    anyhow::ensure!(
        !paths.is_empty(),
        "the pipeline folder {} holds no *.toml file",
        path.display()
    );
    paths
        .into_iter()
        .map(|p| read(&p).map(|t| (p, t)))
        .collect()
}

/// Parse every file and merge them into one document whose spans index
/// `locator`'s text.
pub fn parse_merged<'i>(
    files: &'i [(PathBuf, String)],
    locator: &Locator,
) -> Result<Spanned<DeTable<'i>>, ConfigError> {
    let mut merged: Option<Spanned<DeTable<'i>>> = None;
    for (i, (path, text)) in files.iter().enumerate() {
        let doc = DeTable::parse(text).map_err(|e| Locator::new(path, text).from_toml(&e, ""))?;
        let start = locator.start_of(i);
        let span = doc.span();
        let doc = Spanned::new(
            span.start + start..span.end + start,
            shift_table(doc.into_inner(), start),
        );
        merged = Some(match merged {
            None => doc,
            Some(mut into) => {
                merge(into.get_mut(), doc.into_inner(), locator)?;
                into
            }
        });
    }
    Ok(merged.expect("at least one file"))
}

const SECTIONS: [&str; 3] = ["sources", "transforms", "sinks"];

fn merge<'i>(
    into: &mut DeTable<'i>,
    from: DeTable<'i>,
    locator: &Locator,
) -> Result<(), ConfigError> {
    for (key, value) in from {
        let name = key.get_ref().to_string();
        let Some((first_key, existing)) =
            into.iter_mut().find(|(k, _)| k.get_ref() == key.get_ref())
        else {
            into.insert(key, value);
            continue;
        };
        let first = first_key.span();
        let span = key.span();
        match (existing.get_mut(), value.into_inner()) {
            (DeValue::Table(have), DeValue::Table(new)) if SECTIONS.contains(&name.as_str()) => {
                for (k, v) in new {
                    if let Some((seen, _)) = have.iter().find(|(h, _)| h.get_ref() == k.get_ref()) {
                        let what = format!("{name}.{}", k.get_ref());
                        return Err(defined_twice(locator, seen.span(), k.span(), what));
                    }
                    have.insert(k, v);
                }
            }
            (DeValue::Array(have), DeValue::Array(new)) if name == "tests" => {
                for item in new {
                    have.push(item);
                }
            }
            _ => return Err(defined_twice(locator, first, span, name)),
        }
    }
    Ok(())
}

/// `what` set at `again`, after `first`: an error at `again` naming both.
fn defined_twice(
    locator: &Locator,
    first: std::ops::Range<usize>,
    again: std::ops::Range<usize>,
    what: String,
) -> ConfigError {
    let (file, line, column) = locator.place(first.start);
    let message = format!(
        "`{what}` is defined twice: first in {}:{line}:{column}",
        file.display()
    );
    locator.error(Some(again), what, message)
}

fn shift_table(table: DeTable<'_>, by: usize) -> DeTable<'_> {
    let mut out = DeTable::new();
    for (k, v) in table {
        let ks = k.span();
        out.insert(
            Spanned::new(ks.start + by..ks.end + by, k.into_inner()),
            shift_value(v, by),
        );
    }
    out
}

fn shift_value(value: Spanned<DeValue<'_>>, by: usize) -> Spanned<DeValue<'_>> {
    let span = value.span();
    let inner = match value.into_inner() {
        DeValue::Table(t) => DeValue::Table(shift_table(t, by)),
        DeValue::Array(mut a) => {
            // In place: the array keeps what it knows of itself (an array
            // of tables or not).
            for item in a.iter_mut() {
                let taken = std::mem::replace(item, Spanned::new(0..0, DeValue::Boolean(false)));
                *item = shift_value(taken, by);
            }
            DeValue::Array(a)
        }
        other => other,
    };
    Spanned::new(span.start + by..span.end + by, inner)
}
