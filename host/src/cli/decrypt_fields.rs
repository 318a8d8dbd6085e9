//! `sluice decrypt-fields`: restore the fields the `encrypt` plugin sealed,
//! in a JSON-lines file, with the identity that can open them.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use serde_json::Value;

use crate::base::crypt::Identities;

use sluice_common::sealed::{find, PREFIX};

#[derive(Debug, Args)]
pub struct DecryptFieldsArgs {
    /// The age identity file (`age-keygen -o key.txt`).
    #[arg(long, short = 'i', value_name = "KEYFILE")]
    pub identity: PathBuf,
    /// Only these fields (dotted paths, comma-separated); default: every
    /// string that holds a sealed value.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
    /// The JSON-lines file to read (default: stdin).
    pub input: Option<PathBuf>,
    /// Write here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn main(args: DecryptFieldsArgs) -> anyhow::Result<()> {
    let ids = Identities::from_file(&args.identity).map_err(anyhow::Error::msg)?;
    let input: Box<dyn BufRead> = match &args.input {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let (mut restored, mut failed) = (0u64, 0u64);
    for (n, line) in input.lines().enumerate() {
        let line = line.context("reading the input")?;
        let mut value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            // Not JSON: written as it is.
            Err(_) => {
                writeln!(out, "{line}")?;
                continue;
            }
        };
        let mut errors = Vec::new();
        if args.fields.is_empty() {
            walk(&mut value, "", &ids, &mut restored, &mut errors);
        } else {
            for path in &args.fields {
                if let Some(slot) = find(&mut value, path) {
                    if slot.as_str().is_some_and(|s| s.starts_with(PREFIX)) {
                        open_slot(slot, path, &ids, &mut restored, &mut errors);
                    }
                }
            }
        }
        for e in &errors {
            eprintln!("line {}: {e}", n + 1);
        }
        failed += errors.len() as u64;
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
    }
    out.flush()?;
    eprintln!("{restored} field(s) decrypted, {failed} could not be");
    anyhow::ensure!(
        failed == 0,
        "{failed} field(s) could not be decrypted (left as they were)"
    );
    Ok(())
}

/// Open every sealed string under `value`.
fn walk(value: &mut Value, at: &str, ids: &Identities, ok: &mut u64, errors: &mut Vec<String>) {
    match value {
        Value::String(s) if s.starts_with(PREFIX) => open_slot(value, at, ids, ok, errors),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                walk(v, &path, ids, ok, errors);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &format!("{at}[{i}]"), ids, ok, errors);
            }
        }
        _ => {}
    }
}

fn open_slot(
    slot: &mut Value,
    path: &str,
    ids: &Identities,
    ok: &mut u64,
    errors: &mut Vec<String>,
) {
    match open(slot.as_str().unwrap_or_default(), ids) {
        Ok(v) => {
            *slot = v;
            *ok += 1;
        }
        Err(e) => errors.push(format!("{path}: {e}")),
    }
}

/// The value sealed in `text`.
fn open(text: &str, ids: &Identities) -> anyhow::Result<Value> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("not base64")?;
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut ids.decrypt(&bytes[..])?, &mut plain)?;
    serde_json::from_str(&plain).context("the decrypted text is not JSON")
}
