//! Encryption at rest in the age format (age-encryption.org/v1), which the
//! `age` command-line tool and libraries in many languages read: X25519
//! recipients (`age1...`, public keys) to write, identities
//! (`AGE-SECRET-KEY-1...`) to read.
//!
//! A pipeline holds only recipients: what a file sink encrypts, sluice
//! itself cannot read. Identities are given to the readers (the file
//! source, `sluice timeline`, `sluice decrypt-fields`) by file.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The public keys a file is encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
    /// Hex of the first 8 bytes of SHA-256 over the sorted keys: which
    /// list is in use, in metrics and `/stats`, without printing it.
    pub fingerprint: String,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Recipients({} keys, {})",
            self.keys.len(),
            self.fingerprint
        )
    }
}

impl PartialEq for Recipients {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Recipients {
    /// Parse `age1...` keys (blank lines and `#` comments skipped, as in a
    /// recipients file). The error names the entry that is not one.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut keys = Vec::new();
        let mut texts = Vec::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            if entry.starts_with("AGE-SECRET-KEY-") {
                return Err(format!(
                    "entry {} is a secret key (AGE-SECRET-KEY-...): give its public key (`age-keygen -y FILE` prints it); a pipeline holds public keys only",
                    i + 1
                ));
            }
            let key = age::x25519::Recipient::from_str(entry).map_err(|e| {
                format!(
                    "entry {} ({entry:?}) is not an age X25519 recipient (age1...): {e}",
                    i + 1
                )
            })?;
            texts.push(key.to_string());
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no recipients: give at least one age1... public key".into());
        }
        texts.sort();
        texts.dedup();
        let digest = Sha256::digest(texts.join("\n").as_bytes());
        let fingerprint = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { keys, fingerprint })
    }

    /// Read a recipients file (one key per line, `#` comments).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(text.lines()).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A new age stream to these recipients, written into `out`.
    pub fn encrypt<W: std::io::Write>(
        &self,
        out: W,
    ) -> std::io::Result<age::stream::StreamWriter<W>> {
        let encryptor =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(std::io::Error::other)?;
        encryptor.wrap_output(out)
    }
}

/// Secret keys to read age files with.
#[derive(Clone)]
pub struct Identities(Arc<Vec<age::x25519::Identity>>);

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities({} keys)", self.0.len())
    }
}

/// The same keys loaded once (configs compare by value for reloads; the
/// file is what a pipeline names, and it is compared there).
impl PartialEq for Identities {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Identities {
    /// Read an identity file as `age-keygen` writes it (`#` comments, one
    /// `AGE-SECRET-KEY-1...` per line). Errors name the line, never its text.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read identity file {}: {e}", path.display()))?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = age::x25519::Identity::from_str(line).map_err(|_| {
                format!(
                    "{} line {}: not an age X25519 identity (AGE-SECRET-KEY-1...)",
                    path.display(),
                    i + 1
                )
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(format!("{}: no identity in it", path.display()));
        }
        Ok(Self(Arc::new(keys)))
    }

    /// The plaintext of the age stream `input`. A stream cut short (a
    /// writer killed) reads up to its last complete chunk, then fails with
    /// "age file is truncated". A header with more than
    /// [`MAX_STANZAS`] recipient stanzas, or longer than [`MAX_HEADER`]
    /// bytes, is refused before any is tried: each costs a key agreement
    /// per identity, and sluice writes a handful.
    pub fn decrypt<R: Read>(&self, input: R) -> std::io::Result<impl Read> {
        let mut input = BufReader::new(input);
        let header = read_header(&mut input)?;
        let decryptor =
            age::Decryptor::new_buffered(BufReader::new(std::io::Cursor::new(header).chain(input)))
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        decryptor
            .decrypt(self.0.iter().map(|k| k as &dyn age::Identity))
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("cannot decrypt: {e} (is it encrypted to another key?)"),
                )
            })
    }
}

/// The most recipient stanzas an age header may have to be read.
pub const MAX_STANZAS: usize = 64;
/// The longest age header read (a stanza of X25519 is about 110 bytes).
pub const MAX_HEADER: usize = 64 << 10;

