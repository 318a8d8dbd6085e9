//! The disk buffer's storage, measured against another candidate on this
//! machine (`cargo bench -p sluice-buffer --bench storage`, in `just
//! bench`): sluice's own segment log (this crate) and `redb` (a well-kept
//! embedded B-tree store with checksums and copy-on-write commits).
//!
//! For each: 200-byte events in batches of 1,024, one record (or one
//! key) per batch, synced every 4 batches (a commit with
//! `Durability::Immediate` for redb), then read back and deleted as a sink
//! would acknowledge them. Then crash behaviour: a child process writes as
//! fast as it can and is killed with SIGKILL after 300-700 ms, five times;
//! the store is opened again (timed) and read through, and every record
//! must be intact. Last, recovery of a 1 GiB segment log left as `kill -9`
//! leaves it (not closed): the time `Buffer::open` takes.
//!
//! Environment: `SLUICE_BENCH_EVENTS` (default 1,000,000).

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};
use sluice_buffer::Buffer;

const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");
const EVENT: usize = 200;
const BATCH: usize = 1024;
const GROUP: usize = 4;

fn batch(seq: u64) -> (Vec<u8>, Vec<u32>) {
    let mut data = Vec::with_capacity(BATCH * EVENT);
    let mut ends = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let start = data.len();
        data.extend_from_slice(
            format!("{{\"seq\":{},\"message\":\"", seq * BATCH as u64 + i as u64).as_bytes(),
        );
        while data.len() - start < EVENT - 2 {
            data.push(b'x');
        }
        data.extend_from_slice(b"\"}");
        ends.push(data.len() as u32);
    }
    (data, ends)
}

fn segment_write(dir: &Path, batches: u64, forever: bool) -> Duration {
    let (b, _) = Buffer::open(dir, 128 << 20).unwrap();
    let (data, ends) = batch(0);
    let started = Instant::now();
    let mut n = 0;
    while forever || n < batches {
        let group: Vec<(&[u8], &[u32])> = (0..GROUP).map(|_| (&data[..], &ends[..])).collect();
        b.append(&group).unwrap();
        n += GROUP as u64;
    }
    started.elapsed()
}

fn segment_read(dir: &Path) -> (Duration, u64) {
    let (b, _) = Buffer::open(dir, 128 << 20).unwrap();
    let started = Instant::now();
    let mut events = 0;
    while let Some(r) = b.read_next().unwrap() {
        events += r.ends.len() as u64;
        b.ack(r.pos, true).unwrap();
    }
    (started.elapsed(), events)
}

fn redb_write(file: &Path, batches: u64, forever: bool) -> Duration {
    let db = redb::Database::create(file).unwrap();
    let (data, ends) = batch(0);
    let mut blob = Vec::new();
    for e in &ends {
        blob.extend_from_slice(&e.to_le_bytes());
    }
    blob.extend_from_slice(&data);
    let started = Instant::now();
    let mut key = 0u64;
    while forever || key < batches {
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(TABLE).unwrap();
            for _ in 0..GROUP {
                t.insert(key, &blob[..]).unwrap();
                key += 1;
            }
        }
        txn.commit().unwrap();
    }
    started.elapsed()
}

fn redb_read(file: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let db = redb::Database::create(file).unwrap();
    let mut events = 0;
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(TABLE).unwrap();
        let keys: Vec<u64> = t.iter().unwrap().map(|kv| kv.unwrap().0.value()).collect();
        for k in keys {
            let v = t.remove(k).unwrap().unwrap();
            assert_eq!(
                v.value().len(),
                BATCH * 4 + BATCH * EVENT,
                "a batch read back whole"
            );
            events += BATCH as u64;
        }
    }
    txn.commit().unwrap();
    (started.elapsed(), events)
}

