//! The engine agrees with a map per version through commits, reads at
//! random versions, flushes, compactions, pruning, reopens and crashes.
//!
//! `VERITY_SEED=` replays a run; `VERITY_SCALE=n` runs n times the cases.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{runner, scale};
use proptest::prelude::*;
use verity_engine::io::{IoBackend, StdIo};
use verity_engine::sim::{CrashMode, SimDisk};
use verity_engine::{Engine, EngineError, Namespace, Options, WriteBatch};

const KEYS: u8 = 40;

#[derive(Debug, Clone)]
enum Op {
    Commit {
        gap: u64,
        writes: Vec<(u8, Option<(u8, u16)>)>,
    },
    Read {
        back: u64,
        key: u8,
    },
    ReadMany {
        back: u64,
        keys: Vec<u8>,
    },
    Sync,
    Flush,
    Compact {
        full: bool,
    },
    Prune {
        back: u64,
    },
    Reopen,
    Crash {
        seed: u64,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    let write = (
        0..KEYS,
        prop::option::weighted(0.8, (any::<u8>(), 0u16..400)),
    );
    prop_oneof![
        12 => (1u64..4, prop::collection::vec(write, 0..12))
            .prop_map(|(gap, writes)| Op::Commit { gap, writes }),
        6 => (0u64..40, 0..KEYS).prop_map(|(back, key)| Op::Read { back, key }),
        2 => (0u64..40, prop::collection::vec(0..KEYS, 1..20))
            .prop_map(|(back, keys)| Op::ReadMany { back, keys }),
        2 => Just(Op::Sync),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|full| Op::Compact { full }),
        1 => (0u64..30).prop_map(|back| Op::Prune { back }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn ns(k: u8) -> Namespace {
    if k.is_multiple_of(4) {
        Namespace::Pages
    } else {
        Namespace::State
    }
}

fn key(k: u8) -> Vec<u8> {
    // Shared prefixes, different lengths.
    format!("key/{}/{k}", k % 3).into_bytes()
}

fn value(b: u8, len: u16) -> Vec<u8> {
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

type State = BTreeMap<u8, Vec<u8>>;

struct Harness {
    io: Arc<dyn IoBackend>,
    disk: Option<SimDisk>,
    dir: std::path::PathBuf,
    engine: Option<Engine>,
    /// Every committed version's whole state.
    versions: BTreeMap<u64, State>,
    floor: Option<u64>,
    opts: Options,
}

impl Harness {
    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine open")
    }

    fn latest(&self) -> Option<u64> {
        self.versions.keys().next_back().copied()
    }

    fn state_at(&self, v: u64) -> State {
        self.versions
            .range(..=v)
            .next_back()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        drop(self.engine.take());
        let e = Engine::open(self.io.clone(), &self.dir, self.opts.clone())
            .map_err(|e| TestCaseError::fail(format!("reopen: {e}")))?;
        self.engine = Some(e);
        Ok(())
    }

    fn read_version(&self, back: u64) -> Option<u64> {
        let latest = self.latest()?;
        let v = latest.saturating_sub(back);
        Some(self.floor.map_or(v, |f| v.max(f)))
    }

    fn check_read(&self, v: u64, k: u8) -> Result<(), TestCaseError> {
        let got = self
            .engine()
            .get(ns(k), &key(k), v)
            .map_err(|e| TestCaseError::fail(format!("get: {e}")))?;
        let want = self.state_at(v).get(&k).cloned();
        prop_assert_eq!(
            got.as_deref(),
            want.as_deref(),
            "key {} at version {}",
            k,
            v
        );
        Ok(())
    }

    fn run(&mut self, op: Op) -> Result<(), TestCaseError> {
        let fail = |what: &str, e: EngineError| TestCaseError::fail(format!("{what}: {e}"));
        match op {
            Op::Commit { gap, writes } => {
                let v = self.latest().map_or(gap - 1, |l| l + gap);
                let mut state = self
                    .latest()
                    .map(|l| self.versions[&l].clone())
                    .unwrap_or_default();
                let mut batch = WriteBatch::new();
                for (k, w) in writes {
                    match w {
                        Some((b, len)) => {
                            let val = value(b, len);
                            batch
                                .put(ns(k), &key(k), &val)
                                .map_err(|e| fail("put", e))?;
                            state.insert(k, val);
                        }
                        None => {
                            batch
                                .delete(ns(k), &key(k))
                                .map_err(|e| fail("delete", e))?;
                            state.remove(&k);
                        }
                    }
                }
                self.engine()
                    .commit(v, batch)
                    .map_err(|e| fail("commit", e))?;
                self.versions.insert(v, state);
            }
            Op::Read { back, key: k } => {
                if let Some(v) = self.read_version(back) {
                    self.check_read(v, k)?;
                }
            }
            Op::ReadMany { back, keys } => {
                if let Some(v) = self.read_version(back) {
                    let ks: Vec<Vec<u8>> = keys.iter().map(|&k| key(k)).collect();
                    // get_many takes one namespace: ask for the State keys.
                    let (idx, refs): (Vec<u8>, Vec<&[u8]>) = keys
                        .iter()
                        .zip(&ks)
                        .filter(|(k, _)| ns(**k) == Namespace::State)
                        .map(|(k, kb)| (*k, kb.as_slice()))
                        .unzip();
                    let got = self
                        .engine()
                        .get_many(Namespace::State, &refs, v)
                        .map_err(|e| fail("get_many", e))?;
                    let state = self.state_at(v);
                    for (k, g) in idx.iter().zip(got) {
                        prop_assert_eq!(g.as_deref(), state.get(k).map(|v| v.as_slice()));
                    }
                }
            }
            Op::Sync => {
                self.engine().sync().map_err(|e| fail("sync", e))?;
            }
            Op::Flush => self.engine().flush().map_err(|e| fail("flush", e))?,
            Op::Compact { full } => self
                .engine()
                .compact(full)
                .map_err(|e| fail("compact", e))?,
            Op::Prune { back } => {
                if let Some(v) = self.read_version(back) {
                    self.engine().prune(v).map_err(|e| fail("prune", e))?;
                    self.floor = Some(v);
                    if let Some(below) = v.checked_sub(1) {
                        let r = self.engine().get(Namespace::State, &key(1), below);
                        prop_assert!(
                            matches!(r, Err(EngineError::NoSuchVersion { .. })),
                            "read below the floor: {:?}",
                            r
                        );
                    }
                }
            }
            Op::Reopen => {
                self.engine().sync().map_err(|e| fail("sync", e))?;
                self.reopen()?;
                let report = self.engine().check().map_err(|e| fail("check", e))?;
                prop_assert!(report.is_ok(), "check: {:?}", report.problems);
            }
            Op::Crash { seed } => {
                let Some(disk) = self.disk.clone() else {
                    return Ok(());
                };
                let durable = self.engine().durable();
                drop(self.engine.take());
                disk.crash(CrashMode::DropUnsynced, seed);
                self.reopen()?;
                let latest = self.engine().latest();
                prop_assert!(
                    latest >= durable,
                    "lost durable versions: {:?} < {:?}",
                    latest,
                    durable
                );
                // Versions past the reopened latest were not durable.
                match latest {
                    Some(l) => self.versions.retain(|&v, _| v <= l),
                    None => self.versions.clear(),
                }
                prop_assert_eq!(self.latest(), latest);
            }
        }
        Ok(())
    }

    /// Every retained version of every key.
    fn check_all(&self) -> Result<(), TestCaseError> {
        let Some(latest) = self.latest() else {
            return Ok(());
        };
        let from = self.floor.unwrap_or(0);
        for v in from..=latest {
            for k in 0..KEYS {
                self.check_read(v, k)?;
            }
        }
        Ok(())
    }
}

fn run_model(
    io: Arc<dyn IoBackend>,
    disk: Option<SimDisk>,
    dir: &Path,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let opts = Options::for_tests();
    let engine = Engine::open(io.clone(), dir, opts.clone())
        .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
    let mut h = Harness {
        io,
        disk,
        dir: dir.to_path_buf(),
        engine: Some(engine),
        versions: BTreeMap::new(),
        floor: None,
        opts,
    };
    for op in ops {
        h.run(op)?;
    }
    h.check_all()?;
    h.engine()
        .flush()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    h.engine()
        .compact(true)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    h.check_all()?;
    h.reopen()?;
    h.check_all()
}

#[test]
fn engine_matches_the_model_on_the_simulated_disk() {
    let mut runner = runner(
        "engine_matches_the_model_on_the_simulated_disk",
        64 * scale(),
    );
    runner
        .run(&prop::collection::vec(arb_op(), 1..160), |ops| {
            let disk = SimDisk::new();
            run_model(Arc::new(disk.clone()), Some(disk), Path::new("/db"), ops)
        })
        .expect("model");
}

fn on_real_files(test: &str, io: Arc<dyn IoBackend>) {
    let mut runner = runner(test, 8 * scale());
    runner
        .run(&prop::collection::vec(arb_op(), 1..120), |ops| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            run_model(io.clone(), None, dir.path(), ops)
        })
        .expect("model");
}

#[test]
fn engine_matches_the_model_on_real_files_with_positional_io() {
    on_real_files(
        "engine_matches_the_model_on_real_files_with_positional_io",
        Arc::new(StdIo),
    );
}

#[cfg(target_os = "linux")]
#[test]
fn engine_matches_the_model_on_real_files_with_io_uring() {
    use verity_engine::uring::{UringIo, UringOptions};
    for direct in [false, true] {
        let options = UringOptions {
            direct,
            ..UringOptions::default()
        };
        match UringIo::new(options) {
            Ok(io) => on_real_files(
                "engine_matches_the_model_on_real_files_with_io_uring",
                Arc::new(io),
            ),
            Err(e) => println!("io_uring unavailable ({e}); skipped"),
        }
    }
}