/// The header of a binary age file, up to and including its `---` MAC
/// line, checked for its number of stanzas and its size.
fn read_header(input: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut header = Vec::new();
    let mut stanzas = 0usize;
    loop {
        let start = header.len();
        let n = (&mut *input)
            .take((MAX_HEADER + 1 - start.min(MAX_HEADER)) as u64)
            .read_until(b'\n', &mut header)?;
        if header.len() > MAX_HEADER {
            return Err(invalid(format!(
                "the age header is longer than {MAX_HEADER} bytes: not read"
            )));
        }
        let line = &header[start..];
        if n == 0 || !line.ends_with(b"\n") {
            // Cut short, or not age at all: age itself says which.
            return Ok(header);
        }
        if line.starts_with(b"-> ") {
            stanzas += 1;
            if stanzas > MAX_STANZAS {
                return Err(invalid(format!(
                    "the age header has more than {MAX_STANZAS} recipient stanzas: not read"
                )));
            }
        }
        if line.starts_with(b"---") {
            return Ok(header);
        }
    }
}

/// How a log file is packed, from its name: `.age` (encrypted), `.gz`,
/// `.gz.age` (compressed, then encrypted), or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packing {
    pub encrypted: bool,
    pub compressed: bool,
}

impl Packing {
    pub fn of(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let (encrypted, rest) = match name.strip_suffix(".age") {
            Some(rest) => (true, rest),
            None => (false, name.as_str()),
        };
        Self {
            encrypted,
            compressed: rest.ends_with(".gz"),
        }
    }

    /// Read whole rather than tailed (positions on disk are not positions
    /// in the lines).
    pub fn packed(self) -> bool {
        self.encrypted || self.compressed
    }

    /// The name without `.gz` and `.age`.
    pub fn strip(name: &str) -> &str {
        let name = name.strip_suffix(".age").unwrap_or(name);
        name.strip_suffix(".gz").unwrap_or(name)
    }
}