/// Kill a child writing to `path` as `kind` after a while; reopen and read
/// it through: (time to open, events found).
fn crash(kind: &str, path: &Path) -> (Duration, u64) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SLUICE_STORAGE_CHILD", format!("{kind}:{}", path.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..400)));
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    match kind {
        "segment" => {
            let (b, rec) = Buffer::open(path, 128 << 20).unwrap();
            let opened = started.elapsed();
            drop(b);
            let (_, events) = segment_read(path);
            assert!(events <= rec.events);
            (opened, events)
        }
        _ => {
            let db = redb::Database::create(path).unwrap();
            let opened = started.elapsed();
            drop(db);
            let (_, events) = redb_read(path);
            (opened, events)
        }
    }
}

fn main() {
    if let Ok(child) = std::env::var("SLUICE_STORAGE_CHILD") {
        let (kind, path) = child.split_once(':').unwrap();
        match kind {
            "segment" => segment_write(Path::new(path), 0, true),
            _ => redb_write(Path::new(path), 0, true),
        };
        return;
    }
    let events: u64 = std::env::var("SLUICE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batches = (events / BATCH as u64).max(GROUP as u64);
    let n = batches * BATCH as u64;
    let mb = (n as usize * EVENT) as f64 / 1e6;
    println!("storage bench: {n} events of {EVENT} bytes, batches of {BATCH}, synced every {GROUP} batches");
    println!("| store | write events/s | write MB/s | read + delete events/s |\n| --- | ---: | ---: | ---: |");
    let dir = tempfile::tempdir().unwrap();
    let seg = dir.path().join("segment");
    let w = segment_write(&seg, batches, false);
    let (r, got) = segment_read(&seg);
    assert_eq!(got, n);
    println!(
        "| segment log (sluice-buffer) | {:.0} | {:.1} | {:.0} |",
        n as f64 / w.as_secs_f64(),
        mb / w.as_secs_f64(),
        n as f64 / r.as_secs_f64()
    );
    let file = dir.path().join("redb");
    let w = redb_write(&file, batches, false);
    let (r, got) = redb_read(&file);
    assert_eq!(got, n);
    println!(
        "| redb 5 | {:.0} | {:.1} | {:.0} |",
        n as f64 / w.as_secs_f64(),
        mb / w.as_secs_f64(),
        n as f64 / r.as_secs_f64()
    );
    println!("crash: a writer killed with SIGKILL, five times each; the store opened again and read through");
    println!("| store | open after the kill (median) | events read back (all intact) |\n| --- | ---: | --- |");
    for kind in ["segment", "redb"] {
        let path = dir.path().join(format!("crash-{kind}"));
        let mut opens = Vec::new();
        let mut found = Vec::new();
        for _ in 0..5 {
            let (o, e) = crash(kind, &path);
            opens.push(o);
            found.push(e);
            let _ = std::fs::remove_dir_all(&path);
            let _ = std::fs::remove_file(&path);
        }
        opens.sort();
        println!(
            "| {kind} | {:.1} ms | {found:?} |",
            opens[2].as_secs_f64() * 1e3
        );
    }
    // Recovery of 1 GiB left as a kill leaves it.
    let big = dir.path().join("big");
    let gib_batches = ((1u64 << 30) / (BATCH * (EVENT + 4)) as u64) / GROUP as u64 * GROUP as u64;
    segment_write(&big, gib_batches, false);
    let started = Instant::now();
    let (b, rec) = Buffer::open(&big, 128 << 20).unwrap();
    let took = started.elapsed();
    drop(b);
    println!(
        "recovery of a {:.2} GiB segment log ({} events) after a kill: {:.0} ms (page cache warm)",
        rec.bytes as f64 / (1u64 << 30) as f64,
        rec.events,
        took.as_secs_f64() * 1e3
    );
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        let started = Instant::now();
        let (b, _) = Buffer::open(&big, 128 << 20).unwrap();
        let took = started.elapsed();
        drop(b);
        println!(
            "the same from a cold page cache: {:.0} ms",
            took.as_secs_f64() * 1e3
        );
    }
}
