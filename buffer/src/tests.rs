use super::*;

fn batch(from: u32, n: u32) -> (Vec<u8>, Vec<u32>) {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for i in from..from + n {
        data.extend_from_slice(format!("{{\"n\":{i}}}").as_bytes());
        ends.push(data.len() as u32);
    }
    (data, ends)
}

fn events(r: &Record) -> Vec<u32> {
    let mut start = 0;
    r.ends
        .iter()
        .map(|&end| {
            let e = std::str::from_utf8(&r.data[start..end as usize]).unwrap();
            start = end as usize;
            e.trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .unwrap()
        })
        .collect()
}

fn append(b: &Buffer, from: u32, n: u32) {
    let (d, e) = batch(from, n);
    b.append(&[(&d, &e)]).unwrap();
}

/// Everything readable now, acknowledged as delivered.
fn drain(b: &Buffer) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(r) = b.read_next().unwrap() {
        out.extend(events(&r));
        b.ack(r.pos, true).unwrap();
    }
    out
}

#[test]
fn records_come_back_in_order_and_delivered_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let (b, rec) = Buffer::open(dir.path(), 256).unwrap();
    assert_eq!(rec, Recovered::default());
    for i in 0..20 {
        append(&b, i * 5, 5);
    }
    assert_eq!(b.stats().events.load(Ordering::Relaxed), 100);
    assert!(segment_ids(dir.path()).unwrap().len() > 3, "segments roll");
    assert!(b.stats().oldest_ms.load(Ordering::Relaxed) > 0);
    assert_eq!(drain(&b), (0..100).collect::<Vec<_>>());
    assert_eq!(b.stats().events.load(Ordering::Relaxed), 0);
    assert_eq!(b.stats().oldest_ms.load(Ordering::Relaxed), 0);
    assert!(b.is_drained());
    // Only the segment being written is left.
    assert_eq!(segment_ids(dir.path()).unwrap().len(), 1);
}

#[test]
fn a_restart_resumes_at_the_first_undelivered_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        for i in 0..4 {
            append(&b, i * 10, 10);
        }
        let r0 = b.read_next().unwrap().unwrap();
        let r1 = b.read_next().unwrap().unwrap();
        let _r2 = b.read_next().unwrap().unwrap();
        // Out of order: the second is delivered, the first not yet.
        b.ack(r1.pos, true).unwrap();
        assert_eq!(events(&r0)[0], 0);
        // Dropped without close, as a kill -9 leaves it.
    }
    let (b, rec) = Buffer::open(dir.path(), 1 << 20).unwrap();
    // Records 0 and 2 were handed out and not delivered, 1 was delivered
    // but sits after the ack pointer, 3 was never handed out.
    assert_eq!(rec.events, 40);
    assert_eq!(rec.redelivered, 30);
    assert_eq!(drain(&b), (0..40).collect::<Vec<_>>());
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3 {
            append(&b, i * 10, 10);
        }
    }
    let id = *segment_ids(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), id);
    let len = fs::metadata(&path).unwrap().len();
    // A crash in the middle of the third record.
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    let (b, rec) = Buffer::open(dir.path(), 1 << 20).unwrap();
    assert!(rec.truncated_bytes > 0);
    assert_eq!(rec.corrupt_segments, 0);
    assert_eq!(drain(&b), (0..20).collect::<Vec<_>>());
    assert_eq!(b.stats().corrupt_records.load(Ordering::Relaxed), 0);
}

#[test]
fn a_flipped_byte_costs_its_record_and_the_segment_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            append(&b, i * 10, 10);
        }
    }
    let id = *segment_ids(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), id);
    let mut bytes = fs::read(&path).unwrap();
    // A byte in the data of the second record.
    let second = bytes[1..].windows(4).position(|w| w == MAGIC).unwrap() + 1;
    bytes[second + HEADER as usize + 50] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    {
        // Written again by a later run: the corrupt segment is not the
        // last one any more.
        let (b, rec) = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(rec.corrupt_segments, 1);
        append(&b, 100, 10);
    }
    let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
    let got = drain(&b);
    let want: Vec<u32> = (0..10).chain(20..50).chain(100..110).collect();
    assert_eq!(got, want);
    assert_eq!(b.stats().corrupt_records.load(Ordering::Relaxed), 1);
    let q: Vec<_> = fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .collect();
    assert_eq!(q.len(), 1);
    let report = inspect(dir.path()).unwrap();
    assert!(report.in_use);
    assert_eq!(report.quarantined.len(), 1);
}

