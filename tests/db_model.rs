//! The Db agrees with a map per version and a reference trie: values,
//! roots, proofs and iteration at random versions, with commits that do
//! not wait, pruning, and reopening.
//!
//! `VERITY_SEED=` replays a run; `VERITY_SCALE=n` runs n times the cases.

mod common;

use std::collections::BTreeMap;

use common::{runner, scale};
use proptest::prelude::*;
use verity::{
    key_hash, value_hash, verify, CommitHandle, Db, DbError, MemPageStore, Options, Trie,
    WriteBatch,
};

const KEYS: u8 = 48;

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<(u8, Option<(u8, u16)>)>),
    Read { back: u64, keys: Vec<u8> },
    Root { back: u64 },
    Prove { back: u64, keys: Vec<u8> },
    Iterate { back: u64 },
    Prune { back: u64 },
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let write = (
        0..KEYS,
        prop::option::weighted(0.8, (any::<u8>(), 0u16..300)),
    );
    prop_oneof![
        10 => prop::collection::vec(write, 0..24).prop_map(Op::Commit),
        5 => (0u64..12, prop::collection::vec(0..KEYS, 1..8)).prop_map(|(back, keys)| Op::Read { back, keys }),
        3 => (0u64..12).prop_map(|back| Op::Root { back }),
        3 => (0u64..12, prop::collection::vec(0..KEYS, 1..6)).prop_map(|(back, keys)| Op::Prove { back, keys }),
        1 => (0u64..12).prop_map(|back| Op::Iterate { back }),
        1 => (0u64..12).prop_map(|back| Op::Prune { back }),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("account-{k}").into_bytes()
}

fn value(b: u8, len: u16) -> Vec<u8> {
    (0..len).map(|i| b ^ i as u8).collect()
}

struct Model {
    /// State per version (index = version; 0 is empty).
    states: Vec<BTreeMap<u8, Vec<u8>>>,
    roots: Vec<[u8; 32]>,
    reference: Trie<MemPageStore>,
    floor: u64,
}

fn options(page_cache_bytes: usize) -> Options {
    let mut o = Options::laptop();
    o.page_cache_bytes = page_cache_bytes;
    o.memtable_bytes = 64 << 10;
    o.max_in_flight = 3;
    o.io_uring = false;
    o
}

fn fail(what: &str, e: DbError) -> TestCaseError {
    TestCaseError::fail(format!("{what}: {e}"))
}

