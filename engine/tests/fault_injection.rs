//! An I/O error or a full disk at any I/O operation fails the call with a
//! typed error, poisons the engine when it hit a write or a sync, and a
//! reopen finds every acknowledged version intact.
//!
//! The fault moves through every operation of a scripted workload in
//! turn, alternating EIO and ENOSPC.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{run_steps, scale, seed, test_options, verify, workload, Model};
use verity_engine::sim::{CrashMode, Fault, SimDisk};
use verity_engine::{Engine, EngineError, Namespace, WriteBatch};

#[test]
fn every_io_fault_is_a_typed_error_and_recovers() {
    let seed = seed("every_io_fault_is_a_typed_error_and_recovers");
    let steps = workload(seed, 80 * u64::from(scale()));
    let dir = Path::new("/db");
    let disk = SimDisk::new();
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("open");
    assert!(run_steps(&engine, &steps, &mut Model::default()).is_none());
    let total = disk.ops();
    drop(engine);
    println!("{total} I/O operations");

    let (mut poisoned_runs, mut cleanup_runs) = (0, 0);
    for n in 1..=total {
        let fault = if n % 2 == 0 {
            Fault::Eio
        } else {
            Fault::NoSpace
        };
        let what = format!("{fault:?} at op {n}");
        let disk = SimDisk::new();
        disk.fail_at(n, fault);
        let mut model = Model::default();
        let (error, cleanup_failures) =
            match Engine::open(Arc::new(disk.clone()), dir, test_options()) {
                Err(e) => (Some(e), 0),
                Ok(engine) => {
                    let e = run_steps(&engine, &steps, &mut model);
                    if e.is_some() && engine.stats().poisoned {
                        poisoned_runs += 1;
                        // Every later call says so.
                        let mut batch = WriteBatch::new();
                        batch.put(Namespace::State, b"x", b"y").expect("put");
                        assert!(
                            matches!(
                                engine.commit(u64::MAX - 1, batch),
                                Err(EngineError::Poisoned)
                            ),
                            "{what}: commit after poisoning"
                        );
                        assert!(
                            matches!(engine.sync(), Err(EngineError::Poisoned)),
                            "{what}"
                        );
                    }
                    (e, engine.stats().cleanup_failures)
                }
            };
        let Some(error) = error else {
            // The fault hit the removal of an obsolete file: counted, and
            // redone by the next open.
            assert_eq!(cleanup_failures, 1, "{what}: no call failed");
            let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("reopen");
            verify(&engine, &model, &what);
            cleanup_runs += 1;
            continue;
        };
        match (&error, fault) {
            (EngineError::Io { .. }, Fault::NoSpace) => {
                assert!(error.is_no_space(), "{what}: {error}")
            }
            (EngineError::Io { .. }, Fault::Eio) => assert!(!error.is_no_space()),
            _ => panic!("{what}: untyped or wrong error {error:?}"),
        }
        // Reopen as after a restart (odd n) or after a power loss (even n).
        if n % 4 < 2 {
            disk.crash(CrashMode::DropUnsynced, seed ^ n);
        }
        let engine = Engine::open(Arc::new(disk.clone()), dir, test_options())
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        verify(&engine, &model, &what);
        let report = engine.check().expect("check");
        assert!(report.is_ok(), "{what}: {:?}", report.problems);
    }
    println!("{poisoned_runs} runs poisoned, {cleanup_runs} faults hit only a cleanup");
    assert!(poisoned_runs > 0);
}