/// The lines of `input`, a file named `path`: decrypted with `identities`
/// if it is `.age`, decompressed if it is `.gz` (or `.gz.age`).
pub fn unpack(
    path: &Path,
    input: impl Read + Send + 'static,
    identities: Option<&Identities>,
) -> std::io::Result<Box<dyn BufRead + Send>> {
    let packing = Packing::of(path);
    let decrypted: Box<dyn Read + Send> = if packing.encrypted {
        let ids = identities.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is encrypted (age): give an identity file to read it",
                    path.display()
                ),
            )
        })?;
        Box::new(ids.decrypt(input)?)
    } else {
        Box::new(input)
    };
    let reader: Box<dyn Read + Send> = if packing.compressed {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(decrypted)))
    } else {
        decrypted
    };
    Ok(Box::new(BufReader::with_capacity(256 * 1024, reader)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pair() -> (String, age::x25519::Identity) {
        let id = age::x25519::Identity::generate();
        (id.to_public().to_string(), id)
    }

    #[test]
    fn recipients_name_the_bad_entry_and_refuse_secret_keys() {
        let (public, id) = pair();
        let r = Recipients::parse(["# ours", "", public.as_str()]).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.fingerprint.len(), 16);
        let e = Recipients::parse([public.as_str(), "age1nope"]).unwrap_err();
        assert!(e.contains("entry 2") && e.contains("age1nope"), "{e}");
        use age::secrecy::ExposeSecret;
        let secret = id.to_string();
        let e = Recipients::parse([secret.expose_secret()]).unwrap_err();
        assert!(
            e.contains("secret key") && !e.contains(secret.expose_secret()),
            "{e}"
        );
        assert!(Recipients::parse(["# only a comment"]).is_err());
        // The same keys in any order: the same fingerprint.
        let (other, _) = pair();
        let a = Recipients::parse([public.as_str(), other.as_str()]).unwrap();
        let b = Recipients::parse([other.as_str(), public.as_str()]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_ne!(a.fingerprint, r.fingerprint);
    }

    /// #36: a `.age` file with 10,000 X25519 stanzas took 22 s to refuse.
    /// Past MAX_STANZAS the header is refused before any key agreement.
    #[test]
    fn headers_with_thousands_of_stanzas_are_refused_unread() {
        let (public, id) = pair();
        let ids = Identities(Arc::new(vec![id]));
        let r = Recipients::parse([public.as_str()]).unwrap();
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(b"secret line\n").unwrap();
        let sealed = w.finish().unwrap();
        // Its own stanza, repeated: the header is well formed, only long.
        let text = sealed.clone();
        let first = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mac = text.windows(4).position(|w| w == b"\n---").unwrap() + 1;
        let stanza = &text[first..mac];
        let mut hostile = text[..first].to_vec();
        for _ in 0..10_000 {
            hostile.extend_from_slice(stanza);
        }
        hostile.extend_from_slice(&text[mac..]);
        let started = std::time::Instant::now();
        let e = ids.decrypt(&hostile[..]).err().unwrap();
        assert!(
            e.to_string().contains("stanzas") || e.to_string().contains("longer"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // 64 stanzas are still read (a header with many recipients; the
        // age crate adds a grease stanza of its own to each file).
        let per = stanza.windows(3).filter(|w| w == b"-> ").count();
        let mut many = text[..first].to_vec();
        for _ in 0..MAX_STANZAS / per {
            many.extend_from_slice(stanza);
        }
        many.extend_from_slice(&text[mac..]);
        let e = ids
            .decrypt(&many[..])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("stanzas"), "{e}");
        let mut back = Vec::new();
        ids.decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, b"secret line\n");
    }

    #[test]
    fn round_trip_and_truncation_reads_whole_chunks() {
        let (public, id) = pair();
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("key.txt");
        use age::secrecy::ExposeSecret;
        std::fs::write(
            &key,
            format!("# test\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        let ids = Identities::from_file(&key).unwrap();
        let r = Recipients::parse([public.as_str()]).unwrap();
        let plain: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut w = r.encrypt(Vec::new()).unwrap();
        w.write_all(&plain).unwrap();
        let sealed = w.finish().unwrap();
        let mut back = Vec::new();
        ids.decrypt(&sealed[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);
        // Cut in the third chunk, or after the second: the first two read,
        // then an error.
        let header = sealed.len() - plain.len() - 16 * plain.len().div_ceil(64 << 10);
        for extra in [100, 0] {
            let cut = &sealed[..header + 2 * ((64 << 10) + 16) + extra];
            let mut partial = Vec::new();
            let mut reader = ids.decrypt(cut).unwrap();
            let mut buf = [0u8; 4096];
            let err = loop {
                match reader.read(&mut buf) {
                    Ok(0) => panic!("a truncated stream must not end cleanly"),
                    Ok(n) => partial.extend_from_slice(&buf[..n]),
                    Err(e) => break e,
                }
            };
            if extra == 0 {
                assert!(err.to_string().contains("truncated"), "{err}");
            }
            assert_eq!(partial, plain[..2 * (64 << 10)]);
        }
        // Another key cannot read it.
        let (_, stranger) = pair();
        std::fs::write(&key, stranger.to_string().expose_secret()).unwrap();
        let other = Identities::from_file(&key).unwrap();
        assert!(other.decrypt(&sealed[..]).is_err());
        std::fs::write(&key, "AGE-SECRET-KEY-1BAD\n").unwrap();
        let e = Identities::from_file(&key).unwrap_err();
        assert!(e.contains("line 1") && !e.contains("BAD"), "{e}");
    }

    #[test]
    fn packing_from_the_name() {
        let p = |n: &str| Packing::of(Path::new(n));
        assert_eq!(
            p("a.log.1.gz.age"),
            Packing {
                encrypted: true,
                compressed: true
            }
        );
        assert!(p("a.log.age").encrypted && !p("a.log.age").compressed);
        assert!(!p("a.log").packed());
        assert_eq!(Packing::strip("a.log.3.gz.age"), "a.log.3");
    }
}