fn run(dir: &std::path::Path, ops: Vec<Op>, page_cache_bytes: usize) -> Result<(), TestCaseError> {
    let mut db = Db::open(dir, options(page_cache_bytes)).map_err(|e| fail("open", e))?;
    let mut m = Model {
        states: vec![BTreeMap::new()],
        roots: vec![verity::EMPTY],
        reference: Trie::new(MemPageStore::new()),
        floor: 0,
    };
    let mut handles: Vec<CommitHandle> = Vec::new();
    for op in ops {
        let latest = (m.states.len() - 1) as u64;
        let at = |back: u64| latest.saturating_sub(back).max(m.floor);
        match op {
            Op::Commit(writes) => {
                let mut state = m.states[latest as usize].clone();
                let mut batch = WriteBatch::new();
                let mut updates = BTreeMap::new();
                for (k, w) in writes {
                    match w {
                        Some((b, len)) => {
                            let v = value(b, len);
                            batch.put(&key(k), &v).map_err(|e| fail("put", e))?;
                            updates.insert(key_hash(&key(k)), Some(value_hash(&v)));
                            state.insert(k, v);
                        }
                        None => {
                            batch.delete(&key(k)).map_err(|e| fail("delete", e))?;
                            updates.insert(key_hash(&key(k)), None);
                            state.remove(&k);
                        }
                    }
                }
                let h = db.commit(batch).map_err(|e| fail("commit", e))?;
                prop_assert_eq!(h.version(), latest + 1);
                let updates: Vec<_> = updates.into_iter().collect();
                let out = m
                    .reference
                    .update(latest, latest + 1, &updates)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.reference
                    .source()
                    .apply(&out)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.states.push(state);
                m.roots.push(out.root);
                handles.push(h);
            }
            Op::Read { back, keys } => {
                let v = at(back);
                let snap = db.snapshot(v).map_err(|e| fail("snapshot", e))?;
                // The same snapshot read on two threads at once.
                let state = &m.states[v as usize];
                let results: Vec<Vec<Option<Vec<u8>>>> = std::thread::scope(|s| {
                    let readers: Vec<_> = (0..2)
                        .map(|_| {
                            let (snap, keys) = (snap.clone(), keys.clone());
                            s.spawn(move || {
                                keys.iter()
                                    .map(|&k| snap.get(&key(k)).expect("get"))
                                    .collect()
                            })
                        })
                        .collect();
                    readers
                        .into_iter()
                        .map(|r| r.join().expect("reader"))
                        .collect()
                });
                for got in results {
                    for (&k, g) in keys.iter().zip(got) {
                        prop_assert_eq!(g.as_ref(), state.get(&k), "key {} at {}", k, v);
                    }
                }
                let kb: Vec<Vec<u8>> = keys.iter().map(|&k| key(k)).collect();
                let refs: Vec<&[u8]> = kb.iter().map(|k| k.as_slice()).collect();
                let many = snap.get_many(&refs).map_err(|e| fail("get_many", e))?;
                for (&k, got) in keys.iter().zip(many) {
                    prop_assert_eq!(got.as_ref(), m.states[v as usize].get(&k));
                }
            }
            Op::Root { back } => {
                let v = at(back);
                let snap = db.snapshot(v).map_err(|e| fail("snapshot", e))?;
                prop_assert_eq!(
                    snap.root().map_err(|e| fail("root", e))?,
                    m.roots[v as usize],
                    "root of {}",
                    v
                );
            }
            Op::Prove { back, keys } => {
                let v = at(back);
                let snap = db.snapshot(v).map_err(|e| fail("snapshot", e))?;
                let kb: Vec<Vec<u8>> = keys.iter().map(|&k| key(k)).collect();
                let refs: Vec<&[u8]> = kb.iter().map(|k| k.as_slice()).collect();
                let proof = snap.prove_many(&refs).map_err(|e| fail("prove", e))?;
                let mut claims: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        (
                            key_hash(&key(*k)),
                            m.states[v as usize].get(k).map(|x| value_hash(x)),
                        )
                    })
                    .collect();
                claims.sort();
                claims.dedup();
                prop_assert!(
                    verify(&m.roots[v as usize], &proof, &claims).is_ok(),
                    "proof at {}",
                    v
                );
            }
            Op::Iterate { back } => {
                let v = at(back);
                let snap = db.snapshot(v).map_err(|e| fail("snapshot", e))?;
                let got = snap
                    .iter_from(&[0u8; 32], 1000)
                    .map_err(|e| fail("iterate", e))?;
                let mut want: Vec<(verity::KeyHash, Vec<u8>, Vec<u8>)> = m.states[v as usize]
                    .iter()
                    .map(|(k, val)| (key_hash(&key(*k)), key(*k), val.clone()))
                    .collect();
                want.sort();
                let got: Vec<_> = got
                    .into_iter()
                    .map(|e| (e.key_hash, e.key, e.value))
                    .collect();
                prop_assert_eq!(got, want);
            }
            Op::Prune { back } => {
                if let Some(h) = handles.last() {
                    h.wait_durable().map_err(|e| fail("durable", e))?;
                }
                let v = at(back);
                db.prune(v).map_err(|e| fail("prune", e))?;
                m.floor = m.floor.max(v);
                if v > 0 {
                    let r = db.snapshot(v - 1);
                    prop_assert!(
                        matches!(r, Err(DbError::NoSuchVersion { .. })),
                        "below the floor: {:?}",
                        r
                    );
                }
            }
            Op::Reopen => {
                db.close().map_err(|e| fail("close", e))?;
                prop_assert!(matches!(db.commit(WriteBatch::new()), Err(DbError::Closed)));
                drop(db);
                handles.clear();
                db = Db::open(dir, options(page_cache_bytes)).map_err(|e| fail("reopen", e))?;
                prop_assert_eq!(db.stats().latest_durable, latest);
            }
        }
    }
    // Every retained version, at the end.
    let latest = (m.states.len() - 1) as u64;
    for v in m.floor..=latest {
        let snap = db.snapshot(v).map_err(|e| fail("snapshot", e))?;
        prop_assert_eq!(
            snap.root().map_err(|e| fail("root", e))?,
            m.roots[v as usize]
        );
        for k in 0..KEYS {
            let got = snap.get(&key(k)).map_err(|e| fail("get", e))?;
            prop_assert_eq!(
                got.as_ref(),
                m.states[v as usize].get(&k),
                "key {} at {}",
                k,
                v
            );
        }
    }
    db.close().map_err(|e| fail("close", e))
}

/// Runs `cases` random histories (times `VERITY_SCALE`) against a Db
/// with `page_cache_bytes` of decoded pages.
fn check(name: &str, cases: u32, page_cache_bytes: usize) {
    runner(name, cases * scale())
        .run(&prop::collection::vec(arb_op(), 1..80), |ops| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            run(dir.path(), ops, page_cache_bytes)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn db_matches_the_model_and_the_reference_trie() {
    check(
        "db_matches_the_model_and_the_reference_trie",
        24,
        Options::laptop().page_cache_bytes,
    );
}

/// With no decoded page cached, every page an update's walk reaches is
/// read from the engine on the thread that updates it.
#[test]
fn db_without_a_page_cache_matches_the_model_and_the_reference_trie() {
    check(
        "db_without_a_page_cache_matches_the_model_and_the_reference_trie",
        8,
        0,
    );
}
