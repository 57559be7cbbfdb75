//! Delta records keep their chain back to a whole record for every
//! retained version, through flushes, compactions, prunes and reopens.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{scale, seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::sim::SimDisk;
use verity_engine::{Engine, Namespace, Options, Record, SharedBytes, WriteBatch};

const KEYS: u8 = 8;

/// The chain the engine must return: records at or below `v`, newest
/// first, through the first whole one; a trailing deletion is the same as
/// nothing (compaction may drop a deletion at the bottom).
fn model_chain(history: &[(u64, Record)], v: u64) -> Vec<(u64, Record)> {
    let mut out = Vec::new();
    for (ver, r) in history.iter().rev().filter(|(ver, _)| *ver <= v) {
        out.push((*ver, r.clone()));
        if r.is_whole() {
            break;
        }
    }
    if out.last().is_some_and(|(_, r)| *r == Record::Delete) {
        out.pop();
    }
    out
}

/// The engine's chain of key `k` at `v`, without a trailing deletion (as
/// [`model_chain`]).
fn chain_of(engine: &Engine, k: u8, v: u64) -> Vec<(u64, Record)> {
    let mut got: Vec<(u64, Record)> = engine
        .chain(Namespace::Pages, &[k], v)
        .expect("chain")
        .into_iter()
        .map(|f| (f.version, f.record))
        .collect();
    if got.last().is_some_and(|(_, r)| *r == Record::Delete) {
        got.pop();
    }
    got
}

#[test]
fn delta_chains_survive_compaction_below_the_floor() {
    let seed = seed("delta_chains_survive_compaction_below_the_floor");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for round in 0..40 * scale() {
        let disk = SimDisk::new();
        let dir = Path::new("/db");
        let mut engine =
            Engine::open(Arc::new(disk.clone()), dir, Options::for_tests()).expect("open");
        let mut history: Vec<Vec<(u64, Record)>> = vec![Vec::new(); KEYS as usize];
        let mut floor = 0;
        let versions = rng.gen_range(20..120u64);
        for v in 1..=versions {
            let mut batch = WriteBatch::new();
            for k in 0..KEYS {
                if !rng.gen_bool(0.4) {
                    continue;
                }
                let h = &mut history[k as usize];
                let exists = h.last().is_some_and(|(_, r)| *r != Record::Delete);
                let bytes: Vec<u8> = vec![k; rng.gen_range(0..600)];
                let record = match rng.gen_range(0..10) {
                    0 if exists => Record::Delete,
                    1..=6 if exists => Record::Delta(SharedBytes::from(&bytes[..])),
                    _ => Record::Put(SharedBytes::from(&bytes[..])),
                };
                match &record {
                    Record::Put(b) => batch.put(Namespace::Pages, &[k], b),
                    Record::Delta(b) => batch.put_delta(Namespace::Pages, &[k], b),
                    Record::Delete => batch.delete(Namespace::Pages, &[k]),
                }
                .expect("batch");
                h.push((v, record));
            }
            engine.commit_durable(v, batch).expect("commit");
            match rng.gen_range(0..20) {
                0 => engine.flush().expect("flush"),
                1 => engine.compact(rng.gen_bool(0.5)).expect("compact"),
                2 if v > floor + 2 => {
                    floor = rng.gen_range(floor + 1..v);
                    engine.prune(floor).expect("prune");
                }
                3 => {
                    drop(engine);
                    engine = Engine::open(Arc::new(disk.clone()), dir, Options::for_tests())
                        .expect("reopen");
                }
                _ => {}
            }
            // Mid-run, a key's records may lie in the memtable, frozen
            // memtables and several segments at once.
            for _ in 0..4 {
                let (k, at) = (rng.gen_range(0..KEYS), rng.gen_range(floor.max(1)..=v));
                assert_eq!(
                    chain_of(&engine, k, at),
                    model_chain(&history[k as usize], at),
                    "round {round}: key {k} at {at} after version {v}, floor {floor}"
                );
                // A caller that holds what the chain gives reads its
                // newest record only: the one `get_entry` finds, whose
                // version it is asked about.
                let mut asked = Vec::new();
                let newest: Vec<(u64, Record)> = engine
                    .chain_unless(Namespace::Pages, &[k], at, |ver| {
                        asked.push(ver);
                        true
                    })
                    .expect("chain")
                    .into_iter()
                    .map(|f| (f.version, f.record))
                    .collect();
                let entry = engine.get_entry(Namespace::Pages, &[k], at).expect("entry");
                let entry: Vec<(u64, Record)> =
                    entry.into_iter().map(|f| (f.version, f.record)).collect();
                assert_eq!(newest, entry, "round {round}: key {k} at {at}");
                let versions: Vec<u64> = entry.iter().map(|e| e.0).collect();
                assert_eq!(asked, versions, "round {round}: key {k} at {at}");
            }
        }
        engine.flush().expect("flush");
        engine.compact(true).expect("compact");
        for v in floor.max(1)..=versions {
            for k in 0..KEYS {
                assert_eq!(
                    chain_of(&engine, k, v),
                    model_chain(&history[k as usize], v),
                    "round {round}: key {k} at {v}, floor {floor}"
                );
            }
        }
    }
}
