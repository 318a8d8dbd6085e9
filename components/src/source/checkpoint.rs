//! Where a file source has read to, saved once the events are delivered.
//!
//! A file is known by its device and inode and a fingerprint of its first
//! bytes, not by its name: a rotated file keeps its identity, and a new
//! file that reuses an inode does not inherit a position. Each batch a
//! source sends carries an [`Ack`] whose callback marks it delivered; the
//! positions of a batch are applied once it and every batch before it are
//! delivered, so a saved position never runs ahead of what the sinks have.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::fingerprint::{FileId, Fingerprint};
use crate::base::ack::Ack;

/// One saved position.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Saved {
    pub id: FileId,
    pub fingerprint: Fingerprint,
    /// Bytes delivered: reading resumes here.
    pub offset: u64,
    /// The name it had last (for people reading the file).
    pub path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
struct Document {
    files: Vec<Saved>,
}

/// A batch's positions, waiting for its delivery.
struct InFlight {
    marks: Vec<(FileId, u64)>,
    delivered: bool,
}

/// The positions of one source: in flight and delivered.
#[derive(Default)]
struct Book {
    /// Batches sent and not yet applied, oldest first.
    queue: VecDeque<InFlight>,
    /// Sequence number of `queue[0]`.
    first: u64,
    /// Delivered positions.
    offsets: HashMap<FileId, u64>,
    /// Changed since the last save.
    dirty: bool,
}

impl Book {
    fn delivered(&mut self, seq: u64) {
        if let Some(b) = seq
            .checked_sub(self.first)
            .and_then(|i| self.queue.get_mut(i as usize))
        {
            b.delivered = true;
        }
        while self.queue.front().is_some_and(|b| b.delivered) {
            let b = self.queue.pop_front().expect("checked above");
            self.first += 1;
            for (id, offset) in b.marks {
                self.offsets.insert(id, offset);
            }
            self.dirty = true;
        }
    }
}

/// The checkpoint file of a source and its positions.
#[derive(Clone)]
pub struct Checkpoints {
    path: PathBuf,
    book: Arc<Mutex<Book>>,
    /// What was loaded at start, to resume from.
    loaded: Arc<Vec<Saved>>,
}

impl Checkpoints {
    /// Load `path` (a missing file is an empty one).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let loaded = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<Document>(&bytes)
                    .with_context(|| format!("checkpoint file {} is damaged", path.display()))?
                    .files
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut book = Book::default();
        for s in &loaded {
            book.offsets.insert(s.id, s.offset);
        }
        Ok(Self {
            path: path.to_path_buf(),
            book: Arc::new(Mutex::new(book)),
            loaded: Arc::new(loaded),
        })
    }

    /// The positions loaded at start.
    pub fn saved(&self) -> impl Iterator<Item = &Saved> {
        self.loaded.iter()
    }

    /// Where to resume `id`, if its saved fingerprint is `check(len)`'s.
    pub fn resume(&self, id: FileId, check: impl FnOnce(usize) -> Fingerprint) -> Option<u64> {
        let saved = self.loaded.iter().find(|s| s.id == id)?;
        (check(saved.fingerprint.len) == saved.fingerprint).then_some(saved.offset)
    }

    /// A token for a batch holding lines up to these positions.
    pub fn in_flight(&self, marks: Vec<(FileId, u64)>) -> Arc<Ack> {
        let mut book = self.book.lock().expect("checkpoint lock");
        let seq = book.first + book.queue.len() as u64;
        book.queue.push_back(InFlight {
            marks,
            delivered: false,
        });
        drop(book);
        let book = self.book.clone();
        Ack::new(move |_delivered| {
            // Undelivered events went to the dead letters or were given up
            // by a sink: reading them again would not change that.
            book.lock().expect("checkpoint lock").delivered(seq);
        })
    }

    /// Positions with nothing in flight for them (lines that made no event).
    pub fn reached(&self, marks: Vec<(FileId, u64)>) {
        drop(self.in_flight(marks));
    }

    /// Forget a file (deleted and read to its end).
    pub fn forget(&self, id: FileId) {
        let mut book = self.book.lock().expect("checkpoint lock");
        book.offsets.remove(&id);
        book.dirty = true;
    }

    /// Batches not yet delivered.
    pub fn pending(&self) -> usize {
        self.book.lock().expect("checkpoint lock").queue.len()
    }

    /// The delivered position of `id`.
    pub fn offset(&self, id: FileId) -> Option<u64> {
        self.book
            .lock()
            .expect("checkpoint lock")
            .offsets
            .get(&id)
            .copied()
    }

    /// Write the delivered positions of `files` (identity, fingerprint,
    /// name) if they changed: to a temporary file, then renamed over.
    pub fn save(&self, files: &HashMap<FileId, (Fingerprint, PathBuf)>) -> anyhow::Result<()> {
        let doc = {
            let mut book = self.book.lock().expect("checkpoint lock");
            if !book.dirty {
                return Ok(());
            }
            book.dirty = false;
            let mut files: Vec<Saved> = book
                .offsets
                .iter()
                .filter_map(|(id, offset)| {
                    let (fingerprint, path) = files.get(id)?;
                    Some(Saved {
                        id: *id,
                        fingerprint: *fingerprint,
                        offset: *offset,
                        path: path.clone(),
                    })
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Document { files }
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(&doc)?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &text)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().with_context(|| format!("cannot save checkpoints to {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_apply_in_order_of_sending() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoints::load(&dir.path().join("c.json")).unwrap();
        let id = FileId { dev: 1, ino: 2 };
        let a = c.in_flight(vec![(id, 10)]);
        let b = c.in_flight(vec![(id, 20)]);
        drop(b);
        assert_eq!(
            c.offset(id),
            None,
            "the later batch must wait for the earlier"
        );
        drop(a);
        assert_eq!(c.offset(id), Some(20));
        assert_eq!(c.pending(), 0);
        let mut files = HashMap::new();
        files.insert(id, (Fingerprint::of(b"abc"), PathBuf::from("x.log")));
        c.save(&files).unwrap();
        let again = Checkpoints::load(&dir.path().join("c.json")).unwrap();
        assert_eq!(
            again.resume(id, |n| Fingerprint::of(&b"abcdef"[..n])),
            Some(20)
        );
        assert_eq!(again.resume(id, |n| Fingerprint::of(&b"xyz"[..n])), None);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A checkpoint file of any bytes loads or is refused as damaged.
        #[test]
        fn prop_damaged_checkpoints_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.json");
            std::fs::write(&path, &bytes).unwrap();
            let _ = Checkpoints::load(&path);
        }
    }
}
