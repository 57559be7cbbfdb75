//! Helpers shared by the engine's integration tests.

#![allow(dead_code)]

#[allow(unused_imports)]
pub use verity_testkit::{runner, scale, seed};

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::{Engine, EngineError, Namespace, Options, WriteBatch};

/// One step of a scripted workload.
#[derive(Debug, Clone)]
pub enum Step {
    /// Commit these writes as this version.
    Commit(u64, Vec<(u8, Option<Vec<u8>>)>),
    /// Make everything so far durable.
    Sync,
    /// Flush the memtable.
    Flush,
    /// Compact (fully or by the policy).
    Compact(bool),
    /// Raise the floor to this version.
    Prune(u64),
    /// Read key `k` at the newest version.
    Read(u8),
}

/// Keys of the scripted workloads.
pub const KEYS: u8 = 60;

/// The namespace of key `k`.
pub fn ns(k: u8) -> Namespace {
    match k % 5 {
        0 => Namespace::Pages,
        1 => Namespace::Meta,
        _ => Namespace::State,
    }
}

/// The bytes of key `k`.
pub fn key(k: u8) -> Vec<u8> {
    format!("k{:02}/{}", k % 7, k).into_bytes()
}

/// A deterministic workload of `versions` versions: commits of up to 8
/// writes with values up to 700 bytes (so small memtables flush often),
/// syncs, flushes, compactions, prunes and reads.
pub fn workload(seed: u64, versions: u64) -> Vec<Step> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut v = 0;
    for _ in 0..versions {
        v += rng.gen_range(1..=2);
        let writes = (0..rng.gen_range(0..=8))
            .map(|_| {
                let k = rng.gen_range(0..KEYS);
                let val = rng.gen_bool(0.85).then(|| {
                    let len = rng.gen_range(0..=700);
                    (0..len).map(|_| rng.gen()).collect()
                });
                (k, val)
            })
            .collect();
        steps.push(Step::Commit(v, writes));
        if rng.gen_bool(0.4) {
            steps.push(Step::Sync);
        }
        if rng.gen_bool(0.2) {
            steps.push(Step::Read(rng.gen_range(0..KEYS)));
        }
        match rng.gen_range(0..40) {
            0 => steps.push(Step::Flush),
            1 => steps.push(Step::Compact(rng.gen_bool(0.5))),
            2 if v > 10 => steps.push(Step::Prune(v - rng.gen_range(1..10))),
            _ => {}
        }
    }
    steps.push(Step::Sync);
    steps
}

/// What a workload committed: every version's whole state.
#[derive(Debug, Default, Clone)]
pub struct Model {
    /// State per committed version.
    pub versions: BTreeMap<u64, BTreeMap<u8, Vec<u8>>>,
    /// The newest version a successful sync or flush reported durable.
    pub acked: Option<u64>,
    /// The floor of the last successful prune.
    pub floor: Option<u64>,
}

impl Model {
    /// The state as of `v`.
    pub fn at(&self, v: u64) -> BTreeMap<u8, Vec<u8>> {
        self.versions
            .range(..=v)
            .next_back()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// Runs `steps` until the first error, which it returns.
pub fn run_steps(engine: &Engine, steps: &[Step], model: &mut Model) -> Option<EngineError> {
    for step in steps {
        let r = match step {
            Step::Commit(v, writes) => {
                let mut state = model
                    .versions
                    .values()
                    .next_back()
                    .cloned()
                    .unwrap_or_default();
                let mut batch = WriteBatch::new();
                for (k, val) in writes {
                    let r = match val {
                        Some(val) => {
                            state.insert(*k, val.clone());
                            batch.put(ns(*k), &key(*k), val)
                        }
                        None => {
                            state.remove(k);
                            batch.delete(ns(*k), &key(*k))
                        }
                    };
                    if let Err(e) = r {
                        return Some(e);
                    }
                }
                let r = engine.commit(*v, batch);
                // A commit that failed on I/O may still have reached the
                // WAL: its fate is unknown until a reopen, so the model
                // keeps it as a version that may appear.
                if !matches!(r, Err(EngineError::InvalidArgument(_))) {
                    model.versions.insert(*v, state);
                }
                r
            }
            Step::Sync => engine.sync().map(|d| model.acked = d.or(model.acked)),
            Step::Flush => engine.flush(),
            Step::Compact(full) => engine.compact(*full),
            Step::Prune(f) => engine.prune(*f).map(|()| {
                model.floor = Some(model.floor.map_or(*f, |old| old.max(*f)));
            }),
            Step::Read(k) => match model.versions.keys().next_back() {
                Some(&v) => engine.get(ns(*k), &key(*k), v).map(|got| {
                    assert_eq!(got.as_deref(), model.at(v).get(k).map(|x| x.as_slice()));
                }),
                None => Ok(()),
            },
        };
        if let Err(e) = r {
            return Some(e);
        }
        // A flush or a full memtable syncs the WAL too.
        model.acked = engine.durable().max(model.acked);
    }
    None
}

/// Checks a reopened engine against the model: every acknowledged version
/// is there, nothing newer than what was committed, and every retained
/// version reads back exactly. Returns the reopened latest version.
pub fn verify(engine: &Engine, model: &Model, what: &str) -> Option<u64> {
    let latest = engine.latest();
    assert!(
        latest >= model.acked,
        "{what}: durable version {:?} lost (latest {latest:?})",
        model.acked
    );
    let committed = model.versions.keys().next_back().copied();
    assert!(
        latest <= committed,
        "{what}: latest {latest:?} was never committed"
    );
    if let Some(l) = latest {
        assert!(
            model.versions.contains_key(&l),
            "{what}: latest {l} is not a committed version"
        );
        let from = engine.floor().unwrap_or(0);
        for v in from..=l {
            let state = model.at(v);
            for k in 0..KEYS {
                let got = engine
                    .get(ns(k), &key(k), v)
                    .unwrap_or_else(|e| panic!("{what}: get {k} at {v}: {e}"));
                assert_eq!(
                    got.as_deref(),
                    state.get(&k).map(|x| x.as_slice()),
                    "{what}: key {k} at version {v}"
                );
            }
        }
    }
    latest
}

/// Options for the scripted workloads: tiny memtables, inline work.
pub fn test_options() -> Options {
    Options::for_tests()
}
