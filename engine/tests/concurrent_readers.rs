//! Readers at any committed version see exactly that version, values and
//! delta chains, while a writer commits and background threads flush and
//! compact.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{scale, seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::io::StdIo;
use verity_engine::{Engine, Namespace, Options, WriteBatch};

const SLOTS: u64 = 100;

/// The version that last wrote slot `j` as of version `v`: version `v'`
/// writes slot `v' % SLOTS`.
fn last_writer(j: u64, v: u64) -> Option<u64> {
    let back = (v + SLOTS - j) % SLOTS;
    v.checked_sub(back).filter(|&w| w >= 1)
}

/// The chain of page slot `j` as of version `v`, as versions newest
/// first: version `w` writes page slot `w % SLOTS`, a whole record every
/// fourth time round (`(w / SLOTS) % 4 == 0`) and a delta otherwise.
fn chain_writers(j: u64, v: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = last_writer(j, v);
    while let Some(w) = at {
        out.push(w);
        if is_whole(w) {
            break;
        }
        at = w.checked_sub(SLOTS).filter(|&w| w >= 1);
    }
    out
}

fn is_whole(w: u64) -> bool {
    (w / SLOTS).is_multiple_of(4)
}

#[test]
fn readers_see_exactly_their_version_during_flush_and_compaction() {
    let seed = seed("readers_see_exactly_their_version_during_flush_and_compaction");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.memtable_bytes = 64 << 10;
    opts.compaction_fanin = 3;
    opts.cache_bytes = 256 << 10;
    let engine = Arc::new(Engine::open(Arc::new(StdIo), dir.path(), opts).expect("open"));
    let versions = 3000 * u64::from(scale());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let engine = engine.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ r);
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    let Some(latest) = engine.latest() else {
                        continue;
                    };
                    let v = rng.gen_range(1..=latest);
                    let got = engine.get(Namespace::Meta, b"version", v).expect("get");
                    assert_eq!(got.as_deref(), Some(&v.to_le_bytes()[..]));
                    let j = rng.gen_range(0..SLOTS);
                    let got = engine
                        .get(Namespace::State, &j.to_le_bytes(), v)
                        .expect("get slot");
                    let want = last_writer(j, v).map(|w| w.to_le_bytes().repeat(20));
                    assert_eq!(got.as_deref(), want.as_deref(), "slot {j} at {v}");
                    // A chain's records may lie in the memtable, frozen
                    // ones being flushed, and segments being compacted.
                    let chain: Vec<(u64, bool)> = engine
                        .chain(Namespace::Pages, &j.to_le_bytes(), v)
                        .expect("chain")
                        .iter()
                        .map(|f| {
                            assert_eq!(
                                f.record.bytes().map(|b| &b[..]),
                                Some(&f.version.to_le_bytes()[..])
                            );
                            (f.version, f.record.is_whole())
                        })
                        .collect();
                    let want: Vec<(u64, bool)> = chain_writers(j, v)
                        .into_iter()
                        .map(|w| (w, is_whole(w)))
                        .collect();
                    assert_eq!(chain, want, "chain of page slot {j} at {v}");
                    reads += 1;
                    // Figures are read while commits take their locks.
                    if reads.is_multiple_of(64) {
                        assert!(engine.stats().latest >= Some(v));
                    }
                }
                reads
            })
        })
        .collect();
    for v in 1..=versions {
        let mut batch = WriteBatch::new();
        batch
            .put(Namespace::Meta, b"version", &v.to_le_bytes())
            .expect("put");
        batch
            .put(
                Namespace::State,
                &(v % SLOTS).to_le_bytes(),
                &v.to_le_bytes().repeat(20),
            )
            .expect("put");
        let (page, record) = (v % SLOTS, v.to_le_bytes());
        if is_whole(v) {
            batch.put(Namespace::Pages, &page.to_le_bytes(), &record)
        } else {
            batch.put_delta(Namespace::Pages, &page.to_le_bytes(), &record)
        }
        .expect("put page");
        engine.commit(v, batch).expect("commit");
        if v % 10 == 0 {
            engine.sync().expect("sync");
        }
    }
    done.store(true, Ordering::Release);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    let stats = engine.stats();
    println!("{reads} reads; {stats:?}");
    assert!(stats.flushes > 0, "{stats:?}");
    engine.flush().expect("flush");
    engine.compact(true).expect("compact");
    assert_eq!(engine.segments().len(), 1);
    for j in 0..SLOTS {
        let got = engine
            .get(Namespace::State, &j.to_le_bytes(), versions)
            .expect("get");
        assert_eq!(
            got.as_deref(),
            last_writer(j, versions)
                .map(|w| w.to_le_bytes().repeat(20))
                .as_deref()
        );
    }
}