#[test]
fn a_failed_delivery_is_handed_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
    append(&b, 0, 3);
    append(&b, 3, 3);
    let r0 = b.read_next().unwrap().unwrap();
    let r1 = b.read_next().unwrap().unwrap();
    b.ack(r0.pos, false).unwrap();
    b.ack(r1.pos, true).unwrap();
    assert!(!b.is_drained());
    assert!(b.has_retries());
    let again = b.read_retry().unwrap().unwrap();
    assert_eq!(again, r0);
    b.ack(again.pos, true).unwrap();
    assert!(b.is_drained());
    assert_eq!(b.stats().events.load(Ordering::Relaxed), 0);
}

#[test]
fn one_process_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
    let err = Buffer::open(dir.path(), 1 << 20).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn inspect_counts_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (b, _) = Buffer::open(dir.path(), 1 << 20).unwrap();
        append(&b, 0, 4);
        append(&b, 4, 4);
        let r = b.read_next().unwrap().unwrap();
        b.ack(r.pos, true).unwrap();
        b.close().unwrap();
    }
    let r = inspect(dir.path()).unwrap();
    assert!(!r.in_use);
    assert_eq!(r.pending_events, 4);
    assert_eq!(r.segments.iter().map(|s| s.events).sum::<u64>(), 8);
    assert!(r
        .segments
        .iter()
        .all(|s| s.corrupt_records == 0 && s.torn_bytes == 0));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Append(u32),
        Read,
        Ack(usize, bool),
        Retry,
        Crash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (1u32..6).prop_map(Step::Append),
            4 => Just(Step::Read),
            4 => (0usize..4, prop::bool::weighted(0.8)).prop_map(|(i, ok)| Step::Ack(i, ok)),
            1 => Just(Step::Retry),
            1 => Just(Step::Crash),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Whatever the order of writes, reads, acknowledgements, failures
        /// and crashes: every event written is delivered (at least once),
        /// and once all is delivered nothing is left but the segment being
        /// written.
        #[test]
        fn prop_nothing_written_is_lost(steps in prop::collection::vec(step(), 1..60)) {
            let dir = tempfile::tempdir().unwrap();
            let mut b = Buffer::open(dir.path(), 160).unwrap().0;
            let mut next = 0u32;
            let mut delivered = std::collections::BTreeSet::new();
            let mut out: Vec<Record> = Vec::new();
            for s in steps {
                match s {
                    Step::Append(n) => { append(&b, next, n); next += n; }
                    Step::Read => if let Some(r) = b.read_next().unwrap() { out.push(r) },
                    Step::Retry => if let Some(r) = b.read_retry().unwrap() { out.push(r) },
                    Step::Ack(i, ok) => if i < out.len() {
                        let r = out.remove(i);
                        if ok { delivered.extend(events(&r)); }
                        b.ack(r.pos, ok).unwrap();
                    },
                    Step::Crash => {
                        out.clear();
                        drop(b);
                        b = Buffer::open(dir.path(), 160).unwrap().0;
                    }
                }
            }
            // Deliver the rest.
            for r in out.drain(..) {
                b.ack(r.pos, false).unwrap();
            }
            loop {
                let r = match b.read_retry().unwrap() {
                    Some(r) => r,
                    None => match b.read_next().unwrap() { Some(r) => r, None => break },
                };
                delivered.extend(events(&r));
                b.ack(r.pos, true).unwrap();
            }
            prop_assert!(b.is_drained());
            prop_assert_eq!(delivered.len() as u32, next);
            prop_assert_eq!(b.stats().events.load(Ordering::Relaxed), 0);
            drop(b);
            prop_assert!(segment_ids(dir.path()).unwrap().len() <= 2);
        }
    }
}
