//! Snapshots of random versions, read on several threads while a writer
//! commits without waiting, see exactly their version: never a write of a
//! later version, never missing one of their own.
//!
//! Runs for `VERITY_STRESS_SECS` seconds (default 2).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::{Db, Options, WriteBatch};

const SLOTS: u64 = 64;

fn last_writer(j: u64, v: u64) -> Option<u64> {
    let back = (v + SLOTS - j) % SLOTS;
    v.checked_sub(back).filter(|&w| w >= 1)
}

fn slot_value(w: u64) -> Vec<u8> {
    w.to_le_bytes().repeat(4)
}

#[test]
fn snapshots_see_exactly_their_version_while_commits_run() {
    let seed = common::seed("snapshots_see_exactly_their_version_while_commits_run");
    let secs: u64 = std::env::var("VERITY_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::laptop();
    opts.memtable_bytes = 256 << 10;
    let db = Db::open(dir.path(), opts).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ r);
                let mut reads = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let latest = db.stats().latest_staged;
                    if latest == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    let v = rng.gen_range(1..=latest);
                    let snap = db.snapshot(v).expect("snapshot");
                    // A snapshot is shared: read it from a second thread too.
                    let s2 = snap.clone();
                    let other = std::thread::spawn(move || s2.get(b"version").expect("get"));
                    assert_eq!(
                        snap.get(b"version").expect("get"),
                        Some(v.to_le_bytes().to_vec())
                    );
                    assert_eq!(other.join().expect("join"), Some(v.to_le_bytes().to_vec()));
                    for _ in 0..8 {
                        let j = rng.gen_range(0..SLOTS);
                        let got = snap.get(format!("slot-{j}").as_bytes()).expect("get");
                        assert_eq!(got, last_writer(j, v).map(slot_value), "slot {j} at {v}");
                    }
                    reads += 9;
                }
                reads
            })
        })
        .collect();
    let start = Instant::now();
    let mut v = 0u64;
    let mut last = None;
    while start.elapsed() < Duration::from_secs(secs) {
        v += 1;
        let mut batch = WriteBatch::new();
        batch.put(b"version", &v.to_le_bytes()).expect("put");
        batch
            .put(format!("slot-{}", v % SLOTS).as_bytes(), &slot_value(v))
            .expect("put");
        for i in 0..50u64 {
            batch
                .put(
                    format!("filler-{}", (v * 50 + i) % 5000).as_bytes(),
                    &v.to_le_bytes(),
                )
                .expect("put");
        }
        let h = db.commit(batch).expect("commit");
        assert_eq!(h.version(), v);
        last = Some(h);
    }
    stop.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    last.expect("a commit").wait_durable().expect("durable");
    let stats = db.stats();
    println!("{v} versions, {reads} reads; {stats:?}");
    assert_eq!(stats.latest_durable, v);
    db.close().expect("close");
}
