//! How a file source knows a file: by its device and inode and a hash of
//! its first bytes, not by its name. A rotated file keeps its identity; a
//! new file that reuses an inode does not inherit a position.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes of a file's start that identify it.
pub const FINGERPRINT_BYTES: usize = 256;

/// A file's identity on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// A hash of a file's first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fingerprint {
    pub len: usize,
    pub hash: u64,
}

impl Fingerprint {
    pub fn of(bytes: &[u8]) -> Self {
        // FNV-1a: tiny, stable across versions, good enough for 256 bytes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x100_0000_01b3);
        }
        Self {
            len: bytes.len(),
            hash,
        }
    }
}

/// A copy of a truncated file beside it: same first bytes, at least as long
/// as what we had read.
pub fn find_copy(path: &Path, id: FileId, fp: Fingerprint, at: u64) -> Option<PathBuf> {
    if fp.len == 0 {
        return None;
    }
    let dir = path.parent()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let meta = e.metadata().ok()?;
        if !meta.is_file() || file_id(&meta) == id || meta.len() < at {
            return None;
        }
        let f = File::open(e.path()).ok()?;
        (fingerprint_or_empty(&f, fp.len) == fp).then(|| e.path())
    })
}

/// The fingerprint of `file`'s first `n` bytes (fewer if it is shorter).
pub fn fingerprint(file: &File, n: usize) -> std::io::Result<Fingerprint> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = read_at(file, &mut buf[got..], got as u64)?;
        if k == 0 {
            break;
        }
        got += k;
    }
    Ok(Fingerprint::of(&buf[..got]))
}

/// The same, or a fingerprint that matches nothing when the file cannot be read.
pub fn fingerprint_or_empty(file: &File, n: usize) -> Fingerprint {
    fingerprint(file, n).unwrap_or(Fingerprint {
        len: usize::MAX,
        hash: 0,
    })
}

#[cfg(unix)]
pub fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, at)
}

#[cfg(unix)]
/// The device and inode of a file.
pub fn file_id(m: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}
